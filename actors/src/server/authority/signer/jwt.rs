//! JWT-SVIDs: compact JWS (RFC 7515) with header `{alg, kid, typ: "JWT"}` and claims
//! `{aud, exp, iat, sub}` (JWT-SVID standard; `aud` always an array, as SPIRE sends it).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Serialize;

use super::{SignerSettings, SigningJwtKey, SvidRejection};

#[derive(Serialize)]
struct Header<'a> {
    alg: &'a str,
    kid: &'a str,
    typ: &'a str,
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a [String],
    exp: i64,
    iat: i64,
    sub: &'a str,
}

/// Signs a JWT-SVID for `sub` with `key`.
pub(super) fn mint(
    key: &SigningJwtKey,
    sub: &str,
    aud: &[String],
    iat: i64,
    exp: i64,
) -> Result<String, SvidRejection> {
    let failed = |reason: String| SvidRejection::Signing { reason };
    let header = serde_json::to_vec(&Header {
        alg: key.key.jws_alg(),
        kid: &key.record.kid,
        typ: "JWT",
    })
    .map_err(|e| failed(e.to_string()))?;
    let claims =
        serde_json::to_vec(&Claims { aud, exp, iat, sub }).map_err(|e| failed(e.to_string()))?;
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(claims));
    let signature = key
        .key
        .sign_jws(token.as_bytes())
        .map_err(|e| failed(e.to_string()))?;
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature));
    Ok(token)
}

/// Drops empty audiences (as SPIRE does) and checks the rest against the limits.
pub(super) fn check_audience(
    audience: Vec<String>,
    settings: &SignerSettings,
) -> Result<Vec<String>, SvidRejection> {
    let audience: Vec<String> = audience.into_iter().filter(|a| !a.is_empty()).collect();
    if audience.is_empty() {
        return Err(SvidRejection::NoAudience);
    }
    if audience.len() > settings.max_audiences {
        return Err(SvidRejection::TooManyAudiences {
            count: audience.len(),
            max: settings.max_audiences,
        });
    }
    for a in &audience {
        let invalid = |reason: String| SvidRejection::InvalidAudience {
            audience: a.chars().take(64).collect(),
            reason,
        };
        if a.len() > settings.max_audience_len {
            return Err(invalid(format!(
                "it is longer than {} bytes (server config `max_audience_len`)",
                settings.max_audience_len
            )));
        }
        if a.chars().any(char::is_control) {
            return Err(invalid("it has control characters".into()));
        }
    }
    Ok(audience)
}
