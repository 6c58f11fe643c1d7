//! A flood of connections cannot keep a real login out: with 1,000 idle
//! connections, then 1,000 slow-loris ones (a byte of a login each), open
//! at the server, a client still logs in within a second. The server
//! drains the accept backlog and evicts pending logins (the oldest that
//! sent nothing first) instead of letting them queue in the kernel.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::*;
use tcpshm::{Server, Transport};

const FLOOD: usize = 1000;

/// One flood at a time: each test spins a server thread beside its own.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Room for both ends of every flood connection in this one process.
fn raise_fd_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls with a valid struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
        let want = (4 * FLOOD as libc::rlim_t).min(l.rlim_max);
        if l.rlim_cur < want {
            l.rlim_cur = want;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &l), 0);
        }
        assert!(
            l.rlim_cur >= 3 * FLOOD as libc::rlim_t,
            "this test needs about {} file descriptors",
            3 * FLOOD
        );
    }
}

fn login_within_a_second(kind: &str, flood_byte: Option<u8>) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    raise_fd_limit();
    let dir = scratch(kind);
    let _c = Cleanup(dir.clone());
    let cfg = config_with(&dir, |c| c.connect_timeout = Duration::from_secs(5));
    let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let stop = AtomicBool::new(false);
    let mut echo = EchoServer::default();
    std::thread::scope(|s| {
        serve(s, &mut server, &mut echo, &stop);
        let _stop = StopOnDrop(&stop);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut flood = Vec::with_capacity(FLOOD);
        for _ in 0..FLOOD {
            let mut c = TcpStream::connect(addr).unwrap();
            if let Some(b) = flood_byte {
                c.write_all(&[b]).unwrap(); // the first byte of a login
            }
            flood.push(c);
            assert!(
                Instant::now() < deadline,
                "{kind}: the server stopped draining its accept backlog (connects block)"
            );
        }
        let mut client = client(&dir, "real", &cfg);
        let mut h = CheckingClient::default();
        let t = Instant::now();
        client
            .connect(Transport::Tcp, addr, 0)
            .unwrap_or_else(|e| panic!("{kind}: the real client did not get in: {e}"));
        let took = t.elapsed();
        eprintln!("{kind}: {FLOOD} connections open, the real login took {took:?}");
        assert!(
            took < Duration::from_secs(1),
            "{kind}: the login took {took:?}"
        );
        assert!(send(client.connection(), 0, 16));
        wait_until(10, "an echo", || {
            client.poll(now(), &mut h);
            h.received == 1
        });
        drop(flood);
    });
}

#[test]
fn idle_connections() {
    login_within_a_second("idle", None);
}

#[test]
fn slow_loris_connections() {
    login_within_a_second("slow-loris", Some(52));
}

/// Clients that connect at the same moment from one host (a restart's
/// reconnects; shared-memory clients are always on the server's host):
/// their logins all wait in the accept backlog with their frames sent,
/// more of them than `max_pending_per_source` (2) and
/// `max_new_connections` (5). Every one logs in: a pending login is read
/// before it could be evicted for a newcomer of its source.
#[test]
fn simultaneous_logins_from_one_host_all_get_in() {
    use std::io::Read;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("together");
    let _c = Cleanup(dir.clone());
    let cfg = config_with(&dir, |c| {
        c.tcp_conns_per_group = 16;
        c.shm_conns_per_group = 16;
    });
    let mut server: Server = Server::new("srv", dir.join("s"), cfg).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    // Twelve logins, six of them over shared memory, all sent before the
    // server polls once.
    let mut socks: Vec<TcpStream> = (0..12)
        .map(|i| {
            let mut s = TcpStream::connect(addr).unwrap();
            let mut login = tcpshm_v1::Login::new(&format!("c{i}"));
            login.use_shm = i % 2 == 1;
            s.write_all(&login.encode()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s
        })
        .collect();
    let stop = AtomicBool::new(false);
    let mut echo = EchoServer::default();
    std::thread::scope(|s| {
        serve(s, &mut server, &mut echo, &stop);
        let _stop = StopOnDrop(&stop);
        let n = tcpshm_v1::Response::frame_len(tcpshm_v1::Login::U8);
        for (i, sock) in socks.iter_mut().enumerate() {
            let mut b = vec![0u8; n];
            sock.read_exact(&mut b)
                .unwrap_or_else(|e| panic!("login c{i} got no answer: {e}"));
            let r = tcpshm_v1::Response::decode(&b, tcpshm_v1::Login::U8).unwrap();
            assert_eq!(r.status, tcpshm_v1::STATUS_OK, "c{i}: {}", r.error_text());
        }
    });
    assert_eq!(echo.logons.len(), 12);
}
