//! Checks a JWT-SVID independently of the server's code: header, `kid` lookup in a bundle,
//! ECDSA signature with ring, and the claims. Shared by the test crates (`#[path]`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED};
use tessera_identity::{Bundle, EcCurve, PublicKey};

/// Verifies `token` against the JWT authorities of `bundle`; returns its claims.
pub fn verify_jwt_svid(
    token: &str,
    bundle: &Bundle,
    audience: &str,
    now: i64,
) -> Result<serde_json::Value, String> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return Err(format!("{} parts, want 3", parts.len()));
    };
    let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).map_err(|e| e.to_string());
    let header: serde_json::Value =
        serde_json::from_slice(&decode(header)?).map_err(|e| e.to_string())?;
    let kid = header["kid"].as_str().ok_or("no kid")?;
    let authority = bundle
        .jwt_authority(kid)
        .ok_or_else(|| format!("kid {kid} not in the bundle"))?;
    let PublicKey::Ec { curve, x, y } = &authority.public_key else {
        return Err("not an EC key".into());
    };
    let (alg, want_alg) = match curve {
        EcCurve::P256 => (&ECDSA_P256_SHA256_FIXED, "ES256"),
        EcCurve::P384 => (&ECDSA_P384_SHA384_FIXED, "ES384"),
        EcCurve::P521 => return Err("P-521 is not a JWT-SVID curve Tessera signs with".into()),
    };
    if header["alg"] != want_alg {
        return Err(format!("alg {} for a {want_alg} key", header["alg"]));
    }
    let mut point = vec![4u8];
    point.extend_from_slice(x);
    point.extend_from_slice(y);
    let signed = &token[..token.rfind('.').ok_or("no signature")?];
    UnparsedPublicKey::new(alg, point)
        .verify(signed.as_bytes(), &decode(signature)?)
        .map_err(|_| "bad signature".to_string())?;
    let claims: serde_json::Value =
        serde_json::from_slice(&decode(claims)?).map_err(|e| e.to_string())?;
    let aud_ok = match &claims["aud"] {
        serde_json::Value::String(a) => a == audience,
        serde_json::Value::Array(a) => a.iter().any(|v| v == audience),
        _ => false,
    };
    if !aud_ok {
        return Err(format!("aud {} lacks {audience}", claims["aud"]));
    }
    if claims["exp"].as_i64().is_none_or(|exp| exp <= now) {
        return Err("expired or no exp".into());
    }
    Ok(claims)
}
