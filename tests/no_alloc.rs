//! No heap allocation per message on the hot path: a counting global
//! allocator around a loop of alloc/push/front/pop on both sides, over
//! both transports, after a warm-up (buffers reach their working size).
//! (That a shared-memory ring takes no page fault on its first lap is a
//! test of the queue's, in `src/shm_queue/tests`.)

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::{config, now, scratch, small_len, Cleanup};
use tcpshm::{
    Accept, Client, ClientHandler, ConnId, ConnTx, Connection, ControlHandler, GroupHandler,
    LoginRequest, Received, Server, Transport,
};

/// Echoes without allocating.
struct Echo;

impl ControlHandler for Echo {
    fn on_new_connection(&mut self, _: &LoginRequest) -> Accept {
        Accept::group(0)
    }
}

impl GroupHandler for Echo {
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

fn ping_pong(server: &mut Server, client: &mut Client, check: &mut Check, from: u64, to: u64) {
    for seq in from..to {
        assert!(send(client.connection(), seq, small_len(seq)));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while check.received <= seq {
            let t = now();
            server.poll(t, &mut Echo);
            client.poll(t, check);
            assert!(std::time::Instant::now() < deadline, "echo {seq} lost");
        }
    }
}

fn no_alloc(use_shm: bool) {
    let dir = scratch("noalloc");
    let _c = Cleanup(dir.clone());
    let cfg = config(&dir);
    let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let mut client: Client = Client::new("cli", dir.join("c"), cfg).unwrap();
    let mut check = Check::default();
    let transport = if use_shm {
        Transport::Shm
    } else {
        Transport::Tcp
    };
    std::thread::scope(|s| {
        let h = s.spawn(|| client.connect(transport, addr, 0));
        while !h.is_finished() {
            server.poll(now(), &mut Echo);
            std::thread::yield_now();
        }
        h.join().unwrap().unwrap();
    });
    // Warm-up: the login handoff finishes and buffers reach their size.
    ping_pong(&mut server, &mut client, &mut check, 0, 2000);
    COUNT.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    ping_pong(&mut server, &mut client, &mut check, 2000, 12_000);
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
