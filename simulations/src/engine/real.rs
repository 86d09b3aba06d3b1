//! `crypto = "real"`: an agent key and CSR per SVID (`SigningKeyPair`, rcgen, as the agent
//! makes them), signed by the server's active CA through the real X.509-SVID template
//! (`sign_x509_blocking`, the signer's chunk code). The checkers find the issuer from the
//! leaf's authority key identifier, which is the CA's authority ID.
//!
//! Keys and ECDSA signatures use the OS generator, so certificate bytes differ between runs;
//! nothing the report holds depends on them (serials and validity come from the run).

use rcgen::CertificateParams;
use tessera_actors::agent::cache::StoredSvid;
use tessera_actors::keys::{KeyType, SigningKeyPair};
use tessera_actors::server::authority::signer::sign_x509_blocking;
use tessera_actors::server::authority::SubjectName;
use tessera_identity::SpiffeId;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::World;

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
