//! One `StreamSecrets` stream, under the xDS rules (Envoy's "xDS REST and gRPC protocol":
//! ACK/NACK and nonces), as SPIRE's handler applies them:
//!
//! - the first request, and any request naming other resources, is answered at once;
//! - a request whose `response_nonce` is not the last nonce sent is stale: ignored;
//! - one that carries the last nonce acknowledges it (ACK) or, with `error_detail`, rejects it
//!   (NACK: logged at warn, the same version is not sent again);
//! - when the caller's secrets change (new or deleted entry, rotation, bundle change, expiry)
//!   the current names are answered again.
//!
//! Every response has a fresh nonce; `version_info` changes exactly when the secrets sent do.
//! A request that breaks a bound, names something the caller may not have, or a caller that
//! loses every identity ends the stream with the error, as in SPIRE.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;
use futures::StreamExt;
use tessera_actors::agent::view::{IdentitySnapshot, InUse};
use tessera_eventlog::Clock;
use tessera_identity::SelectorSet;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::error::SdsError;
use super::metrics::{RequestKind, SdsMetrics};
use super::render::{self, Validation};
use super::{SdsConfig, SECRET_TYPE_URL};
use crate::shutdown::Shutdown;
use crate::workload_api::limits::StreamSlot;
use crate::workload_api::metrics::OpenStream;
use crate::workload_api::stream::unix_now;

/// Longest `error_detail` message logged from a NACK, bytes.
const MAX_LOGGED_DETAIL: usize = 1024;

/// The xDS state of one stream: what was asked for and what was last sent.
#[derive(Debug, Default)]
pub(crate) struct Protocol {
    /// The names of the current subscription; `None` before the first request.
    names: Option<BTreeSet<String>>,
    /// The caller's node, from the last request that carried one.
    node: Option<Node>,
    /// Responses sent (nonces are drawn from it).
    sent: u64,
    /// The version of the last response; increases when the secrets do.
    version: u64,
    /// The nonce of the last response.
    nonce: Option<String>,
    /// The secrets of the last response.
    last: Option<Vec<Any>>,
    /// The last response was rejected already (a repeated NACK is not logged at warn again).
    nacked: bool,
}

/// What a request was, and whether it is to be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) kind: RequestKind,
    pub(crate) answer: bool,
    /// A NACK's error message.
    pub(crate) detail: Option<String>,
    /// A NACK of a response rejected before.
    pub(crate) repeated: bool,
}

impl Protocol {
    /// Takes in a request (already checked against the limits).
    pub(crate) fn on_request(&mut self, req: &DiscoveryRequest) -> Verdict {
        if let Some(nonce) = &self.nonce {
            if req.response_nonce != *nonce {
                return Verdict {
                    kind: RequestKind::Stale,
                    answer: false,
                    detail: None,
                    repeated: false,
                };
            }
        }
        if req.node.is_some() {
            self.node.clone_from(&req.node);
        }
        let names = render::requested(&req.resource_names);
        let changed = self.names.as_ref() != Some(&names);
        self.names = Some(names);
        let detail = match (&self.nonce, &req.error_detail) {
            (Some(_), Some(status)) => Some(status.message.clone()),
            _ => None,
        };
        let kind = match (&self.nonce, &detail) {
            (None, _) => RequestKind::Subscribe,
            (Some(_), Some(_)) => RequestKind::Nack,
            (Some(_), None) if changed => RequestKind::Subscribe,
            (Some(_), None) => RequestKind::Ack,
        };
        let repeated = kind == RequestKind::Nack && self.nacked;
        self.nacked |= kind == RequestKind::Nack;
        Verdict {
            kind,
            answer: changed,
            detail,
            repeated,
        }
    }

    /// The names subscribed to, once a request came.
    pub(crate) fn names(&self) -> Option<&BTreeSet<String>> {
        self.names.as_ref()
    }

    /// The caller's validation mode.
    pub(crate) fn validation(&self, config: &SdsConfig) -> Validation {
        render::validation(config, self.node.as_ref())
    }

