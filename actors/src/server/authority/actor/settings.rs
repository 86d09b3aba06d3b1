//! [`AuthoritySettings`]: the authority's configuration, with SPIRE's defaults.

use std::time::Duration;

use tessera_identity::TrustDomain;

use crate::server::authority::ca::CaSettings;
use crate::server::authority::rotation::RotationSettings;
use crate::server::authority::signer::SignerSettings;
use crate::server::authority::Owner;
use crate::server::keys::KeyType;

/// The authority's configuration (not state: never logged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthoritySettings {
    /// The server's trust domain.
    pub trust_domain: TrustDomain,
    /// How X.509 CAs are made (TTL 24 h, `ec-p256`, self-signed unless upstream is set).
    pub ca: CaSettings,
    /// JWT signing key lifetime (SPIRE: the CA TTL, 24 h).
    pub jwt_key_ttl: Duration,
    /// JWT signing key type (default `ec-p256`: ES256).
    pub jwt_key_type: KeyType,
    /// Rotation timing (prepare at 1/2, activate at 5/6 of the lifetime).
    pub rotation: RotationSettings,
    /// Signing defaults and limits.
    pub signer: SignerSettings,
    /// How often rotation runs on its own (default 10 s); `None`: only when sent `Tick`
    /// (tests, simulation).
    pub tick_interval: Option<Duration>,
    /// Timeout of every call to the actor (default 30 s).
    pub call_timeout: Duration,
    /// Calls to the actor waiting or running at once through a handle (default 1 024).
    pub max_in_flight: usize,
    /// Whose CAs and JWT keys are this server's own (several servers on one log each rotate
    /// and sign with their own). `None`: every one in the log (one server; events are then
    /// written without a server id, as by older builds).
    pub owner: Option<Owner>,
}

impl AuthoritySettings {
    /// SPIRE's defaults for `trust_domain`.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            ca: CaSettings::default(),
            jwt_key_ttl: Duration::from_secs(24 * 3600),
            jwt_key_type: KeyType::EcP256,
            rotation: RotationSettings::default(),
            signer: SignerSettings::default(),
            tick_interval: Some(Duration::from_secs(10)),
            call_timeout: Duration::from_secs(30),
            max_in_flight: 1024,
            owner: None,
        }
    }

    /// Checks what cannot work, naming the setting and the fix.
    ///
    /// # Errors
    /// A [`SettingsError`].
    pub fn validate(&self) -> Result<(), SettingsError> {
        let err = |m: String| Err(SettingsError(m));
        for (name, ttl) in [("ca_ttl", self.ca.ttl), ("jwt_key_ttl", self.jwt_key_ttl)] {
            if ttl < Duration::from_secs(60) {
                return err(format!("{name} = {ttl:?}: must be at least one minute"));
            }
        }
        if let Err(m) = self.rotation.validate() {
            return err(m);
        }
        if self.signer.x509_svid_ttl.is_zero() || self.signer.jwt_svid_ttl.is_zero() {
            return err("default SVID TTLs must be positive".into());
        }
        if let Some(owner) = &self.owner {
            let id = &owner.server_id;
            if id.is_empty() || id.len() > 128 || !id.chars().all(|c| c.is_ascii_graphic()) {
                return err(format!(
                    "server_id {id:?}: must be 1 to 128 printable ASCII characters without spaces"
                ));
            }
        }
        if self.tick_interval.is_some_and(|d| d.is_zero()) {
            return err("tick_interval must be positive (or unset to tick only on request)".into());
        }
        Ok(())
    }
}

/// A configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("authority config: {0}")]
pub struct SettingsError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_spire_like() {
        let s = AuthoritySettings::new(TrustDomain::new("example.org").unwrap());
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(s.ca.ttl, Duration::from_secs(86_400));
        assert_eq!(s.jwt_key_ttl, s.ca.ttl);
        assert_eq!(s.signer.x509_svid_ttl, Duration::from_secs(3600));
        assert_eq!(s.signer.jwt_svid_ttl, Duration::from_secs(300));
        assert_eq!(s.ca.key_type, KeyType::EcP256);
    }

    #[test]
    fn every_key_type_is_accepted_and_short_ttls_are_not() {
        for key_type in [
            KeyType::EcP256,
            KeyType::EcP384,
            KeyType::Rsa2048,
            KeyType::Rsa4096,
        ] {
            let mut s = AuthoritySettings::new(TrustDomain::new("example.org").unwrap());
            s.ca.key_type = key_type;
            s.jwt_key_type = key_type;
            assert_eq!(s.validate(), Ok(()), "{key_type}");
        }
        let mut s = AuthoritySettings::new(TrustDomain::new("example.org").unwrap());
        s.jwt_key_ttl = Duration::from_secs(59);
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("jwt_key_ttl"), "{e}");
    }
}
