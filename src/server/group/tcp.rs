//! A TCP group's poll, which costs what is ready, not what is connected.
//!
//! - A group with one live connection reads it at every poll: one `recv`,
//!   as it always did ([`DIRECT_MAX`]).
//! - A larger group asks its epoll set (level-triggered) which sockets are
//!   readable, one system call however many connections there are, and
//!   visits those; the connections whose timers are due (a [`TimerWheel`]:
//!   one compare when none is); and those an earlier poll left with work
//!   (bytes to send, messages not consumed, an ack to tell, a connection
//!   pushed to through [`Group::connection`]). An idle connection costs
//!   nothing until its peer sends or its heartbeat is due.

use std::io;
use std::net::TcpStream;
use std::time::Duration;

use super::{Group, HOT_WINDOW};
use crate::config::Config;
use crate::conn::deliver;
use crate::error::SetupError;
use crate::server::slot_set::SlotSet;
use crate::server::GroupHandler;
use crate::sys::{Poller, READABLE, WRITABLE};
use crate::timer_wheel::TimerWheel;
use crate::wire::UserData;

/// Live connections up to which a poll reads each one rather than ask
/// the readiness set: one. A lone connection is read as it always was;
/// with two or three, reading each already made the active client's p99
/// 1.2-1.5x its lone p99 where the readiness set kept it at 0.96-0.99x
/// (`docs/benchmarks.md`, "Where the switches are").
pub(super) const DIRECT_MAX: usize = 1;

/// Readable sockets one poll hears of; the rest (level-triggered) are
/// reported again by the next.
const EVENTS_PER_POLL: usize = 128;

/// Connections whose deadlines one poll handles: heartbeats that come
/// due together (after a pause of the polling thread, or logins made in
/// one burst) are spread over the next polls.
const TIMERS_PER_POLL: usize = 64;

/// Hot connections (`HOT_WINDOW`) are read at every poll, as in a small
/// group, so a busy client pays one system call per poll as it would
/// alone; the readiness set is then asked every `WAIT_EVERY` polls only.
/// At most `HOT_MAX` of them: past that, a poll would pay more for its hot
/// connections than for asking the set.
const HOT_MAX: usize = 4;
const WAIT_EVERY: u32 = 4;

/// What a TCP group knows of which connections have work.
#[derive(Debug)]
pub(super) struct Readiness {
    /// The sockets, and the mailbox's waker (`super::WAKER`).
    pub(super) poller: Poller,
    wheel: TimerWheel,
    /// Connections with work for the next poll, whatever their sockets say.
    busy: SlotSet,
    /// A poll's readable sockets, and the connections it visits without
    /// reading (kept here so no poll allocates).
    readable: SlotSet,
    visit: SlotSet,
    /// Hot connections, and until when each stays hot.
    hot: SlotSet,
    hot_until: Vec<i64>,
    hot_window: i64,
    /// Polls since the readiness set was last asked.
    since_wait: u32,
    /// Per slot: whether its socket is watched for writability too (bytes
    /// wait that the socket did not take).
    watch_out: Vec<bool>,
    /// Whether the group is past `DIRECT_MAX` (the sets and the wheel are
    /// in use).
    active: bool,
}

impl Readiness {
    pub(super) fn new(slots: usize, cfg: &Config) -> Result<Self, SetupError> {
        let poller = Poller::new(EVENTS_PER_POLL).map_err(|source| SetupError::Io {
            op: "create a TCP group's epoll set",
            source,
        })?;
        let t = cfg.ticks();
        Ok(Readiness {
            poller,
            wheel: TimerWheel::for_sessions(slots, t.heartbeat_interval, t.connection_timeout),
            busy: SlotSet::new(slots),
            readable: SlotSet::new(slots),
            visit: SlotSet::new(slots),
            hot: SlotSet::new(slots),
            hot_until: vec![0; slots],
            hot_window: cfg.ticks_of(HOT_WINDOW),
            since_wait: 0,
            watch_out: vec![false; slots],
            active: false,
        })
    }

