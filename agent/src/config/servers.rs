//! `agent.server_address` / `--serverAddress`: the servers the agent may talk to. In the file
//! a string or a list of strings; on the command line a repeatable flag. Every value may hold
//! several entries separated by commas, each `host`, `host:port`, `[ipv6]` or `[ipv6]:port`
//! (a bare IPv6 address takes the default port). A host is an IP address or a DNS name; a
//! name that resolves to several addresses counts as several servers (resolved by the node
//! side at each connection, not here).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::{invalid, ConfigError};

/// Longest DNS name (RFC 1035, without the trailing dot).
const MAX_NAME_LEN: usize = 253;

/// Longest label of a DNS name.
const MAX_LABEL_LEN: usize = 63;

/// The host part of a server address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerHost {
    /// An IP address: the agent connects to it as is.
    Ip(IpAddr),
    /// A DNS name, resolved at each (re)connection; each address it resolves to is a server.
    Name(String),
}

/// One server address: host and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerAddress {
    host: ServerHost,
    port: u16,
}

impl ServerAddress {
    /// An address from its parts.
    pub fn new(host: ServerHost, port: u16) -> Self {
        Self { host, port }
    }

    /// Parses one entry (`host`, `host:port`, `[v6]`, `[v6]:port`, bare IPv6), with
    /// `default_port` when it names no port. The error is the rule broken, with the fix.
    pub fn parse(entry: &str, default_port: u16) -> Result<Self, String> {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err("empty server address; write host or host:port, e.g. \"10.0.0.1:8081\", and separate several with commas".into());
        }
        if entry.contains("://") {
            return Err(
                "write host or host:port without a scheme, e.g. \"server.example.org:8081\"".into(),
            );
        }
        if entry.contains('/') {
            return Err(
                "write host or host:port without a path, e.g. \"server.example.org:8081\"".into(),
            );
        }
        if let Ok(ip) = entry.parse::<Ipv6Addr>() {
            return Ok(Self::new(ServerHost::Ip(IpAddr::V6(ip)), default_port));
        }
        let (host, port) = split_port(entry)?;
        let port = match port {
            None => default_port,
            Some(p) => parse_port(p)?,
        };
        Ok(Self::new(parse_host(host)?, port))
    }

    /// The host.
    pub fn host(&self) -> &ServerHost {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host as written in a URI authority (IPv6 in brackets).
    pub fn host_for_uri(&self) -> String {
        match &self.host {
            ServerHost::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
            ServerHost::Ip(IpAddr::V4(ip)) => ip.to_string(),
            ServerHost::Name(name) => name.clone(),
        }
    }
}

impl fmt::Display for ServerAddress {
    /// `host:port`, IPv6 in brackets: the HTTP/2 authority the agent sends.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host_for_uri(), self.port)
    }
}

/// `host:port` → (`host`, `Some(port)`); `[v6]:port` → (`v6`, ..); `host` → (`host`, `None`).
fn split_port(entry: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = entry.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').ok_or(
            "an IPv6 address opened with '[' must close with ']', e.g. \"[2001:db8::1]:8081\"",
        )?;
        return match after {
            "" => Ok((ip, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((ip, Some(port))),
                None => Err(
                    "after \"[ipv6]\" write \":port\" or nothing, e.g. \"[2001:db8::1]:8081\""
                        .into(),
                ),
            },
        };
    }
    Ok(match entry.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (entry, None),
    })
}

fn parse_port(port: &str) -> Result<u16, String> {
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(format!(
            "the port {port:?} is not a number from 1 to 65535; write host:port, e.g. \"10.0.0.1:8081\", or a bare host to use agent.server_port"
        )),
    }
}

fn parse_host(host: &str) -> Result<ServerHost, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerHost::Ip(ip));
    }
    if host.is_empty() {
        return Err("the host is empty; write a host name or an IP address before the ':'".into());
    }
    if host.contains(':') {
        return Err(
            "write an IPv6 address with a port in brackets, e.g. \"[2001:db8::1]:8081\"".into(),
        );
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "the host name is longer than {MAX_NAME_LEN} characters"
        ));
    }
    for label in name.split('.') {
        let ok_chars = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if label.is_empty()
            || label.len() > MAX_LABEL_LEN
            || !ok_chars
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err(format!(
                "{host:?} is neither an IP address nor a host name (labels of letters, digits, '-' and '_', 1 to {MAX_LABEL_LEN} characters, separated by '.')"
            ));
        }
    }
    Ok(ServerHost::Name(name.to_ascii_lowercase()))
}

/// `agent.server_address` as written: one string or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressList(pub Vec<String>);

impl<'de> Deserialize<'de> for AddressList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;

        impl<'de> Visitor<'de> for ListVisitor {
            type Value = AddressList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a server address string (\"10.0.0.1:8081\") or a list of them ([\"10.0.0.1:8081\", \"10.0.0.2:8081\"])")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<AddressList, E> {
                Ok(AddressList(vec![v.to_owned()]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AddressList, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<String>()? {
                    out.push(v);
                }
                Ok(AddressList(out))
            }
        }

        deserializer.deserialize_any(ListVisitor)
    }
}

