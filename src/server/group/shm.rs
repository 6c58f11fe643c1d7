//! An SHM group's poll: delivers from the rings of its live connections.
//!
//! - A small group (below `Config::shm_doorbell_slots`), or one with at
//!   most `DIRECT_MAX` live connections, looks at every ring at every
//!   poll: one load each when it is empty.
//! - A larger one has a doorbell (`crate::doorbell`). A poll looks at:
//!   the rings whose writer does not ring (C++ and v1 peers, or a tcpshm
//!   client whose acknowledgement of the bell the sweep has not seen yet);
//!   the hot rings
//!   (messages within the last millisecond, at most `HOT_MAX`), read at
//!   every poll as in a small group, so a busy client pays what it would
//!   alone; the rings a budget-bound poll left with messages; the rings
//!   whose bits are set (one word per 64 slots, read and cleared); and a
//!   few rings of the slow sweep, which looks at every ring once per
//!   `Config::shm_sweep_interval`. An idle ring costs nothing else.
//! - The sessions' sockets (heartbeats, timeouts, wake-ups: `shm_links`)
//!   are in the group's readiness set, asked once per
//!   `Config::socket_poll_interval`: a poll in between makes no system
//!   call.
//! - A group that sleeps (`Wait`) raises the flag of every live ring and
//!   looks at each once more; their writers wake it with a heartbeat on
//!   the session's socket (`crate::wake`).

use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use super::shm_links::{ShmLinks, Visit};
use super::{Group, HOT_WINDOW};
use crate::close::{Close, CloseReason};
use crate::config::Config;
use crate::conn::{deliver_ready, LinkState, RxTransport};
use crate::doorbell::{self, Doorbell};
use crate::error::SetupError;
use crate::pair_files::bell_path;
use crate::server::slot_set::SlotSet;
use crate::server::GroupHandler;
use crate::sys::{Poller, READABLE};
use crate::wait::min_timeout;
use crate::wire::{Name, UserData};

/// Socket events one poll of the links hears of (the rest, level-
/// triggered, at the next).
const EVENTS_PER_POLL: usize = 128;

/// Hot rings at most: a look at a ring is a load, so more than TCP's.
const HOT_MAX: usize = 16;

/// Live connections up to which a group with a doorbell still looks at
/// every ring and takes no bit: measured, the bell paid for itself from
/// about five rings on (`docs/benchmarks.md`, "Where the switches are").
/// Bits set meanwhile stay set: the first poll that takes them looks at
/// those rings.
const DIRECT_MAX: usize = 4;

/// What an SHM group knows of which connections have work.
#[derive(Debug)]
pub(super) struct Readiness {
    /// Connections the application reached through `Group::connection`
    /// since the last poll: it may have closed one, or pushed a batch.
    touched: SlotSet,
    /// The doorbell and what goes with it, in a large group.
    bell: Option<Bell>,
    /// The sessions' sockets, and the set that watches them (and the
    /// mailbox's waker, `super::WAKER`).
    pub(super) poller: Poller,
    links: ShmLinks,
    /// `Config::socket_poll_interval` in ticks, and when the links were
    /// last polled (`None`: at the next poll).
    socket_every: i64,
    socket_at: Option<i64>,
    /// Slots whose reader announced, this session, that it may sleep.
    wake_announced: SlotSet,
    /// The sessions a poll of the links found closed (kept so that no
    /// poll allocates).
    closed: SlotSet,
}

#[derive(Debug)]
struct Bell {
    door: Doorbell,
    /// Rings looked at in every poll: their writer does not ring, or has
    /// not acknowledged the bell yet (`announced[slot]`, else 0).
    direct: SlotSet,
    announced: Vec<u64>,
    /// Rings left with messages (the budget, or a message not consumed)
    /// by the last poll, and by this one.
    busy: SlotSet,
    busy_next: SlotSet,
    /// Hot rings, and until when each stays hot.
    hot: SlotSet,
    hot_until: Vec<i64>,
    hot_window: i64,
    /// The sweep: the next slot it looks at, when its current lap began,
    /// and the slots looked at in that lap; a lap covers every slot in
    /// one interval, its slots due in proportion to the time gone (so a
    /// coarse clock does not stretch it).
    sweep_slot: usize,
    sweep_lap: Option<i64>,
    sweep_done: usize,
    sweep_interval: i64,
}

