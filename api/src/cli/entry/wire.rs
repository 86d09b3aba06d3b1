//! Entries from flags: the wire entry and mask of `create`/`update`, the filter of
//! `show`/`count`, and the flags given (which `--data` refuses). Every error names the flag.

use tessera_identity::{EntryId, SpiffeId, SERVER_PATH};
use tessera_proto::spire::api::server::entry::v1::list_entries_request;
use tessera_proto::spire::api::types;

use super::{EntryFields, FilterArgs};
use crate::cli::common::{self, CliError};
use crate::convert::{selector_to_proto, spiffe_id_to_proto};

pub fn entry_id(verb: &'static str, value: &str) -> Result<EntryId, CliError> {
    EntryId::new(value).map_err(|e| CliError::Flag {
        verb,
        flag: "--entryID",
        value: value.to_owned(),
        reason: e.to_string(),
    })
}

fn server_id(of: &SpiffeId) -> Result<SpiffeId, CliError> {
    SpiffeId::from_path(of.trust_domain(), SERVER_PATH).map_err(|e| CliError::Usage {
        verb: "entry",
        message: e.to_string(),
    })
}

/// Builds the wire entry and the mask of the fields given.
pub fn to_wire(
    verb: &'static str,
    f: &EntryFields,
) -> Result<(types::Entry, types::EntryMask), CliError> {
    let mut e = types::Entry::default();
    let mut m = types::EntryMask::default();
    let spiffe_id = f
        .spiffe_id
        .as_deref()
        .map(|v| common::spiffe_id(verb, "--spiffeID", v))
        .transpose()?;
    if let Some(id) = &spiffe_id {
        e.spiffe_id = Some(spiffe_id_to_proto(id));
        m.spiffe_id = true;
    }
    if f.node && f.parent_id.is_some() {
        return Err(CliError::Usage {
            verb,
            message: "--node and --parentID cannot be used together (--node sets the parent to the server)".into(),
        });
    }
    if f.node {
        let of = spiffe_id.as_ref().ok_or_else(|| CliError::Usage {
            verb,
            message: "--node needs --spiffeID (the server ID is in its trust domain)".into(),
        })?;
        e.parent_id = Some(spiffe_id_to_proto(&server_id(of)?));
        m.parent_id = true;
    } else if let Some(v) = &f.parent_id {
        e.parent_id = Some(spiffe_id_to_proto(&common::spiffe_id(
            verb,
            "--parentID",
            v,
        )?));
        m.parent_id = true;
    }
    if !f.selectors.is_empty() {
        e.selectors = f
            .selectors
            .iter()
            .map(|s| common::selector(verb, "--selector", s).map(|s| selector_to_proto(&s)))
            .collect::<Result<_, _>>()?;
        m.selectors = true;
    }
    if let Some(v) = &f.x509_svid_ttl {
        e.x509_svid_ttl = common::ttl_secs(verb, "--x509SVIDTTL", v)?;
        m.x509_svid_ttl = true;
    }
    if let Some(v) = &f.jwt_svid_ttl {
        e.jwt_svid_ttl = common::ttl_secs(verb, "--jwtSVIDTTL", v)?;
        m.jwt_svid_ttl = true;
    }
    if !f.dns.is_empty() {
        e.dns_names = f.dns.clone();
        m.dns_names = true;
    }
    if !f.federates_with.is_empty() {
        e.federates_with = f
            .federates_with
            .iter()
            .map(|td| {
                common::trust_domain(verb, "--federatesWith", td).map(|td| td.as_str().to_owned())
            })
            .collect::<Result<_, _>>()?;
        m.federates_with = true;
    }
    if let Some(v) = f.admin {
        e.admin = v;
        m.admin = true;
    }
    if let Some(v) = f.downstream {
        e.downstream = v;
        m.downstream = true;
    }
    if let Some(v) = &f.hint {
        e.hint = v.clone();
        m.hint = true;
    }
    if let Some(v) = &f.entry_expiry {
        e.expires_at = common::timestamp(verb, "--entryExpiry", v)?;
        m.expires_at = true;
    }
    Ok((e, m))
}

pub fn filter(
    verb: &'static str,
    f: &FilterArgs,
) -> Result<list_entries_request::Filter, CliError> {
    let mut w = list_entries_request::Filter::default();
    if let Some(v) = &f.spiffe_id {
        w.by_spiffe_id = Some(spiffe_id_to_proto(&common::spiffe_id(
            verb,
            "--spiffeID",
            v,
        )?));
    }
    if let Some(v) = &f.parent_id {
        w.by_parent_id = Some(spiffe_id_to_proto(&common::spiffe_id(
            verb,
            "--parentID",
            v,
        )?));
    }
    if !f.selectors.is_empty() {
        w.by_selectors = Some(types::SelectorMatch {
            selectors: f
                .selectors
                .iter()
                .map(|s| common::selector(verb, "--selector", s).map(|s| selector_to_proto(&s)))
                .collect::<Result<_, _>>()?,
            r#match: f.match_selectors_on.wire(),
        });
    }
    if !f.federates_with.is_empty() {
        w.by_federates_with = Some(types::FederatesWithMatch {
            trust_domains: f
                .federates_with
                .iter()
                .map(|td| {
                    common::trust_domain(verb, "--federatesWith", td)
                        .map(|td| td.as_str().to_owned())
                })
                .collect::<Result<_, _>>()?,
            r#match: f.match_federates_with_on.wire(),
        });
    }
    w.by_hint = f.hint.clone();
    w.by_downstream = f.downstream;
    Ok(w)
}

/// The entry flags given, by name: `--data` takes every field from its file instead.
pub fn given_flags(f: &EntryFields) -> Vec<&'static str> {
    let mut given = Vec::new();
    for (set, name) in [
        (f.spiffe_id.is_some(), "--spiffeID"),
        (f.parent_id.is_some(), "--parentID"),
        (!f.selectors.is_empty(), "--selector"),
        (f.x509_svid_ttl.is_some(), "--x509SVIDTTL"),
        (f.jwt_svid_ttl.is_some(), "--jwtSVIDTTL"),
        (!f.dns.is_empty(), "--dns"),
        (!f.federates_with.is_empty(), "--federatesWith"),
        (f.admin.is_some(), "--admin"),
        (f.downstream.is_some(), "--downstream"),
        (f.node, "--node"),
        (f.hint.is_some(), "--hint"),
        (f.entry_expiry.is_some(), "--entryExpiry"),
    ] {
        if set {
            given.push(name);
        }
    }
    given
}
