//! `tcpshm echo-server`: echoes every message back with the same type and
//! payload.
//!
//! With `--exactly-once`, echoes are a consume-and-reply
//! (`Batch::commit_consuming`): the echoes are queued and the requests
//! consumed as one step, so across kill -9 of the server every request is
//! echoed exactly once. While more requests wait, up to 16 are answered
//! by one commit: each is held (`Received::hold`) until the last. Without
//! it the echo is pushed, then the request popped: a kill between the two
//! echoes that request again after the restart (at least once), the plain
//! echo the benchmarks compare with.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use tcpshm::{
    Accept, AllocError, Close, CommitError, Config, ConnId, ConnTx, Connection, ControlHandler,
    GroupHandler, LoginRequest, Name, Received, SeqMismatch, Server, ServerParts, Transport,
};

use crate::util::{catch_stop_signals, now, stopping, CliError, IdleArg};

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
    pub ack_delay_us: Option<u64>,
    /// What each polling loop does with a poll that found nothing.
    #[arg(long, value_enum, default_value_t = IdleArg::Busy)]
    pub idle: IdleArg,
    /// TCP send queue size in bytes (a multiple of 8; default
    /// `Config::tcp_queue_size`), and receive buffer to match: use the
    /// same on both sides (a receive buffer smaller than the peer's queue
    /// can leave two echoing peers waiting on each other).
    #[arg(long)]
    pub tcp_queue_size: Option<usize>,
    /// Echo each request exactly once across crashes: the echo is queued
    /// and the request consumed as one step (a consume-and-reply).
    #[arg(long)]
    pub exactly_once: bool,
    /// Take and echo messages of up to this many bytes
    /// (`Config::max_message_size`; default: one frame). A message must
    /// fit the queues whole: see `--tcp-queue-size`, `--shm-queue-size`.
    #[arg(long, default_value_t = 0)]
    pub max_message_size: usize,
}

#[derive(Clone)]
struct Echo {
    tcp_groups: usize,
    shm_groups: usize,
    exactly_once: bool,
    /// `--exactly-once`: the requests held per connection, to echo with
    /// the next commit.
    held: std::collections::HashMap<ConnId, Held>,
    /// `--exactly-once`: commits that answered several requests (this
    /// group's), reported at each disconnect.
    grouped: u64,
}

/// A connection's requests held, to echo with the next commit.
#[derive(Clone, Default)]
struct Held {
    /// Their types and lengths.
    kinds: Vec<(u16, usize)>,
    /// Their payloads, one after the other.
    bytes: Vec<u8>,
    /// The last group's echoes did not fit the send queue at all: one
    /// request per commit until one commits.
    single: bool,
}

/// Requests one exactly-once commit answers at most.
const GROUP: usize = 16;

fn transport(t: Transport) -> &'static str {
    if t.is_shm() {
        "shm"
    } else {
        "tcp"
    }
}

