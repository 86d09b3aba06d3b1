//! Opening the event log the config names (embedded sled, or PostgreSQL shared with other
//! servers), and this server's id.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use tessera_eventlog::pg::{PgConfig, PgLog};
use tessera_eventlog::store::sled::SledStore;
use tessera_eventlog::{Clock, EventLog, LocalLog, LogLimits};

use super::RunError;
use crate::config::store::{check_server_id, redact, server_id_file, PostgresStore};
use crate::config::{Config, StoreConfig};

/// The open log, whichever backend.
#[derive(Debug, Clone)]
pub enum OpenedLog {
    /// `<data_dir>/log`, this server's alone.
    Local(Arc<LocalLog>),
    /// One log in PostgreSQL, shared.
    Postgres(PgLog),
}

impl OpenedLog {
    /// The log, for the actors.
    pub fn shared(&self) -> Arc<dyn EventLog> {
        match self {
            Self::Local(log) => log.clone(),
            Self::Postgres(log) => Arc::new(log.clone()),
        }
    }

    /// The last committed seq this server has seen.
    pub fn head(&self) -> u64 {
        self.shared().head().seq
    }

    /// Closes it: queued appends finish, background work stops.
    pub async fn close(self) {
        match self {
            Self::Local(log) => {
                let _ = tokio::task::spawn_blocking(move || log.close()).await;
            }
            Self::Postgres(log) => log.close().await,
        }
    }
}

/// Opens the log `config.store` names, verifying as much of the chain as configured.
pub async fn open_log(config: &Config, clock: Arc<dyn Clock>) -> Result<OpenedLog, RunError> {
    match &config.store {
        StoreConfig::Sled => {
            let dir = config.log_dir();
            let limits = LogLimits {
                open_check: config.open_check,
                // Checked while start-up replays; the server starts only once it has passed.
                check_in_background: true,
                ..LogLimits::default()
            };
            // Opening walks the chain: blocking work.
            let log = tokio::task::spawn_blocking(move || {
                let store = SledStore::open(&dir)?;
                LocalLog::open(Arc::new(store), clock, limits)
            })
            .await
            .map_err(|e| RunError::Task {
                what: "log open",
                reason: e.to_string(),
            })??;
            Ok(OpenedLog::Local(Arc::new(log)))
        }
        StoreConfig::Postgres(pg) => {
            let log = PgLog::open(pg_config(config, pg), clock).await?;
            tracing::info!(database = %redact(&pg.url), "PostgreSQL event log open");
            Ok(OpenedLog::Postgres(log))
        }
    }
}

/// The PostgreSQL log's settings: snapshots stay this server's, under its data dir.
pub fn pg_config(config: &Config, pg: &PostgresStore) -> PgConfig {
    let mut c = PgConfig::new(pg.url.clone(), config.data_dir.join("snapshots"));
    c.pool_size = pg.pool_size;
    c.connect_timeout = pg.connect_timeout;
    c.statement_timeout = pg.statement_timeout;
    c.poll_interval = pg.poll_interval;
    c.open_check = config.open_check;
    c
}

/// This server's id: `server.server_id` if set, else the one kept in `<data_dir>/server_id`,
/// made (random) on first start so that it is stable across restarts.
pub fn server_id(config: &Config) -> Result<String, RunError> {
    if let Some(id) = &config.server_id {
        return Ok(id.clone());
    }
    let path = server_id_file(&config.data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim().to_owned();
            check_server_id(&path.display().to_string(), &id)
                .map_err(|e| RunError::ServerId(format!("{e}; fix or delete the file")))?;
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = new_server_id()?;
            write_id(&path, &id)
                .map_err(|e| RunError::ServerId(format!("cannot write {}: {e}", path.display())))?;
            tracing::info!(server_id = %id, file = %path.display(), "server id made for this data dir");
            Ok(id)
        }
        Err(e) => Err(RunError::ServerId(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

fn new_server_id() -> Result<String, RunError> {
    let mut bytes = [0u8; 6];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| RunError::ServerId("the OS random generator failed".into()))?;
    Ok(format!("server-{}", hex::encode(bytes)))
}

fn write_id(path: &Path, id: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{id}")?;
    file.sync_all()
}
