//! `tcpshm echo-client`: sends a rising sequence of 32-bit little-endian
//! integers in messages of type t carrying the C++ example's counts (4, 9,
//! 17 or 50 integers), checks the echoes come back as the same rising
//! sequence, and resumes exactly where it was after a crash.
//!
//! With `--batch N` the messages go in batches of 1 to N (a function of
//! the batch's number), each committed as one step, and each payload
//! starts with three little-endian u32s: the batch's number (from 0), the
//! message's index in it, and the batch's size. A client that finds a
//! partial batch in its queue (after a kill -9) or an echo out of its
//! batch says so and fails.
//!
//! With `--size BYTES` every message is BYTES long: its integers, then
//! bytes derived from its number, then a little-endian FNV-1a 64 hash of
//! everything before; messages larger than one frame go as fragments
//! (`Config::max_message_size`). A client that finds an echo of another
//! length, or whose hash does not match, says so and fails; so does one
//! whose queue ends inside a large message.
//!
//! Resuming: the type of message k is a function of k, so the next integer
//! to send (receive) follows from the number of messages pushed (popped),
//! which the connection keeps exact across kill -9. The counter files
//! (`<dir>/<name>_<server>.send_num` and `.recv_num`, as in the C++
//! example) follow every second and at the end; at login they are checked
//! against the connection's counts and corrected (after a kill -9 they
//! are behind).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tcpshm::{Client, ClientHandler, Close, Config, ConnTx, ConnectError, Received, Transport};

use crate::util::{
    batch_of, batch_size, catch_stop_signals, fmt_ns, ints_before, msg_type, now, stopping,
    CliError, CounterFile, IdleArg, INTS,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Client name (also the default directory).
    pub name: String,
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:12345")]
    pub server: String,
    /// Use shared memory for messages (TCP still carries the login and heartbeats).
    #[arg(long)]
    pub shm: bool,
    /// Messages to send and receive back.
    #[arg(long, default_value_t = 100_000)]
    pub count: u32,
    /// Stream as fast as the queues allow, instead of one message in flight.
    #[arg(long)]
    pub fast: bool,
    /// Directory for the queue and counter files (default: the name).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep trying to connect (and reconnect) for this many seconds;
    /// 0: a failed first connect is an error.
    #[arg(long, default_value_t = 0)]
    pub retry: u64,
    /// Print "progress N" every N/20 echoes.
    #[arg(long)]
    pub progress: bool,
    /// Shared-memory queue size in bytes (a power of two; the same as the server's).
    #[arg(long, default_value_t = 1 << 20)]
    pub shm_queue_size: usize,
    /// Directory of shared-memory objects.
    #[arg(long, default_value = "/dev/shm")]
    pub shm_dir: PathBuf,
    /// No per-message timestamps (two clock reads per round trip, about
    /// 60 ns here): only the average RTT, wall time / messages, as the C++
    /// library's echo client reports it.
    #[arg(long)]
    pub avg_only: bool,
    /// Keep this side on the v1 shared-memory ring (`Config::shm_fast_path`
    /// off), as a C++ peer: for comparisons and debugging.
    #[arg(long)]
    pub shm_v1: bool,
    /// Do not hand the last message's cache lines to the shared cache at
    /// each poll (`Config::shm_hand_over` off): for comparisons, and for
    /// peers on SMT siblings.
    #[arg(long)]
    pub shm_no_hand_over: bool,
    /// What the loop does with a poll that found nothing.
    #[arg(long, value_enum, default_value_t = IdleArg::Busy)]
    pub idle: IdleArg,
    /// Send one message every this many microseconds (after its echo),
    /// idling in between: the latency of a quiet connection's message.
    #[arg(long, conflicts_with = "fast")]
    pub interval_us: Option<u64>,
    /// Send batches of 1 to N messages (random, by the batch's number),
    /// each committed atomically; each payload starts with the batch's
    /// number, the message's index in it and the batch's size (three
    /// little-endian u32s). Ping-pong waits for a whole batch's echoes.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub batch: Option<u32>,
    /// TCP send queue size in bytes (a multiple of 8; default
    /// `Config::tcp_queue_size`), and receive buffer to match: a batch
    /// must fit in it. Use the same as the server's `--tcp-queue-size`.
    #[arg(long)]
    pub tcp_queue_size: Option<usize>,
    /// Send every message BYTES long (at least 256): its integers, filler
    /// derived from its number, and a hash of it all in the last 8 bytes,
    /// which the echo must preserve. Above one frame (64 KiB) messages go
    /// as fragments (`Config::max_message_size`, which the server must
    /// allow: `echo-server --max-message-size`), and must fit the queues
    /// whole (`--tcp-queue-size`, `--shm-queue-size`).
    #[arg(long, conflicts_with = "batch", value_parser = clap::value_parser!(u32).range(256..=1 << 30))]
    pub size: Option<u32>,
}

