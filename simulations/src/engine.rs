//! The discrete-event engine (docs/adr/0014-simulator.md): one queue of events in virtual
//! time (ties by insertion order), one seeded RNG, single-threaded, no sockets, no sleeps.
//!
//! It drives the pure functions the actors call, so the decisions are the real ones:
//! - server: one shared log (a seq counter) folded into the real `SyncIndex` (registry, nodes,
//!   every agent's view and the per-agent view changes of each event) and, per server, the
//!   real `Authority` aggregate, rotated by the real `rotation::plan` with CAs from the real
//!   `build_ca`; SyncHub's resume-or-snapshot rule ([`log`]); a signing queue of bounded
//!   depth served at `signing_rate` ([`signing`]);
//! - agent: the real `Cache`, `svid_cache::plan` (what to sign and evict, when to wake) and
//!   `IdentitySnapshot::for_workload` ([`agent`]);
//!   the stream with latency, loss, reconnect backoff and failover ([`sync`]);
//! - checkers on every relevant step, incremental ([`checks`]); the fleet, churn, faults and
//!   scripted timelines ([`fleet`]); an operator's forced rotations ([`forced`]) and how the
//!   fleet moves off an old CA ([`migration`]).
//!
//! ```text
//!   Queue<Ev> ──pop──▶ World::handle ──▶ log.commit ──▶ SyncIndex / Authority (real)
//!                          │                 └──▶ per-agent updates ──(latency)──▶ Cache
//!                          └──▶ checkers ──first violation──▶ stop
//! ```

mod agent;
mod checks;
mod fleet;
mod forced;
mod log;
mod migration;
mod queue;
mod real;
pub mod rng;
mod server;
mod signing;
mod sync;

use std::collections::HashMap;
use std::sync::Arc;

use tessera_identity::{Bundle, EntryId, SpiffeId, TrustDomain};

use self::agent::AgentModel;
use self::log::SimLog;
use self::queue::Queue;
use self::rng::Rng;
use self::server::ServerModel;
use crate::metrics::{MinuteSample, RunMetrics, Violation};
use crate::scenario::{Scenario, ScenarioError};

/// Hash maps of the engine: a fixed hasher (fast, and the same in every process).
type Map<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// Why a run could not be carried out (a broken invariant is not an error: it is the run's
/// result, in [`RunMetrics::violation`]).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The scenario is not usable.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// Building or recording a CA failed (the real `build_ca` or `Authority::decide`).
    #[error("authority of server {server}: {reason}")]
    Authority {
        /// The server.
        server: u32,
        /// What failed.
        reason: String,
    },
    /// The real registry or nodes aggregate refused a generated command (a generator bug).
    #[error("the generator's {what} was refused: {reason}")]
    Refused {
        /// What was refused.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// Real signing failed where it cannot (a bad CSR of our own making).
    #[error("real signing: {0}")]
    Signing(String),
}

/// Where a run is, for a progress line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Virtual time reached, ms.
    pub virtual_ms: u64,
    /// Virtual time the run goes to, ms.
    pub total_ms: u64,
    /// Events handled so far.
    pub events: u64,
}

/// Runs `scenario` with `seed` to its end or to the first violation.
///
/// # Errors
/// [`SimError`] when the run cannot be carried out.
pub fn run(scenario: &Scenario, seed: u64) -> Result<RunMetrics, SimError> {
    run_with_progress(scenario, seed, &mut |_| {})
}

/// As [`run`], calling `progress` now and then (every 2^20 events) and at the end.
///
/// # Errors
/// As [`run`].
pub fn run_with_progress(
    scenario: &Scenario,
    seed: u64,
    progress: &mut dyn FnMut(Progress),
) -> Result<RunMetrics, SimError> {
    scenario.validate()?;
    let mut world = World::new(scenario, seed)?;
    world.run(progress)?;
    Ok(world.finish())
}

/// What happens at an instant.
enum Ev {
    /// Close the current minute's sample.
    Minute,
    /// A server's rotation check.
    Tick(u32),
    /// A generated agent attests (with its entries) and connects.
    AgentStart(u32),
    /// An agent opens its sync stream.
    Connect(u32),
    /// A sync message reaches an agent (dropped if its stream `gen` is gone).
    Deliver {
        agent: u32,
        gen: u64,
        delivery: Box<sync::Delivery>,
    },
    /// An agent sees its stream broken.
    Broken { agent: u32, gen: u64 },
    /// An agent's rotation timer (ignored unless `token` is its current one).
    Rotate { agent: u32, token: u64 },
    /// A signing request reaches a server.
    SignArrive(Box<signing::Request>),
    /// A signing answer reaches the agent.
    SignReply(Box<signing::Reply>),
    /// A signing request had no answer in time.
    SignTimeout { agent: u32, round: u64 },
    /// An agent's earliest SVID expiry (ignored unless still its scheduled one).
    Expiry { agent: u32, at_ms: u64 },
    /// An agent's periodic audit.
    Audit(u32),
    /// Churn: create an entry.
    Create,
    /// Churn: delete an entry.
    Delete,
    /// A fault starts.
    FaultStart(usize),
    /// A fault ends.
    FaultEnd(usize),
    /// A scripted fact.
    Script(usize),
    /// A step of a `[[timeline]]` forced rotation.
    Forced { item: usize, step: forced::Step },
}

