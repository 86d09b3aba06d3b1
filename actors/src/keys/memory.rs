//! [`MemoryKeyManager`]: keys in process memory, for tests and simulation. Keys die with the
//! process, so a server using it gets a new CA after every restart.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use zeroize::Zeroizing;

use super::{check_key_name, KeyError, KeyManager, KeyType, SigningKeyPair};

/// Keys held in memory as PKCS#8 DER (zeroized when deleted or dropped).
#[derive(Default)]
pub struct MemoryKeyManager {
    keys: Mutex<BTreeMap<String, Zeroizing<Vec<u8>>>>,
}

impl MemoryKeyManager {
    /// An empty key manager.
    pub fn new() -> Self {
        Self::default()
    }

    /// References of the keys held, in order.
    pub fn key_refs(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Zeroizing<Vec<u8>>>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn store(&self, name: &str, key: &SigningKeyPair) -> Result<String, KeyError> {
        let mut keys = self.lock();
        if keys.contains_key(name) {
            return Err(KeyError::AlreadyExists {
                key_ref: name.to_owned(),
                path: None,
            });
        }
        keys.insert(name.to_owned(), Zeroizing::new(key.pkcs8_der().to_vec()));
        Ok(name.to_owned())
    }
}

impl fmt::Debug for MemoryKeyManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryKeyManager")
            .field("key_refs", &self.key_refs())
            .finish()
    }
}

impl KeyManager for MemoryKeyManager {
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
        let keys = self.lock();
        let der = keys.get(key_ref).ok_or_else(|| KeyError::NotFound {
            key_ref: key_ref.to_owned(),
            path: None,
        })?;
        SigningKeyPair::from_pkcs8(der, key_ref)
    }

    fn delete(&self, key_ref: &str) -> Result<bool, KeyError> {
        Ok(self.lock().remove(key_ref).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::signing_key::tests::rsa_2048;

    #[test]
    fn generate_load_delete() {
        let km = MemoryKeyManager::new();
        let r = km.generate("jwt-1", KeyType::EcP384).unwrap();
        assert_eq!(km.load(&r).unwrap().key_type(), KeyType::EcP384);
        assert!(matches!(
            km.generate("jwt-1", KeyType::EcP256),
            Err(KeyError::AlreadyExists { .. })
        ));
        assert_eq!(km.delete(&r), Ok(true));
        assert_eq!(km.delete(&r), Ok(false));
        assert!(matches!(km.load(&r), Err(KeyError::NotFound { .. })));
    }

    #[test]
    fn rsa_can_be_generated_and_imported() {
        let km = MemoryKeyManager::new();
        let generated = km.generate("g", KeyType::Rsa2048).unwrap();
        assert_eq!(km.load(&generated).unwrap().key_type(), KeyType::Rsa2048);
        km.import("r", rsa_2048().pkcs8_der()).unwrap();
        assert_eq!(km.load("r").unwrap().key_type(), KeyType::Rsa2048);
    }

    #[test]
    fn debug_lists_names_only() {
        let km = MemoryKeyManager::new();
        km.generate("a", KeyType::EcP256).unwrap();
        let der = km.load("a").unwrap().pkcs8_der().to_vec();
        let shown = format!("{km:?}");
        assert_eq!(shown, "MemoryKeyManager { key_refs: [\"a\"] }");
        assert!(!shown.contains(&hex::encode(&der[..8])));
    }
}