    /// Watches the socket of a session starting in `slot` (it leaves the
    /// set when it is closed).
    pub(super) fn watch(&mut self, sock: &TcpStream, slot: usize) -> io::Result<()> {
        self.watch_out[slot] = false;
        self.poller.add(sock, slot as u64, READABLE)
    }

    /// Watches `slot`'s socket `fd` for writability too while `unsent`
    /// (one `epoll_ctl` when that changes, not a `send` at every poll).
    fn watch_writable(&mut self, slot: usize, fd: std::os::fd::RawFd, unsent: bool) {
        if self.watch_out[slot] != unsent {
            let interest = if unsent {
                READABLE | WRITABLE
            } else {
                READABLE
            };
            if self.poller.modify(fd, slot as u64, interest).is_ok() {
                self.watch_out[slot] = unsent;
            }
        }
    }

    /// The next poll visits `slot`.
    pub(super) fn touch(&mut self, slot: usize) {
        if self.active {
            self.busy.insert(slot);
        }
    }

    /// `slot`'s session ended.
    pub(super) fn forget(&mut self, slot: usize) {
        self.busy.remove(slot);
        self.hot.remove(slot);
        self.wheel.cancel(slot);
    }

    /// `slot` delivered application messages at `now`: read it at every
    /// poll for a while, if there is room.
    fn heat(&mut self, slot: usize, now: i64) {
        if self.hot.contains(slot) || (self.hot.len() < HOT_MAX && self.hot.insert(slot)) {
            self.hot_until[slot] = now.wrapping_add(self.hot_window);
        }
    }
}

impl<U: UserData, R: UserData> Group<U, R> {
    /// See `Wait::wait_timeout`: zero if a poll has work; else until the
    /// next heartbeat, delayed ack or timeout (its sockets wake it).
    pub(super) fn tcp_wait_timeout(&mut self, now: i64) -> Option<Duration> {
        let zero = Some(Duration::ZERO);
        let r = self.tcp.as_ref()?;
        if r.active {
            if !r.busy.is_empty() {
                return zero;
            }
            return r.wheel.next_due().map(|d| self.cfg.until(now, d));
        }
        // A small group reads each connection at every poll; a socket
        // that did not take all its bytes is watched for writability.
        let mut next: Option<Duration> = None;
        for i in 0..self.live.len() {
            let slot = self.live.at(i);
            let c = &self.conns[slot];
            let Some((fd, unsent)) = c.tcp_socket() else {
                return zero; // closed: the next poll reports it
            };
            let r = self.tcp.as_mut().expect("a TCP group");
            r.watch_writable(slot, fd, unsent);
            let c = &self.conns[slot];
            if c.tcp_wants_poll(r.watch_out[slot]) {
                return zero;
            }
            let Some(d) = c.tcp_deadline() else {
                return zero; // its timers start at the next poll
            };
            let d = self.cfg.until(now, d);
            next = Some(next.map_or(d, |n| n.min(d)));
        }
        next
    }

    #[inline(never)]
    pub(super) fn serve_tcp<H: GroupHandler<U>>(&mut self, now: i64, handler: &mut H) {
        let Some(r) = &mut self.tcp else { return };
        if self.live.len() <= DIRECT_MAX {
            if r.active {
                // Back to reading each: the sets and the wheel go unused.
                r.active = false;
                r.busy.clear();
                r.hot.clear();
                self.live.iter().for_each(|s| r.wheel.cancel(s));
            }
            return self.serve_tcp_each(now, handler);
        }
        if !r.active {
            // Every live connection is visited once, which files its
            // deadline; from then on only those with work.
            r.active = true;
            for s in self.live.iter() {
                r.busy.insert(s);
            }
        }
        self.serve_tcp_ready(now, handler);
    }