/// A CA seen in the log: what an SVID's issuer must find in a bundle.
struct CaInfo {
    /// A deterministic name ("#2 of server 0") for reports: never the authority id, which
    /// comes from an OS-RNG key.
    name: String,
    /// The server that prepared it (`None`: the shared authority's).
    owner: Option<usize>,
    anchors: Vec<Vec<u8>>,
    /// `crypto = "fast"` with a `[[timeline]]`: one real leaf this CA signed, through the real
    /// template, that every stand-in SVID of it carries, so the agent's taint judge (which
    /// reads X.509) sees real bytes.
    template: Option<Vec<u8>>,
    /// When an operator revoked it, virtual ms.
    revoked_ms: Option<u64>,
}

/// Everything a run holds.
struct World<'s> {
    sc: &'s Scenario,
    seed: u64,
    rng: Rng,
    queue: Queue<Ev>,
    now_ms: u64,
    end_ms: u64,
    td: TrustDomain,
    log: SimLog,
    servers: Vec<ServerModel>,
    agents: Vec<AgentModel>,
    agent_ix: Map<SpiffeId, u32>,
    /// The published bundle (the union of every server's CAs and keys), shared by messages.
    bundle: Option<Arc<Bundle>>,
    cas: Vec<CaInfo>,
    ca_ix: Map<String, u32>,
    /// Live entries, for churn's random deletes (swap-remove).
    live: Vec<EntryId>,
    live_ix: Map<EntryId, usize>,
    churn_serial: u64,
    svid_serial: u64,
    sign_round: u64,
    /// Used entries with no valid SVID, over all agents.
    unserved: u64,
    connected: u64,
    activations: Vec<u64>,
    /// Runs of each checker, in [`checks::NAMES`] order (copied into the metrics at the end).
    check_runs: [u64; 5],
    metrics: RunMetrics,
    events: u64,
    /// Always empty: the simulated agent plans only when no round is in flight.
    nothing_in_flight: std::collections::HashSet<EntryId>,
    /// Per `[[timeline]]` item, its forced rotation once started.
    forced: Vec<Option<forced::Forced>>,
    /// Moves off an old CA being measured.
    migrations: Vec<migration::Tracker>,
}

impl<'s> World<'s> {
    fn new(sc: &'s Scenario, seed: u64) -> Result<Self, SimError> {
        let td = TrustDomain::new(&sc.trust_domain).map_err(|e| {
            SimError::Scenario(ScenarioError::Invalid {
                key: "trust_domain".into(),
                value: sc.trust_domain.clone(),
                fix: e.to_string(),
            })
        })?;
        let end_ms = u64::try_from(sc.duration.as_millis()).unwrap_or(u64::MAX);
        let servers = (0..sc.servers)
            .map(|k| ServerModel::new(k, sc.servers, &td))
            .collect();
        let mut world = World {
            sc,
            seed,
            rng: Rng::new(seed),
            queue: Queue::new(),
            now_ms: 0,
            end_ms,
            log: SimLog::new(&td, sc.server.resume_window),
            td,
            servers,
            agents: Vec::new(),
            agent_ix: Map::default(),
            bundle: None,
            cas: Vec::new(),
            ca_ix: Map::default(),
            live: Vec::new(),
            live_ix: Map::default(),
            churn_serial: 0,
            svid_serial: 0,
            sign_round: 0,
            unserved: 0,
            connected: 0,
            activations: vec![0; sc.servers as usize],
            check_runs: [0; 5],
            metrics: RunMetrics {
                scenario: sc.name.clone(),
                seed,
                ..RunMetrics::default()
            },
            events: 0,
            nothing_in_flight: agent::no_entries(),
            forced: Vec::new(),
            migrations: Vec::new(),
        };
        for k in 0..sc.servers {
            world.queue.push(0, Ev::Tick(k));
        }
        world.queue.push(60_000, Ev::Minute);
        world.schedule_fleet();
        world.schedule_timeline();
        Ok(world)
    }

    /// Unix seconds now.
    fn now_s(&self) -> i64 {
        self.sc.start_unix + i64::try_from(self.now_ms / 1000).unwrap_or(i64::MAX)
    }

    /// Virtual ms of a Unix second (0 before the start).
    fn ms_of(&self, unix: i64) -> u64 {
        u64::try_from(unix - self.sc.start_unix).unwrap_or(0) * 1000
    }

    /// A one-way network delay.
    fn latency(&mut self) -> u64 {
        let lo = u64::try_from(self.sc.network.latency_min.as_millis()).unwrap_or(0);
        let hi = u64::try_from(self.sc.network.latency_max.as_millis()).unwrap_or(lo);
        self.rng.between(lo, hi)
    }

