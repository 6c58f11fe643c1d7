//! An SHM group with a doorbell, driven for real ([`shm_group`]): its
//! bell and the doorbell and wake words of its rings are peer-written
//! memory, and the input writes them.

use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::peers::{fuzz_config, Scratch};
use super::Input;
use crate::shm_queue::{DOORBELL_WORDS, WAKE_WORDS};
use crate::{
    Accept, Client, ClientHandler, ConnId, ConnTx, ControlHandler, GroupHandler, LoginRequest,
    Received, Server, Transport,
};

/// Clients of the group: more than a group looks at ring by ring
/// without taking its bell.
const CLIENTS: usize = 5;
/// The sweep's interval on the fake clock.
const SWEEP: Duration = Duration::from_millis(8);

/// The server's side: message `k` from client slot `s` arrives `k`-th,
/// once (the payload carries `k`).
#[derive(Default)]
struct Checker {
    next: [u64; 8],
}

impl ControlHandler for Checker {
    fn on_new_connection(&mut self, _: &LoginRequest) -> Accept {
        Accept::group(0)
    }
}

impl GroupHandler for Checker {
    fn on_client_msg(&mut self, id: ConnId, msg: Received<'_>, _: &mut ConnTx) {
        let k = u64::from_le_bytes(msg.payload()[..8].try_into().expect("8 bytes"));
        let next = &mut self.next[id.slot % 8];
        assert_eq!(
            k, *next,
            "slot {}: lost, duplicated or out of order",
            id.slot
        );
        *next += 1;
        msg.pop();
    }
}

struct Ignore;

impl ClientHandler for Ignore {
    fn on_server_msg(&mut self, msg: Received<'_>, _: &mut ConnTx) {
        msg.pop();
    }
}

/// A server whose SHM group has a doorbell (and a sweep of 8 ms of a fake
/// clock), and five tcpshm clients logged in over shared memory; the
/// input chooses each step: a client pushes a message (or a batch with
/// `push_more`, let go by its next poll), the server or a client polls,
/// the clock moves (at most 4 ms a step), the server gets ready to sleep
/// (`Wait::wait_timeout`: its flags go up, its next poll takes them
/// down), or a peer writes a word of the bell (any value, header
/// included) or a doorbell or wake word of a ring's trailer (either
/// ring's: announcements, acknowledgements, the reader's flag).
/// Every message arrives at the server once, in order; and once the clock
/// has moved past a sweep interval with the server polling, every message
/// pushed has arrived, whatever the bell said.
pub fn shm_group(data: &[u8]) {
    let mut inp = Input::new(data);
    let dir = Scratch::new("bell");
    let mut cfg = fuzz_config(&dir.0);
    cfg.shm_conns_per_group = CLIENTS + 1;
    cfg.shm_doorbell_slots = 0;
    cfg.shm_sweep_interval = SWEEP;
    let Ok(mut server) = Server::new("srv", dir.0.join("s"), cfg.clone()) else {
        return;
    };
    if server.listen("127.0.0.1:0").is_err() {
        return;
    }
    let addr = server.local_addr().expect("listening");
    let mut checker = Checker::default();
    let mut clients = Vec::new();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                server.poll(0, &mut checker);
                std::thread::yield_now();
            }
        });
        for k in 0..CLIENTS {
            let Ok(mut c) = Client::new(&format!("c{k}"), dir.0.join(format!("c{k}")), cfg.clone())
            else {
                break;
            };
            if c.connect(Transport::Shm, addr, 0).is_err() {
                break;
            }
            clients.push(c);
        }
        stop.store(true, Ordering::Relaxed);
    });
    if clients.len() < CLIENTS {
        return; // a machine too slow to log in within the connect timeout
    }
    let bell_path = cfg.shm_dir.join("srv.0.bell");
    let ring = |k: usize| cfg.shm_dir.join(format!("c{k}_srv.shm"));
    let cap = cfg.shm_queue_size as u64;
    // Where each client's messages land on the server: its slot, in the
    // order the logins came.
    let (mut pushed, mut now) = ([0u64; CLIENTS], 0i64);
    let poll_clients = |clients: &mut Vec<Client>, now: i64| {
        for c in clients.iter_mut() {
            c.poll(now, &mut Ignore);
        }
    };
    for _ in 0..200 {
        if inp.done() {
            break;
        }
        let op = inp.byte();
        match op % 8 {
            0 | 1 => {
                let k = inp.byte() as usize % CLIENTS;
                let more = op & 0x10 != 0;
                if let Ok(mut m) = clients[k].connection().alloc(1, 8 + op as usize % 40) {
                    m.payload_mut()[..8].copy_from_slice(&pushed[k].to_le_bytes());
                    if more {
                        m.push_more()
                    } else {
                        m.push()
                    }
                    pushed[k] += 1;
                }
            }
            2 => {
                server.poll(now, &mut checker);
            }
            3 => {
                let _ = crate::Wait::wait_timeout(&mut server, now);
                server.poll(now, &mut checker);
            }
            4 => poll_clients(&mut clients, now),
            5 => now += i64::from(inp.byte()) * 16_000, // up to 4 ms
            6 => {
                // A word of the bell: the header's or one of bits.
                let off = 8 * u64::from(inp.byte() % 16);
                let v = u64::from_le_bytes(inp.bytes(8).try_into().expect("8 bytes"));
                if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&bell_path) {
                    let _ = f.write_at(&v.to_le_bytes(), off);
                }
            }
            _ => {
                // A doorbell or wake word of a client's rings (their other
                // words have fuzz targets of their own).
                let k = inp.byte() as usize % CLIENTS;
                let which = inp.byte() as usize;
                let words = [
                    DOORBELL_WORDS[0],
                    DOORBELL_WORDS[1],
                    WAKE_WORDS[0],
                    WAKE_WORDS[1],
                    WAKE_WORDS[2],
                ];
                let off = words[which % words.len()];
                let path = if which & 0x80 != 0 {
                    cfg.shm_dir.join(format!("srv_c{k}.shm"))
                } else {
                    ring(k)
                };
                let v = inp.bytes(8);
                if let Ok(f) = std::fs::OpenOptions::new().write(true).open(path) {
                    let _ = f.write_at(&v, cap + off as u64);
                }
            }
        }
    }
    // Batches go, then one sweep interval (and a step) of polls: every
    // message pushed has arrived.
    poll_clients(&mut clients, now);
    let step = SWEEP.as_nanos() as i64 / 8;
    for _ in 0..10 {
        now += step;
        server.poll(now, &mut checker);
    }
    for (slot, n) in pushed.iter().enumerate() {
        // Slots are taken in login order: client k has slot k.
        assert_eq!(
            checker.next[slot], *n,
            "client {slot}: messages not delivered"
        );
    }
}
