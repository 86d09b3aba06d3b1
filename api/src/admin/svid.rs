//! `spire.api.server.svid.v1.SVID`: minting SVIDs for admins (`x509 mint`, `jwt mint`). The
//! agent-facing methods (`BatchNewX509SVID`, `NewJWTSVID`) belong to the agent API.

use std::sync::Arc;
use std::time::Duration;

use tessera_actors::server::authority::{JwtSvidRequest, X509SvidRequest};
use tessera_proto::spire::api::server::svid::v1::{
    svid_server, MintJwtsvidRequest, MintJwtsvidResponse, MintX509svidRequest, MintX509svidResponse,
};
use tessera_proto::spire::api::types;
use tonic::{Request, Response, Status};

use super::AdminContext;
use crate::convert::{self, csr_names, spiffe_id_to_proto, ConvertError};
use crate::status::{status, ToCode};

/// The SVID service.
#[derive(Debug, Clone)]
pub struct SvidService {
    ctx: Arc<AdminContext>,
}

impl SvidService {
    /// Over the shared context.
    pub fn new(ctx: Arc<AdminContext>) -> Self {
        Self { ctx }
    }
}

/// A requested TTL: zero for the server's default.
fn ttl(v: i32) -> Result<Option<Duration>, ConvertError> {
    match u64::try_from(v) {
        Ok(0) => Ok(None),
        Ok(s) => Ok(Some(Duration::from_secs(s))),
        Err(_) => Err(ConvertError::OutOfRange {
            field: "ttl",
            value: i64::from(v),
            rule: "seconds, or 0 for the server's default",
        }),
    }
}

#[tonic::async_trait]
impl svid_server::Svid for SvidService {
    async fn mint_x509svid(
        &self,
        request: Request<MintX509svidRequest>,
    ) -> Result<Response<MintX509svidResponse>, Status> {
        let req = request.into_inner();
        let names = csr_names(&req.csr).map_err(status)?;
        let ttl = ttl(req.ttl).map_err(status)?;
        let results = self
            .ctx
            .server
            .authority
            .sign_x509_batch(vec![X509SvidRequest {
                csr_der: req.csr,
                spiffe_id: names.spiffe_id,
                dns_names: names.dns_names,
                ttl,
            }])
            .await
            .map_err(status)?;
        let issued = results
            .into_iter()
            .next()
            .ok_or_else(|| Status::internal("the signer returned no result"))?
            .map_err(|r| r.to_status())?;
        Ok(Response::new(MintX509svidResponse {
            svid: Some(types::X509svid {
                cert_chain: issued.cert_chain,
                id: Some(spiffe_id_to_proto(&issued.spiffe_id)),
                expires_at: issued.not_after,
                hint: String::new(),
            }),
        }))
    }

    async fn mint_jwtsvid(
        &self,
        request: Request<MintJwtsvidRequest>,
    ) -> Result<Response<MintJwtsvidResponse>, Status> {
        let req = request.into_inner();
        let spiffe_id = convert::spiffe_id("id", req.id.as_ref()).map_err(status)?;
        let ttl = ttl(req.ttl).map_err(status)?;
        let svid = self
            .ctx
            .server
            .authority
            .mint_jwt_svid(JwtSvidRequest {
                spiffe_id,
                audience: req.audience,
                ttl,
            })
            .await
            .map_err(status)?;
        Ok(Response::new(MintJwtsvidResponse {
            svid: Some(types::Jwtsvid {
                token: svid.token,
                id: Some(spiffe_id_to_proto(&svid.spiffe_id)),
                expires_at: svid.expires_at,
                issued_at: svid.issued_at,
                hint: String::new(),
            }),
        }))
    }
}
