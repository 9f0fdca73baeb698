//! The city gazetteer: GeoNames cities of at least 15,000 people, embedded from `cities.tsv` and matched by normalised name.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::OnceLock;

use super::country::CountryCode;

/// One city per line, written by `scripts/build_gazetteer.py`:
/// `geoname_id, country, name, ascii_name (empty when equal to name), latitude, longitude, population, alternates (|-separated)`.
const CITIES_TSV: &str = include_str!("cities.tsv");

/// Longest city input accepted, in characters; real names are far shorter.
pub const MAX_CITY_CHARS: usize = 100;

/// How many suggestions an unknown city carries.
const SUGGESTIONS_ON_ERROR: usize = 5;

/// Jaro-Winkler similarity below which a name is too different to be worth suggesting.
const MIN_SUGGESTION_SIMILARITY: f64 = 0.7;

/// One gazetteer entry: a GeoNames populated place.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct City {
    /// The GeoNames id, stable across GeoNames releases.
    pub geoname_id: u32,
    /// The canonical name, e.g. `"São Paulo"`.
    pub name: &'static str,
    /// The name folded to ASCII, e.g. `"Sao Paulo"`.
    pub ascii_name: &'static str,
    /// The country the city is in.
    pub country: CountryCode,
    /// Latitude in decimal degrees (WGS 84).
    pub latitude: f64,
    /// Longitude in decimal degrees (WGS 84).
    pub longitude: f64,
    /// Population as recorded by GeoNames.
    pub population: u32,
    /// Common Latin-script alternate names, e.g. `"Bombay"` for Mumbai.
    pub alternate_names: Vec<&'static str>,
}

/// Why a city input could not be resolved.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum CityError {
    /// The input was empty or only whitespace.
    #[error("city must not be empty")]
    Empty,
    /// The input is longer than 100 characters.
    #[error("city must be at most 100 characters")]
    TooLong,
    /// No city in the country has this name; carries the closest canonical names.
    #[error("\"{input}\" is not a known city in {}", .country.name())]
    Unknown {
        /// The input, trimmed.
        input: String,
        /// The country that was searched.
        country: CountryCode,
        /// Up to five canonical names of similar cities in that country, best first.
        suggestions: Vec<String>,
    },
}

/// Why a line of the embedded city data could not be read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("cities.tsv line {line}: {reason}")]
struct CityDataError {
    line: usize,
    reason: &'static str,
}

/// All cities, with a per-country name index built on the country's first query.
pub struct Gazetteer {
    cities: Vec<City>,
    countries: HashMap<CountryCode, CountryIndex>,
}

/// One country's slice of the city list and its name index.
struct CountryIndex {
    cities: Range<usize>,
    // Normalising and sorting every name up front would dominate start-up, and
    // most processes only ever query a handful of countries.
    names: OnceLock<Vec<NameEntry>>,
}

/// One searchable name of a city; a country's entries are sorted by `key`.
struct NameEntry {
    key: Box<str>,
    city: u32,
    kind: NameKind,
}

/// Canonical names outrank alternates, so a city's own name is never shadowed by
/// a bigger city's historical or foreign name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum NameKind {
    Canonical,
    Alternate,
}

/// The shared gazetteer, parsed from the embedded data on first use.
///
/// # Panics
///
/// Panics if the embedded `cities.tsv` is malformed; the unit test
/// `every_line_of_the_embedded_data_parses` rules that out for the shipped file.
pub fn gazetteer() -> &'static Gazetteer {
    static GAZETTEER: OnceLock<Gazetteer> = OnceLock::new();
    GAZETTEER.get_or_init(|| {
        Gazetteer::parse(CITIES_TSV).expect("the embedded cities.tsv is validated by a unit test")
    })
}

