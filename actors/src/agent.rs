//! The agent side: what workloads are served from (the identity view), the cache folded from
//! the server's sync stream, and the rotator that keeps every SVID fresh. No sockets: the
//! agent process talks to the server through [`server_client::ServerClient`], so the simulator
//! can run thousands of agents against one server state machine in one process.

pub mod cache;
pub mod core;
pub mod rotation;
pub mod runtime;
pub mod server_client;
pub mod svid_cache;
pub mod taint;
pub mod view;