    /// The response carrying `secrets`; `None` when `force` is off and they are what was last
    /// sent. A fresh nonce every time; a new version when the secrets differ.
    pub(crate) fn respond(&mut self, secrets: Vec<Any>, force: bool) -> Option<DiscoveryResponse> {
        let same = self.last.as_ref() == Some(&secrets);
        if same && !force {
            return None;
        }
        if !same {
            self.version += 1;
        }
        self.sent += 1;
        let nonce = format!("{:016x}", self.sent);
        self.nonce = Some(nonce.clone());
        self.last = Some(secrets.clone());
        self.nacked = false;
        Some(DiscoveryResponse {
            version_info: self.version.to_string(),
            resources: secrets,
            type_url: SECRET_TYPE_URL.into(),
            nonce,
            ..DiscoveryResponse::default()
        })
    }
}

/// What a stream task holds.
pub(crate) struct StreamTask {
    pub(crate) selectors: SelectorSet,
    pub(crate) source: watch::Receiver<Arc<IdentitySnapshot>>,
    pub(crate) requests: Streaming<DiscoveryRequest>,
    pub(crate) config: Arc<SdsConfig>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) shutdown: Shutdown,
    pub(crate) metrics: SdsMetrics,
}

/// Released when a stream's task ends, however it ends: the stream slot, the open-stream
/// gauge, and the hold on the caller's entries (their SVIDs kept and renewed while open).
pub(crate) type Guards = (StreamSlot, OpenStream, InUse);

type Tx = mpsc::Sender<Result<DiscoveryResponse, Status>>;

impl StreamTask {
    /// Spawns the stream's task; the returned stream is the response.
    pub(crate) fn spawn(self, guards: Guards) -> ReceiverStream<Result<DiscoveryResponse, Status>> {
        // One response in flight: a slow reader holds the task at `send`, and a later change
        // is folded into the next render rather than queued.
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let _guards = guards;
            self.run(tx).await;
        });
        ReceiverStream::new(rx)
    }

    async fn run(mut self, tx: Tx) {
        let mut protocol = Protocol::default();
        let mut expires: Option<i64> = None;
        let stop = self.shutdown.wait();
        tokio::pin!(stop);
        loop {
            let wake = expires.map(|at| {
                Duration::from_secs(
                    u64::try_from(at - unix_now(&*self.clock))
                        .unwrap_or(0)
                        .max(1),
                )
            });
            let by_request = tokio::select! {
                () = tx.closed() => return,
                () = &mut stop => return,
                next = self.requests.next() => {
                    let req = match next {
                        Some(Ok(req)) => req,
                        // The caller closed its side, went away or broke the framing.
                        Some(Err(_)) | None => return,
                    };
                    match self.take(&mut protocol, &req) {
                        Ok(true) => true,
                        Ok(false) => continue,
                        Err(e) => return self.fail(&tx, e).await,
                    }
                }
                changed = self.source.changed() => {
                    if changed.is_err() {
                        let e = crate::workload_api::ApiError::ShuttingDown.into();
                        return self.fail(&tx, e).await;
                    }
                    false
                }
                () = sleep_or_forever(wake) => false,
            };
            // Seen, whatever happens next: `changed` waits for the next change.
            let snapshot = self.source.borrow_and_update().clone();
            let Some(names) = protocol.names() else {
                // No request yet: nothing asked for, nothing to send.
                continue;
            };
            let validation = protocol.validation(&self.config);
            let now = unix_now(&*self.clock);
            let rendered = match render::secrets(
                &snapshot,
                &self.selectors,
                now,
                names,
                &self.config,
                validation,
            ) {
                Ok(r) => r,
                Err(e) => return self.fail(&tx, e).await,
            };
            expires = rendered.expires;
            let Some(response) = protocol.respond(rendered.message, by_request) else {
                continue;
            };
            tracing::debug!(version = %response.version_info, nonce = %response.nonce, secrets = response.resources.len(), "SDS: sending secrets");
            self.metrics.response(by_request);
            tokio::select! {
                sent = tx.send(Ok(response)) => if sent.is_err() { return },
                () = &mut stop => return,
            }
        }
    }

    /// Checks and takes in a request; `true` when it is to be answered.
    fn take(&self, protocol: &mut Protocol, req: &DiscoveryRequest) -> Result<bool, SdsError> {
        check(&self.config, req)?;
        let verdict = protocol.on_request(req);
        self.metrics.request(verdict.kind);
        match verdict.kind {
            RequestKind::Stale => {
                tracing::debug!(nonce = %req.response_nonce, "SDS: request with a stale nonce ignored");
            }
            RequestKind::Nack if verdict.repeated => {
                tracing::debug!(nonce = %req.response_nonce, "SDS: the same response rejected again");
            }
            RequestKind::Nack => {
                let detail = clip(verdict.detail.as_deref().unwrap_or_default());
                tracing::warn!(
                    version = %req.version_info,
                    names = ?req.resource_names.iter().take(16).collect::<Vec<_>>(),
                    detail,
                    "SDS: Envoy rejected the secrets sent (NACK); the next change is sent"
                );
            }
            RequestKind::Ack | RequestKind::Subscribe => {}
        }
        Ok(verdict.answer)
    }

    /// Ends the stream with `e`.
    async fn fail(&self, tx: &Tx, e: SdsError) {
        tracing::debug!(error = %e, "SDS stream ends");
        let stop = self.shutdown.wait();
        tokio::select! {
            _ = tx.send(Err(e.into())) => {}
            () = stop => {}
        }
    }
}

