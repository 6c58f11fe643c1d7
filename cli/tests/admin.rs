//! The operating commands on real files and processes: `inspect` after a
//! kill -9 with unacknowledged messages, `clean` keeping a live pair and
//! removing a dead one, a sequence mismatch recovered with `reset`, and a
//! C++ queue file imported and resent after login.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tcpshm::{
    Accept, Client, ClientHandler, Config, ConnId, ConnTx, ConnectError, ControlHandler,
    GroupHandler, LoginRequest, Received, Server, Transport,
};

const EXE: &str = env!("CARGO_BIN_EXE_tcpshm");

fn now() -> i64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as i64
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tcpshm-admin-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("shm")).unwrap();
    d
}

struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on every exit path.
struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cfg(shm: &Path) -> Config {
    let mut c = Config::default();
    c.shm_dir = shm.into();
    c
}

/// Records every message, in order.
#[derive(Default)]
struct Sink {
    got: Vec<(u16, Vec<u8>)>,
    /// Consume nothing (a stalled application): nothing is acknowledged.
    paused: bool,
}

impl ControlHandler for Sink {
    fn on_new_connection(&mut self, _: &LoginRequest) -> Accept {
        Accept::group(0)
    }
}

impl GroupHandler for Sink {
    fn on_client_msg(&mut self, _id: ConnId, msg: Received<'_>, _tx: &mut ConnTx) {
        if self.paused {
            return;
        }
        self.got.push((msg.msg_type(), msg.payload().to_vec()));
        msg.pop();
    }
}

struct Quiet;
impl ClientHandler for Quiet {
    fn on_server_msg(&mut self, msg: Received<'_>, _: &mut ConnTx) {
        msg.pop();
    }
}

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(EXE).args(args).output().expect("run tcpshm");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn inspect_json(path: &Path, shm: &Path) -> Value {
    let (ok, out) = run(&[
        "inspect",
        "--json",
        "--messages",
        "--shm-dir",
        shm.to_str().unwrap(),
        path.to_str().unwrap(),
    ]);
    assert!(ok, "inspect failed: {out}");
    serde_json::from_str(&out).expect("inspect --json")
}

/// A server and its handler, polled together.
struct Srv {
    server: Server,
    sink: Sink,
}

impl Srv {
    fn new(name: &str, dir: &Path, shm: &Path) -> Srv {
        let mut server = Server::new(name, dir, cfg(shm)).unwrap();
        server.listen("127.0.0.1:0").unwrap();
        Srv {
            server,
            sink: Sink::default(),
        }
    }
    fn addr(&self) -> std::net::SocketAddr {
        self.server.local_addr().unwrap()
    }
    fn poll(&mut self) {
        self.server.poll(now(), &mut self.sink);
    }
    /// Logs `client` in over `transport` while a thread polls the server.
    fn connect(&mut self, client: &mut Client, transport: Transport) -> Result<u8, ConnectError> {
        let addr = self.addr();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let t = s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    self.poll();
                    std::thread::yield_now();
                }
            });
            let r = client.connect(transport, addr, 0);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            t.join().unwrap();
            r
        })
    }
    /// Until the server has seen every session end (a new login would be
    /// "Already logged on" before).
    fn wait_idle(&mut self) {
        wait_until(10, "the server to see the disconnect", || {
            self.poll();
            self.server.stats().iter().all(|(_, _, s)| !s.connected)
        });
    }
}

fn poll_client(c: &mut Client) {
    c.poll(now(), &mut Quiet);
}

fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The child of `inspect_counts_what_a_killed_client_left_unacked`: a
/// server that answers the login and then reads nothing, and a client that
/// pushes exactly 7 messages, says so, and waits to be killed.
#[test]
fn child_pushes_seven_and_waits() {
    let Ok(dir) = std::env::var("TCPSHM_ADMIN_CHILD") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let shm = dir.join("shm");
    let mut srv = Srv::new("srv", &dir.join("srv"), &shm);
    let mut client: Client = Client::new("c", dir.join("c"), cfg(&shm)).unwrap();
    // The server is polled until the login is answered; after it nothing
    // is read (so nothing is acknowledged).
    srv.connect(&mut client, Transport::Tcp).unwrap();
    for i in 0..7u8 {
        let mut m = client.connection().alloc(10 + u16::from(i), 5).unwrap();
        m.payload_mut().copy_from_slice(&[i; 5]);
        m.push();
    }
    println!("pushed 7");
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn inspect_counts_what_a_killed_client_left_unacked() {
    let dir = scratch("inspect");
    let _c = Cleanup(dir.clone());
    let me = std::env::current_exe().unwrap();
    let child = Command::new(me)
        .args([
            "--exact",
            "child_pushes_seven_and_waits",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TCPSHM_ADMIN_CHILD", &dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Kill(child);
    let out = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufRead::lines(out).map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains("pushed 7") => break,
            Ok(_) => {}
            Err(_) => panic!("the child never pushed (or died)"),
        }
    }
    // Held while the child lives.
    let v = inspect_json(&dir.join("c"), &dir.join("shm"));
    assert_eq!(v["queues"][0]["held"], true, "{v}");
    drop(child); // kill -9
    let v = inspect_json(&dir.join("c"), &dir.join("shm"));
    let q = &v["queues"][0];
    assert_eq!(q["local"], "c");
    assert_eq!(q["remote"], "srv");
    assert_eq!(q["held"], false, "{v}");
    assert_eq!(q["pending"], 7, "{v}");
    assert_eq!(q["seq_start"], 0);
    assert_eq!(q["seq_end"], 7);
    assert_eq!(q["messages"][6]["type"], 16);
    assert_eq!(q["messages"][6]["head_hex"], "06 06 06 06 06");
    assert_eq!(v["last_server"][0]["server"], "srv");
    let (ok, text) = run(&[
        "inspect",
        dir.join("c").join("c_srv.ptcp").to_str().unwrap(),
        "--messages",
    ]);
    assert!(ok && text.contains("7 pending"), "{text}");
}

/// Holds `path` as a live process would: a queue file's `flock`, or an
/// shm object's writer lock (an OFD lock on the byte past its end).
fn hold(path: &Path) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let len = f.metadata().unwrap().len();
    if path.extension().is_some_and(|x| x == "shm") {
        // SAFETY: a zeroed flock is a valid value; the fd is open, the
        // struct valid for the call.
        let r = unsafe {
            let mut fl: libc::flock = std::mem::zeroed();
            fl.l_type = libc::F_WRLCK as libc::c_short;
            fl.l_whence = libc::SEEK_SET as libc::c_short;
            fl.l_start = len as libc::off_t;
            fl.l_len = 1;
            libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &fl)
        };
        assert_eq!(r, 0, "lock {}", path.display());
    } else {
        // SAFETY: plain syscall on a descriptor we own.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(r, 0, "lock {}", path.display());
    }
    f
}