impl Gazetteer {
    /// Resolves a user-typed city name in a country to its gazetteer entry.
    ///
    /// Matching ignores case, accents, spacing and `-`/`.`/`'` punctuation; canonical
    /// names win over alternates, then the most populous city wins.
    pub fn lookup(&self, country: CountryCode, input: &str) -> Result<&City, CityError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(CityError::Empty);
        }
        if trimmed.chars().count() > MAX_CITY_CHARS {
            return Err(CityError::TooLong);
        }
        let key = normalise(trimmed);
        let best = self
            .entries_from(country, &key)
            .take_while(|entry| *entry.key == *key)
            .filter_map(|entry| Some((entry.kind, self.city(entry.city)?)))
            .min_by_key(|(kind, city)| (*kind, Reverse(city.population), city.geoname_id));
        match best {
            Some((_, city)) => Ok(city),
            None => Err(CityError::Unknown {
                input: trimmed.to_owned(),
                country,
                suggestions: self
                    .suggest(country, trimmed, SUGGESTIONS_ON_ERROR)
                    .into_iter()
                    .map(|city| city.name.to_owned())
                    .collect(),
            }),
        }
    }

    /// The cities of a country whose names are closest to the input, best first.
    ///
    /// Similarity is Jaro-Winkler on normalised names, alternates included (so
    /// "Calcuta" finds Kolkata); ties go to the more populous city, each canonical
    /// name appears once, and names too dissimilar to help are left out.
    pub fn suggest(&self, country: CountryCode, input: &str, limit: usize) -> Vec<&City> {
        let key = normalise(input);
        if key.is_empty() || limit == 0 {
            return Vec::new();
        }
        let mut best_score: HashMap<u32, f64> = HashMap::new();
        for entry in self.entries(country) {
            let score = strsim::jaro_winkler(&key, &entry.key);
            if score < MIN_SUGGESTION_SIMILARITY {
                continue;
            }
            let best = best_score.entry(entry.city).or_insert(score);
            *best = best.max(score);
        }
        let mut scored: Vec<(f64, &City)> = best_score
            .into_iter()
            .filter_map(|(index, score)| Some((score, self.city(index)?)))
            .collect();
        scored.sort_by(|(score_a, a), (score_b, b)| {
            score_b
                .total_cmp(score_a)
                .then(b.population.cmp(&a.population))
                .then(a.geoname_id.cmp(&b.geoname_id))
        });
        let mut seen_names = HashSet::new();
        scored
            .into_iter()
            .map(|(_, city)| city)
            .filter(|city| seen_names.insert(city.name))
            .take(limit)
            .collect()
    }

    /// Cities of a country with a name starting with the prefix, most populous first (for autocomplete).
    ///
    /// Canonical and ASCII names rank before alternate names, so "s" offers San Diego
    /// before Chicago (alternate "Sikago"); within each group the most populous city
    /// comes first. An empty prefix matches nothing.
    pub fn search_prefix(&self, country: CountryCode, prefix: &str, limit: usize) -> Vec<&City> {
        let folded = fold(prefix);
        if folded.is_empty() || limit == 0 {
            return Vec::new();
        }
        // "St" may be the start of "Stockton" as well as an abbreviated "Saint".
        let expanded = expand_abbreviations(folded.clone());
        let mut matches: Vec<(u32, NameKind)> = Vec::new();
        for key in [&folded, &expanded] {
            matches.extend(
                self.entries_from(country, key)
                    .take_while(|entry| entry.key.starts_with(key.as_str()))
                    .map(|entry| (entry.city, entry.kind)),
            );
        }
        // Keep each city once, at its best kind of match (canonical sorts first).
        matches.sort_unstable();
        matches.dedup_by_key(|(city, _)| *city);
        let mut cities: Vec<(NameKind, &City)> = matches
            .into_iter()
            .filter_map(|(index, kind)| Some((kind, self.city(index)?)))
            .collect();
        cities.sort_by_key(|(kind, city)| (*kind, Reverse(city.population), city.geoname_id));
        cities.truncate(limit);
        cities.into_iter().map(|(_, city)| city).collect()
    }

    /// Every city of a country (none for a country the gazetteer does not cover).
    pub fn cities_in(&self, country: CountryCode) -> &[City] {
        self.countries
            .get(&country)
            .map_or(&[], |index| &self.cities[index.cities.clone()])
    }

    /// How many cities the gazetteer holds.
    pub fn len(&self) -> usize {
        self.cities.len()
    }

    /// Whether the gazetteer holds no city at all (never true for the shipped data).
    pub fn is_empty(&self) -> bool {
        self.cities.is_empty()
    }

    fn city(&self, index: u32) -> Option<&City> {
        self.cities.get(usize::try_from(index).ok()?)
    }

    fn entries(&self, country: CountryCode) -> &[NameEntry] {
        match self.countries.get(&country) {
            Some(index) => index
                .names
                .get_or_init(|| self.build_names(index.cities.clone())),
            None => &[],
        }
    }

    /// Indexes every normalised name of the given cities, sorted by key.
    fn build_names(&self, cities: Range<usize>) -> Vec<NameEntry> {
        let mut entries = Vec::with_capacity(cities.len() * 6);
        let mut keys: Vec<(String, NameKind)> = Vec::new();
        for index in cities {
            let (Some(city), Ok(city_index)) = (self.cities.get(index), u32::try_from(index))
            else {
                continue;
            };
            keys.clear();
            keys.push((normalise(city.name), NameKind::Canonical));
            keys.push((normalise(city.ascii_name), NameKind::Canonical));
            for alternate in &city.alternate_names {
                keys.push((normalise(alternate), NameKind::Alternate));
            }
            // Keep each key once per city, at its best kind (canonical sorts first).
            keys.sort();
            keys.dedup_by(|later, earlier| later.0 == earlier.0);
            for (key, kind) in keys.drain(..) {
                if !key.is_empty() {
                    entries.push(NameEntry {
                        key: key.into_boxed_str(),
                        city: city_index,
                        kind,
                    });
                }
            }
        }
        entries.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        entries
    }

    /// The country's entries from the first one whose key is not below `key`.
    fn entries_from(&self, country: CountryCode, key: &str) -> impl Iterator<Item = &NameEntry> {
        let entries = self.entries(country);
        let start = entries.partition_point(|entry| *entry.key < *key);
        entries.get(start..).unwrap_or(&[]).iter()
    }

    /// Reads every line of the city data and groups the cities by country.
    fn parse(data: &'static str) -> Result<Gazetteer, CityDataError> {
        let mut cities: Vec<City> = Vec::with_capacity(data.len() / 64);
        let mut countries: HashMap<CountryCode, CountryIndex> = HashMap::new();
        for (index, line) in data.lines().enumerate() {
            let error = |reason| CityDataError {
                line: index + 1,
                reason,
            };
            let city = parse_city(line).map_err(error)?;
            if let Some(previous) = cities.last() {
                // Countries are stored as contiguous ranges, so the order is an invariant.
                if (previous.country, previous.geoname_id) >= (city.country, city.geoname_id) {
                    return Err(error("not sorted by country and geoname id"));
                }
            }
            let position = cities.len();
            countries
                .entry(city.country)
                .or_insert_with(|| CountryIndex {
                    cities: position..position,
                    names: OnceLock::new(),
                })
                .cities
                .end = position + 1;
            cities.push(city);
        }
        if u32::try_from(cities.len()).is_err() {
            return Err(CityDataError {
                line: cities.len(),
                reason: "too many cities",
            });
        }
        Ok(Gazetteer { cities, countries })
    }
}

