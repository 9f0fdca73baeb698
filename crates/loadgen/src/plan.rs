//! The request plan: the server's address and the paths, checked once before the run, and the JSON bodies of the reports each connection sends.

use std::net::SocketAddr;

use bytes::{BufMut, BytesMut};
use hyper::header::HeaderValue;
use hyper::Uri;
use rand::rngs::SmallRng;
use rand::Rng;
use serde::Serialize;
use uuid::Uuid;

use crate::{LoadgenError, LoadgenOptions, PROBLEMS};

/// Path of the ingest endpoint, appended to the base URL's path.
const REPORTS_PATH: &str = "/api/v1/reports";

/// Everything the connection tasks share, prepared once.
pub(crate) struct Plan {
    pub(crate) addr: SocketAddr,
    pub(crate) host: HeaderValue,
    pub(crate) path: Uri,
    services: Vec<String>,
    /// `(country, city)` pairs.
    places: Vec<(String, Option<String>)>,
    distinct_reporters: u32,
    pub(crate) batch: usize,
    /// GET targets; when present, reads are sent instead of reports.
    pub(crate) reads: Vec<Uri>,
    pub(crate) gzip: bool,
    pub(crate) record_answers: bool,
}

/// One report as `POST /api/v1/reports` reads it, borrowed from the plan.
#[derive(Serialize)]
struct ReportBody<'a> {
    service: &'a str,
    country: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    city: Option<&'a str>,
    problem: &'a str,
    id: Uuid,
}

/// Several reports in one request.
#[derive(Serialize)]
struct Batch<'a> {
    reports: Vec<ReportBody<'a>>,
}

impl Plan {
    /// Checks the options, parses the URL and resolves the server's address.
    pub(crate) async fn new(options: &LoadgenOptions) -> Result<Self, LoadgenError> {
        let invalid = |reason: &str| Err(LoadgenError::InvalidOptions(reason.to_owned()));
        if options.connections == 0 {
            return invalid("connections must be at least 1");
        }
        if options.batch == 0 {
            return invalid("batch must be at least 1");
        }
        if options.services.is_empty() {
            return invalid("at least one service is needed");
        }
        if options.places.is_empty() {
            return invalid("at least one place is needed");
        }
        if options.distinct_reporters == 0 {
            return invalid("distinct_reporters must be at least 1");
        }
        if options.duration.is_zero() {
            return invalid("duration must be positive");
        }

        let bad_url = |reason: &str| LoadgenError::InvalidUrl {
            url: options.url.clone(),
            reason: reason.to_owned(),
        };
        let uri: Uri = options
            .url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad_url(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(_) => return Err(bad_url("only http:// is supported")),
            None => return Err(bad_url("missing scheme, e.g. http://127.0.0.1:8080")),
        }
        let authority = uri.authority().ok_or_else(|| bad_url("missing host"))?;
        if authority.as_str().contains('@') {
            return Err(bad_url("credentials in the URL are not supported"));
        }
        let host_port = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        let path: Uri = format!("{}{REPORTS_PATH}", uri.path().trim_end_matches('/'))
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad_url(&e.to_string()))?;
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|_| bad_url("host is not a valid header value"))?;

        let addr = tokio::net::lookup_host(&host_port)
            .await
            .and_then(|mut addrs| {
                addrs
                    .next()
                    .ok_or_else(|| std::io::ErrorKind::NotFound.into())
            })
            .map_err(|source| LoadgenError::Resolve {
                host: host_port.clone(),
                source,
            })?;

        let reads = options
            .reads
            .iter()
            .map(|target| {
                target
                    .parse::<Uri>()
                    .ok()
                    .filter(|uri| uri.scheme().is_none() && target.starts_with('/'))
                    .ok_or_else(|| {
                        LoadgenError::InvalidOptions(format!(
                            "read target {target:?} is not a path such as /api/v1/services"
                        ))
                    })
            })
            .collect::<Result<Vec<Uri>, LoadgenError>>()?;

        Ok(Self {
            addr,
            host,
            path,
            services: options.services.clone(),
            places: options.places.clone(),
            distinct_reporters: options.distinct_reporters,
            batch: options.batch,
            reads,
            gzip: options.gzip,
            record_answers: options.record_answers,
        })
    }

    /// Writes the next request body into `buf`, and the ids it carries into `ids`.
    pub(crate) fn write_body(&self, rng: &mut SmallRng, buf: &mut BytesMut, ids: &mut Vec<Uuid>) {
        ids.clear();
        let mut report = || {
            let (country, city) = &self.places[rng.gen_range(0..self.places.len())];
            // Time-ordered, as the README advises clients to send.
            let id = Uuid::now_v7();
            ids.push(id);
            ReportBody {
                service: &self.services[rng.gen_range(0..self.services.len())],
                country,
                city: city.as_deref(),
                problem: PROBLEMS[rng.gen_range(0..PROBLEMS.len())],
                id,
            }
        };
        let written = if self.batch == 1 {
            serde_json::to_writer(buf.writer(), &report())
        } else {
            let reports = (0..self.batch).map(|_| report()).collect();
            serde_json::to_writer(buf.writer(), &Batch { reports })
        };
        // Strings and a UUID always serialise, and writing to memory cannot fail.
        written.expect("a report body serialises");
    }

    pub(crate) fn user_agent(&self, rng: &mut SmallRng) -> HeaderValue {
        let reporter = rng.gen_range(0..self.distinct_reporters);
        // ASCII digits and letters only, so the conversion cannot fail.
        HeaderValue::try_from(format!("outagewatch-loadgen/1 (reporter {reporter})"))
            .unwrap_or_else(|_| HeaderValue::from_static("outagewatch-loadgen/1"))
    }
}
