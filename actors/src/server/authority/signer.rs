//! [`Signer`]: signs X.509-SVIDs (from CSRs) and JWT-SVIDs with the active CA and JWT key,
//! off the actor threads, under a global bound.
//!
//! Bounds, so that a reconnect storm queues instead of eating memory: every request is first
//! *admitted* against `max_queued` items (CSRs or JWTs) waiting or signing, else it fails at
//! once with [`SignError::Overloaded`]; admitted work runs on tokio's blocking pool at most
//! `max_concurrent_jobs` jobs at a time, in chunks of [`CHUNK`] CSRs. On-demand work goes
//! first ([`priority`]): bulk renewal is admitted only up to `max_queued - on_demand_reserve`,
//! and a free worker takes a waiting on-demand job before any bulk one. The authority actor
//! installs the CA and key to sign with ([`Signer::install_ca`]); cloning a `Signer` shares
//! its bounds and what is installed.
//!
//! Every path that signs (agent and admin APIs, agent SVIDs, the server's own) comes through
//! here, so the signer counts SVIDs by kind and outcome and times them from admission to
//! result ([`Signer::metrics`]; see [`metrics`] for what is counted).

mod admission;
mod error;
mod jwt;
pub mod metrics;
mod policy;
pub mod priority;
mod types;
mod x509;

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tessera_eventlog::Clock;
use tessera_identity::{SpiffeId, TrustDomain};
use tokio::sync::Semaphore;

use self::admission::bulk_limit;
pub use self::admission::Admission;
pub use self::error::{SignError, SvidRejection};
use self::jwt::check_audience;
use self::metrics::SigningMetrics;
pub use self::metrics::{LatencySnapshot, SignOutcome, SigningMetricsSnapshot, SvidKind};
use self::policy::{check_id, lifetime, Subject};
use self::priority::{Gate, Priority};
pub use self::types::{
    AgentSvidRequest, IssuedX509Svid, JwtSvid, JwtSvidRequest, SignerSettings, SigningCa,
    SigningJwtKey, X509SvidRequest,
};
pub use self::x509::sign_x509_blocking;
use self::x509::{check_dns_names, sign_chunk, Job};
use super::x509::{now_secs, random_serial, secs, NOT_BEFORE_CUSHION_SECS};
use crate::random::RandomSource;
use crate::server::events::JwtKeyRecord;

/// CSRs signed per blocking job: big batches spread over the pool, small ones pay one hop.
pub const CHUNK: usize = 64;

#[derive(Default)]
struct Installed {
    ca: Option<Arc<SigningCa>>,
    jwt: Option<Arc<SigningJwtKey>>,
}

struct Inner {
    trust_domain: TrustDomain,
    settings: SignerSettings,
    clock: Arc<dyn Clock>,
    random: Arc<dyn RandomSource>,
    queue: Arc<Semaphore>,
    /// The part of the queue bulk work may fill.
    bulk_queue: Arc<Semaphore>,
    workers: Arc<Gate>,
    installed: RwLock<Installed>,
    metrics: SigningMetrics,
}

/// A cloneable handle that signs SVIDs with the installed CA and JWT key.
#[derive(Clone)]
pub struct Signer {
    inner: Arc<Inner>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("trust_domain", &self.inner.trust_domain)
            .field("active_ca", &self.active_authority_id())
            .field("active_kid", &self.active_kid())
            .field("queued", &self.queued())
            .finish()
    }
}

