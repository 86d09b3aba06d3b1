//! JWT-SVIDs: compact JWS (RFC 7515) with header `{alg, kid, typ: "JWT"}` and claims
//! `{aud, exp, iat, sub}` (JWT-SVID standard; `aud` always an array, as SPIRE sends it).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Serialize;

use super::{SigningJwtKey, SvidRejection};

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
    let claims = serde_json::to_vec(&Claims { aud, exp, iat, sub }).map_err(|e| failed(e.to_string()))?;
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
