//! The Federation aggregate: relationships with foreign trust domains and their bundles
//! (SPIFFE Federation; SPIRE's `trustdomain.v1` and the federated half of `bundle.v1`).
//!
//! A relationship says where a foreign trust domain publishes its bundle and how that endpoint
//! authenticates (`https_web`: Web PKI; `https_spiffe`: an X.509-SVID of a named SPIFFE ID,
//! checked against the bundle already held). A federated bundle is the foreign trust domain's
//! trust material, set by hand (`bundle set`), bootstrapped with a relationship, or refreshed
//! from its endpoint. Every change is an event; a refresh that fetched the same bundle again
//! records nothing, so several servers refreshing the same relationship write once.
//!
//! Fetching is not here (no I/O): the server process refreshes, and hands each fetched bundle
//! in as [`FederationCommand::Refreshed`]. What agents need leaves through the
//! [`FederationView`] published after every federation event this aggregate folds (the sync
//! stream sends federated bundles to agents; the refresher follows relationships).
//!
//! Must not: reach out to a network, read the clock, or know which entries federate with a
//! trust domain (the admin API checks that before deleting a bundle).

mod handle;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tessera_identity::{Bundle, SpiffeId, TrustDomain};
use tokio::sync::watch;

use crate::server::aggregate::{Aggregate, Context, Decision};
use crate::server::events::ServerEvent;

pub use self::handle::FederationHandle;

/// Longest bundle endpoint URL accepted.
pub const MAX_URL_LEN: usize = 2_048;

/// How a bundle endpoint authenticates itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndpointProfile {
    /// A Web PKI certificate for the URL's host, checked against the system's roots.
    HttpsWeb,
    /// An X.509-SVID with this SPIFFE ID, checked against the bundle of the ID's trust domain
    /// already held (bootstrapped by hand, then refreshed).
    HttpsSpiffe {
        /// The ID the endpoint must present (`spiffe://<td>/spire/server` for SPIRE and
        /// Tessera servers).
        endpoint_spiffe_id: SpiffeId,
    },
}

impl EndpointProfile {
    /// SPIRE's name of the profile (`https_web`, `https_spiffe`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::HttpsWeb => "https_web",
            Self::HttpsSpiffe { .. } => "https_spiffe",
        }
    }
}

/// A federation relationship with one foreign trust domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relationship {
    /// The foreign trust domain.
    pub trust_domain: TrustDomain,
    /// Where it publishes its bundle (`https://host[:port]/path`).
    pub bundle_endpoint_url: String,
    /// How that endpoint authenticates.
    pub profile: EndpointProfile,
}

impl Relationship {
    /// Checks the URL: `https`, a host, bounded length, no whitespace or userinfo.
    ///
    /// # Errors
    /// [`FederationError::BadUrl`] naming what is wrong.
    pub fn check(&self) -> Result<(), FederationError> {
        check_url(&self.bundle_endpoint_url)
    }
}

fn check_url(url: &str) -> Result<(), FederationError> {
    let bad = |reason: &str| FederationError::BadUrl {
        url: url.chars().take(200).collect(),
        reason: reason.to_owned(),
    };
    if url.len() > MAX_URL_LEN {
        return Err(bad(&format!("longer than {MAX_URL_LEN} bytes")));
    }
    let Some(rest) = url.strip_prefix("https://") else {
        return Err(bad("a bundle endpoint URL must start with https://"));
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("contains whitespace or control characters"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(bad("user information (`user@`) is not allowed"));
    }
    if authority.is_empty() || authority.starts_with(':') {
        return Err(bad("has no host"));
    }
    Ok(())
}

/// What the rest of the server reads: every relationship and federated bundle. Bundles are
/// shared, not copied: a view is published after every federation event and every agent's
/// sync stream holds the one it last sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FederationView {
    /// Relationships by foreign trust domain.
    pub relationships: BTreeMap<TrustDomain, Relationship>,
    /// Federated bundles by trust domain.
    pub bundles: BTreeMap<TrustDomain, Arc<Bundle>>,
}

/// Bounds and identity, set when the actor starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FederationSettings {
    /// This server's trust domain: never a federated one.
    pub own: Option<TrustDomain>,
    /// Most relationships (`limits.federation.max_relationships`).
    pub max_relationships: usize,
    /// Most federated bundles (`limits.federation.max_bundles`).
    pub max_bundles: usize,
}

impl Default for FederationSettings {
    fn default() -> Self {
        Self {
            own: None,
            max_relationships: 1_000,
            max_bundles: 1_000,
        }
    }
}