    /// Polls every live connection: one read each.
    fn serve_tcp_each<H: GroupHandler<U>>(&mut self, now: i64, handler: &mut H) {
        let mut i = 0;
        while i < self.live.len() {
            let slot = self.live.at(i);
            if self.serve_tcp_one(slot, true, now, handler) {
                i += 1;
            } // else it ended, and the last live slot moved to `i`
        }
    }

    /// Polls the connections with work: hot, readable, due, or busy.
    fn serve_tcp_ready<H: GroupHandler<U>>(&mut self, now: i64, handler: &mut H) {
        let r = self.tcp.as_mut().expect("a TCP group");
        let cap = self.conns.len();
        let Readiness {
            poller,
            wheel,
            busy,
            readable,
            visit,
            hot,
            hot_until,
            since_wait,
            ..
        } = r;
        // Hot connections are read whatever the set says; it is asked at
        // every poll without them, every `WAIT_EVERY` polls with them.
        let mut i = 0;
        while i < hot.len() {
            let slot = hot.at(i);
            readable.insert(slot);
            if now.wrapping_sub(hot_until[slot]) > 0 {
                hot.remove(slot); // cooled down (read once more now)
            } else {
                i += 1;
            }
        }
        *since_wait += 1;
        if hot.is_empty() || *since_wait >= WAIT_EVERY {
            *since_wait = 0;
            let heard = match poller.wait(0) {
                Ok(tokens) => {
                    for t in tokens {
                        // Our own tokens (slot numbers), checked all the same.
                        if (t as usize) < cap {
                            readable.insert(t as usize);
                        }
                    }
                    true
                }
                Err(_) => false,
            };
            if !heard {
                // Not expected (the set is ours): read each this time.
                readable.clear();
                return self.serve_tcp_each(now, handler);
            }
        }
        std::mem::swap(visit, busy);
        if wheel.due(now) {
            wheel.expire(now, TIMERS_PER_POLL, |s| {
                visit.insert(s);
            });
        }
        // Out of `self` while the handler runs (no allocation: the sets
        // are moved, and put back emptied).
        let readable = std::mem::take(readable);
        let mut visit = std::mem::take(visit);
        for i in 0..readable.len() {
            let slot = readable.at(i);
            visit.remove(slot);
            self.serve_tcp_one(slot, true, now, handler);
        }
        for i in 0..visit.len() {
            self.serve_tcp_one(visit.at(i), false, now, handler);
        }
        let r = self.tcp.as_mut().expect("a TCP group");
        (r.readable, r.visit) = (readable, visit);
        r.readable.clear();
        r.visit.clear();
    }

    /// Polls the connection in `slot` (reading if `read`) and delivers
    /// what it holds; files its next deadline and notes whether it has
    /// work for the next poll. Returns whether it is still live.
    fn serve_tcp_one<H: GroupHandler<U>>(
        &mut self,
        slot: usize,
        read: bool,
        now: i64,
        handler: &mut H,
    ) -> bool {
        if !self.live.contains(slot) {
            return false;
        }
        let id = self.id(slot);
        let conn = &mut self.conns[slot];
        if let Some(closed) = conn.poll_tcp_io(now, read) {
            self.end(slot, closed, handler);
            return false;
        }
        let popped = conn.rx.pops;
        self.worked |= deliver(conn, u32::MAX, |msg, tx| handler.on_client_msg(id, msg, tx));
        let r = self.tcp.as_mut().expect("a TCP group");
        if r.active {
            if conn.rx.pops != popped {
                r.heat(slot, now);
            }
            if let Some((fd, unsent)) = conn.tcp_socket() {
                r.watch_writable(slot, fd, unsent);
            }
            if conn.tcp_wants_poll(r.watch_out[slot]) {
                r.busy.insert(slot);
            }
            match conn.tcp_deadline() {
                Some(d) => r.wheel.schedule(slot, d, now),
                None => {
                    r.busy.insert(slot);
                }
            }
        }
        true
    }
}
