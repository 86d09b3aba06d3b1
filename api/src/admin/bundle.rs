//! `spire.api.server.bundle.v1.Bundle`: the trust domain's own bundle, and federated bundles
//! (the foreign trust domains' trust material, held by the federation aggregate).
//!
//! Federated bundles are read from the aggregate's published view and written item by item,
//! as SPIRE's batches are. This server's own trust domain is never a federated one
//! (`InvalidArgument`). Deleting a bundle that registration entries federate with follows
//! SPIRE's modes: `RESTRICT` (the default) refuses (`FailedPrecondition`), `DELETE` deletes
//! those entries first, `DISSOCIATE` removes the trust domain from their `federates_with`
//! first. Those are registry commands, in pages of `limits.max_batch_size`, then the bundle's
//! deletion: not one transaction, so an entry made to federate with the trust domain while a
//! deletion runs keeps naming a bundle that is gone (as an entry may name one never set).
//! `AppendBundle` and `PublishJWTAuthority` are not implemented (`Unimplemented`): the
//! authority owns the own bundle's keys.

use std::sync::Arc;

use tessera_actors::server::federation::{
    FederationCommand, FederationError, FederationReply, PutMode,
};
use tessera_actors::server::registry::{
    EntryFilter, MatchBehavior, RegistryCommand, RegistryReply,
};
use tessera_identity::{RegistrationEntry, TrustDomain};
use tessera_proto::spire::api::server::bundle::v1::{
    batch_create_federated_bundle_response as create_response,
    batch_delete_federated_bundle_request::Mode, batch_delete_federated_bundle_response,
    batch_set_federated_bundle_response as set_response,
    batch_update_federated_bundle_response as update_response, bundle_server,
    BatchCreateFederatedBundleRequest, BatchCreateFederatedBundleResponse,
    BatchDeleteFederatedBundleRequest, BatchDeleteFederatedBundleResponse,
    BatchSetFederatedBundleRequest, BatchSetFederatedBundleResponse,
    BatchUpdateFederatedBundleRequest, BatchUpdateFederatedBundleResponse, CountBundlesRequest,
    CountBundlesResponse, GetBundleRequest, GetFederatedBundleRequest, ListFederatedBundlesRequest,
    ListFederatedBundlesResponse,
};
use tessera_proto::spire::api::types;
use tonic::{Request, Response, Status};

