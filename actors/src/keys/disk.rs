//! [`DiskKeyManager`]: one PEM PKCS#8 file per key under `<data_dir>/keys/`.
//!
//! The directory is created with mode 0700 and each file with 0600; a directory or file that
//! group or others can access is refused (with the `chmod` that fixes it) rather than used.
//! Files are written to a temporary name, fsynced, and linked into place (which never
//! replaces an existing key), then the directory is fsynced: a crash leaves either no key or
//! the whole key.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{check_key_name, KeyError, KeyManager, KeyType, SigningKeyPair};

/// Largest key file read, in bytes (an RSA 4096 PKCS#8 PEM is about 3.3 KiB).
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;
const PEM_LABEL: &str = "PRIVATE KEY";

/// Keys as files `<data_dir>/keys/<name>.pem` (unencrypted PKCS#8, PEM).
#[derive(Debug, Clone)]
pub struct DiskKeyManager {
    dir: PathBuf,
}

impl DiskKeyManager {
    /// Opens (creating it, mode 0700, if absent) the key directory `<data_dir>/keys`.
    ///
    /// # Errors
    /// [`KeyError::Io`] naming the path, or [`KeyError::InsecurePermissions`] if the directory
    /// exists and group or others can access it.
    pub fn open(data_dir: &Path) -> Result<Self, KeyError> {
        let dir = data_dir.join("keys");
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        builder.mode(0o700);
        builder.create(&dir).map_err(io_error("create", &dir))?;
        check_private(&dir, 0o700)?;
        Ok(Self { dir })
    }

    /// The key directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of the key `key_ref`.
    ///
    /// # Errors
    /// [`KeyError::InvalidName`] if `key_ref` is not a valid key name.
    pub fn path_of(&self, key_ref: &str) -> Result<PathBuf, KeyError> {
        check_key_name(key_ref)?;
        Ok(self.dir.join(format!("{key_ref}.pem")))
    }

    fn store(&self, name: &str, key: &SigningKeyPair) -> Result<String, KeyError> {
        let path = self.path_of(name)?;
        if path.exists() {
            return Err(KeyError::AlreadyExists {
                key_ref: name.to_owned(),
                path: Some(path),
            });
        }
        let tmp = self.dir.join(format!("{name}.pem.tmp"));
        // A leftover from a crash mid-write: never linked into place, so never used.
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("remove", &tmp)(e)),
        }
        let pem = Zeroizing::new(pem::encode(&pem::Pem::new(
            PEM_LABEL,
            key.pkcs8_der().to_vec(),
        )));
        let written = write_new(&tmp, pem.as_bytes()).and_then(|()| {
            // hard_link fails if `path` exists: an existing key is never replaced.
            fs::hard_link(&tmp, &path).map_err(|e| {
                if e.kind() == ErrorKind::AlreadyExists {
                    KeyError::AlreadyExists {
                        key_ref: name.to_owned(),
                        path: Some(path.clone()),
                    }
                } else {
                    io_error("link", &path)(e)
                }
            })
        });
        let _ = fs::remove_file(&tmp);
        written?;
        sync_dir(&self.dir)?;
        Ok(name.to_owned())
    }
}

impl KeyManager for DiskKeyManager {
    fn generate(&self, name: &str, key_type: KeyType) -> Result<String, KeyError> {
        check_key_name(name)?;
        let key = SigningKeyPair::generate(key_type)?;
        self.store(name, &key)
    }

    fn import(&self, name: &str, pkcs8_der: &[u8]) -> Result<String, KeyError> {
        check_key_name(name)?;
        let key = SigningKeyPair::from_pkcs8(pkcs8_der, name)?;
        self.store(name, &key)
    }

    fn load(&self, key_ref: &str) -> Result<SigningKeyPair, KeyError> {
        let path = self.path_of(key_ref)?;
        let bytes = read_private(&path, key_ref)?;
        let shown = path.display().to_string();
        let der = decode_key_file(&bytes, &shown)?;
        SigningKeyPair::from_pkcs8(&der, &shown)
    }

    fn delete(&self, key_ref: &str) -> Result<bool, KeyError> {
        let path = self.path_of(key_ref)?;
        match fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&self.dir)?;
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error("remove", &path)(e)),
        }
    }
}

/// Reads a PEM (`PRIVATE KEY`) or DER private key file's key bytes; `shown` names it in errors.
pub(crate) fn decode_key_file(bytes: &[u8], shown: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let malformed = |reason: String| KeyError::Malformed {
        source_name: shown.to_owned(),
        reason,
    };
    if !bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        return Ok(Zeroizing::new(bytes.to_vec()));
    }
    let block = pem::parse(bytes).map_err(|e| malformed(format!("bad PEM: {e}")))?;
    if block.tag() != PEM_LABEL {
        return Err(malformed(format!(
            "its PEM block is \"{}\", not \"{PEM_LABEL}\"",
            block.tag()
        )));
    }
    Ok(Zeroizing::new(block.into_contents()))
}

