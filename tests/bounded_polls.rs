//! Every poll is bounded: a producer that streams faster than a consuming
//! server (which never replies) cannot keep the server's poll from
//! returning. Over shared memory, for three connection timeouts, a
//! single-threaded server keeps heartbeating (nobody times out) and a
//! second client in the same group keeps getting its echoes.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use tcpshm::{
    Accept, Client, ClientHandler, Close, CloseReason, ConnId, ConnTx, ControlHandler,
    GroupHandler, LoginRequest, Name, Received, Server, Transport,
};

/// Consumes the flood slowly (a little work per message, so the producer
/// is faster) and never replies to it; echoes everyone else.
#[derive(Default)]
struct SlowSink {
    disconnects: Vec<(String, CloseReason)>,
    flood_consumed: u64,
}

impl ControlHandler for SlowSink {
    fn on_new_connection(&mut self, _: &LoginRequest) -> Accept {
        Accept::group(0)
    }
}

impl GroupHandler for SlowSink {
    fn on_client_disconnected(&mut self, _: ConnId, c: &Name, close: Close) {
        self.disconnects.push((c.to_string(), close.reason));
    }
    fn on_client_msg(&mut self, _: ConnId, msg: Received<'_>, tx: &mut ConnTx) {
        if tx.remote_name().is_some_and(|n| n.as_str() == "flood") {
            let t = Instant::now();
            while t.elapsed() < Duration::from_micros(5) {
                std::hint::spin_loop();
            }
            msg.pop();
            self.flood_consumed += 1;
            return;
        }
        let Ok(mut rsp) = tx.alloc(msg.msg_type(), msg.payload().len()) else {
            return;
        };
        rsp.payload_mut().copy_from_slice(msg.payload());
        msg.pop();
        rsp.push();
    }
}

/// The tests here each spin three threads: one at a time on two cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[derive(Default)]
struct Counter {
    echoes: u64,
    disconnects: Vec<CloseReason>,
}

impl ClientHandler for Counter {
    fn on_server_msg(&mut self, msg: Received<'_>, _: &mut ConnTx) {
        msg.pop();
        self.echoes += 1;
    }
    fn on_disconnected(&mut self, close: Close) {
        self.disconnects.push(close.reason);
    }
}

/// Echoes one message at a time over `good` for `run_for`, polling both
/// of its sides; returns the longest wait for an echo.
fn ping_for(good: &mut Client, h: &mut Counter, run_for: Duration) -> Duration {
    let start = Instant::now();
    let mut last_echo = Instant::now();
    let mut longest_gap = Duration::ZERO;
    let mut sent = 0u64;
    while start.elapsed() < run_for {
        if h.echoes == sent {
            let mut m = good.connection().alloc(2, 16).unwrap();
            m.payload_mut().fill(1);
            m.push();
            sent += 1;
        }
        let before = h.echoes;
        good.poll(now(), h);
        if h.echoes > before {
            longest_gap = longest_gap.max(last_echo.elapsed());
            last_echo = Instant::now();
        }
        std::thread::yield_now();
    }
    longest_gap.max(last_echo.elapsed())
}