/// Bytes of the batch prefix (`--batch`).
const BATCH_PREFIX: usize = 12;

/// FNV-1a 64 of `bytes`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Message `k` of `--size` BYTES in `out`: its integers from `first`
/// (a `--size` message's are those of an ordinary one), filler derived
/// from `k`, and the hash of it all.
fn fill_sized(out: &mut Vec<u8>, k: u32, first: u32, size: usize) {
    let ints = INTS[msg_type(k) as usize - 1];
    out.clear();
    out.extend((0..ints).flat_map(|i| first.wrapping_add(i).to_le_bytes()));
    let mut x = u64::from(k).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while out.len() < size - 8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes()[..(size - 8 - out.len()).min(8)]);
    }
    let h = fnv1a(out);
    out.extend_from_slice(&h.to_le_bytes());
}

const RING: usize = 1 << 16;

struct Checker {
    /// Next integer expected.
    recv_num: u32,
    /// Echoes popped in this pair.
    popped: u32,
    error: Option<String>,
    disconnected: Option<Close>,
    /// Send time of message k at k % RING (0: unknown, e.g. sent before a restart).
    sent_at: Vec<i64>,
    /// Per-message timestamps on (not `--avg-only`).
    timed: bool,
    hist: Histogram<u64>,
    /// `--batch N`: N, and where the next echo is (batch, index).
    batch: Option<(u32, u32, u32)>,
    /// `--size BYTES`.
    size: Option<usize>,
}

impl ClientHandler for Checker {
    fn on_server_msg(&mut self, msg: Received<'_>, _tx: &mut ConnTx) {
        if self.error.is_some() {
            return;
        }
        let mut p = msg.payload();
        if let Some((n, b, idx)) = self.batch {
            let field = |i: usize| {
                p.get(4 * i..4 * i + 4)
                    .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            };
            let got = (field(0), field(1), field(2));
            let want = (Some(b), Some(idx), Some(batch_size(b, n)));
            if got != want {
                self.error = Some(format!(
                    "echo {}: batch fields {got:?}, expected {want:?}",
                    self.popped
                ));
                return;
            }
            p = &p[BATCH_PREFIX..];
        }
        let want_type = msg_type(self.popped);
        if let Some(size) = self.size {
            let sum = p.len().checked_sub(8).map(|n| p.split_at(n));
            if p.len() != size || sum.is_none_or(|(m, h)| fnv1a(m).to_le_bytes() != h) {
                self.error = Some(format!(
                    "echo {}: {} bytes, expected {size} with its hash intact",
                    self.popped,
                    p.len()
                ));
                return;
            }
            p = &p[..4 * INTS[want_type as usize - 1] as usize];
        }
        if msg.msg_type() != want_type || p.len() != 4 * INTS[want_type as usize - 1] as usize {
            self.error = Some(format!(
                "echo {}: type {} with {} bytes, expected type {want_type}",
                self.popped,
                msg.msg_type(),
                p.len()
            ));
            return;
        }
        // All the integers at once (branch-free, vectorizable); find the
        // first wrong one only on a mismatch.
        let base = self.recv_num;
        let mut wrong = false;
        for (i, c) in p.chunks_exact(4).enumerate() {
            let v = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            wrong |= v != base.wrapping_add(i as u32);
        }
        if wrong {
            for c in p.chunks_exact(4) {
                let v = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                if v != self.recv_num {
                    let what = if v < self.recv_num {
                        "duplicate"
                    } else {
                        "gap"
                    };
                    self.error = Some(format!("{what}: got {v}, expected {}", self.recv_num));
                    return;
                }
                self.recv_num = self.recv_num.wrapping_add(1);
            }
        }
        self.recv_num = base.wrapping_add((p.len() / 4) as u32);
        msg.pop();
        if let Some((n, b, idx)) = &mut self.batch {
            *idx += 1;
            if *idx == batch_size(*b, *n) {
                (*b, *idx) = (*b + 1, 0);
            }
        }
        let slot = &mut self.sent_at[self.popped as usize % RING];
        if self.timed && *slot != 0 {
            let _ = self.hist.record((now() - *slot).max(1) as u64);
            *slot = 0;
        }
        self.popped += 1;
    }
    fn on_disconnected(&mut self, close: Close) {
        self.disconnected = Some(close);
    }
}

