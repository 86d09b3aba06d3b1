//! tessera-sim: a fleet of Tessera servers and agents in one process, in deterministic virtual
//! time (DESIGN.md §8), and replay of a real server log.
//!
//! Owns: the discrete-event engine ([`engine`]), scenarios ([`scenario`]), the fault model,
//! an operator's timeline (forced rotations through the real authority commands), the
//! checkers, what a run measured ([`metrics`]) and how it is reported ([`report`]), the
//! read-only replay of a server's log ([`replay`]), and the in-process agent↔server transport
//! ([`in_process`]) that end-to-end tests of the agent logic use without sockets.
//!
//! Drives the same pure functions the actors call — the aggregates' `decide`/`apply`, the
//! authority's rotation `plan`, `SyncIndex` (per-agent views), the agent's `Cache`, `renew_at`
//! and SVID cache policy — so what the simulator shows is what the processes decide. It does
//! not run the actors' wiring (mailboxes, group commit); their tests cover that
//! (docs/adr/0014-simulator.md).
//!
//! Must not: open a socket, sleep, read the wall clock or an unseeded RNG inside a run (wall
//! time and peak RSS are read once, by the binary, for the run-info file only), or write to a
//! log it replays. Nothing depends on this crate.

pub mod engine;
pub mod in_process;
pub mod metrics;
pub mod replay;
pub mod report;
pub mod scenario;
