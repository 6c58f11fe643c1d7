//! Hostile and broken peers against a running server, from raw sockets:
//! the server stays up, the offending connection is closed, and a good
//! client keeps exchanging messages with nothing lost. Also: a stalled
//! client does not hold up the others in its group.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::*;
use tcpshm::{
    Accept, AllocError, ClientHandler, Close, Config, ConnId, ConnTx, Connection, ControlHandler,
    GroupHandler, LoginRequest, Name, Received, Server,
};
use tcpshm_v1::{Login, Response, STATUS_OK, STATUS_REJECTED};

fn login_frame(name: &[u8]) -> Vec<u8> {
    let mut login = Login::new("");
    login.client[..name.len()].copy_from_slice(name);
    login.encode()
}

fn read_response(s: &mut TcpStream) -> Option<Response> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut b = vec![0u8; Response::frame_len(Login::U8)];
    s.read_exact(&mut b).ok()?;
    Some(Response::decode(&b, Login::U8).unwrap())
}

/// Keeps a good client exchanging messages while `f` runs its abuse.
fn with_good_client(cfg: Config, f: impl FnOnce(SocketAddr, &mut dyn FnMut())) -> EchoServer {
    let dir = cfg.shm_dir.parent().unwrap().to_path_buf();
    let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let stop = AtomicBool::new(false);
    let mut echo = EchoServer::default();
    std::thread::scope(|s| {
        serve(s, &mut server, &mut echo, &stop);
        let _stop = StopOnDrop(&stop);
        let mut h = CheckingClient {
            len_of: Some(small_len),
            ..Default::default()
        };
        let mut good = client(&dir, "g", &cfg);
        good.connect(tcpshm::Transport::Tcp, addr, 0).unwrap();
        let mut sent = 0u64;
        let mut keep_going = || {
            if sent < 1_000_000 && send(good.connection(), sent, small_len(sent)) {
                sent += 1;
            }
            good.poll(now(), &mut h);
        };
        f(addr, &mut keep_going);
        // The good client still gets everything back.
        wait_until(30, "good client's echoes", || {
            good.poll(now(), &mut h);
            h.received == sent
        });
        assert!(sent > 0);
        assert!(h.disconnects.is_empty(), "good client disturbed");
    });
    echo
}

fn cfg(tag: &str) -> (Config, Cleanup) {
    let dir = scratch(tag);
    let c = config_with(&dir, |c| {
        c.new_connection_timeout = Duration::from_millis(200);
        c.tcp_conns_per_group = 8;
    });
    (c, Cleanup(dir))
}

#[test]
fn slow_loris_login_in_one_byte_writes_succeeds() {
    let (cfg, _c) = cfg("loris");
    let h = with_good_client(cfg, |addr, tick| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        for b in login_frame(b"loris") {
            s.write_all(&[b]).unwrap();
            let t = Instant::now();
            while t.elapsed() < Duration::from_micros(500) {
                tick();
            }
        }
        let r = read_response(&mut s).expect("answer");
        assert_eq!(r.status, STATUS_OK);
    });
    assert!(h.logons.contains(&"loris".to_string()));
}

#[test]
fn incomplete_login_is_closed_after_the_timeout() {
    let (cfg, _c) = cfg("never");
    with_good_client(cfg, |addr, tick| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&login_frame(b"never")[..30]).unwrap();
        s.set_nonblocking(true).unwrap();
        let t0 = Instant::now();
        let mut b = [0u8; 8];
        loop {
            match s.read(&mut b) {
                Ok(0) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                other => panic!("expected a close without an answer, got {other:?}"),
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "never closed");
            tick();
        }
        assert!(
            t0.elapsed() >= Duration::from_millis(150),
            "closed too early"
        );
    });
}

#[test]
fn garbage_before_login_and_bad_names_are_refused() {
    let (cfg, _c) = cfg("names");
    with_good_client(cfg, |addr, tick| {
        // Garbage: not a login header; closed without an answer.
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0")
            .unwrap();
        assert!(read_response(&mut s).is_none());
        tick();
        for bad in [&b"a/b"[..], b"..", b"x..y", b"\x01ctl", &[b'n'; 16]] {
            let mut f = login_frame(&bad[..bad.len().min(16)]);
            if bad.len() == 16 {
                // 16 bytes, no NUL terminator in the field.
                let off = Login::client_offset(Login::U8);
                f[off..off + 16].copy_from_slice(bad);
            }
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(&f).unwrap();
            let r = read_response(&mut s).expect("an answer");
            assert_eq!(
                (r.status, r.error_text().as_str()),
                (STATUS_REJECTED, "Invalid client name"),
                "{bad:?}"
            );
            tick();
        }
        // A NUL in the middle ends the name: "ab\0cd" is the name "ab".
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&login_frame(b"ab\0cd")).unwrap();
        let r = read_response(&mut s).expect("an answer");
        assert_eq!(r.status, STATUS_OK);
    });
}

