//! `matrix-provision … | head`: a reader that goes away early ends the command quietly, no panic.

use std::process::{Command, Stdio};

#[test]
fn a_closed_stdout_ends_a_report_quietly() {
    let bin = env!("CARGO_BIN_EXE_matrix-provision");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/host.toml");
    // The shell waits until the test has closed its end of the pipe, then becomes the program.
    let mut child = Command::new("sh")
        .args(["-c", "sleep 0.3; exec \"$0\" validate \"$1\"", bin, example])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}
