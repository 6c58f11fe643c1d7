//! Configuration of clients and servers, validated at construction.
//!
//! Defaults equal the C++ library's echo example (name size 16, TCP queue
//! 2000 bytes, receive buffer 2000 growing to 8000, 5 pending logins, one
//! TCP and one SHM group of 4 connections each), except the shared-memory
//! queue, which is 1 MiB as in `docs/protocol.md` §5. Both peers must agree
//! on the shm queue size.
//!
//! # Time
//!
//! The library never reads a clock: every poll takes `now`, a monotonic
//! count of ticks from a clock of your choice. Timeouts are set here as
//! [`Duration`]s and converted once into ticks by
//! [`Config::ticks_per_second`] (default 1,000,000,000: nanoseconds, as
//! `Instant::elapsed().as_nanos()` gives). A TSC user sets it to the TSC
//! frequency.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{ConfigError, FileError, SetupError};
use crate::session::Timers;
use crate::shm_queue::check_capacity;
use crate::wire::{Name, HEADER_SIZE, MAX_PAYLOAD};

/// Settings shared by [`Client`](crate::Client) and [`Server`](crate::Server).
///
/// Start from the defaults and change what you need (new settings may be
/// added, so the struct cannot be built field by field):
///
/// ```
/// use std::time::Duration;
///
/// let mut cfg = tcpshm::Config::default();
/// cfg.shm_queue_size = 1 << 16;
/// cfg.heartbeat_interval = Duration::from_secs(1);
/// cfg.validate()?;
/// # Ok::<(), tcpshm::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Bytes of each shared-memory queue: a power of two, the same on both
    /// sides (default 1 MiB). Up to 64 MiB its pages are mapped when the
    /// connection logs in, so no message pays a page fault on the ring's
    /// first lap; a larger queue faults them in on first use.
    pub shm_queue_size: usize,
    /// Bytes of the persistent TCP send queue, a multiple of 8 (default 2000).
    pub tcp_queue_size: usize,
    /// Initial TCP receive buffer, a multiple of 8 (default 2000).
    pub tcp_recv_buf_init_size: usize,
    /// Largest TCP receive buffer, a multiple of 8 (default 8000). A peer
    /// message larger than this closes the connection.
    pub tcp_recv_buf_max_size: usize,
    /// Set TCP_NODELAY on connections (default true).
    pub tcp_no_delay: bool,
    /// Ticks of the caller's clock per second: the unit of every `now`
    /// passed to a poll (default 1,000,000,000, nanoseconds).
    pub ticks_per_second: u64,
    /// Send a heartbeat after this much send silence (default 3 s).
    pub heartbeat_interval: Duration,
    /// Close a connection after this much receive silence (default 10 s).
    pub connection_timeout: Duration,
    /// TCP delayed ack (default 100 µs): a message the application
    /// consumed is acknowledged by the next data frame sent within this
    /// delay, else by a heartbeat of its own. So a reply carries the ack
    /// of its request (one send per reply), and a peer streaming into a
    /// queue we drain waits at most this long for room (or not at all: an
    /// ack also goes out at once when half of `tcp_queue_size` has been
    /// consumed unacknowledged). Zero: acknowledge at once, with a frame
    /// of its own when there is nothing to send.
    pub ack_delay: Duration,
    /// Server: close a new connection that has not logged in within this
    /// (default 3 s).
    pub new_connection_timeout: Duration,
    /// Server: close a new connection that has sent nothing within this
    /// (default 300 ms; a client sends its login at once).
    /// `new_connection_timeout` applies instead if it is shorter.
    pub silent_login_timeout: Duration,
    /// Client: the longest `connect` may block, TCP connect plus login
    /// (default 10 s).
    pub connect_timeout: Duration,
    /// How often polls make their system calls while the shared memory
    /// needs none (default 200 µs; zero: at every call):
    /// [`Server::poll`](crate::Server::poll) runs the control part
    /// (accepts, logins) at most this often, an SHM group asks its
    /// sessions' sockets (heartbeats, timeouts) at most this often, and
    /// [`Client::poll`](crate::Client::poll) reads an SHM session's socket
    /// at most this often. Heartbeats are seconds apart, so this costs
    /// nothing but up to this much delay in a login or in noticing a
    /// disconnect, and keeps a loop over shared memory free of system
    /// calls. A part that slept ([`Wait`](crate::Wait)) asks at its next
    /// poll. TCP groups and TCP sessions are polled at every call; the
    /// control part polled on its own ([`Server::parts`](crate::Server::parts))
    /// and [`ClientTcp`](crate::ClientTcp) at every call too.
    pub socket_poll_interval: Duration,
    /// Server: logins being read at once (default 5). The accept backlog
    /// is drained every control poll; when the set is full, a new
    /// connection evicts a pending one: the oldest of its own source if
    /// that source is at `max_pending_per_source`, else the oldest that has
    /// sent nothing, else the oldest. A flood of idle or slow connections
    /// therefore cannot keep a real login waiting.
    pub max_new_connections: usize,
    /// Server: logins one source address may have pending at once
    /// (default 2; see `max_new_connections`).
    pub max_pending_per_source: usize,
    /// Server: TCP connection groups (default 1), each polled by one
    /// thread ([`Server::parts`](crate::Server::parts)).
    pub tcp_groups: usize,
    /// Server: connections per TCP group (default 4): the most clients
    /// the group serves at once. A slot is not bound to a name for good:
    /// a name that returns is served by any idle slot.
    pub tcp_conns_per_group: usize,
    /// Server: SHM connection groups (default 1).
    pub shm_groups: usize,
    /// Server: connections per SHM group (default 4).
    pub shm_conns_per_group: usize,
    /// Permission bits of created queue files and shm objects (default
    /// 0600: only this user). Use 0o660 or 0o666 to share with other users
    /// (the C++ original uses 0666).
    pub file_mode: u32,
    /// Where shared-memory objects live (default /dev/shm, where
    /// `shm_open("/<name>")` puts them on Linux). Client and server must
    /// use the same directory: the pair's rings are files in it.
    pub shm_dir: PathBuf,
    /// The most messages one poll delivers per shared-memory connection
    /// (default 256). A peer that keeps its queue full then cannot keep a
    /// poll from returning: the other connections of the group, and their
    /// heartbeats, get their turn. The C++ library delivers one; more amortizes the poll over a
    /// burst: measured with `tcpshm bench` on this project's 2-vCPU VM,
    /// 8 or 32 cost up to half the SHM streaming throughput of 256 or 1024
    /// at 64-256 B, and 256 bounds a poll to 256 handler calls per
    /// connection. (Over TCP a poll delivers what is already in the
    /// receive buffer, at most `tcp_recv_buf_max_size` bytes: a bound of
    /// its own.)
    pub shm_msgs_per_poll: u32,
    /// The stamped shared-memory fast path between two tcpshm peers
    /// (default `true`): a reader waits on the message's own cache line
    /// instead of `write_idx` and then the message, once the writer of the
    /// session has announced that it stamps. A C++ peer is unaffected
    /// either way (`docs/shm-fast-path.md`). `false` keeps this
    /// side on the v1 ring protocol, for debugging and comparisons; it
    /// also makes the largest shm message one block (64 bytes) larger.
    pub shm_fast_path: bool,
    /// Hand the lines of the last message written over shared memory to
    /// the cache both cores share at every poll (default `true`;
    /// `CLDEMOTE` on x86 CPUs that have it, nothing elsewhere), so a
    /// reader waiting on another core fetches them from there instead of
    /// from this core's cache. A hint, no byte changes. Turn it off when
    /// the two sides run on cores that share a cache below the last level
    /// (SMT siblings), where the reader would have found the lines closer.
    pub shm_hand_over: bool,
    /// Server: SHM groups of at least this many connections have a
    /// doorbell (default 32): their tcpshm clients ring it after each
    /// message, so a poll reads one word per 64 connections and the rings
    /// that have messages, instead of every ring. Smaller groups poll
    /// every ring, which costs less for a few (`docs/benchmarks.md`,
    /// "Many connections"). 0: every SHM group; `usize::MAX`: none. C++
    /// clients never ring: their rings are polled at every poll either way.
    /// On a client, `usize::MAX` also means: ring no server's bell and
    /// wake no sleeping server, as a C++ client (for comparisons and
    /// tests).
    pub shm_doorbell_slots: usize,
    /// Server: every ring of a group with a doorbell is looked at once per
    /// this interval (default 1 ms), a few at each poll: a client killed
    /// between writing a message and ringing, or a peer that cleared
    /// another's bit, delays a message by at most this much, never loses it.
    /// Both sides: a shared-memory reader asleep ([`Wait`](crate::Wait))
    /// whose writer has not said it wakes it (a C++ peer never does) looks
    /// at its rings at least this often.
    pub shm_sweep_interval: Duration,
    /// Largest message, in bytes, this side sends or takes (default 0:
    /// none larger than one frame, [`max_tcp_payload`](Self::max_tcp_payload)
    /// or [`max_shm_payload`](Self::max_shm_payload)). A larger message
    /// travels as fragments committed as one batch, so the send queue
    /// must hold it whole (`AllocError::BatchTooLarge` says when it
    /// cannot; `validate` refuses a size that fits neither queue), and is
    /// handed to the receiver whole, copied once into a buffer of this
    /// size that each connection allocates when its queue opens (zeroed
    /// pages the system backs only once a message fills them). Both peers
    /// must set it: a peer that takes smaller messages
    /// closes the session with `CloseReason::LargeMessage`, and the
    /// message waits in the sender's queue (`docs/protocol.md`, "Messages
    /// over 64 KiB"). At most 1 GiB.
    pub max_message_size: usize,
}

