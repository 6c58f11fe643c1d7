//! Live statistics of connections, as plain structs. The counters behind
//! them are plain integers kept by the part that does the work (the send
//! half counts pushes, the receive half pops, the session heartbeats),
//! each added to with one plain add where it happens: no atomics, no
//! allocation, nothing on the hot path but the add. `stats()` reads them.
//!
//! The `tcpshm` echo programs publish them every second into
//! `<dir>/<name>.stats` (JSON, replaced atomically), which `tcpshm stats`
//! shows as a table.

use crate::close::Close;
use crate::conn::Transport;

/// One connection's statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ConnStats {
    /// Its transport, once a queue is open.
    pub transport: Option<Transport>,
    /// Whether a session is up.
    pub connected: bool,
    /// Application messages pushed (since this process opened it).
    pub msgs_sent: u64,
    /// Their payload bytes.
    pub bytes_sent: u64,
    /// Application messages received and popped.
    pub msgs_received: u64,
    /// Their payload bytes.
    pub bytes_received: u64,
    /// TCP: messages of this side the peer has acknowledged since the pair
    /// started (mod 2^32); `None` over shared memory (no acks there).
    pub acked: Option<u32>,
    /// Messages pushed and not yet consumed by the peer: unacknowledged
    /// (TCP) or unread in the ring (shared memory).
    pub pending: u32,
    /// Messages sent again after a login (unacknowledged when the
    /// previous session ended), summed over the sessions.
    pub resent: u64,
    /// Sessions started (logins); reconnects are this minus one.
    pub sessions: u64,
    /// Heartbeats (and standalone acks) sent in the current session.
    pub heartbeats_sent: u64,
    /// Share of the send queue in use (0 to 1).
    pub queue_fill: f64,
    /// Why the last session ended, with the OS error (0 if none).
    pub last_close: Option<Close>,
    /// The caller's `now` when bytes last came from the peer (TCP side of
    /// the current session; for a server's shm connections the control
    /// part has it, and this is `None`).
    pub last_heard: Option<i64>,
}