    fn run(&mut self, progress: &mut dyn FnMut(Progress)) -> Result<(), SimError> {
        while let Some((at, ev)) = self.queue.pop() {
            if at > self.end_ms {
                break;
            }
            self.now_ms = at;
            self.events += 1;
            if self.events.is_multiple_of(1 << 20) {
                progress(self.progress());
            }
            self.handle(ev)?;
            if self.metrics.violation.is_some() {
                break;
            }
        }
        if self.metrics.violation.is_none() {
            self.now_ms = self.now_ms.max(self.end_ms);
            self.final_checks();
        }
        progress(self.progress());
        Ok(())
    }

    fn progress(&self) -> Progress {
        Progress {
            virtual_ms: self.now_ms,
            total_ms: self.end_ms,
            events: self.events,
        }
    }

    fn handle(&mut self, ev: Ev) -> Result<(), SimError> {
        match ev {
            Ev::Minute => self.close_minute(),
            Ev::Tick(k) => self.tick(k)?,
            Ev::AgentStart(a) => self.agent_start(a)?,
            Ev::Connect(a) => self.connect(a),
            Ev::Deliver {
                agent,
                gen,
                delivery,
            } => self.deliver(agent, gen, *delivery),
            Ev::Broken { agent, gen } => self.broken(agent, gen),
            Ev::Rotate { agent, token } => {
                if self.agents[agent as usize].wake_token == token {
                    self.rotate(agent);
                }
            }
            Ev::SignArrive(req) => self.sign_arrive(*req)?,
            Ev::SignReply(reply) => self.sign_reply(*reply),
            Ev::SignTimeout { agent, round } => self.sign_timeout(agent, round),
            Ev::Expiry { agent, at_ms } => self.expiry(agent, at_ms),
            Ev::Audit(a) => self.audit(a),
            Ev::Create => self.churn_create()?,
            Ev::Delete => self.churn_delete()?,
            Ev::FaultStart(i) => self.fault(i, true),
            Ev::FaultEnd(i) => self.fault(i, false),
            Ev::Script(i) => self.script(i),
            Ev::Forced { item, step } => self.forced_step(item, step)?,
        }
        Ok(())
    }

    /// The sample of minute `m`, made on first use.
    fn minute_mut(&mut self, at_ms: u64) -> &mut MinuteSample {
        let m = usize::try_from(at_ms / 60_000).unwrap_or(usize::MAX);
        let minutes = &mut self.metrics.minutes;
        while minutes.len() <= m {
            let minute = minutes.len() as u64;
            minutes.push(MinuteSample {
                minute,
                ..MinuteSample::default()
            });
        }
        &mut minutes[m]
    }

    fn close_minute(&mut self) {
        let (connected, unserved) = (self.connected, self.unserved);
        // The sample of the minute that just ended.
        let sample = self.minute_mut(self.now_ms.saturating_sub(1));
        sample.connected_agents = connected;
        sample.unserved_identities = unserved;
        self.queue.push(self.now_ms + 60_000, Ev::Minute);
    }

    /// Records the first violation; the run stops after the current event.
    fn violate(&mut self, checker: &str, agent: u32, entry: Option<&EntryId>, detail: String) {
        if self.metrics.violation.is_some() {
            return;
        }
        self.metrics.violation = Some(Violation {
            checker: checker.to_owned(),
            at_ms: self.now_ms,
            agent: self.agents[agent as usize].id.to_string(),
            entry: entry.map(|e| e.as_str().to_owned()),
            detail,
            seed: self.seed,
        });
    }

    fn count_check(&mut self, name: &'static str) {
        if let Some(i) = checks::NAMES.iter().position(|n| *n == name) {
            self.check_runs[i] += 1;
        }
    }

    fn finish(mut self) -> RunMetrics {
        self.finish_migrations();
        for (name, runs) in checks::NAMES.iter().zip(self.check_runs) {
            self.metrics.checks.insert((*name).to_owned(), runs);
        }
        self.metrics.virtual_ms = match &self.metrics.violation {
            Some(v) => v.at_ms,
            None => self.end_ms,
        };
        self.metrics.agents = self.agents.iter().filter(|a| a.alive).count() as u64;
        self.metrics.entries = self.log.index.registry().len() as u64;
        self.metrics.log_events = self.log.seq;
        self.metrics.ca_rotations = self.activations.iter().map(|n| n.saturating_sub(1)).sum();
        // Every minute of the run has a sample, even a quiet last one.
        if self.metrics.virtual_ms > 0 {
            let last = self.metrics.virtual_ms - 1;
            let (connected, unserved) = (self.connected, self.unserved);
            let sample = self.minute_mut(last);
            if sample.connected_agents == 0 && sample.unserved_identities == 0 {
                sample.connected_agents = connected;
                sample.unserved_identities = unserved;
            }
        }
        self.metrics
    }
}
