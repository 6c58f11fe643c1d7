//! Shared pieces of the command: the clock, signals, the echo payload
//! convention, counter files.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use tcpshm::sys::{MapOptions, Mapping};

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

/// Integers in the first `k` messages: the next integer to send after
/// `k` messages, or to receive after `k` echoes.
pub fn ints_before(k: u32) -> u32 {
    (0..k).fold(0u32, |acc, i| {
        acc.wrapping_add(INTS[msg_type(i) as usize - 1])
    })
}

/// A 4-byte little-endian counter in a file (the C++ echo client's
/// `send_num`/`recv_num` files).
pub struct CounterFile(Mapping);

impl CounterFile {
    pub fn open(path: &Path) -> Result<CounterFile, tcpshm::FileError> {
        Mapping::open(path, 4, MapOptions::default()).map(CounterFile)
    }
    pub fn get(&self) -> u32 {
        // Relaxed: one thread reads and writes its own counter; the word is
        // atomic so a kill -9 never leaves it torn.
        self.0.word32(0).load(std::sync::atomic::Ordering::Relaxed)
    }
    pub fn set(&mut self, v: u32) {
        // Relaxed: as in `get`.
        self.0
            .word32(0)
            .store(v, std::sync::atomic::Ordering::Relaxed)
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