fn connect_error(e: ConnectError, server: &str) -> CliError {
    match e {
        ConnectError::Io {
            op: "connect",
            source,
        } => CliError::Failed(format!(
            "cannot connect to {server}: {source} (is the echo-server running?)"
        )),
        other => {
            let e = CliError::from(other);
            CliError::Failed(format!("cannot log in to {server}: {e}"))
        }
    }
}

/// The counter files of a pair, brought up to the counts.
struct Counters {
    send: CounterFile,
    recv: CounterFile,
}

impl Counters {
    fn set(&mut self, send_num: u32, recv_num: u32) {
        self.send.set(send_num);
        self.recv.set(recv_num);
    }
}

/// Sends message `k` (or with `batch`, the batch that starts at message
/// `k`, committed as one step), whose first integer is `*send_num`, and
/// advances `*send_num`. Streaming (`more`), a single message goes with
/// `push_more` (one write per loop over TCP; over shm a fast-path reader
/// reads the loop's messages as a run), sent by the loop's flush. Returns
/// the messages sent, or `None` when the queue has no room now.
///
/// # Errors
/// A batch that can never fit the queue.
fn send(
    conn: &mut tcpshm::Connection,
    k: u32,
    send_num: &mut u32,
    batch: Option<u32>,
    more: bool,
    sized: Option<(usize, &mut Vec<u8>)>,
) -> Result<Option<u32>, CliError> {
    let fill = |p: &mut [u8], first: u32| {
        for (i, c) in p.chunks_exact_mut(4).enumerate() {
            c.copy_from_slice(&first.wrapping_add(i as u32).to_le_bytes());
        }
    };
    if let Some((size, buf)) = sized {
        let ty = msg_type(k);
        fill_sized(buf, k, *send_num, size);
        return match conn.send(ty, buf) {
            Ok(()) => {
                *send_num = send_num.wrapping_add(INTS[ty as usize - 1]);
                Ok(Some(1))
            }
            Err(tcpshm::CommitError::Alloc(tcpshm::AllocError::Full)) => Ok(None),
            Err(e) => Err(CliError::Failed(format!(
                "message {k} of {size} bytes: {e} (use a smaller --size, or a larger --tcp-queue-size or --shm-queue-size)"
            ))),
        };
    }
    let Some(n) = batch else {
        let ty = msg_type(k);
        let ints = INTS[ty as usize - 1];
        let Ok(mut m) = conn.alloc(ty, 4 * ints as usize) else {
            return Ok(None);
        };
        fill(m.payload_mut(), *send_num);
        if more {
            m.push_more();
        } else {
            m.push();
        }
        *send_num = send_num.wrapping_add(ints);
        return Ok(Some(1));
    };
    let (b, _) = batch_of(k, n);
    let size = batch_size(b, n);
    let mut num = *send_num;
    let mut out = conn.batch();
    for idx in 0..size {
        let ty = msg_type(k + idx);
        let ints = INTS[ty as usize - 1];
        let p = match out.alloc(ty, BATCH_PREFIX + 4 * ints as usize) {
            Ok(p) => p,
            Err(e @ tcpshm::AllocError::BatchTooLarge { .. }) => {
                return Err(CliError::Failed(format!(
                    "batch {b} of {size} messages: {e} (use a smaller --batch, or a larger --tcp-queue-size or --shm-queue-size)"
                )))
            }
            Err(_) => return Ok(None),
        };
        for (i, v) in [b, idx, size].into_iter().enumerate() {
            p[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        fill(&mut p[BATCH_PREFIX..], num);
        num = num.wrapping_add(ints);
    }
    if out.commit().is_err() {
        return Ok(None);
    }
    *send_num = num;
    Ok(Some(size))
}

pub fn run(a: Args) -> Result<(), CliError> {
    if a.shm && !a.shm_dir.is_dir() {
        return Err(CliError::Usage(format!(
            "shared-memory directory {} does not exist (is /dev/shm mounted? use --shm-dir, or TCP)",
            a.shm_dir.display()
        )));
    }
    let dir = a.dir.clone().unwrap_or_else(|| PathBuf::from(&a.name));
    let mut cfg = Config::default();
    cfg.shm_queue_size = a.shm_queue_size;
    cfg.shm_fast_path = !a.shm_v1;
    cfg.shm_hand_over = !a.shm_no_hand_over;
    cfg.shm_dir = a.shm_dir.clone();
    if let Some(q) = a.tcp_queue_size {
        cfg.tcp_queue_size = q;
        cfg.tcp_recv_buf_max_size = cfg.tcp_recv_buf_max_size.max(q + 64);
    }
    let mut h = Checker {
        recv_num: 0,
        popped: 0,
        error: None,
        disconnected: None,
        sent_at: vec![0; RING],
        timed: !a.avg_only,
        hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds"),
        batch: None,
        size: a.size.map(|s| s as usize),
    };
    if let Some(size) = h.size {
        cfg.max_message_size = size;
    }
    let mut sized = vec![0u8; h.size.unwrap_or(0)];
    let mut client: Client = Client::new(&a.name, &dir, cfg)?;
    catch_stop_signals();
    let (mode, transport) = if a.shm {
        ("shm", Transport::Shm)
    } else {
        ("tcp", Transport::Tcp)
    };
    // From the first login on (the C++ client's clock starts there too).
    let mut started = Instant::now();
    let mut logged_in = false;
    let mut pushed = 0u32;
    let mut send_num = 0u32;
    let mut counters: Option<Counters> = None;
    let mut retry_until = Instant::now() + Duration::from_secs(a.retry);
    let mut next_progress = 0u32;
    let mut loops = 0u32;
    let mut t = now();
    let mut last_stats = i64::MIN;
    let step = (a.count / 20).max(1);
    let mut idle = a.idle.strategy();
    // Paced (`--interval-us`): the clock is read at every loop; else after
    // a rest (a yield or a sleep) too.
    let interval = a.interval_us.map(|us| (us as i64).saturating_mul(1000));
    let mut rested = false;
    let mut next_send = i64::MIN;
    loop {
        if stopping() {
            return Err(CliError::Failed("interrupted".into()));
        }
        if client.connection().is_closed() {
            match client.connect(transport, &a.server, 0) {
                Ok(_) => {
                    if !logged_in {
                        started = Instant::now();
                        logged_in = true;
                    }
                    let server = client
                        .connection()
                        .remote_name()
                        .expect("logged in")
                        .to_string();
                    let conn = client.connection();
                    // Frames per message (`--size`): the counts are of frames.
                    let frames = h.size.map_or(1, |n| conn.split().1.frames_of(n));
                    pushed = conn.messages_pushed();
                    if pushed % frames != 0 {
                        return Err(CliError::BadEcho(format!(
                            "a partial large message in the send queue: {pushed} frames pushed, {frames} per message"
                        )));
                    }
                    pushed /= frames;
                    // A message whose first fragment is consumed is (the
                    // rest are skipped as orphans).
                    let popped = conn.messages_popped().div_ceil(frames);
                    send_num = ints_before(pushed);
                    let recv_num = ints_before(popped);
                    let base = dir.join(format!("{}_{}", a.name, server));
                    let open = |ext: &str| CounterFile::open(&base.with_extension(ext));
                    let mut c = Counters {
                        send: open("send_num")?,
                        recv: open("recv_num")?,
                    };
                    if c.send.get() != send_num || c.recv.get() != recv_num {
                        println!(
                            "counter files were behind the connection (send {} vs {send_num}, recv {} vs {recv_num}): corrected",
                            c.send.get(),
                            c.recv.get()
                        );
                    }
                    c.set(send_num, recv_num);
                    counters = Some(c);
                    h.recv_num = recv_num;
                    h.popped = popped;
                    if let Some(n) = a.batch {
                        let (b, idx) = batch_of(pushed, n);
                        if idx != 0 {
                            return Err(CliError::BadEcho(format!(
                                "a partial batch in the send queue: {pushed} messages pushed end inside batch {b} (at its message {idx})"
                            )));
                        }
                        let (b, idx) = batch_of(popped, n);
                        h.batch = Some((n, b, idx));
                    }
                    h.disconnected = None;
                    println!(
                        "logged in to {server} over {mode}: {pushed} sent, {popped} echoed so far"
                    );
                }
                Err(e) => {
                    if Instant::now() >= retry_until {
                        return Err(connect_error(e, &a.server));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
        }
        // Send.
        let in_flight = pushed.wrapping_sub(h.popped);
        let mut budget = if a.fast {
            u32::MAX
        } else {
            u32::from(in_flight == 0 && t >= next_send)
        };
        let mut sent = false;
        while budget > 0 && pushed < a.count {
            let at = if a.avg_only { 0 } else { now() };
            let size = h.size.map(|n| (n, &mut sized));
            let Some(n) = send(
                client.connection(),
                pushed,
                &mut send_num,
                a.batch,
                a.fast,
                size,
            )?
            else {
                break;
            };
            sent = true;
            if let Some(every) = interval {
                next_send = t.saturating_add(every);
            }
            for k in pushed..pushed + n {
                h.sent_at[k as usize % RING] = at;
            }
            pushed += n;
            budget -= 1;
        }
        if a.fast {
            client.connection().flush();
        }
        // The clock costs about 30 ns here: over shm read it every 64
        // loops only (`Client::poll` reads the heartbeat socket every
        // 200 µs of it, and the shm loop stays free of system calls).
        loops = loops.wrapping_add(1);
        if !a.shm || loops % 64 == 0 || interval.is_some() || rested {
            t = now();
            if t.saturating_sub(last_stats) >= crate::stats_file::EVERY_NS {
                let peer = client
                    .connection()
                    .remote_name()
                    .map_or_else(String::new, |n| n.to_string());
                let conns = [(peer, client.stats())];
                crate::stats_file::publish(&dir, "echo-client", &a.name, &conns, t);
                if let Some(c) = &mut counters {
                    c.set(send_num, h.recv_num);
                }
                last_stats = t;
            }
        }
        let worked = client.poll(t, &mut h);
        // Asleep no further than the next message to send.
        let within = match interval {
            Some(_) if pushed.wrapping_sub(h.popped) == 0 => {
                Duration::from_nanos(next_send.saturating_sub(now()).max(0) as u64)
            }
            _ => Duration::MAX,
        };
        rested = idle
            .idle_within(&mut client, t, worked || sent, within)
            .unwrap_or(true);
        if let Some(e) = h.error.take() {
            return Err(CliError::BadEcho(e));
        }
        if let Some(close) = h.disconnected.take() {
            println!("disconnected: {close}");
            retry_until = Instant::now() + Duration::from_secs(a.retry.max(1));
            if a.retry == 0 {
                return Err(CliError::Failed(format!("disconnected: {close}")));
            }
        }
        if a.progress && h.popped >= next_progress {
            println!("progress {}", h.popped);
            next_progress = h.popped + step;
        }
        if h.popped >= a.count {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    if let Some(c) = &mut counters {
        c.set(send_num, h.recv_num);
    }
    let hist = &h.hist;
    println!(
        "done: messages={} avg_rtt_ns={:.1} rtt_samples={} rtt_mean_ns={:.0} rtt_p50_ns={} rtt_p99_ns={} rtt_p999_ns={} rtt_max_ns={} seconds={secs:.2}",
        a.count,
        secs * 1e9 / f64::from(a.count.max(1)),
        hist.len(),
        hist.mean(),
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max()
    );
    println!(
        "  {} messages over {mode} ({}): RTT mean {}, p50 {}, p99 {}, p99.9 {}, max {}",
        a.count,
        if a.fast { "streaming" } else { "ping-pong" },
        fmt_ns(hist.mean()),
        fmt_ns(hist.value_at_quantile(0.5) as f64),
        fmt_ns(hist.value_at_quantile(0.99) as f64),
        fmt_ns(hist.value_at_quantile(0.999) as f64),
        fmt_ns(hist.max() as f64)
    );
    let peer = client
        .connection()
        .remote_name()
        .map_or_else(String::new, |n| n.to_string());
    let conns = [(peer, client.stats())];
    crate::stats_file::publish(&dir, "echo-client", &a.name, &conns, now());
    client.stop();
    Ok(())
}