impl Readiness {
    /// The readiness of SHM group `group` of server `server`, with `slots`
    /// slots: with a doorbell if `cfg` gives it one.
    pub(super) fn new(
        slots: usize,
        group: usize,
        server: &Name,
        cfg: &Config,
    ) -> Result<Self, SetupError> {
        let bell = if slots >= cfg.shm_doorbell_slots
            && slots > 0
            && slots as u64 <= doorbell::MAX_SLOTS
        {
            let path = bell_path(&cfg.shm_dir, server, group);
            let door = Doorbell::create(&path, slots, cfg.file_mode).map_err(SetupError::File)?;
            let t = cfg.ticks();
            Some(Bell {
                door,
                direct: SlotSet::new(slots),
                announced: vec![0; slots],
                busy: SlotSet::new(slots),
                busy_next: SlotSet::new(slots),
                hot: SlotSet::new(slots),
                hot_until: vec![0; slots],
                hot_window: cfg.ticks_of(HOT_WINDOW),
                sweep_slot: 0,
                sweep_lap: None,
                sweep_done: 0,
                sweep_interval: t.shm_sweep_interval.max(1),
            })
        } else {
            None
        };
        let poller = Poller::new(EVENTS_PER_POLL).map_err(|source| SetupError::Io {
            op: "create an SHM group's epoll set",
            source,
        })?;
        Ok(Readiness {
            touched: SlotSet::new(slots),
            bell,
            poller,
            links: ShmLinks::new(slots, cfg),
            socket_every: cfg.ticks().socket_poll_interval,
            socket_at: None,
            wake_announced: SlotSet::new(slots),
            closed: SlotSet::new(slots),
        })
    }

    /// Watches the socket of a session starting in `slot`, before its
    /// login response (it leaves the set when it is closed).
    pub(super) fn watch(&mut self, sock: &TcpStream, slot: usize) -> io::Result<()> {
        self.poller.add(sock, slot as u64, READABLE)
    }

    /// Closes every session's socket ("Request close").
    pub(super) fn stop_links(&mut self) {
        self.links.stop(Close::new(CloseReason::RequestClose));
    }

    /// The session of `slot` starts: its socket's heartbeats and timeouts
    /// are the group's from now on.
    pub(super) fn start_link(
        &mut self,
        slot: usize,
        sock: TcpStream,
        state: Arc<LinkState>,
        cfg: &Config,
    ) {
        self.links.start(slot, sock, state, cfg);
    }

    /// The announcement for a session starting in `slot` of `group` (0:
    /// no bell, the writer rings nothing).
    pub(super) fn announcement(&self, group: usize, slot: usize) -> u64 {
        match &self.bell {
            Some(_) => doorbell::announcement_of(group, slot).unwrap_or(0),
            None => 0,
        }
    }

    /// A session starts in `slot`, its bell announced as `word`: its ring
    /// is looked at in every poll until the writer acknowledges.
    pub(super) fn started(&mut self, slot: usize, word: u64) {
        self.wake_announced.remove(slot);
        if let Some(b) = &mut self.bell {
            b.direct.insert(slot);
            b.announced[slot] = word;
        }
    }

    /// The next poll visits `slot`.
    pub(super) fn touch(&mut self, slot: usize) {
        self.touched.insert(slot);
    }

    /// `slot`'s session ended: its socket closes.
    pub(super) fn forget(&mut self, slot: usize) {
        self.touched.remove(slot);
        self.links.end(slot);
        self.wake_announced.remove(slot);
        if let Some(b) = &mut self.bell {
            b.direct.remove(slot);
            b.busy.remove(slot);
            b.busy_next.remove(slot);
            b.hot.remove(slot);
        }
    }
}

impl<U: UserData, R: UserData> Group<U, R> {
    #[inline(always)]
    pub(super) fn serve_shm<H: GroupHandler<U>>(&mut self, now: i64, handler: &mut H) {
        let r = self.shm.as_ref().expect("an SHM group");
        if !r.touched.is_empty() {
            self.serve_touched(now, handler);
        }
        let r = self.shm.as_ref().expect("an SHM group");
        if r.socket_at
            .is_none_or(|t| now.wrapping_sub(t) >= r.socket_every)
        {
            self.serve_links(now, handler);
        }
        if self.live.len() > DIRECT_MAX && self.shm.as_ref().is_some_and(|r| r.bell.is_some()) {
            return self.serve_rung(now, handler);
        }
        let mut i = 0;
        while i < self.live.len() {
            if self.serve_ring(self.live.at(i), now, handler).is_some() {
                i += 1;
            } // else it ended, and the last live slot moved to `i`
        }
    }

