//! Reading batches for `entry create|update --data FILE` and `entry delete --file FILE`: SPIRE's
//! JSON, read bounded (file or stdin for `-`), checked item by item into wire entries or ids.
//! Every error names the file, the entry's index and the field, and the fix.
//!
//! The entry format is SPIRE's (`{"entries": [{"spiffe_id": "spiffe://...", "parent_id": ...,
//! "selectors": [{"type": "unix", "value": "uid:1000"}], "x509_svid_ttl": 3600, "jwt_svid_ttl",
//! "federates_with", "entry_id", "admin", "downstream", "entryExpiry", "dns_names",
//! "store_svid", "hint"}]}`). So that `entry show --output json` can be edited and fed back,
//! IDs may also be `{"trust_domain", "path"}` objects, `id` stands for `entry_id` and
//! `expires_at` for `entryExpiry`; `revision_number` and `created_at` are read-only and
//! ignored. Unlike SPIRE, an unknown key is refused (a misspelt `selector` would otherwise
//! create an entry without it). Deletion reads `{"ids": ["...", ...]}`.

use serde_json::{Map, Value};
use tessera_identity::{EntryId, Selector, SpiffeId, TrustDomain};
use tessera_proto::spire::api::types;

use crate::cli::common::{read_input, CliError};
use crate::convert::{selector_to_proto, spiffe_id_to_proto};
use crate::timefmt::parse_timestamp;

/// Largest `--data` / `--file` accepted.
pub const MAX_DATA_BYTES: u64 = 16 * 1024 * 1024;
/// Most entries (or ids) in one file: the admin API's default `limits.max_batch_size`, as
/// the whole file goes to the server in one batch call.
pub const MAX_DATA_ENTRIES: usize = 1_000;

/// What the entries are for: `create` needs the identity fields, `update` also the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `entry create --data`.
    Create,
    /// `entry update --data`: every field is replaced, as SPIRE's update does.
    Update,
}

/// The keys an entry may have (SPIRE's and `entry show --output json`'s).
const KEYS: &[&str] = &[
    "entry_id",
    "id",
    "spiffe_id",
    "parent_id",
    "selectors",
    "x509_svid_ttl",
    "jwt_svid_ttl",
    "federates_with",
    "dns_names",
    "admin",
    "downstream",
    "store_svid",
    "hint",
    "entryExpiry",
    "expires_at",
    "revision_number",
    "created_at",
];

/// Reads and parses `--data PATH` (`-`: stdin).
pub fn read_entries(
    verb: &'static str,
    path: &str,
    purpose: Purpose,
) -> Result<Vec<types::Entry>, CliError> {
    let data = read_input(verb, "--data", path, MAX_DATA_BYTES)?;
    parse_entries(verb, path, &data, purpose)
}

/// Reads and parses `--file PATH` (`-`: stdin).
pub fn read_ids(verb: &'static str, path: &str) -> Result<Vec<String>, CliError> {
    let data = read_input(verb, "--file", path, MAX_DATA_BYTES)?;
    parse_ids(verb, path, &data)
}

fn document<'a>(
    verb: &'static str,
    flag: &'static str,
    path: &str,
    data: &[u8],
    key: &'static str,
    doc: &'a mut Value,
) -> Result<&'a [Value], CliError> {
    let bad = |reason: String| CliError::Flag {
        verb,
        flag,
        value: path.to_owned(),
        reason,
    };
    *doc = serde_json::from_slice(data).map_err(|e| bad(format!("is not valid JSON: {e}")))?;
    let items = doc
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| bad(format!("has no {key:?} array at the top level")))?;
    if items.is_empty() {
        return Err(bad(format!("{key:?} is empty: nothing to do")));
    }
    if items.len() > MAX_DATA_ENTRIES {
        return Err(bad(format!(
            "has {} items in {key:?}, more than {MAX_DATA_ENTRIES} (the admin API's batch limit, limits.max_batch_size); split the file",
            items.len()
        )));
    }
    Ok(items)
}

