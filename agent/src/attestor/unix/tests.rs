use std::os::unix::fs::symlink;

use tessera_identity::SelectorSet;

use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    config: UnixAttestorConfig,
}

/// A fake `/proc` with process 123 (euid 1000, egid 1000, groups 1000 27 4242) whose exe
/// links to a file holding "abc", and account files naming alice, alice's group and sudo.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("passwd"),
        "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        root.join("group"),
        "root:x:0:\nsudo:x:27:alice\nalice:x:1000:\n",
    )
    .unwrap();
    let proc = root.join("proc/123");
    std::fs::create_dir_all(&proc).unwrap();
    std::fs::write(
        proc.join("status"),
        "Name:\tsvc\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\nGroups:\t1000 27 4242 \n",
    )
    .unwrap();
    std::fs::write(root.join("svc-bin"), b"abc").unwrap();
    symlink(root.join("svc-bin"), proc.join("exe")).unwrap();
    let config = UnixAttestorConfig {
        discover_workload_path: false,
        workload_size_limit: WorkloadSizeLimit::Unlimited,
        passwd_path: root.join("passwd"),
        group_path: root.join("group"),
        proc_root: root.join("proc"),
    };
    Fixture { _dir: dir, config }
}

const ALICE: PeerCredentials = PeerCredentials {
    uid: 1000,
    gid: 1000,
    pid: Some(123),
    start_time: None,
};

fn set(selectors: Vec<Selector>) -> SelectorSet {
    selectors.into_iter().collect()
}

#[test]
fn ids_names_and_supplementary_groups() {
    let f = fixture();
    let got = set(UnixAttestor::new(f.config.clone())
        .attest_blocking(&ALICE)
        .unwrap());
    let want = SelectorSet::parse_all([
        "unix:uid:1000",
        "unix:gid:1000",
        "unix:user:alice",
        "unix:group:alice",
        "unix:supplementary_gid:1000",
        "unix:supplementary_gid:27",
        "unix:supplementary_gid:4242",
        "unix:supplementary_group:alice",
        "unix:supplementary_group:sudo",
    ])
    .unwrap();
    assert_eq!(got, want);
}

#[test]
fn path_and_sha256_only_when_enabled_and_within_the_limit() {
    let f = fixture();
    let bin = f.config.proc_root.parent().unwrap().join("svc-bin");
    let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    let path_sel = Selector::new("unix", &format!("path:{}", bin.display())).unwrap();
    let sha_sel = Selector::new("unix", &format!("sha256:{abc}")).unwrap();

    let on = UnixAttestorConfig {
        discover_workload_path: true,
        ..f.config.clone()
    };
    let got = set(UnixAttestor::new(on.clone())
        .attest_blocking(&ALICE)
        .unwrap());
    assert!(got.contains(&path_sel) && got.contains(&sha_sel), "{got:?}");

    let small = UnixAttestorConfig {
        workload_size_limit: WorkloadSizeLimit::Bytes(2),
        ..on.clone()
    };
    let got = set(UnixAttestor::new(small).attest_blocking(&ALICE).unwrap());
    assert!(
        got.contains(&path_sel) && !got.contains(&sha_sel),
        "{got:?}"
    );

    let never = UnixAttestorConfig {
        workload_size_limit: WorkloadSizeLimit::Never,
        ..on
    };
    let got = set(UnixAttestor::new(never).attest_blocking(&ALICE).unwrap());
    assert!(
        got.contains(&path_sel) && !got.contains(&sha_sel),
        "{got:?}"
    );

    let got = set(UnixAttestor::new(f.config.clone())
        .attest_blocking(&ALICE)
        .unwrap());
    assert!(
        !got.contains(&path_sel) && !got.contains(&sha_sel),
        "{got:?}"
    );
}

