use std::collections::VecDeque;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use tessera_identity::Selector;

use super::*;
use crate::attestor::{Attestors, WorkloadAttestor};
use crate::workload_api::ApiError;

/// A stat line whose command name holds spaces and parentheses, with `start` as field 22.
fn stat_line(comm: &str, state: char, start: u64) -> String {
    // Fields 4..=21 (18 of them), then 22, then the rest up to 52.
    let middle: Vec<String> = (4..=21).map(|n| n.to_string()).collect();
    let tail: Vec<String> = (23..=52).map(|n| n.to_string()).collect();
    format!(
        "4242 ({comm}) {state} {} {start} {}\n",
        middle.join(" "),
        tail.join(" ")
    )
}

#[test]
fn start_time_is_field_22_counted_from_the_last_paren() {
    for comm in ["svc", "a b", "x) S 1 2 3 (y", ") )", "((", ""] {
        let got = ProcStat::parse(&stat_line(comm, 'S', 987_654)).unwrap();
        assert_eq!(
            got,
            ProcStat {
                state: 'S',
                start_time: 987_654
            },
            "{comm:?}"
        );
    }
    let zombie = ProcStat::parse(&stat_line("gone", 'Z', 7)).unwrap();
    assert!(zombie.exited());
    assert!(!ProcStat::parse(&stat_line("r", 'R', 7)).unwrap().exited());
    for (bad, why) in [
        ("4242 svc S 1 2", "no \")\""),
        ("4242 (svc)", "no state"),
        ("4242 (svc) S 1 2 3", "fewer than 22 fields"),
        (
            &*stat_line("svc", 'S', 0).replace(" 0 23 ", " soon 23 "),
            "not a number",
        ),
    ] {
        let err = ProcStat::parse(bad).unwrap_err();
        assert!(err.contains(why), "{bad:?}: {err}");
    }
}

#[test]
fn proc_fs_stamps_this_process() {
    let me = std::process::id();
    let probe = ProcFs::default();
    let a = probe.stamp(me).unwrap().expect("this process is alive");
    let b = probe.stamp(me).unwrap().expect("this process is alive");
    assert_eq!(a, b);
    assert_eq!(Some(a.euid), own_status().euid);
    assert!(a.start_time > 0);
}

#[test]
fn proc_fs_reads_missing_and_zombie_processes_as_gone() {
    let dir = tempfile::tempdir().unwrap();
    let zombie = dir.path().join("77");
    std::fs::create_dir(&zombie).unwrap();
    std::fs::write(zombie.join("stat"), stat_line("z", 'Z', 5)).unwrap();
    std::fs::write(zombie.join("status"), "Uid:\t1\t1\t1\t1\n").unwrap();
    let live = dir.path().join("78");
    std::fs::create_dir(&live).unwrap();
    std::fs::write(live.join("stat"), stat_line("l", 'S', 6)).unwrap();
    std::fs::write(live.join("status"), "Uid:\t1\t2\t1\t1\n").unwrap();
    let broken = dir.path().join("79");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("stat"), "79 (b").unwrap();
    let probe = ProcFs::new(dir.path());
    assert_eq!(probe.stamp(76).unwrap(), None);
    assert_eq!(probe.stamp(77).unwrap(), None);
    assert_eq!(
        probe.stamp(78).unwrap(),
        Some(ProcessStamp {
            start_time: 6,
            euid: 2
        })
    );
    let err = probe.stamp(79).unwrap_err().to_string();
    assert!(err.contains("79/stat") && err.contains("\")\""), "{err}");
}

/// Answers from a script, one per read; the test fails if the check reads more often.
#[derive(Debug)]
struct Scripted(Mutex<VecDeque<Option<ProcessStamp>>>);

impl Scripted {
    fn new(answers: impl IntoIterator<Item = Option<ProcessStamp>>) -> Arc<Self> {
        Arc::new(Self(Mutex::new(answers.into_iter().collect())))
    }
}

impl ProcessProbe for Scripted {
    fn stamp(&self, _: u32) -> Result<Option<ProcessStamp>, AttestError> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .pop_front()
            .expect("no more scripted answers"))
    }
}

const CALLER: PeerCredentials = PeerCredentials {
    uid: 1000,
    gid: 1000,
    pid: Some(4242),
    start_time: None,
};

fn stamp(start_time: u64, euid: u32) -> Option<ProcessStamp> {
    Some(ProcessStamp { start_time, euid })
}

#[test]
fn a_reused_pid_is_refused_as_permission_denied() {
    // Each case: what the probe sees before attestation, then after.
    let cases = [
        (stamp(100, 1000), stamp(100, 1000), None),
        (
            stamp(100, 1000),
            stamp(250, 1000),
            Some("start time 250 (was 100)"),
        ),
        (stamp(100, 1000), stamp(100, 0), Some("uid 0 (was 1000)")),
        (stamp(100, 1000), None, Some("it has exited")),
    ];
    for (before, after, refused) in cases {
        let check = ProcessCheck::new(Scripted::new([before, after]));
        let recorded = check.record(&CALLER).unwrap();
        let outcome = check.confirm(&CALLER, recorded);
        match refused {
            None => outcome.unwrap(),
            Some(detail) => {
                let err = outcome.unwrap_err();
                let text = err.to_string();
                assert!(err.is_caller_changed(), "{text}");
                assert!(text.contains(detail), "{text}");
                assert!(
                    text.contains(
                        "the calling process exited or its PID was reused during attestation; retry"
                    ),
                    "{text}"
                );
                let api = ApiError::from(err);
                assert_eq!(api.code(), tonic::Code::PermissionDenied, "{text}");
            }
        }
    }
}

