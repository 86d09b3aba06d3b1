//! Which server the agent talks to next. The configured addresses are resolved at each
//! (re)connection (a DNS name that resolves to several addresses gives several servers), and
//! one is chosen at random, so that agents spread over the servers, avoiding the servers that
//! failed since the last success: never the same failed server twice in a row while another
//! exists, and every server tried before one that failed is tried again.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tessera_actors::random::{random_u64, RandomSource};

use crate::config::{ServerAddress, ServerHost};

/// One server to connect to: the configured address (its name gives the TLS server name and
/// the HTTP/2 authority) and the socket address it resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// As configured.
    pub(crate) address: ServerAddress,
    /// Where to connect.
    pub(crate) socket: SocketAddr,
}

impl fmt::Display for Target {
    /// `10.0.0.1:8081`, or `server.example.org:8081 (10.0.0.1:8081)` for a resolved name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address.host() {
            ServerHost::Ip(_) => write!(f, "{}", self.address),
            ServerHost::Name(_) => write!(f, "{} ({})", self.address, self.socket),
        }
    }
}

/// Servers that failed since the last success.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Failures {
    /// Each once, oldest first.
    since_success: Vec<SocketAddr>,
    /// The last one that failed.
    last: Option<SocketAddr>,
}

/// The configured servers and the choice among them.
#[derive(Debug)]
pub(crate) struct Servers {
    addresses: Vec<ServerAddress>,
    random: Arc<dyn RandomSource>,
    failures: Mutex<Failures>,
    /// Servers found by the last resolution (at least the number of addresses until then).
    known: AtomicUsize,
}

impl Servers {
    /// Chooses among `addresses` (at least one) with `random`.
    pub(crate) fn new(addresses: Vec<ServerAddress>, random: Arc<dyn RandomSource>) -> Self {
        let known = AtomicUsize::new(addresses.len());
        Self {
            addresses,
            random,
            failures: Mutex::new(Failures::default()),
            known,
        }
    }

    /// The addresses as configured, for messages.
    pub(crate) fn describe(&self) -> String {
        let all: Vec<String> = self.addresses.iter().map(ToString::to_string).collect();
        all.join(", ")
    }

    /// A random number (for backoff jitter).
    pub(crate) fn roll(&self) -> u64 {
        random_u64(self.random.as_ref())
    }

    /// Whether there may be another server to fail over to.
    pub(crate) fn several(&self) -> bool {
        self.known.load(Ordering::Relaxed) > 1
    }

    /// Resolves every address and chooses one server; the error says why none is reachable
    /// (no address resolves).
    pub(crate) async fn next(&self) -> Result<Target, String> {
        let candidates = resolve(&self.addresses).await?;
        self.known.store(candidates.len(), Ordering::Relaxed);
        let roll = random_u64(self.random.as_ref());
        let failures = self.lock().clone();
        choose(&candidates, &failures, roll)
            .and_then(|i| candidates.into_iter().nth(i))
            .ok_or_else(|| format!("no server address resolves ({})", self.describe()))
    }

    /// `target` failed (unreachable, stream ended or broke): chosen again only once every
    /// other server has failed too, and never twice in a row while another exists.
    pub(crate) fn failed(&self, target: &Target) {
        let mut f = self.lock();
        f.since_success.retain(|s| *s != target.socket);
        f.since_success.push(target.socket);
        f.last = Some(target.socket);
    }