use super::AdminContext;
use crate::convert::{
    bundle_from_proto, bundle_to_proto, merge_bundle, trust_domain, ConvertError, FULL_BUNDLE_MASK,
};
use crate::status::{check_limit, item_ok, item_status, status, ApiError, BundleInUse, ToCode};

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

    fn check_batch(&self, len: usize) -> Result<(), Status> {
        check_limit(
            "the number of items in the batch",
            len,
            self.ctx.limits.max_batch_size,
            "max_batch_size",
        )
        .map_err(status)
    }

    /// A federated trust domain named in a request: set, valid, not this server's own.
    fn foreign(&self, field: &'static str, value: &str) -> Result<TrustDomain, types::Status> {
        if value.is_empty() {
            return Err(ConvertError::Missing { field }.to_item_status());
        }
        let td = trust_domain(field, value).map_err(|e| e.to_item_status())?;
        self.not_own(td)
    }

    fn not_own(&self, td: TrustDomain) -> Result<TrustDomain, types::Status> {
        if td == self.ctx.server.settings.trust_domain {
            return Err(FederationError::OwnTrustDomain { trust_domain: td }.to_item_status());
        }
        Ok(td)
    }

    /// Stores one wire bundle with `mode`; `update_mask` merges it into the held one first.
    async fn put(
        &self,
        wire: &types::Bundle,
        mode: PutMode,
        update_mask: Option<&types::BundleMask>,
        output_mask: Option<&types::BundleMask>,
    ) -> Result<types::Bundle, types::Status> {
        let input = bundle_from_proto(wire).map_err(|e| e.to_item_status())?;
        self.not_own(input.trust_domain().clone())?;
        let bundle = match update_mask {
            Some(mask) => {
                let view = self.ctx.server.federation.view();
                let held = view.bundles.get(input.trust_domain()).ok_or_else(|| {
                    FederationError::BundleNotFound {
                        trust_domain: input.trust_domain().clone(),
                    }
                    .to_item_status()
                })?;
                merge_bundle(held, &input, mask)
            }
            None => input,
        };
        match self
            .ctx
            .server
            .federation
            .command(FederationCommand::PutBundle { bundle, mode })
            .await
        {
            Ok(FederationReply::Bundle(b)) => Ok(bundle_to_proto(&b, output_mask)),
            Ok(other) => Err(item_status(
                tonic::Code::Internal,
                format!("the federation aggregate answered with the wrong reply kind: {other:?}"),
            )),
            Err(e) => Err(e.to_item_status()),
        }
    }

    /// Deletes one federated bundle, dealing with the entries that federate with it as
    /// `mode` says.
    async fn delete(&self, td: TrustDomain, mode: Mode) -> Result<TrustDomain, types::Status> {
        if !self.ctx.server.federation.view().bundles.contains_key(&td) {
            return Err(FederationError::BundleNotFound { trust_domain: td }.to_item_status());
        }
        let filter = EntryFilter {
            by_federates_with: Some((vec![td.clone()], MatchBehavior::Any)),
            ..EntryFilter::default()
        };
        let counted = filter.clone();
        let entries = self
            .ctx
            .server
            .registry
            .read(move |r| r.count(&counted))
            .await
            .map_err(|e| e.to_item_status())?;
        if entries > 0 {
            match mode {
                Mode::Restrict => {
                    return Err(BundleInUse {
                        trust_domain: td,
                        entries,
                    }
                    .to_item_status())
                }
                Mode::Delete | Mode::Dissociate => {
                    self.release_entries(&td, filter, mode, entries).await?
                }
            }
        }
        match self
            .ctx
            .server
            .federation
            .command(FederationCommand::DeleteBundle {
                trust_domain: td.clone(),
            })
            .await
        {
            Ok(_) => Ok(td),
            Err(e) => Err(e.to_item_status()),
        }
    }

    /// Deletes the entries matching `filter`, or removes `td` from their `federates_with`,
    /// a page at a time. Pages are bounded by the entry count seen before (plus slack for
    /// entries created meanwhile), so this ends even if entries keep arriving.
    async fn release_entries(
        &self,
        td: &TrustDomain,
        filter: EntryFilter,
        mode: Mode,
        seen: usize,
    ) -> Result<(), types::Status> {
        let page_size = self.ctx.limits.max_batch_size.max(1);
        let max_pages = seen / page_size + 2;
        for _ in 0..max_pages {
            let f = filter.clone();
            let page = self
                .ctx
                .server
                .registry
                .read(move |r| r.list(&f, page_size, None).entries)
                .await
                .map_err(|e| e.to_item_status())?;
            if page.is_empty() {
                return Ok(());
            }
            let command = match mode {
                Mode::Delete => RegistryCommand::Delete(page.into_iter().map(|e| e.id).collect()),
                _ => RegistryCommand::Update(
                    page.into_iter()
                        .map(|mut e: RegistrationEntry| {
                            e.federates_with.retain(|f| f != td);
                            e
                        })
                        .collect(),
                ),
            };
            let reply = self
                .ctx
                .server
                .registry
                .command(command)
                .await
                .map_err(|e| e.to_item_status())?;
            let first_refusal = match reply {
                RegistryReply::Deleted(r) => r.into_iter().find_map(Result::err),
                RegistryReply::Updated(r) => r.into_iter().find_map(Result::err),
                other => {
                    return Err(item_status(
                        tonic::Code::Internal,
                        format!("registry answered with the wrong reply kind: {other:?}"),
                    ))
                }
            };
            if let Some(e) = first_refusal {
                return Err(item_status(
                    e.code(),
                    format!("the bundle of {td} is kept: an entry federating with it could not be changed: {e}"),
                ));
            }
        }
        Err(item_status(
            tonic::Code::Unavailable,
            format!("entries federating with {td} kept appearing while they were being released; the bundle is kept, retry"),
        ))
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

    async fn count_bundles(
        &self,
        _request: Request<CountBundlesRequest>,
    ) -> Result<Response<CountBundlesResponse>, Status> {
        let own = usize::from(self.ctx.server.authority.bundle().is_some());
        let federated = self.ctx.server.federation.view().bundles.len();
        Ok(Response::new(CountBundlesResponse {
            count: i32::try_from(own + federated).unwrap_or(i32::MAX),
        }))
    }

    async fn list_federated_bundles(
        &self,
        request: Request<ListFederatedBundlesRequest>,
    ) -> Result<Response<ListFederatedBundlesResponse>, Status> {
        let req = request.into_inner();
        let view = self.ctx.server.federation.view();
        let (bundles, next_page_token) = self
            .ctx
            .page_by_trust_domain(&view.bundles, req.page_size, &req.page_token, |_, b| {
                bundle_to_proto(b, req.output_mask.as_ref())
            })
            .map_err(status)?;
        Ok(Response::new(ListFederatedBundlesResponse {
            bundles,
            next_page_token,
        }))
    }

    async fn get_federated_bundle(
        &self,
        request: Request<GetFederatedBundleRequest>,
    ) -> Result<Response<types::Bundle>, Status> {
        let req = request.into_inner();
        let td = self
            .foreign("trust_domain", &req.trust_domain)
            .map_err(|s| Status::new(tonic::Code::from(s.code), s.message))?;
        match self.ctx.server.federation.view().bundles.get(&td) {
            Some(b) => Ok(Response::new(bundle_to_proto(b, req.output_mask.as_ref()))),
            None => Err(status(FederationError::BundleNotFound { trust_domain: td })),
        }
    }

    async fn batch_create_federated_bundle(
        &self,
        request: Request<BatchCreateFederatedBundleRequest>,
    ) -> Result<Response<BatchCreateFederatedBundleResponse>, Status> {
        let req = request.into_inner();
        self.check_batch(req.bundle.len())?;
        let mut results = Vec::with_capacity(req.bundle.len());
        for b in &req.bundle {
            let (status, bundle) = split(
                self.put(b, PutMode::Create, None, req.output_mask.as_ref())
                    .await,
            );
            results.push(create_response::Result { status, bundle });
        }
        Ok(Response::new(BatchCreateFederatedBundleResponse {
            results,
        }))
    }

    async fn batch_update_federated_bundle(
        &self,
        request: Request<BatchUpdateFederatedBundleRequest>,
    ) -> Result<Response<BatchUpdateFederatedBundleResponse>, Status> {
        let req = request.into_inner();
        self.check_batch(req.bundle.len())?;
        let input_mask = req.input_mask.unwrap_or(FULL_BUNDLE_MASK);
        let mut results = Vec::with_capacity(req.bundle.len());
        for b in &req.bundle {
            // A read-modify-write: a concurrent change of the same bundle may be undone in the
            // fields the mask leaves out.
            let (status, bundle) = split(
                self.put(
                    b,
                    PutMode::Update,
                    Some(&input_mask),
                    req.output_mask.as_ref(),
                )
                .await,
            );
            results.push(update_response::Result { status, bundle });
        }
        Ok(Response::new(BatchUpdateFederatedBundleResponse {
            results,
        }))
    }

    async fn batch_set_federated_bundle(
        &self,
        request: Request<BatchSetFederatedBundleRequest>,
    ) -> Result<Response<BatchSetFederatedBundleResponse>, Status> {
        let req = request.into_inner();
        self.check_batch(req.bundle.len())?;
        let mut results = Vec::with_capacity(req.bundle.len());
        for b in &req.bundle {
            let (status, bundle) = split(
                self.put(b, PutMode::Set, None, req.output_mask.as_ref())
                    .await,
            );
            results.push(set_response::Result { status, bundle });
        }
        Ok(Response::new(BatchSetFederatedBundleResponse { results }))
    }

    async fn batch_delete_federated_bundle(
        &self,
        request: Request<BatchDeleteFederatedBundleRequest>,
    ) -> Result<Response<BatchDeleteFederatedBundleResponse>, Status> {
        let req = request.into_inner();
        self.check_batch(req.trust_domains.len())?;
        let mode = Mode::try_from(req.mode).map_err(|_| {
            status(ConvertError::UnknownEnum {
                field: "mode",
                value: req.mode,
            })
        })?;
        let mut results = Vec::with_capacity(req.trust_domains.len());
        for asked in &req.trust_domains {
            let outcome = match self.foreign("trust_domains", asked) {
                Ok(td) => self.delete(td, mode).await,
                Err(s) => Err(s),
            };
            results.push(match outcome {
                Ok(td) => batch_delete_federated_bundle_response::Result {
                    status: Some(item_ok()),
                    trust_domain: td.as_str().to_owned(),
                },
                Err(s) => batch_delete_federated_bundle_response::Result {
                    status: Some(s),
                    trust_domain: asked.clone(),
                },
            });
        }
        Ok(Response::new(BatchDeleteFederatedBundleResponse {
            results,
        }))
    }
}

/// A batch item's outcome as the response's `(status, bundle)`.
fn split(
    outcome: Result<types::Bundle, types::Status>,
) -> (Option<types::Status>, Option<types::Bundle>) {
    match outcome {
        Ok(b) => (Some(item_ok()), Some(b)),
        Err(s) => (Some(s), None),
    }
}
