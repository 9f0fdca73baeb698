//! ISO 3166-1 alpha-2 country codes, checked against the GeoNames country list shipped in `countries.tsv`.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// The country list, `code<TAB>name` per line, written by `scripts/build_gazetteer.py`.
const COUNTRIES_TSV: &str = include_str!("countries.tsv");

/// An officially assigned ISO 3166-1 alpha-2 country code, stored upper-case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode([u8; 2]);

/// Why a string is not a country code.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CountryError {
    /// The input was empty or only whitespace.
    #[error("country code must not be empty")]
    Empty,
    /// The input is not an assigned ISO 3166-1 alpha-2 code; carries the trimmed input.
    #[error("\"{0}\" is not an ISO 3166-1 alpha-2 country code")]
    Unknown(String),
}

/// Why a line of the embedded country list could not be read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("countries.tsv line {line}: {reason}")]
struct CountryDataError {
    line: usize,
    reason: &'static str,
}

impl CountryCode {
    /// Parses an alpha-2 code, ignoring surrounding whitespace and letter case.
    pub fn parse(input: &str) -> Result<CountryCode, CountryError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(CountryError::Empty);
        }
        let unknown = || CountryError::Unknown(trimmed.to_owned());
        let code = match trimmed.as_bytes() {
            [first, second] if first.is_ascii_alphabetic() && second.is_ascii_alphabetic() => {
                CountryCode([first.to_ascii_uppercase(), second.to_ascii_uppercase()])
            }
            _ => return Err(unknown()),
        };
        match find(code) {
            Some(_) => Ok(code),
            None => Err(unknown()),
        }
    }

    /// The upper-case two-letter code, e.g. `"PK"`.
    pub fn as_str(&self) -> &str {
        // Only `parse` builds a code and it admits ASCII letters alone, so this cannot fail.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    /// The country's English short name from GeoNames, e.g. `"Pakistan"`.
    pub fn name(&self) -> &'static str {
        // Every constructed code was found in the table, so the fallback is never seen.
        find(*self).map_or("Unknown country", |(_, name)| name)
    }

    /// Every known country code, in alphabetical order.
    pub fn all() -> impl Iterator<Item = CountryCode> {
        table().iter().map(|(code, _)| *code)
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CountryCode {
    type Err = CountryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CountryCode::parse(s)
    }
}

impl serde::Serialize for CountryCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for CountryCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Borrowing would reject JSON strings with escapes, so take an owned string.
        let raw = String::deserialize(deserializer)?;
        CountryCode::parse(&raw).map_err(serde::de::Error::custom)
    }
}

fn find(code: CountryCode) -> Option<&'static (CountryCode, &'static str)> {
    let countries = table();
    countries
        .binary_search_by_key(&code, |(known, _)| *known)
        .ok()
        .and_then(|index| countries.get(index))
}

/// The parsed country list, sorted by code.
///
/// # Panics
///
/// Panics if the embedded `countries.tsv` is malformed; the unit test
/// `every_line_of_the_embedded_country_list_parses` rules that out for the shipped file.
fn table() -> &'static [(CountryCode, &'static str)] {
    static TABLE: OnceLock<Vec<(CountryCode, &'static str)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        parse_table(COUNTRIES_TSV).expect("the embedded countries.tsv is validated by a unit test")
    })
}

fn parse_table(data: &'static str) -> Result<Vec<(CountryCode, &'static str)>, CountryDataError> {
    let mut countries = Vec::with_capacity(256);
    for (index, line) in data.lines().enumerate() {
        let error = |reason| CountryDataError {
            line: index + 1,
            reason,
        };
        let (code, name) = line.split_once('\t').ok_or_else(|| error("no tab"))?;
        let code = match code.as_bytes() {
            [first, second] if first.is_ascii_uppercase() && second.is_ascii_uppercase() => {
                CountryCode([*first, *second])
            }
            _ => return Err(error("code is not two upper-case letters")),
        };
        if name.trim().is_empty() || name.contains('\t') {
            return Err(error("name is empty or has a stray tab"));
        }
        countries.push((code, name));
    }
    // Binary search relies on the order, so a shuffled file is rejected rather than re-sorted.
    if countries.windows(2).any(|pair| pair[0].0 >= pair[1].0) {
        return Err(CountryDataError {
            line: 0,
            reason: "codes are not sorted and unique",
        });
    }
    Ok(countries)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_line_of_the_embedded_country_list_parses() {
        let countries = parse_table(COUNTRIES_TSV).unwrap();
        assert_eq!(countries.len(), COUNTRIES_TSV.lines().count());
        assert_eq!(countries.len(), 250);
    }

    #[test]
    fn country_codes_parse_case_insensitively() {
        for input in ["pk", "PK", "Pk", "pK", "  pk\t"] {
            let code = CountryCode::parse(input).unwrap();
            assert_eq!(code.as_str(), "PK");
            assert_eq!(code.to_string(), "PK");
        }
    }

    #[test]
    fn pk_is_named_pakistan() {
        assert_eq!(CountryCode::parse("pk").unwrap().name(), "Pakistan");
        assert_eq!(CountryCode::parse("US").unwrap().name(), "United States");
    }

    #[test]
    fn xx_is_not_a_country() {
        let error = CountryCode::parse("XX").unwrap_err();
        assert_eq!(error, CountryError::Unknown("XX".to_owned()));
        assert_eq!(
            error.to_string(),
            "\"XX\" is not an ISO 3166-1 alpha-2 country code"
        );
    }

    #[test]
    fn an_empty_code_is_rejected_as_empty() {
        assert_eq!(CountryCode::parse(""), Err(CountryError::Empty));
        assert_eq!(CountryCode::parse("   "), Err(CountryError::Empty));
        assert_eq!(
            CountryError::Empty.to_string(),
            "country code must not be empty"
        );
    }

    #[test]
    fn an_alpha_3_code_is_not_an_alpha_2_code() {
        assert_eq!(
            CountryCode::parse("PAK"),
            Err(CountryError::Unknown("PAK".to_owned()))
        );
    }

    #[test]
    fn non_letters_and_non_ascii_are_rejected_without_panicking() {
        for input in ["1A", "P-", "é", "ÅÅ", "P"] {
            assert_eq!(
                CountryCode::parse(input),
                Err(CountryError::Unknown(input.to_owned()))
            );
        }
    }

    #[test]
    fn kosovo_is_kept_and_withdrawn_codes_are_not() {
        assert_eq!(CountryCode::parse("xk").unwrap().name(), "Kosovo");
        assert!(CountryCode::parse("AN").is_err());
        assert!(CountryCode::parse("CS").is_err());
    }

    #[test]
    fn all_lists_every_code_in_order() {
        let all: Vec<CountryCode> = CountryCode::all().collect();
        assert_eq!(all.len(), 250);
        assert_eq!(all.first().unwrap().as_str(), "AD");
        assert_eq!(all.last().unwrap().as_str(), "ZW");
        assert!(all.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn country_codes_round_trip_through_json_as_strings() {
        let code: CountryCode = serde_json::from_str("\"pk\"").unwrap();
        assert_eq!(serde_json::to_string(&code).unwrap(), "\"PK\"");
        let error = serde_json::from_str::<CountryCode>("\"XX\"").unwrap_err();
        assert!(error
            .to_string()
            .contains("\"XX\" is not an ISO 3166-1 alpha-2 country code"));
    }

    #[test]
    fn from_str_parses_like_parse() {
        assert_eq!("br".parse::<CountryCode>().unwrap().as_str(), "BR");
    }
}
