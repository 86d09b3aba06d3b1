//! FetchJWTSVID and ValidateJWTSVID.

use prost_types::value::Kind;
use tessera_proto::workload::{JwtsvidRequest, ValidateJwtsvidRequest, ValidateJwtsvidResponse};
use tonic::{Code, Status};

use crate::support::*;

async fn validate(
    agent: &TestAgent,
    audience: &str,
    token: &str,
) -> Result<ValidateJwtsvidResponse, Status> {
    let req = ValidateJwtsvidRequest {
        audience: audience.into(),
        svid: token.into(),
    };
    within(
        "ValidateJWTSVID",
        agent.client().await.validate_jwtsvid(req),
    )
    .await
    .map(tonic::Response::into_inner)
}

fn fetch(audience: &[&str], spiffe_id: &str) -> JwtsvidRequest {
    JwtsvidRequest {
        audience: audience.iter().map(|a| (*a).to_owned()).collect(),
        spiffe_id: spiffe_id.into(),
    }
}

#[tokio::test]
async fn fetched_tokens_validate_with_spiffe_id_and_claims() {
    let world = World::new();
    world.add("entry-2", "spiffe://example.org/second", &[&my_selector()]);
    let agent = TestAgent::start(world.source.clone()).await;
    let mut c = agent.client().await;

    let all = c
        .fetch_jwtsvid(fetch(&["db", "cache"], ""))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = all.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
    assert_eq!(ids, [WORKLOAD, "spiffe://example.org/second"]);

    let one = c
        .fetch_jwtsvid(fetch(&["db"], "spiffe://example.org/second"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.svids.len(), 1);
    assert_eq!(one.svids[0].spiffe_id, "spiffe://example.org/second");

    let r = validate(&agent, "cache", &all.svids[0].svid).await.unwrap();
    assert_eq!(r.spiffe_id, WORKLOAD);
    let claims = r.claims.unwrap().fields;
    assert_eq!(claims["sub"].kind, Some(Kind::StringValue(WORKLOAD.into())));
    let Some(Kind::ListValue(aud)) = &claims["aud"].kind else {
        panic!("aud: {:?}", claims["aud"])
    };
    assert_eq!(aud.values.len(), 2);
    let Some(Kind::NumberValue(exp)) = claims["exp"].kind else {
        panic!("exp")
    };
    assert!(exp > now() as f64);
    assert!(claims.contains_key("iat"));
}

#[tokio::test]
async fn fetch_refuses_bad_requests_and_foreign_ids() {
    let world = World::new();
    world.add(
        "entry-2",
        "spiffe://example.org/not-mine",
        &[&other_selector()],
    );
    let agent = TestAgent::start(world.source.clone()).await;
    let mut c = agent.client().await;
    let code = |r: Result<tonic::Response<_>, Status>| r.map(|_| ()).unwrap_err();
    let s = code(c.fetch_jwtsvid(fetch(&[], "")).await);
    assert_eq!(
        (s.code(), s.message()),
        (
            Code::InvalidArgument,
            "audience: audience must be specified"
        )
    );
    assert_eq!(
        code(c.fetch_jwtsvid(fetch(&[""], "")).await).code(),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.fetch_jwtsvid(fetch(&["a"], "not a spiffe id")).await).code(),
        Code::InvalidArgument
    );
    let s = code(
        c.fetch_jwtsvid(fetch(&["a"], "spiffe://example.org/not-mine"))
            .await,
    );
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    let many: Vec<String> = (0..33).map(|i| format!("aud{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let s = code(c.fetch_jwtsvid(fetch(&many, "")).await);
    assert_eq!(s.code(), Code::ResourceExhausted);
    assert!(s.message().contains("limits.max_audiences"), "{s:?}");
}

#[tokio::test]
async fn validation_failures_are_invalid_argument_with_the_reason() {
    let world = World::new();
    let agent = TestAgent::start(world.source.clone()).await;
    let good = world
        .source
        .sign_with(|k| k.svid(WORKLOAD, &["db"], now() + 300));
    assert!(validate(&agent, "db", &good).await.is_ok());

    let refused = |r: Result<ValidateJwtsvidResponse, Status>| {
        let s = r.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        s.message().to_owned()
    };
    // Bad signature: the signature of another token over the same header and claims shape.
    let other = world
        .source
        .sign_with(|k| k.svid(WORKLOAD, &["db"], now() + 301));
    let (head, _) = good.rsplit_once('.').unwrap();
    let (_, other_sig) = other.rsplit_once('.').unwrap();
    let forged = format!("{head}.{other_sig}");
    assert_eq!(
        refused(validate(&agent, "db", &forged).await),
        "token signature is invalid"
    );
    // Signed by a key the bundle does not hold, under a kid it does.
    let impostor = JwtKey::es256("jwt-key-1").svid(WORKLOAD, &["db"], now() + 300);
    assert_eq!(
        refused(validate(&agent, "db", &impostor).await),
        "token signature is invalid"
    );
    // Wrong audience.
    let m = refused(validate(&agent, "payments", &good).await);
    assert!(m.contains("expected audience \"payments\""), "{m}");
    // Expired.
    let expired = world
        .source
        .sign_with(|k| k.svid(WORKLOAD, &["db"], now() - 10));
    assert_eq!(
        refused(validate(&agent, "db", &expired).await),
        "token has expired"
    );
    // Not yet valid.
    let early = world.source.sign_with(|k| k.sign(&serde_json::json!({"sub": WORKLOAD, "aud": "db", "exp": now() + 300, "nbf": now() + 100})));
    assert_eq!(
        refused(validate(&agent, "db", &early).await),
        "token is not valid yet"
    );
    // Unknown key id.
    let unknown = JwtKey::es256("jwt-key-9").svid(WORKLOAD, &["db"], now() + 300);
    assert!(refused(validate(&agent, "db", &unknown).await).contains("jwt-key-9"));
    // Missing exp; sub not a SPIFFE ID; a trust domain the caller has no bundle of.
    let no_exp = world
        .source
        .sign_with(|k| k.sign(&serde_json::json!({"sub": WORKLOAD, "aud": "db"})));
    assert!(refused(validate(&agent, "db", &no_exp).await).contains("exp"));
    let bad_sub = world
        .source
        .sign_with(|k| k.svid("https://example.org/x", &["db"], now() + 300));
    assert!(refused(validate(&agent, "db", &bad_sub).await).contains("not a SPIFFE ID"));
    let foreign = world
        .source
        .sign_with(|k| k.svid("spiffe://partner.org/x", &["db"], now() + 300));
    assert!(refused(validate(&agent, "db", &foreign).await).contains("partner.org"));
    // Garbage.
    assert!(refused(validate(&agent, "db", "not-a-token").await).contains("malformed"));
    // Empty fields.
    assert_eq!(
        validate(&agent, "", &good).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        validate(&agent, "db", "").await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(agent.metrics.calls("ValidateJWTSVID", "OK"), 1);
}

#[tokio::test]
async fn tokens_of_federated_domains_and_es384_keys_validate() {
    let world = World::new();
    let partner = TestCa::new("partner.org");
    let partner_key = JwtKey::es384("partner-key");
    let mut partner_bundle = partner.bundle();
    partner_bundle
        .add_jwt_authority(partner_key.authority())
        .unwrap();
    world.source.update(|s| {
        s.federated.insert(td("partner.org"), partner_bundle);
    });
    let agent = TestAgent::start(world.source.clone()).await;
    let token = partner_key.svid("spiffe://partner.org/api", &["db"], now() + 300);
    // Not federated with: the caller has no keys for partner.org.
    let s = validate(&agent, "db", &token).await.unwrap_err();
    assert!(
        s.message()
            .contains("no keys found for trust domain \"partner.org\""),
        "{s:?}"
    );
    // Federated with: accepted.
    world
        .source
        .update(|s| s.identities[0].entry.federates_with = vec![td("partner.org")]);
    let r = validate(&agent, "db", &token).await.unwrap();
    assert_eq!(r.spiffe_id, "spiffe://partner.org/api");
}