    /// The sessions' sockets: asks the readiness set which are readable
    /// (one system call), reads those, sends the heartbeats and checks the
    /// timeouts that are due, and ends the sessions that failed. A writer
    /// whose socket is visited looks for its reader's announcement that it
    /// may sleep (`ShmWriter::join_wake`).
    #[cold]
    #[inline(never)]
    fn serve_links<H: GroupHandler<U>>(&mut self, now: i64, handler: &mut H) {
        let cap = self.conns.len();
        let Group { shm, conns, .. } = self;
        let r = shm.as_mut().expect("an SHM group");
        r.socket_at = Some(now);
        if let Ok(tokens) = r.poller.wait(0) {
            for t in tokens {
                // Our own tokens (slots; the waker's is past them).
                if (t as usize) < cap {
                    r.links.readable(t as usize);
                }
            }
        }
        let Readiness { links, closed, .. } = r;
        links.poll(now, |slot, v| match v {
            Visit::Up => conns[slot].tx.join_wake(),
            Visit::Closed => {
                closed.insert(slot);
            }
        });
        let closed = std::mem::take(&mut r.closed);
        for slot in closed.iter() {
            if !self.live.contains(slot) {
                continue;
            }
            let c = self.conns[slot]
                .close_reason()
                .unwrap_or(Close::new(CloseReason::RequestClose));
            self.end(slot, c, handler);
        }
        let r = self.shm.as_mut().expect("an SHM group");
        r.closed = closed;
        r.closed.clear();
    }

    /// Sends the wake-up a publication to `slot`'s ring found due: its
    /// client's reader sleeps (`crate::wake`).
    #[inline(always)]
    fn send_wake(&mut self, slot: usize, now: i64) {
        if self.conns[slot].tx.take_wake_due() {
            if let Some(r) = &mut self.shm {
                r.links.wake(slot, now);
            }
        }
    }

    /// See `Wait::wait_timeout`: zero if a poll has work; else raises the
    /// flag of every live ring and looks at each once more, and sleeps
    /// until the next heartbeat or timeout (in slices of
    /// `Config::shm_sweep_interval` while a writer has not acknowledged
    /// that it wakes its reader: a C++ client never does).
    pub(super) fn shm_wait_timeout(&mut self, now: i64) -> Option<Duration> {
        let zero = Some(Duration::ZERO);
        let Group {
            shm,
            conns,
            live,
            cfg,
            ..
        } = self;
        let r = shm.as_mut().expect("an SHM group");
        if !r.touched.is_empty()
            || r.links.has_busy()
            || r.bell.as_ref().is_some_and(|b| !b.busy.is_empty())
        {
            // Work for the next poll, sockets' included.
            r.socket_at = None;
            return zero;
        }
        let until = r.links.next_due().map(|d| cfg.until(now, d));
        // The sockets are asked after any sleep: what woke it is there.
        r.socket_at = None;
        // Every live ring's flag up, one fence, then a look at each ring
        // (SYNC POINT wake-flag): a writer that publishes meanwhile either
        // is seen here or sees its flag.
        let mut unacked = false;
        for slot in live.iter() {
            let Some(rd) = conns[slot].rx.shm_reader() else {
                continue;
            };
            if !r.wake_announced.contains(slot) {
                r.wake_announced.insert(slot);
                rd.announce_wake();
            }
            unacked |= !rd.wake_acked();
            rd.raise_flag();
        }
        crate::wake::before_look();
        let mut ready = false;
        for slot in live.iter() {
            if let Some(rd) = conns[slot].rx.shm_reader() {
                ready |= rd.ready();
            }
        }
        self.asleep = true;
        if ready {
            // A message came: the flags go down again.
            self.wake_up();
            return zero;
        }
        if unacked {
            min_timeout(until, Some(self.cfg.shm_sweep_interval))
        } else {
            until
        }
    }

