//! Configuration of clients and servers, validated at construction.
//!
//! Defaults equal the C++ library's echo example (name size 16, TCP queue
//! 2000 bytes, receive buffer 2000 growing to 8000, 5 pending logins, one
//! TCP and one SHM group of 4 connections each), except the shared-memory
//! queue, which is 1 MiB as in `PROTOCOL.md` §5. Both peers must agree on
//! the shm queue size.
//!
//! # Time
//!
//! The library never reads a clock: every poll takes `now` in the caller's
//! own monotonic unit. The default timeouts assume nanoseconds (heartbeat
//! every 3 s, a connection silent for 10 s times out, a login must arrive
//! within 3 s and start within 300 ms, acks are delayed up to 100 µs); set
//! them all in your unit if you use another (e.g. TSC cycles).
#![forbid(unsafe_code)]

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{FileError, SetupError};
use crate::shm_queue::check_capacity;
use crate::wire::{Name, HEADER_SIZE, MAX_PAYLOAD};

/// Nanoseconds in a second, for building timeouts in the default unit.
pub const SECOND_NS: i64 = 1_000_000_000;

/// Settings shared by [`Client`](crate::Client) and [`Server`](crate::Server).
#[derive(Clone, Debug)]
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
    /// Send a heartbeat after this much send silence, in `now` units.
    pub heartbeat_interval: i64,
    /// Close a connection after this much receive silence, in `now` units.
    pub connection_timeout: i64,
    /// TCP delayed ack, in `now` units (default 100 µs): a message the
    /// application consumed is acknowledged by the next data frame sent
    /// within this delay, else by a heartbeat of its own. So a reply
    /// carries the ack of its request (one send per reply), and a peer
    /// streaming into a queue we drain waits at most this long for room
    /// (or not at all: an ack also goes out at once when half of
    /// `tcp_queue_size` has been consumed unacknowledged). 0: acknowledge
    /// at once, with a frame of its own when there is nothing to send.
    pub ack_delay: i64,
    /// Server: close a new connection that has not logged in within this.
    pub new_connection_timeout: i64,
    /// Client: the longest `connect` may block (TCP connect plus login).
    pub connect_timeout: Duration,
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
    /// Server: close a new connection that has sent nothing within this,
    /// in `now` units (default 300 ms; a client sends its login at once).
    /// `new_connection_timeout` applies instead if it is shorter.
    pub silent_login_timeout: i64,
    /// Server: TCP connection groups.
    pub tcp_groups: usize,
    /// Server: connections per TCP group.
    pub tcp_conns_per_group: usize,
    /// Server: SHM connection groups.
    pub shm_groups: usize,
    /// Server: connections per SHM group.
    pub shm_conns_per_group: usize,
    /// Permission bits of created queue files and shm objects (default
    /// 0600: only this user). Use 0o660 or 0o666 to share with other users
    /// (the C++ original uses 0666).
    pub file_mode: u32,
    /// Where shared-memory objects live (default /dev/shm, where
    /// `shm_open("/<name>")` puts them on Linux).
    pub shm_dir: PathBuf,
    /// The most messages one poll delivers per shared-memory connection
    /// (default 256). A peer that keeps its queue full then cannot keep a
    /// poll from returning: the other connections of the group, and the
    /// control part's heartbeats on a single-threaded server, get their
    /// turn. The C++ library delivers one; more amortizes the poll over a
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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            shm_queue_size: 1 << 20,
            tcp_queue_size: 2000,
            tcp_recv_buf_init_size: 2000,
            tcp_recv_buf_max_size: 8000,
            tcp_no_delay: true,
            heartbeat_interval: 3 * SECOND_NS,
            connection_timeout: 10 * SECOND_NS,
            ack_delay: 100_000,
            new_connection_timeout: 3 * SECOND_NS,
            connect_timeout: Duration::from_secs(10),
            max_new_connections: 5,
            max_pending_per_source: 2,
            silent_login_timeout: 300_000_000,
            tcp_groups: 1,
            tcp_conns_per_group: 4,
            shm_groups: 1,
            shm_conns_per_group: 4,
            file_mode: 0o600,
            shm_dir: PathBuf::from("/dev/shm"),
            shm_msgs_per_poll: 256,
            shm_fast_path: true,
            shm_hand_over: true,
        }
    }
}