impl Signer {
    /// A signer for `trust_domain` with nothing installed yet.
    pub fn new(
        trust_domain: TrustDomain,
        settings: SignerSettings,
        clock: Arc<dyn Clock>,
        random: Arc<dyn RandomSource>,
    ) -> Self {
        let queue = Arc::new(Semaphore::new(
            settings.max_queued.clamp(1, Semaphore::MAX_PERMITS),
        ));
        let bulk_queue = Arc::new(Semaphore::new(bulk_limit(&settings)));
        let workers = Gate::new(settings.max_concurrent_jobs.clamp(1, 1024));
        Self {
            inner: Arc::new(Inner {
                trust_domain,
                settings,
                clock,
                random,
                queue,
                bulk_queue,
                workers,
                installed: RwLock::new(Installed::default()),
                metrics: SigningMetrics::default(),
            }),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &SignerSettings {
        &self.inner.settings
    }

    /// Makes `ca` the CA that signs (`None`: none).
    pub fn install_ca(&self, ca: Option<SigningCa>) {
        self.write().ca = ca.map(Arc::new);
    }

    /// Makes `key` the JWT key that signs (`None`: none).
    pub fn install_jwt_key(&self, key: Option<SigningJwtKey>) {
        self.write().jwt = key.map(Arc::new);
    }

    /// The authority ID of the installed CA.
    pub fn active_authority_id(&self) -> Option<String> {
        self.read()
            .ca
            .as_ref()
            .map(|c| c.record.authority_id.clone())
    }

    /// The kid of the installed JWT key.
    pub fn active_kid(&self) -> Option<String> {
        self.read().jwt.as_ref().map(|k| k.record.kid.clone())
    }

    /// SVIDs signed, refused and rejected so far, and their latency, shared by every clone.
    pub fn metrics(&self) -> SigningMetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// Items admitted and not yet done.
    pub fn queued(&self) -> usize {
        self.limit()
            .saturating_sub(self.inner.queue.available_permits())
    }

    /// Signing jobs (chunks of CSRs, JWTs) admitted and waiting for a worker.
    pub fn jobs_waiting(&self) -> usize {
        self.inner.workers.waiting()
    }

    fn limit(&self) -> usize {
        self.inner
            .settings
            .max_queued
            .clamp(1, Semaphore::MAX_PERMITS)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Installed> {
        self.inner
            .installed
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Installed> {
        self.inner
            .installed
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Signs workload X509-SVIDs: one result per request, in order.
    ///
    /// # Errors
    /// A [`SignError`] for the batch as a whole (too large, queue full, no active CA).
    pub async fn sign_x509_batch(
        &self,
        requests: Vec<X509SvidRequest>,
    ) -> Result<Vec<Result<IssuedX509Svid, SvidRejection>>, SignError> {
        self.sign_x509_batch_as(requests, Priority::OnDemand).await
    }

    /// [`Signer::sign_x509_batch`] at a priority ([`Priority::Bulk`] for renewals).
    ///
    /// # Errors
    /// As [`Signer::sign_x509_batch`].
    pub async fn sign_x509_batch_as(
        &self,
        requests: Vec<X509SvidRequest>,
        priority: Priority,
    ) -> Result<Vec<Result<IssuedX509Svid, SvidRejection>>, SignError> {
        self.check_batch(requests.len())
            .map_err(|e| self.refused(SvidKind::X509, requests.len(), e))?;
        let admission = self
            .admit_as(requests.len(), priority)
            .map_err(|e| self.refused(SvidKind::X509, requests.len(), e))?;
        self.sign_x509_admitted(admission, requests).await
    }

    /// Signs the server's own X509-SVID (`spiffe://<td>/spire/server`, for the agent API's
    /// TLS): the only path that signs that ID; every other request naming it is refused. One
    /// result per request, in order.
    ///
    /// # Errors
    /// As [`Signer::sign_x509_batch`].
    pub async fn sign_server_svid(
        &self,
        requests: Vec<X509SvidRequest>,
    ) -> Result<Vec<Result<IssuedX509Svid, SvidRejection>>, SignError> {
        let admission = self
            .admit_batch(requests.len())
            .map_err(|e| self.refused(SvidKind::X509, requests.len(), e))?;
        self.sign_x509_as(admission, requests, Subject::Server)
            .await
    }

    /// [`Signer::sign_x509_batch`] with room already reserved by [`Signer::admit`].
    ///
    /// # Errors
    /// As [`Signer::sign_x509_batch`].
    pub async fn sign_x509_admitted(
        &self,
        admission: Admission,
        requests: Vec<X509SvidRequest>,
    ) -> Result<Vec<Result<IssuedX509Svid, SvidRejection>>, SignError> {
        self.sign_x509_as(admission, requests, Subject::Workload)
            .await
    }

    async fn sign_x509_as(
        &self,
        admission: Admission,
        requests: Vec<X509SvidRequest>,
        subject: Subject,
    ) -> Result<Vec<Result<IssuedX509Svid, SvidRejection>>, SignError> {
        let (admitted_at, len) = (admission.admitted_at, requests.len());
        let results = self
            .sign_x509_unrecorded(admission, requests, subject)
            .await;
        let m = &self.inner.metrics;
        match &results {
            Ok(items) => {
                let ok = items.iter().filter(|r| r.is_ok()).count();
                m.record(SvidKind::X509, SignOutcome::Ok, ok, admitted_at);
                m.record(
                    SvidKind::X509,
                    SignOutcome::Error,
                    items.len() - ok,
                    admitted_at,
                );
            }
            Err(e) => m.record(SvidKind::X509, SignOutcome::of_error(e), len, admitted_at),
        }
        results
    }

    async fn sign_x509_unrecorded(
        &self,
        admission: Admission,
        requests: Vec<X509SvidRequest>,
        subject: Subject,
    ) -> Result<Vec<Result<IssuedX509Svid, SvidRejection>>, SignError> {
        self.check_batch(requests.len())?;
        let settings = &self.inner.settings;
        let items = requests
            .into_iter()
            .map(|r| {
                (
                    r.csr_der,
                    r.spiffe_id,
                    r.dns_names,
                    lifetime(r.ttl, settings.x509_svid_ttl, settings.max_x509_svid_ttl),
                )
            })
            .collect();
        self.sign_items(admission, items, subject).await
    }

    /// Signs an agent X509-SVID.
    ///
    /// # Errors
    /// A [`SignError`], with [`SignError::Rejected`] for bad input.
    pub async fn sign_agent_svid(
        &self,
        request: AgentSvidRequest,
    ) -> Result<IssuedX509Svid, SignError> {
        let admission = self
            .admit(1)
            .map_err(|e| self.refused(SvidKind::X509, 1, e))?;
        self.sign_agent_admitted(admission, request).await
    }

    /// [`Signer::sign_agent_svid`] with room already reserved.
    ///
    /// # Errors
    /// As [`Signer::sign_agent_svid`].
    pub async fn sign_agent_admitted(
        &self,
        admission: Admission,
        request: AgentSvidRequest,
    ) -> Result<IssuedX509Svid, SignError> {
        let admitted_at = admission.admitted_at;
        let result = self.sign_agent_unrecorded(admission, request).await;
        self.record_one(SvidKind::X509, &result, admitted_at);
        result
    }

    async fn sign_agent_unrecorded(
        &self,
        admission: Admission,
        request: AgentSvidRequest,
    ) -> Result<IssuedX509Svid, SignError> {
        let ttl = ttl_or(request.ttl, self.inner.settings.agent_svid_ttl);
        let item = (request.csr_der, request.agent_id, Vec::new(), ttl);
        let mut results = self
            .sign_items(admission, vec![item], Subject::Agent)
            .await?;
        match results.pop() {
            Some(result) => result.map_err(SignError::Rejected),
            None => Err(SignError::Internal {
                reason: "the signing job returned no result".into(),
            }),
        }
    }

    /// Mints a JWT-SVID with the installed JWT key.
    ///
    /// # Errors
    /// A [`SignError`], with [`SignError::Rejected`] for bad input.
    pub async fn mint_jwt_svid(&self, request: JwtSvidRequest) -> Result<JwtSvid, SignError> {
        let admission = self
            .admit(1)
            .map_err(|e| self.refused(SvidKind::Jwt, 1, e))?;
        self.mint_jwt_admitted(admission, request).await
    }

    /// [`Signer::mint_jwt_svid`] with room already reserved.
    ///
    /// # Errors
    /// As [`Signer::mint_jwt_svid`].
    pub async fn mint_jwt_admitted(
        &self,
        admission: Admission,
        request: JwtSvidRequest,
    ) -> Result<JwtSvid, SignError> {
        let admitted_at = admission.admitted_at;
        let result = self.mint_jwt_unrecorded(admission, request).await;
        self.record_one(SvidKind::Jwt, &result, admitted_at);
        result
    }

    async fn mint_jwt_unrecorded(
        &self,
        admission: Admission,
        request: JwtSvidRequest,
    ) -> Result<JwtSvid, SignError> {
        let settings = &self.inner.settings;
        check_id(
            &self.inner.trust_domain,
            &request.spiffe_id,
            Subject::Workload,
        )?;
        let audience = check_audience(request.audience, settings)?;
        let key = self
            .read()
            .jwt
            .clone()
            .ok_or_else(|| SignError::NoActiveJwtKey {
                reason: "none prepared yet".into(),
            })?;
        let now = now_secs(self.inner.clock.as_ref());
        if key.record.not_after <= now {
            return Err(SignError::NoActiveJwtKey {
                reason: format!("key {} expired at {}", key.record.kid, key.record.not_after),
            });
        }
        let ttl = lifetime(
            request.ttl,
            settings.jwt_svid_ttl,
            settings.max_jwt_svid_ttl,
        );
        let exp = now.saturating_add(secs(ttl)).min(key.record.not_after);
        let spiffe_id = request.spiffe_id;
        let priority = admission.priority;
        let token = self
            .run(priority, move || {
                let _admission = admission;
                jwt::mint(&key, &spiffe_id.to_string(), &audience, now, exp).map(|token| JwtSvid {
                    token,
                    spiffe_id,
                    audience,
                    kid: key.record.kid.clone(),
                    issued_at: now,
                    expires_at: exp,
                })
            })
            .await?;
        token.map_err(SignError::Rejected)
    }

    /// Signs a log checkpoint's `message` (which names `kid`, see
    /// [`checkpoint`](crate::server::checkpoint)) with the installed JWT key, off the actor
    /// threads; the key's record and the signature (as for a JWS with that key).
    ///
    /// # Errors
    /// [`SignError::NoActiveJwtKey`] without an unexpired key of that `kid` (none yet, or it
    /// rotated since `kid` was read: try again); [`SignError::Internal`] if the key fails.
    pub async fn sign_checkpoint(
        &self,
        kid: &str,
        message: Vec<u8>,
    ) -> Result<(JwtKeyRecord, Vec<u8>), SignError> {
        let no_key = |reason: String| SignError::NoActiveJwtKey { reason };
        let key = self
            .read()
            .jwt
            .clone()
            .ok_or_else(|| no_key("none prepared yet".into()))?;
        if key.record.kid != kid {
            return Err(no_key(format!(
                "the key rotated from {kid} to {}",
                key.record.kid
            )));
        }
        if key.record.not_after <= now_secs(self.inner.clock.as_ref()) {
            return Err(no_key(format!(
                "key {kid} expired at {}",
                key.record.not_after
            )));
        }
        let signed = self
            .run(Priority::OnDemand, move || {
                key.key.sign_jws(&message).map(|s| (key.record.clone(), s))
            })
            .await?;
        signed.map_err(|e| SignError::Internal {
            reason: format!("signing a log checkpoint: {e}"),
        })
    }

    /// Counts `n` SVIDs of a request refused before admission, and passes the error on.
    fn refused(&self, kind: SvidKind, n: usize, e: SignError) -> SignError {
        self.inner.metrics.count(kind, SignOutcome::of_error(&e), n);
        e
    }

    fn record_one<T>(&self, kind: SvidKind, result: &Result<T, SignError>, admitted_at: Instant) {
        let outcome = match result {
            Ok(_) => SignOutcome::Ok,
            Err(e) => SignOutcome::of_error(e),
        };
        self.inner.metrics.record(kind, outcome, 1, admitted_at);
    }

    fn check_batch(&self, len: usize) -> Result<(), SignError> {
        let max = self.inner.settings.max_batch;
        if len > max {
            return Err(SignError::BatchTooLarge { len, max });
        }
        Ok(())
    }

    /// Validates, resolves (serial, validity) and signs items on the pool, in chunks.
    async fn sign_items(
        &self,
        admission: Admission,
        items: Vec<(Vec<u8>, SpiffeId, Vec<String>, Duration)>,
        subject: Subject,
    ) -> Result<Vec<Result<IssuedX509Svid, SvidRejection>>, SignError> {
        let settings = &self.inner.settings;
        let ca = self
            .read()
            .ca
            .clone()
            .ok_or_else(|| SignError::NoActiveCa {
                reason: "none prepared yet".into(),
            })?;
        let now = now_secs(self.inner.clock.as_ref());
        if ca.record.not_after <= now {
            return Err(SignError::NoActiveCa {
                reason: format!(
                    "CA {} expired at {}",
                    ca.record.authority_id, ca.record.not_after
                ),
            });
        }
        let not_before = now
            .saturating_sub(NOT_BEFORE_CUSHION_SECS)
            .max(ca.record.not_before);
        let priority = admission.priority;

        // Results in request order: refusals now, jobs by chunk.
        let mut results: Vec<Option<Result<IssuedX509Svid, SvidRejection>>> = Vec::new();
        let mut jobs: Vec<(usize, Job)> = Vec::new();
        for (csr_der, spiffe_id, dns_names, ttl) in items {
            let index = results.len();
            let checked = check_id(&self.inner.trust_domain, &spiffe_id, subject)
                .and_then(|()| check_dns_names(&dns_names, settings.max_dns_names));
            match checked {
                Err(e) => results.push(Some(Err(e))),
                Ok(()) => {
                    results.push(None);
                    jobs.push((
                        index,
                        Job {
                            csr_der,
                            spiffe_id,
                            dns_names,
                            // Drawn here, in order, so a seeded run is reproducible.
                            serial: random_serial(self.inner.random.as_ref()),
                            not_before,
                            not_after: now.saturating_add(secs(ttl)).min(ca.record.not_after),
                        },
                    ));
                }
            }
        }

        let mut chunks = Vec::new();
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            let chunk: Vec<(usize, Job)> = jobs.by_ref().take(CHUNK).collect();
            let (indexes, chunk): (Vec<usize>, Vec<Job>) = chunk.into_iter().unzip();
            let ca = ca.clone();
            let subject = settings.svid_subject.clone();
            let max_csr = settings.max_csr_bytes;
            chunks.push(async move {
                let signed = self
                    .run(priority, move || sign_chunk(&ca, &subject, max_csr, chunk))
                    .await;
                (indexes, signed)
            });
        }
        for (indexes, signed) in futures::future::join_all(chunks).await {
            for (index, result) in indexes.into_iter().zip(signed?) {
                if let Some(slot) = results.get_mut(index) {
                    *slot = Some(result);
                }
            }
        }
        drop(admission);
        results
            .into_iter()
            .map(|r| {
                r.ok_or_else(|| SignError::Internal {
                    reason: "a signing job returned too few results".into(),
                })
            })
            .collect()
    }

    /// Runs `work` on the blocking pool once a worker slot is free.
    async fn run<T: Send + 'static>(
        &self,
        priority: Priority,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, SignError> {
        let permit = self.inner.workers.acquire(priority).await;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| SignError::Internal {
            reason: e.to_string(),
        })
    }
}

fn ttl_or(ttl: Option<Duration>, default: Duration) -> Duration {
    match ttl {
        Some(t) if !t.is_zero() => t,
        _ => default,
    }
}

#[cfg(test)]
mod rules_tests;
#[cfg(test)]
mod tests;