#[test]
fn changed_account_files_are_read_again() {
    let f = fixture();
    let caller = PeerCredentials { pid: None, ..ALICE };
    // Long after the files' last change: the parses are trusted until the files change.
    let clock = tessera_eventlog::ManualClock::at_unix_secs(4_000_000_000);
    let a = UnixAttestor::with_clock(f.config.clone(), Arc::new(clock));
    let names = |a: &UnixAttestor| {
        let got = set(a.attest_blocking(&caller).unwrap());
        ["user", "group"].map(|kind| {
            got.iter()
                .find(|s| s.value().starts_with(&format!("{kind}:")))
                .map(|s| s.value().to_owned())
        })
    };
    assert_eq!(
        names(&a),
        [Some("user:alice".into()), Some("group:alice".into())]
    );
    assert_eq!(names(&a), names(&a), "an unchanged file answers the same");

    std::fs::write(
        &f.config.passwd_path,
        "root:x:0:0::/root:/bin/sh\nalicia:x:1000:1000::/home/alice:/bin/sh\n",
    )
    .unwrap();
    let tmp = f.config.group_path.with_extension("new");
    std::fs::write(&tmp, "root:x:0:\nstaff:x:1000:\n").unwrap();
    std::fs::rename(&tmp, &f.config.group_path).unwrap();
    assert_eq!(
        names(&a),
        [Some("user:alicia".into()), Some("group:staff".into())]
    );

    std::fs::remove_file(&f.config.passwd_path).unwrap();
    assert_eq!(names(&a), [None, Some("group:staff".into())]);
}

#[test]
fn a_same_size_rewrite_just_after_a_read_is_seen() {
    // With the real clock the files were changed just now: however coarse the file times,
    // a rewrite that leaves size and times unchanged is still read.
    let f = fixture();
    let caller = PeerCredentials { pid: None, ..ALICE };
    let a = UnixAttestor::new(f.config.clone());
    let user = |a: &UnixAttestor| {
        set(a.attest_blocking(&caller).unwrap())
            .iter()
            .find(|s| s.value().starts_with("user:"))
            .map(|s| s.value().to_owned())
    };
    assert_eq!(user(&a), Some("user:alice".into()));
    std::fs::write(
        &f.config.passwd_path,
        "root:x:0:0::/root:/bin/sh\nbobby:x:1000:1000::/home/alice:/bin/sh\n",
    )
    .unwrap();
    assert_eq!(user(&a), Some("user:bobby".into()));
}

#[test]
fn no_pid_gives_socket_selectors_only() {
    let f = fixture();
    let caller = PeerCredentials { pid: None, ..ALICE };
    let got = set(UnixAttestor::new(f.config)
        .attest_blocking(&caller)
        .unwrap());
    assert_eq!(
        got,
        SelectorSet::parse_all([
            "unix:uid:1000",
            "unix:gid:1000",
            "unix:user:alice",
            "unix:group:alice"
        ])
        .unwrap()
    );
}

#[test]
fn a_vanished_or_reused_pid_is_refused() {
    let f = fixture();
    let a = UnixAttestor::new(f.config);
    let gone = PeerCredentials {
        pid: Some(999),
        ..ALICE
    };
    let err = a.attest_blocking(&gone).unwrap_err();
    assert!(
        matches!(err, AttestError::CallerChanged { pid: 999, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("exited or its PID was reused"));
    let other_user = PeerCredentials { uid: 0, ..ALICE };
    let err = a.attest_blocking(&other_user).unwrap_err();
    assert!(err.is_caller_changed(), "{err}");
    assert!(err.to_string().contains("no longer has the uid"), "{err}");
}

#[test]
fn unknown_ids_have_no_names() {
    let f = fixture();
    let caller = PeerCredentials {
        uid: 4242,
        gid: 4242,
        pid: None,
        start_time: None,
    };
    let got = set(UnixAttestor::new(f.config)
        .attest_blocking(&caller)
        .unwrap());
    assert_eq!(
        got,
        SelectorSet::parse_all(["unix:uid:4242", "unix:gid:4242"]).unwrap()
    );
}

#[test]
fn spire_size_limit_values() {
    assert_eq!(
        WorkloadSizeLimit::from_spire(0),
        WorkloadSizeLimit::Unlimited
    );
    assert_eq!(WorkloadSizeLimit::from_spire(-1), WorkloadSizeLimit::Never);
    assert_eq!(
        WorkloadSizeLimit::from_spire(10),
        WorkloadSizeLimit::Bytes(10)
    );
}

#[test]
fn proc_status_parsing() {
    use super::process::ProcStatus;
    let s = ProcStatus::parse("Uid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\nGroups:\n");
    assert_eq!(
        s,
        ProcStatus {
            euid: Some(2),
            egid: Some(6),
            groups: vec![]
        }
    );
    assert_eq!(
        ProcStatus::parse("garbage\nUid: x y\n"),
        ProcStatus::default()
    );
}
