//! The one ingest path of the JSON API and the report form: stamp valid reports with the time,
//! the reporter's fingerprint and an id, and wait until the batch writer has committed them.

use std::sync::Arc;

use uuid::Uuid;

use super::client::ClientAddr;
use super::pow::ProofOfWork;
use super::ApiError;
use crate::domain::counting::Outcome;
use crate::domain::report::Report;
use crate::ingest::{Fingerprinter, Ingest, NetworkQuota, NewReport};
use crate::read::ReadError;
use crate::runtime::clock;

/// What storing a report takes: the writer's queue, the fingerprinter, the proof-of-work
/// switch (it watches the report rate) and the per-network cap.
pub struct Submitter {
    pub ingest: Ingest,
    pub fingerprinter: Arc<Fingerprinter>,
    pub proof_of_work: Arc<ProofOfWork>,
    /// Counted reports one network adds per service per minute; 0 = no cap.
    pub max_counted_per_network_per_minute: u32,
}

impl Submitter {
    /// Stores `reports` from `client` and answers their outcomes once committed.
    pub async fn submit(
        &self,
        client: ClientAddr,
        user_agent: &[u8],
        reports: Vec<Report>,
    ) -> Result<Vec<Outcome>, ApiError> {
        let now = clock::now();
        self.proof_of_work.note_request(now);
        // The reporter secret is read from the store: a failure there is answered as a read's.
        let unstored = |error| ApiError::from_read(ReadError::from(error));
        let fingerprint = self
            .fingerprinter
            .fingerprint(client.0, user_agent, now)
            .await
            .map_err(unstored)?;
        // One network's share of a minute's counted reports is capped in the store.
        let network = match self.max_counted_per_network_per_minute {
            0 => None,
            cap => Some(NetworkQuota {
                network: self
                    .fingerprinter
                    .network(client.0, now)
                    .await
                    .map_err(unstored)?,
                max_counted_per_minute: cap,
            }),
        };
        let window_start = self.ingest.dedup_window_start(now);
        let batch: Vec<NewReport> = reports
            .into_iter()
            .map(|report| NewReport {
                id: report.id.unwrap_or_else(Uuid::now_v7),
                client_id: report.id.is_some(),
                received_at: now,
                service: report.service,
                country: report.country,
                city: report.city.map(|c| c.name),
                problem: report.problem,
                fingerprint,
                dedup_window_start: window_start,
                network,
            })
            .collect();
        let ids: Vec<Uuid> = batch.iter().map(|r| r.id).collect();
        self.ingest
            .submit(batch)
            .await
            .map_err(|e| ApiError::from_ingest(e, ids))
    }
}
