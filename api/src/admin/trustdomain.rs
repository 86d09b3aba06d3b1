//! `spire.api.server.trustdomain.v1.TrustDomain`: federation relationships with foreign trust
//! domains, over the federation aggregate (`tessera_actors::server::federation`), and
//! `RefreshBundle` through the refresher ([`crate::federation::FederationRuntime`]).
//!
//! Reads come from the aggregate's published view (no round trip to the actor); batches go
//! item by item, as SPIRE's do: a bad item gets its own status and the others go ahead.
//! A relationship is answered with the federated bundle held for its trust domain, as SPIRE
//! answers with the datastore's.
//!
//! SPIRE's API has no field for how refreshes are going, so `GetFederationRelationship` sends
//! it in the response metadata [`REFRESH_STATUS_METADATA`]: a JSON object with
//! `last_attempt_at`, `last_success_at`, `next_refresh_at` (Unix seconds or null),
//! `last_error` (string or null) and `consecutive_failures`, absent until a first attempt.
//! `federation show` prints it; `grpcurl -v` shows it.

use std::sync::Arc;

use tessera_actors::server::federation::{
    FederationCommand, FederationError, FederationReply, FederationView, Relationship,
};
use tessera_identity::{Bundle, TrustDomain};
use tessera_proto::spire::api::server::trustdomain::v1::{
    batch_create_federation_relationship_response as create_response,
    batch_delete_federation_relationship_response as delete_response,
    batch_update_federation_relationship_response as update_response, trust_domain_server,
    BatchCreateFederationRelationshipRequest, BatchCreateFederationRelationshipResponse,
    BatchDeleteFederationRelationshipRequest, BatchDeleteFederationRelationshipResponse,
    BatchUpdateFederationRelationshipRequest, BatchUpdateFederationRelationshipResponse,
    GetFederationRelationshipRequest, ListFederationRelationshipsRequest,
    ListFederationRelationshipsResponse, RefreshBundleRequest,
};
use tessera_proto::spire::api::types;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use super::AdminContext;
use crate::convert::{
    apply_relationship_fields, relationship_from_proto, relationship_to_proto,
    relationship_trust_domain, trust_domain, ConvertError, FULL_RELATIONSHIP_MASK,
};
use crate::federation::RefreshStatus;
use crate::status::{check_limit, item_ok, status, ToCode};

/// Response metadata of `GetFederationRelationship` carrying the refresh status (JSON).
pub const REFRESH_STATUS_METADATA: &str = "tessera-refresh-status";

/// Longest `last_error` sent in the metadata, in characters (headers are bounded).
const MAX_ERROR_CHARS: usize = 512;

/// The TrustDomain service.
#[derive(Debug, Clone)]
pub struct TrustDomainService {
    ctx: Arc<AdminContext>,
}

impl TrustDomainService {
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

    /// Runs a relationship command; the relationship stored and its bundle, or the item's
    /// status.
    async fn put(
        &self,
        command: FederationCommand,
        mask: Option<&types::FederationRelationshipMask>,
    ) -> Result<types::FederationRelationship, types::Status> {
        let given = match &command {
            FederationCommand::CreateRelationship { bundle, .. }
            | FederationCommand::UpdateRelationship { bundle, .. } => bundle.clone(),
            _ => None,
        };
        match self.ctx.server.federation.command(command).await {
            Ok(FederationReply::Relationship(r)) => {
                let view = self.ctx.server.federation.view();
                let bundle =
                    given.or_else(|| view.bundles.get(&r.trust_domain).map(|b| Bundle::clone(b)));
                Ok(relationship_to_proto(&r, bundle.as_ref(), mask))
            }
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(e.to_item_status()),
        }
    }
}

fn unexpected(reply: &FederationReply) -> types::Status {
    crate::status::item_status(
        tonic::Code::Internal,
        format!("the federation aggregate answered with the wrong reply kind: {reply:?}"),
    )
}

/// A trust domain field that must be set.
fn required_td(field: &'static str, value: &str) -> Result<TrustDomain, ConvertError> {
    if value.is_empty() {
        return Err(ConvertError::Missing { field });
    }
    trust_domain(field, value)
}

