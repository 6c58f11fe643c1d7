//! `tcpshm echo-server`: echoes every message back with the same type and
//! payload, exactly once even across kill -9 of the server.
//!
//! Exactly once: the reply is pushed before the request is popped, and
//! the connection's crash-exact message counts tell, after a restart,
//! whether the request at the front was already answered (pushed is then
//! one ahead of popped): it is popped without a second reply. (Popping
//! first could lose a reply to a crash between the two.)

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;

use tcpshm::wire::{Login, LoginResponse, Name};
use tcpshm::{
    Accept, CloseReason, Config, ConnId, ConnTx, Connection, Received, Server, ServerHandler,
};

use crate::util::{catch_stop_signals, now, stopping};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on (IPv4 or IPv6; port 0 picks a free one).
    #[arg(long, default_value = "0.0.0.0:12345")]
    pub listen: String,
    /// Server name (changing it starts every client afresh).
    #[arg(long, default_value = "server")]
    pub name: String,
    /// Directory for the queue files.
    #[arg(long, default_value = "server")]
    pub dir: PathBuf,
    /// TCP connection groups.
    #[arg(long, default_value_t = 1)]
    pub tcp_groups: usize,
    /// SHM connection groups.
    #[arg(long, default_value_t = 1)]
    pub shm_groups: usize,
    /// Connections per group.
    #[arg(long, default_value_t = 4)]
    pub conns_per_group: usize,
    /// Poll each group on its own thread (plus the control thread);
    /// default: one thread polls everything.
    #[arg(long)]
    pub threads: bool,
    /// Shared-memory queue size in bytes (a power of two; the same on both sides).
    #[arg(long, default_value_t = 1 << 20)]
    pub shm_queue_size: usize,
    /// Directory of shared-memory objects.
    #[arg(long, default_value = "/dev/shm")]
    pub shm_dir: PathBuf,
    /// Keep this side on the v1 shared-memory ring (`Config::shm_fast_path`
    /// off), as a C++ peer: for comparisons and debugging.
    #[arg(long)]
    pub shm_v1: bool,
    /// Do not hand the last message's cache lines to the shared cache at
    /// each poll (`Config::shm_hand_over` off): for comparisons, and for
    /// peers on SMT siblings.
    #[arg(long)]
    pub shm_no_hand_over: bool,
    /// TCP delayed ack in microseconds (see `Config::ack_delay`); 0 acks
    /// at once.
    #[arg(long)]
    pub ack_delay_us: Option<i64>,
}

#[derive(Clone)]
struct Echo {
    tcp_groups: usize,
    shm_groups: usize,
}

fn transport(shm: bool) -> &'static str {
    if shm {
        "shm"
    } else {
        "tcp"
    }
}

impl ServerHandler for Echo {
    fn on_system_error(&mut self, what: &str, e: &std::io::Error) {
        println!("system error: {what}: {e}");
    }
    fn on_new_connection(
        &mut self,
        peer: SocketAddr,
        login: &Login,
        _rsp: &mut LoginResponse,
    ) -> Accept {
        let name = Name::from_wire(&login.client_name)
            .map(|n| n.to_string())
            .unwrap_or_default();
        let groups = if login.use_shm {
            self.shm_groups
        } else {
            self.tcp_groups
        };
        if groups == 0 {
            return Accept::Reject(format!("{} disabled", transport(login.use_shm)));
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut h);
        let g = (h.finish() % groups as u64) as usize;
        println!(
            "login from {peer}: {name} over {} -> group {g}",
            transport(login.use_shm)
        );
        Accept::Group(g)
    }
    fn on_client_logon(&mut self, _peer: SocketAddr, id: ConnId, conn: &mut Connection) {
        let (rx, tx) = conn.split();
        println!(
            "client {} logged on ({} group {}): {} received, {} echoed so far",
            tx.remote_name().map(|n| n.as_str()).unwrap_or("?"),
            transport(id.transport.is_shm()),
            id.group,
            rx.messages_popped(),
            tx.messages_pushed()
        );
    }
    fn on_client_disconnected(
        &mut self,
        client: &Name,
        _id: ConnId,
        reason: CloseReason,
        errno: i32,
    ) {
        if errno != 0 {
            println!(
                "client {client} disconnected: {reason} ({})",
                std::io::Error::from_raw_os_error(errno)
            );
        } else {
            println!("client {client} disconnected: {reason}");
        }
    }
    fn on_seq_mismatch(&mut self, client: &Name, m: &tcpshm::SeqMismatch) {
        println!("client {client}: sequence number mismatch, login refused: {m:?}");
    }
    fn on_file_error(&mut self, client: &Name, e: &tcpshm::FileError) {
        println!("client {client}: file error, login refused: {e}");
    }
    fn on_client_msg(&mut self, _id: ConnId, msg: Received<'_>, tx: &mut ConnTx) {
        if tx.messages_pushed() == msg.popped_before().wrapping_add(1) & 0x7fff_ffff {
            // Answered before a crash that came before the pop.
            msg.pop();
            return;
        }
        // No room to answer yet: keep the request; it comes back next poll.
        let Ok(mut rsp) = tx.alloc(msg.msg_type(), msg.payload().len()) else {
            return;
        };
        rsp.payload_mut().copy_from_slice(msg.payload());
        rsp.push();
        msg.pop();
    }
}