/// A configuration that cannot work, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Checks every setting.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first bad setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |s: String| Err(ConfigError(s));
        if check_capacity(self.shm_queue_size).is_err() {
            return bad(format!(
                "shm_queue_size {} is not a power of two of at least 64",
                self.shm_queue_size
            ));
        }
        for (name, v) in [
            ("tcp_queue_size", self.tcp_queue_size),
            ("tcp_recv_buf_init_size", self.tcp_recv_buf_init_size),
            ("tcp_recv_buf_max_size", self.tcp_recv_buf_max_size),
        ] {
            if v < 64 || v % 8 != 0 || v > u32::MAX as usize / 2 {
                return bad(format!("{name} {v} is not a multiple of 8 of at least 64"));
            }
        }
        if self.tcp_recv_buf_init_size > self.tcp_recv_buf_max_size {
            return bad(format!(
                "tcp_recv_buf_init_size {} exceeds tcp_recv_buf_max_size {}",
                self.tcp_recv_buf_init_size, self.tcp_recv_buf_max_size
            ));
        }
        if self.tcp_recv_buf_max_size < self.tcp_queue_size + 64 {
            return bad(format!(
                "tcp_recv_buf_max_size {} must be at least tcp_queue_size {} + 64: unconsumed messages \
                 stay in the peer's queue, and the receive buffer must still have room for the acks \
                 that follow them (or two echoing peers can wait on each other forever)",
                self.tcp_recv_buf_max_size, self.tcp_queue_size
            ));
        }
        for (name, v) in [
            ("heartbeat_interval", self.heartbeat_interval),
            ("connection_timeout", self.connection_timeout),
            ("new_connection_timeout", self.new_connection_timeout),
        ] {
            if v <= 0 {
                return bad(format!("{name} must be positive"));
            }
        }
        if self.ack_delay < 0 || self.ack_delay >= self.heartbeat_interval {
            return bad(format!(
                "ack_delay {} must be at least 0 and below heartbeat_interval {}",
                self.ack_delay, self.heartbeat_interval
            ));
        }
        if self.heartbeat_interval >= self.connection_timeout {
            return bad(format!(
                "heartbeat_interval {} must be below connection_timeout {}, or live peers time out",
                self.heartbeat_interval, self.connection_timeout
            ));
        }
        if self.shm_msgs_per_poll == 0 {
            return bad("shm_msgs_per_poll must be at least 1".into());
        }
        if self.max_new_connections == 0 {
            return bad("max_new_connections must be at least 1".into());
        }
        if self.max_pending_per_source == 0 {
            return bad("max_pending_per_source must be at least 1".into());
        }
        if self.silent_login_timeout <= 0 {
            return bad("silent_login_timeout must be positive".into());
        }
        if self.file_mode & !0o777 != 0 {
            return bad(format!(
                "file_mode {:o} has bits beyond 0777",
                self.file_mode
            ));
        }
        Ok(())
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

    pub(crate) fn map_options(&self, lock: bool) -> crate::sys::MapOptions {
        crate::sys::MapOptions {
            mode: self.file_mode,
            lock,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        Config::default().validate().unwrap();
        let e = Config {
            shm_queue_size: 1000,
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("shm_queue_size 1000"), "{e}");
        let e = Config {
            tcp_queue_size: 2001,
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("tcp_queue_size"), "{e}");
        let e = Config {
            tcp_queue_size: 8000,
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("tcp_recv_buf_max_size 8000"), "{e}");
        let e = Config {
            heartbeat_interval: 20 * SECOND_NS,
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("heartbeat_interval"), "{e}");
        assert_eq!(Config::default().max_tcp_payload(), 1992);
        assert_eq!(Config::default().max_shm_payload(), 65527);
    }
}
