//! The harness's errors: one clear line on stderr and a non-zero exit,
//! no panic.

use std::process::Command;

#[test]
fn shm_dir_missing() {
    let missing = std::env::temp_dir().join(format!("tcpshm-bench-noshm-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_tcpshm-bench"))
        .args(["isolation", "--shm", "--shm-dir"])
        .arg(&missing)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    let lines: Vec<_> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains("does not exist"),
        "{err}"
    );
}
