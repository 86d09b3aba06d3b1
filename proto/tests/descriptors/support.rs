//! Helpers shared by the descriptor checks: load the descriptor set, find files and messages,
//! and assert services and fields exactly.

use std::collections::BTreeMap;

use prost::Message;
use prost_types::{
    field_descriptor_proto::{Label, Type},
    DescriptorProto, FileDescriptorProto, FileDescriptorSet,
};
use tessera_proto::FILE_DESCRIPTOR_SET;

pub fn descriptor_set() -> FileDescriptorSet {
    FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("FILE_DESCRIPTOR_SET decodes")
}

pub fn file<'a>(set: &'a FileDescriptorSet, name: &str) -> &'a FileDescriptorProto {
    set.file
        .iter()
        .find(|f| f.name() == name)
        .unwrap_or_else(|| panic!("{name} is missing from the descriptor set"))
}

pub fn message<'a>(file: &'a FileDescriptorProto, name: &str) -> &'a DescriptorProto {
    file.message_type
        .iter()
        .find(|m| m.name() == name)
        .unwrap_or_else(|| panic!("message {name} is missing from {}", file.name()))
}

/// `(method, input, output, client_streaming, server_streaming)`. Input and output types
/// without a leading dot are taken as relative to the file's package.
pub type MethodShape = (&'static str, &'static str, &'static str, bool, bool);

/// Asserts the service's fully-qualified name, and its methods exactly (names, order,
/// types, streaming); returns the gRPC paths as a client would build them.
pub fn assert_service(
    file: &FileDescriptorProto,
    service: &str,
    want_full_name: &str,
    want: &[MethodShape],
) -> Vec<String> {
    let svc = file
        .service
        .iter()
        .find(|s| s.name() == service)
        .unwrap_or_else(|| panic!("service {service} is missing from {}", file.name()));
    let full_name = if file.package().is_empty() {
        svc.name().to_owned()
    } else {
        format!("{}.{}", file.package(), svc.name())
    };
    assert_eq!(full_name, want_full_name, "full name of service {service}");

    let got: Vec<(String, String, String, bool, bool)> = svc
        .method
        .iter()
        .map(|m| {
            (
                m.name().to_owned(),
                m.input_type().to_owned(),
                m.output_type().to_owned(),
                m.client_streaming(),
                m.server_streaming(),
            )
        })
        .collect();
    let qualify = |ty: &str| {
        if ty.starts_with('.') || file.package().is_empty() {
            format!(".{}", ty.trim_start_matches('.'))
        } else {
            format!(".{}.{ty}", file.package())
        }
    };
    let want: Vec<(String, String, String, bool, bool)> = want
        .iter()
        .map(|(n, i, o, cs, ss)| (n.to_string(), qualify(i), qualify(o), *cs, *ss))
        .collect();
    assert_eq!(got, want, "methods of {full_name}");

    svc.method
        .iter()
        .map(|m| format!("/{full_name}/{}", m.name()))
        .collect()
}

/// One expected field: `(name, number, type, repeated, type_name)`; `type_name` is empty
/// for scalars.
pub type FieldShape = (&'static str, i32, Type, bool, &'static str);

/// Asserts that `msg` has exactly these fields, with these numbers, types and labels.
pub fn assert_fields(msg: &DescriptorProto, want: &[FieldShape]) {
    let got: BTreeMap<String, (i32, Type, bool, String)> = msg
        .field
        .iter()
        .map(|f| {
            (
                f.name().to_owned(),
                (
                    f.number(),
                    f.r#type(),
                    f.label() == Label::Repeated,
                    f.type_name().to_owned(),
                ),
            )
        })
        .collect();
    let want: BTreeMap<String, (i32, Type, bool, String)> = want
        .iter()
        .map(|(name, number, ty, repeated, type_name)| {
            (
                name.to_string(),
                (*number, *ty, *repeated, type_name.to_string()),
            )
        })
        .collect();
    assert_eq!(got, want, "fields of message {}", msg.name());
}

/// Asserts that `field` of `msg` is a `map<key, value>`.
pub fn assert_map(msg: &DescriptorProto, field: &str, key: Type, value: Type) {
    let f = msg
        .field
        .iter()
        .find(|f| f.name() == field)
        .unwrap_or_else(|| panic!("{}.{field} is missing", msg.name()));
    let entry_name = f.type_name().rsplit('.').next().unwrap_or_default();
    let entry = msg
        .nested_type
        .iter()
        .find(|n| n.name() == entry_name)
        .unwrap_or_else(|| panic!("{}.{field}: no nested entry type {entry_name}", msg.name()));
    assert!(
        entry.options.as_ref().is_some_and(|o| o.map_entry()),
        "{}.{field} is not a map",
        msg.name()
    );
    assert_fields(
        entry,
        &[("key", 1, key, false, ""), ("value", 2, value, false, "")],
    );
}

/// Asserts field numbers by name only (for the larger SPIRE messages).
pub fn assert_numbers(msg: &DescriptorProto, want: &[(&str, i32)]) {
    let got: BTreeMap<&str, i32> = msg.field.iter().map(|f| (f.name(), f.number())).collect();
    let want: BTreeMap<&str, i32> = want.iter().copied().collect();
    assert_eq!(got, want, "field numbers of {}", msg.name());
}

// === Workload API ===
