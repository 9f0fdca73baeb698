//! The country a report form starts with, guessed from the browser's `Accept-Language` (a region subtag such as `en-PK`, else a language spoken mainly in one country).

use crate::domain::geo::CountryCode;

/// Languages whose speakers are mostly in one country, for tags without a region (`ur` → PK).
const LANGUAGE_COUNTRIES: [(&str, &str); 24] = [
    ("ur", "PK"),
    ("de", "DE"),
    ("fr", "FR"),
    ("it", "IT"),
    ("ja", "JP"),
    ("ko", "KR"),
    ("nl", "NL"),
    ("pl", "PL"),
    ("pt", "BR"),
    ("ru", "RU"),
    ("sv", "SE"),
    ("tr", "TR"),
    ("uk", "UA"),
    ("vi", "VN"),
    ("th", "TH"),
    ("id", "ID"),
    ("hi", "IN"),
    ("bn", "BD"),
    ("fa", "IR"),
    ("el", "GR"),
    ("cs", "CZ"),
    ("da", "DK"),
    ("fi", "FI"),
    ("he", "IL"),
];

/// The first country the header names, by preference weight: a valid region subtag of a
/// tag, or the country of a language in [`LANGUAGE_COUNTRIES`].
pub(super) fn country_from_accept_language(header: &str) -> Option<CountryCode> {
    let mut tags: Vec<(f32, usize, &str)> = header
        .split(',')
        .enumerate()
        .filter_map(|(position, item)| {
            let mut parts = item.split(';').map(str::trim);
            let tag = parts.next().filter(|t| !t.is_empty())?;
            let weight = parts
                .find_map(|p| p.strip_prefix("q="))
                .map_or(Some(1.0), |q| q.parse::<f32>().ok())?;
            (weight > 0.0).then_some((weight, position, tag))
        })
        .collect();
    // Highest weight first; the header's order among equals.
    tags.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    tags.iter().find_map(|(_, _, tag)| country_of(tag))
}

fn country_of(tag: &str) -> Option<CountryCode> {
    let mut subtags = tag.split(['-', '_']);
    let language = subtags.next()?.to_ascii_lowercase();
    // The region is the first two-letter subtag after the language (`zh-Hant-TW` → TW).
    let region = subtags.find(|s| s.len() == 2 && s.chars().all(|c| c.is_ascii_alphabetic()));
    region.and_then(|r| CountryCode::parse(r).ok()).or_else(|| {
        LANGUAGE_COUNTRIES
            .iter()
            .find(|(l, _)| *l == language)
            .and_then(|(_, c)| CountryCode::parse(c).ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guess(header: &str) -> Option<String> {
        country_from_accept_language(header).map(|c| c.as_str().to_owned())
    }

    #[test]
    fn a_region_subtag_names_the_country() {
        assert_eq!(guess("en-PK,en;q=0.9").as_deref(), Some("PK"));
        assert_eq!(guess("zh-Hant-TW").as_deref(), Some("TW"));
        assert_eq!(guess("pt_br").as_deref(), Some("BR"));
    }

    #[test]
    fn the_highest_weight_wins_and_a_bare_language_falls_back_to_its_country() {
        assert_eq!(guess("en;q=0.5, ur;q=0.8").as_deref(), Some("PK"));
        assert_eq!(guess("en-GB;q=0.2, de").as_deref(), Some("DE"));
    }

    #[test]
    fn nothing_usable_guesses_nothing() {
        assert_eq!(guess("en").as_deref(), None);
        assert_eq!(guess("*").as_deref(), None);
        assert_eq!(guess("").as_deref(), None);
        assert_eq!(guess("en-XX;q=1, fr;q=0").as_deref(), None);
    }
}