/// Parses SPIRE's entry batch JSON.
pub fn parse_entries(
    verb: &'static str,
    path: &str,
    data: &[u8],
    purpose: Purpose,
) -> Result<Vec<types::Entry>, CliError> {
    let mut doc = Value::Null;
    let items = document(verb, "--data", path, data, "entries", &mut doc)?;
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let at = Item { verb, path, index };
            let fields = item
                .as_object()
                .ok_or_else(|| at.err("", "must be a JSON object"))?;
            at.entry(fields, purpose)
        })
        .collect()
}

/// Parses SPIRE's `{"ids": [...]}`.
pub fn parse_ids(verb: &'static str, path: &str, data: &[u8]) -> Result<Vec<String>, CliError> {
    let mut doc = Value::Null;
    let items = document(verb, "--file", path, data, "ids", &mut doc)?;
    items
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let bad = |reason: String| CliError::Usage {
                verb,
                message: format!("--file {path}: ids[{index}]: {reason}"),
            };
            let s = v
                .as_str()
                .ok_or_else(|| bad(format!("must be a string entry ID, not {v}")))?;
            EntryId::new(s)
                .map(|id| id.as_str().to_owned())
                .map_err(|e| bad(e.to_string()))
        })
        .collect()
}

/// One item of the file, to name it in errors.
struct Item<'a> {
    verb: &'static str,
    path: &'a str,
    index: usize,
}

