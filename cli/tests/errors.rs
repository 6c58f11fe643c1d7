//! The errors a new user meets: one clear line on stderr, a non-zero exit,
//! no panic backtrace.

use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_tcpshm");

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(EXE)
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), err)
}

fn one_clear_line(code: i32, err: &str, want: &str) {
    assert_ne!(code, 0, "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    let lines: Vec<_> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(want),
        "{err}"
    );
}

fn scratch(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tcpshm-cli-err-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn server_not_running() {
    let d = scratch("norun");
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = format!("127.0.0.1:{port}");
    let (code, err) = run(&[
        "echo-client",
        "c",
        "--server",
        &server,
        "--dir",
        d.join("c").to_str().unwrap(),
    ]);
    one_clear_line(code, &err, "is the echo-server running?");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn port_in_use() {
    let d = scratch("inuse");
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (code, err) = run(&[
        "echo-server",
        "--listen",
        &addr,
        "--dir",
        d.join("s").to_str().unwrap(),
    ]);
    one_clear_line(code, &err, "is another echo-server running?");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn dir_not_writable() {
    let d = scratch("nodir");
    let file = d.join("file");
    std::fs::write(&file, b"x").unwrap();
    let bad = file.join("dir");
    let (code, err) = run(&[
        "echo-server",
        "--listen",
        "127.0.0.1:0",
        "--dir",
        bad.to_str().unwrap(),
    ]);
    one_clear_line(code, &err, "create directory");
    let (code, err) = run(&["echo-client", "c", "--dir", bad.to_str().unwrap()]);
    one_clear_line(code, &err, "create directory");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn shm_dir_missing() {
    let d = scratch("noshm");
    let missing = d.join("no-such-shm");
    let (code, err) = run(&[
        "echo-server",
        "--listen",
        "127.0.0.1:0",
        "--dir",
        d.join("s").to_str().unwrap(),
        "--shm-dir",
        missing.to_str().unwrap(),
    ]);
    one_clear_line(code, &err, "does not exist");
    let (code, err) = run(&[
        "echo-client",
        "c",
        "--shm",
        "--shm-dir",
        missing.to_str().unwrap(),
    ]);
    one_clear_line(code, &err, "does not exist");
    let _ = std::fs::remove_dir_all(&d);
}

/// A queue size that cannot be reserved in `dir` now: a power of two
/// above its free space (so the test does not depend on how big the disk
/// or the RAM is).
fn beyond_free_space(dir: &std::path::Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: a zeroed statvfs is a valid value; the path is a valid C
    // string and the struct valid for the call.
    let free = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c.as_ptr(), &mut st), 0);
        st.f_bavail as u64 * st.f_frsize as u64
    };
    (free + 1).next_power_of_two()
}

#[test]
fn shm_full_is_reported_by_the_client() {
    // A real echo-server whose shm objects cannot be reserved (a queue
    // larger than the free space stands in for a full /dev/shm): the
    // client gets the server's "System error" reject in one line.
    let d = scratch("shmfull");
    let shm = d.join("shm");
    std::fs::create_dir_all(&shm).unwrap();
    let size = beyond_free_space(&shm).to_string();
    let (srv, addr) = echo_server(&[
        "--dir".as_ref(),
        d.join("s").as_os_str(),
        "--shm-dir".as_ref(),
        shm.as_os_str(),
        "--shm-queue-size".as_ref(),
        size.as_ref(),
    ]);
    let (code, err) = run(&[
        "echo-client",
        "c",
        "--shm",
        "--server",
        &addr,
        "--dir",
        d.join("c").to_str().unwrap(),
        "--shm-dir",
        shm.to_str().unwrap(),
        "--shm-queue-size",
        &size,
    ]);
    drop(srv);
    one_clear_line(code, &err, "System error");
    let _ = std::fs::remove_dir_all(&d);
}

/// Kills the child on every exit path, a failed assertion included.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An echo-server on a free port with `args`, killed when dropped, and
/// the address it listens on.
fn echo_server(args: &[&std::ffi::OsStr]) -> (Killed, String) {
    let mut srv = Killed(
        Command::new(EXE)
            .args(["echo-server", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(srv.0.stdout.as_mut().unwrap()),
        &mut first,
    )
    .unwrap();
    let addr = first
        .split_whitespace()
        .skip_while(|w| *w != "on")
        .nth(1)
        .unwrap()
        .to_string();
    (srv, addr)
}

#[test]
fn a_batch_larger_than_the_queue() {
    // Batches of up to 1,000 messages against the default 2,000-byte TCP
    // queue: the first that cannot fit says so, once.
    let d = scratch("bigbatch");
    let (srv, addr) = echo_server(&[
        "--exactly-once".as_ref(),
        "--dir".as_ref(),
        d.join("s").as_os_str(),
    ]);
    let (code, err) = run(&[
        "echo-client",
        "c",
        "--server",
        &addr,
        "--batch",
        "1000",
        "--count",
        "100000",
        "--dir",
        d.join("c").to_str().unwrap(),
    ]);
    drop(srv);
    one_clear_line(
        code,
        &err,
        "exceeds the send queue's 2000 (use a smaller --batch",
    );
    let _ = std::fs::remove_dir_all(&d);
}
