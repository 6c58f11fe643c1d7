//! `tcpshm-bench large`: streaming messages larger than one frame (1 MiB
//! by default, `Config::max_message_size`) into a server that reads every
//! byte, over shared memory and over TCP, against the floor measured in
//! interleaved rounds of the same run: the same bytes copied between the
//! two CPUs with `memcpy` (one thread copies each message, in 64 KiB
//! pieces, into the slots of a buffer as large as the ring; the other, on
//! the other CPU, copies them out into one message and reads it), which
//! is what a large message costs at least (the sender's copy into the
//! queue, the receiver's into the message it is handed).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tcpshm::{Client, Config, Transport};

use crate::ours::{bench_config, Ours, SINK_TYPE};
use crate::peer::{online_cpus, pin, Peer, PeerArgs};
use crate::rounds::{median, ratios, spread};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Interleaved rounds of each measurement.
    #[arg(long, default_value_t = 7)]
    pub rounds: usize,
    /// Bytes per message.
    #[arg(long, default_value_t = 1 << 20)]
    pub size: usize,
    /// Messages per run over shared memory and in the `memcpy` floor
    /// (TCP runs a tenth of them).
    #[arg(long, default_value_t = 1000)]
    pub messages: u32,
    /// Directory of shared-memory objects.
    #[arg(long, default_value = "/dev/shm")]
    pub shm_dir: PathBuf,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

const SERVER: &str = "blarge";
const CLIENT: &str = "blargec";
/// Bytes of a piece of the `memcpy` floor: a frame's.
const PIECE: usize = 1 << 16;

/// A slot's "full" flag, on a cache line of its own (as the ring's
/// indices are): the two threads poll and store different slots' flags.
#[repr(align(64))]
struct Flag(AtomicBool);

/// The configuration of both ends: queues of four messages.
fn large_config(shm_dir: &Path, size: usize) -> Config {
    let mut c = bench_config(shm_dir, true);
    let queue = (4 * size + (1 << 16)).next_power_of_two();
    c.shm_queue_size = queue;
    c.tcp_queue_size = queue;
    c.tcp_recv_buf_max_size = queue + 4096;
    c.max_message_size = size;
    c
}

/// The peer: a bench server taking messages of `p.count` bytes.
pub(crate) fn peer_server(p: &PeerArgs) -> Result<(), String> {
    crate::ours::serve_peer(SERVER, large_config(&p.shm_dir, p.count as usize), p)
}

/// Reads every byte, as the bench server's sink does.
fn read_all(p: &[u8]) -> u8 {
    std::hint::black_box(p.iter().fold(0u8, |a, b| a ^ b))
}

/// The floor: `n` messages of `src` copied by this thread into the slots
/// of a buffer as large as the ring, in pieces of one frame's size (as the
/// fragments are: pieces that stay in the cores' caches), and by a thread
/// on the other CPU copied out of them into one message, which it reads.
/// Bytes per second.
fn memcpy_floor(src: &[u8], n: u32, ring: usize) -> f64 {
    let size = src.len();
    let slots: Vec<std::cell::UnsafeCell<Vec<u8>>> = (0..(ring / PIECE).max(2))
        .map(|_| std::cell::UnsafeCell::new(vec![1u8; PIECE]))
        .collect();
    struct Shared<'a>(&'a [std::cell::UnsafeCell<Vec<u8>>]);
    // SAFETY: each slot is written by the producer only while its flag
    // says it is free, and read by the consumer only while it says full
    // (Release/Acquire on the flags below order the copies).
    unsafe impl Sync for Shared<'_> {}
    let shared = Shared(&slots);
    let full: Vec<Flag> = (0..slots.len())
        .map(|_| Flag(AtomicBool::new(false)))
        .collect();
    let pieces: Vec<(usize, usize)> = (0..size)
        .step_by(PIECE)
        .map(|o| (o, PIECE.min(size - o)))
        .collect();
    let t0 = Instant::now();
    std::thread::scope(|s| {
        let (shared, full, pieces) = (&shared, &full, &pieces);
        s.spawn(move || {
            pin(1);
            let mut out = vec![0u8; size];
            let mut g = 0;
            for _ in 0..n {
                for &(off, len) in pieces {
                    let slot = g % full.len();
                    g += 1;
                    // Acquire: the producer's copy into the slot is visible.
                    while !full[slot].0.load(Ordering::Acquire) {
                        std::hint::spin_loop();
                    }
                    // SAFETY: the slot is full: the producer does not
                    // touch it until we store `false` below.
                    let piece = unsafe { &*shared.0[slot].get() };
                    out[off..off + len].copy_from_slice(&piece[..len]);
                    // Release: our copy out happens before the producer
                    // reuses the slot.
                    full[slot].0.store(false, Ordering::Release);
                }
                read_all(&out);
            }
        });
        let mut g = 0;
        for _ in 0..n {
            for &(off, len) in pieces {
                let slot = g % full.len();
                g += 1;
                // Acquire: the consumer's copy out of the slot is done.
                while full[slot].0.load(Ordering::Acquire) {
                    std::hint::spin_loop();
                }
                // SAFETY: the slot is free: the consumer reads it only
                // after the Release store below.
                let piece = unsafe { &mut *shared.0[slot].get() };
                piece[..len].copy_from_slice(&src[off..off + len]);
                full[slot].0.store(true, Ordering::Release);
            }
        }
    });
    (size as f64) * f64::from(n) / t0.elapsed().as_secs_f64()
}

