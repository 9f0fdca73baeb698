//! What runs the service around its parts: the accept loop and its limits ([`server`]), the
//! one clock reader ([`clock`]), live events across replicas ([`events`]), webhooks queued in
//! the store and delivered ([`webhooks`]), and the Prometheus metrics ([`metrics`]).

pub mod clock;
pub mod events;
pub mod metrics;
pub mod server;
pub mod webhooks;