/// Reads one line of the city data, naming the first problem found.
fn parse_city(line: &'static str) -> Result<City, &'static str> {
    let [geoname_id, country, name, ascii_name, latitude, longitude, population, alternates] =
        split_fields(line).ok_or("not exactly 8 tab-separated fields")?;
    let geoname_id = geoname_id
        .parse()
        .map_err(|_| "geoname id is not a number")?;
    let country = CountryCode::parse(country).map_err(|_| "country is not known")?;
    let latitude: f64 = latitude.parse().map_err(|_| "latitude is not a number")?;
    let longitude: f64 = longitude.parse().map_err(|_| "longitude is not a number")?;
    let population = population
        .parse()
        .map_err(|_| "population is not a whole number")?;
    if name.trim().is_empty() || name.trim() != name {
        return Err("name is empty or padded");
    }
    if !(-90.0..=90.0).contains(&latitude) || !(-180.0..=180.0).contains(&longitude) {
        return Err("coordinates out of range");
    }
    let alternate_names: Vec<&'static str> = if alternates.is_empty() {
        Vec::new()
    } else {
        Separated::new(alternates, b'|').collect()
    };
    if alternate_names.iter().any(|alternate| alternate.is_empty()) {
        return Err("empty alternate name");
    }
    Ok(City {
        geoname_id,
        name,
        // The script leaves the column empty when the name is already ASCII.
        ascii_name: if ascii_name.is_empty() {
            name
        } else {
            ascii_name
        },
        country,
        latitude,
        longitude,
        population,
        alternate_names,
    })
}

