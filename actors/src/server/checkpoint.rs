//! Signed checkpoints of the event log: every so many records or minutes the server signs
//! the head (seq, hash) with a key of the trust domain's authority and appends the result as
//! a [`ServerEvent::CheckpointSigned`](crate::server::events::ServerEvent::CheckpointSigned)
//! record, so an auditor who keeps one checkpoint elsewhere can later prove the log still
//! holds it, unaltered.

use serde::{Deserialize, Serialize};

/// One signed checkpoint, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// The server that signed it (`None` on a single server's own log).
    pub server_id: Option<String>,
    /// The seq of the record it covers (the log head when it was signed).
    pub seq: u64,
    /// That record's hash (SHA-256, 32 bytes).
    pub hash: Vec<u8>,
    /// When it was signed, Unix seconds.
    pub signed_at: i64,
    /// The signing key's ID (a JWT key of the authority, published in the bundle).
    pub kid: String,
    /// The signing key's public key, SubjectPublicKeyInfo DER, so the record verifies on its
    /// own after the key has left the bundle.
    pub public_key_der: Vec<u8>,
    /// The signature over the checkpoint's signed bytes.
    pub signature: Vec<u8>,
}