impl Item<'_> {
    fn err(&self, key: &str, rule: &str) -> CliError {
        let key = if key.is_empty() {
            String::new()
        } else {
            format!(" {key}:")
        };
        CliError::Usage {
            verb: self.verb,
            message: format!("--data {}: entries[{}]:{key} {rule}", self.path, self.index),
        }
    }

    fn entry(&self, f: &Map<String, Value>, purpose: Purpose) -> Result<types::Entry, CliError> {
        if let Some(k) = f.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(self.err(
                k,
                &format!("unknown field; the fields are {}", KEYS.join(", ")),
            ));
        }
        let pick = |a: &'static str,
                    b: &'static str|
         -> Result<Option<(&'static str, &Value)>, CliError> {
            match (f.get(a), f.get(b)) {
                (Some(_), Some(_)) => Err(self.err(b, &format!("give {a} or {b}, not both"))),
                (Some(v), None) => Ok(Some((a, v))),
                (None, Some(v)) => Ok(Some((b, v))),
                (None, None) => Ok(None),
            }
        };
        let mut e = types::Entry::default();
        if let Some((k, v)) = pick("entry_id", "id")? {
            let s = self.string(k, v)?;
            if !s.is_empty() {
                e.id = EntryId::new(&s)
                    .map_err(|err| self.err(k, &err.to_string()))?
                    .as_str()
                    .to_owned();
            }
        }
        if purpose == Purpose::Update && e.id.is_empty() {
            return Err(self.err(
                "entry_id",
                "is required to update an entry (the entry to replace)",
            ));
        }
        let spiffe_id = match f.get("spiffe_id") {
            Some(v) => self.spiffe_id("spiffe_id", v)?,
            None => {
                return Err(self.err(
                    "spiffe_id",
                    "is required (e.g. \"spiffe://example.org/web\")",
                ))
            }
        };
        e.spiffe_id = Some(spiffe_id_to_proto(&spiffe_id));
        e.parent_id =
            match f.get("parent_id") {
                Some(v) => Some(spiffe_id_to_proto(&self.spiffe_id("parent_id", v)?)),
                None => return Err(self.err(
                    "parent_id",
                    "is required: the SPIFFE ID of the agent (or entry) the workloads run under",
                )),
            };
        e.selectors = match f.get("selectors") {
            Some(Value::Array(list)) if !list.is_empty() => list
                .iter()
                .enumerate()
                .map(|(i, s)| self.selector(i, s))
                .collect::<Result<_, _>>()?,
            _ => {
                return Err(self.err(
                    "selectors",
                    "needs at least one {\"type\": ..., \"value\": ...} selector",
                ))
            }
        };
        if let Some(v) = f.get("x509_svid_ttl") {
            e.x509_svid_ttl = self.ttl("x509_svid_ttl", v)?;
        }
        if let Some(v) = f.get("jwt_svid_ttl") {
            e.jwt_svid_ttl = self.ttl("jwt_svid_ttl", v)?;
        }
        if let Some(v) = f.get("federates_with") {
            e.federates_with = self
                .strings("federates_with", v)?
                .into_iter()
                .map(|td| {
                    TrustDomain::from_name_or_id(&td)
                        .map(|td| td.as_str().to_owned())
                        .map_err(|err| self.err("federates_with", &err.to_string()))
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = f.get("dns_names") {
            e.dns_names = self.strings("dns_names", v)?;
        }
        for (key, slot) in [
            ("admin", &mut e.admin),
            ("downstream", &mut e.downstream),
            ("store_svid", &mut e.store_svid),
        ] {
            if let Some(v) = f.get(key) {
                *slot = v
                    .as_bool()
                    .ok_or_else(|| self.err(key, &format!("must be true or false, not {v}")))?;
            }
        }
        if let Some(v) = f.get("hint") {
            e.hint = self.string("hint", v)?;
        }
        if let Some((k, v)) = pick("entryExpiry", "expires_at")? {
            e.expires_at = self.time(k, v)?;
        }
        Ok(e)
    }

    fn string(&self, key: &str, v: &Value) -> Result<String, CliError> {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| self.err(key, &format!("must be a string, not {v}")))
    }

    fn strings(&self, key: &str, v: &Value) -> Result<Vec<String>, CliError> {
        let list = v
            .as_array()
            .ok_or_else(|| self.err(key, &format!("must be an array of strings, not {v}")))?;
        list.iter()
            .enumerate()
            .map(|(i, s)| self.string(&format!("{key}[{i}]"), s))
            .collect()
    }

    /// `"spiffe://td/path"`, or `{"trust_domain": "td", "path": "/path"}` as `entry show
    /// --output json` prints it.
    fn spiffe_id(&self, key: &str, v: &Value) -> Result<SpiffeId, CliError> {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Object(o) => {
                let part = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or_default();
                format!("spiffe://{}{}", part("trust_domain"), part("path"))
            }
            other => {
                return Err(self.err(
                    key,
                    &format!(
                    "must be a SPIFFE ID string such as \"spiffe://example.org/web\", not {other}"
                ),
                ))
            }
        };
        SpiffeId::new(&text).map_err(|e| self.err(key, &e.to_string()))
    }

    fn selector(&self, i: usize, v: &Value) -> Result<types::Selector, CliError> {
        let key = format!("selectors[{i}]");
        let part = |k: &str| v.get(k).and_then(Value::as_str);
        let (Some(t), Some(value)) = (part("type"), part("value")) else {
            return Err(self.err(
                &key,
                &format!("must be {{\"type\": \"unix\", \"value\": \"uid:1000\"}}, not {v}"),
            ));
        };
        Selector::new(t, value)
            .map(|s| selector_to_proto(&s))
            .map_err(|e| self.err(&key, &e.to_string()))
    }

    /// Seconds, 0 (the server's default) to `i32::MAX` (the wire's type).
    fn ttl(&self, key: &str, v: &Value) -> Result<i32, CliError> {
        v.as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                self.err(
                    key,
                    &format!(
                        "must be whole seconds from 0 (the server's default) to {}, not {v}",
                        i32::MAX
                    ),
                )
            })
    }

    /// Unix seconds (SPIRE), or an RFC 3339 string.
    fn time(&self, key: &str, v: &Value) -> Result<i64, CliError> {
        let parsed = match v {
            Value::Number(n) => n.as_i64().filter(|n| *n >= 0),
            Value::String(s) => parse_timestamp(s),
            _ => None,
        };
        parsed.ok_or_else(|| {
            self.err(
                key,
                &format!("must be Unix seconds or an RFC 3339 time such as \"2030-01-02T03:04:05Z\", not {v}"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(text: &str, purpose: Purpose) -> Result<Vec<types::Entry>, String> {
        parse_entries("entry create", "f.json", text.as_bytes(), purpose).map_err(|e| e.to_string())
    }

    #[test]
    fn spire_format_and_show_output_both_parse() {
        let got = entries(
            r#"{"entries": [
                {"spiffe_id": "spiffe://example.org/web", "parent_id": "spiffe://example.org/node",
                 "selectors": [{"type": "unix", "value": "uid:1000"}], "x509_svid_ttl": 3600,
                 "jwt_svid_ttl": 300, "federates_with": ["spiffe://partner.org"],
                 "dns_names": ["web"], "admin": true, "downstream": false, "hint": "h",
                 "entryExpiry": 2000000000, "entry_id": "e1"},
                {"id": "e2", "spiffe_id": {"trust_domain": "example.org", "path": "/db"},
                 "parent_id": {"trust_domain": "example.org", "path": "/node"},
                 "selectors": [{"type": "unix", "value": "uid:1"}],
                 "expires_at": "2035-01-01T00:00:00Z", "revision_number": 3, "created_at": 5}
            ]}"#,
            Purpose::Update,
        )
        .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].id, "e1");
        assert_eq!(got[0].x509_svid_ttl, 3600);
        assert_eq!(got[0].federates_with, ["partner.org"]);
        assert_eq!(got[0].expires_at, 2_000_000_000);
        assert!(got[0].admin);
        assert_eq!(got[1].spiffe_id.as_ref().unwrap().path, "/db");
        assert_eq!(got[1].expires_at, 2_051_222_400);
        assert_eq!(got[1].selectors[0].value, "uid:1");
    }

    #[test]
    fn errors_name_the_entry_index_and_the_field() {
        let base = r#""parent_id": "spiffe://example.org/n", "selectors": [{"type": "unix", "value": "uid:1"}]"#;
        let ok = format!(r#"{{"spiffe_id": "spiffe://example.org/a", {base}}}"#);
        for (second, want) in [
            (
                format!(r#"{{"spiffe_id": "spiffe://Ex.org/a", {base}}}"#),
                "--data f.json: entries[1]: spiffe_id: \"spiffe://Ex.org/a\": trust domain characters",
            ),
            (
                format!(r#"{{"spiffe_id": "spiffe://example.org/a", {base}, "x509_svid_ttl": -1}}"#),
                "entries[1]: x509_svid_ttl: must be whole seconds",
            ),
            (
                format!(r#"{{"spiffe_id": "spiffe://example.org/a", {base}, "selector": []}}"#),
                "entries[1]: selector: unknown field",
            ),
            (
                r#"{"spiffe_id": "spiffe://example.org/a", "parent_id": "spiffe://example.org/n", "selectors": [{"type": "unix"}]}"#.into(),
                "entries[1]: selectors[0]: must be",
            ),
            (
                r#"{"spiffe_id": "spiffe://example.org/a", "parent_id": "spiffe://example.org/n"}"#.into(),
                "entries[1]: selectors: needs at least one",
            ),
            (
                format!(r#"{{{base}}}"#),
                "entries[1]: spiffe_id: is required",
            ),
            ("[1]".into(), "entries[1]: must be a JSON object"),
        ] {
            let text = format!(r#"{{"entries": [{ok}, {second}]}}"#);
            let err = entries(&text, Purpose::Create).unwrap_err();
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
        let err = entries(&format!(r#"{{"entries": [{ok}]}}"#), Purpose::Update).unwrap_err();
        assert!(err.contains("entries[0]: entry_id: is required"), "{err}");
        let err = entries("{\"entries\": [", Purpose::Create).unwrap_err();
        assert!(
            err.starts_with("entry create: --data \"f.json\": is not valid JSON: "),
            "{err}"
        );
        assert!(err.contains("line 1"), "{err}");
        let err = entries("{\"entry\": []}", Purpose::Create).unwrap_err();
        assert!(err.contains("no \"entries\" array"), "{err}");
        let many = format!(
            r#"{{"entries": [{}]}}"#,
            vec![ok.as_str(); MAX_DATA_ENTRIES + 1].join(",")
        );
        let err = entries(&many, Purpose::Create).unwrap_err();
        assert!(err.contains("limits.max_batch_size"), "{err}");
    }

    #[test]
    fn ids_file() {
        let ids = parse_ids("entry delete", "d.json", br#"{"ids": ["a", "b"]}"#).unwrap();
        assert_eq!(ids, ["a", "b"]);
        let err = parse_ids("entry delete", "d.json", br#"{"ids": ["a", 7]}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--file d.json: ids[1]: must be a string"),
            "{err}"
        );
    }
}
