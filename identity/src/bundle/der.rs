//! Just enough DER writing to build a SubjectPublicKeyInfo from JWK key parameters.
//! (Reading goes through x509-parser.)

/// DER of `OBJECT IDENTIFIER 1.2.840.10045.2.1` (id-ecPublicKey).
pub(crate) const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// DER of `OBJECT IDENTIFIER 1.2.840.113549.1.1.1` (rsaEncryption).
pub(crate) const OID_RSA_ENCRYPTION: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
/// DER of `OBJECT IDENTIFIER 1.2.840.10045.3.1.7` (P-256).
pub(crate) const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of `OBJECT IDENTIFIER 1.3.132.0.34` (P-384).
pub(crate) const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// DER of `OBJECT IDENTIFIER 1.3.132.0.35` (P-521).
pub(crate) const OID_P521: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];
/// DER of `NULL`.
pub(crate) const NULL: &[u8] = &[0x05, 0x00];

const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_SEQUENCE: u8 = 0x30;

/// Appends a tag-length-value with `content` to `out`.
fn tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        // Short form; the cast cannot truncate below 0x80.
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let first = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        let significant = &bytes[first..];
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
}

/// `SEQUENCE { parts... }`, the parts already DER-encoded.
pub(crate) fn sequence(parts: &[&[u8]]) -> Vec<u8> {
    let content: Vec<u8> = parts.concat();
    let mut out = Vec::with_capacity(content.len() + 4);
    tlv(&mut out, TAG_SEQUENCE, &content);
    out
}

/// `BIT STRING` holding `bytes` whole (no unused bits).
pub(crate) fn bit_string(bytes: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(bytes.len() + 1);
    content.push(0);
    content.extend_from_slice(bytes);
    let mut out = Vec::with_capacity(content.len() + 4);
    tlv(&mut out, TAG_BIT_STRING, &content);
    out
}

/// `INTEGER` of the unsigned big-endian `magnitude` (minimal, with a 0x00 pad if the high bit
/// is set).
pub(crate) fn unsigned_integer(magnitude: &[u8]) -> Vec<u8> {
    let trimmed = trim_leading_zeros(magnitude);
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|&b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    let mut out = Vec::with_capacity(content.len() + 4);
    tlv(&mut out, TAG_INTEGER, &content);
    out
}

/// `bytes` without leading zero bytes (empty if all are zero).
pub(crate) fn trim_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_use_short_and_long_forms() {
        assert_eq!(bit_string(&[0xaa]), [0x03, 0x02, 0x00, 0xaa]);
        let long = bit_string(&[0u8; 200]);
        assert_eq!(&long[..4], &[0x03, 0x81, 201, 0x00]);
        let longer = sequence(&[&[0u8; 300]]);
        assert_eq!(&longer[..4], &[0x30, 0x82, 0x01, 0x2c]);
    }

    #[test]
    fn integers_are_minimal_and_positive() {
        assert_eq!(
            unsigned_integer(&[0x01, 0x00, 0x01]),
            [0x02, 0x03, 0x01, 0x00, 0x01]
        );
        assert_eq!(unsigned_integer(&[0x00, 0x00, 0x7f]), [0x02, 0x01, 0x7f]);
        assert_eq!(unsigned_integer(&[0x80]), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(unsigned_integer(&[]), [0x02, 0x01, 0x00]);
    }
}