#[test]
fn connection_flood_beyond_the_pending_limit() {
    let (cfg, _c) = cfg("flood");
    let dir2 = cfg.shm_dir.parent().unwrap().join("late");
    let cfg2 = cfg.clone();
    with_good_client(cfg, |addr, tick| {
        // 40 connections that never log in: 5 pending slots fill, the rest
        // wait in the backlog; each is closed after the login timeout.
        let flood: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(300) {
            tick();
        }
        // A new client still gets in while the flood drains.
        let mut late: tcpshm::Client = tcpshm::Client::new("late", &dir2, cfg2.clone()).unwrap();
        std::thread::scope(|s| {
            let h = s.spawn(|| late.connect(tcpshm::Transport::Tcp, addr, 0));
            while !h.is_finished() {
                tick();
            }
            h.join()
                .unwrap()
                .expect("a new client logs in despite the flood");
        });
        drop(flood);
    });
}

/// Pushes from the server: the stalled client's queue fills and its
/// alloc fails alone; the other client of the same group keeps going.
#[derive(Default)]
struct Pusher {
    conns: Vec<ConnId>,
}

impl ControlHandler for Pusher {
    fn on_new_connection(&mut self, _: &LoginRequest) -> Accept {
        Accept::group(0)
    }
}

impl GroupHandler for Pusher {
    fn on_client_logon(&mut self, id: ConnId, _: &LoginRequest, _: &mut Connection) {
        self.conns.push(id);
    }
    fn on_client_msg(&mut self, _: ConnId, msg: Received<'_>, _: &mut ConnTx) {
        msg.pop();
    }
}

#[derive(Default)]
struct Counter(u64);

impl ClientHandler for Counter {
    fn on_server_msg(&mut self, msg: Received<'_>, _: &mut ConnTx) {
        assert_eq!(
            u64::from_le_bytes(msg.payload()[..8].try_into().unwrap()),
            self.0
        );
        msg.pop();
        self.0 += 1;
    }
    fn on_disconnected(&mut self, close: Close) {
        panic!("disconnected: {close}");
    }
}

#[test]
fn stalled_client_fills_only_its_own_queue() {
    let dir = scratch("stall");
    let _c = Cleanup(dir.clone());
    let cfg = config_with(&dir, |c| {
        c.tcp_queue_size = 4096;
        c.tcp_recv_buf_max_size = 8192;
    });
    let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let mut pusher = Pusher::default();
    let mut live = client(&dir, "live", &cfg);
    let mut live_h = Counter::default();
    let mut stalled = client(&dir, "stalled", &cfg);
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            live.connect(tcpshm::Transport::Tcp, addr, 0).unwrap();
            stalled.connect(tcpshm::Transport::Tcp, addr, 0).unwrap();
        });
        while !h.is_finished() {
            server.poll(now(), &mut pusher);
        }
        h.join().unwrap();
    });
    {
        wait_until(10, "both logged on", || {
            server.poll(now(), &mut pusher);
            pusher.conns.len() == 2
        });
        let ids = pusher.conns.clone();
        let id_of = |server: &mut Server, name: &str| {
            *ids.iter()
                .find(|id| {
                    server
                        .connection(**id)
                        .unwrap()
                        .remote_name()
                        .map(Name::as_str)
                        == Some(name)
                })
                .unwrap()
        };
        let (live_id, stalled_id) = (id_of(&mut server, "live"), id_of(&mut server, "stalled"));
        // The stalled client never polls again. Push to both.
        let mut next = [0u64; 2];
        let mut stalled_full = false;
        wait_until(
            30,
            "the live client gets 20000 while the stalled one is full",
            || {
                for (k, id) in [live_id, stalled_id].into_iter().enumerate() {
                    let conn = server.connection(id).unwrap();
                    match conn.alloc(1, 16) {
                        Ok(mut m) => {
                            m.payload_mut()[..8].copy_from_slice(&next[k].to_le_bytes());
                            m.push();
                            next[k] += 1;
                        }
                        Err(AllocError::Full) => {
                            if k == 1 {
                                stalled_full = true;
                            }
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                server.poll(now(), &mut pusher);
                live.poll(now(), &mut live_h);
                stalled_full && live_h.0 >= 20_000
            },
        );
        // The stalled connection's queue holds what it could: a few hundred
        // messages, against 20000 and more for the live one.
        assert!(next[1] < 1000, "stalled client took {}", next[1]);
        assert!(next[0] >= 20_000);
        assert_eq!(
            server.connection(stalled_id).unwrap().alloc(1, 16).err(),
            Some(AllocError::Full)
        );
    }
}
