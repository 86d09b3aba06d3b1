//! The sync stream as the agent's sync loop sees it, tied to the connection it runs on:
//!
//! - its end, or an error other than a refusal, drops the connection, so the sync loop's
//!   reconnection (after its backoff) goes to another server with the agent's cursor;
//! - a refusal (evicted, banned) is passed on untouched: the supervisor decides, as before;
//! - when the connection is dropped because a call failed over, the stream ends too, so the
//!   sync follows the calls to the new server;
//! - how the server started it (resumed from the cursor, or a snapshot) is logged with the
//!   server's address and counted;
//! - each message passed on sets the time of the last sync and the cursor gauges (the sync
//!   loop hands every message to the cache, which applies it).

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use std::sync::Arc;
use tessera_actors::agent::server_client::{ClientError, SyncMessage};

use super::link::{Connection, Link};

struct Following {
    inner: BoxStream<'static, Result<SyncMessage, ClientError>>,
    link: Arc<Link>,
    connection: Connection,
    closed: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    first: bool,
    done: bool,
}

/// `stream`, opened on `connection`, as described in the module doc.
pub(super) fn follow(
    stream: impl Stream<Item = Result<SyncMessage, ClientError>> + Send + 'static,
    link: Arc<Link>,
    connection: Connection,
) -> BoxStream<'static, Result<SyncMessage, ClientError>> {
    let state = Following {
        inner: stream.boxed(),
        link,
        closed: Box::pin(connection.closed()),
        connection,
        first: true,
        done: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        let item = tokio::select! {
            item = s.inner.next() => item,
            () = &mut s.closed => {
                tracing::info!(server = %s.connection.target, "sync stream closed: the agent moved to another server");
                return None;
            }
        };
        match item {
            None => {
                s.link
                    .failed(s.connection.generation, "the server ended the sync stream");
                None
            }
            Some(Err(ClientError::Refused(reason))) => {
                s.done = true;
                Some((Err(ClientError::Refused(reason)), s))
            }
            Some(Err(e)) => {
                s.link.failed(s.connection.generation, &e.to_string());
                s.done = true;
                Some((Err(e), s))
            }
            Some(Ok(message)) => {
                if std::mem::take(&mut s.first) {
                    started(&s, &message);
                }
                if let Some(m) = s.link.metrics() {
                    m.synced(&message);
                }
                Some((Ok(message), s))
            }
        }
    })
    .boxed()
}

/// Logs and counts how the server started the stream.
fn started(s: &Following, message: &SyncMessage) {
    let server = &s.connection.target;
    let kind = match message {
        SyncMessage::Resumed { cursor } => {
            tracing::info!(%server, cursor, "sync resumed from the agent's cursor");
            "resumed"
        }
        SyncMessage::Snapshot { seq, entries, .. } => {
            tracing::info!(%server, seq, entries = entries.len(), "sync started from a snapshot");
            "snapshot"
        }
        _ => return,
    };
    if let Some(m) = s.link.metrics() {
        m.sync_started(kind);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tessera_actors::agent::server_client::Refusal;

    use super::super::link::tests::{connect, two};
    use super::*;

    async fn collect(
        stream: BoxStream<'static, Result<SyncMessage, ClientError>>,
    ) -> Vec<Result<SyncMessage, ClientError>> {
        tokio::time::timeout(Duration::from_secs(5), stream.collect())
            .await
            .expect("the stream ends")
    }

    #[tokio::test]
    async fn the_end_of_the_stream_drops_the_connection() {
        let (link, metrics) = two();
        let link = Arc::new(link);
        let c = connect(&link).await;
        let messages = vec![
            Ok(SyncMessage::Resumed { cursor: 7 }),
            Ok(SyncMessage::Checkpoint { seq: 8 }),
        ];
        let got = collect(follow(
            futures::stream::iter(messages.clone()),
            link.clone(),
            c.clone(),
        ))
        .await;
        assert_eq!(got, messages);
        assert!(
            metrics.last_sync() > 0,
            "the messages set the time of the last sync"
        );
        assert_eq!(metrics.cursor(), 8, "resumed at 7, then checkpoint 8");
        assert!(
            link.current().is_none(),
            "the next reconnection picks a server again"
        );
        assert_eq!(metrics.connected(&c.target.to_string()), 0);
    }

    #[tokio::test]
    async fn an_error_drops_the_connection_but_a_refusal_does_not() {
        let (link, _) = two();
        let link = Arc::new(link);
        let c = connect(&link).await;
        let refused = ClientError::Refused(Refusal::new("evicted"));
        let items = vec![Err(refused.clone()), Ok(SyncMessage::Checkpoint { seq: 1 })];
        let got = collect(follow(
            futures::stream::iter(items),
            link.clone(),
            c.clone(),
        ))
        .await;
        assert_eq!(
            got,
            vec![Err(refused)],
            "the refusal ends the stream as before"
        );
        assert!(
            link.current().is_some(),
            "a refusal is not a reason to move"
        );

        let broken = ClientError::Unavailable("reset".into());
        let items = vec![Err(broken.clone()), Ok(SyncMessage::Checkpoint { seq: 1 })];
        let got = collect(follow(futures::stream::iter(items), link.clone(), c)).await;
        assert_eq!(got, vec![Err(broken)]);
        assert!(link.current().is_none());
    }

    #[tokio::test]
    async fn the_stream_ends_when_a_call_moves_the_agent() {
        let (link, _) = two();
        let link = Arc::new(link);
        let c = connect(&link).await;
        let quiet = futures::stream::iter([Ok(SyncMessage::Checkpoint { seq: 1 })])
            .chain(futures::stream::pending());
        let mut stream = follow(quiet, link.clone(), c.clone());
        assert!(stream.next().await.is_some());
        link.failed(c.generation, "a call found the server unavailable");
        let end = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
        assert!(matches!(end, Ok(None)), "{end:?}");
    }
}
