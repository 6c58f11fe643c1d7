//! The slots of one group as the control part sees them: which name each
//! serves and whether it is free, found in constant time whatever the
//! group's size, so logins scale.

use std::collections::HashMap;

use crate::conn::Transport;
use crate::server::mailbox::Outbox;
use crate::server::slot_set::SlotSet;
use crate::server::ToGroup;
use crate::wire::{Name, UserData};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SlotState {
    Idle,
    Pending,
    Live,
}

/// What choosing a slot for a name found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Choice {
    /// This slot, now pending for the name.
    Slot(usize),
    /// The name's slot has a session (or a login under way).
    Busy,
    /// Every slot serves (or is logging in) another name.
    Full,
}

/// The slots of one group, and the way to hand it a login.
pub(super) struct GroupSlots<U: UserData, R: UserData> {
    pub(super) transport: Transport,
    pub(super) to_group: Outbox<ToGroup<U, R>>,
    state: Vec<SlotState>,
    /// The name each slot is bound to, and the other way round.
    name: Vec<Option<Name>>,
    by_name: HashMap<Name, usize>,
    /// Slots never bound, lowest last (taken first).
    never_used: Vec<usize>,
    /// Idle slots bound to a name (taken when none is unbound).
    idle_bound: SlotSet,
}

impl<U: UserData, R: UserData> GroupSlots<U, R> {
    pub(super) fn new(transport: Transport, to_group: Outbox<ToGroup<U, R>>, n: usize) -> Self {
        GroupSlots {
            transport,
            to_group,
            state: vec![SlotState::Idle; n],
            name: vec![None; n],
            by_name: HashMap::with_capacity(n),
            never_used: (0..n).rev().collect(),
            idle_bound: SlotSet::new(n),
        }
    }

    /// The slot that serves `name`, made pending: the one bound to it,
    /// else one never used, else an idle slot of another name (which the
    /// name takes over). Slots are capacity for live connections, not for
    /// every name ever seen: a name that left keeps its queue files on
    /// disk, and when it returns any idle slot takes them up again.
    pub(super) fn choose(&mut self, name: Name) -> Choice {
        let slot = match self.by_name.get(&name) {
            Some(&s) if self.state[s] != SlotState::Idle => return Choice::Busy,
            Some(&s) => s,
            None => match self.never_used.pop() {
                Some(s) => s,
                None => {
                    if self.idle_bound.is_empty() {
                        return Choice::Full;
                    }
                    let s = self.idle_bound.at(0);
                    if let Some(old) = self.name[s].take() {
                        self.by_name.remove(&old);
                    }
                    s
                }
            },
        };
        self.idle_bound.remove(slot);
        self.name[slot] = Some(name);
        self.by_name.insert(name, slot);
        self.state[slot] = SlotState::Pending;
        Choice::Slot(slot)
    }

    /// Slot `slot` is now `state` (a login finished, failed, or a session
    /// ended).
    pub(super) fn set(&mut self, slot: usize, state: SlotState) {
        let Some(s) = self.state.get_mut(slot) else {
            return;
        };
        *s = state;
        if state == SlotState::Idle && self.name[slot].is_some() {
            self.idle_bound.insert(slot);
        } else {
            self.idle_bound.remove(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::mailbox::mailbox;

    #[test]
    fn a_name_keeps_its_slot_and_idle_slots_are_reused() {
        let (tx, _rx) = mailbox::<ToGroup<u8, u8>>().unwrap();
        let mut g = GroupSlots::new(Transport::Tcp, tx, 2);
        let n = |s: &str| Name::new(s).unwrap();
        assert_eq!(g.choose(n("a")), Choice::Slot(0), "lowest first");
        assert_eq!(g.choose(n("a")), Choice::Busy);
        assert_eq!(g.choose(n("b")), Choice::Slot(1));
        assert_eq!(g.choose(n("c")), Choice::Full);
        g.set(0, SlotState::Live);
        g.set(0, SlotState::Idle); // a's session ended
        assert_eq!(g.choose(n("c")), Choice::Slot(0), "c takes a's idle slot");
        assert_eq!(g.choose(n("a")), Choice::Full, "a is no longer bound");
        g.set(1, SlotState::Idle);
        assert_eq!(g.choose(n("b")), Choice::Slot(1), "b's own slot");
    }
}
