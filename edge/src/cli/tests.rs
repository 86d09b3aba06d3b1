use std::time::Duration;

use super::*;

#[derive(Debug, thiserror::Error)]
#[error("cannot open the event log: {0}")]
struct Outer(#[source] Inner);

#[derive(Debug, thiserror::Error)]
#[error("locked by another server")]
struct Inner(#[source] std::io::Error);

#[test]
fn single_dash_long_flags_get_a_second_dash_up_to_the_end_of_flags() {
    let got = normalize_args(
        [
            "x",
            "-h",
            "-5",
            "--a",
            "-bc",
            "-spiffeID=spiffe://a.org/x",
            "--",
            "-de",
        ]
        .map(OsString::from),
    );
    let want = [
        "x",
        "-h",
        "-5",
        "--a",
        "--bc",
        "--spiffeID=spiffe://a.org/x",
        "--",
        "-de",
    ]
    .map(OsString::from);
    assert_eq!(got, want);
}

#[test]
fn chain_names_every_cause_once() {
    let e = Outer(Inner(std::io::Error::other("EAGAIN")));
    assert_eq!(
        Chain(&e).to_string(),
        "cannot open the event log: locked by another server: EAGAIN"
    );
}

#[test]
fn exit_codes() {
    assert_eq!(exit_code(Ok::<(), String>(())), ExitCode::SUCCESS);
    assert_eq!(exit_code(Err("run: broken")), ExitCode::from(EXIT_FAILURE));
}

#[test]
fn a_client_verb_runs_to_its_outcome() {
    assert!(run_client(async { Ok::<(), String>(()) }).is_ok());
    let err = run_client(async { Err::<(), _>("entry show: not found") }).unwrap_err();
    assert_eq!(err.to_string(), "entry show: not found");
}

#[test]
fn forced_names_the_grace() {
    let e = RunError::<String>::Forced {
        grace: Duration::from_secs(30),
    };
    assert!(e.to_string().contains("longer than 30s"), "{e}");
}
