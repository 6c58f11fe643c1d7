//! An SHM group's poll: delivers from the rings of its live connections.

use super::Group;
use crate::conn::deliver_ready;
use crate::server::slot_set::SlotSet;
use crate::server::GroupHandler;
use crate::wire::UserData;

/// What an SHM group knows of which connections have work.
#[derive(Debug)]
pub(super) struct Readiness {
    /// Connections the application reached through `Group::connection`
    /// since the last poll: it may have closed one, or pushed a batch.
    touched: SlotSet,
}

impl Readiness {
    pub(super) fn new(slots: usize) -> Self {
        Readiness {
            touched: SlotSet::new(slots),
        }
    }

    /// The next poll visits `slot`.
    pub(super) fn touch(&mut self, slot: usize) {
        self.touched.insert(slot);
    }

    /// `slot`'s session ended.
    pub(super) fn forget(&mut self, slot: usize) {
        self.touched.remove(slot);
    }
}

impl<U: UserData, R: UserData> Group<U, R> {
    #[inline(always)]
    pub(super) fn serve_shm<H: GroupHandler<U>>(&mut self, handler: &mut H) {
        if !self.shm.as_ref().is_some_and(|r| r.touched.is_empty()) {
            self.serve_touched(handler);
        }
        let mut i = 0;
        while i < self.live.len() {
            let slot = self.live.at(i);
            let conn = &mut self.conns[slot];
            // The empty poll: a cached index, or one load. Closes by the
            // control part come through the mailbox.
            if !conn.rx.may_have_messages() {
                // A batch pushed with `push_more` outside a handler goes
                // with this poll, and a message pushed outside one is handed
                // over (fields of ours, no shared-memory load).
                conn.tx.settle();
                i += 1;
                continue;
            }
            let id = self.id(slot);
            let conn = &mut self.conns[slot];
            deliver_ready(conn, self.cfg.shm_msgs_per_poll, |msg, tx| {
                handler.on_client_msg(id, msg, tx)
            });
            if let Some(f) = conn.rx.fault.take() {
                conn.tx.state.close(f);
            }
            // Closed by the handler, or for a corrupt queue (the last
            // live slot moves to `i`).
            if let Some(closed) = conn.close_reason() {
                self.end(slot, closed, handler);
                continue;
            }
            i += 1;
        }
    }

    /// Reports the touched connections the application closed, and lets
    /// their batches go.
    #[cold]
    fn serve_touched<H: GroupHandler<U>>(&mut self, handler: &mut H) {
        let Some(r) = &mut self.shm else { return };
        let touched = std::mem::take(&mut r.touched);
        for slot in touched.iter() {
            if !self.live.contains(slot) {
                continue;
            }
            match self.conns[slot].close_reason() {
                Some(closed) => self.end(slot, closed, handler),
                None => self.conns[slot].tx.settle(),
            }
        }
        let r = self.shm.as_mut().expect("an SHM group");
        r.touched = touched;
        r.touched.clear();
    }
}