/// A valid queue file of this project's format at `path` (imported from
/// an empty C++ one).
fn queue_file(path: &Path) {
    let tmp = path.with_extension("cpp");
    std::fs::create_dir_all(&tmp).unwrap();
    let cpp = tmp.join(path.file_name().unwrap());
    std::fs::write(&cpp, tcpshm_v1::cpp_queue_file(2000, 0, 0, &[])).unwrap();
    tcpshm::admin::import_cpp(&cpp, path.parent().unwrap(), None).unwrap();
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// An shm object of a 4 KiB ring at `path`.
fn shm_object(path: &Path) {
    std::fs::write(path, vec![0u8; 4096 + 256]).unwrap();
}

#[test]
fn clean_keeps_a_live_pair_and_removes_a_dead_one() {
    let dir = scratch("clean");
    let _c = Cleanup(dir.clone());
    let (c, shm) = (dir.join("c"), dir.join("shm"));
    std::fs::create_dir_all(&c).unwrap();
    let mut name = [0u8; 16];
    name[..4].copy_from_slice(b"srvB");
    std::fs::write(c.join("c.lastserver"), name).unwrap();
    // The current pair (c, srvB), held by a live process; and two pairs
    // of previous server names: srvA dead, srvL still held by a process.
    for f in ["c_srvB.ptcp", "c_srvA.ptcp", "c_srvL.ptcp"] {
        queue_file(&c.join(f));
    }
    for f in ["c_srvA.shm", "srvA_c.shm", "c_srvB.shm"] {
        shm_object(&shm.join(f));
    }
    let held = [
        hold(&c.join("c_srvB.ptcp")),
        hold(&c.join("c_srvL.ptcp")),
        hold(&shm.join("c_srvB.shm")),
    ];
    let args = |yes: bool| {
        let mut v = vec![
            "clean",
            "--json",
            "--dir",
            c.to_str().unwrap(),
            "--shm-dir",
            shm.to_str().unwrap(),
        ];
        if yes {
            v.push("--yes");
        }
        v
    };
    // A dry run lists and removes nothing.
    let (ok, out) = run(&args(false));
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["dry_run"], true);
    assert_eq!(status(&v, "c_srvA.ptcp"), "would remove");
    assert!(c.join("c_srvA.ptcp").exists());
    let (ok, out) = run(&args(true));
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status(&v, "c_srvA.ptcp"), "removed");
    assert_eq!(status(&v, "/c_srvA.shm"), "removed");
    assert_eq!(status(&v, "/srvA_c.shm"), "removed");
    assert_eq!(status(&v, "c_srvL.ptcp"), "kept: a live process holds it");
    assert_eq!(
        status(&v, "c_srvB.ptcp"),
        "absent",
        "the current pair is never a candidate"
    );
    assert_eq!(status(&v, "c_srvB.shm"), "absent");
    assert!(!c.join("c_srvA.ptcp").exists() && !shm.join("c_srvA.shm").exists());
    assert!(c.join("c_srvB.ptcp").exists() && c.join("c_srvL.ptcp").exists());
    assert!(shm.join("c_srvB.shm").exists());
    drop(held);
}

/// The status `clean --json` gives `file` (by the end of its path).
fn status(v: &Value, file: &str) -> String {
    v["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"].as_str().unwrap().ends_with(file))
        .map_or("absent".into(), |f| {
            f["status"].as_str().unwrap().to_string()
        })
}