/// How a bundle put treats an existing bundle (SPIRE's create / update / set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutMode {
    /// Only if none is held (`BatchCreateFederatedBundle`).
    Create,
    /// Only if one is held (`BatchUpdateFederatedBundle`).
    Update,
    /// Either way (`BatchSetFederatedBundle`, `bundle set`).
    Set,
}

/// Commands of the federation aggregate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FederationCommand {
    /// A new relationship, with an optional bootstrap bundle (stored as the federated bundle).
    CreateRelationship {
        /// The relationship.
        relationship: Relationship,
        /// The foreign bundle to start from (required in practice for `https_spiffe`).
        bundle: Option<Bundle>,
    },
    /// Replaces an existing relationship's endpoint and profile; `bundle`, if set, replaces
    /// the federated bundle too.
    UpdateRelationship {
        /// The relationship as it must be.
        relationship: Relationship,
        /// A bundle to store with it.
        bundle: Option<Bundle>,
    },
    /// Ends a relationship. Its bundle stays (delete it with [`Self::DeleteBundle`]), as SPIRE.
    DeleteRelationship {
        /// The foreign trust domain.
        trust_domain: TrustDomain,
    },
    /// A bundle set by hand or through the API.
    PutBundle {
        /// The bundle (its trust domain says whose).
        bundle: Bundle,
        /// Create, update or set.
        mode: PutMode,
    },
    /// A bundle fetched from the relationship's endpoint: stored if its authorities differ
    /// from the ones held (a new sequence number or refresh hint alone records nothing, so an
    /// endpoint cannot grow the log by bumping them); refused if the relationship is gone or
    /// is no longer `from` (a refresh racing a delete or an update: a bundle fetched from an
    /// endpoint an admin just replaced is not stored).
    Refreshed {
        /// The fetched bundle.
        bundle: Bundle,
        /// The relationship it was fetched for.
        from: Relationship,
    },
    /// Deletes a federated bundle.
    DeleteBundle {
        /// Its trust domain.
        trust_domain: TrustDomain,
    },
}

/// Successful outcomes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FederationReply {
    /// The relationship as stored.
    Relationship(Relationship),
    /// The bundle as stored.
    Bundle(Bundle),
    /// A refresh found the bundle unchanged: nothing recorded.
    Unchanged,
    /// Deleted.
    Deleted,
}

/// Why a federation command was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FederationError {
    /// The trust domain is this server's own.
    #[error("{trust_domain} is this server's own trust domain: a server does not federate with itself (use another trust domain, or `bundle show` for its own bundle)")]
    OwnTrustDomain {
        /// It.
        trust_domain: TrustDomain,
    },
    /// A relationship with the trust domain exists.
    #[error(
        "a federation relationship with {trust_domain} already exists; use `federation update`"
    )]
    RelationshipExists {
        /// The trust domain.
        trust_domain: TrustDomain,
    },
    /// No relationship with the trust domain.
    #[error("no federation relationship with {trust_domain}; `federation list` shows them, `federation create` makes one")]
    RelationshipNotFound {
        /// The trust domain.
        trust_domain: TrustDomain,
    },
    /// A federated bundle of the trust domain exists.
    #[error("a federated bundle of {trust_domain} already exists; use `bundle set` to replace it")]
    BundleExists {
        /// The trust domain.
        trust_domain: TrustDomain,
    },
    /// No federated bundle of the trust domain.
    #[error("no federated bundle of {trust_domain}; `bundle list` shows them")]
    BundleNotFound {
        /// The trust domain.
        trust_domain: TrustDomain,
    },
    /// A bundle given with a relationship is of another trust domain.
    #[error("the bundle given for {relationship} is of trust domain {bundle}; give {relationship}'s bundle")]
    BundleMismatch {
        /// The relationship's trust domain.
        relationship: TrustDomain,
        /// The bundle's.
        bundle: TrustDomain,
    },
    /// A bundle with no authority at all.
    #[error("the bundle of {trust_domain} has no X.509 or JWT authority; it would trust nothing")]
    EmptyBundle {
        /// Its trust domain.
        trust_domain: TrustDomain,
    },
    /// The bundle endpoint URL is unusable.
    #[error("bundle endpoint URL {url:?}: {reason}")]
    BadUrl {
        /// The URL (first 200 characters).
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A fetched bundle came from a relationship that has since been updated.
    #[error("the federation relationship with {trust_domain} changed while its bundle was being fetched; the bundle from the old endpoint is not stored (the next refresh uses the new one)")]
    RelationshipChanged {
        /// The trust domain.
        trust_domain: TrustDomain,
    },
    /// `limits.federation.max_relationships` reached.
    #[error("{limit} federation relationships exist (limits.federation.max_relationships); delete one first or raise the limit")]
    TooManyRelationships {
        /// The limit.
        limit: usize,
    },
    /// `limits.federation.max_bundles` reached.
    #[error("{limit} federated bundles exist (limits.federation.max_bundles); delete one first or raise the limit")]
    TooManyBundles {
        /// The limit.
        limit: usize,
    },
}