/// The largest `Config::max_message_size`.
const MAX_MESSAGE_SIZE: usize = 1 << 30;

impl Default for Config {
    fn default() -> Self {
        Config {
            shm_queue_size: 1 << 20,
            tcp_queue_size: 2000,
            tcp_recv_buf_init_size: 2000,
            tcp_recv_buf_max_size: 8000,
            tcp_no_delay: true,
            ticks_per_second: 1_000_000_000,
            heartbeat_interval: Duration::from_secs(3),
            connection_timeout: Duration::from_secs(10),
            ack_delay: Duration::from_micros(100),
            new_connection_timeout: Duration::from_secs(3),
            silent_login_timeout: Duration::from_millis(300),
            connect_timeout: Duration::from_secs(10),
            socket_poll_interval: Duration::from_micros(200),
            max_new_connections: 5,
            max_pending_per_source: 2,
            tcp_groups: 1,
            tcp_conns_per_group: 4,
            shm_groups: 1,
            shm_conns_per_group: 4,
            file_mode: 0o600,
            shm_dir: PathBuf::from("/dev/shm"),
            shm_msgs_per_poll: 256,
            shm_fast_path: true,
            shm_hand_over: true,
            shm_doorbell_slots: 32,
            shm_sweep_interval: Duration::from_millis(1),
            max_message_size: 0,
        }
    }
}

