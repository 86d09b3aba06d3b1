//! What the signer puts in an SVID besides the key: which SPIFFE IDs each signing path may
//! name, and how long the SVID lives.
//!
//! IDs under `/spire` are SPIRE's reserved space: agents (`/spire/agent/...`) and servers
//! (`/spire/server`). Agents trust an SVID for `spiffe://<td>/spire/server` as the server, so
//! only the server's own path signs it, only attestation and renewal sign agent IDs, and every
//! other path (workload batches, admin `x509 mint` and `jwt mint`, JWT-SVIDs) refuses them, as
//! entry validation does.

use std::time::Duration;

use tessera_identity::{SpiffeId, TrustDomain, RESERVED_PATH, SERVER_PATH};

use super::SvidRejection;

/// Whom an SVID is for: decides which SPIFFE IDs a request may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Subject {
    /// A workload (agent batches, admin mints, JWT-SVIDs): never under `/spire`.
    Workload,
    /// An agent (attestation, renewal): under `/spire/agent/`.
    Agent,
    /// The server itself: exactly `/spire/server`.
    Server,
}

/// The path prefix of agent IDs.
const AGENT_PREFIX: &str = "/spire/agent/";

/// Checks that `id` is in `td`, names something, and is one `subject` may have.
///
/// # Errors
/// The [`SvidRejection`] naming the rule.
pub(crate) fn check_id(
    td: &TrustDomain,
    id: &SpiffeId,
    subject: Subject,
) -> Result<(), SvidRejection> {
    if !id.is_member_of(td) {
        return Err(SvidRejection::ForeignSpiffeId {
            spiffe_id: id.clone(),
            trust_domain: td.clone(),
        });
    }
    if id.is_trust_domain_id() {
        return Err(SvidRejection::RootSpiffeId {
            spiffe_id: id.clone(),
        });
    }
    let reserved = id.segments().next() == RESERVED_PATH.strip_prefix('/');
    match subject {
        Subject::Workload if reserved => Err(SvidRejection::ReservedSpiffeId {
            spiffe_id: id.clone(),
        }),
        Subject::Agent if !id.path().starts_with(AGENT_PREFIX) => {
            Err(SvidRejection::NotAnAgentId {
                spiffe_id: id.clone(),
            })
        }
        Subject::Server if id.path() != SERVER_PATH => Err(SvidRejection::NotTheServerId {
            spiffe_id: id.clone(),
        }),
        _ => Ok(()),
    }
}

/// An SVID's lifetime: the one requested (`None` or zero: `default`), at most `max`. The
/// caller caps it further at the signing CA's or key's expiry.
pub(crate) fn lifetime(requested: Option<Duration>, default: Duration, max: Duration) -> Duration {
    let asked = match requested {
        Some(t) if !t.is_zero() => t,
        _ => default,
    };
    asked.min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::new(s).unwrap()
    }

    #[test]
    fn reserved_ids_only_on_their_own_paths() {
        let td = TrustDomain::new("example.org").unwrap();
        let server = id("spiffe://example.org/spire/server");
        let agent = id("spiffe://example.org/spire/agent/join_token/abc");
        let web = id("spiffe://example.org/web");
        let spire_web = id("spiffe://example.org/spire/web");
        for reserved in [&server, &agent, &spire_web] {
            let e = check_id(&td, reserved, Subject::Workload).unwrap_err();
            assert!(matches!(e, SvidRejection::ReservedSpiffeId { .. }), "{e}");
            assert!(e.to_string().contains("reserved"), "{e}");
        }
        assert_eq!(check_id(&td, &web, Subject::Workload), Ok(()));
        // "/spiregate" is not under "/spire".
        assert_eq!(
            check_id(
                &td,
                &id("spiffe://example.org/spiregate"),
                Subject::Workload
            ),
            Ok(())
        );
        assert_eq!(check_id(&td, &agent, Subject::Agent), Ok(()));
        for not_agent in [&server, &web] {
            assert!(matches!(
                check_id(&td, not_agent, Subject::Agent),
                Err(SvidRejection::NotAnAgentId { .. })
            ));
        }
        assert_eq!(check_id(&td, &server, Subject::Server), Ok(()));
        for not_server in [&agent, &web] {
            assert!(matches!(
                check_id(&td, not_server, Subject::Server),
                Err(SvidRejection::NotTheServerId { .. })
            ));
        }
    }

    #[test]
    fn lifetime_is_the_request_or_default_at_most_the_max() {
        let s = Duration::from_secs;
        assert_eq!(lifetime(None, s(300), s(3600)), s(300));
        assert_eq!(lifetime(Some(s(0)), s(300), s(3600)), s(300));
        assert_eq!(lifetime(Some(s(60)), s(300), s(3600)), s(60));
        assert_eq!(lifetime(Some(s(i32::MAX as u64)), s(300), s(3600)), s(3600));
        assert_eq!(lifetime(None, s(7200), s(3600)), s(3600));
    }
}