/// Splits a line at tabs into exactly `N` fields.
fn split_fields<const N: usize>(line: &'static str) -> Option<[&'static str; N]> {
    let mut fields = [""; N];
    let mut parts = Separated::new(line, b'\t');
    for field in &mut fields {
        *field = parts.next()?;
    }
    match parts.next() {
        Some(_) => None,
        None => Some(fields),
    }
}

/// The pieces of a string between occurrences of one ASCII separator byte.
///
/// A plain byte loop, because `str::split` is many times slower in unoptimised
/// builds and this runs for every field of every city at start-up.
struct Separated {
    rest: Option<&'static str>,
    separator: u8,
}

impl Separated {
    fn new(text: &'static str, separator: u8) -> Separated {
        Separated {
            rest: Some(text),
            separator,
        }
    }
}

impl Iterator for Separated {
    type Item = &'static str;

    fn next(&mut self) -> Option<&'static str> {
        let rest = self.rest?;
        let bytes = rest.as_bytes();
        let mut end = 0;
        while let Some(&byte) = bytes.get(end) {
            if byte == self.separator {
                break;
            }
            end += 1;
        }
        // The separator is ASCII, so both cuts fall on character boundaries.
        self.rest = rest.get(end + 1..);
        rest.get(..end)
    }
}

/// Abbreviated words of place names and the word they stand for.
const ABBREVIATIONS: [(&str, &str); 5] = [
    ("st", "saint"),
    ("ste", "sainte"),
    ("mt", "mount"),
    ("ft", "fort"),
    ("pt", "point"),
];

/// Folds a name to the form used for matching: ASCII, lower-case, words separated by single spaces.
///
/// Apostrophes vanish ("Ma'arrat" = "Maarrat"), hyphens, dots and other
/// punctuation separate words ("Winston-Salem" = "Winston Salem"), and common
/// abbreviations are spelled out ("St. Louis" = "Saint Louis").
fn normalise(input: &str) -> String {
    expand_abbreviations(fold(input))
}

/// Folds to ASCII lower-case words without spelling out abbreviations.
fn fold(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    let mut pending_space = false;
    let mut push = |ch: char| {
        if ch.is_ascii_alphanumeric() {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(ch.to_ascii_lowercase());
        } else if !matches!(ch, '\'' | '`') {
            pending_space = true;
        }
    };
    // Most names are already ASCII, so skip the transliteration pass for them.
    if input.is_ascii() {
        input.chars().for_each(&mut push);
    } else {
        deunicode::deunicode(input).chars().for_each(&mut push);
    }
    out
}

