//! The tables, created and migrated at open, versioned in `tessera_schema`.
//!
//! Every open runs the migration in one transaction that first takes a transaction-scoped
//! advisory lock, so servers opening at the same time take turns: the first creates the
//! tables, the others find them at the current version and change nothing.

use super::shared::Shared;
use crate::error::LogError;

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: i32 = 1;

/// Key of the advisory lock held while migrating (an arbitrary constant: "TSSR").
const MIGRATION_LOCK: i64 = 0x5453_5352;

/// What each version adds, in order: `MIGRATIONS[v - 1]` takes the schema from `v - 1` to `v`.
const MIGRATIONS: &[&str] = &[
    // 1: the log. `record` is exactly `Record::encode()`; the other columns copy fields out of
    // it for operators' queries and for the writer's head check.
    "CREATE TABLE tessera_log (
         seq         BIGINT PRIMARY KEY,
         hash        BYTEA  NOT NULL,
         prev_hash   BYTEA  NOT NULL,
         kind        TEXT   NOT NULL,
         recorded_at BIGINT NOT NULL,
         record      BYTEA  NOT NULL
     )",
];

/// Creates or migrates the schema to [`SCHEMA_VERSION`].
///
/// # Errors
/// `Storage` when the database holds a newer schema than this build knows.
pub(crate) async fn migrate(
    shared: &Shared,
    client: &mut deadpool_postgres::Client,
) -> Result<(), LogError> {
    let what = "migrating the schema";
    let tx = shared.within(what, client.transaction()).await?;
    shared
        .within(
            what,
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]),
        )
        .await?;
    shared
        .within(
            what,
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS tessera_schema (
                     id      SMALLINT PRIMARY KEY CHECK (id = 1),
                     version INTEGER  NOT NULL
                 )",
            ),
        )
        .await?;
    let row = shared
        .within(
            what,
            tx.query_opt("SELECT version FROM tessera_schema WHERE id = 1", &[]),
        )
        .await?;
    let found: i32 = match row {
        Some(row) => row.try_get(0).map_err(|e| shared.pg_error(what, &e))?,
        None => 0,
    };
    if found > SCHEMA_VERSION {
        return Err(shared.storage(format!(
            "the database's event log schema is version {found}, newer than this build knows \
             ({SCHEMA_VERSION}): upgrade Tessera on this server before opening it"
        )));
    }
    for (version, sql) in (1..)
        .zip(MIGRATIONS.iter())
        .skip(usize::try_from(found).unwrap_or(0))
    {
        shared.within(what, tx.batch_execute(sql)).await?;
        shared
            .within(
                what,
                tx.execute(
                    "INSERT INTO tessera_schema (id, version) VALUES (1, $1)
                     ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version",
                    &[&version],
                ),
            )
            .await?;
        tracing::info!(location = %shared.location, version, "event log schema migrated");
    }
    shared.within(what, tx.commit()).await
}