/// Relationships and federated bundles.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Federation {
    relationships: BTreeMap<TrustDomain, Relationship>,
    bundles: BTreeMap<TrustDomain, Arc<Bundle>>,
    #[serde(skip)]
    settings: FederationSettings,
    /// Where the view goes after each federation event (the actor's copy only).
    #[serde(skip)]
    publish: Option<watch::Sender<Arc<FederationView>>>,
}

impl Federation {
    /// Sets the bounds, and the channel the view is published on (now, and after every
    /// federation event folded from here on).
    pub fn configure(
        &mut self,
        settings: FederationSettings,
        publish: Option<watch::Sender<Arc<FederationView>>>,
    ) {
        self.settings = settings;
        self.publish = publish;
        self.publish_view();
    }

    /// The relationship with `trust_domain`.
    pub fn relationship(&self, trust_domain: &TrustDomain) -> Option<&Relationship> {
        self.relationships.get(trust_domain)
    }

    /// Every relationship, by trust domain.
    pub fn relationships(&self) -> &BTreeMap<TrustDomain, Relationship> {
        &self.relationships
    }

    /// The federated bundle of `trust_domain`.
    pub fn bundle(&self, trust_domain: &TrustDomain) -> Option<&Bundle> {
        self.bundles.get(trust_domain).map(Arc::as_ref)
    }

    /// Every federated bundle, by trust domain.
    pub fn bundles(&self) -> &BTreeMap<TrustDomain, Arc<Bundle>> {
        &self.bundles
    }

    /// A copy of what readers see.
    pub fn view(&self) -> FederationView {
        FederationView {
            relationships: self.relationships.clone(),
            bundles: self.bundles.clone(),
        }
    }

    fn publish_view(&self) {
        if let Some(tx) = &self.publish {
            tx.send_replace(Arc::new(self.view()));
        }
    }

