//! Every example runs, as a user would run it, with a deadline: the echo
//! server with the echo client over TCP and over shared memory (twice,
//! the second run resuming the first's counters), and the self-contained
//! ones. Every process started here is killed on every exit path.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The example binaries cargo built beside this test (`cargo test` builds
/// the examples of the package).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is not built (cargo test builds it)",
        p.display()
    );
    p
}

/// A child killed (SIGKILL) and reaped when dropped.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd` to its end within `secs`, killing it past the deadline.
fn run(cmd: &mut Command, secs: u64) -> Output {
    finish(start(cmd), secs)
}

/// Starts `cmd` with its output piped.
fn start(cmd: &mut Command) -> Kill {
    Kill(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// Waits for `child` to end successfully within `secs`, killing it past
/// the deadline.
fn finish(mut child: Kill, secs: u64) -> Output {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "{:?} ran past {secs} s", child.0);
        std::thread::sleep(Duration::from_millis(10));
    }
    let Kill(c) = &mut child;
    let out = Output {
        status: c.wait().unwrap(),
        stdout: read_all(c.stdout.take()),
        stderr: read_all(c.stderr.take()),
    };
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn read_all(r: Option<impl std::io::Read>) -> Vec<u8> {
    let mut v = Vec::new();
    if let Some(mut r) = r {
        let _ = r.read_to_end(&mut v);
    }
    v
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tcpshm-examples-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The shm objects of the server "server" and `client` in /dev/shm,
/// removed on every exit path.
struct ShmPair(String);

impl Drop for ShmPair {
    fn drop(&mut self) {
        for n in [format!("server_{}", self.0), format!("{}_server", self.0)] {
            let _ = std::fs::remove_file(Path::new("/dev/shm").join(format!("{n}.shm")));
        }
    }
}

/// The echo server example on `addr` over its files in `dir`, and the
/// address it listens on.
fn echo_server(addr: &str, dir: &Path) -> (Kill, String) {
    let mut server = Kill(
        Command::new(example("echo_server"))
            .arg(addr)
            .arg(dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(server.0.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let addr = first
        .trim()
        .strip_prefix("listening on ")
        .expect(&first)
        .to_string();
    // Keep reading what the server prints (its logins), until it dies.
    std::thread::spawn(move || for _ in out.lines().map_while(Result::ok) {});
    (server, addr)
}

#[test]
fn echo_server_and_client() {
    let dir = scratch("echo");
    let (mut server, addr) = echo_server("127.0.0.1:0", &dir.join("server"));
    for transport in ["tcp", "shm"] {
        let name = format!("ex{transport}{}", std::process::id() % 100_000);
        let _shm = ShmPair(name.clone());
        // A first run of 300, then a second to 1000 that resumes it.
        for (count, before) in [("300", "0 sent"), ("1000", "300 sent")] {
            let out = run(
                Command::new(example("echo_client"))
                    .args([&addr, transport, count, &name])
                    .current_dir(&dir),
                60,
            );
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains(before), "{text}");
            assert!(text.contains("echoes in order"), "{text}");
        }
        // The server killed (kill -9) and started again a moment after the
        // client: the client keeps trying, logs in, and goes on to 1500.
        drop(server);
        let client = start(
            Command::new(example("echo_client"))
                .args([&addr, transport, "1500", &name])
                .current_dir(&dir),
        );
        std::thread::sleep(Duration::from_millis(300));
        server = echo_server(&addr, &dir.join("server")).0;
        let text = String::from_utf8_lossy(&finish(client, 60).stdout).into_owned();
        assert!(text.contains("1000 sent"), "{text}");
        assert!(text.contains("500 echoes in order"), "{text}");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn threads() {
    let out = run(&mut Command::new(example("threads")), 120);
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["desk1", "desk2", "tcp1"] {
        assert!(text.contains(&format!("{name}: 10000 echoes")), "{text}");
    }
    // Each SHM desk in a group of its own, as the allow-list says.
    assert!(text.contains("desk1 in Shm group 0"), "{text}");
    assert!(text.contains("desk2 in Shm group 1"), "{text}");
    assert!(text.contains("intruder refused: not on the list"), "{text}");
}

#[test]
fn daily_rename() {
    let out = run(&mut Command::new(example("daily_rename")), 60);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("last server: prices-20261206"), "{text}");
    assert!(text.contains("the server received [\"sell 1\"]"), "{text}");
}

#[test]
fn large_messages() {
    let out = run(&mut Command::new(example("large_messages")), 60);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.matches("a snapshot of 1048576 bytes (17 fragments)")
            .count(),
        6,
        "{text}"
    );
    assert!(
        text.contains("closed: Message larger than Config::max_message_size"),
        "{text}"
    );
}

#[test]
fn exactly_once() {
    let out = run(&mut Command::new(example("exactly_once")), 150);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("each answered exactly once"), "{text}");
}

/// The tokio example (`--features tokio`: CI runs it): a server and a TCP
/// and an SHM client in one runtime, every echo in order.
#[cfg(feature = "tokio")]
#[test]
fn tokio_echo() {
    let out = run(Command::new(example("tokio_echo")).arg("2000"), 120);
    let text = String::from_utf8_lossy(&out.stdout);
    for t in ["tcp", "shm"] {
        assert!(
            text.contains(&format!("{t}: 2000 echoes in order")),
            "{text}"
        );
    }
}
