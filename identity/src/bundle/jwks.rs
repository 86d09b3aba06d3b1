//! The SPIFFE bundle format: a JWK Set with `spiffe_sequence` and `spiffe_refresh_hint`
//! (SPIFFE Trust Domain and Bundle §4; X509-SVID §6; JWT-SVID's bundle section).
//!
//! Decoding rules: `keys` must be present; elements whose `use` is neither `x509-svid` nor
//! `jwt-svid` (or missing), or whose `kty` is neither `EC` nor `RSA`, are ignored as the
//! standard requires. An `x509-svid` element carries exactly one certificate in `x5c`; its key
//! parameters, when present, must match the certificate. A `jwt-svid` element needs a `kid`.

use base64::Engine as _;
use serde::Serialize;
use serde_json::{Map, Value};

use super::authority::{JwtAuthority, X509Authority};
use super::encoding::{B64STD, B64URL};
use super::error::{BundleError, JwkError};
use super::key::{EcCurve, PublicKey};
use super::{Bundle, BundleLimits};
use crate::TrustDomain;

const USE_X509: &str = "x509-svid";
const USE_JWT: &str = "jwt-svid";

#[derive(Serialize)]
struct JwksOut {
    keys: Vec<JwkOut>,
    spiffe_sequence: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    spiffe_refresh_hint: Option<u64>,
}

#[derive(Serialize)]
struct JwkOut {
    #[serde(rename = "use")]
    use_: &'static str,
    kty: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    crv: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    y: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    e: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x5c: Option<Vec<String>>,
}

impl JwkOut {
    fn new(use_: &'static str, key: &PublicKey) -> Self {
        let mut out = Self {
            use_,
            kty: key.kty(),
            kid: None,
            crv: None,
            x: None,
            y: None,
            n: None,
            e: None,
            x5c: None,
        };
        match key {
            PublicKey::Ec { curve, x, y } => {
                out.crv = Some(curve.jwk_name());
                out.x = Some(B64URL.encode(x));
                out.y = Some(B64URL.encode(y));
            }
            PublicKey::Rsa { n, e } => {
                out.n = Some(B64URL.encode(n));
                out.e = Some(B64URL.encode(e));
            }
        }
        out
    }
}

/// Encodes `bundle` as a SPIFFE bundle JWKS document.
pub(super) fn encode(bundle: &Bundle) -> Result<String, BundleError> {
    let mut keys =
        Vec::with_capacity(bundle.x509_authorities().len() + bundle.jwt_authorities().len());
    for authority in bundle.x509_authorities() {
        let key = authority.public_key().map_err(BundleError::AuthorityKey)?;
        let mut jwk = JwkOut::new(USE_X509, &key);
        jwk.x5c = Some(vec![B64STD.encode(authority.der())]);
        keys.push(jwk);
    }
    for authority in bundle.jwt_authorities() {
        let mut jwk = JwkOut::new(USE_JWT, &authority.public_key);
        jwk.kid = Some(authority.key_id.clone());
        keys.push(jwk);
    }
    let doc = JwksOut {
        keys,
        spiffe_sequence: bundle.sequence_number(),
        spiffe_refresh_hint: bundle.refresh_hint(),
    };
    serde_json::to_string_pretty(&doc).map_err(|e| BundleError::InvalidJson {
        reason: e.to_string(),
    })
}

/// Decodes a SPIFFE bundle JWKS document for `trust_domain`.
pub(super) fn decode(
    trust_domain: TrustDomain,
    doc: &[u8],
    limits: &BundleLimits,
) -> Result<Bundle, BundleError> {
    if doc.len() > limits.max_jwks_bytes {
        return Err(BundleError::JwksTooLarge {
            len: doc.len(),
            max: limits.max_jwks_bytes,
        });
    }
    let value: Value = serde_json::from_slice(doc).map_err(|e| BundleError::InvalidJson {
        reason: e.to_string(),
    })?;
    let Value::Object(top) = value else {
        return Err(BundleError::NotAnObject);
    };
    let Some(Value::Array(keys)) = top.get("keys") else {
        return Err(BundleError::MissingKeys);
    };
    if keys.len() > limits.max_keys {
        return Err(BundleError::TooManyKeys {
            count: keys.len(),
            max: limits.max_keys,
        });
    }

    let mut bundle = Bundle::new(trust_domain);
    bundle.set_sequence_number(non_negative(&top, "spiffe_sequence")?.unwrap_or(0));
    bundle.set_refresh_hint(non_negative(&top, "spiffe_refresh_hint")?);
    for (index, key) in keys.iter().enumerate() {
        decode_key(&mut bundle, key).map_err(|error| BundleError::Jwk { index, error })?;
    }
    Ok(bundle)
}

