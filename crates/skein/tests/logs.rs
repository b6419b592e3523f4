//! The log, as an operator reads it from a file or journald: plain text, no terminal colours.

mod common;

use std::process::{Command, Stdio};

#[test]
fn logs_written_to_a_file_carry_no_terminal_colours() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("skein.log")).unwrap();
    let mut cmd = Command::new(common::bin());
    cmd.arg("serve").arg("--data-dir").arg(dir.path().join("data"));
    for key in common::ALL_ADDRS {
        cmd.args(["--set", &format!("{key}=127.0.0.1:0")]);
    }
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    // Wait for the ready line, then stop it as an orchestrator would.
    let stdout = child.stdout.take().unwrap();
    let ready = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .map_while(Result::ok)
        .any(|l| l.starts_with("skein: ready"));
    assert!(ready, "skein did not start");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(dir.path().join("skein.log")).unwrap();
    assert!(text.contains("stopped cleanly"), "{text}");
    assert!(!text.contains('\u{1b}'), "escape codes in the log: {text:?}");
}

/// SIGHUP (a supervisor's "reload") does not end the server, as its default action would,
/// unflushed: it is logged, and the server keeps serving until SIGTERM.
#[tokio::test]
async fn sighup_is_logged_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let s = common::Server::start_with(&dir.path().join("data"), &[], move |cmd| {
        cmd.stderr(log_file);
    });
    Command::new("kill")
        .args(["-HUP", &s.pid().to_string()])
        .status()
        .unwrap();
    common::eventually("the SIGHUP log line", std::time::Duration::from_secs(20), || async {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("SIGHUP ignored")
            .then_some(())
    })
    .await;
    let health = reqwest::get(format!("{}/health", s.query_url())).await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(s.stop(), "a clean exit on SIGTERM after SIGHUP");
}
