//! What the agent's process benches share (included with `#[path]`, as they include
//! `tests/e2e/processes.rs`): a gRPC channel over a Unix socket, a percentile of sorted
//! durations, and an admin-API entry for a uid.

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tessera_proto::spire::api::types::{Entry, Selector, Spiffeid};
use tonic::transport::{Channel, Endpoint};

/// A lazily connected channel to the gRPC server on the Unix socket at `path`.
pub fn uds(path: PathBuf) -> Channel {
    Endpoint::from_static("http://localhost").connect_with_connector_lazy(tower::service_fn(
        move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        },
    ))
}

/// The `p` quantile (0..=1) of `sorted`, by rounding to the nearest rank.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// An entry `spiffe://example.org{path}` under `parent` (a SPIFFE ID in example.org) for
/// workloads of `uid`.
pub fn entry(path: &str, parent: &str, uid: u32) -> Entry {
    Entry {
        spiffe_id: Some(Spiffeid {
            trust_domain: "example.org".into(),
            path: path.into(),
        }),
        parent_id: Some(Spiffeid {
            trust_domain: "example.org".into(),
            path: parent.trim_start_matches("spiffe://example.org").into(),
        }),
        selectors: vec![Selector {
            r#type: "unix".into(),
            value: format!("uid:{uid}"),
        }],
        ..Entry::default()
    }
}