/// The durations of a [`Config`] in ticks of the caller's clock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticks {
    pub socket_poll_interval: i64,
    pub heartbeat_interval: i64,
    pub connection_timeout: i64,
    pub ack_delay: i64,
    pub new_connection_timeout: i64,
    pub silent_login_timeout: i64,
    pub shm_sweep_interval: i64,
}

impl Config {
    /// Checks every setting.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first bad setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |setting: &'static str, why: String| Err(ConfigError { setting, why });
        if check_capacity(self.shm_queue_size).is_err() {
            return bad(
                "shm_queue_size",
                format!(
                    "{} is not a power of two of at least 64",
                    self.shm_queue_size
                ),
            );
        }
        for (setting, v) in [
            ("tcp_queue_size", self.tcp_queue_size),
            ("tcp_recv_buf_init_size", self.tcp_recv_buf_init_size),
            ("tcp_recv_buf_max_size", self.tcp_recv_buf_max_size),
        ] {
            if v < 64 || v % 8 != 0 || v > u32::MAX as usize / 2 {
                return bad(
                    setting,
                    format!("{v} is not a multiple of 8 of at least 64"),
                );
            }
        }
        if self.tcp_recv_buf_init_size > self.tcp_recv_buf_max_size {
            return bad(
                "tcp_recv_buf_init_size",
                format!(
                    "{} exceeds tcp_recv_buf_max_size {}",
                    self.tcp_recv_buf_init_size, self.tcp_recv_buf_max_size
                ),
            );
        }
        if self.tcp_recv_buf_max_size < self.tcp_queue_size + 64 {
            return bad(
                "tcp_recv_buf_max_size",
                format!(
                    "{} must be at least tcp_queue_size {} + 64: unconsumed messages stay in the \
                     peer's queue, and the receive buffer must still have room for the acks that \
                     follow them (or two echoing peers can wait on each other forever)",
                    self.tcp_recv_buf_max_size, self.tcp_queue_size
                ),
            );
        }
        if self.max_message_size > MAX_MESSAGE_SIZE {
            return bad(
                "max_message_size",
                format!("{} is above 1 GiB", self.max_message_size),
            );
        }
        // Its fragments at the least: full frames, each with its headers.
        let m = self.max_message_size;
        let least = m + m.div_ceil(MAX_PAYLOAD - 12) * 20;
        if m > self.max_tcp_payload().max(self.max_shm_payload())
            && least > self.tcp_queue_size
            && least > self.shm_queue_size
        {
            return bad(
                "max_message_size",
                format!(
                    "{m} fits neither tcp_queue_size {} nor shm_queue_size {}: a large message \
                     is held in the send queue whole",
                    self.tcp_queue_size, self.shm_queue_size
                ),
            );
        }
        if self.ticks_per_second == 0 {
            return bad("ticks_per_second", "must be at least 1".into());
        }
        let t = self.try_ticks()?;
        for (setting, v) in [
            ("heartbeat_interval", t.heartbeat_interval),
            ("connection_timeout", t.connection_timeout),
            ("new_connection_timeout", t.new_connection_timeout),
            ("silent_login_timeout", t.silent_login_timeout),
            ("shm_sweep_interval", t.shm_sweep_interval),
        ] {
            if v <= 0 {
                return bad(setting, "must be at least one tick".into());
            }
        }
        if t.ack_delay >= t.heartbeat_interval {
            return bad(
                "ack_delay",
                format!(
                    "{:?} must be below heartbeat_interval {:?}",
                    self.ack_delay, self.heartbeat_interval
                ),
            );
        }
        if t.heartbeat_interval >= t.connection_timeout {
            return bad(
                "heartbeat_interval",
                format!(
                    "{:?} must be below connection_timeout {:?}, or live peers time out",
                    self.heartbeat_interval, self.connection_timeout
                ),
            );
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout", "must be above zero".into());
        }
        if self.shm_msgs_per_poll == 0 {
            return bad("shm_msgs_per_poll", "must be at least 1".into());
        }
        if self.max_new_connections == 0 {
            return bad("max_new_connections", "must be at least 1".into());
        }
        if self.max_pending_per_source == 0 {
            return bad("max_pending_per_source", "must be at least 1".into());
        }
        if self.file_mode & !0o777 != 0 {
            return bad(
                "file_mode",
                format!("{:o} has bits beyond 0777", self.file_mode),
            );
        }
        Ok(())
    }

    /// The durations in ticks, each at most 2^61 (so sums of a few never
    /// wrap).
    /// `d` in ticks of the caller's clock (saturating).
    pub(crate) fn ticks_of(&self, d: Duration) -> i64 {
        let t = d
            .as_nanos()
            .saturating_mul(u128::from(self.ticks_per_second))
            / 1_000_000_000;
        i64::try_from(t).unwrap_or(i64::MAX / 4)
    }

    /// The time from `now` until `deadline`, both in ticks of `now` (zero
    /// when it has passed).
    pub(crate) fn until(&self, now: i64, deadline: i64) -> Duration {
        let ticks = deadline.wrapping_sub(now).max(0) as u128;
        let ns = ticks.saturating_mul(1_000_000_000) / u128::from(self.ticks_per_second.max(1));
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    fn try_ticks(&self) -> Result<Ticks, ConfigError> {
        let tps = u128::from(self.ticks_per_second);
        let conv = |setting: &'static str, d: Duration| {
            let t = d.as_nanos().saturating_mul(tps) / 1_000_000_000;
            i64::try_from(t)
                .ok()
                .filter(|&t| t <= 1 << 61)
                .ok_or_else(|| ConfigError {
                    setting,
                    why: format!("{d:?} is too long at {tps} ticks per second"),
                })
        };
        Ok(Ticks {
            socket_poll_interval: conv("socket_poll_interval", self.socket_poll_interval)?,
            heartbeat_interval: conv("heartbeat_interval", self.heartbeat_interval)?,
            connection_timeout: conv("connection_timeout", self.connection_timeout)?,
            ack_delay: conv("ack_delay", self.ack_delay)?,
            new_connection_timeout: conv("new_connection_timeout", self.new_connection_timeout)?,
            silent_login_timeout: conv("silent_login_timeout", self.silent_login_timeout)?,
            shm_sweep_interval: conv("shm_sweep_interval", self.shm_sweep_interval)?,
        })
    }

    /// The durations in ticks, for a configuration `validate` accepted
    /// (the constructors check it first).
    pub(crate) fn ticks(&self) -> Ticks {
        self.try_ticks().unwrap_or(Ticks {
            socket_poll_interval: 0,
            heartbeat_interval: i64::MAX / 4,
            connection_timeout: i64::MAX / 2,
            ack_delay: 0,
            new_connection_timeout: i64::MAX / 2,
            silent_login_timeout: i64::MAX / 2,
            shm_sweep_interval: i64::MAX / 2,
        })
    }

    /// The timers of a TCP session.
    pub(crate) fn timers(&self) -> Timers {
        let t = self.ticks();
        Timers {
            heartbeat_interval: t.heartbeat_interval,
            connection_timeout: t.connection_timeout,
            ack_delay: t.ack_delay,
            ack_backlog: (self.tcp_queue_size / 2) as u64,
        }
    }

    /// Largest payload a message may carry over TCP: it must fit the send
    /// queue (and so the peer's receive buffer, which is larger when both
    /// sides use the same configuration, as they usually do).
    pub fn max_tcp_payload(&self) -> usize {
        (self.tcp_queue_size - HEADER_SIZE).min(MAX_PAYLOAD)
    }

    /// Largest payload a message may carry over shared memory: the queue
    /// less the header, and less the block the fast path keeps free.
    pub fn max_shm_payload(&self) -> usize {
        let spare = if self.shm_fast_path { 64 } else { 0 };
        self.shm_queue_size
            .saturating_sub(HEADER_SIZE + spare)
            .min(MAX_PAYLOAD)
    }

    /// What `Client::new` and `Server::new` check first: the name, the
    /// configuration, and the directory (created if missing).
    pub(crate) fn setup(&self, name: &str, dir: &Path) -> Result<(Name, PathBuf), SetupError> {
        let name = Name::new(name).map_err(SetupError::Name)?;
        self.validate().map_err(SetupError::Config)?;
        std::fs::create_dir_all(dir)
            .map_err(|e| SetupError::Dir(FileError::io(dir, "create directory", e)))?;
        Ok((name, dir.to_path_buf()))
    }

    /// How the library maps its files: with the configured mode, and the
    /// whole-file lock (the ring ends take their role's lock instead).
    pub(crate) fn map_options(&self) -> crate::sys::MapOptions {
        crate::sys::MapOptions {
            mode: self.file_mode,
            lock: crate::sys::Lock::File,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(f: impl FnOnce(&mut Config)) -> ConfigError {
        let mut c = Config::default();
        f(&mut c);
        c.validate().unwrap_err()
    }

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        Config::default().validate().unwrap();
        let e = err(|c| c.shm_queue_size = 1000);
        assert_eq!(e.setting, "shm_queue_size");
        assert_eq!(
            e.to_string(),
            "shm_queue_size: 1000 is not a power of two of at least 64"
        );
        assert_eq!(err(|c| c.tcp_queue_size = 2001).setting, "tcp_queue_size");
        let e = err(|c| c.tcp_queue_size = 8000);
        assert_eq!(
            (e.setting, e.why.starts_with("8000 must")),
            ("tcp_recv_buf_max_size", true)
        );
        let e = err(|c| c.heartbeat_interval = Duration::from_secs(20));
        assert_eq!(e.setting, "heartbeat_interval");
        assert_eq!(err(|c| c.ticks_per_second = 0).setting, "ticks_per_second");
        assert_eq!(Config::default().max_tcp_payload(), 1992);
        assert_eq!(Config::default().max_shm_payload(), 65527);
    }

    #[test]
    fn durations_become_ticks_of_the_callers_clock() {
        let mut c = Config::default();
        let t = c.ticks();
        assert_eq!(
            (t.heartbeat_interval, t.ack_delay),
            (3_000_000_000, 100_000)
        );
        c.ticks_per_second = 3_000_000_000; // a 3 GHz TSC
        let t = c.ticks();
        assert_eq!(
            (t.heartbeat_interval, t.ack_delay),
            (9_000_000_000, 300_000)
        );
        c.ticks_per_second = 1000; // milliseconds: 100 µs rounds down to 0
        assert_eq!(c.ticks().ack_delay, 0);
        c.validate().unwrap();
        // A timeout that does not fit in ticks is refused, never wrapped.
        c.ticks_per_second = u64::MAX;
        let ns = Duration::from_nanos(1);
        (
            c.heartbeat_interval,
            c.new_connection_timeout,
            c.silent_login_timeout,
        ) = (ns, ns, ns);
        c.ack_delay = Duration::ZERO;
        c.connection_timeout = Duration::from_millis(10);
        c.validate().unwrap();
        c.connection_timeout = Duration::from_secs(1 << 40);
        assert_eq!(c.validate().unwrap_err().setting, "connection_timeout");
    }
}
