//! `spire.api.server.bundle.v1.Bundle`: the trust domain's bundle. Federation (federated
//! bundles, appending authorities) is not implemented yet and answers `Unimplemented`.

use std::sync::Arc;

use tessera_proto::spire::api::server::bundle::v1::{bundle_server, GetBundleRequest};
use tessera_proto::spire::api::types;
use tonic::{Request, Response, Status};

use super::AdminContext;
use crate::convert::bundle_to_proto;
use crate::status::{status, ApiError};

/// The Bundle service.
#[derive(Debug, Clone)]
pub struct BundleService {
    ctx: Arc<AdminContext>,
}

impl BundleService {
    /// Over the shared context.
    pub fn new(ctx: Arc<AdminContext>) -> Self {
        Self { ctx }
    }
}

#[tonic::async_trait]
impl bundle_server::Bundle for BundleService {
    async fn get_bundle(
        &self,
        request: Request<GetBundleRequest>,
    ) -> Result<Response<types::Bundle>, Status> {
        let mask = request.into_inner().output_mask;
        // The authority publishes every bundle change; no round trip to the actor.
        match self.ctx.server.authority.bundle() {
            Some(bundle) => Ok(Response::new(bundle_to_proto(&bundle, mask.as_ref()))),
            None => Err(status(ApiError::Unavailable(
                "the authority has not prepared its first CA yet; retry in a few seconds".into(),
            ))),
        }
    }
}
