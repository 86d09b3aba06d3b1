//! The agent API against hostile clients (issue 11 §6), over real TCP + TLS on loopback:
//! idle sockets, a ClientHello cut short, HTTP/2 headers cut short after a good handshake,
//! oversized messages, stream floods, TLS session resumption, an agent whose SVID expires or
//! who is banned on a live connection, forged CSRs, and the per-IP and per-agent limits. Each
//! ends in a typed error or a clean close, nothing panics, and the server still serves a
//! legitimate agent afterwards. Every loop is bounded in count and every step in time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

#[path = "hostile/support.rs"]
mod support;

#[path = "hostile/calls.rs"]
mod calls;
#[path = "hostile/transport.rs"]
mod transport;