    /// Lowers the flags a sleep raised.
    #[cold]
    pub(super) fn shm_awake(&mut self) {
        for i in 0..self.live.len() {
            let slot = self.live.at(i);
            if let Some(rd) = self.conns[slot].rx.shm_reader() {
                rd.awake();
            }
        }
    }

    /// Delivers from the ring of `slot` if it has messages (one load when
    /// it is empty). `None` if the session ended; else whether it
    /// delivered, and whether messages remain.
    #[inline(always)]
    fn serve_ring<H: GroupHandler<U>>(
        &mut self,
        slot: usize,
        now: i64,
        handler: &mut H,
    ) -> Option<(bool, bool)> {
        let conn = &mut self.conns[slot];
        // The empty poll: a cached index, or one load. A session whose
        // socket failed is ended by the poll of the links.
        if !conn.rx.may_have_messages() {
            // A batch pushed with `push_more` outside a handler goes with
            // this poll, and a message pushed outside one is handed over
            // (fields of ours, no shared-memory load).
            // (What it lets go is a batch a handler held: no reader
            // sleeps on that, the delivery that made it woke it.)
            conn.tx.settle();
            return Some((false, false));
        }
        let id = self.id(slot);
        let conn = &mut self.conns[slot];
        self.worked |= deliver_ready(conn, self.cfg.shm_msgs_per_poll, |msg, tx| {
            handler.on_client_msg(id, msg, tx)
        });
        self.send_wake(slot, now);
        let conn = &mut self.conns[slot];
        // Closed by the handler, or for a corrupt queue (`deliver_ready`).
        if let Some(closed) = conn.close_reason() {
            self.end(slot, closed, handler);
            return None;
        }
        Some((true, conn.rx.may_have_messages()))
    }

    /// A poll of a group with a doorbell (see the module's text).
    fn serve_rung<H: GroupHandler<U>>(&mut self, now: i64, handler: &mut H) {
        // The sets, out of `self` while the handler runs (moved, and put
        // back after: no poll allocates).
        let b = self.bell_mut();
        let mut direct = std::mem::take(&mut b.direct);
        let mut hot = std::mem::take(&mut b.hot);
        let mut left = std::mem::take(&mut b.busy);
        let mut busy = std::mem::take(&mut b.busy_next);
        // Rings whose writer does not ring, or not yet (the sweep looks
        // for its acknowledgement: a load of a line the writer keeps
        // writing has no place in every poll).
        let mut i = 0;
        while i < direct.len() {
            let slot = direct.at(i);
            if self.serve_and_note(slot, now, (&mut busy, &mut hot, false), handler) {
                i += 1;
            } else {
                direct.remove(slot);
            }
        }
        // Hot rings, at every poll while they stay hot.
        let mut i = 0;
        while i < hot.len() {
            let slot = hot.at(i);
            if now.wrapping_sub(self.bell_mut().hot_until[slot]) > 0 {
                hot.remove(slot); // cooled down (looked at once more now)
            }
            self.serve_and_note(slot, now, (&mut busy, &mut hot, true), handler);
            // A slot that left the set moved the last member to `i`.
            if i < hot.len() && hot.at(i) == slot {
                i += 1;
            }
        }
        // Rings the last poll left with messages.
        for i in 0..left.len() {
            let slot = left.at(i);
            if !hot.contains(slot) && !direct.contains(slot) {
                self.serve_and_note(slot, now, (&mut busy, &mut hot, true), handler);
            }
        }
        left.clear();
        // The bell: one word per 64 slots, mostly zero and in our cache.
        let (lines, cap) = (self.bell_mut().door.lines(), self.conns.len());
        for line in 0..lines {
            let mut bits = self.bell_mut().door.take(line);
            while bits != 0 {
                let slot = line * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                // A bit is a hint (peer-written): only a live ringing slot
                // not looked at yet in this poll counts.
                if slot < cap
                    && self.live.contains(slot)
                    && !direct.contains(slot)
                    && !hot.contains(slot)
                {
                    self.serve_and_note(slot, now, (&mut busy, &mut hot, true), handler);
                }
            }
        }
        self.sweep(now, &mut direct, &mut busy, &mut hot, handler);
        let b = self.bell_mut();
        (b.direct, b.hot, b.busy, b.busy_next) = (direct, hot, busy, left);
    }