    /// `target` answered: every server is a candidate again.
    pub(crate) fn succeeded(&self) {
        *self.lock() = Failures::default();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Failures> {
        // The value stays valid whatever panicked while holding the lock.
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Every server `addresses` stand for, in order, without duplicates. Names are resolved now;
/// one that does not resolve is skipped (logged) while others do.
async fn resolve(addresses: &[ServerAddress]) -> Result<Vec<Target>, String> {
    let mut out: Vec<Target> = Vec::new();
    let mut errors = Vec::new();
    for address in addresses {
        let sockets: Vec<SocketAddr> = match address.host() {
            ServerHost::Ip(ip) => vec![SocketAddr::new(*ip, address.port())],
            ServerHost::Name(name) => {
                match tokio::net::lookup_host((name.as_str(), address.port())).await {
                    Ok(found) => found.collect(),
                    Err(e) => {
                        tracing::warn!(server = %address, error = %e, "cannot resolve a server address");
                        errors.push(format!("{address}: {e}"));
                        continue;
                    }
                }
            }
        };
        for socket in sockets {
            if !out.iter().any(|t| t.socket == socket) {
                out.push(Target {
                    address: address.clone(),
                    socket,
                });
            }
        }
    }
    if out.is_empty() {
        return Err(format!(
            "no server address resolves: {}; check agent.server_address and the node's DNS",
            errors.join("; ")
        ));
    }
    Ok(out)
}

/// The index of the server to use among `candidates`, chosen by `roll` among the best tier:
/// those that have not failed since the last success; else those other than the last that
/// failed; else any.
fn choose(candidates: &[Target], failures: &Failures, roll: u64) -> Option<usize> {
    let fresh: Vec<usize> = (0..candidates.len())
        .filter(|&i| !failures.since_success.contains(&candidates[i].socket))
        .collect();
    let not_last: Vec<usize> = (0..candidates.len())
        .filter(|&i| failures.last != Some(candidates[i].socket))
        .collect();
    let all: Vec<usize> = (0..candidates.len()).collect();
    let tier = [fresh, not_last, all].into_iter().find(|t| !t.is_empty())?;
    let pick = usize::try_from(roll % tier.len() as u64).ok()?;
    tier.get(pick).copied()
}

#[cfg(test)]
mod tests {
    use tessera_actors::random::SeededRandom;

    use super::*;

    fn targets(n: u16) -> Vec<Target> {
        (1..=n)
            .map(|i| {
                let address = ServerAddress::parse(&format!("10.0.0.{i}"), 8081).unwrap();
                let socket = SocketAddr::from(([10, 0, 0, i as u8], 8081));
                Target { address, socket }
            })
            .collect()
    }

    fn servers(n: u16, seed: u64) -> Servers {
        Servers::new(
            targets(n).into_iter().map(|t| t.address).collect(),
            Arc::new(SeededRandom::new(seed)),
        )
    }

    #[tokio::test]
    async fn the_first_choice_spreads_over_the_servers() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64 {
            seen.insert(servers(3, seed).next().await.unwrap().socket);
        }
        assert_eq!(seen.len(), 3, "64 agents all chose among {seen:?}");
    }

    #[tokio::test]
    async fn a_failed_server_is_not_chosen_twice_in_a_row() {
        for seed in 0..32 {
            let s = servers(2, seed);
            let mut last = s.next().await.unwrap();
            for _ in 0..20 {
                s.failed(&last);
                let next = s.next().await.unwrap();
                assert_ne!(next, last, "seed {seed}");
                last = next;
            }
        }
    }

    #[tokio::test]
    async fn every_server_is_tried_before_a_failed_one_again() {
        for seed in 0..32 {
            let s = servers(4, seed);
            let mut tried = vec![s.next().await.unwrap().socket];
            for _ in 0..3 {
                let t = targets(4)
                    .into_iter()
                    .find(|t| t.socket == tried[tried.len() - 1]);
                s.failed(&t.unwrap());
                let next = s.next().await.unwrap().socket;
                assert!(
                    !tried.contains(&next),
                    "seed {seed}: {next} again after {tried:?}"
                );
                tried.push(next);
            }
            // All four failed: any but the last one.
            let last = targets(4)
                .into_iter()
                .find(|t| t.socket == tried[3])
                .unwrap();
            s.failed(&last);
            assert_ne!(s.next().await.unwrap().socket, tried[3], "seed {seed}");
        }
    }

    #[test]
    fn success_makes_every_server_a_candidate_again() {
        let t = targets(2);
        let s = servers(2, 7);
        s.failed(&t[0]);
        s.failed(&t[1]);
        s.succeeded();
        let f = s.lock().clone();
        assert_eq!(f, Failures::default());
        // Only one server: it is chosen whatever failed.
        let failures = Failures {
            since_success: vec![t[0].socket],
            last: Some(t[0].socket),
        };
        assert_eq!(choose(&t[..1], &failures, 12345), Some(0));
        assert_eq!(choose(&[], &failures, 1), None);
    }

    #[tokio::test]
    async fn names_resolve_to_every_address_and_keep_their_name() {
        let localhost = ServerAddress::parse("localhost:8081", 1).unwrap();
        let ip = ServerAddress::parse("127.0.0.1:8081", 1).unwrap();
        let got = resolve(&[localhost.clone(), ip]).await.unwrap();
        assert!(!got.is_empty());
        assert!(
            got.iter()
                .filter(|t| t.socket.ip().is_ipv4())
                .all(|t| t.address == localhost),
            "127.0.0.1 comes first from the name, not twice: {got:?}"
        );
        assert!(got.iter().all(|t| t.socket.port() == 8081));
        let first = got[0].to_string();
        assert!(first.starts_with("localhost:8081 ("), "{first}");

        let bad = ServerAddress::parse("no-such-host.invalid", 1).unwrap();
        let err = resolve(&[bad]).await.unwrap_err();
        assert!(err.contains("no-such-host.invalid:1"), "{err}");
    }
}