/// One thread polls everything until `until()`: the control part every
/// 200 us (accepting and shm heartbeats are syscalls, and that is plenty),
/// every group on every pass, as the C++ example's servers are compared.
pub fn serve_loop<H: ServerHandler + Clone>(
    server: &mut Server<H>,
    mut h: H,
    until: impl Fn() -> bool,
    stats_dir: Option<&std::path::Path>,
) {
    let name = server.name().to_string();
    let (mut ctl, tcp, shm) = server.split();
    let (mut last_ctl, mut t, mut last_stats) = (0, 0, i64::MIN);
    let mut i = 0u32;
    let mut tcp_live = false;
    loop {
        // The clock (about 30 ns here) and the stop flag: every loop while
        // a TCP connection is live (its poll makes a syscall anyway, and
        // its timers want a fresh `now`), else every 128 loops (an empty
        // shm poll is a few ns: `t` is then at most a microsecond old).
        if tcp_live || i % 128 == 0 {
            tcp_live = tcp.iter().any(|g| g.live() > 0);
            if until() {
                break;
            }
            t = now();
            if t - last_ctl >= crate::echo_client::TCP_POLL_EVERY_NS {
                ctl.poll(t);
                last_ctl = t;
            }
            if let Some(d) = stats_dir {
                if t.saturating_sub(last_stats) >= crate::stats_file::EVERY_NS {
                    let conns: Vec<_> = tcp
                        .iter()
                        .chain(shm.iter())
                        .flat_map(|g| g.stats())
                        .map(|(_, peer, s)| (peer, s))
                        .collect();
                    crate::stats_file::publish(d, "echo-server", &name, &conns, t);
                    last_stats = t;
                }
            }
        }
        i = i.wrapping_add(1);
        for g in tcp.iter_mut() {
            g.poll_tcp(t, &mut h);
        }
        for g in shm.iter_mut() {
            g.poll_shm(&mut h);
        }
    }
}

pub fn run(a: Args) -> Result<(), String> {
    if a.shm_groups > 0 && !a.shm_dir.is_dir() {
        return Err(format!(
            "shared-memory directory {} does not exist (is /dev/shm mounted? use --shm-dir, or --shm-groups 0)",
            a.shm_dir.display()
        ));
    }
    let cfg = Config {
        tcp_groups: a.tcp_groups,
        shm_groups: a.shm_groups,
        tcp_conns_per_group: a.conns_per_group,
        shm_conns_per_group: a.conns_per_group,
        shm_queue_size: a.shm_queue_size,
        shm_fast_path: !a.shm_v1,
        shm_hand_over: !a.shm_no_hand_over,
        shm_dir: a.shm_dir.clone(),
        ack_delay: a
            .ack_delay_us
            .map_or(Config::default().ack_delay, |us| us * 1000),
        ..Config::default()
    };
    let echo = Echo {
        tcp_groups: a.tcp_groups,
        shm_groups: a.shm_groups,
    };
    let mut server = Server::new(&a.name, &a.dir, cfg, echo.clone()).map_err(|e| e.to_string())?;
    server.start(&a.listen).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (is another echo-server running? use --listen with another port)"
        } else {
            ""
        };
        format!("cannot listen on {}: {e}{hint}", a.listen)
    })?;
    catch_stop_signals();
    let addr = server.local_addr().expect("listening");
    println!(
        "echo-server {} listening on {addr} (dir {}, {} tcp + {} shm groups{})",
        a.name,
        a.dir.display(),
        a.tcp_groups,
        a.shm_groups,
        if a.threads { ", a thread each" } else { "" }
    );
    if a.threads {
        let (mut ctl, tcp, shm) = server.split();
        std::thread::scope(|s| {
            for g in tcp.iter_mut() {
                let mut h = echo.clone();
                s.spawn(move || {
                    while !stopping() {
                        g.poll_tcp(now(), &mut h);
                    }
                });
            }
            for g in shm.iter_mut() {
                let mut h = echo.clone();
                s.spawn(move || {
                    while !stopping() {
                        g.poll_shm(&mut h);
                    }
                });
            }
            while !stopping() {
                ctl.poll(now());
                std::thread::yield_now();
            }
        });
    } else {
        serve_loop(&mut server, echo, stopping, Some(&a.dir));
    }
    server.stop();
    println!("echo-server stopped");
    Ok(())
}