    /// Serves `slot`'s ring and notes what it left: a ring that delivered
    /// turns hot (if `heat` and there is room: a ring looked at in every
    /// poll anyway takes no place), one left with messages goes in `busy`.
    /// Returns whether the session is still up.
    fn serve_and_note<H: GroupHandler<U>>(
        &mut self,
        slot: usize,
        now: i64,
        (busy, hot, heat): (&mut SlotSet, &mut SlotSet, bool),
        handler: &mut H,
    ) -> bool {
        if !self.live.contains(slot) {
            hot.remove(slot);
            busy.remove(slot);
            return false;
        }
        let Some((delivered, more)) = self.serve_ring(slot, now, handler) else {
            hot.remove(slot);
            busy.remove(slot);
            return false;
        };
        if heat && delivered && (hot.contains(slot) || (hot.len() < HOT_MAX && hot.insert(slot))) {
            let b = self.bell_mut();
            b.hot_until[slot] = now.wrapping_add(b.hot_window);
        }
        if more {
            busy.insert(slot);
        }
        true
    }

    /// Looks at the rings the sweep has come to by `now`: every slot once
    /// per interval, in turn (after a pause, one full sweep at most). For
    /// a ring looked at in every poll, whether its writer acknowledged the
    /// bell: then it rings from now on, and its ring is looked at once
    /// more, for what it published before it said so.
    fn sweep<H: GroupHandler<U>>(
        &mut self,
        now: i64,
        direct: &mut SlotSet,
        busy: &mut SlotSet,
        hot: &mut SlotSet,
        handler: &mut H,
    ) {
        let cap = self.conns.len();
        let b = self.bell_mut();
        let interval = b.sweep_interval;
        let mut lap = *b.sweep_lap.get_or_insert(now);
        if now.wrapping_sub(lap) > interval {
            // After a pause, one full lap at most.
            lap = now.wrapping_sub(interval);
            b.sweep_done = 0;
        }
        // The slots due by now in this lap, in proportion to its time.
        let gone = i128::from(now.wrapping_sub(lap).max(0));
        let due = (gone * cap as i128 / i128::from(interval)) as usize;
        let n = due.min(cap).saturating_sub(b.sweep_done);
        b.sweep_done += n;
        if b.sweep_done >= cap {
            b.sweep_done = 0;
            lap = lap.wrapping_add(interval);
        }
        b.sweep_lap = Some(lap);
        for _ in 0..n {
            let b = self.bell_mut();
            let slot = b.sweep_slot;
            b.sweep_slot = (slot + 1) % cap;
            if !self.live.contains(slot) {
                continue;
            }
            if direct.contains(slot) {
                let word = self.bell_mut().announced[slot];
                if word != 0 && self.acknowledged(slot, word) {
                    self.bell_mut().announced[slot] = 0;
                    direct.remove(slot);
                    self.serve_and_note(slot, now, (busy, hot, true), handler);
                }
            } else if !hot.contains(slot) {
                self.serve_and_note(slot, now, (busy, hot, true), handler);
            }
        }
    }

    /// Whether the writer of `slot`'s ring acknowledged the bell `word`.
    fn acknowledged(&self, slot: usize, word: u64) -> bool {
        match &self.conns[slot].rx.t {
            RxTransport::Shm(r) => r.doorbell_acknowledged(word),
            _ => false,
        }
    }

    fn bell_mut(&mut self) -> &mut Bell {
        self.shm
            .as_mut()
            .and_then(|r| r.bell.as_mut())
            .expect("a group with a doorbell")
    }

    /// Reports the touched connections the application closed, and lets
    /// their batches go.
    #[cold]
    fn serve_touched<H: GroupHandler<U>>(&mut self, now: i64, handler: &mut H) {
        let Some(r) = &mut self.shm else { return };
        let touched = std::mem::take(&mut r.touched);
        for slot in touched.iter() {
            if !self.live.contains(slot) {
                continue;
            }
            match self.conns[slot].close_reason() {
                Some(closed) => self.end(slot, closed, handler),
                None => {
                    self.conns[slot].tx.settle();
                    self.send_wake(slot, now);
                }
            }
        }
        let r = self.shm.as_mut().expect("an SHM group");
        r.touched = touched;
        r.touched.clear();
    }
}
