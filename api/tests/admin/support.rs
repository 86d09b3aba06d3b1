//! A running admin API over fresh actors and an in-memory log.

use std::path::PathBuf;
use std::sync::Arc;

use tessera_actors::random::SeededRandom;
use tessera_actors::server::supervisor::{Server, ServerSettings};
use tessera_eventlog::{Clock, LocalLog, ManualClock};
use tessera_identity::TrustDomain;
use tessera_proto::spire::api::types;
use tessera_server::admin::{self, AdminContext};
use tessera_server::config::ApiLimits;
use tessera_server::daemon::{ShutdownSignal, ShutdownTrigger};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub const TD: &str = "example.org";

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub server: Server,
    pub log: Arc<LocalLog>,
    pub channel: Channel,
    /// Log head once the authority has its first CA and JWT key.
    pub base: u64,
    trigger: ShutdownTrigger,
    task: JoinHandle<Result<(), admin::ServeError>>,
}

impl Fixture {
    pub async fn start() -> Fixture {
        Self::with_limits(ApiLimits::default()).await
    }

    pub async fn with_limits(limits: ApiLimits) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("private/api.sock");
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_unix_secs(1_700_000_000));
        let log = Arc::new(LocalLog::in_memory(clock.clone()));
        let settings = ServerSettings::new(TrustDomain::new(TD).unwrap());
        let server = Server::start(settings, log.clone(), clock, Arc::new(SeededRandom::new(1)))
            .await
            .unwrap();
        // The first CA and JWT key, so that the log's own records come before the test's.
        server.authority.tick().await.unwrap();
        let base = tessera_eventlog::EventLog::head(log.as_ref()).seq;
        let (listener, guard) = tessera_server::uds::bind(&socket).await.unwrap();
        let ctx = AdminContext::new(server.clone(), limits);
        let (health, health_service) = tonic_health::server::health_reporter();
        let (trigger, shutdown) = ShutdownSignal::new();
        let task = tokio::spawn(async move {
            let _guard = guard;
            admin::serve(listener, ctx, health, health_service, shutdown.wait()).await
        });
        let channel = tessera_server::cli::common::connect("test", &socket)
            .await
            .unwrap();
        Fixture {
            _dir: dir,
            socket,
            server,
            log,
            channel,
            base,
            trigger,
            task,
        }
    }

    pub async fn stop(self) {
        self.trigger.fire();
        drop(self.channel);
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), self.task).await;
        assert!(
            matches!(outcome, Ok(Ok(Ok(())))),
            "admin API did not stop cleanly: {outcome:?}"
        );
        assert!(
            !self.socket.exists(),
            "the socket file is removed at shutdown"
        );
        self.server.stop().await;
    }
}

pub fn id(path: &str) -> Option<types::Spiffeid> {
    Some(types::Spiffeid {
        trust_domain: TD.into(),
        path: path.into(),
    })
}

pub fn agent_id() -> Option<types::Spiffeid> {
    id("/spire/agent/x509pop/n1")
}

pub fn selector(s: &str) -> types::Selector {
    let (t, v) = s.split_once(':').unwrap();
    types::Selector {
        r#type: t.into(),
        value: v.into(),
    }
}

pub fn entry(path: &str, selectors: &[&str]) -> types::Entry {
    types::Entry {
        spiffe_id: id(path),
        parent_id: agent_id(),
        selectors: selectors.iter().map(|s| selector(s)).collect(),
        ..types::Entry::default()
    }
}