/// Refuses a request for another type than secrets, or that breaks a bound.
pub(crate) fn check(config: &SdsConfig, req: &DiscoveryRequest) -> Result<(), SdsError> {
    if !req.type_url.is_empty() && req.type_url != SECRET_TYPE_URL {
        return Err(SdsError::WrongType {
            got: req.type_url.chars().take(256).collect(),
        });
    }
    Ok(config.limits.check(&req.resource_names)?)
}

/// At most [`MAX_LOGGED_DETAIL`] bytes of `s`, cut at a character boundary.
fn clip(s: &str) -> &str {
    let mut end = s.len().min(MAX_LOGGED_DETAIL);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

async fn sleep_or_forever(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::google::rpc::Status as RpcStatus;

    use super::*;

    fn req(names: &[&str], nonce: &str, nack: Option<&str>) -> DiscoveryRequest {
        DiscoveryRequest {
            resource_names: names.iter().map(|s| (*s).to_owned()).collect(),
            response_nonce: nonce.into(),
            error_detail: nack.map(|m| RpcStatus {
                code: 3,
                message: m.into(),
                ..RpcStatus::default()
            }),
            ..DiscoveryRequest::default()
        }
    }

    fn secret(n: u8) -> Vec<Any> {
        vec![Any {
            type_url: SECRET_TYPE_URL.into(),
            value: vec![n],
        }]
    }

    #[test]
    fn acks_nacks_stale_nonces_and_versions_follow_the_xds_rules() {
        let mut p = Protocol::default();
        let first = p.on_request(&req(&["default"], "", None));
        assert_eq!((first.kind, first.answer), (RequestKind::Subscribe, true));
        let r1 = p.respond(secret(1), true).unwrap();
        assert_eq!(r1.version_info, "1");
        // The same secrets again after a change elsewhere: nothing sent.
        assert!(p.respond(secret(1), false).is_none());
        // ACK of r1: nothing to answer.
        let ack = p.on_request(&req(&["default"], &r1.nonce, None));
        assert_eq!((ack.kind, ack.answer), (RequestKind::Ack, false));
        // New secrets: version 2, a new nonce.
        let r2 = p.respond(secret(2), false).unwrap();
        assert_eq!(r2.version_info, "2");
        assert_ne!(r2.nonce, r1.nonce);
        // A late answer to r1 is stale, whatever it asks.
        let stale = p.on_request(&req(&["other"], &r1.nonce, None));
        assert_eq!((stale.kind, stale.answer), (RequestKind::Stale, false));
        assert_eq!(p.names().unwrap().len(), 1);
        assert!(p.names().unwrap().contains("default"));
        // NACK of r2: logged, not answered with the same version.
        let nack = p.on_request(&req(&["default"], &r2.nonce, Some("bad key")));
        assert_eq!((nack.kind, nack.answer), (RequestKind::Nack, false));
        assert_eq!(nack.detail.as_deref(), Some("bad key"));
        assert!(!nack.repeated);
        let again = p.on_request(&req(&["default"], &r2.nonce, Some("bad key")));
        assert_eq!((again.kind, again.repeated), (RequestKind::Nack, true));
        assert!(p.respond(secret(2), false).is_none());
        // Other names: answered even if the secrets are the same, same version, fresh nonce.
        let sub = p.on_request(&req(&["ROOTCA"], &r2.nonce, None));
        assert_eq!((sub.kind, sub.answer), (RequestKind::Subscribe, true));
        let r3 = p.respond(secret(2), true).unwrap();
        assert_eq!(r3.version_info, "2");
        assert_ne!(r3.nonce, r2.nonce);
    }
}
