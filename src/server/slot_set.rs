//! A set of slot numbers with O(1) insert, remove and membership, and
//! iteration over its members only: what a group keeps of its live
//! connections and of those with work for the next poll. Its arrays are
//! allocated up front, for every slot of the group.
#![forbid(unsafe_code)]

/// "Not a member".
const OUT: u32 = u32::MAX;

/// A set of slots `0..capacity`.
#[derive(Debug, Default)]
pub(crate) struct SlotSet {
    /// The members, in no particular order.
    list: Vec<u32>,
    /// Per slot: its index in `list`, or `OUT`.
    pos: Vec<u32>,
}

impl SlotSet {
    pub(crate) fn new(capacity: usize) -> Self {
        SlotSet {
            list: Vec::with_capacity(capacity),
            pos: vec![OUT; capacity],
        }
    }

    /// Adds `slot`; `false` if it was a member already.
    #[inline]
    pub(crate) fn insert(&mut self, slot: usize) -> bool {
        if self.pos[slot] != OUT {
            return false;
        }
        self.pos[slot] = self.list.len() as u32;
        self.list.push(slot as u32);
        true
    }

    /// Removes `slot`; `false` if it was not a member (or is beyond the
    /// set's capacity, as every slot is for a set moved out with
    /// `mem::take` while its owner works through it).
    #[inline]
    pub(crate) fn remove(&mut self, slot: usize) -> bool {
        let i = self.pos.get(slot).copied().unwrap_or(OUT);
        if i == OUT {
            return false;
        }
        self.pos[slot] = OUT;
        let last = self.list.pop().expect("a member");
        if last as usize != slot {
            self.list[i as usize] = last;
            self.pos[last as usize] = i;
        }
        true
    }

    #[inline]
    pub(crate) fn contains(&self, slot: usize) -> bool {
        self.pos.get(slot).is_some_and(|&p| p != OUT)
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The member at index `i` of the current order (`i < len`); removing
    /// it moves the last member there.
    #[inline]
    pub(crate) fn at(&self, i: usize) -> usize {
        self.list[i] as usize
    }

    /// The members.
    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.list.iter().map(|&s| s as usize)
    }

    /// Removes every member.
    pub(crate) fn clear(&mut self) {
        for &s in &self.list {
            self.pos[s as usize] = OUT;
        }
        self.list.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_removes_and_keeps_positions() {
        let mut s = SlotSet::new(10);
        assert!(s.insert(3) && s.insert(7) && s.insert(1));
        assert!(!s.insert(7), "once");
        assert!(s.remove(3) && !s.remove(3));
        assert!(s.contains(7) && s.contains(1) && !s.contains(3) && !s.contains(99));
        let mut m: Vec<usize> = s.iter().collect();
        m.sort();
        assert_eq!(m, [1, 7]);
        let mut by_index: Vec<usize> = (0..s.len()).map(|i| s.at(i)).collect();
        by_index.sort();
        assert_eq!(by_index, [1, 7]);
        s.clear();
        assert!(s.is_empty() && s.insert(7));
    }
}