/// Names with `_` (issue: `inspect` split `desk_1_srv.ptcp` at its first
/// `_`, and `clean --older-than` then listed a killed client's current
/// pair, with its pending messages, and another client's current shm
/// objects): real clients `desk_1` (TCP, killed with messages pending) and
/// `desk_2` (SHM) of the echo server `srv`; however old, their current
/// pairs are kept, and inspect names the pair right.
#[test]
fn names_with_underscores_are_never_split_wrong() {
    let dir = scratch("underscore");
    let _c = Cleanup(dir.clone());
    let shm = dir.join("shm");
    let port = 29_000 + (std::process::id() % 5000) as u16;
    let listen = format!("127.0.0.1:{port}");
    let srv = Kill(
        Command::new(EXE)
            .args(["echo-server", "--name", "srv", "--listen", &listen, "--dir"])
            .arg(dir.join("srv"))
            .arg("--shm-dir")
            .arg(&shm)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for (name, shm_flag) in [("desk_1", None), ("desk_2", Some("--shm"))] {
        let d = dir.join(name);
        let mut args = vec!["echo-client", name, "--server", &listen, "--count", "50"];
        args.extend(["--retry", "10", "--dir", d.to_str().unwrap()]);
        args.extend(["--shm-dir", shm.to_str().unwrap()]);
        args.extend(shm_flag);
        let (ok, out) = run(&args);
        assert!(ok, "{out}");
    }
    drop(srv);
    // desk_1's queue holds messages the server never acknowledged: write
    // three more with a client whose server is gone.
    let mut c: Client = Client::new("desk_1", dir.join("desk_1"), cfg(&shm)).unwrap();
    assert!(c.connect(Transport::Tcp, &listen[..], 0).is_err());
    for _ in 0..3 {
        c.connection().alloc(1, 4).unwrap().push();
    }
    drop(c);
    let v = inspect_json(&dir.join("desk_1"), &shm);
    let q = &v["queues"][0];
    assert_eq!(
        (q["local"].as_str(), q["remote"].as_str()),
        (Some("desk_1"), Some("srv")),
        "{v}"
    );
    assert!(q["pending"].as_u64().unwrap() >= 3, "{v}");
    std::thread::sleep(Duration::from_millis(1100));
    let (ok, out) = run(&[
        "clean",
        "--json",
        "--older-than",
        "1s",
        "--dir",
        dir.join("desk_1").to_str().unwrap(),
        "--dir",
        dir.join("desk_2").to_str().unwrap(),
        "--shm-dir",
        shm.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    for f in ["desk_1_srv.ptcp", "desk_2_srv.shm", "srv_desk_2.shm"] {
        assert_eq!(status(&v, f), "absent", "{f} is a current pair's: {v}");
    }
}

/// The echo programs backing off (`--idle backoff`), the client sending a
/// message every 2 ms (`--interval-us`), so both sides are parked when
/// each arrives: every echo comes back, in order, over TCP and SHM (the
/// client checks each), and the report has its percentiles.
#[test]
fn echo_programs_back_off_and_pace() {
    let dir = scratch("idle");
    let _c = Cleanup(dir.clone());
    let shm = dir.join("shm");
    // A port free a moment ago (the other tests' ranges are fixed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let _srv = Kill(
        Command::new(EXE)
            .args(["echo-server", "--name", "srv", "--listen", &listen, "--dir"])
            .arg(dir.join("srv"))
            .args(["--idle", "backoff", "--shm-dir"])
            .arg(&shm)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for (name, shm_flag) in [("quiet_tcp", None), ("quiet_shm", Some("--shm"))] {
        let d = dir.join(name);
        let mut args = vec!["echo-client", name, "--server", &listen, "--count", "40"];
        args.extend(["--idle", "backoff", "--interval-us", "2000"]);
        args.extend(["--retry", "10", "--dir", d.to_str().unwrap()]);
        args.extend(["--shm-dir", shm.to_str().unwrap()]);
        args.extend(shm_flag);
        let (ok, out) = run(&args);
        assert!(ok, "{out}");
        assert!(out.contains("done: messages=40 "), "{out}");
        assert!(out.contains("rtt_samples=40 "), "{out}");
    }
    let (ok, out) = run(&["echo-client", "x", "--fast", "--interval-us", "5"]);
    assert!(
        !ok && out.contains("--fast"),
        "pacing and streaming exclude each other: {out}"
    );
}

/// The pair's sequence numbers no longer fit (the client's queue file was
/// replaced by an older copy): the login fails with status 1; `tcpshm
/// reset` on the client's directory moves its files aside; the next login
/// starts the pair afresh on both sides, and the backup is still readable.
#[test]
fn mismatch_then_reset_then_fresh_login() {
    let dir = scratch("reset");
    let _c = Cleanup(dir.clone());
    let shm = dir.join("shm");
    let mut srv = Srv::new("srv", &dir.join("srv"), &shm);
    let cdir = dir.join("c");
    let send = |client: &mut Client, srv: &mut Srv, n: usize| {
        let before = srv.sink.got.len();
        for i in 0..n {
            let mut m = client.connection().alloc(1, 4).unwrap();
            m.payload_mut().copy_from_slice(&(i as u32).to_le_bytes());
            m.push();
        }
        wait_until(10, "the server got them", || {
            srv.poll();
            poll_client(client);
            srv.sink.got.len() == before + n
        });
    };
    {
        let mut client: Client = Client::new("c", &cdir, cfg(&shm)).unwrap();
        srv.connect(&mut client, Transport::Tcp).unwrap();
        send(&mut client, &mut srv, 3);
        client.stop();
    }
    srv.wait_idle();
    let old = std::fs::read(cdir.join("c_srv.ptcp")).unwrap();
    {
        let mut client: Client = Client::new("c", &cdir, cfg(&shm)).unwrap();
        srv.connect(&mut client, Transport::Tcp).unwrap();
        send(&mut client, &mut srv, 4);
        // Let the server's acks arrive, so the client's queue moves on.
        wait_until(10, "acks", || {
            srv.poll();
            poll_client(&mut client);
            client.connection().messages_pushed() == 7
        });
        std::thread::sleep(Duration::from_millis(300));
        for _ in 0..50 {
            srv.poll();
            poll_client(&mut client);
        }
        client.stop();
    }
    srv.wait_idle();
    // Replace the client's file with the copy from before: its sequence
    // range (3..3) no longer holds the server's ack (7).
    std::fs::write(cdir.join("c_srv.ptcp"), &old).unwrap();
    let mut client: Client = Client::new("c", &cdir, cfg(&shm)).unwrap();
    match srv.connect(&mut client, Transport::Tcp) {
        Err(ConnectError::SeqMismatch(m)) => assert_eq!(m.remote_ack, 7, "{m:?}"),
        other => panic!("expected a sequence mismatch, got {other:?}"),
    }
    drop(client);
    let (ok, out) = run(&[
        "reset",
        "--dir",
        cdir.to_str().unwrap(),
        "--pair",
        "c_srv",
        "--shm-dir",
        shm.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("both sides start the pair afresh"), "{out}");
    let backup = PathBuf::from(
        out.lines()
            .find_map(|l| l.strip_prefix("inspect the old files with: tcpshm inspect "))
            .expect("the backup path"),
    );
    let v = inspect_json(&backup, &shm);
    assert_eq!(v["queues"][0]["problem"], Value::Null, "{v}");
    assert_eq!(
        v["queues"][0]["seq_end"], 3,
        "the backup is the old file: {v}"
    );
    assert_eq!(v["last_server"][0]["server"], "srv");
    let mut client: Client = Client::new("c", &cdir, cfg(&shm)).unwrap();
    srv.connect(&mut client, Transport::Tcp)
        .expect("a fresh login after reset");
    srv.sink.got.clear();
    send(&mut client, &mut srv, 2);
    let (s, e) = {
        let v = inspect_json(&cdir.join("c_srv.ptcp"), &shm);
        (
            v["queues"][0]["seq_start"].clone(),
            v["queues"][0]["seq_end"].clone(),
        )
    };
    assert_eq!(e, 2, "the pair started again at 0 ({s}..{e})");
}

/// A C++ client's queue file with 5 unacknowledged messages, imported:
/// after the login the server receives exactly those 5, once, in order.
#[test]
fn import_then_resend_after_login() {
    let dir = scratch("import");
    let _c = Cleanup(dir.clone());
    let shm = dir.join("shm");
    let cpp = dir.join("cpp");
    std::fs::create_dir_all(&cpp).unwrap();
    let msgs: Vec<(u16, Vec<u8>)> = (0..5u8)
        .map(|i| (20 + u16::from(i), vec![i; 3 + i as usize * 10]))
        .collect();
    let refs: Vec<(u16, &[u8])> = msgs.iter().map(|(t, p)| (*t, &p[..])).collect();
    std::fs::write(
        cpp.join("c_srv.ptcp"),
        tcpshm_v1::cpp_queue_file(2000, 0, 0, &refs),
    )
    .unwrap();
    let cdir = dir.join("c");
    std::fs::create_dir_all(&cdir).unwrap();
    let mut name = [0u8; 16];
    name[..3].copy_from_slice(b"srv");
    std::fs::write(cdir.join("c.lastserver"), name).unwrap();
    // inspect reads the C++ file as it is.
    let v = inspect_json(&cpp.join("c_srv.ptcp"), &shm);
    assert_eq!(v["queues"][0]["format"], "C++");
    assert_eq!(v["queues"][0]["pending"], 5);
    let (ok, out) = run(&[
        "import-cpp",
        cpp.join("c_srv.ptcp").to_str().unwrap(),
        "--dir",
        cdir.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("5 pending messages"), "{out}");
    let (ok, out) = run(&[
        "import-cpp",
        cpp.join("c_srv.ptcp").to_str().unwrap(),
        "--dir",
        cdir.to_str().unwrap(),
    ]);
    assert!(
        !ok && out.contains("exists"),
        "an import never overwrites: {out}"
    );
    let mut srv = Srv::new("srv", &dir.join("srv"), &shm);
    let mut client: Client = Client::new("c", &cdir, cfg(&shm)).unwrap();
    srv.connect(&mut client, Transport::Tcp).unwrap();
    wait_until(10, "the resent messages", || {
        srv.poll();
        poll_client(&mut client);
        srv.sink.got.len() >= 5
    });
    for _ in 0..100 {
        srv.poll();
        poll_client(&mut client);
    }
    assert_eq!(
        srv.sink.got, msgs,
        "each imported message exactly once, in order"
    );
}

/// A server renamed (as daily): once the client has logged in to the new
/// name, the old name's shm objects are gone; the new pair's are there.
#[test]
fn rename_removes_the_old_names_shm_objects() {
    let dir = scratch("rename");
    let _c = Cleanup(dir.clone());
    let shm = dir.join("shm");
    let cdir = dir.join("c");
    let login = |name: &str| {
        let mut srv = Srv::new(name, &dir.join("srv"), &shm);
        let mut client: Client = Client::new("c", &cdir, cfg(&shm)).unwrap();
        srv.connect(&mut client, Transport::Shm).unwrap();
        let mut m = client.connection().alloc(1, 3).unwrap();
        m.payload_mut().copy_from_slice(b"abc");
        m.push();
        wait_until(10, "the message", || {
            srv.poll();
            srv.sink.got.len() == 1
        });
    };
    login("day1");
    assert!(shm.join("c_day1.shm").exists() && shm.join("day1_c.shm").exists());
    login("day2");
    assert!(
        !shm.join("c_day1.shm").exists(),
        "the old pair's ring from c"
    );
    assert!(!shm.join("day1_c.shm").exists(), "the old pair's ring to c");
    assert!(shm.join("c_day2.shm").exists() && shm.join("day2_c.shm").exists());
}

/// The counters of `Client::stats` and `Server::stats` are exact, and a
/// message unacknowledged when a session ended counts as resent.
#[test]
fn stats_count_exactly() {
    let dir = scratch("stats-lib");
    let _c = Cleanup(dir.clone());
    let shm = dir.join("shm");
    let mut srv = Srv::new("srv", &dir.join("srv"), &shm);
    let mut client: Client = Client::new("c", dir.join("c"), cfg(&shm)).unwrap();
    srv.connect(&mut client, Transport::Tcp).unwrap();
    // Three messages the server does not consume in this session.
    srv.sink.paused = true;
    for i in 0..3u8 {
        let mut m = client.connection().alloc(7, 10).unwrap();
        m.payload_mut().fill(i);
        m.push();
    }
    let s = client.stats();
    assert_eq!(
        (s.msgs_sent, s.bytes_sent, s.pending, s.sessions),
        (3, 30, 3, 1)
    );
    assert_eq!(s.acked, Some(0));
    assert!(s.connected);
    client.connection().close();
    wait_until(10, "the disconnect", || {
        poll_client(&mut client);
        srv.poll();
        !client.stats().connected && srv.server.stats().iter().all(|(_, _, s)| !s.connected)
    });
    srv.sink.paused = false;
    srv.connect(&mut client, Transport::Tcp).unwrap();
    wait_until(10, "the resent messages", || {
        srv.poll();
        poll_client(&mut client);
        srv.sink.got.len() == 3
    });
    wait_until(10, "their ack", || {
        srv.poll();
        poll_client(&mut client);
        client.stats().acked == Some(3)
    });
    let s = client.stats();
    assert_eq!(
        (s.msgs_sent, s.resent, s.sessions, s.pending),
        (3, 3, 2, 0),
        "{s:?}"
    );
    assert_eq!(s.last_close, None, "connected again: {s:?}");
    let st = srv.server.stats();
    let (_, peer, ss) = st
        .iter()
        .find(|(_, p, _)| p.as_str() == "c")
        .expect("the client's slot");
    assert_eq!(peer.as_str(), "c");
    assert_eq!((ss.msgs_received, ss.bytes_received), (3, 30), "{ss:?}");
}

/// The echo programs publish their statistics; `tcpshm stats` shows them.
#[test]
fn echo_programs_publish_stats() {
    let dir = scratch("stats-cli");
    let _c = Cleanup(dir.clone());
    let shm = dir.join("shm");
    let port = 24_000 + (std::process::id() % 5000) as u16;
    let listen = format!("127.0.0.1:{port}");
    let srv = Kill(
        Command::new(EXE)
            .args([
                "echo-server",
                "--listen",
                &listen,
                "--dir",
                dir.join("srv").to_str().unwrap(),
                "--shm-dir",
                shm.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for (name, shm_flag) in [("ct", None), ("cs", Some("--shm"))] {
        let mut args = vec![
            "echo-client",
            name,
            "--server",
            &listen,
            "--count",
            "2000",
            "--retry",
            "10",
            "--dir",
        ];
        let d = dir.join(name);
        let d = d.to_str().unwrap().to_string();
        args.push(&d);
        args.extend(["--shm-dir", shm.to_str().unwrap()]);
        args.extend(shm_flag);
        let (ok, out) = run(&args);
        assert!(ok, "{out}");
        let v: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(name).join(format!("{name}.stats"))).unwrap(),
        )
        .unwrap();
        let c = &v["connections"][0];
        assert_eq!(v["process"], "echo-client");
        assert_eq!(c["peer"], "server");
        assert_eq!(
            (c["msgs_sent"].as_u64(), c["msgs_received"].as_u64()),
            (Some(2000), Some(2000)),
            "{v}"
        );
        assert_eq!(
            c["transport"],
            if shm_flag.is_some() { "shm" } else { "tcp" }
        );
        assert_eq!(c["sessions"], 1);
    }
    // The server publishes every second.
    let path = dir.join("srv").join("server.stats");
    wait_until(10, "the server's stats", || {
        std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .is_some_and(|v| {
                v["connections"].as_array().is_some_and(|cs| {
                    cs.len() == 2 && cs.iter().all(|c| c["msgs_received"].as_u64() == Some(2000))
                })
            })
    });
    let (ok, out) = run(&[
        "stats",
        "--json",
        dir.join("srv").to_str().unwrap(),
        dir.join("cs").to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["processes"].as_array().unwrap().len(), 2);
    let (ok, out) = run(&[
        "stats",
        "--watch",
        "--iterations",
        "2",
        "--interval-ms",
        "10",
        dir.join("srv").to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    assert_eq!(
        out.matches("echo-server server").count(),
        4,
        "two refreshes of two rows:\n{out}"
    );
    drop(srv);
}

/// A server's doorbell: `inspect` describes it; `clean` keeps it while the
/// server runs and removes it once the server is gone (its next start
/// makes it anew).
#[test]
fn a_doorbell_is_inspected_and_cleaned_with_its_server() {
    let dir = scratch("bell");
    let _c = Cleanup(dir.clone());
    let shm = dir.join("shm");
    let mut c = cfg(&shm);
    c.shm_conns_per_group = 100;
    let bell = shm.join("srvD.0.bell");
    let server: Server = Server::new("srvD", dir.join("s"), c.clone()).unwrap();
    let (ok, out) = run(&["inspect", "--json", bell.to_str().unwrap()]);
    assert!(ok, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let b = &v["bells"][0];
    assert_eq!(
        (b["server"].as_str(), b["group"].as_u64()),
        (Some("srvD"), Some(0))
    );
    assert_eq!(
        (b["slots"].as_u64(), b["held"].as_bool()),
        (Some(100), Some(true))
    );
    assert!(b["problem"].is_null(), "{b}");
    let clean = |yes: bool| {
        let mut v = vec![
            "clean",
            "--json",
            "--dir",
            dir.to_str().unwrap(),
            "--shm-dir",
        ];
        v.push(shm.to_str().unwrap());
        if yes {
            v.push("--yes");
        }
        let (ok, out) = run(&v);
        assert!(ok, "{out}");
        serde_json::from_str::<Value>(&out).unwrap()
    };
    assert_eq!(
        status(&clean(true), "srvD.0.bell"),
        "absent",
        "a live server's"
    );
    assert!(bell.exists());
    drop(server);
    assert_eq!(status(&clean(true), "srvD.0.bell"), "removed");
    assert!(!bell.exists());
    // A second server of the same name over the same shm_dir is refused.
    let _a: Server = Server::new("srvD", dir.join("s"), c.clone()).unwrap();
    match Server::<u8, u8>::new("srvD", dir.join("s2"), c) {
        Err(tcpshm::SetupError::File(e)) => assert!(e.is_in_use(), "{e}"),
        other => panic!("a second server got its doorbell: {other:?}"),
    }
}