/// `n` messages of `src` streamed with `ConnTx::send` into the server's
/// sink, then one echoed message (the server has read them all). Bytes
/// per second.
fn stream(c: &mut Ours, src: &[u8], n: u32) -> Result<f64, String> {
    let t0 = Instant::now();
    let mut sent = 0;
    while sent < n {
        match c.client.connection().send(SINK_TYPE, src) {
            Ok(()) => sent += 1,
            Err(tcpshm::CommitError::Alloc(tcpshm::AllocError::Full)) => c.poll(),
            Err(e) => return Err(format!("send: {e}")),
        }
        if c.client.connection().is_closed() {
            return Err("connection closed during the benchmark".into());
        }
    }
    crate::ours::marker(c)?;
    Ok(src.len() as f64 * f64::from(n) / t0.elapsed().as_secs_f64())
}

pub fn run(a: Args) -> Result<(), String> {
    let rounds = a.rounds.max(1);
    let pinned = pin(0);
    println!(
        "tcpshm-bench large: {rounds} rounds of {} messages of {} B (TCP: {}); {} CPUs{}",
        a.messages,
        a.size,
        (a.messages / 10).max(1),
        online_cpus(),
        if pinned {
            ", this process on CPU 0, the server (and the floor's reader) on CPU 1"
        } else {
            ""
        }
    );
    let dir = std::env::temp_dir().join(format!("tcpshm-bench-large-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let res = measure(&a, rounds, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    for (a_, b) in [(SERVER, CLIENT), (CLIENT, SERVER)] {
        let _ = std::fs::remove_file(a.shm_dir.join(format!("{a_}_{b}.shm")));
    }
    let (floor, shm, tcp) = res?;
    let gb = |v: &[f64]| median(v) / 1e9;
    let (shm_r, tcp_r) = (spread(&ratios(&shm, &floor)), spread(&ratios(&tcp, &floor)));
    println!();
    println!("| path | GB/s, median | of the memcpy floor, per-round median [p25-p75] |");
    println!("|---|---|---|");
    println!(
        "| memcpy between the two CPUs (floor) | {:.2} | 1 |",
        gb(&floor)
    );
    for (name, v, r) in [("shared memory", &shm, &shm_r), ("TCP", &tcp, &tcp_r)] {
        println!(
            "| tcpshm over {name} | {:.2} | {:.3} [{:.3}-{:.3}] |",
            gb(v),
            r.median,
            r.p25,
            r.p75
        );
    }
    if let Some(p) = &a.json {
        let json = format!(
            "{{\"size\":{},\"floor_bytes_per_s\":{:.0},\"shm_bytes_per_s\":{:.0},\"tcp_bytes_per_s\":{:.0},\"shm_over_floor\":{},\"tcp_over_floor\":{}}}\n",
            a.size,
            median(&floor),
            median(&shm),
            median(&tcp),
            shm_r.json(),
            tcp_r.json()
        );
        std::fs::write(p, json).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}

type Rates = (Vec<f64>, Vec<f64>, Vec<f64>);

fn measure(a: &Args, rounds: usize, dir: &Path) -> Result<Rates, String> {
    let mut server = Peer::spawn(&[
        "large-server".to_string(),
        dir.join("server").display().to_string(),
        "--shm-dir".into(),
        a.shm_dir.display().to_string(),
        "--count".into(),
        a.size.to_string(),
    ])?;
    let addr = server.line();
    let cfg = large_config(&a.shm_dir, a.size);
    let connect = |t: Transport| -> Result<Ours, String> {
        let name = if t.is_shm() { CLIENT } else { "blargect" };
        let mut client: Client =
            Client::new(name, dir.join(name), cfg.clone()).map_err(|e| e.to_string())?;
        client.connect(t, &addr, 0).map_err(|e| e.to_string())?;
        Ok(Ours::new(client, t.is_shm()))
    };
    let (mut shm_c, mut tcp_c) = (connect(Transport::Shm)?, connect(Transport::Tcp)?);
    let src: Vec<u8> = (0..a.size).map(|i| (i * 31) as u8).collect();
    let tcp_n = (a.messages / 10).max(1);
    let (mut floor, mut shm, mut tcp) = (Vec::new(), Vec::new(), Vec::new());
    server.pause();
    for k in 0..rounds {
        // Rotate which goes first.
        for j in 0..3 {
            match (k + j) % 3 {
                0 => floor.push(memcpy_floor(&src, a.messages, cfg.shm_queue_size)),
                1 => shm.push(server.running(|| stream(&mut shm_c, &src, a.messages))?),
                _ => tcp.push(server.running(|| stream(&mut tcp_c, &src, tcp_n))?),
            }
        }
    }
    server.resume();
    shm_c.client.stop();
    tcp_c.client.stop();
    server.stop();
    Ok((floor, shm, tcp))
}
