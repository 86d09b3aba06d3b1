//! `spire.api.server.entry.v1.Entry`: registration entries. Batches answer item by item, as
//! SPIRE's do: a malformed item gets its own `InvalidArgument` and the others go ahead.
//! `GetAuthorizedEntries` and `SyncAuthorizedEntries` are for agents and stay unimplemented
//! here (Tessera agents sync over the agent API).

use std::sync::Arc;

use tessera_actors::server::registry::{RegistryCommand, RegistryReply};
use tessera_identity::{EntryId, RegistrationEntry};
use tessera_proto::spire::api::server::entry::v1::{
    batch_create_entry_response, batch_delete_entry_response, batch_update_entry_response,
    entry_server, list_entries_request, BatchCreateEntryRequest, BatchCreateEntryResponse,
    BatchDeleteEntryRequest, BatchDeleteEntryResponse, BatchUpdateEntryRequest,
    BatchUpdateEntryResponse, CountEntriesRequest, CountEntriesResponse, GetEntryRequest,
    ListEntriesRequest, ListEntriesResponse,
};
use tessera_proto::spire::api::types;
use tonic::{Request, Response, Status};

use super::AdminContext;
use crate::convert::{
    self, apply_entry_fields, entry_to_proto, new_entry_from_proto, ConvertError, FULL_MASK,
};
use crate::status::{check_limit, item_ok, status, ApiError, ToCode};

/// The Entry service.
#[derive(Debug, Clone)]
pub struct EntryService {
    ctx: Arc<AdminContext>,
}

impl EntryService {
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

    async fn command(&self, command: RegistryCommand) -> Result<RegistryReply, Status> {
        self.ctx
            .server
            .registry
            .command(command)
            .await
            .map_err(status)
    }
}

/// `CountEntries`' filter has the same fields as `ListEntries`'.
fn list_filter(
    f: tessera_proto::spire::api::server::entry::v1::count_entries_request::Filter,
) -> list_entries_request::Filter {
    list_entries_request::Filter {
        by_spiffe_id: f.by_spiffe_id,
        by_parent_id: f.by_parent_id,
        by_selectors: f.by_selectors,
        by_federates_with: f.by_federates_with,
        by_hint: f.by_hint,
        by_downstream: f.by_downstream,
    }
}

/// Outcomes of a batch, in request order: conversion failures already in place, the rest
/// filled from the registry's reply.
fn merge<T>(
    mut slots: Vec<Option<Result<T, types::Status>>>,
    replies: Vec<Result<T, types::Status>>,
) -> Vec<Result<T, types::Status>> {
    let mut replies = replies.into_iter();
    slots
        .iter_mut()
        .map(|slot| match slot.take() {
            Some(done) => done,
            None => replies.next().unwrap_or_else(|| {
                Err(crate::status::item_status(
                    tonic::Code::Internal,
                    "registry gave fewer results than items",
                ))
            }),
        })
        .collect()
}

#[tonic::async_trait]
impl entry_server::Entry for EntryService {
    async fn count_entries(
        &self,
        request: Request<CountEntriesRequest>,
    ) -> Result<Response<CountEntriesResponse>, Status> {
        let filter = convert::entry_filter(request.into_inner().filter.map(list_filter).as_ref())
            .map_err(status)?;
        let count = self
            .ctx
            .server
            .registry
            .read(move |r| r.count(&filter))
            .await
            .map_err(status)?;
        Ok(Response::new(CountEntriesResponse {
            count: i32::try_from(count).unwrap_or(i32::MAX),
        }))
    }

    async fn list_entries(
        &self,
        request: Request<ListEntriesRequest>,
    ) -> Result<Response<ListEntriesResponse>, Status> {
        let req = request.into_inner();
        let filter = convert::entry_filter(req.filter.as_ref()).map_err(status)?;
        let page_size = self.ctx.page_size(req.page_size).map_err(status)?;
        let token = if req.page_token.is_empty() {
            None
        } else {
            Some(convert::entry_id("page_token", &req.page_token).map_err(status)?)
        };
        let page = self
            .ctx
            .server
            .registry
            .read(move |r| r.list(&filter, page_size, token.as_ref()))
            .await
            .map_err(status)?;
        let mask = req.output_mask;
        Ok(Response::new(ListEntriesResponse {
            entries: page
                .entries
                .iter()
                .map(|e| entry_to_proto(e, mask.as_ref()))
                .collect(),
            next_page_token: page
                .next_page_token
                .map(|t| t.as_str().to_owned())
                .unwrap_or_default(),
        }))
    }

    async fn get_entry(
        &self,
        request: Request<GetEntryRequest>,
    ) -> Result<Response<types::Entry>, Status> {
        let req = request.into_inner();
        let id = convert::entry_id("id", &req.id).map_err(status)?;
        let wanted = id.clone();
        let entry = self
            .ctx
            .server
            .registry
            .read(move |r| r.get(&wanted).cloned())
            .await
            .map_err(status)?;
        match entry {
            Some(e) => Ok(Response::new(entry_to_proto(&e, req.output_mask.as_ref()))),
            None => Err(status(ApiError::NotFound(format!("no entry with id {id}")))),
        }
    }