/// Parses every value (each may hold comma-separated entries) into addresses, in order,
/// without duplicates. `key` names the source in errors (`agent.server_address`,
/// `--serverAddress`); an entry of a list is named with its index.
pub fn parse_addresses(
    key: &str,
    values: &[String],
    default_port: u16,
) -> Result<Vec<ServerAddress>, ConfigError> {
    if values.is_empty() {
        return Err(invalid(
            key,
            "",
            "list at least one server: host or host:port, e.g. \"10.0.0.1:8081\"",
        ));
    }
    let mut out: Vec<ServerAddress> = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let name = if values.len() > 1 {
            format!("{key}[{i}]")
        } else {
            key.to_owned()
        };
        for entry in value.split(',') {
            let address = ServerAddress::parse(entry, default_port)
                .map_err(|reason| invalid(&name, entry.trim(), &reason))?;
            if !out.contains(&address) {
                out.push(address);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ServerAddress, String> {
        ServerAddress::parse(s, 8081)
    }

    #[test]
    fn entries_with_and_without_ports() {
        let cases = [
            ("10.0.0.1", "10.0.0.1:8081"),
            ("10.0.0.1:9000", "10.0.0.1:9000"),
            ("Server.Example.org", "server.example.org:8081"),
            ("server.example.org.:443", "server.example.org:443"),
            ("tessera_server:1", "tessera_server:1"),
            ("::1", "[::1]:8081"),
            ("[::1]", "[::1]:8081"),
            ("[2001:db8::1]:9000", "[2001:db8::1]:9000"),
            (" localhost ", "localhost:8081"),
        ];
        for (entry, want) in cases {
            assert_eq!(parse(entry).unwrap().to_string(), want, "{entry}");
        }
        assert_eq!(
            parse("10.0.0.1").unwrap().host(),
            &ServerHost::Ip("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            parse("a.org").unwrap().host(),
            &ServerHost::Name("a.org".into())
        );
    }

    #[test]
    fn bad_entries_name_the_rule_and_the_fix() {
        let cases = [
            ("", "empty server address"),
            ("http://a.org:8081", "without a scheme"),
            ("a.org/x", "without a path"),
            ("a.org:80x", "\"80x\" is not a number from 1 to 65535"),
            ("a.org:0", "\"0\" is not a number"),
            ("a.org:70000", "\"70000\""),
            (":8081", "the host is empty"),
            ("[::1", "must close with ']'"),
            ("[::1]8081", "after \"[ipv6]\""),
            ("2001:db8::zz:1", "in brackets"),
            ("a..org", "neither an IP address nor a host name"),
            ("-a.org", "neither an IP address nor a host name"),
            ("a b", "neither an IP address nor a host name"),
        ];
        for (entry, want) in cases {
            let err = parse(entry).unwrap_err();
            assert!(err.contains(want), "{entry:?}: {err}");
        }
        let long = format!("{}.org", "a".repeat(64));
        assert!(parse(&long).is_err());
        let very_long = vec!["a"; 130].join(".");
        assert!(parse(&very_long).unwrap_err().contains("longer than 253"));
    }

    #[test]
    fn lists_and_comma_values_in_order_without_duplicates() {
        let values = vec!["10.0.0.1, 10.0.0.2:9000".to_owned(), "a.org".to_owned()];
        let got = parse_addresses("--serverAddress", &values, 8081).unwrap();
        let got: Vec<String> = got.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["10.0.0.1:8081", "10.0.0.2:9000", "a.org:8081"]);
        let dup = vec!["10.0.0.1".to_owned(), "10.0.0.1:8081".to_owned()];
        assert_eq!(parse_addresses("k", &dup, 8081).unwrap().len(), 1);
    }

    fn invalid_parts(e: ConfigError) -> (String, String, String) {
        match e {
            ConfigError::Invalid { key, value, reason } => (key, value, reason),
            other => panic!("not an invalid value: {other}"),
        }
    }

    #[test]
    fn a_bad_entry_is_named_with_its_place() {
        let values = vec!["10.0.0.1".to_owned(), "10.0.0.2:x".to_owned()];
        let err = parse_addresses("agent.server_address", &values, 8081).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("agent.server_address[1] \"10.0.0.2:x\": the port \"x\""),
            "{text}"
        );
        let (key, value, reason) = invalid_parts(err);
        assert_eq!(key, "agent.server_address[1]");
        assert_eq!(value, "10.0.0.2:x");
        assert!(reason.contains("agent.server_port"), "{reason}");
        let (key, value, _) =
            invalid_parts(parse_addresses("--serverAddress", &["a,,b".into()], 8081).unwrap_err());
        assert_eq!((key.as_str(), value.as_str()), ("--serverAddress", ""));
        let (_, _, reason) =
            invalid_parts(parse_addresses("agent.server_address", &[], 8081).unwrap_err());
        assert!(reason.contains("at least one server"), "{reason}");
    }

    #[test]
    fn the_file_takes_a_string_or_a_list() {
        #[derive(Deserialize)]
        struct T {
            a: AddressList,
        }
        let one: T = toml::from_str("a = \"x:1\"").unwrap();
        assert_eq!(one.a.0, ["x:1"]);
        let many: T = toml::from_str("a = [\"x:1\", \"y\"]").unwrap();
        assert_eq!(many.a.0, ["x:1", "y"]);
        let err = toml::from_str::<T>("a = 3").err().unwrap().to_string();
        assert!(err.contains("a server address string"), "{err}");
        let err = toml::from_str::<T>("a = [3]").err().unwrap().to_string();
        assert!(err.contains("string"), "{err}");
    }
}
