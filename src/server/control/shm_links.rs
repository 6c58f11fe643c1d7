//! The TCP side of the server's shared-memory sessions: their heartbeats
//! and timeouts. A socket is read only when the control part's readiness
//! set says it is readable, and its deadlines wait in a timer wheel, so a
//! control poll costs nothing per idle session.

use std::io;
use std::net::TcpStream;
use std::sync::Arc;

use crate::close::Close;
use crate::config::Config;
use crate::conn::{LinkState, TcpLink};
use crate::server::slot_set::SlotSet;
use crate::server::ConnId;
use crate::sys::{Poller, READABLE};
use crate::timer_wheel::TimerWheel;

/// Sessions whose deadlines one poll handles (see `group::tcp`).
const TIMERS_PER_POLL: usize = 64;

struct ShmLink {
    id: ConnId,
    link: TcpLink,
    state: Arc<LinkState>,
}

/// The sockets of the live SHM sessions, one place per SHM group slot.
pub(super) struct ShmLinks {
    /// Per SHM group, the place of its slot 0.
    base: Vec<usize>,
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

impl ShmLinks {
    /// Places for SHM groups of `sizes` slots.
    pub(super) fn new(sizes: &[usize], cfg: &Config) -> Self {
        let mut base = Vec::with_capacity(sizes.len());
        let mut n = 0;
        for s in sizes {
            base.push(n);
            n += s;
        }
        let t = cfg.ticks();
        ShmLinks {
            base,
            links: (0..n).map(|_| None).collect(),
            wheel: TimerWheel::for_sessions(n, t.heartbeat_interval, t.connection_timeout),
            busy: SlotSet::new(n),
            readable: SlotSet::new(n),
            visit: SlotSet::new(n),
        }
    }

    /// Places in all (the readiness set's tokens for them are
    /// `token_base + place`).
    pub(super) fn places(&self) -> usize {
        self.links.len()
    }

    fn place(&self, id: ConnId) -> Option<usize> {
        Some(self.base.get(id.group)? + id.slot).filter(|&p| p < self.links.len())
    }

    /// A session of `id` starts over `sock`: watched by `poller` with
    /// token `token_base + place`.
    ///
    /// # Errors
    /// The readiness set's (the session is then not kept).
    pub(super) fn start(
        &mut self,
        poller: &Poller,
        token_base: u64,
        id: ConnId,
        sock: TcpStream,
        state: Arc<LinkState>,
        cfg: &Config,
    ) -> io::Result<()> {
        let p = self.place(id).ok_or(io::ErrorKind::InvalidInput)?;
        self.end(id);
        poller.add(&sock, token_base + p as u64, READABLE)?;
        self.links[p] = Some(ShmLink {
            id,
            link: TcpLink::new(sock, cfg.timers()),
            state,
        });
        self.busy.insert(p);
        Ok(())
    }

    /// The session of `id` ended (its group reported it): its socket
    /// closes, and leaves the readiness set with it.
    pub(super) fn end(&mut self, id: ConnId) {
        if let Some(p) = self.place(id) {
            self.links[p] = None;
            self.wheel.cancel(p);
            self.busy.remove(p);
        }
    }

    /// The socket of place `p` is readable.
    pub(super) fn readable(&mut self, p: usize) {
        if p < self.links.len() {
            self.readable.insert(p);
        }
    }

    /// Reads the readable sockets, and sends the heartbeats and checks the
    /// timeouts that are due. A session that failed is closed (its state
    /// too) and handed to `closed`, for its group to report.
    pub(super) fn poll(&mut self, now: i64, mut closed: impl FnMut(ConnId)) {
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
            self.poll_one(readable.at(i), true, now, &mut closed);
        }
        for i in 0..visit.len() {
            let p = visit.at(i);
            if !readable.contains(p) {
                self.poll_one(p, false, now, &mut closed);
            }
        }
        (self.readable, self.visit) = (readable, visit);
        self.readable.clear();
        self.visit.clear();
    }

    fn poll_one(&mut self, p: usize, read: bool, now: i64, closed: &mut impl FnMut(ConnId)) {
        let Some(s) = &mut self.links[p] else { return };
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
            }
            Err(c) => {
                s.state.close(c);
                let id = s.id;
                self.links[p] = None;
                self.wheel.cancel(p);
                self.busy.remove(p);
                closed(id);
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
    }
}
