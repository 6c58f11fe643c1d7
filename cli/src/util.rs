//! Shared pieces of the command: its errors, the clock, signals, the echo
//! payload convention, counter files.

use std::fmt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

/// Why a command failed, by kind: the exit code follows from the kind,
/// the message is one line for the operator.
#[derive(Debug)]
pub enum CliError {
    /// The echoes came back wrong: lost, duplicated, out of order or
    /// altered (exit code 2, what a checking script looks for).
    BadEcho(String),
    /// The command was asked for something that cannot be (exit code 1).
    Usage(String),
    /// Something failed on the way (exit code 1).
    Failed(String),
}

impl CliError {
    /// The process's exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::BadEcho(_) => ExitCode::from(2),
            CliError::Usage(_) | CliError::Failed(_) => ExitCode::FAILURE,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::BadEcho(m) => write!(f, "bad echo: {m}"),
            CliError::Usage(m) | CliError::Failed(m) => f.write_str(m),
        }
    }
}

/// A library error with its causes, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut at = e.source();
    while let Some(c) = at {
        s += ": ";
        s += &c.to_string();
        at = c.source();
    }
    s
}

impl From<tcpshm::SetupError> for CliError {
    fn from(e: tcpshm::SetupError) -> Self {
        CliError::Usage(chain(&e))
    }
}

impl From<tcpshm::FileError> for CliError {
    fn from(e: tcpshm::FileError) -> Self {
        CliError::Failed(chain(&e))
    }
}

impl From<tcpshm::ConnectError> for CliError {
    fn from(e: tcpshm::ConnectError) -> Self {
        CliError::Failed(chain(&e))
    }
}

/// Nanoseconds of the monotonic clock: the `now` passed to the library.
/// One vDSO call and a multiply-add (`Instant::elapsed` costs some 70
/// instructions more, in a loop that runs millions of times a second).
#[inline]
pub fn now() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass; CLOCK_MONOTONIC
    // always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Makes SIGINT and SIGTERM set the stop flag instead of killing.
pub fn catch_stop_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installs an async-signal-safe handler (one atomic store).
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

/// Whether SIGINT or SIGTERM arrived.
pub fn stopping() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Integers carried by message types 1..=4, as in the C++ echo example
/// (16, 36, 68 and 200 bytes of payload).
pub const INTS: [u32; 4] = [4, 9, 17, 50];

/// The type of message `k` of a pair: "random" in 1..=4 but a function of
/// `k`, so both counters can be recomputed from message counts alone.
pub fn msg_type(k: u32) -> u16 {
    let mut z = (k as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) % 4) as u16 + 1
}

/// The size of batch `b` of a pair sending batches of up to `n` messages
/// (`echo-client --batch`): "random" in 1..=n but a function of `b`, so a
/// restarted client finds where it is from the message counts alone.
pub fn batch_size(b: u32, n: u32) -> u32 {
    let mut z = u64::from(b).wrapping_add(0x2545_F491_4F6C_DD1D);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) % u64::from(n.max(1))) as u32 + 1
}

/// Where message `k` is in the batches of [`batch_size`]: its batch and
/// its index in it (linear in `k`: a client calls it at login only).
pub fn batch_of(k: u32, n: u32) -> (u32, u32) {
    let (mut b, mut start) = (0u32, 0u32);
    loop {
        let size = batch_size(b, n);
        if k - start < size {
            return (b, k - start);
        }
        start += size;
        b += 1;
    }
}

/// Integers in the first `k` messages: the next integer to send after
/// `k` messages, or to receive after `k` echoes.
pub fn ints_before(k: u32) -> u32 {
    (0..k).fold(0u32, |acc, i| {
        acc.wrapping_add(INTS[msg_type(i) as usize - 1])
    })
}

/// A 4-byte little-endian counter in a file (the C++ echo client's
/// `send_num`/`recv_num` files), written with one `pwrite` (a 4-byte
/// aligned write is never torn by a kill -9).
pub struct CounterFile(std::fs::File);

impl CounterFile {
    pub fn open(path: &Path) -> Result<CounterFile, CliError> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
        Ok(CounterFile(f))
    }
    pub fn get(&self) -> u32 {
        let mut b = [0u8; 4];
        match self.0.read_exact_at(&mut b, 0) {
            Ok(()) => u32::from_le_bytes(b),
            Err(_) => 0,
        }
    }
    pub fn set(&mut self, v: u32) {
        let _ = self.0.write_all_at(&v.to_le_bytes(), 0);
    }
}

/// "1.2 us" style.
pub fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// `--idle`: what a polling loop does with a poll that found nothing
/// ([`tcpshm::Idle`]).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IdleArg {
    /// Spin: the lowest latency, a whole core.
    #[default]
    Busy,
    /// Yield the core at every idle poll.
    Yield,
    /// Spin, then yield, then sleep 1 µs doubling to 1 ms.
    Backoff,
    /// Spin, then sleep until there is work (`tcpshm::Wait`).
    Block,
}

impl IdleArg {
    pub fn strategy(self) -> tcpshm::Idle {
        match self {
            IdleArg::Busy => tcpshm::Idle::busy(),
            IdleArg::Yield => tcpshm::Idle::yielding(),
            IdleArg::Backoff => tcpshm::Idle::backoff(),
            IdleArg::Block => tcpshm::Idle::block(),
        }
    }
}
