//! DNS names for X.509-SVID `dNSName` SANs, checked the way SPIRE checks entry DNS names:
//! ASCII hostnames (internationalized names in punycode), an optional leading `*.` wildcard,
//! no trailing dot.

/// Longest DNS name, in bytes (RFC 1035 less the root label).
pub const MAX_DNS_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// Checks `name`; on failure says what is wrong with it (the sentence's subject is the name).
pub(crate) fn check_dns_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.len() > MAX_DNS_NAME_LEN {
        return Err("is longer than 253 bytes");
    }
    if name.ends_with('.') {
        return Err("ends with '.'; drop the trailing dot");
    }
    let host = name.strip_prefix("*.").unwrap_or(name);
    if host.contains('*') {
        return Err("may use '*' only as its whole first label, as in \"*.example.org\"");
    }
    for label in host.split('.') {
        if label.is_empty() {
            return Err("has an empty label (\"..\" or a leading '.')");
        }
        if label.len() > MAX_LABEL_LEN {
            return Err("has a label longer than 63 bytes");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(
                "may only contain letters, digits, '-' and '.' (write internationalized names in \
                 punycode, \"xn--...\")",
            );
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("has a label that starts or ends with '-'");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_hostnames_and_leading_wildcards() {
        for ok in [
            "example.org",
            "localhost",
            "a-b.c1.example",
            "*.example.org",
            "xn--bcher-kva.example",
            "WEB.Example.org",
            "123.example",
        ] {
            assert_eq!(check_dns_name(ok), Ok(()), "{ok}");
        }
        let label = "a".repeat(63);
        assert_eq!(
            check_dns_name(&format!("{label}.{label}.{label}.{}", "a".repeat(61))),
            Ok(())
        );
    }

    #[test]
    fn rejects_malformed_names() {
        for bad in [
            "",
            "example.org.",
            "*.*.example.org",
            "a.*.example.org",
            "*",
            "*example.org",
            "a..b",
            ".a",
            "-a.example",
            "a-.example",
            "a_b.example",
            "bücher.example",
            "a b.example",
            "example.org:443",
        ] {
            assert!(check_dns_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_dns_name(&"a".repeat(64)).is_err());
        assert!(check_dns_name(&format!("{}.a", "a.".repeat(126))).is_err());
    }
}
