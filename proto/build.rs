//! Generates Tessera's wire code from `proto/**/*.proto`, with no system `protoc`.
//!
//! 1. protox (pure Rust) parses and links every `.proto` under `proto/` into one
//!    `FileDescriptorSet`, well-known imports included.
//! 2. That set, encoded, is written to `$OUT_DIR/tessera_descriptor_set.bin` for gRPC
//!    reflection (`FILE_DESCRIPTOR_SET` in `lib.rs`).
//! 3. prost generates the messages and tonic the clients and servers, one `<package>.rs`
//!    per package (`_.rs` for the package-less Workload API).
//!
//! Server traits of the SPIRE-shaped admin API (`spire.*`) get default methods that answer
//! `Unimplemented`, so the server implements only what Tessera has and SPIRE tooling gets a
//! clean answer for the rest. Tessera's own services and the Workload API get no defaults:
//! forgetting a method there must fail to compile.

#![allow(
    clippy::expect_used,
    reason = "a build script reports failure by panicking; each expect names what failed"
)]

use std::{
    env, fs,
    path::{Path, PathBuf},
};

use tonic_prost_build::{Config, FileDescriptorSet};

/// Where the `.proto` sources live, relative to the crate root; also the import root.
const PROTO_DIR: &str = "proto";

/// Package prefix of the services that get `Unimplemented` default methods.
const STUBBED_PACKAGE_PREFIX: &str = "spire.";

fn main() {
    // Cargo scans a watched directory recursively, so this covers every nested .proto.
    println!("cargo:rerun-if-changed={PROTO_DIR}");
    println!("cargo:rerun-if-changed=build.rs");

    let out_dir =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR for build scripts"));

    let mut files = Vec::new();
    collect_protos(Path::new(PROTO_DIR), &mut files);
    files.sort();
    assert!(
        !files.is_empty(),
        "no .proto files found under {PROTO_DIR}/"
    );

    let mut compiler = protox::Compiler::new([PROTO_DIR]).expect("protox: set up the include path");
    compiler.include_imports(true).include_source_info(true);
    for file in &files {
        if let Err(err) = compiler.open_file(file) {
            panic!("protox: cannot compile {}: {err:?}", file.display());
        }
    }

    fs::write(
        out_dir.join("tessera_descriptor_set.bin"),
        compiler.encode_file_descriptor_set(),
    )
    .expect("write the encoded FileDescriptorSet to OUT_DIR");

    remove_generated(&out_dir);
    generate(compiler.file_descriptor_set(), &out_dir);
}

/// Runs prost and tonic over `fds`, writing one Rust file per package into `out_dir`.
fn generate(fds: FileDescriptorSet, out_dir: &Path) {
    let tonic = || {
        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            .build_transport(true)
    };
    let generator = PerPackage {
        stubbed: tonic().generate_default_stubs(true).service_generator(),
        strict: tonic().generate_default_stubs(false).service_generator(),
    };

    let mut config = Config::new();
    config
        .out_dir(out_dir)
        .service_generator(Box::new(generator));
    config
        .compile_fds(fds)
        .expect("prost/tonic code generation");
}

/// Deletes Rust files left by an earlier run, so a renamed or removed package cannot leave a
/// stale module behind that still compiles.
fn remove_generated(out_dir: &Path) {
    let entries = fs::read_dir(out_dir).expect("read OUT_DIR");
    for entry in entries {
        let path = entry.expect("read an OUT_DIR entry").path();
        if path.extension().is_some_and(|ext| ext == "rs") {
            fs::remove_file(&path)
                .unwrap_or_else(|err| panic!("remove stale {}: {err}", path.display()));
        }
    }
}

/// Appends every `.proto` file under `dir`, recursively, to `out`.
fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|err| panic!("read {}: {err}", dir.display()));
    for entry in entries {
        let path = entry.expect("read a directory entry under proto/").path();
        if path.is_dir() {
            collect_protos(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
}

/// Sends each service to the tonic generator its package calls for (see the module doc).
struct PerPackage {
    stubbed: Box<dyn prost_build::ServiceGenerator>,
    strict: Box<dyn prost_build::ServiceGenerator>,
}

impl prost_build::ServiceGenerator for PerPackage {
    fn generate(&mut self, service: prost_build::Service, buf: &mut String) {
        if service.package.starts_with(STUBBED_PACKAGE_PREFIX) {
            self.stubbed.generate(service, buf);
        } else {
            self.strict.generate(service, buf);
        }
    }

    fn finalize(&mut self, buf: &mut String) {
        self.stubbed.finalize(buf);
        self.strict.finalize(buf);
    }

    fn finalize_package(&mut self, package: &str, buf: &mut String) {
        self.stubbed.finalize_package(package, buf);
        self.strict.finalize_package(package, buf);
    }
}
