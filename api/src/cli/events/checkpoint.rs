//! `events checkpoint` and `events verify`: the latest signed checkpoint as an anchor
//! document to keep outside the server, and the log's audit (hash chain, every signed
//! checkpoint, and with `--anchor FILE` that the log still holds the anchored record).
//!
//! The anchor document (JSON) carries what the signature covers and the key that verifies
//! it, so `verify --anchor` checks the file itself before asking the server anything: a file
//! altered since it was saved fails here, not as a log fault.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tessera_actors::server::checkpoint::{CheckpointRecord, HASH_LEN, SIGNED_BYTES_TAG};
use tessera_identity::TrustDomain;
use tessera_proto::tessera::eventlog::v1::event_log_client::EventLogClient;
use tessera_proto::tessera::eventlog::v1::verify_response::Fault;
use tessera_proto::tessera::eventlog::v1::{
    Checkpoint, LatestCheckpointRequest, VerifyRequest, VerifyResponse,
};

use super::super::common::{connect, json, line, rpc, CliError, OutputFormat};
use super::{CheckpointArgs, VerifyArgs};

/// Largest anchor file read, in bytes (an RSA-4096 anchor is under 2 KiB).
const MAX_ANCHOR_BYTES: u64 = 64 * 1024;

/// An anchor: a signed checkpoint saved outside the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// Always [`SIGNED_BYTES_TAG`]: names the layout of what the signature covers.
    pub format: String,
    /// The trust domain whose authority signed it.
    pub trust_domain: String,
    /// The server that signed it (`None` on a single server's own log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    /// The seq of the record it covers.
    pub seq: u64,
    /// That record's hash, hex.
    pub hash: String,
    /// When it was signed, Unix seconds.
    pub signed_at: i64,
    /// The signing key's ID.
    pub kid: String,
    /// The signing key's public key, SubjectPublicKeyInfo DER, base64.
    pub public_key: String,
    /// The signature, base64.
    pub signature: String,
    /// The seq of the record that holds the checkpoint in the log (information only).
    #[serde(default)]
    pub record_seq: u64,
}

impl Anchor {
    fn from_proto(c: &Checkpoint) -> Self {
        Self {
            format: SIGNED_BYTES_TAG.into(),
            trust_domain: c.trust_domain.clone(),
            server_id: (!c.server_id.is_empty()).then(|| c.server_id.clone()),
            seq: c.seq,
            hash: hex::encode(&c.hash),
            signed_at: c.signed_at,
            kid: c.kid.clone(),
            public_key: STANDARD.encode(&c.public_key_der),
            signature: STANDARD.encode(&c.signature),
            record_seq: c.record_seq,
        }
    }

    /// The trust domain and the checkpoint, with its signature checked.
    fn verified(&self) -> Result<(TrustDomain, CheckpointRecord), String> {
        if self.format != SIGNED_BYTES_TAG {
            return Err(format!(
                "format is {:?}; this build reads {SIGNED_BYTES_TAG:?}",
                self.format
            ));
        }
        let trust_domain = TrustDomain::new(&self.trust_domain)
            .map_err(|e| format!("trust_domain {:?}: {e}", self.trust_domain))?;
        let hash = hex::decode(&self.hash)
            .ok()
            .filter(|h| h.len() == HASH_LEN)
            .ok_or_else(|| format!("hash {:?} is not 64 hex digits", self.hash))?;
        let base64 = |field: &str, text: &str| {
            STANDARD
                .decode(text)
                .map_err(|e| format!("{field} is not base64: {e}"))
        };
        let record = CheckpointRecord {
            server_id: self.server_id.clone(),
            seq: self.seq,
            hash,
            signed_at: self.signed_at,
            kid: self.kid.clone(),
            public_key_der: base64("public_key", &self.public_key)?,
            signature: base64("signature", &self.signature)?,
        };
        record.verify(&trust_domain).map_err(|e| e.to_string())?;
        Ok((trust_domain, record))
    }
}

/// `events checkpoint`.
pub async fn latest(a: CheckpointArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "events checkpoint";
    let mut client = EventLogClient::new(connect(VERB, &a.client.socket_path).await?);
    let c = client
        .latest_checkpoint(LatestCheckpointRequest {})
        .await
        .map_err(rpc(VERB))?
        .into_inner();
    let anchor = Anchor::from_proto(&c);
    match a.client.output {
        OutputFormat::Json => json(out, &serde_json::to_value(&anchor).unwrap_or_default()),
        OutputFormat::Pretty => {
            line(out, format!("Trust domain     : {}", anchor.trust_domain));
            if let Some(server) = &anchor.server_id {
                line(out, format!("Server           : {server}"));
            }
            line(out, format!("Covers seq       : {}", anchor.seq));
            line(out, format!("Hash             : {}", anchor.hash));
            line(
                out,
                format!(
                    "Signed at        : {}",
                    crate::timefmt::format_unix(anchor.signed_at)
                ),
            );
            line(out, format!("Key ID           : {}", anchor.kid));
            line(out, format!("In record        : {}", anchor.record_seq));
            line(
                out,
                "Keep it outside the server as an anchor: `tessera-server events checkpoint \
                 --output json > anchor.json`, later `tessera-server events verify --anchor \
                 anchor.json`",
            );
        }
    }
    Ok(())
}

