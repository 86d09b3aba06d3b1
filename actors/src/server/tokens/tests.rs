//! Given/when/then tests of join tokens.

use tessera_identity::SpiffeId;

use super::*;

fn ctx(now: i64) -> Context {
    Context {
        now,
        random: [0; 16],
    }
}

fn given(events: &[ServerEvent]) -> Tokens {
    let mut t = Tokens::default();
    for e in events {
        t.apply(e);
    }
    t
}

fn agent() -> SpiffeId {
    SpiffeId::new("spiffe://example.org/spire/agent/join_token/t1").unwrap()
}

fn created(now: i64, ttl: u32) -> ServerEvent {
    let t = Tokens::default();
    let d = t
        .decide(
            TokenCommand::Create {
                token_hash: hash_token("t1"),
                ttl_secs: ttl,
                alias: Some(SpiffeId::new("spiffe://example.org/node/a").unwrap()),
            },
            &ctx(now),
        )
        .unwrap();
    d.events.into_iter().next().unwrap()
}

#[test]
fn token_is_stored_hashed_and_single_use() {
    let ev = created(100, 600);
    assert_eq!(
        ev,
        ServerEvent::JoinTokenCreated {
            token_hash: hash_token("t1"),
            expires_at: 700,
            alias: Some(SpiffeId::new("spiffe://example.org/node/a").unwrap()),
        }
    );
    assert!(
        !format!("{ev:?}").contains("\"t1\""),
        "the token itself is not in the event"
    );
    let t = given(std::slice::from_ref(&ev));
    let consume = TokenCommand::Consume {
        token_hash: hash_token("t1"),
        agent_id: agent(),
    };
    let d = t.decide(consume.clone(), &ctx(200)).unwrap();
    assert!(matches!(d.reply, TokenReply::Consumed { alias: Some(_) }));
    let t = given(&[ev, d.events[0].clone()]);
    assert_eq!(
        t.decide(consume, &ctx(201)).unwrap_err(),
        TokenError::Unknown
    );
}

#[test]
fn expired_token_is_refused_and_pruned() {
    let t = given(&[created(100, 10)]);
    let err = t
        .decide(
            TokenCommand::Consume {
                token_hash: hash_token("t1"),
                agent_id: agent(),
            },
            &ctx(110),
        )
        .unwrap_err();
    assert_eq!(err, TokenError::Expired { expires_at: 110 });
    let d = t.decide(TokenCommand::Prune, &ctx(110)).unwrap();
    assert_eq!(d.reply, TokenReply::Pruned(1));
    let mut t = t;
    t.apply(&d.events[0]);
    assert!(t.is_empty());
}

#[test]
fn ttl_bounds_and_duplicates_are_typed_errors() {
    let t = Tokens::default();
    let mk = |ttl| TokenCommand::Create {
        token_hash: hash_token("x"),
        ttl_secs: ttl,
        alias: None,
    };
    assert!(matches!(
        t.decide(mk(0), &ctx(0)),
        Err(TokenError::Ttl { .. })
    ));
    assert!(matches!(
        t.decide(mk(MAX_TOKEN_TTL_SECS + 1), &ctx(0)),
        Err(TokenError::Ttl { .. })
    ));
    let t = given(&t.decide(mk(5), &ctx(0)).unwrap().events);
    assert_eq!(t.decide(mk(5), &ctx(0)).unwrap_err(), TokenError::Duplicate);
}
