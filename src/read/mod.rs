//! The read side, typed: each query a type, each answer a plain struct, and one [`ReadError`].
//!
//! The API turns HTTP into these queries and the answers back into JSON; the pages and the CLI
//! read through the same functions. Today [`counts`], [`regions`], [`services`] and [`incidents`]
//! read here; once the pages and the admin API do too, `api` and `web` stop naming the store.

pub mod counts;
pub mod incidents;
pub mod regions;
pub mod services;

use crate::domain::report::FieldError;
use crate::store::StoreError;

/// What the read side reads through: the store's read role.
pub use crate::store::ReadStore;

/// Why a read has no answer.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The query asks for something that cannot be answered; each field at fault, named.
    #[error("invalid query: {}", .0.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    #[error(transparent)]
    Store(#[from] StoreError),
}
