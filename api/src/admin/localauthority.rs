//! `spire.api.server.localauthority.v1.LocalAuthority`: forced rotation of this server's own
//! X.509 CA and JWT key (SPIRE's `localauthority` verbs). Each step is the authority actor's
//! (`tessera_actors::server::authority`, manual steps) and an event in the log:
//! prepare (`CaPrepared`/`JwtKeyPrepared`), activate (`CaActivated`/`JwtKeyActivated`), taint
//! (`X509AuthorityTainted`/`JwtAuthorityTainted`: the bundle marks it, agents re-sign or drop
//! what it signed), revoke (`X509AuthorityRevoked`/`JwtAuthorityRevoked`: it leaves the bundle).
//!
//! The order is SPIRE's: prepare → activate (naming the prepared one) → taint (naming the old
//! one) → revoke (naming the tainted one). A step out of order is `FailedPrecondition` with the
//! next step to take; an empty ID or one this server does not hold is `InvalidArgument`, as in
//! SPIRE. `Get*AuthorityState` shows the active, the prepared and the most recent old one.
//! With an upstream authority, a CA it signed is tainted and revoked through the upstream
//! root (`TaintX509UpstreamAuthority`, `RevokeX509UpstreamAuthority`, by the root's subject key
//! ID): every old CA it signed at once, the root marked and then removed. WIT authorities are
//! not in Tessera (`Unimplemented`).

use std::sync::Arc;

use tessera_actors::server::authority::{AuthorityKind, LocalAuthority, LocalStep, SlotStatus};
use tessera_proto::spire::api::server::localauthority::v1::{
    local_authority_server, ActivateJwtAuthorityRequest, ActivateJwtAuthorityResponse,
    ActivateX509AuthorityRequest, ActivateX509AuthorityResponse, AuthorityState,
    GetJwtAuthorityStateRequest, GetJwtAuthorityStateResponse, GetX509AuthorityStateRequest,
    GetX509AuthorityStateResponse, PrepareJwtAuthorityRequest, PrepareJwtAuthorityResponse,
    PrepareX509AuthorityRequest, PrepareX509AuthorityResponse, RevokeJwtAuthorityRequest,
    RevokeJwtAuthorityResponse, RevokeX509AuthorityRequest, RevokeX509AuthorityResponse,
    RevokeX509UpstreamAuthorityRequest, RevokeX509UpstreamAuthorityResponse,
    TaintJwtAuthorityRequest, TaintJwtAuthorityResponse, TaintX509AuthorityRequest,
    TaintX509AuthorityResponse, TaintX509UpstreamAuthorityRequest,
    TaintX509UpstreamAuthorityResponse,
};
use tonic::{Request, Response, Status};

use super::AdminContext;
use crate::convert::ConvertError;
use crate::status::status;

/// The LocalAuthority service.
#[derive(Debug, Clone)]
pub struct LocalAuthorityService {
    ctx: Arc<AdminContext>,
}

/// The three authorities `Get*AuthorityState` shows.
struct Shown {
    active: Option<AuthorityState>,
    prepared: Option<AuthorityState>,
    old: Option<AuthorityState>,
}

impl LocalAuthorityService {
    /// Over the shared context.
    pub fn new(ctx: Arc<AdminContext>) -> Self {
        Self { ctx }
    }

    async fn shown(&self, kind: AuthorityKind) -> Result<Shown, Status> {
        let all = self
            .ctx
            .server
            .authority
            .local_state(kind)
            .await
            .map_err(status)?;
        let pick = |wanted: SlotStatus| all.iter().rev().find(|a| a.status == wanted).map(wire);
        let active = pick(SlotStatus::Active);
        if active.is_none() {
            return Err(Status::unavailable(
                "server is initializing: no active authority yet; retry in a moment",
            ));
        }
        Ok(Shown {
            active,
            prepared: pick(SlotStatus::Prepared),
            old: pick(SlotStatus::Old),
        })
    }

    async fn prepare(&self, kind: AuthorityKind) -> Result<AuthorityState, Status> {
        let prepared = self
            .ctx
            .server
            .authority
            .prepare(kind)
            .await
            .map_err(status)?
            .map_err(status)?;
        Ok(wire(&prepared))
    }

    async fn step(
        &self,
        kind: AuthorityKind,
        step: LocalStep,
        authority_id: String,
    ) -> Result<AuthorityState, Status> {
        if authority_id.is_empty() {
            let field = match step {
                LocalStep::TaintUpstream | LocalStep::RevokeUpstream => "subject_key_id",
                _ => "authority_id",
            };
            return Err(status(ConvertError::Missing { field }));
        }
        let done = self
            .ctx
            .server
            .authority
            .local_step(kind, step, authority_id)
            .await
            .map_err(status)?
            .map_err(status)?;
        Ok(wire(&done))
    }
}

