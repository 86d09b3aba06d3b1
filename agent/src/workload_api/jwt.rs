//! `ValidateJWTSVID`: a JWT-SVID (compact JWS) checked per the JWT-SVID standard against the
//! JWT authorities of its trust domain's bundle.
//!
//! Accepted: `alg` ES256, ES384 (P-256/P-384 keys), RS256/384/512 and PS256/384/512 (RSA keys,
//! 2048 bits and up); `typ`, when present, `JWT` or `JOSE`; no `crit`. Required claims: `sub`
//! (a SPIFFE ID), `aud` (a string or an array of strings containing the validator's audience)
//! and `exp` (in the future). `nbf`, when present, must not be in the future.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm};
use serde_json::{Map, Value};
use tessera_identity::{Bundle, EcCurve, PublicKey, SpiffeId, TrustDomain};

/// Why a token is not a valid JWT-SVID for the audience.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// The token is longer than `limits.max_jwt_bytes`.
    #[error("the token is {len} bytes, over the limit of {max} bytes (limits.max_jwt_bytes)")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not three base64url parts, or a part that is not the JSON it must be.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// An `alg` outside the supported set.
    #[error("unsupported token algorithm {0:?}; JWT-SVIDs are signed with ES256, ES384, RS256/384/512 or PS256/384/512")]
    UnsupportedAlgorithm(String),
    /// A `typ` header other than `JWT` or `JOSE`.
    #[error("token type {0:?} is not allowed; a JWT-SVID's typ is JWT or JOSE")]
    BadType(String),
    /// A `crit` header: no extension is understood.
    #[error("token has critical header extensions, which are not supported")]
    Critical,
    /// The header has no `kid`.
    #[error("token header has no key id (kid)")]
    MissingKeyId,
    /// A required claim is absent or of the wrong type.
    #[error("token claim {0:?} is missing or malformed")]
    BadClaim(&'static str),
    /// `sub` is not a SPIFFE ID.
    #[error("token subject {subject:?} is not a SPIFFE ID: {reason}")]
    BadSubject {
        /// The claim.
        subject: String,
        /// Why.
        reason: String,
    },
    /// No bundle of the subject's trust domain is available to the caller.
    #[error("no keys found for trust domain {0:?}")]
    NoBundle(String),
    /// The bundle has no JWT authority with the token's key id.
    #[error("key {kid:?} not found in the bundle of trust domain {trust_domain:?}")]
    UnknownKey {
        /// The key id.
        kid: String,
        /// The trust domain.
        trust_domain: String,
    },
    /// The key named by `kid` is not of the kind `alg` needs.
    #[error("key {kid:?} cannot verify {alg} signatures")]
    KeyMismatch {
        /// The key id.
        kid: String,
        /// The algorithm.
        alg: String,
    },
    /// The signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` is not in the future.
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token is not valid yet")]
    NotYetValid,
    /// `aud` does not contain the audience.
    #[error("expected audience {expected:?} (audience={got:?})")]
    AudienceMismatch {
        /// The validator's audience.
        expected: String,
        /// The token's.
        got: Vec<String>,
    },
}

impl JwtError {
    /// Whether the error is a limit being exceeded (ResourceExhausted) rather than a bad
    /// token (InvalidArgument).
    pub fn is_limit(&self) -> bool {
        matches!(self, Self::TooLarge { .. })
    }
}

/// A token that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedJwt {
    /// Its `sub`.
    pub spiffe_id: SpiffeId,
    /// Every claim of its payload.
    pub claims: Map<String, Value>,
}

/// The supported algorithms.
#[derive(Debug, Clone, Copy)]
enum Alg {
    Es256,
    Es384,
    Rs(&'static signature::RsaParameters),
}

impl Alg {
    fn parse(name: &str) -> Result<Self, JwtError> {
        Ok(match name {
            "ES256" => Self::Es256,
            "ES384" => Self::Es384,
            "RS256" => Self::Rs(&signature::RSA_PKCS1_2048_8192_SHA256),
            "RS384" => Self::Rs(&signature::RSA_PKCS1_2048_8192_SHA384),
            "RS512" => Self::Rs(&signature::RSA_PKCS1_2048_8192_SHA512),
            "PS256" => Self::Rs(&signature::RSA_PSS_2048_8192_SHA256),
            "PS384" => Self::Rs(&signature::RSA_PSS_2048_8192_SHA384),
            "PS512" => Self::Rs(&signature::RSA_PSS_2048_8192_SHA512),
            other => {
                return Err(JwtError::UnsupportedAlgorithm(
                    other.chars().take(32).collect(),
                ))
            }
        })
    }
}

/// A token split and decoded, not yet verified.
#[derive(Debug)]
struct Parsed<'a> {
    alg: String,
    kid: String,
    claims: Map<String, Value>,
    signing_input: &'a str,
    signature: Vec<u8>,
}