#[test]
fn a_flood_cannot_starve_heartbeats_or_the_group() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("starve");
    let _c = Cleanup(dir.clone());
    let timeout = Duration::from_millis(500);
    let cfg = config_with(&dir, |c| {
        c.heartbeat_interval = timeout / 5;
        c.connection_timeout = timeout;
    });
    let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let stop = AtomicBool::new(false);
    let ring_full = AtomicU64::new(0);
    let run_for = 3 * timeout;
    let mut sink = SlowSink::default();
    let (good, flood) = std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        // The server: one thread, as the C++ example runs it.
        serve(s, &mut server, &mut sink, &stop);
        let flood = s.spawn(|| {
            let mut c = client(&dir, "flood", &cfg);
            let mut h = Counter::default();
            c.connect(Transport::Shm, addr, 0).unwrap();
            let deadline = Instant::now() + run_for + Duration::from_secs(2);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                for _ in 0..64 {
                    let Ok(mut m) = c.connection().alloc(1, 16) else {
                        ring_full.fetch_add(1, Ordering::Relaxed);
                        break;
                    };
                    m.payload_mut().fill(7);
                    m.push();
                }
                c.parts().0.poll(now(), &mut h);
                std::thread::yield_now();
            }
            h
        });
        let mut good = client(&dir, "good", &cfg);
        let mut h = Counter::default();
        good.connect(Transport::Shm, addr, 0).unwrap();
        let longest_gap = ping_for(&mut good, &mut h, run_for);
        stop.store(true, Ordering::Relaxed);
        let flood = flood.join().unwrap();
        ((h, longest_gap), flood)
    });
    let ((good, longest_gap), flood) = (good, flood);
    eprintln!(
        "good client: {} echoes, longest wait {longest_gap:?}",
        good.echoes
    );
    assert!(
        sink.disconnects.is_empty(),
        "server saw {:?}",
        sink.disconnects
    );
    assert!(
        good.disconnects.is_empty(),
        "good client: {:?}",
        good.disconnects
    );
    assert!(
        flood.disconnects.is_empty(),
        "flooding client: {:?}",
        flood.disconnects
    );
    assert!(
        good.echoes > 10,
        "only {} echoes in three timeouts",
        good.echoes
    );
    assert!(
        longest_gap < timeout / 10,
        "the good client waited {longest_gap:?} for an echo"
    );
    assert!(
        ring_full.load(Ordering::Relaxed) > 0 && sink.flood_consumed > 0,
        "the producer never outran the consumer: this tested nothing"
    );
}

/// A peer that floods the TCP socket of its shared-memory session with
/// heartbeats: the control part reads a bounded amount per poll, so a
/// single-threaded server keeps serving another client.
#[test]
fn a_heartbeat_flood_cannot_hold_the_control_part() {
    use std::io::Write;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("hbflood");
    let _c = Cleanup(dir.clone());
    let cfg = config(&dir);
    let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let stop = AtomicBool::new(false);
    let flooded = AtomicU64::new(0);
    let run_for = Duration::from_secs(1);
    let mut sink = SlowSink::default();
    let (good, longest_gap) = std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        serve(s, &mut server, &mut sink, &stop);
        // A raw shm login, then nothing but heartbeats, as fast as the
        // socket takes them.
        let mut login = tcpshm_v1::Login::new("hbflood");
        login.use_shm = true;
        let (peer, rsp) = tcpshm_v1::Peer::login(addr, &login, Duration::from_secs(10)).unwrap();
        assert_eq!(rsp.status, tcpshm_v1::STATUS_OK);
        let mut raw = peer.stream;
        let flooded = &flooded;
        let stop = &stop;
        s.spawn(move || {
            let hb = tcpshm_v1::heartbeat(0);
            let burst: Vec<u8> = hb.iter().copied().cycle().take(8 * 1024).collect();
            raw.set_write_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let deadline = Instant::now() + run_for + Duration::from_secs(2);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if raw.write_all(&burst).is_ok() {
                    flooded.fetch_add(burst.len() as u64, Ordering::Relaxed);
                }
            }
        });
        let mut good = client(&dir, "good", &cfg);
        let mut h = Counter::default();
        good.connect(Transport::Tcp, addr, 0).unwrap();
        let longest_gap = ping_for(&mut good, &mut h, run_for);
        stop.store(true, Ordering::Relaxed);
        (h, longest_gap)
    });
    eprintln!(
        "good client: {} echoes, longest wait {longest_gap:?}, {} bytes of heartbeats flooded",
        good.echoes,
        flooded.load(Ordering::Relaxed)
    );
    assert!(
        flooded.load(Ordering::Relaxed) > 1 << 20,
        "the flood never flowed"
    );
    assert!(
        good.disconnects.is_empty(),
        "good client: {:?}",
        good.disconnects
    );
    assert!(good.echoes > 10, "only {} echoes", good.echoes);
    assert!(
        longest_gap < Duration::from_millis(100),
        "the good client waited {longest_gap:?} for an echo"
    );
}
