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
    assert!(
        d.events.is_empty(),
        "checking spends nothing: the attestation spends the token"
    );
    let spent = ServerEvent::JoinTokenConsumed {
        token_hash: hash_token("t1"),
        agent_id: agent(),
    };
    let t = given(&[ev, spent]);
    assert_eq!(
        t.decide(consume, &ctx(201)).unwrap_err(),
        TokenError::Unknown
    );
}

#[test]
fn expired_tokens_are_housekeeping_pruned_in_bounded_batches() {
    let mut t = Tokens::default();
    for i in 0..PRUNE_BATCH + 3 {
        t.apply(&ServerEvent::JoinTokenCreated {
            token_hash: hash_token(&format!("token-{i}")),
            expires_at: 100,
            alias: None,
        });
    }
    t.apply(&ServerEvent::JoinTokenCreated {
        token_hash: hash_token("lasting"),
        expires_at: 1_000,
        alias: None,
    });
    assert!(t.housekeeping(99).is_none());
    assert_eq!(t.housekeeping(100), Some(TokenCommand::Prune));
    let first = t.decide(TokenCommand::Prune, &ctx(100)).unwrap();
    assert_eq!(first.reply, TokenReply::Pruned(PRUNE_BATCH));
    for e in &first.events {
        t.apply(e);
    }
    let second = t.decide(TokenCommand::Prune, &ctx(100)).unwrap();
    assert_eq!(second.reply, TokenReply::Pruned(3));
    for e in &second.events {
        t.apply(e);
    }
    assert_eq!(t.len(), 1);
    assert!(t.housekeeping(100).is_none());
}

#[test]
fn the_pending_limit_frees_up_as_tokens_expire() {
    // Before pruning existed, 100,000 unused tokens made `token generate` fail forever.
    let mut t = Tokens::default();
    for i in 0..MAX_PENDING_TOKENS {
        t.apply(&ServerEvent::JoinTokenCreated {
            token_hash: hash_token(&format!("token-{i}")),
            expires_at: 100,
            alias: None,
        });
    }
    let create = TokenCommand::Create {
        token_hash: hash_token("new"),
        ttl_secs: 600,
        alias: None,
    };
    assert!(matches!(
        t.decide(create.clone(), &ctx(200)),
        Err(TokenError::TooMany { .. })
    ));
    while let Some(command) = t.housekeeping(200) {
        for e in t.decide(command, &ctx(200)).unwrap().events {
            t.apply(&e);
        }
    }
    assert!(t.is_empty());
    assert!(t.decide(create, &ctx(200)).is_ok());
}

#[test]
fn chosen_tokens_have_a_minimum_length() {
    let e = check_chosen_token("short").unwrap_err();
    assert_eq!(e, TokenError::TooShort { len: 5, min: 16 });
    assert!(e.to_string().contains("at least 16"), "{e}");
    assert!(check_chosen_token(&"a".repeat(MIN_CHOSEN_TOKEN_LEN)).is_ok());
    // Generated tokens are UUIDs.
    assert!(check_chosen_token("0f8fad5b-d9cb-469f-a165-70867728950e").is_ok());
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
