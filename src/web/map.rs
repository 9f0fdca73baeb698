//! The world map of the status page: country outlines pre-projected into SVG paths (`assets/web/world-110m.tsv`, from world-atlas by `scripts/build_world_map.mjs`), shaded by each country's reports against normal.

use std::collections::HashMap;
use std::sync::OnceLock;

use maud::{html, Markup};

use crate::read::regions::{RegionRead as Region, RegionStatus};

/// Width and height of the projection the paths were drawn in.
const VIEW_BOX: &str = "0 0 960 470";

/// One country outline; `code` is empty for the few shapes without an ISO code.
struct Shape {
    code: &'static str,
    name: &'static str,
    path: &'static str,
}

fn shapes() -> &'static [Shape] {
    static SHAPES: OnceLock<Vec<Shape>> = OnceLock::new();
    SHAPES.get_or_init(|| {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/assets/web/world-110m.tsv"
        ))
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.splitn(3, '\t');
            Some(Shape {
                code: fields.next()?,
                name: fields.next()?,
                path: fields.next()?,
            })
        })
        .collect()
    })
}

/// How strongly a region is shaded: 0 no reports, 1 reports at about the usual level, 2 at
/// 1.5× normal (the detector's floor), 3 at 3×, 4 at 10× or in an open incident.
pub(super) fn level(region: &Region) -> u8 {
    if region.status == RegionStatus::Incident {
        return 4;
    }
    match region.ratio {
        _ if region.count == 0 => 0,
        Some(r) if r >= 10.0 => 4,
        Some(r) if r >= 3.0 => 3,
        Some(r) if r >= 1.5 && region.status == RegionStatus::Elevated => 2,
        _ => 1,
    }
}

/// What a region's shade means, in words (the map's tooltips and the tables).
pub(super) fn describe(region: &Region) -> String {
    let reports = match region.count {
        1 => "1 report".to_owned(),
        n => format!("{} reports", super::layout::count(n)),
    };
    match region.ratio {
        Some(ratio) => format!(
            "{}: {reports} in the last hour, {ratio:.1}× normal",
            region.name
        ),
        None => format!("{}: {reports} in the last hour", region.name),
    }
}

/// The map, each country's path carrying its code and shade; `countries` are the country
/// regions of the last hour.
pub(super) fn world_map(countries: &[Region]) -> Markup {
    let by_code: HashMap<&str, &Region> =
        countries.iter().map(|r| (r.country.as_str(), r)).collect();
    html! {
        svg #world-map viewBox=(VIEW_BOX) role="img" aria-labelledby="map-title" {
            title #map-title { "World map: countries shaded by reports in the last hour against their normal level" }
            @for shape in shapes() {
                @let region = by_code.get(shape.code);
                path d=(shape.path) data-cc=(shape.code)
                    class={ "level-" (region.map_or(0, |r| level(r))) } {
                    title { (region.map_or_else(|| shape.name.to_owned(), |r| describe(r))) }
                }
            }
        }
    }
}

/// The shades as data, for the script to repaint the map after a refresh without the paths.
pub(super) fn levels(countries: &[Region]) -> Markup {
    html! {
        ul #map-levels data-live hidden {
            @for region in countries {
                li data-cc=(region.country) data-level=(level(region)) { (describe(region)) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(count: i64, ratio: Option<f64>, status: &str) -> Region {
        let status = match status {
            "incident" => RegionStatus::Incident,
            "elevated" => RegionStatus::Elevated,
            _ => RegionStatus::Normal,
        };
        Region {
            country: "PK".into(),
            city: None,
            name: "Pakistan".into(),
            count,
            expected: ratio.map(|r| count as f64 / r),
            ratio,
            status,
            incident_id: None,
        }
    }

    #[test]
    fn shades_follow_the_ratio_and_an_incident_is_darkest() {
        assert_eq!(level(&region(0, None, "normal")), 0);
        assert_eq!(level(&region(5, None, "normal")), 1);
        assert_eq!(level(&region(5, Some(2.0), "normal")), 1);
        assert_eq!(level(&region(20, Some(2.0), "elevated")), 2);
        assert_eq!(level(&region(20, Some(4.0), "elevated")), 3);
        assert_eq!(level(&region(200, Some(25.0), "elevated")), 4);
        assert_eq!(level(&region(12, Some(1.1), "incident")), 4);
    }

    #[test]
    fn every_shape_has_a_path_and_pakistan_is_on_the_map() {
        assert_eq!(shapes().len(), 176);
        assert!(shapes().iter().all(|s| s.path.starts_with('M')));
        let pakistan = shapes().iter().find(|s| s.code == "PK").map(|s| s.name);
        assert_eq!(pakistan, Some("Pakistan"));
    }

    #[test]
    fn a_region_is_described_with_its_reports_and_ratio() {
        assert_eq!(
            describe(&region(1_212, Some(25.24), "incident")),
            "Pakistan: 1,212 reports in the last hour, 25.2× normal"
        );
        assert_eq!(
            describe(&region(1, None, "normal")),
            "Pakistan: 1 report in the last hour"
        );
    }
}
