//! The agent's files under its data dir, written atomically (temp file + rename) with mode
//! 0600 for anything secret:
//!
//! ```text
//! <data_dir>/agent_svid.pem   the agent's X.509-SVID chain
//! <data_dir>/agent_key.pem    its private key (PKCS#8, 0600)
//! <data_dir>/bundle.pem       the last trust bundle (X.509 authorities), for restarts
//! <data_dir>/cache.bin        the cache: entries, bundles, cursor, workload SVIDs and keys (0600)
//! ```

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tessera_actors::agent::cache::Cache;
use tessera_eventlog::typed::{decode_state, encode_state_into};
use tessera_identity::{Bundle, TrustDomain};

use super::tls::ClientIdentity;

/// A file the agent could not read or write.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct StoreError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong, and the fix.
    pub message: String,
}

fn err(path: &Path, message: impl std::fmt::Display) -> StoreError {
    StoreError {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// The agent's data directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating, mode 0700) the data dir.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(dir)
            .map_err(|e| err(dir, format!("cannot create the data dir: {e}")))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| err(dir, format!("cannot set mode 0700: {e}")))?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    fn write(&self, name: &str, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| err(&tmp, e))?;
        f.write_all(bytes).map_err(|e| err(&tmp, e))?;
        f.sync_data().map_err(|e| err(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| err(&path, e))
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.dir.join(name);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err(&path, e)),
        }
    }

    /// Stores the agent's SVID and key.
    pub fn save_identity(&self, id: &ClientIdentity) -> Result<(), StoreError> {
        let chain: String = id
            .cert_chain
            .iter()
            .map(|d| pem::encode(&pem::Pem::new("CERTIFICATE", d.clone())))
            .collect();
        let key = zeroize::Zeroizing::new(pem::encode(&pem::Pem::new(
            "PRIVATE KEY",
            id.key_pkcs8.as_slice().to_vec(),
        )));
        self.write("agent_key.pem", key.as_bytes(), 0o600)?;
        self.write("agent_svid.pem", chain.as_bytes(), 0o644)
    }

    /// The stored agent SVID and key, if both are there and parse.
    pub fn load_identity(&self) -> Result<Option<ClientIdentity>, StoreError> {
        let (Some(chain), Some(key)) = (self.read("agent_svid.pem")?, self.read("agent_key.pem")?)
        else {
            return Ok(None);
        };
        let key = zeroize::Zeroizing::new(key);
        let chain =
            pem::parse_many(&chain).map_err(|e| err(&self.dir.join("agent_svid.pem"), e))?;
        let key =
            pem::parse(key.as_slice()).map_err(|e| err(&self.dir.join("agent_key.pem"), e))?;
        Ok(Some(ClientIdentity {
            cert_chain: chain.into_iter().map(|p| p.into_contents()).collect(),
            key_pkcs8: Arc::new(zeroize::Zeroizing::new(key.into_contents())),
        }))
    }

    /// Stores the bundle's X.509 authorities.
    pub fn save_bundle(&self, bundle: &Bundle) -> Result<(), StoreError> {
        self.write(
            "bundle.pem",
            bundle.x509_authorities_pem().as_bytes(),
            0o644,
        )
    }

    /// The stored bundle, if any.
    pub fn load_bundle(&self, td: &TrustDomain) -> Result<Option<Bundle>, StoreError> {
        let Some(bytes) = self.read("bundle.pem")? else {
            return Ok(None);
        };
        let text = String::from_utf8(bytes).map_err(|e| err(&self.dir.join("bundle.pem"), e))?;
        Bundle::from_x509_pem(td.clone(), &text)
            .map(Some)
            .map_err(|e| err(&self.dir.join("bundle.pem"), e))
    }

    /// Stores the cache (0600: it holds workload keys), encoded straight into the file: with
    /// 100,000 entries in view a 20 MB buffer per write would stay in the allocator's hands.
    pub fn save_cache(&self, cache: &Cache) -> Result<(), StoreError> {
        let path = self.dir.join("cache.bin");
        let tmp = self.dir.join(".cache.bin.tmp");
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| err(&tmp, e))?;
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, f);
        encode_state_into(cache, &mut out).map_err(|e| err(&tmp, e))?;
        let f = out.into_inner().map_err(|e| err(&tmp, e.error()))?;
        f.sync_data().map_err(|e| err(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| err(&path, e))
    }

    /// The stored cache; an unreadable one is reported and replaced by an empty cache (the
    /// server's snapshot rebuilds it).
    pub fn load_cache(&self) -> Cache {
        match self.read("cache.bin") {
            Ok(Some(bytes)) => decode_state(0, &bytes).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "ignoring an unreadable cache; the server's snapshot will rebuild it");
                Cache::default()
            }),
            Ok(None) => Cache::default(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cache");
                Cache::default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tessera_actors::agent::cache::StoredSvid;
    use tessera_actors::agent::server_client::SyncMessage;
    use tessera_eventlog::typed::encode_state;
    use tessera_identity::{EntryId, RegistrationEntry, SelectorSet, SpiffeId};

    use super::*;

    #[test]
    fn the_cache_written_into_its_file_reads_back_and_is_the_codecs_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        let mut cache = Cache::default();
        let entry = |n: u32| RegistrationEntry {
            id: EntryId::new(&format!("e{n}")).unwrap(),
            spiffe_id: SpiffeId::new(&format!("spiffe://example.org/w{n}")).unwrap(),
            parent_id: SpiffeId::new("spiffe://example.org/spire/agent/x").unwrap(),
            selectors: SelectorSet::parse_all(["unix:uid:1"]).unwrap(),
            x509_svid_ttl: None,
            jwt_svid_ttl: None,
            federates_with: vec![],
            dns_names: vec![],
            admin: false,
            downstream: false,
            hint: String::new(),
            expires_at: None,
            created_at: 0,
            revision: 0,
        };
        cache.apply(SyncMessage::Snapshot {
            seq: 7,
            entries: (0..300).map(entry).collect(),
            bundles: vec![],
        });
        cache.store_svid(
            EntryId::new("e1").unwrap(),
            StoredSvid {
                cert_chain: vec![vec![1; 700]],
                key_pkcs8: vec![2; 120],
                not_before: 1,
                not_after: 2,
                entry_revision: 0,
            },
        );
        store.save_cache(&cache).unwrap();
        assert_eq!(store.load_cache(), cache);
        let written = std::fs::read(dir.path().join("data/cache.bin")).unwrap();
        assert_eq!(written, encode_state(&cache).unwrap());
    }
}