/// Reads a key file, refusing one that group or others can access.
fn read_private(path: &Path, key_ref: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(KeyError::NotFound {
                key_ref: key_ref.to_owned(),
                path: Some(path.to_owned()),
            })
        }
        Err(e) => return Err(io_error("open", path)(e)),
    };
    check_private(path, 0o600)?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error("read", path))?;
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(KeyError::Malformed {
            source_name: path.display().to_string(),
            reason: format!("the file is larger than {MAX_KEY_FILE_BYTES} bytes"),
        });
    }
    Ok(bytes)
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).map_err(io_error("create", path))?;
    file.write_all(bytes).map_err(io_error("write", path))?;
    file.sync_all().map_err(io_error("sync", path))
}

fn sync_dir(dir: &Path) -> Result<(), KeyError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("sync", dir))
}

/// Refuses a path whose mode lets group or others in.
fn check_private(path: &Path, wanted: u32) -> Result<(), KeyError> {
    #[cfg(unix)]
    {
        let mode = fs::metadata(path)
            .map_err(io_error("inspect", path))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::InsecurePermissions {
                path: path.to_owned(),
                mode,
                wanted,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = (path, wanted);
    Ok(())
}

fn io_error<'a>(
    operation: &'static str,
    path: &'a Path,
) -> impl Fn(std::io::Error) -> KeyError + 'a {
    move |e| KeyError::Io {
        operation,
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;
    use crate::keys::signing_key::tests::{rsa_2048, RSA_2048_PEM};

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn generated_keys_are_private_files_that_load_back() {
        let tmp = tempfile::tempdir().unwrap();
        let km = DiskKeyManager::open(tmp.path()).unwrap();
        assert_eq!(mode(km.dir()), 0o700);
        let key_ref = km.generate("x509-ca-1", KeyType::EcP256).unwrap();
        let path = km.path_of(&key_ref).unwrap();
        assert_eq!(path, tmp.path().join("keys/x509-ca-1.pem"));
        assert_eq!(mode(&path), 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"));
        let key = km.load(&key_ref).unwrap();
        assert_eq!(key.key_type(), KeyType::EcP256);
        assert!(!tmp.path().join("keys/x509-ca-1.pem.tmp").exists());
    }

    #[test]
    fn never_overwrites_a_key() {
        let tmp = tempfile::tempdir().unwrap();
        let km = DiskKeyManager::open(tmp.path()).unwrap();
        km.generate("k", KeyType::EcP256).unwrap();
        let before = km.load("k").unwrap().spki_der();
        let err = km.generate("k", KeyType::EcP384).unwrap_err();
        assert!(matches!(err, KeyError::AlreadyExists { .. }), "{err}");
        assert_eq!(km.load("k").unwrap().spki_der(), before);
    }

    #[test]
    fn delete_removes_the_file_and_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let km = DiskKeyManager::open(tmp.path()).unwrap();
        km.generate("k", KeyType::EcP384).unwrap();
        assert_eq!(km.delete("k"), Ok(true));
        assert_eq!(km.delete("k"), Ok(false));
        let err = km.load("k").unwrap_err();
        assert_eq!(
            err,
            KeyError::NotFound {
                key_ref: "k".into(),
                path: Some(tmp.path().join("keys/k.pem")),
            }
        );
    }

    #[test]
    fn refuses_keys_readable_by_others_and_says_how_to_fix_it() {
        let tmp = tempfile::tempdir().unwrap();
        let km = DiskKeyManager::open(tmp.path()).unwrap();
        km.generate("k", KeyType::EcP256).unwrap();
        let path = km.path_of("k").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = km.load("k").unwrap_err();
        assert!(matches!(
            err,
            KeyError::InsecurePermissions { mode: 0o644, .. }
        ));
        assert!(err
            .to_string()
            .contains(&format!("chmod 600 {}", path.display())));

        fs::set_permissions(km.dir(), fs::Permissions::from_mode(0o755)).unwrap();
        let err = DiskKeyManager::open(tmp.path()).unwrap_err();
        assert!(err.to_string().contains("chmod 700"), "{err}");
    }

    #[test]
    fn imports_and_loads_rsa_and_rejects_other_pem_blocks() {
        let tmp = tempfile::tempdir().unwrap();
        let km = DiskKeyManager::open(tmp.path()).unwrap();
        let der = pem::parse(RSA_2048_PEM).unwrap().into_contents();
        km.import("upstream-rsa", &der).unwrap();
        assert_eq!(
            km.load("upstream-rsa").unwrap().spki_der(),
            rsa_2048().spki_der()
        );

        let cert_block = pem::encode(&pem::Pem::new("CERTIFICATE", vec![1, 2, 3]));
        let err = decode_key_file(cert_block.as_bytes(), "/x.pem").unwrap_err();
        assert!(err.to_string().contains("\"CERTIFICATE\""), "{err}");
    }

    #[test]
    fn bad_names_never_reach_the_file_system() {
        let tmp = tempfile::tempdir().unwrap();
        let km = DiskKeyManager::open(tmp.path()).unwrap();
        assert!(matches!(
            km.load("../escape"),
            Err(KeyError::InvalidName { .. })
        ));
        assert!(matches!(
            km.generate("a/b", KeyType::EcP256),
            Err(KeyError::InvalidName { .. })
        ));
    }
}
