//! Relationships of the config file at start: created with their bootstrap bundle, updated
//! when the file changes, and nothing recorded when they already match.

use tessera_eventlog::EventLog;
use tessera_server::config::federation::ConfiguredRelationship;
use tessera_server::federation::startup::{apply_configured, FederationStartError};

use crate::support::{clock, Domain};

#[tokio::test]
async fn configured_relationships_are_created_updated_and_left_alone() {
    let clock = clock();
    let a = Domain::start("a.test", clock.clone()).await;
    let b = Domain::start("b.test", clock.clone()).await;
    let fed = &b.server.federation;
    let mut configured = vec![ConfiguredRelationship {
        relationship: a.spiffe_relationship("https://127.0.0.1:8443/"),
        bootstrap: Some(a.bundle()),
    }];
    apply_configured(fed, &configured).await.unwrap();
    let view = fed.view();
    assert_eq!(view.relationships[&a.td], configured[0].relationship);
    assert_eq!(*view.bundles[&a.td], a.bundle());

    // Unchanged: no event.
    let head = b.log.head().seq;
    apply_configured(fed, &configured).await.unwrap();
    assert_eq!(b.log.head().seq, head);

    // The file changed: updated; the held bundle is not replaced by the bootstrap one.
    configured[0].relationship.bundle_endpoint_url = "https://127.0.0.1:9443/".into();
    configured[0].bootstrap = Some(b.bundle_as(&a.td));
    apply_configured(fed, &configured).await.unwrap();
    let view = fed.view();
    assert_eq!(
        view.relationships[&a.td].bundle_endpoint_url,
        "https://127.0.0.1:9443/"
    );
    assert_eq!(*view.bundles[&a.td], a.bundle());

    // The aggregate's refusals name the table.
    let own = vec![ConfiguredRelationship {
        relationship: b.spiffe_relationship("https://127.0.0.1:1/"),
        bootstrap: None,
    }];
    let e = apply_configured(fed, &own).await.unwrap_err();
    assert!(
        matches!(e, FederationStartError::Relationship { .. }),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("federation.federates_with.\"b.test\""),
        "{e}"
    );
    a.stop().await;
    b.stop().await;
}
