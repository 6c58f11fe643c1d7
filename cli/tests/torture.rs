//! The central promise with real processes: echo-server and echo-client
//! processes, over TCP and over SHM, are killed with kill -9 at random
//! moments while traffic flows (ping-pong and streaming, alternating at
//! each client restart) and restarted; at the end the client has received
//! every echo exactly once and in order (it checks every integer and exits
//! non-zero on any gap or duplicate).
//!
//! The server answers with consume-and-reply (`--exactly-once`); over TCP
//! and over SHM without a doorbell the client sends atomic batches of 1 to
//! 16 messages (`--batch 16`): after each restart it checks that its queue
//! ends at a whole batch, and every echo carries its batch's fields. The
//! `large` runs send messages of 200,000 bytes (`--size`, four fragments
//! each), every echo checked whole by its hash; the client also checks
//! that its queue never ends inside a large message.
//!
//! `torture_*` runs in CI (10 client kills and 10 server kills per
//! transport, well under a minute); `torture_long_*` (ignored) does
//! hundreds: `cargo test -p tcpshm-cli --test torture -- --ignored`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_tcpshm");

struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(args: &[String]) -> Proc {
        let mut child = Command::new(EXE)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcpshm");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(l);
            }
        });
        Proc { child, lines: rx }
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    /// Lines so far; fails the test on a data error.
    fn drain(&self, log: &mut Vec<String>) {
        while let Ok(l) = self.lines.try_recv() {
            assert!(
                !l.contains("bad echo"),
                "client reported: {l}\n{}",
                log.join("\n")
            );
            log.push(l);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small xorshift for kill timing (no dependency, seed printed).
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One torture at a time: each runs a busy-polling server and client,
/// which is all a 2-core machine has.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs the torture; the client's total count grows by `step` each time it
/// finishes before the kills are done (the same pair continues).
/// `bell`: the server's groups are large enough to have a doorbell (over
/// SHM the client rings it; over TCP the group polls its readiness set
/// only once more than a few connections are live, so this changes
/// nothing there).
/// What the client sends.
#[derive(Clone, Copy, PartialEq)]
enum Load {
    /// The C++ example's messages.
    Plain,
    /// Atomic batches (`--batch 16`).
    Batch,
    /// Messages of 200,000 bytes (`--size`), as fragments.
    Large,
}

/// Bytes of each message of a `Load::Large` run, and the queues for it.
const LARGE: &str = "200000";
const LARGE_QUEUES: &str = "2097152";

fn torture(
    (shm, bell, load): (bool, bool, Load),
    client_kills: usize,
    server_kills: usize,
    step: u32,
    secs: u64,
) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    let tag = match (shm, bell, load) {
        (true, true, _) => "b",
        (true, false, Load::Large) => "ls",
        (false, _, Load::Large) => "lt",
        (true, false, _) => "s",
        (false, _, _) => "t",
    };
    let dir = std::env::temp_dir().join(format!("tcpshm-torture-{pid}-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let shm_dir = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        let d = dir.join("shm");
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let server_name = format!("ts{tag}{pid}");
    let client_name = format!("tc{tag}{pid}");
    let _cleanup = Cleanup {
        files: vec![
            shm_dir.join(format!("{server_name}_{client_name}.shm")),
            shm_dir.join(format!("{client_name}_{server_name}.shm")),
            shm_dir.join(format!("{server_name}.0.bell")),
        ],
        dir: dir.clone(),
    };
    let seed = 0x9E37_79B9_7F4A_7C15 ^ (pid as u64) << 1 ^ shm as u64;
    println!("seed {seed:#x}");
    let mut rng = Rng(seed);

    let server_args = |port: u16| {
        let mut v = vec![
            "echo-server".to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--name".into(),
            server_name.clone(),
            "--dir".into(),
            dir.join("server").display().to_string(),
            "--shm-dir".into(),
            shm_dir.display().to_string(),
            "--conns-per-group".into(),
            if bell { "64" } else { "4" }.into(),
            "--exactly-once".into(),
            "--tcp-queue-size".into(),
            if load == Load::Large {
                LARGE_QUEUES
            } else {
                "65536"
            }
            .into(),
        ];
        if load == Load::Large {
            v.extend(["--max-message-size".into(), LARGE.into()]);
            v.extend(["--shm-queue-size".into(), LARGE_QUEUES.into()]);
        }
        v
    };
    let mut log = Vec::new();
    // First start on a free port, then restarts on the same port.
    let mut server = Proc::spawn(&server_args(0));
    let first = server
        .lines
        .recv_timeout(Duration::from_secs(30))
        .expect("server starts");
    let port: u16 = first
        .split_whitespace()
        .skip_while(|w| *w != "on")
        .nth(1)
        .and_then(|a| a.rsplit(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no port in {first:?}"));
    let client_args = |fast: bool, count: u32| {
        let mut v = vec![
            "echo-client".to_string(),
            client_name.clone(),
            "--server".into(),
            format!("127.0.0.1:{port}"),
            "--count".into(),
            count.to_string(),
            "--dir".into(),
            dir.join("client").display().to_string(),
            "--shm-dir".into(),
            shm_dir.display().to_string(),
            "--retry".into(),
            "60".into(),
        ];
        if fast {
            v.push("--fast".into());
        }
        if shm {
            v.push("--shm".into());
        }
        match load {
            Load::Plain => {}
            Load::Batch => {
                v.extend(["--batch".into(), "16".into()]);
                v.extend(["--tcp-queue-size".into(), "65536".into()]);
            }
            Load::Large => {
                v.extend(["--size".into(), LARGE.into()]);
                v.extend(["--tcp-queue-size".into(), LARGE_QUEUES.into()]);
                v.extend(["--shm-queue-size".into(), LARGE_QUEUES.into()]);
            }
        }
        v
    };
    let mut fast = false;
    let mut count = step;
    let mut client = Proc::spawn(&client_args(fast, count));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut ck, mut sk) = (0, 0);
    while ck < client_kills || sk < server_kills {
        assert!(
            Instant::now() < deadline,
            "torture too slow: {ck} client and {sk} server kills"
        );
        std::thread::sleep(Duration::from_millis(20 + rng.next(120)));
        client.drain(&mut log);
        server.drain(&mut log);
        if let Some(status) = client.child.try_wait().unwrap() {
            assert_finished(&client, status, count, &mut log);
            // Finished early: carry on with a larger total on the same pair.
            count += step;
            log.push(format!("-- client finished; continue to {count}"));
            client = Proc::spawn(&client_args(fast, count));
            continue;
        }
        let kill_client = sk >= server_kills || (ck < client_kills && rng.next(2) == 0);
        if kill_client {
            client.kill9();
            ck += 1;
            fast = !fast;
            log.push(format!(
                "-- kill -9 client ({ck}), restart {}",
                if fast { "streaming" } else { "ping-pong" }
            ));
            client = Proc::spawn(&client_args(fast, count));
        } else {
            server.kill9();
            sk += 1;
            log.push(format!("-- kill -9 server ({sk}), restart"));
            server = Proc::spawn(&server_args(port));
        }
    }
    // Let the last client finish: every echo exactly once, in order.
    finish(&mut client, &server, count, deadline, &mut log);
    let logins = log.iter().filter(|l| l.starts_with("logged in")).count();
    assert!(
        logins > client_kills,
        "the client logged in after each kill ({logins})"
    );
    if shm {
        // One more session, without kills, with traffic both ways: a writer
        // announces the fast path at its first alloc of a session, and the
        // session above may have found every echo done and written
        // nothing. Then both rings must be on the fast path, not on v1.
        count += 100;
        log.push(format!("-- last session, to {count}"));
        client = Proc::spawn(&client_args(false, count));
        finish(&mut client, &server, count, deadline, &mut log);
        for f in _cleanup
            .files
            .iter()
            .filter(|f| f.extension() == Some("shm".as_ref()))
        {
            let out = std::process::Command::new(EXE)
                .args(["inspect", "--json"])
                .arg(f)
                .output()
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(
                v["shm"][0]["ring"],
                "fast path",
                "{} not on the fast path: {v}",
                f.display()
            );
        }
    }
    drop(server);
}

/// Waits (until `deadline`) for `client` to exit, then checks it
/// finished with every echo of `count`.
fn finish(client: &mut Proc, server: &Proc, count: u32, deadline: Instant, log: &mut Vec<String>) {
    let status = loop {
        client.drain(log);
        server.drain(log);
        if let Some(s) = client.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "client did not finish\n{}",
            log.join("\n")
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_finished(client, status, count, log);
}

/// The client exited 0 after all `count` echoes, each checked.
fn assert_finished(
    client: &Proc,
    status: std::process::ExitStatus,
    count: u32,
    log: &mut Vec<String>,
) {
    std::thread::sleep(Duration::from_millis(100)); // its last lines
    client.drain(log);
    let done = log
        .iter()
        .any(|l| l.starts_with(&format!("done: messages={count} ")));
    assert!(
        status.success() && done,
        "client failed ({status})\n{}",
        log.join("\n")
    );
}

/// Removes the run's shm objects and files, whether it passed or not.
struct Cleanup {
    files: Vec<PathBuf>,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn torture_tcp() {
    torture((false, false, Load::Batch), 10, 10, 200_000, 150);
}

#[test]
fn torture_shm() {
    torture((true, false, Load::Batch), 10, 10, 200_000, 150);
}

#[test]
fn torture_shm_doorbell() {
    torture((true, true, Load::Plain), 10, 10, 200_000, 150);
}

#[test]
fn torture_large_tcp() {
    torture((false, false, Load::Large), 5, 5, 1_000, 150);
}

#[test]
fn torture_large_shm() {
    torture((true, false, Load::Large), 5, 5, 1_000, 150);
}

#[test]
#[ignore = "long: hundreds of kills"]
fn torture_long_tcp() {
    torture((false, false, Load::Batch), 200, 200, 200_000, 1500);
}

#[test]
#[ignore = "long: hundreds of kills"]
fn torture_long_shm() {
    torture((true, false, Load::Batch), 200, 200, 200_000, 1500);
}

#[test]
#[ignore = "long: hundreds of kills"]
fn torture_long_shm_doorbell() {
    torture((true, true, Load::Plain), 200, 200, 200_000, 1500);
}

#[test]
#[ignore = "long: hundreds of kills"]
fn torture_long_large_tcp() {
    torture((false, false, Load::Large), 100, 100, 1_000, 1500);
}

#[test]
#[ignore = "long: hundreds of kills"]
fn torture_long_large_shm() {
    torture((true, false, Load::Large), 100, 100, 1_000, 1500);
}