fn relationship_with_bundle<'a>(
    view: &'a FederationView,
    td: &TrustDomain,
) -> Option<(&'a Relationship, Option<&'a Bundle>)> {
    view.relationships
        .get(td)
        .map(|r| (r, view.bundles.get(td).map(Arc::as_ref)))
}

/// The refresh status as the metadata's JSON: ASCII only (other characters escaped as
/// `\uXXXX`, which JSON allows), the error cut to [`MAX_ERROR_CHARS`].
pub fn refresh_status_json(s: &RefreshStatus) -> String {
    let error = s
        .last_error
        .as_ref()
        .map(|e| e.chars().take(MAX_ERROR_CHARS).collect::<String>());
    let value = serde_json::json!({
        "last_attempt_at": s.last_attempt_at,
        "last_success_at": s.last_success_at,
        "last_error": error,
        "consecutive_failures": s.consecutive_failures,
        "next_refresh_at": s.next_refresh_at,
    });
    let mut out = String::new();
    for c in value.to_string().chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

#[tonic::async_trait]
impl trust_domain_server::TrustDomain for TrustDomainService {
    async fn list_federation_relationships(
        &self,
        request: Request<ListFederationRelationshipsRequest>,
    ) -> Result<Response<ListFederationRelationshipsResponse>, Status> {
        let req = request.into_inner();
        let view = self.ctx.server.federation.view();
        let (federation_relationships, next_page_token) = self
            .ctx
            .page_by_trust_domain(
                &view.relationships,
                req.page_size,
                &req.page_token,
                |td, r| {
                    relationship_to_proto(
                        r,
                        view.bundles.get(td).map(Arc::as_ref),
                        req.output_mask.as_ref(),
                    )
                },
            )
            .map_err(status)?;
        Ok(Response::new(ListFederationRelationshipsResponse {
            federation_relationships,
            next_page_token,
        }))
    }

    async fn get_federation_relationship(
        &self,
        request: Request<GetFederationRelationshipRequest>,
    ) -> Result<Response<types::FederationRelationship>, Status> {
        let req = request.into_inner();
        let td = required_td("trust_domain", &req.trust_domain).map_err(status)?;
        let view = self.ctx.server.federation.view();
        let Some((r, bundle)) = relationship_with_bundle(&view, &td) else {
            return Err(status(FederationError::RelationshipNotFound {
                trust_domain: td,
            }));
        };
        let mut response =
            Response::new(relationship_to_proto(r, bundle, req.output_mask.as_ref()));
        if let Some(s) = self.ctx.federation.status(&td) {
            // Escaped to ASCII above, so this cannot fail; if it did, the status is left out.
            if let Ok(value) = MetadataValue::try_from(refresh_status_json(&s)) {
                response
                    .metadata_mut()
                    .insert(REFRESH_STATUS_METADATA, value);
            }
        }
        Ok(response)
    }

    async fn batch_create_federation_relationship(
        &self,
        request: Request<BatchCreateFederationRelationshipRequest>,
    ) -> Result<Response<BatchCreateFederationRelationshipResponse>, Status> {
        let req = request.into_inner();
        self.check_batch(req.federation_relationships.len())?;
        let mut results = Vec::with_capacity(req.federation_relationships.len());
        for item in &req.federation_relationships {
            let outcome = match relationship_from_proto(item) {
                Ok((relationship, bundle)) => {
                    self.put(
                        FederationCommand::CreateRelationship {
                            relationship,
                            bundle,
                        },
                        req.output_mask.as_ref(),
                    )
                    .await
                }
                Err(e) => Err(e.to_item_status()),
            };
            results.push(match outcome {
                Ok(r) => create_response::Result {
                    status: Some(item_ok()),
                    federation_relationship: Some(r),
                },
                Err(s) => create_response::Result {
                    status: Some(s),
                    federation_relationship: None,
                },
            });
        }
        Ok(Response::new(BatchCreateFederationRelationshipResponse {
            results,
        }))
    }

    async fn batch_update_federation_relationship(
        &self,
        request: Request<BatchUpdateFederationRelationshipRequest>,
    ) -> Result<Response<BatchUpdateFederationRelationshipResponse>, Status> {
        let req = request.into_inner();
        self.check_batch(req.federation_relationships.len())?;
        let input_mask = req.input_mask.unwrap_or(FULL_RELATIONSHIP_MASK);
        let mut results = Vec::with_capacity(req.federation_relationships.len());
        for item in &req.federation_relationships {
            // A read-modify-write, as the entry update: a concurrent update of the same
            // relationship may undo this one's masked-out fields.
            let prepared = relationship_trust_domain(item)
                .map_err(|e| e.to_item_status())
                .and_then(|td| {
                    let view = self.ctx.server.federation.view();
                    let mut relationship =
                        view.relationships.get(&td).cloned().ok_or_else(|| {
                            FederationError::RelationshipNotFound { trust_domain: td }
                                .to_item_status()
                        })?;
                    let bundle = apply_relationship_fields(&mut relationship, item, &input_mask)
                        .map_err(|e| e.to_item_status())?;
                    Ok(FederationCommand::UpdateRelationship {
                        relationship,
                        bundle,
                    })
                });
            let outcome = match prepared {
                Ok(command) => self.put(command, req.output_mask.as_ref()).await,
                Err(s) => Err(s),
            };
            results.push(match outcome {
                Ok(r) => update_response::Result {
                    status: Some(item_ok()),
                    federation_relationship: Some(r),
                },
                Err(s) => update_response::Result {
                    status: Some(s),
                    federation_relationship: None,
                },
            });
        }
        Ok(Response::new(BatchUpdateFederationRelationshipResponse {
            results,
        }))
    }

    async fn batch_delete_federation_relationship(
        &self,
        request: Request<BatchDeleteFederationRelationshipRequest>,
    ) -> Result<Response<BatchDeleteFederationRelationshipResponse>, Status> {
        let req = request.into_inner();
        self.check_batch(req.trust_domains.len())?;
        let mut results = Vec::with_capacity(req.trust_domains.len());
        for asked in &req.trust_domains {
            let outcome = match required_td("trust_domains", asked) {
                Ok(td) => {
                    let command = FederationCommand::DeleteRelationship {
                        trust_domain: td.clone(),
                    };
                    match self.ctx.server.federation.command(command).await {
                        Ok(_) => {
                            self.ctx.federation.forget(&td);
                            Ok(td)
                        }
                        Err(e) => Err(e.to_item_status()),
                    }
                }
                Err(e) => Err(e.to_item_status()),
            };
            results.push(match outcome {
                Ok(td) => delete_response::Result {
                    status: Some(item_ok()),
                    trust_domain: td.as_str().to_owned(),
                },
                Err(s) => delete_response::Result {
                    status: Some(s),
                    trust_domain: asked.clone(),
                },
            });
        }
        Ok(Response::new(BatchDeleteFederationRelationshipResponse {
            results,
        }))
    }

    async fn refresh_bundle(
        &self,
        request: Request<RefreshBundleRequest>,
    ) -> Result<Response<()>, Status> {
        let td = required_td("trust_domain", &request.into_inner().trust_domain).map_err(status)?;
        if !self
            .ctx
            .server
            .federation
            .view()
            .relationships
            .contains_key(&td)
        {
            return Err(status(FederationError::RelationshipNotFound {
                trust_domain: td,
            }));
        }
        self.ctx.federation.refresh_now(&td).await.map_err(status)?;
        Ok(Response::new(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_status_json_is_ascii_and_bounded() {
        let s = RefreshStatus {
            last_attempt_at: Some(10),
            last_success_at: None,
            last_error: Some(format!("caf\u{e9} \u{1f600} {}", "x".repeat(2_000))),
            consecutive_failures: 3,
            next_refresh_at: Some(40),
        };
        let text = refresh_status_json(&s);
        assert!(text.is_ascii(), "{text}");
        assert!(MetadataValue::try_from(text.as_str()).is_ok());
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        let error = back["last_error"].as_str().unwrap();
        assert!(error.starts_with("caf\u{e9} \u{1f600} x"), "{error}");
        assert_eq!(error.chars().count(), MAX_ERROR_CHARS);
        assert_eq!(back["last_success_at"], serde_json::Value::Null);
        assert_eq!(back["consecutive_failures"], 3);
        assert_eq!(back["next_refresh_at"], 40);
    }
}