/// An authority on the wire.
pub fn wire(a: &LocalAuthority) -> AuthorityState {
    AuthorityState {
        authority_id: a.id.clone(),
        expires_at: a.expires_at,
        upstream_authority_subject_key_id: a.upstream_authority_id.clone().unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl local_authority_server::LocalAuthority for LocalAuthorityService {
    async fn get_jwt_authority_state(
        &self,
        _request: Request<GetJwtAuthorityStateRequest>,
    ) -> Result<Response<GetJwtAuthorityStateResponse>, Status> {
        let s = self.shown(AuthorityKind::Jwt).await?;
        Ok(Response::new(GetJwtAuthorityStateResponse {
            active: s.active,
            prepared: s.prepared,
            old: s.old,
        }))
    }

    async fn prepare_jwt_authority(
        &self,
        _request: Request<PrepareJwtAuthorityRequest>,
    ) -> Result<Response<PrepareJwtAuthorityResponse>, Status> {
        Ok(Response::new(PrepareJwtAuthorityResponse {
            prepared_authority: Some(self.prepare(AuthorityKind::Jwt).await?),
        }))
    }

    async fn activate_jwt_authority(
        &self,
        request: Request<ActivateJwtAuthorityRequest>,
    ) -> Result<Response<ActivateJwtAuthorityResponse>, Status> {
        let id = request.into_inner().authority_id;
        Ok(Response::new(ActivateJwtAuthorityResponse {
            activated_authority: Some(
                self.step(AuthorityKind::Jwt, LocalStep::Activate, id)
                    .await?,
            ),
        }))
    }

    async fn taint_jwt_authority(
        &self,
        request: Request<TaintJwtAuthorityRequest>,
    ) -> Result<Response<TaintJwtAuthorityResponse>, Status> {
        let id = request.into_inner().authority_id;
        Ok(Response::new(TaintJwtAuthorityResponse {
            tainted_authority: Some(self.step(AuthorityKind::Jwt, LocalStep::Taint, id).await?),
        }))
    }

    async fn revoke_jwt_authority(
        &self,
        request: Request<RevokeJwtAuthorityRequest>,
    ) -> Result<Response<RevokeJwtAuthorityResponse>, Status> {
        let id = request.into_inner().authority_id;
        Ok(Response::new(RevokeJwtAuthorityResponse {
            revoked_authority: Some(self.step(AuthorityKind::Jwt, LocalStep::Revoke, id).await?),
        }))
    }

    async fn taint_x509_upstream_authority(
        &self,
        request: Request<TaintX509UpstreamAuthorityRequest>,
    ) -> Result<Response<TaintX509UpstreamAuthorityResponse>, Status> {
        let id = request.into_inner().subject_key_id.to_ascii_lowercase();
        let signed = self
            .step(AuthorityKind::X509, LocalStep::TaintUpstream, id)
            .await?;
        Ok(Response::new(TaintX509UpstreamAuthorityResponse {
            upstream_authority_subject_key_id: signed.upstream_authority_subject_key_id,
        }))
    }

    async fn revoke_x509_upstream_authority(
        &self,
        request: Request<RevokeX509UpstreamAuthorityRequest>,
    ) -> Result<Response<RevokeX509UpstreamAuthorityResponse>, Status> {
        let id = request.into_inner().subject_key_id.to_ascii_lowercase();
        let signed = self
            .step(AuthorityKind::X509, LocalStep::RevokeUpstream, id)
            .await?;
        Ok(Response::new(RevokeX509UpstreamAuthorityResponse {
            upstream_authority_subject_key_id: signed.upstream_authority_subject_key_id,
        }))
    }

    async fn get_x509_authority_state(
        &self,
        _request: Request<GetX509AuthorityStateRequest>,
    ) -> Result<Response<GetX509AuthorityStateResponse>, Status> {
        let s = self.shown(AuthorityKind::X509).await?;
        Ok(Response::new(GetX509AuthorityStateResponse {
            active: s.active,
            prepared: s.prepared,
            old: s.old,
        }))
    }

    async fn prepare_x509_authority(
        &self,
        _request: Request<PrepareX509AuthorityRequest>,
    ) -> Result<Response<PrepareX509AuthorityResponse>, Status> {
        Ok(Response::new(PrepareX509AuthorityResponse {
            prepared_authority: Some(self.prepare(AuthorityKind::X509).await?),
        }))
    }

    async fn activate_x509_authority(
        &self,
        request: Request<ActivateX509AuthorityRequest>,
    ) -> Result<Response<ActivateX509AuthorityResponse>, Status> {
        let id = request.into_inner().authority_id;
        Ok(Response::new(ActivateX509AuthorityResponse {
            activated_authority: Some(
                self.step(AuthorityKind::X509, LocalStep::Activate, id)
                    .await?,
            ),
        }))
    }

    async fn taint_x509_authority(
        &self,
        request: Request<TaintX509AuthorityRequest>,
    ) -> Result<Response<TaintX509AuthorityResponse>, Status> {
        let id = request.into_inner().authority_id;
        Ok(Response::new(TaintX509AuthorityResponse {
            tainted_authority: Some(self.step(AuthorityKind::X509, LocalStep::Taint, id).await?),
        }))
    }

    async fn revoke_x509_authority(
        &self,
        request: Request<RevokeX509AuthorityRequest>,
    ) -> Result<Response<RevokeX509AuthorityResponse>, Status> {
        let id = request.into_inner().authority_id;
        Ok(Response::new(RevokeX509AuthorityResponse {
            revoked_authority: Some(
                self.step(AuthorityKind::X509, LocalStep::Revoke, id)
                    .await?,
            ),
        }))
    }
}
