//! Opening a [`PostgresStore`]: the pool for writes and the read side's pool of its own.

use super::*;

/// The URL's connect options, named as this service to the server.
fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    let connect: PgConnectOptions = url
        .parse()
        .map_err(|e: sqlx::Error| StoreError::Url(e.to_string()))?;
    Ok(connect.application_name("outagewatch"))
}

fn pool_options(options: &ConnectOptions, connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(options.acquire_timeout)
}

impl PostgresStore {
    /// Connects a pool; fails fast when the server cannot be reached.
    pub async fn connect(url: &str, options: &ConnectOptions) -> Result<PostgresStore, StoreError> {
        let connect = connect_options(url)?;
        let pool = pool_options(options, options.max_connections)
            .connect_with(connect.clone())
            .await?;
        Ok(Self::with_pools(pool, connect, options))
    }

    /// A store whose pools connect on first use: for a read replica, which may be down.
    pub fn connect_lazy(url: &str, options: &ConnectOptions) -> Result<PostgresStore, StoreError> {
        let connect = connect_options(url)?;
        let pool =
            pool_options(options, options.max_connections).connect_lazy_with(connect.clone());
        Ok(Self::with_pools(pool, connect, options))
    }

    /// `pool` for writes, beside the read side's pool of its own.
    fn with_pools(
        pool: PgPool,
        connect: PgConnectOptions,
        options: &ConnectOptions,
    ) -> PostgresStore {
        // The read side's statements are planned once per connection: their parameters never
        // change the best plan (index ranges of one series, partitions pruned at run time),
        // and a custom plan per execution was a quarter of an uncached read's database time.
        // Writes keep custom plans: a generic plan of the batch insert halved ingest.
        // Its size is its own (database.read_connections): uncached reads beyond it wait for a
        // connection rather than share the database's cores with more of their kind.
        let reads = pool_options(options, options.read_connections)
            .connect_lazy_with(connect.options([("plan_cache_mode", "force_generic_plan")]));
        PostgresStore {
            pool,
            reads,
            days: Default::default(),
        }
    }
}
