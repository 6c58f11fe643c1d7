//! No heap allocation per message on the hot path: a counting global
//! allocator around a loop of alloc/push/front/pop on both sides, over
//! both transports, after a warm-up (buffers reach their working size).
//! And no page fault on a shared-memory ring's first lap: its mapping is
//! populated when it is opened.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::{config, now, scratch, small_len, Cleanup};
use tcpshm::server::ConnId;
use tcpshm::wire::{Login, LoginResponse};
use tcpshm::{Accept, Client, ClientHandler, ConnTx, Connection, Received, Server, ServerHandler};

/// Echoes without allocating.
struct Echo;

impl ServerHandler for Echo {
    fn on_new_connection(
        &mut self,
        _: std::net::SocketAddr,
        _: &Login,
        _: &mut LoginResponse,
    ) -> Accept {
        Accept::Group(0)
    }
    fn on_client_msg(&mut self, _id: ConnId, msg: Received<'_>, tx: &mut ConnTx) {
        let Ok(mut rsp) = tx.alloc(msg.msg_type(), msg.payload().len()) else {
            return;
        };
        rsp.payload_mut().copy_from_slice(msg.payload());
        msg.pop();
        rsp.push();
    }
}

/// Checks each echo's sequence number and bytes without allocating.
#[derive(Default)]
struct Check {
    received: u64,
}

fn byte(seq: u64, j: usize) -> u8 {
    (seq as usize * 131 + j) as u8
}

impl ClientHandler for Check {
    fn on_login_success(&mut self, _: &LoginResponse) -> i64 {
        now()
    }
    fn on_server_msg(&mut self, msg: Received<'_>, _tx: &mut ConnTx) {
        let p = msg.payload();
        assert_eq!(
            u64::from_le_bytes(p[..8].try_into().unwrap()),
            self.received
        );
        assert_eq!(p.len(), small_len(self.received));
        assert!(p[8..]
            .iter()
            .enumerate()
            .all(|(j, &b)| b == byte(self.received, j + 8)));
        msg.pop();
        self.received += 1;
    }
}

fn send(conn: &mut Connection, seq: u64, len: usize) -> bool {
    let Ok(mut a) = conn.alloc((seq % 1000) as u16 + 1, len) else {
        return false;
    };
    let p = a.payload_mut();
    p[..8].copy_from_slice(&seq.to_le_bytes());
    for (j, b) in p.iter_mut().enumerate().skip(8) {
        *b = byte(seq, j);
    }
    a.push();
    true
}

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = COUNTING.try_with(|c| {
            if c.get() {
                COUNT.with(|n| n.set(n.get() + 1));
            }
        });
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let _ = COUNTING.try_with(|c| {
            if c.get() {
                COUNT.with(|n| n.set(n.get() + 1));
            }
        });
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn ping_pong(
    server: &mut Server<Echo>,
    client: &mut Client<Check>,
    use_shm: bool,
    from: u64,
    to: u64,
) {
    for seq in from..to {
        assert!(send(client.connection(), seq, small_len(seq)));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while client.handler().received <= seq {
            let t = now();
            server.poll_ctl(t);
            if use_shm {
                server.poll_shm(0);
            } else {
                server.poll_tcp(t, 0);
            }
            client.poll_tcp(t);
            client.poll_shm();
            assert!(std::time::Instant::now() < deadline, "echo {seq} lost");
        }
    }
}

fn no_alloc(use_shm: bool) {
    let dir = scratch("noalloc");
    let _c = Cleanup(dir.clone());
    let cfg = config(&dir);
    let mut server = Server::new("srv", dir.join("s"), cfg.clone(), Echo).unwrap();
    server.start("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let mut client = Client::new("cli", dir.join("c"), cfg, Check::default()).unwrap();
    std::thread::scope(|s| {
        let h = s.spawn(|| client.connect(tcpshm::Transport::from_use_shm(use_shm), addr, 0));
        while !h.is_finished() {
            server.poll_ctl(now());
            server.poll_tcp(now(), 0);
            server.poll_shm(0);
            std::thread::yield_now();
        }
        h.join().unwrap().unwrap();
    });
    // Warm-up: the login handoff finishes and buffers reach their size.
    ping_pong(&mut server, &mut client, use_shm, 0, 2000);
    COUNT.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    ping_pong(&mut server, &mut client, use_shm, 2000, 12_000);
    COUNTING.with(|c| c.set(false));
    let n = COUNT.with(|n| n.get());
    assert_eq!(n, 0, "heap allocations in 10,000 round trips");
}

#[test]
fn no_allocation_per_message_tcp() {
    no_alloc(false);
}

#[test]
fn no_allocation_per_message_shm() {
    no_alloc(true);
}

/// The minor page faults this thread has taken.
fn minor_faults() -> i64 {
    // SAFETY: getrusage writes the struct we pass; zeroed is a valid one.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage, RUSAGE_THREAD (Linux).
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) }, 0);
    u.ru_minflt
}

/// A fresh 1 MiB shared-memory ring (tmpfs, as in production) carries a
/// whole lap of messages without a page fault: without `MAP_POPULATE`
/// the writer's and the reader's first touch of each of its 256 pages
/// faulted (512 faults).
#[test]
fn no_page_fault_on_the_first_lap_of_a_shm_ring() {
    use tcpshm::shm_queue::{ShmReader, ShmWriter};
    use tcpshm::sys::MapOptions;
    let shm = std::path::Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("no /dev/shm: skipped");
        return;
    }
    let path = shm.join(format!("tcpshm-it-{}-faults.shm", std::process::id()));
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _rm = Remove(path.clone());
    let cap = 1 << 20;
    let mut w = ShmWriter::open_file(&path, cap, MapOptions::default()).unwrap();
    let mut r = ShmReader::open_file(&path, cap, MapOptions::default()).unwrap();
    let src = [7u8; 48];
    let mut sum = 0u64;
    let before = minor_faults();
    // One-block messages: a lap and a half of the 16,384 blocks.
    for i in 0..(cap / 64 * 3 / 2) as u32 {
        let p = w.alloc(1, 48).expect("room: the reader keeps up");
        p.copy_from_slice(&src);
        p[..4].copy_from_slice(&i.to_le_bytes());
        w.push();
        let (_, got) = r.front().unwrap().expect("published");
        sum += u64::from(u32::from_le_bytes(got[..4].try_into().unwrap()));
        r.pop();
    }
    let faults = minor_faults() - before;
    let n = (cap / 64 * 3 / 2) as u64;
    assert_eq!(sum, n * (n - 1) / 2, "every message read once");
    assert!(faults < 16, "{faults} page faults in a lap of the ring");
}
