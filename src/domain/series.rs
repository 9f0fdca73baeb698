//! Which series: what the detector steps, what reads ask for, and what incidents belong to.

use serde::{Deserialize, Serialize};

/// Which series: a service worldwide (`country` None), in a country, or in a city of a country.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SeriesKey {
    pub service: String,
    pub country: Option<String>,
    pub city: Option<String>,
}

impl SeriesKey {
    pub fn global(service: &str) -> Self {
        Self {
            service: service.to_owned(),
            country: None,
            city: None,
        }
    }

    pub fn country(service: &str, country: &str) -> Self {
        Self {
            service: service.to_owned(),
            country: Some(country.to_owned()),
            city: None,
        }
    }

    pub fn city(service: &str, country: &str, city: &str) -> Self {
        Self {
            service: service.to_owned(),
            country: Some(country.to_owned()),
            city: Some(city.to_owned()),
        }
    }

    /// (service, country, city), as the store's queries bind them.
    pub fn parts(&self) -> (&str, Option<&str>, Option<&str>) {
        (&self.service, self.country.as_deref(), self.city.as_deref())
    }

    /// The series this one is part of: a city's country, a country's globe.
    pub fn parent(&self) -> Option<SeriesKey> {
        match (&self.country, &self.city) {
            (Some(country), Some(_)) => Some(Self::country(&self.service, country)),
            (Some(_), None) => Some(Self::global(&self.service)),
            (None, _) => None,
        }
    }
}
