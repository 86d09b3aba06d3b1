//! The core's side of forced rotation (SPIRE's tainted authorities): when a bundle change
//! taints an authority, the cache marks every SVID that chains to it (see
//! [`crate::agent::taint`]) and the plan re-signs them in the usual bounded bulk rounds; this
//! file drops the cached JWT-SVIDs a tainted key signed (the next fetch mints a fresh one),
//! and backs off from an SVID the server signed with a tainted CA again.

use tessera_identity::EntryId;

use super::AgentState;
use crate::agent::taint::jwt_signed_by_tainted;
use crate::agent::view::HeldJwtSvid;

impl AgentState {
    /// A bundle changed: cached JWT-SVIDs signed by a key it marks tainted are dropped, and
    /// the SVIDs waiting to be re-signed are logged.
    pub(super) fn bundles_changed(&mut self) {
        let before = self.jwts.len();
        let cache = &self.args.cache;
        self.jwts.retain(|_, (jwt, _)| !jwt_tainted(cache, jwt));
        let dropped = before - self.jwts.len();
        let resign = self.args.cache.resign_pending();
        if dropped > 0 || resign > 0 {
            tracing::info!(
                x509_svids_to_resign = resign,
                jwt_svids_dropped = dropped,
                "forced rotation: SVIDs of tainted or revoked authorities are renewed now"
            );
        }
    }

    /// Whether `jwt` was signed by a JWT key its trust domain's bundle marks tainted.
    pub(super) fn is_jwt_tainted(&self, jwt: &HeldJwtSvid) -> bool {
        jwt_tainted(&self.args.cache, jwt)
    }

    /// `id`'s SVID was just stored; if the server signed it with a tainted CA again, it is
    /// not asked for again before the back-off (no re-signing loop).
    pub(super) fn check_resigned(&mut self, id: &EntryId, now: i64) {
        if self.args.cache.needs_resign(id) {
            tracing::warn!(entry = %id, "the server signed an SVID with a tainted authority; asking again after the back-off");
            self.failed.insert(id.clone(), now + super::retry_secs());
        }
    }
}

fn jwt_tainted(cache: &crate::agent::cache::Cache, jwt: &HeldJwtSvid) -> bool {
    cache
        .bundles
        .get(jwt.spiffe_id.trust_domain())
        .is_some_and(|b| jwt_signed_by_tainted(&jwt.token, b))
}