fn non_negative(top: &Map<String, Value>, field: &'static str) -> Result<Option<u64>, BundleError> {
    match top.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or(BundleError::InvalidNumber { field }),
    }
}

fn decode_key(bundle: &mut Bundle, key: &Value) -> Result<(), JwkError> {
    let Value::Object(jwk) = key else {
        return Err(JwkError::NotAnObject);
    };
    let use_ = jwk.get("use").and_then(Value::as_str);
    if use_ != Some(USE_X509) && use_ != Some(USE_JWT) {
        return Ok(()); // Unknown or missing use: ignored (bundle standard §4.2.2).
    }
    let kty = string_param(jwk, "kty")?;
    if kty != "EC" && kty != "RSA" {
        return Ok(()); // Unknown key type: ignored (bundle standard §4.2.1).
    }

    if use_ == Some(USE_X509) {
        let certs = match jwk.get("x5c") {
            Some(Value::Array(certs)) => certs,
            Some(_) => return Err(JwkError::MissingParam { param: "x5c" }),
            None => return Err(JwkError::X5cCount { count: 0 }),
        };
        let [cert] = certs.as_slice() else {
            return Err(JwkError::X5cCount { count: certs.len() });
        };
        let b64 = cert
            .as_str()
            .ok_or(JwkError::MissingParam { param: "x5c" })?;
        let der = B64STD.decode(b64).map_err(|e| JwkError::BadBase64 {
            param: "x5c",
            reason: e.to_string(),
        })?;
        let authority = X509Authority::from_der(der).map_err(|e| JwkError::InvalidCertificate {
            reason: match e {
                BundleError::InvalidCertificate { reason } => reason,
                other => other.to_string(),
            },
        })?;
        let cert_key = authority.public_key()?;
        if cert_key.kty() != kty {
            return Err(JwkError::KeyMismatch);
        }
        if has_key_params(jwk) && key_params(jwk, kty)? != cert_key {
            return Err(JwkError::KeyMismatch);
        }
        bundle.add_x509_authority(authority);
    } else {
        let kid = string_param(jwk, "kid")?.to_owned();
        let public_key = key_params(jwk, kty)?;
        bundle.add_jwt_authority(JwtAuthority {
            key_id: kid,
            public_key,
            expires_at: None,
        })?;
    }
    Ok(())
}

fn string_param<'a>(jwk: &'a Map<String, Value>, param: &'static str) -> Result<&'a str, JwkError> {
    jwk.get(param)
        .and_then(Value::as_str)
        .ok_or(JwkError::MissingParam { param })
}

fn b64url_param(jwk: &Map<String, Value>, param: &'static str) -> Result<Vec<u8>, JwkError> {
    B64URL
        .decode(string_param(jwk, param)?)
        .map_err(|e| JwkError::BadBase64 {
            param,
            reason: e.to_string(),
        })
}

fn has_key_params(jwk: &Map<String, Value>) -> bool {
    ["crv", "x", "y", "n", "e"]
        .iter()
        .any(|p| jwk.contains_key(*p))
}

/// The public key described by the JWK's `crv`/`x`/`y` (EC) or `n`/`e` (RSA) parameters.
fn key_params(jwk: &Map<String, Value>, kty: &str) -> Result<PublicKey, JwkError> {
    if kty == "EC" {
        let crv = string_param(jwk, "crv")?;
        let curve = EcCurve::from_jwk_name(crv).ok_or_else(|| JwkError::UnsupportedCurve {
            crv: crate::id_error::shown(crv),
        })?;
        Ok(PublicKey::ec(
            curve,
            b64url_param(jwk, "x")?,
            b64url_param(jwk, "y")?,
        )?)
    } else {
        Ok(PublicKey::rsa(
            &b64url_param(jwk, "n")?,
            &b64url_param(jwk, "e")?,
        )?)
    }
}
