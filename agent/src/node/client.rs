//! The gRPC [`ServerClient`]: the agent API over mTLS with the agent's SVID, to one server at
//! a time among those configured ([`Link`]). The sync stream and the calls go to the current
//! server; when it fails (unreachable, the stream ends or breaks, `Unavailable`) the agent
//! moves to another one: the sync loop reconnects there with its cursor after its backoff, and
//! a failed call is tried once more, at once, on the next server. Refusals (evicted, banned)
//! never move the agent: they go to the supervisor as before. The channel is rebuilt when the
//! SVID is renewed, so new calls present the current one.

mod assemble;
mod follow;
mod link;

use std::future::Future;
use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::FutureExt;
use tessera_actors::agent::server_client::{
    ClientError, MintedJwt, Refusal, ServerClient, SignedX509, SyncMessage,
};
use tessera_edge::telemetry::TraceInterceptor;
use tessera_identity::{Bundle, EntryId, TrustDomain};
use tessera_proto::tessera::agent::v1::agent_server_client::AgentServerClient;
use tessera_proto::tessera::agent::v1::{
    BatchSignX509SvidRequest, MintJwtSvidRequest, RenewAgentRequest, SignX509SvidParams,
    SyncRequest, AGENT_BANNED, AGENT_REFUSAL_KEY,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Code;
use tracing::Instrument;

use self::link::{Connection, Link};
use super::metrics::NodeMetrics;
use super::servers::{Servers, Target};
use super::tls::{channel, client_config, ClientIdentity, ServerTrust};

/// Largest sync message the agent decodes.
pub const MAX_SYNC_MESSAGE_BYTES: u32 = 4 * 1024 * 1024;

/// The agent's connection to the servers.
#[derive(Debug)]
pub struct GrpcClient {
    trust_domain: TrustDomain,
    trust: Arc<ServerTrust>,
    /// TLS with the current agent SVID.
    tls: RwLock<Arc<rustls::ClientConfig>>,
    link: Arc<Link>,
    /// One connection set-up at a time (the sync loop and calls may need one together).
    connecting: tokio::sync::Mutex<()>,
}

/// The refusal a status carries: its message, and the server's ban mark (metadata
/// [`AGENT_REFUSAL_KEY`] = [`AGENT_BANNED`]), never inferred from the wording.
pub fn refusal(status: &tonic::Status) -> Refusal {
    let banned = status
        .metadata()
        .get(AGENT_REFUSAL_KEY)
        .is_some_and(|v| v.as_bytes() == AGENT_BANNED.as_bytes());
    Refusal {
        message: status.message().to_owned(),
        banned,
    }
}

/// Whether a failed call should move the agent to another server: the server is unreachable
/// or says it is unavailable, or the connection broke under the call (a status tonic made
/// from a transport error).
fn moves_on(status: &tonic::Status) -> bool {
    match status.code() {
        Code::Unavailable => true,
        Code::Unknown | Code::Internal => std::error::Error::source(status).is_some(),
        _ => false,
    }
}

/// Maps a gRPC status to what the agent does about it.
pub fn client_error(status: tonic::Status) -> ClientError {
    match status.code() {
        Code::PermissionDenied | Code::Unauthenticated => ClientError::Refused(refusal(&status)),
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Unimplemented => ClientError::Rejected(status.message().to_owned()),
        _ => ClientError::Unavailable(format!("{:?}: {}", status.code(), status.message())),
    }
}

impl GrpcClient {
    /// A client presenting `identity` to `servers`, connected to `start_at` first when given
    /// (the server that attested the agent knows it already), else to a server chosen at
    /// the first call.
    pub(crate) fn new(
        servers: Arc<Servers>,
        trust_domain: TrustDomain,
        trust: Arc<ServerTrust>,
        identity: &ClientIdentity,
        start_at: Option<Target>,
        metrics: Option<NodeMetrics>,
    ) -> Result<Self, String> {
        let tls = client_config(trust.clone(), trust_domain.clone(), Some(identity))?;
        let link = Arc::new(Link::new(servers, metrics));
        if let Some(target) = start_at {
            let ch = channel(&target, tls.clone())?;
            link.install(target, ch);
        }
        Ok(Self {
            trust_domain,
            trust,
            tls: RwLock::new(tls),
            link,
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    fn tls(&self) -> Arc<rustls::ClientConfig> {
        self.tls
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The servers this client chooses from (attestation uses them too).
    pub(crate) fn servers(&self) -> Arc<Servers> {
        self.link.servers().clone()
    }

    /// The current connection, or a new one to the server chosen next.
    async fn connection(&self) -> Result<Connection, ClientError> {
        if let Some(c) = self.link.current() {
            return Ok(c);
        }
        let _one = self.connecting.lock().await;
        if let Some(c) = self.link.current() {
            return Ok(c);
        }
        let target = self
            .link
            .servers()
            .next()
            .await
            .map_err(ClientError::Unavailable)?;
        let ch = channel(&target, self.tls()).map_err(ClientError::Unavailable)?;
        Ok(self.link.install(target, ch))
    }

    /// Talks to `target` from now on (the server that just attested the agent again).
    pub(crate) fn connect_to(&self, target: Target) -> Result<(), String> {
        let ch = channel(&target, self.tls())?;
        self.link.install(target, ch);
        Ok(())
    }

    /// Runs `call` on the current server; if that server is unavailable, once more on the
    /// next one (when there is another).
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(Rpc) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let mut retried = false;
        loop {
            let connection = self.connection().await?;
            match call(rpc(&connection.channel)).await {
                Ok(v) => {
                    self.link.succeeded(connection.generation);
                    return Ok(v);
                }
                Err(status) if moves_on(&status) => {
                    self.link.failed(
                        connection.generation,
                        &format!("{:?}: {}", status.code(), status.message()),
                    );
                    if retried || !self.link.servers().several() {
                        return Err(client_error(status));
                    }
                    retried = true;
                }
                Err(status) => return Err(client_error(status)),
            }
        }
    }

    /// Presents `identity` from now on (to every server).
    pub fn set_identity(&self, identity: &ClientIdentity) -> Result<(), String> {
        let tls = client_config(
            self.trust.clone(),
            self.trust_domain.clone(),
            Some(identity),
        )?;
        self.link.rechannel(|target| channel(target, tls.clone()))?;
        *self
            .tls
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = tls;
        Ok(())
    }

    /// What the servers are trusted by (for attesting again over a plain TLS channel).
    pub fn trust(&self) -> Arc<ServerTrust> {
        self.trust.clone()
    }

    /// Trusts the servers by `bundle` (which holds every server's CA) from now on.
    pub fn set_bundle(&self, bundle: Bundle) {
        self.trust.set_bundle(bundle);
    }

    /// Renews the agent SVID for the key in `csr`.
    pub async fn renew(&self, csr: Vec<u8>) -> Result<(Vec<Vec<u8>>, i64), ClientError> {
        let svid = self
            .call(|mut c| {
                let csr = csr.clone();
                async move { c.renew_agent(RenewAgentRequest { csr }).await }
            })
            .await?
            .into_inner()
            .svid
            .ok_or_else(|| ClientError::Rejected("RenewAgent answered without an SVID".into()))?;
        Ok((svid.cert_chain, svid.expires_at))
    }
}

/// A client of the agent API whose calls carry the current span's `traceparent`, so that
/// the server's spans join the agent's trace.
type Rpc = AgentServerClient<InterceptedService<Channel, TraceInterceptor>>;

fn rpc(channel: &Channel) -> Rpc {
    AgentServerClient::with_interceptor(channel.clone(), TraceInterceptor)
        .max_decoding_message_size(MAX_SYNC_MESSAGE_BYTES as usize)
}

impl ServerClient for GrpcClient {
    fn sync(
        &self,
        cursor: u64,
    ) -> BoxFuture<'_, Result<BoxStream<'static, Result<SyncMessage, ClientError>>, ClientError>>
    {
        async move {
            let connection = self.connection().await?;
            let opened = rpc(&connection.channel)
                .sync_events(SyncRequest {
                    cursor,
                    max_message_bytes: MAX_SYNC_MESSAGE_BYTES,
                })
                .await;
            match opened {
                Ok(response) => {
                    tracing::debug!(server = %connection.target, cursor, "sync stream open");
                    self.link.succeeded(connection.generation);
                    let stream = assemble::assemble(response.into_inner());
                    Ok(follow::follow(stream, self.link.clone(), connection))
                }
                Err(status) => {
                    let error = client_error(status);
                    if !matches!(error, ClientError::Refused(_)) {
                        self.link.failed(connection.generation, &error.to_string());
                    }
                    Err(error)
                }
            }
        }
        .boxed()
    }

    fn sign_x509(
        &self,
        requests: Vec<(EntryId, Vec<u8>)>,
    ) -> BoxFuture<'_, Result<Vec<Result<SignedX509, String>>, ClientError>> {
        let span = tracing::info_span!(
            "sign_x509_request",
            otel.kind = "client",
            csrs = requests.len()
        );
        async move {
            let params: Vec<SignX509SvidParams> = requests
                .into_iter()
                .map(|(id, csr)| SignX509SvidParams {
                    entry_id: id.as_str().to_owned(),
                    csr,
                })
                .collect();
            let results = self
                .call(|mut c| {
                    let params = params.clone();
                    async move {
                        c.batch_sign_x509_svid(BatchSignX509SvidRequest { params })
                            .await
                    }
                })
                .await?
                .into_inner()
                .results;
            Ok(results
                .into_iter()
                .map(|r| match (r.status, r.svid) {
                    (Some(s), Some(svid)) if s.code == 0 => Ok(SignedX509 {
                        cert_chain: svid.cert_chain,
                        not_after: svid.expires_at,
                    }),
                    (Some(s), _) => Err(format!("{:?}: {}", Code::from_i32(s.code), s.message)),
                    _ => Err("no status".into()),
                })
                .collect())
        }
        .instrument(span)
        .boxed()
    }

    fn mint_jwt(
        &self,
        entry: EntryId,
        audience: Vec<String>,
    ) -> BoxFuture<'_, Result<MintedJwt, ClientError>> {
        let span = tracing::info_span!(
            "mint_jwt",
            entry_id = entry.as_str(),
            audiences = audience.len()
        );
        async move {
            let entry_id = entry.as_str().to_owned();
            let svid = self
                .call(|mut c| {
                    let request = MintJwtSvidRequest {
                        entry_id: entry_id.clone(),
                        audience: audience.clone(),
                        ttl: 0,
                    };
                    async move { c.mint_jwt_svid(request).await }
                })
                .await?
                .into_inner()
                .svid
                .ok_or_else(|| {
                    ClientError::Rejected("MintJwtSvid answered without an SVID".into())
                })?;
            Ok(MintedJwt {
                token: svid.token,
                expires_at: svid.expires_at,
                issued_at: svid.issued_at,
            })
        }
        .instrument(span)
        .boxed()
    }
}
