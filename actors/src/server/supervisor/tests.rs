//! Supervision: a stop asked for logs no ERROR and fails nothing; an actor that fails, or stops
//! while nobody asked, fails the server and logs ERROR (also during a stop).

use std::fmt::{Debug, Write as _};
use std::sync::Mutex;

use tessera_eventlog::{LocalLog, ManualClock};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

use super::*;
use crate::random::SeededRandom;

/// The actors `Server::start` links to the supervisor (the checkpointer included: it is on
/// by default).
const CHILDREN: usize = 8;

/// The supervisor's log lines: level and `field=value` text.
#[derive(Default)]
struct Capture {
    lines: Arc<Mutex<Vec<(Level, String)>>>,
    next_span: AtomicU64,
}

impl Capture {
    fn lines(&self) -> Arc<Mutex<Vec<(Level, String)>>> {
        self.lines.clone()
    }
}

struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

impl Subscriber for Capture {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // Asked per event: tests on other threads run without this subscriber.
        Interest::sometimes()
    }
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target() == module_path!().trim_end_matches("::tests")
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut text = Text(String::new());
        event.record(&mut text);
        if let Ok(mut lines) = self.lines.lock() {
            lines.push((*event.metadata().level(), text.0));
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn at(lines: &Mutex<Vec<(Level, String)>>, level: Level) -> Vec<String> {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter(|(l, _)| *l == level)
        .map(|(_, text)| text.clone())
        .collect()
}

async fn start() -> Server {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_unix_secs(1_700_000_000));
    let log = Arc::new(LocalLog::in_memory(clock.clone()));
    let mut settings = ServerSettings::new(TrustDomain::new("example.org").unwrap());
    settings.authority.tick_interval = None;
    settings.prune_interval = None;
    Server::start(settings, log, clock, Arc::new(SeededRandom::new(7)))
        .await
        .unwrap()
}

/// A child of the supervisor that fails, or stops on its own, when told.
struct Crasher;

enum CrasherMsg {
    /// `handle` returns an error.
    Fail,
    /// Stops itself, as an actor does when the log refuses a write.
    StopSelf,
}

impl Actor for Crasher {
    type Msg = CrasherMsg;
    /// Whether `post_stop` fails.
    type State = bool;
    type Arguments = bool;

    async fn pre_start(
        &self,
        _: ActorRef<CrasherMsg>,
        fail_on_stop: bool,
    ) -> Result<bool, ractor::ActorProcessingErr> {
        Ok(fail_on_stop)
    }

    async fn handle(
        &self,
        myself: ActorRef<CrasherMsg>,
        msg: CrasherMsg,
        _: &mut bool,
    ) -> Result<(), ractor::ActorProcessingErr> {
        match msg {
            CrasherMsg::Fail => Err("boom: broken invariant".into()),
            CrasherMsg::StopSelf => {
                myself.stop(Some("the log refused a write".into()));
                Ok(())
            }
        }
    }

    async fn post_stop(
        &self,
        _: ActorRef<CrasherMsg>,
        fail_on_stop: &mut bool,
    ) -> Result<(), ractor::ActorProcessingErr> {
        if *fail_on_stop {
            return Err("final flush failed".into());
        }
        Ok(())
    }
}

async fn crasher(server: &Server, name: &str, fail_on_stop: bool) -> ActorRef<CrasherMsg> {
    let (actor, _) = Actor::spawn_linked(
        Some(format!("{name}-{}", INSTANCE.load(Ordering::Relaxed))),
        Crasher,
        fail_on_stop,
        server.supervisor.get_cell(),
    )
    .await
    .unwrap();
    actor
}

async fn failure(server: &Server) -> String {
    tokio::time::timeout(Duration::from_secs(10), server.failed())
        .await
        .expect("the server failed within 10 s")
}

#[tokio::test]
async fn a_requested_stop_logs_no_error_and_fails_nothing() {
    let capture = Capture::default();
    let lines = capture.lines();
    let _guard = tracing::subscriber::set_default(capture);
    let server = start().await;
    server.stop().await;

    assert_eq!(at(&lines, Level::ERROR), Vec::<String>::new());
    assert_eq!(at(&lines, Level::WARN), Vec::<String>::new());
    let stopped = at(&lines, Level::DEBUG);
    assert_eq!(stopped.len(), CHILDREN, "{stopped:?}");
    assert!(
        stopped.iter().all(|l| l.contains("server stopping")),
        "{stopped:?}"
    );
    assert_eq!(*server.failed.borrow(), None);
}

#[tokio::test]
async fn an_actor_that_fails_logs_error_and_fails_the_server() {
    let capture = Capture::default();
    let lines = capture.lines();
    let _guard = tracing::subscriber::set_default(capture);
    let server = start().await;
    let actor = crasher(&server, "crasher", false).await;
    actor.cast(CrasherMsg::Fail).unwrap();

    let reason = failure(&server).await;
    assert!(
        reason.contains("crasher") && reason.contains("boom: broken invariant"),
        "{reason}"
    );
    let errors = at(&lines, Level::ERROR);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("fail-stop"), "{errors:?}");
    assert!(errors[0].contains("boom: broken invariant"), "{errors:?}");
    server.stop().await;
    assert_eq!(at(&lines, Level::ERROR).len(), 1, "one failure, one ERROR");
}

#[tokio::test]
async fn an_actor_that_stops_while_nobody_asked_fails_the_server() {
    let capture = Capture::default();
    let lines = capture.lines();
    let _guard = tracing::subscriber::set_default(capture);
    let server = start().await;
    let actor = crasher(&server, "quitter", false).await;
    actor.cast(CrasherMsg::StopSelf).unwrap();

    let reason = failure(&server).await;
    assert!(
        reason.contains("quitter") && reason.contains("the log refused a write"),
        "{reason}"
    );
    let errors = at(&lines, Level::ERROR);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("fail-stop"), "{errors:?}");
    server.stop().await;
}

#[tokio::test]
async fn an_actor_that_fails_during_the_stop_is_still_an_error() {
    let capture = Capture::default();
    let lines = capture.lines();
    let _guard = tracing::subscriber::set_default(capture);
    let server = start().await;
    let _actor = crasher(&server, "flusher", true).await;
    server.stop().await;

    let errors = at(&lines, Level::ERROR);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("while the server was stopping")
            && errors[0].contains("final flush failed"),
        "{errors:?}"
    );
    let reason = server.failed.borrow().clone();
    assert!(
        reason.as_deref().is_some_and(|r| r.contains("flusher")),
        "{reason:?}"
    );
    // The other children's ends were asked for.
    assert_eq!(at(&lines, Level::DEBUG).len(), CHILDREN);
}
