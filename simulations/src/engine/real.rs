//! `crypto = "real"`: an agent key and CSR per SVID (`SigningKeyPair`, rcgen, as the agent
//! makes them), signed by the server's active CA through the real X.509-SVID template
//! (`sign_x509_blocking`, the signer's chunk code). The checkers find the issuer from the
//! leaf's authority key identifier, which is the CA's authority ID.
//!
//! Keys and ECDSA signatures use the OS generator, so certificate bytes differ between runs;
//! nothing the report holds depends on them (serials and validity come from the run).
//!
//! `crypto = "fast"` with a `[[timeline]]`: each CA signs one template leaf here when it is
//! prepared, and every stand-in SVID of that CA carries it, so the agent's taint judge
//! (`taint::BundleIndex`, which matches the leaf's authority key identifier against each
//! authority's subject key identifier) reads real certificates at the cost of one signature
//! per CA.

use rcgen::CertificateParams;
use tessera_actors::agent::cache::StoredSvid;
use tessera_actors::keys::{KeyType, SigningKeyPair};
use tessera_actors::server::authority::signer::sign_x509_blocking;
use tessera_actors::server::authority::{SigningCa, SubjectName};
use tessera_actors::server::events::CaRecord;
use tessera_identity::SpiffeId;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::World;
use crate::scenario::Crypto;

/// Largest CSR the signer accepts (its default).
const MAX_CSR_BYTES: usize = 16 * 1024;

/// The hex authority key identifier of a certificate, if it has one.
pub fn authority_key_id(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| hex::encode(k.0))
            }
            _ => None,
        })
}

impl World<'_> {
    /// Signs one SVID for real with server `k`'s active CA.
    pub(super) fn sign_real(
        &mut self,
        k: u32,
        spiffe_id: SpiffeId,
        not_before: i64,
        not_after: i64,
        entry_revision: u64,
    ) -> Result<StoredSvid, String> {
        let ca = self.servers[k as usize]
            .signing_ca
            .clone()
            .ok_or_else(|| "no loaded key for the active CA".to_owned())?;
        let key = SigningKeyPair::generate(KeyType::EcP256).map_err(|e| e.to_string())?;
        let csr = CertificateParams::new(Vec::<String>::new())
            .and_then(|p| p.serialize_request(&key))
            .map_err(|e| e.to_string())?;
        let serial = self.rng.bytes16();
        let issued = sign_x509_blocking(
            &ca,
            &SubjectName::spire_svid(),
            MAX_CSR_BYTES,
            csr.der().to_vec(),
            spiffe_id,
            serial,
            not_before,
            not_after,
        )
        .map_err(|e| e.to_string())?;
        Ok(StoredSvid {
            cert_chain: issued.cert_chain,
            // Nothing in a run reads workload keys; the key stays with the round.
            key_pkcs8: Vec::new(),
            not_before: issued.not_before,
            not_after: issued.not_after,
            entry_revision,
        })
    }
}

impl World<'_> {
    /// The template leaf of a CA just prepared (see the module's doc), when the run needs
    /// one: `crypto = "fast"` with a `[[timeline]]`. `None` otherwise, or if the CA's key is
    /// not one of the servers' (then its SVIDs are the 16-byte stand-ins).
    pub(super) fn template_for(&self, record: &CaRecord) -> Option<Vec<u8>> {
        if self.sc.crypto != Crypto::Fast || self.sc.timeline.is_empty() {
            return None;
        }
        let key = self
            .servers
            .iter()
            .find_map(|s| s.loaded.get(&record.key_ref))?
            .clone();
        let ca = SigningCa::new(record.clone(), key);
        let leaf_key = SigningKeyPair::generate(KeyType::EcP256).ok()?;
        let csr = CertificateParams::new(Vec::<String>::new())
            .and_then(|p| p.serialize_request(&leaf_key))
            .ok()?;
        let spiffe_id = SpiffeId::from_path(&self.td, "/sim/template").ok()?;
        // A fixed serial per CA: the template is the only leaf signed for real.
        let mut serial = [0u8; 16];
        serial[0] = 0x01;
        serial[8..].copy_from_slice(&(self.cas.len() as u64).to_be_bytes());
        let issued = sign_x509_blocking(
            &ca,
            &SubjectName::spire_svid(),
            MAX_CSR_BYTES,
            csr.der().to_vec(),
            spiffe_id,
            serial,
            record.not_before,
            record.not_after,
        )
        .ok()?;
        issued.cert_chain.into_iter().next()
    }
}