impl ControlHandler for Echo {
    fn on_system_error(&mut self, what: &str, e: &std::io::Error) {
        println!("system error: {what}: {e}");
    }
    fn on_new_connection(&mut self, login: &LoginRequest) -> Accept {
        let groups = match login.transport {
            Transport::Shm => self.shm_groups,
            _ => self.tcp_groups,
        };
        if groups == 0 {
            return Accept::reject(format!("{} disabled", transport(login.transport)));
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        login.client.as_str().hash(&mut h);
        let g = (h.finish() % groups as u64) as usize;
        println!(
            "login from {}: {} over {} -> group {g}",
            login.peer,
            login.client,
            transport(login.transport)
        );
        Accept::group(g)
    }
}

impl GroupHandler for Echo {
    fn on_client_logon(&mut self, id: ConnId, login: &LoginRequest, conn: &mut Connection) {
        self.held.remove(&id);
        println!(
            "client {} logged on ({} group {}): {} received, {} echoed so far",
            login.client,
            transport(id.transport),
            id.group,
            conn.messages_popped(),
            conn.messages_pushed()
        );
    }
    fn on_client_disconnected(&mut self, id: ConnId, client: &Name, close: Close) {
        // A new session delivers the held requests again.
        self.held.remove(&id);
        if self.exactly_once {
            println!(
                "client {client} disconnected: {close} ({} commits of several requests in its group)",
                self.grouped
            );
            return;
        }
        println!("client {client} disconnected: {close}");
    }
    fn on_seq_mismatch(&mut self, client: &Name, m: &SeqMismatch) {
        println!("client {client}: sequence number mismatch, login refused: {m}");
    }
    fn on_file_error(&mut self, client: &Name, e: &tcpshm::FileError) {
        println!("client {client}: file error, login refused: {e}");
    }
    fn on_client_msg(&mut self, id: ConnId, mut msg: Received<'_>, tx: &mut ConnTx) {
        if self.exactly_once {
            let Held {
                kinds,
                bytes,
                single,
            } = self.held.entry(id).or_default();
            if !*single && kinds.len() + 1 < GROUP && msg.next_ready() {
                // More wait: hold this one, echoed with the last of them.
                let (t, p) = (msg.msg_type(), msg.payload().len());
                bytes.extend_from_slice(msg.payload());
                match msg.hold() {
                    Ok(()) => return kinds.push((t, p)),
                    Err(large) => {
                        // Not held (a large message): it is the last.
                        bytes.truncate(bytes.len() - p);
                        msg = large;
                    }
                }
            }
            let several = !kinds.is_empty();
            let mut echo = tx.batch();
            let mut at = 0;
            for (t, len) in kinds.drain(..) {
                let _ = echo.append(t, &bytes[at..at + len]);
                at += len;
            }
            bytes.clear();
            let _ = echo.append(msg.msg_type(), msg.payload());
            // No room to answer yet: the batch commits nothing and the
            // requests, held ones included, come back at the next poll.
            match echo.commit_consuming(msg) {
                Ok(_) => {
                    *single = false;
                    self.grouped += u64::from(several);
                }
                Err(CommitError::Alloc(AllocError::BatchTooLarge { .. })) => *single = several,
                Err(_) => {}
            }
            return;
        }
        // One frame, or a large message's fragments in one batch.
        if tx.send(msg.msg_type(), msg.payload()).is_ok() {
            msg.pop();
        }
    }
}

/// One thread polls the server until `until()` ([`Server::poll`]: every
/// group at every pass, the control part every 200 µs), reading the clock
/// and the stop flag every loop while a TCP connection is live (its poll
/// makes a system call anyway, and its timers want a fresh `now`), else
/// every 128 loops (an empty shm poll is a few ns: `now` is then at most a
/// microsecond old); with `stats_dir`, it publishes the statistics there
/// every second. A poll that found nothing goes to `idle`; after a rest
/// (a yield or a sleep) the clock is read again.
fn serve_loop<H: ControlHandler + GroupHandler>(
    server: &mut Server,
    h: &mut H,
    until: impl Fn() -> bool,
    stats_dir: Option<&std::path::Path>,
    mut idle: tcpshm::Idle,
) {
    let (mut t, mut last_stats) = (0, i64::MIN);
    let mut i = 0u32;
    let mut tcp_live = false;
    let mut rested = false;
    loop {
        if tcp_live || i % 128 == 0 || rested {
            let p = server.parts();
            tcp_live = p.tcp.iter().any(|g| g.live() > 0);
            if until() {
                break;
            }
            t = now();
            if let Some(d) = stats_dir {
                if t.saturating_sub(last_stats) >= crate::stats_file::EVERY_NS {
                    let conns: Vec<_> = server
                        .stats()
                        .into_iter()
                        .map(|(_, peer, s)| (peer.to_string(), s))
                        .collect();
                    let name = server.name().to_string();
                    crate::stats_file::publish(d, "echo-server", &name, &conns, t);
                    last_stats = t;
                }
            }
        }
        i = i.wrapping_add(1);
        let worked = server.poll(t, h);
        // A wait that fails (not expected: our own descriptors) spins on.
        rested = idle.idle_on(server, t, worked).unwrap_or(true);
    }
}

pub fn run(a: Args) -> Result<(), CliError> {
    if a.shm_groups > 0 && !a.shm_dir.is_dir() {
        return Err(CliError::Usage(format!(
            "shared-memory directory {} does not exist (is /dev/shm mounted? use --shm-dir, or --shm-groups 0)",
            a.shm_dir.display()
        )));
    }
    let mut cfg = Config::default();
    cfg.tcp_groups = a.tcp_groups;
    cfg.shm_groups = a.shm_groups;
    cfg.tcp_conns_per_group = a.conns_per_group;
    cfg.shm_conns_per_group = a.conns_per_group;
    cfg.shm_queue_size = a.shm_queue_size;
    cfg.shm_fast_path = !a.shm_v1;
    cfg.shm_hand_over = !a.shm_no_hand_over;
    cfg.shm_dir = a.shm_dir.clone();
    cfg.max_message_size = a.max_message_size;
    if let Some(q) = a.tcp_queue_size {
        cfg.tcp_queue_size = q;
        cfg.tcp_recv_buf_max_size = cfg.tcp_recv_buf_max_size.max(q + 64);
    }
    if let Some(us) = a.ack_delay_us {
        cfg.ack_delay = std::time::Duration::from_micros(us);
    }
    let mut echo = Echo {
        tcp_groups: a.tcp_groups,
        shm_groups: a.shm_groups,
        exactly_once: a.exactly_once,
        held: Default::default(),
        grouped: 0,
    };
    let mut server: Server = Server::new(&a.name, &a.dir, cfg)?;
    server.listen(&a.listen).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (is another echo-server running? use --listen with another port)"
        } else {
            ""
        };
        CliError::Failed(format!("cannot listen on {}: {e}{hint}", a.listen))
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
        let ServerParts {
            control, tcp, shm, ..
        } = server.parts();
        std::thread::scope(|s| {
            for g in tcp.iter_mut().chain(shm.iter_mut()) {
                let mut h = echo.clone();
                let mut idle = a.idle.strategy();
                s.spawn(move || {
                    while !stopping() {
                        let worked = g.poll(now(), &mut h);
                        let _ = idle.idle_on(g, now(), worked);
                    }
                });
            }
            // The control part yields when busy-polled: logins are not
            // the hot path.
            let mut idle = match a.idle {
                IdleArg::Busy => IdleArg::Yield.strategy(),
                other => other.strategy(),
            };
            while !stopping() {
                let worked = control.poll(now(), &mut echo);
                let _ = idle.idle_on(control, now(), worked);
            }
        });
    } else {
        serve_loop(
            &mut server,
            &mut echo,
            stopping,
            Some(&a.dir),
            a.idle.strategy(),
        );
    }
    server.stop();
    println!("echo-server stopped");
    Ok(())
}