    fn not_own(&self, trust_domain: &TrustDomain) -> Result<(), FederationError> {
        match &self.settings.own {
            Some(own) if own == trust_domain => Err(FederationError::OwnTrustDomain {
                trust_domain: trust_domain.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// The event storing `bundle` for a relationship, checked; `None` if it is the bundle held.
    fn bundle_event(
        &self,
        relationship: &TrustDomain,
        bundle: Bundle,
    ) -> Result<Option<ServerEvent>, FederationError> {
        if bundle.trust_domain() != relationship {
            return Err(FederationError::BundleMismatch {
                relationship: relationship.clone(),
                bundle: bundle.trust_domain().clone(),
            });
        }
        self.check_bundle(&bundle)?;
        if self.bundle(relationship) == Some(&bundle) {
            return Ok(None);
        }
        Ok(Some(ServerEvent::FederatedBundleSet(bundle)))
    }

    fn check_bundle(&self, bundle: &Bundle) -> Result<(), FederationError> {
        let td = bundle.trust_domain();
        self.not_own(td)?;
        if bundle.is_empty() {
            return Err(FederationError::EmptyBundle {
                trust_domain: td.clone(),
            });
        }
        if !self.bundles.contains_key(td) && self.bundles.len() >= self.settings.max_bundles {
            return Err(FederationError::TooManyBundles {
                limit: self.settings.max_bundles,
            });
        }
        Ok(())
    }

    fn decide_relationship(
        &self,
        relationship: Relationship,
        bundle: Option<Bundle>,
        create: bool,
    ) -> Result<Decision<FederationReply>, FederationError> {
        let td = relationship.trust_domain.clone();
        self.not_own(&td)?;
        relationship.check()?;
        let exists = self.relationships.contains_key(&td);
        match (create, exists) {
            (true, true) => return Err(FederationError::RelationshipExists { trust_domain: td }),
            (false, false) => {
                return Err(FederationError::RelationshipNotFound { trust_domain: td })
            }
            (true, false) if self.relationships.len() >= self.settings.max_relationships => {
                return Err(FederationError::TooManyRelationships {
                    limit: self.settings.max_relationships,
                })
            }
            _ => {}
        }
        let mut events = Vec::new();
        if self.relationships.get(&td) != Some(&relationship) {
            events.push(if create {
                ServerEvent::FederationRelationshipCreated(relationship.clone())
            } else {
                ServerEvent::FederationRelationshipUpdated(relationship.clone())
            });
        }
        if let Some(bundle) = bundle {
            events.extend(self.bundle_event(&td, bundle)?);
        }
        Ok(Decision {
            events,
            reply: FederationReply::Relationship(relationship),
        })
    }
}

/// Whether two bundles hold the same X.509 and JWT authorities, in any order (sequence number
/// and refresh hint aside): an endpoint that lists its keys in another order each time must
/// not record a new bundle each time.
fn same_authorities(a: &Bundle, b: &Bundle) -> bool {
    fn same_set<T: PartialEq>(a: &[T], b: &[T]) -> bool {
        a.len() == b.len() && a.iter().all(|x| b.contains(x))
    }
    same_set(a.x509_authorities(), b.x509_authorities())
        && same_set(a.jwt_authorities(), b.jwt_authorities())
}

impl Aggregate for Federation {
    type Command = FederationCommand;
    type Reply = FederationReply;
    type Error = FederationError;

    const NAME: &'static str = "federation";

    fn decide(
        &self,
        command: FederationCommand,
        _ctx: &Context,
    ) -> Result<Decision<FederationReply>, FederationError> {
        match command {
            FederationCommand::CreateRelationship {
                relationship,
                bundle,
            } => self.decide_relationship(relationship, bundle, true),
            FederationCommand::UpdateRelationship {
                relationship,
                bundle,
            } => self.decide_relationship(relationship, bundle, false),
            FederationCommand::DeleteRelationship { trust_domain } => {
                if !self.relationships.contains_key(&trust_domain) {
                    return Err(FederationError::RelationshipNotFound { trust_domain });
                }
                Ok(Decision {
                    events: vec![ServerEvent::FederationRelationshipDeleted { trust_domain }],
                    reply: FederationReply::Deleted,
                })
            }
            FederationCommand::PutBundle { bundle, mode } => {
                let td = bundle.trust_domain().clone();
                let exists = self.bundles.contains_key(&td);
                match (mode, exists) {
                    (PutMode::Create, true) => {
                        return Err(FederationError::BundleExists { trust_domain: td })
                    }
                    (PutMode::Update, false) => {
                        return Err(FederationError::BundleNotFound { trust_domain: td })
                    }
                    _ => {}
                }
                let events = self.bundle_event(&td, bundle.clone())?;
                Ok(Decision {
                    events: events.into_iter().collect(),
                    reply: FederationReply::Bundle(bundle),
                })
            }
            FederationCommand::Refreshed { bundle, from } => {
                let td = from.trust_domain.clone();
                match self.relationships.get(&td) {
                    None => return Err(FederationError::RelationshipNotFound { trust_domain: td }),
                    Some(now) if *now != from => {
                        return Err(FederationError::RelationshipChanged { trust_domain: td })
                    }
                    Some(_) => {}
                }
                if bundle.trust_domain() == &td
                    && self
                        .bundle(&td)
                        .is_some_and(|held| same_authorities(held, &bundle))
                {
                    return Ok(Decision::no_change(FederationReply::Unchanged));
                }
                Ok(match self.bundle_event(&td, bundle.clone())? {
                    Some(event) => Decision {
                        events: vec![event],
                        reply: FederationReply::Bundle(bundle),
                    },
                    None => Decision::no_change(FederationReply::Unchanged),
                })
            }
            FederationCommand::DeleteBundle { trust_domain } => {
                if !self.bundles.contains_key(&trust_domain) {
                    return Err(FederationError::BundleNotFound { trust_domain });
                }
                Ok(Decision {
                    events: vec![ServerEvent::FederatedBundleDeleted { trust_domain }],
                    reply: FederationReply::Deleted,
                })
            }
        }
    }

    fn apply(&mut self, event: &ServerEvent) {
        match event {
            ServerEvent::FederationRelationshipCreated(r)
            | ServerEvent::FederationRelationshipUpdated(r) => {
                self.relationships.insert(r.trust_domain.clone(), r.clone());
            }
            ServerEvent::FederationRelationshipDeleted { trust_domain } => {
                self.relationships.remove(trust_domain);
            }
            ServerEvent::FederatedBundleSet(b) => {
                self.bundles
                    .insert(b.trust_domain().clone(), Arc::new(b.clone()));
            }
            ServerEvent::FederatedBundleDeleted { trust_domain } => {
                self.bundles.remove(trust_domain);
            }
            _ => return,
        }
        self.publish_view();
    }
}