#[test]
fn a_caller_gone_or_under_another_uid_before_attestation_is_refused() {
    let gone = ProcessCheck::new(Scripted::new([None]));
    assert!(gone.record(&CALLER).unwrap_err().is_caller_changed());
    let other = ProcessCheck::new(Scripted::new([stamp(1, 0)]));
    let err = other.record(&CALLER).unwrap_err();
    assert!(err.to_string().contains("now runs as uid 0"), "{err}");
    // No pid (another pid namespace): nothing to read, nothing to refuse.
    let unread = ProcessCheck::new(Scripted::new([]));
    let no_pid = PeerCredentials {
        pid: None,
        ..CALLER
    };
    let recorded = unread.record(&no_pid).unwrap();
    unread.confirm(&no_pid, recorded).unwrap();
}

// === a real child process ===

fn own_status() -> ProcStatus {
    ProcStatus::parse(&std::fs::read_to_string("/proc/self/status").unwrap())
}

fn sleeper() -> Child {
    Command::new("sleep")
        .arg("30")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn caller_of(child: &Child) -> PeerCredentials {
    let me = own_status();
    PeerCredentials {
        uid: me.euid.unwrap(),
        gid: me.egid.unwrap(),
        pid: Some(child.id()),
        start_time: None,
    }
}

/// Waits (bounded) until `pid` is a zombie: killed, not yet reaped.
fn until_zombie(pid: u32) {
    for _ in 0..500 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        if ProcStat::parse(&stat).unwrap().exited() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("process {pid} did not become a zombie within 5 s");
}

/// An attestor during whose run the caller exits: killed, and reaped or left a zombie.
#[derive(Debug)]
struct CallerExits {
    child: Arc<Mutex<Child>>,
    reap: bool,
}

impl WorkloadAttestor for CallerExits {
    fn name(&self) -> &'static str {
        "exits"
    }

    fn attest<'a>(
        &'a self,
        _: &'a PeerCredentials,
    ) -> BoxFuture<'a, Result<Vec<Selector>, AttestError>> {
        Box::pin(async move {
            let mut child = self.child.lock().unwrap();
            child.kill().unwrap();
            if self.reap {
                child.wait().unwrap();
            } else {
                until_zombie(child.id());
            }
            Ok(vec![Selector::parse("exits:yes").unwrap()])
        })
    }
}

#[derive(Debug)]
struct Nothing;

impl WorkloadAttestor for Nothing {
    fn name(&self) -> &'static str {
        "nothing"
    }

    fn attest<'a>(
        &'a self,
        _: &'a PeerCredentials,
    ) -> BoxFuture<'a, Result<Vec<Selector>, AttestError>> {
        Box::pin(async { Ok(vec![Selector::parse("nothing:x").unwrap()]) })
    }
}

#[tokio::test]
async fn a_child_that_exits_during_attestation_is_refused() {
    for reap in [true, false] {
        let child = sleeper();
        let caller = caller_of(&child);
        let child = Arc::new(Mutex::new(child));
        let attestors = Attestors::new(
            vec![Arc::new(CallerExits {
                child: child.clone(),
                reap,
            })],
            Duration::from_secs(10),
        );
        let err = attestors.attest(&caller).await.unwrap_err();
        assert!(err.is_caller_changed(), "reap {reap}: {err}");
        assert!(err.to_string().contains("it has exited"), "{err}");
        // Reap the zombie (a no-op for the reaped one).
        child.lock().unwrap().wait().unwrap();
    }
}

#[tokio::test]
async fn a_live_child_is_attested_and_a_reaped_one_refused() {
    let mut child = sleeper();
    let caller = caller_of(&child);
    let attestors = Attestors::new(vec![Arc::new(Nothing)], Duration::from_secs(10));
    let got = attestors.attest(&caller).await.unwrap();
    assert!(got.contains(&Selector::parse("nothing:x").unwrap()));
    child.kill().unwrap();
    child.wait().unwrap();
    let err = attestors.attest(&caller).await.unwrap_err();
    assert!(err.is_caller_changed(), "{err}");
}

#[test]
fn a_pid_reused_between_accept_and_attestation_is_refused() {
    // The connection was accepted from the process started at tick 100; by the time its
    // request is attested, the pid names a process started at tick 250.
    let accepted = PeerCredentials {
        start_time: Some(100),
        ..CALLER
    };
    let check = ProcessCheck::new(Scripted::new([stamp(250, 1000)]));
    let err = check.record(&accepted).unwrap_err();
    assert!(err.is_caller_changed(), "{err}");
    assert!(err.to_string().contains("start time 100"), "{err}");
    // The same process as at accept passes.
    let check = ProcessCheck::new(Scripted::new([stamp(100, 1000), stamp(100, 1000)]));
    let recorded = check.record(&accepted).unwrap();
    check.confirm(&accepted, recorded).unwrap();
}

#[tokio::test]
async fn accepted_credentials_carry_the_callers_start_time() {
    let (a, _b) = tokio::net::UnixStream::pair().unwrap();
    let cred = PeerCredentials::from_ucred(&a.peer_cred().unwrap());
    let own = tessera_edge::peer::proc::start_time(std::process::id());
    assert!(own.is_some());
    assert_eq!(cred.start_time, own);
}
