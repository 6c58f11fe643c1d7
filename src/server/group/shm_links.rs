//! The TCP side of an SHM group's sessions: their heartbeats, timeouts
//! and wake-ups. A socket is read only when the group's readiness set
//! says it is readable, and its deadlines wait in a timer wheel, so a
//! poll costs nothing per idle session.

use std::net::TcpStream;
use std::sync::Arc;

use crate::close::Close;
use crate::config::Config;
use crate::conn::{LinkState, TcpLink};
use crate::server::slot_set::SlotSet;
use crate::timer_wheel::TimerWheel;

/// Sessions whose deadlines one poll handles (see `group::tcp`).
const TIMERS_PER_POLL: usize = 64;

#[derive(Debug)]
struct ShmLink {
    link: TcpLink,
    state: Arc<LinkState>,
}

/// The sockets of the group's live SHM sessions, one place per slot.
#[derive(Debug)]
pub(super) struct ShmLinks {
    links: Vec<Option<ShmLink>>,
    wheel: TimerWheel,
    /// Sessions to visit at the next poll whatever their sockets say: a
    /// new one (its timers start at its first poll), a heartbeat partly
    /// sent.
    busy: SlotSet,
    /// A poll's readable sockets and the sessions it visits without
    /// reading (kept so that no poll allocates).
    readable: SlotSet,
    visit: SlotSet,
}

/// What a poll found of a session it visited.
pub(super) enum Visit {
    /// Still up (its writer may now look for its reader's sleep).
    Up,
    /// Closed (its state too), for its group to report.
    Closed,
}

impl ShmLinks {
    /// Places for `slots` slots.
    pub(super) fn new(slots: usize, cfg: &Config) -> Self {
        let t = cfg.ticks();
        ShmLinks {
            links: (0..slots).map(|_| None).collect(),
            wheel: TimerWheel::for_sessions(slots, t.heartbeat_interval, t.connection_timeout),
            busy: SlotSet::new(slots),
            readable: SlotSet::new(slots),
            visit: SlotSet::new(slots),
        }
    }

    /// A session of `slot` starts over `sock` (already in the group's
    /// readiness set).
    pub(super) fn start(
        &mut self,
        slot: usize,
        sock: TcpStream,
        state: Arc<LinkState>,
        cfg: &Config,
    ) {
        if slot >= self.links.len() {
            return;
        }
        self.end(slot);
        self.links[slot] = Some(ShmLink {
            link: TcpLink::new(sock, cfg.timers()),
            state,
        });
        self.busy.insert(slot);
    }

    /// The session of `slot` ended: its socket closes, and leaves the
    /// readiness set with it.
    pub(super) fn end(&mut self, slot: usize) {
        if slot < self.links.len() {
            self.links[slot] = None;
            self.wheel.cancel(slot);
            self.busy.remove(slot);
            self.readable.remove(slot);
        }
    }

    /// The socket of `slot` is readable.
    pub(super) fn readable(&mut self, slot: usize) {
        if slot < self.links.len() {
            self.readable.insert(slot);
        }
    }

    /// Sends a heartbeat on `slot`'s socket now: its client's reader
    /// sleeps and a message was published for it.
    pub(super) fn wake(&mut self, slot: usize, now: i64) {
        if let Some(Some(s)) = self.links.get_mut(slot) {
            s.link.wake(now);
            if s.link.has_unsent() {
                self.busy.insert(slot);
            }
        }
    }

    /// Whether the next poll has sessions to visit whatever the sockets
    /// say.
    pub(super) fn has_busy(&self) -> bool {
        !self.busy.is_empty()
    }

    /// When the next heartbeat or timeout is due (`None`: none filed).
    pub(super) fn next_due(&self) -> Option<i64> {
        self.wheel.next_due()
    }

    /// Reads the readable sockets, and sends the heartbeats and checks the
    /// timeouts that are due; `f` hears of each session visited. A
    /// session that failed is closed (its state too).
    pub(super) fn poll(&mut self, now: i64, mut f: impl FnMut(usize, Visit)) {
        std::mem::swap(&mut self.visit, &mut self.busy);
        if self.wheel.due(now) {
            let visit = &mut self.visit;
            self.wheel.expire(now, TIMERS_PER_POLL, |p| {
                visit.insert(p);
            });
        }
        let readable = std::mem::take(&mut self.readable);
        let visit = std::mem::take(&mut self.visit);
        for i in 0..readable.len() {
            let p = readable.at(i);
            f(p, self.poll_one(p, true, now));
        }
        for i in 0..visit.len() {
            let p = visit.at(i);
            if !readable.contains(p) {
                f(p, self.poll_one(p, false, now));
            }
        }
        (self.readable, self.visit) = (readable, visit);
        self.readable.clear();
        self.visit.clear();
    }

    fn poll_one(&mut self, p: usize, read: bool, now: i64) -> Visit {
        let Some(s) = &mut self.links[p] else {
            return Visit::Closed;
        };
        let res = match s.state.closed() {
            Some(c) => Err(c),
            None => s.link.poll_heartbeats(now, read),
        };
        match res {
            Ok(()) => {
                match s.link.session.next_deadline() {
                    Some(d) => self.wheel.schedule(p, d, now),
                    None => {
                        self.busy.insert(p);
                    }
                }
                if s.link.has_unsent() {
                    self.busy.insert(p);
                }
                Visit::Up
            }
            Err(c) => {
                s.state.close(c);
                self.end(p);
                Visit::Closed
            }
        }
    }

    /// Closes every session ("Request close").
    pub(super) fn stop(&mut self, c: Close) {
        for p in 0..self.links.len() {
            if let Some(s) = self.links[p].take() {
                s.state.close(c);
            }
            self.wheel.cancel(p);
        }
        self.busy.clear();
        self.readable.clear();
    }
}