    async fn batch_create_entry(
        &self,
        request: Request<BatchCreateEntryRequest>,
    ) -> Result<Response<BatchCreateEntryResponse>, Status> {
        let req = request.into_inner();
        self.check_batch(req.entries.len())?;
        let mut slots = Vec::with_capacity(req.entries.len());
        let mut valid = Vec::new();
        for e in &req.entries {
            match new_entry_from_proto(e) {
                Ok(new) => {
                    valid.push(new);
                    slots.push(None);
                }
                Err(err) => slots.push(Some(Err(err.to_item_status()))),
            }
        }
        let replies = if valid.is_empty() {
            vec![]
        } else {
            match self.command(RegistryCommand::Create(valid)).await? {
                RegistryReply::Created(results) => results
                    .into_iter()
                    .map(|r| r.map_err(|e| e.to_item_status()))
                    .collect(),
                other => return Err(unexpected(&other)),
            }
        };
        let mask = req.output_mask;
        let results = merge(slots, replies)
            .into_iter()
            .map(|r| match r {
                Ok(e) => batch_create_entry_response::Result {
                    status: Some(item_ok()),
                    entry: Some(entry_to_proto(&e, mask.as_ref())),
                },
                Err(s) => batch_create_entry_response::Result {
                    status: Some(s),
                    entry: None,
                },
            })
            .collect();
        Ok(Response::new(BatchCreateEntryResponse { results }))
    }

    async fn batch_update_entry(
        &self,
        request: Request<BatchUpdateEntryRequest>,
    ) -> Result<Response<BatchUpdateEntryResponse>, Status> {
        let req = request.into_inner();
        self.check_batch(req.entries.len())?;
        let input_mask = req.input_mask.unwrap_or(FULL_MASK);
        let ids: Vec<Result<EntryId, ConvertError>> = req
            .entries
            .iter()
            .map(|e| convert::entry_id("id", &e.id))
            .collect();
        let lookup: Vec<EntryId> = ids
            .iter()
            .filter_map(|r| r.as_ref().ok().cloned())
            .collect();
        let mut current = self
            .ctx
            .server
            .registry
            .read(move |r| {
                lookup
                    .iter()
                    .map(|id| r.get(id).cloned())
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(status)?
            .into_iter();
        // A read-modify-write: an update racing another update of the same entry may undo its
        // masked-out fields; the registry's revision shows which one won.
        let mut slots = Vec::with_capacity(req.entries.len());
        let mut valid: Vec<RegistrationEntry> = Vec::new();
        for (input, id) in req.entries.iter().zip(ids) {
            let outcome = id.map_err(|e| e.to_item_status()).and_then(|id| {
                let mut existing = current.next().flatten().ok_or_else(|| {
                    ApiError::NotFound(format!("no entry with id {id}")).to_item_status()
                })?;
                apply_entry_fields(&mut existing, input, &input_mask)
                    .map_err(|e| e.to_item_status())?;
                Ok(existing)
            });
            match outcome {
                Ok(e) => {
                    valid.push(e);
                    slots.push(None);
                }
                Err(s) => slots.push(Some(Err(s))),
            }
        }
        let replies = if valid.is_empty() {
            vec![]
        } else {
            match self.command(RegistryCommand::Update(valid)).await? {
                RegistryReply::Updated(results) => results
                    .into_iter()
                    .map(|r| r.map_err(|e| e.to_item_status()))
                    .collect(),
                other => return Err(unexpected(&other)),
            }
        };
        let mask = req.output_mask;
        let results = merge(slots, replies)
            .into_iter()
            .map(|r| match r {
                Ok(e) => batch_update_entry_response::Result {
                    status: Some(item_ok()),
                    entry: Some(entry_to_proto(&e, mask.as_ref())),
                },
                Err(s) => batch_update_entry_response::Result {
                    status: Some(s),
                    entry: None,
                },
            })
            .collect();
        Ok(Response::new(BatchUpdateEntryResponse { results }))
    }

    async fn batch_delete_entry(
        &self,
        request: Request<BatchDeleteEntryRequest>,
    ) -> Result<Response<BatchDeleteEntryResponse>, Status> {
        let req = request.into_inner();
        self.check_batch(req.ids.len())?;
        let mut slots = Vec::with_capacity(req.ids.len());
        let mut valid = Vec::new();
        for id in &req.ids {
            match convert::entry_id("ids", id) {
                Ok(id) => {
                    valid.push(id);
                    slots.push(None);
                }
                Err(e) => slots.push(Some(Err(e.to_item_status()))),
            }
        }
        let replies = if valid.is_empty() {
            vec![]
        } else {
            match self.command(RegistryCommand::Delete(valid)).await? {
                RegistryReply::Deleted(results) => results
                    .into_iter()
                    .map(|r| r.map_err(|e| e.to_item_status()))
                    .collect(),
                other => return Err(unexpected(&other)),
            }
        };
        let results = merge(slots, replies)
            .into_iter()
            .zip(&req.ids)
            .map(|(r, asked)| match r {
                Ok(id) => batch_delete_entry_response::Result {
                    status: Some(item_ok()),
                    id: id.as_str().to_owned(),
                },
                Err(s) => batch_delete_entry_response::Result {
                    status: Some(s),
                    id: asked.clone(),
                },
            })
            .collect();
        Ok(Response::new(BatchDeleteEntryResponse { results }))
    }
}

fn unexpected(reply: &RegistryReply) -> Status {
    Status::internal(format!(
        "registry answered with the wrong reply kind: {reply:?}"
    ))
}
