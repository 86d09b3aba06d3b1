//! The caller's executable: its path (`/proc/<pid>/exe`) and the SHA-256 of its content,
//! read through `/proc/<pid>/exe` itself so a binary replaced or deleted after start is still
//! the one hashed. Digests are cached by file identity (device, inode, size, mtime) so a busy
//! workload does not get its binary re-read on every call.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// Most digests cached; the cache is emptied when full.
const MAX_CACHED_DIGESTS: usize = 1024;

/// What identifies a file's content well enough to reuse its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

/// Outcome of hashing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Hashed {
    /// The hex digest.
    Digest(String),
    /// The binary is larger than the limit: no `sha256` selector.
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

/// Digests by file identity.
#[derive(Debug, Default)]
pub(crate) struct DigestCache(Mutex<HashMap<FileKey, String>>);

impl DigestCache {
    /// SHA-256 of the file at `exe` (a `/proc/<pid>/exe` link), if not larger than `limit`.
    pub(crate) fn sha256(&self, exe: &Path, limit: Option<u64>) -> std::io::Result<Hashed> {
        let file = std::fs::File::open(exe)?;
        let meta = file.metadata()?;
        let size = meta.len();
        if let Some(limit) = limit.filter(|l| size > *l) {
            return Ok(Hashed::TooLarge { size, limit });
        }
        let key = FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size,
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        };
        if let Some(hit) = self.lock().get(&key) {
            return Ok(Hashed::Digest(hit.clone()));
        }
        let mut hasher = Sha256::new();
        // Never read past the size checked above, even if the file grows meanwhile.
        let mut reader = file.take(limit.unwrap_or(u64::MAX));
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let digest = hex::encode(hasher.finalize());
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED_DIGESTS {
            cache.clear();
        }
        cache.insert(key, digest.clone());
        Ok(Hashed::Digest(digest))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileKey, String>> {
        // A panic while holding the lock leaves a valid map: keep using it.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_within_the_limit_and_caches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin");
        std::fs::write(&path, b"abc").unwrap();
        let cache = DigestCache::default();
        let want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".to_string();
        assert_eq!(
            cache.sha256(&path, None).unwrap(),
            Hashed::Digest(want.clone())
        );
        assert_eq!(cache.sha256(&path, Some(3)).unwrap(), Hashed::Digest(want));
        assert_eq!(cache.lock().len(), 1);
        assert_eq!(
            cache.sha256(&path, Some(2)).unwrap(),
            Hashed::TooLarge { size: 3, limit: 2 }
        );
        assert!(cache.sha256(&dir.path().join("missing"), None).is_err());
    }
}