fn parse(token: &str, max_len: usize) -> Result<Parsed<'_>, JwtError> {
    if token.len() > max_len {
        return Err(JwtError::TooLarge {
            len: token.len(),
            max: max_len,
        });
    }
    let malformed = |what: &str| JwtError::Malformed(what.to_owned());
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(
            "expected three dot-separated parts (compact JWS)",
        ));
    };
    let decode = |part: &str, what: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| malformed(&format!("{what} is not base64url")))
    };
    let header: Map<String, Value> = serde_json::from_slice(&decode(h, "the header")?)
        .map_err(|_| malformed("the header is not a JSON object"))?;
    let claims: Map<String, Value> = serde_json::from_slice(&decode(p, "the payload")?)
        .map_err(|_| malformed("the payload is not a JSON object"))?;
    let signature = decode(s, "the signature")?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => a.clone(),
        _ => return Err(malformed("the header has no alg")),
    };
    match header.get("typ") {
        None => {}
        Some(Value::String(t)) if t == "JWT" || t == "JOSE" => {}
        Some(other) => {
            return Err(JwtError::BadType(
                other.to_string().chars().take(32).collect(),
            ))
        }
    }
    if header.contains_key("crit") {
        return Err(JwtError::Critical);
    }
    let kid = match header.get("kid") {
        Some(Value::String(k)) if !k.is_empty() => k.clone(),
        _ => return Err(JwtError::MissingKeyId),
    };
    Ok(Parsed {
        alg,
        kid,
        claims,
        signing_input: &token[..h.len() + 1 + p.len()],
        signature,
    })
}

/// The token's `sub`, read without verifying anything: to pick the bundle to verify with.
pub fn unverified_subject(token: &str, max_len: usize) -> Result<SpiffeId, JwtError> {
    subject(&parse(token, max_len)?.claims)
}

fn subject(claims: &Map<String, Value>) -> Result<SpiffeId, JwtError> {
    let Some(Value::String(sub)) = claims.get("sub") else {
        return Err(JwtError::BadClaim("sub"));
    };
    SpiffeId::new(sub).map_err(|e| JwtError::BadSubject {
        subject: sub.chars().take(256).collect(),
        reason: e.to_string(),
    })
}

/// Validates `token` for `audience` at `now` (Unix seconds) with the bundle `bundle_for`
/// returns for the subject's trust domain.
pub fn validate<'b>(
    token: &str,
    audience: &str,
    bundle_for: impl Fn(&TrustDomain) -> Option<&'b Bundle>,
    now: i64,
    max_len: usize,
) -> Result<ValidatedJwt, JwtError> {
    let parsed = parse(token, max_len)?;
    let alg = Alg::parse(&parsed.alg)?;
    let spiffe_id = subject(&parsed.claims)?;
    let td = spiffe_id.trust_domain();
    let bundle = bundle_for(td).ok_or_else(|| JwtError::NoBundle(td.to_string()))?;
    let authority = bundle
        .jwt_authority(&parsed.kid)
        .ok_or_else(|| JwtError::UnknownKey {
            kid: parsed.kid.chars().take(256).collect(),
            trust_domain: td.to_string(),
        })?;
    verify(
        alg,
        &authority.public_key,
        parsed.signing_input.as_bytes(),
        &parsed.signature,
    )
    .map_err(|e| match e {
        VerifyError::KeyMismatch => JwtError::KeyMismatch {
            kid: parsed.kid.clone(),
            alg: parsed.alg.clone(),
        },
        VerifyError::BadSignature => JwtError::BadSignature,
    })?;
    let claims = parsed.claims;
    let exp = claims
        .get("exp")
        .and_then(Value::as_f64)
        .ok_or(JwtError::BadClaim("exp"))?;
    // Seconds fit f64 exactly far beyond any real expiry.
    #[allow(clippy::cast_precision_loss)]
    let now_f = now as f64;
    if exp <= now_f {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf.as_f64().ok_or(JwtError::BadClaim("nbf"))?;
        if nbf > now_f {
            return Err(JwtError::NotYetValid);
        }
    }
    let audiences: Vec<String> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or(JwtError::BadClaim("aud"))?,
        _ => return Err(JwtError::BadClaim("aud")),
    };
    if !audiences.iter().any(|a| a == audience) {
        return Err(JwtError::AudienceMismatch {
            expected: audience.to_owned(),
            got: audiences.into_iter().take(32).collect(),
        });
    }
    Ok(ValidatedJwt { spiffe_id, claims })
}

enum VerifyError {
    KeyMismatch,
    BadSignature,
}

fn verify(alg: Alg, key: &PublicKey, message: &[u8], sig: &[u8]) -> Result<(), VerifyError> {
    let ec = |algorithm: &'static dyn VerificationAlgorithm, x: &[u8], y: &[u8]| {
        let mut point = Vec::with_capacity(1 + x.len() + y.len());
        point.push(0x04);
        point.extend_from_slice(x);
        point.extend_from_slice(y);
        UnparsedPublicKey::new(algorithm, point)
            .verify(message, sig)
            .map_err(|_| VerifyError::BadSignature)
    };
    match (alg, key) {
        (
            Alg::Es256,
            PublicKey::Ec {
                curve: EcCurve::P256,
                x,
                y,
            },
        ) => ec(&signature::ECDSA_P256_SHA256_FIXED, x, y),
        (
            Alg::Es384,
            PublicKey::Ec {
                curve: EcCurve::P384,
                x,
                y,
            },
        ) => ec(&signature::ECDSA_P384_SHA384_FIXED, x, y),
        (Alg::Rs(params), PublicKey::Rsa { n, e }) => RsaPublicKeyComponents { n, e }
            .verify(params, message, sig)
            .map_err(|_| VerifyError::BadSignature),
        _ => Err(VerifyError::KeyMismatch),
    }
}

/// The claims as a `google.protobuf.Struct` (numbers become doubles, as JSON has no other).
pub fn claims_struct(claims: &Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: claims
            .iter()
            .map(|(k, v)| (k.clone(), to_value(v)))
            .collect(),
    }
}

fn to_value(v: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(to_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(claims_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests;