/// Reads and checks an anchor file.
fn load_anchor(
    verb: &'static str,
    path: &Path,
) -> Result<(TrustDomain, CheckpointRecord), CliError> {
    let bad = |message: String| CliError::Flag {
        verb,
        flag: "--anchor",
        value: path.display().to_string(),
        reason: message,
    };
    let io = |source| CliError::Io {
        verb,
        path: path.to_path_buf(),
        source,
    };
    // Read through a bound (a FIFO or a file growing under us has no trustworthy length).
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(std::fs::File::open(path).map_err(io)?, MAX_ANCHOR_BYTES + 1),
        &mut text,
    )
    .map_err(io)?;
    if text.len() as u64 > MAX_ANCHOR_BYTES {
        return Err(bad(format!(
            "the file is over {MAX_ANCHOR_BYTES} bytes; an anchor is smaller (write one with \
             `events checkpoint --output json > FILE`)"
        )));
    }
    let anchor: Anchor = serde_json::from_str(&text).map_err(|e| {
        bad(format!(
            "not an anchor document ({e}); write one with `events checkpoint --output json > FILE`"
        ))
    })?;
    anchor.verified().map_err(|e| {
        bad(format!(
            "the anchor does not check out: {e}; the file was altered or is not this trust \
             domain's checkpoint: use an untouched copy"
        ))
    })
}

/// `events verify`.
pub async fn verify(a: VerifyArgs, out: &mut dyn Write) -> Result<(), CliError> {
    const VERB: &str = "events verify";
    let anchor = a
        .anchor
        .as_deref()
        .map(|p| load_anchor(VERB, p))
        .transpose()?;
    let mut client = EventLogClient::new(connect(VERB, &a.client.socket_path).await?);
    let (anchor_seq, anchor_hash) = anchor
        .as_ref()
        .map(|(_, c)| (c.seq, c.hash.clone()))
        .unwrap_or_default();
    let r = client
        .verify(VerifyRequest {
            from_seq: a.from_seq,
            to_seq: a.to_seq,
            anchor_seq,
            anchor_hash,
        })
        .await
        .map_err(rpc(VERB))?
        .into_inner();
    report(&r, anchor.as_ref(), a.anchor.as_ref(), a.client.output, out);
    if r.ok {
        return Ok(());
    }
    let seq = r.first_bad_seq;
    let message = match r.fault() {
        Fault::Truncated | Fault::Rewritten => format!(
            "{}; the log no longer holds what the anchor signed: restore the log from a backup \
             taken after the anchor and find out who changed it",
            r.reason
        ),
        Fault::Checkpoint => format!(
            "{}; a signed checkpoint no longer matches the log: the log or the checkpoint was \
             altered (restore from a backup and investigate)",
            r.reason
        ),
        Fault::Chain | Fault::Unspecified => format!("the hash chain breaks at seq {seq}"),
    };
    Err(CliError::Failed {
        verb: VERB,
        message,
    })
}

fn report(
    r: &VerifyResponse,
    anchor: Option<&(TrustDomain, CheckpointRecord)>,
    anchor_path: Option<&PathBuf>,
    output: OutputFormat,
    out: &mut dyn Write,
) {
    match output {
        OutputFormat::Json => json(
            out,
            &json!({
                "ok": r.ok,
                "records_checked": r.records_checked,
                "checkpoints_checked": r.checkpoints_checked,
                "first_bad_seq": r.first_bad_seq,
                "fault": r.fault().as_str_name(),
                "reason": r.reason,
                "last_good_hash": hex::encode(&r.last_good_hash),
                "anchor_seq": anchor.map(|(_, c)| c.seq),
            }),
        ),
        OutputFormat::Pretty if r.ok => {
            line(
                out,
                format!(
                    "OK: {} records verified, with {} signed checkpoints; last hash {}",
                    r.records_checked,
                    r.checkpoints_checked,
                    hex::encode(&r.last_good_hash)
                ),
            );
            if let (Some((td, c)), Some(path)) = (anchor, anchor_path) {
                line(
                    out,
                    format!(
                        "Anchor {}: the log still holds seq {} with hash {} (signed for {td} \
                         with key {})",
                        path.display(),
                        c.seq,
                        hex::encode(&c.hash),
                        c.kid
                    ),
                );
            }
        }
        OutputFormat::Pretty => line(
            out,
            format!(
                "FAILED at seq {}: {} ({} records before it verified; last good hash {})",
                r.first_bad_seq,
                r.reason,
                r.records_checked,
                hex::encode(&r.last_good_hash)
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anchor() -> Anchor {
        Anchor {
            format: SIGNED_BYTES_TAG.into(),
            trust_domain: "example.org".into(),
            server_id: None,
            seq: 3,
            hash: "ab".repeat(32),
            signed_at: 1,
            kid: "k".into(),
            public_key: STANDARD.encode([0x30, 0]),
            signature: STANDARD.encode([1]),
            record_seq: 4,
        }
    }

    #[test]
    fn a_malformed_anchor_names_its_field() {
        let mut a = anchor();
        a.format = "v0".into();
        assert!(a.verified().unwrap_err().contains("format is \"v0\""));
        let mut a = anchor();
        a.hash = "ab".into();
        assert!(a.verified().unwrap_err().contains("not 64 hex digits"));
        let mut a = anchor();
        a.signature = "!!".into();
        assert!(a
            .verified()
            .unwrap_err()
            .contains("signature is not base64"));
        let mut a = anchor();
        a.trust_domain = "Bad TD".into();
        assert!(a.verified().unwrap_err().contains("trust_domain"));
        // Well formed, but the key is junk: named by the checkpoint's own check.
        assert!(anchor().verified().unwrap_err().contains("public key"));
    }

    #[test]
    fn the_document_round_trips_through_json_without_a_server_id() {
        let text = serde_json::to_string(&anchor()).unwrap();
        assert!(!text.contains("server_id"), "{text}");
        assert_eq!(serde_json::from_str::<Anchor>(&text).unwrap(), anchor());
    }
}