/// Replaces abbreviated words of a folded name with the words they stand for.
fn expand_abbreviations(folded: String) -> String {
    let full_word = |word: &str| {
        ABBREVIATIONS
            .iter()
            .find(|(short, _)| *short == word)
            .map(|(_, long)| *long)
    };
    if folded.split(' ').all(|word| full_word(word).is_none()) {
        return folded;
    }
    folded
        .split(' ')
        .map(|word| full_word(word).unwrap_or(word))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn country(code: &str) -> CountryCode {
        CountryCode::parse(code).unwrap()
    }

    fn pk() -> CountryCode {
        country("PK")
    }

    fn names(cities: &[&City]) -> Vec<&'static str> {
        cities.iter().map(|city| city.name).collect()
    }

    #[test]
    fn every_line_of_the_embedded_data_parses() {
        let parsed = Gazetteer::parse(CITIES_TSV).unwrap();
        assert_eq!(parsed.len(), CITIES_TSV.lines().count());
        let indexed: usize = parsed
            .countries
            .values()
            .map(|index| index.cities.len())
            .sum();
        assert_eq!(indexed, parsed.len());
        for code in parsed.countries.keys() {
            assert!(!parsed.entries(*code).is_empty());
        }
        assert_eq!(parsed.len(), 33961);
        assert!(parsed.cities.iter().all(|city| city.population >= 15_000));
        assert!(parsed.cities.iter().all(|city| city.ascii_name.is_ascii()));
        assert!(parsed
            .cities
            .iter()
            .all(|city| city.alternate_names.len() <= 6));
    }

    #[test]
    fn every_city_is_found_by_its_own_names() {
        let gazetteer = gazetteer();
        for city in &gazetteer.cities {
            for name in [city.name, city.ascii_name] {
                let found = gazetteer.lookup(city.country, name).unwrap();
                assert_eq!(normalise(found.name), normalise(city.name), "{name}");
                assert!(found.population >= city.population, "{name}");
            }
        }
    }

    #[test]
    fn lahore_in_any_case_becomes_lahore_pk() {
        for input in ["lahore", "Lahore", "LAHORE", "  lahore "] {
            let city = gazetteer().lookup(pk(), input);
            let city = city.unwrap_or_else(|error| panic!("{input:?}: {error}"));
            assert_eq!(city.name, "Lahore");
            assert_eq!(city.country.as_str(), "PK");
            assert_eq!(city.geoname_id, 1172451);
        }
    }

    #[test]
    fn lahore_carries_its_coordinates_and_population() {
        let lahore = gazetteer().lookup(pk(), "Lahore").unwrap();
        assert_eq!(lahore.latitude, 31.558);
        assert_eq!(lahore.longitude, 74.35071);
        assert_eq!(lahore.population, 13_004_135);
        assert_eq!(lahore.ascii_name, "Lahore");
    }

    #[test]
    fn sao_paulo_without_accent_becomes_the_canonical_name() {
        for input in ["Sao Paulo", "sao paulo", "SÃO PAULO", "São-Paulo"] {
            let city = gazetteer().lookup(country("br"), input).unwrap();
            assert_eq!(city.name, "São Paulo");
            assert_eq!(city.ascii_name, "Sao Paulo");
            assert_eq!(city.geoname_id, 3448439);
        }
    }

    #[test]
    fn rawalpindi_and_karachi_resolve_in_pakistan() {
        assert_eq!(
            gazetteer().lookup(pk(), "rawalpindi").unwrap().geoname_id,
            1166993
        );
        assert_eq!(
            gazetteer().lookup(pk(), "KARACHI").unwrap().geoname_id,
            1174872
        );
    }

    #[test]
    fn bombay_is_an_alternate_name_of_mumbai() {
        let mumbai = gazetteer().lookup(country("IN"), "Bombay").unwrap();
        assert_eq!(mumbai.name, "Mumbai");
        assert_eq!(mumbai.geoname_id, 1275339);
        assert!(mumbai.alternate_names.contains(&"Bombay"));
        assert_eq!(
            gazetteer()
                .lookup(country("IN"), "mumbai")
                .unwrap()
                .geoname_id,
            1275339
        );
    }

    #[test]
    fn us_cities_resolve_with_dots_and_alternates() {
        let new_york = gazetteer().lookup(country("US"), "new york").unwrap();
        assert_eq!(new_york.name, "New York City");
        assert_eq!(new_york.geoname_id, 5128581);
        let st_louis = gazetteer().lookup(country("US"), "st louis").unwrap();
        assert_eq!(st_louis.name, "St. Louis");
        assert_eq!(
            gazetteer()
                .lookup(country("US"), "Saint Louis")
                .unwrap()
                .name,
            "St. Louis"
        );
        assert_eq!(
            gazetteer()
                .lookup(country("US"), "winston salem")
                .unwrap()
                .name,
            "Winston-Salem"
        );
    }

    #[test]
    fn the_most_populous_city_wins_a_shared_name() {
        let springfield = gazetteer().lookup(country("US"), "Springfield").unwrap();
        let all_springfields: Vec<u32> = gazetteer()
            .cities
            .iter()
            .filter(|city| city.name == "Springfield" && city.country == country("US"))
            .map(|city| city.population)
            .collect();
        assert!(all_springfields.len() > 1);
        assert_eq!(
            Some(springfield.population),
            all_springfields.into_iter().max()
        );
    }

    #[test]
    fn a_city_is_only_found_in_its_own_country() {
        let error = gazetteer().lookup(country("IN"), "Lahore").unwrap_err();
        assert!(matches!(error, CityError::Unknown { .. }));
    }

    #[test]
    fn an_unknown_city_suggests_the_closest_names_in_that_country() {
        let error = gazetteer().lookup(pk(), "Rawalpindy").unwrap_err();
        let CityError::Unknown {
            input,
            country: searched,
            suggestions,
        } = &error
        else {
            panic!("expected an unknown city, got {error:?}");
        };
        assert_eq!(input, "Rawalpindy");
        assert_eq!(*searched, pk());
        assert_eq!(suggestions.first().map(String::as_str), Some("Rawalpindi"));
        assert!(suggestions.len() <= 5);
        assert_eq!(
            error.to_string(),
            "\"Rawalpindy\" is not a known city in Pakistan"
        );
    }

    #[test]
    fn a_misspelt_lahore_suggests_lahore_first() {
        let error = gazetteer().lookup(pk(), "  Lahor ").unwrap_err();
        let CityError::Unknown { suggestions, .. } = &error else {
            panic!("expected an unknown city, got {error:?}");
        };
        assert_eq!(
            suggestions,
            &["Lahore", "Kashmor", "Lachi", "Talhar", "Kahror Pakka"]
        );
        assert_eq!(
            error.to_string(),
            "\"Lahor\" is not a known city in Pakistan"
        );
        assert_eq!(
            names(&gazetteer().suggest(pk(), "Lahor", 3)).first(),
            Some(&"Lahore")
        );
    }

    #[test]
    fn a_misspelt_alternate_name_suggests_its_city() {
        let suggestions = gazetteer().suggest(country("IN"), "Calcuttaa", 5);
        assert_eq!(suggestions.first().map(|city| city.name), Some("Kolkata"));
    }

    #[test]
    fn suggestions_are_limited_and_unique() {
        let suggestions = gazetteer().suggest(country("US"), "Springfeld", 5);
        assert_eq!(suggestions.len(), 5);
        assert_eq!(suggestions[0].name, "Springfield");
        let unique: HashSet<&str> = suggestions.iter().map(|city| city.name).collect();
        assert_eq!(unique.len(), 5);
        assert!(gazetteer().suggest(pk(), "Lahore", 0).is_empty());
        assert!(gazetteer().suggest(pk(), "  ", 5).is_empty());
    }

    #[test]
    fn historical_names_resolve_to_todays_city() {
        for (code, input, expected) in [
            ("IN", "Calcutta", "Kolkata"),
            ("IN", "Madras", "Chennai"),
            ("IN", "Bangalore", "Bengaluru"),
            ("MM", "Rangoon", "Yangon"),
            ("VN", "Saigon", "Ho Chi Minh City"),
            ("UA", "Kiev", "Kyiv"),
            ("DE", "München", "Munich"),
        ] {
            assert_eq!(
                gazetteer().lookup(country(code), input).unwrap().name,
                expected
            );
        }
    }

    #[test]
    fn an_empty_city_is_rejected_as_empty() {
        assert_eq!(gazetteer().lookup(pk(), ""), Err(CityError::Empty));
        assert_eq!(gazetteer().lookup(pk(), " \t "), Err(CityError::Empty));
        assert_eq!(CityError::Empty.to_string(), "city must not be empty");
    }

    #[test]
    fn a_city_over_100_characters_is_too_long() {
        let long = "a".repeat(101);
        assert_eq!(gazetteer().lookup(pk(), &long), Err(CityError::TooLong));
        let error = gazetteer().lookup(pk(), &"a".repeat(100)).unwrap_err();
        assert!(matches!(error, CityError::Unknown { .. }));
    }

    #[test]
    fn punctuation_only_input_is_unknown_without_suggestions() {
        assert_eq!(
            gazetteer().lookup(pk(), "--"),
            Err(CityError::Unknown {
                input: "--".to_owned(),
                country: pk(),
                suggestions: Vec::new(),
            })
        );
    }

    #[test]
    fn prefix_lah_in_pakistan_gives_lahore_first() {
        let cities = gazetteer().search_prefix(pk(), "lah", 5);
        assert_eq!(cities.first().map(|city| city.name), Some("Lahore"));
        assert!(cities.len() <= 5);
        assert!(cities
            .windows(2)
            .all(|pair| pair[0].population >= pair[1].population));
        assert_eq!(
            gazetteer().search_prefix(pk(), "LAH", 5),
            gazetteer().search_prefix(pk(), " lah", 5)
        );
    }

    #[test]
    fn prefix_search_is_most_populous_first_and_limited() {
        let cities = gazetteer().search_prefix(pk(), "ka", 3);
        assert_eq!(names(&cities)[0], "Karachi");
        assert_eq!(cities.len(), 3);
        assert!(gazetteer().search_prefix(pk(), "", 5).is_empty());
        assert!(gazetteer().search_prefix(pk(), "lah", 0).is_empty());
        assert!(gazetteer().search_prefix(pk(), "zzzzzz", 5).is_empty());
    }

    #[test]
    fn prefix_search_ranks_canonical_names_before_alternates() {
        let cities = gazetteer().search_prefix(country("US"), "s", 3);
        assert_eq!(names(&cities), ["San Antonio", "San Diego", "San Jose"]);
    }

    #[test]
    fn prefix_st_offers_both_saints_and_other_st_names() {
        let cities = gazetteer().search_prefix(country("US"), "St", 200);
        let found = names(&cities);
        assert!(found.contains(&"St. Louis"));
        assert!(found.contains(&"Stockton"));
    }

    #[test]
    fn prefix_search_matches_alternate_names() {
        let cities = gazetteer().search_prefix(country("IN"), "bomba", 3);
        assert_eq!(cities.first().map(|city| city.name), Some("Mumbai"));
    }

    #[test]
    fn normalising_folds_accents_case_spacing_and_punctuation() {
        assert_eq!(normalise("  São   Paulo "), "sao paulo");
        assert_eq!(normalise("Winston-Salem"), "winston salem");
        assert_eq!(normalise("St.Louis"), "saint louis");
        assert_eq!(normalise("Mt. Vernon"), "mount vernon");
        assert_eq!(normalise("Stockton"), "stockton");
        assert_eq!(normalise("Ma'arrat"), "maarrat");
        assert_eq!(normalise("Zürich"), "zurich");
        assert_eq!(normalise("---"), "");
    }

    #[test]
    fn cities_serialise_with_their_country_code() {
        let lahore = gazetteer().lookup(pk(), "Lahore").unwrap();
        let json = serde_json::to_value(lahore).unwrap();
        assert_eq!(json["country"], "PK");
        assert_eq!(json["name"], "Lahore");
    }
}
