//! How the agent's logic talks to the server: a trait, so the agent process plugs in its
//! gRPC client and the simulator an in-process one.

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tessera_identity::{Bundle, EntryId, RegistrationEntry, TrustDomain};

/// One message of the sync stream, with snapshot chunks already assembled.
// Transient messages, moved once from the stream into the cache: boxing would only add
// allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncMessage {
    /// The agent's whole view at `seq`: replaces whatever it held.
    Snapshot {
        /// Log seq of the snapshot: the new cursor.
        seq: u64,
        /// Authorised entries.
        entries: Vec<RegistrationEntry>,
        /// The trust domain's bundle and federated bundles.
        bundles: Vec<Bundle>,
    },
    /// The server continues right after the agent's cursor.
    Resumed {
        /// The cursor.
        cursor: u64,
    },
    /// An entry joined the view or changed.
    Upsert {
        /// Log seq.
        seq: u64,
        /// The entry.
        entry: RegistrationEntry,
    },
    /// An entry left the view.
    Remove {
        /// Log seq.
        seq: u64,
        /// Its id.
        id: EntryId,
    },
    /// A bundle is new or changed.
    BundleUpdated {
        /// Log seq.
        seq: u64,
        /// The bundle.
        bundle: Bundle,
    },
    /// A federated bundle is gone.
    BundleRemoved {
        /// Log seq.
        seq: u64,
        /// Its trust domain.
        trust_domain: TrustDomain,
    },
    /// Everything up to `seq` was sent: a cursor the agent may persist.
    Checkpoint {
        /// Log seq.
        seq: u64,
    },
}

/// An X.509-SVID the server signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedX509 {
    /// Chain, leaf first, DER.
    pub cert_chain: Vec<Vec<u8>>,
    /// Expiry, Unix seconds.
    pub not_after: i64,
}

/// A JWT-SVID the server minted.
#[derive(Clone, PartialEq, Eq)]
pub struct MintedJwt {
    /// Compact JWS.
    pub token: String,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
    /// Issued at, Unix seconds.
    pub issued_at: i64,
}

impl std::fmt::Debug for MintedJwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedJwt")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The server's refusal of the agent: its message, and whether it marked the agent banned
/// (then it refuses a re-attestation too, until an admin deletes the agent's record). Agents
/// act on the mark, never on the message's wording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The server's message.
    pub message: String,
    /// Whether the server marked the agent banned.
    pub banned: bool,
}

impl Refusal {
    /// A refusal that is not a ban (evicted, SVID not current, not attested).
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            banned: false,
        }
    }

    /// A ban.
    pub fn banned(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            banned: true,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Why a call to the server failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The server is unreachable or busy: retry with backoff.
    #[error("server unavailable: {0}")]
    Unavailable(String),
    /// The server no longer accepts this agent (evicted, banned, SVID not current): attest
    /// again, or stop.
    #[error("server refused the agent: {0}")]
    Refused(Refusal),
    /// The request was bad (a bug, or a limit): not retried as is.
    #[error("server rejected the request: {0}")]
    Rejected(String),
}

/// The agent's calls to the server.
pub trait ServerClient: Send + Sync + std::fmt::Debug + 'static {
    /// Opens the sync stream from `cursor`.
    fn sync(
        &self,
        cursor: u64,
    ) -> BoxFuture<'_, Result<BoxStream<'static, Result<SyncMessage, ClientError>>, ClientError>>;

    /// Signs CSRs (PKCS#10 DER) for entries; one outcome per request, in order.
    fn sign_x509(
        &self,
        requests: Vec<(EntryId, Vec<u8>)>,
    ) -> BoxFuture<'_, Result<Vec<Result<SignedX509, String>>, ClientError>>;

    /// Mints a JWT-SVID for an entry.
    fn mint_jwt(
        &self,
        entry: EntryId,
        audience: Vec<String>,
    ) -> BoxFuture<'_, Result<MintedJwt, ClientError>>;
}
