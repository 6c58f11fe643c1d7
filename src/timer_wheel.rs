//! Deadlines of many connections, kept so that a poll with nothing due
//! costs one compare, however many connections there are: a hashed timer
//! wheel over slot numbers, sans I/O (deadlines and `now` in, due slots
//! out).
//!
//! Each slot has at most one entry, filed in the bucket of its deadline's
//! tick. The wheel is lazy: an entry may come due before the slot's real
//! deadline (the deadline moved later, or lay beyond the wheel's span);
//! the owner then files it again. An entry is never late by more than one
//! tick past its deadline, plus what the per-poll bound defers.
//!
//! Every list is an array of slot numbers allocated up front: filing,
//! moving and expiring allocate nothing.
#![forbid(unsafe_code)]

/// "No slot" in the intrusive lists.
const NIL: u32 = u32::MAX;

/// A hashed timer wheel over slots `0..slots`.
#[derive(Debug)]
pub(crate) struct TimerWheel {
    /// Ticks of `now` per bucket (at least 1).
    tick: i64,
    /// First slot of each bucket's list.
    heads: Vec<u32>,
    /// Per slot: the next and previous slot in its bucket's list.
    next: Vec<u32>,
    prev: Vec<u32>,
    /// Per slot: the bucket number (an absolute tick count) it is filed
    /// under, or `None`.
    filed: Vec<Option<i64>>,
    /// The first bucket not yet expired: every bucket before it is empty.
    cursor: i64,
    /// Whether the cursor has been set from a `now`.
    started: bool,
}

impl TimerWheel {
    /// A wheel for `slots` slots with buckets of `tick` ticks of `now`,
    /// spanning `buckets` buckets (a deadline further away is filed at the
    /// far end and comes back early, to be filed again).
    pub(crate) fn new(slots: usize, tick: i64, buckets: usize) -> Self {
        TimerWheel {
            tick: tick.max(1),
            heads: vec![NIL; buckets.max(2)],
            next: vec![NIL; slots],
            prev: vec![NIL; slots],
            filed: vec![None; slots],
            cursor: 0,
            started: false,
        }
    }

    /// A wheel for the heartbeats and timeouts of `slots` sessions: buckets
    /// of 1/32 of the shorter of the two intervals (how late one may come),
    /// spanning four such intervals.
    pub(crate) fn for_sessions(slots: usize, heartbeat_interval: i64, timeout: i64) -> Self {
        TimerWheel::new(slots, heartbeat_interval.min(timeout) / 32, 128)
    }

    fn bucket_of(&self, at: i64) -> usize {
        at.rem_euclid(self.heads.len() as i64) as usize
    }

    /// Files `slot` under `deadline` (replacing its entry, if any), at
    /// `now` (the first call starts the wheel there, so a deadline filed
    /// later but due sooner is not held back behind the first one).
    pub(crate) fn schedule(&mut self, slot: usize, deadline: i64, now: i64) {
        if !self.started {
            self.started = true;
            self.cursor = now.div_euclid(self.tick);
        }
        // Past deadlines go in the first bucket still to expire; far ones
        // at the end of the span.
        let span = self.heads.len() as i64 - 1;
        let at = deadline
            .div_euclid(self.tick)
            .clamp(self.cursor, self.cursor + span);
        if self.filed[slot] == Some(at) {
            return;
        }
        self.cancel(slot);
        let b = self.bucket_of(at);
        let head = self.heads[b];
        self.next[slot] = head;
        self.prev[slot] = NIL;
        if head != NIL {
            self.prev[head as usize] = slot as u32;
        }
        self.heads[b] = slot as u32;
        self.filed[slot] = Some(at);
    }

    /// Removes `slot`'s entry, if any.
    pub(crate) fn cancel(&mut self, slot: usize) {
        let Some(at) = self.filed[slot].take() else {
            return;
        };
        let (n, p) = (self.next[slot], self.prev[slot]);
        if p == NIL {
            let b = self.bucket_of(at);
            self.heads[b] = n;
        } else {
            self.next[p as usize] = n;
        }
        if n != NIL {
            self.prev[n as usize] = p;
        }
        self.next[slot] = NIL;
        self.prev[slot] = NIL;
    }

    /// Whether a call to [`expire`](Self::expire) at `now` has anything
    /// to do: one compare.
    #[inline(always)]
    pub(crate) fn due(&self, now: i64) -> bool {
        self.started && now.div_euclid(self.tick) > self.cursor
    }

    /// Hands `f` the slots of every bucket whose tick has passed at `now`
    /// (their entries removed: `f` files them again), at most `max` slots
    /// in all; the rest stay for the next call.
    pub(crate) fn expire(&mut self, now: i64, max: usize, mut f: impl FnMut(usize)) {
        let upto = now.div_euclid(self.tick);
        let mut given = 0;
        // A bucket at a time, at most one lap of the wheel per call: after
        // a long pause the empty buckets are skipped in one step.
        let lap = self.heads.len() as i64;
        if upto - self.cursor > lap {
            // Every bucket holds only entries filed before `upto - lap`:
            // expire them all in this lap.
            self.cursor = self.cursor.max(upto - lap);
        }
        while self.cursor < upto {
            let b = self.bucket_of(self.cursor);
            while self.heads[b] != NIL {
                if given == max {
                    return;
                }
                let slot = self.heads[b] as usize;
                self.cancel(slot);
                given += 1;
                f(slot);
            }
            self.cursor += 1;
        }
    }

    /// When [`expire`](Self::expire) next has something to hand out:
    /// the end of the first bucket with an entry (a look at each bucket
    /// of the span, at most: for a part about to sleep, not for a poll).
    /// `None` when the wheel is empty.
    pub(crate) fn next_due(&self) -> Option<i64> {
        if !self.started {
            return None;
        }
        let lap = self.heads.len() as i64;
        (self.cursor..self.cursor + lap)
            .find(|&at| self.heads[self.bucket_of(at)] != NIL)
            .map(|at| (at + 1).saturating_mul(self.tick))
    }

    /// Whether `slot` has an entry.
    #[cfg(test)]
    pub(crate) fn is_filed(&self, slot: usize) -> bool {
        self.filed[slot].is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_due_is_the_end_of_the_first_bucket_with_an_entry() {
        let mut w = TimerWheel::new(4, 10, 8);
        assert_eq!(w.next_due(), None);
        w.schedule(0, 57, 3);
        w.schedule(1, 35, 3);
        assert_eq!(w.next_due(), Some(40), "35 is in bucket 3, due from 40");
        let mut got = Vec::new();
        w.expire(39, 10, |s| got.push(s));
        assert!(got.is_empty(), "not before");
        w.expire(40, 10, |s| got.push(s));
        assert_eq!(got, [1]);
        assert_eq!(w.next_due(), Some(60));
        w.cancel(0);
        assert_eq!(w.next_due(), None);
    }

    fn expired(w: &mut TimerWheel, now: i64, max: usize) -> Vec<usize> {
        let mut v = Vec::new();
        w.expire(now, max, |s| v.push(s));
        v.sort();
        v
    }

    #[test]
    fn a_slot_comes_due_within_a_tick_of_its_deadline() {
        let mut w = TimerWheel::new(8, 10, 16);
        w.schedule(3, 105, 0);
        w.schedule(5, 131, 0);
        assert!(expired(&mut w, 109, 100).is_empty());
        assert!(!w.due(109), "caught up: one compare until the next tick");
        assert!(w.due(110));
        assert_eq!(expired(&mut w, 110, 100), [3]);
        assert!(!w.is_filed(3) && w.is_filed(5));
        assert_eq!(expired(&mut w, 139, 100), []);
        assert_eq!(expired(&mut w, 140, 100), [5]);
        assert!(!w.due(1000) || expired(&mut w, 1000, 100).is_empty());
    }

    #[test]
    fn a_deadline_filed_after_a_later_one_is_not_held_back() {
        // The first deadline filed is a heartbeat interval away; one filed
        // next is due at once: it comes due at the next tick, not with the
        // first.
        let mut w = TimerWheel::new(4, 10, 512);
        w.schedule(0, 3_000, 1_000);
        w.schedule(1, 1_005, 1_000);
        assert_eq!(expired(&mut w, 1_010, 100), [1]);
        assert_eq!(expired(&mut w, 2_990, 100), []);
        assert_eq!(expired(&mut w, 3_010, 100), [0]);
    }

    #[test]
    fn rescheduling_moves_the_one_entry_and_cancel_removes_it() {
        let mut w = TimerWheel::new(4, 1, 8);
        w.schedule(0, 5, 0);
        w.schedule(1, 5, 0);
        w.schedule(2, 5, 0);
        w.schedule(1, 7, 0); // moved
        w.cancel(2);
        w.cancel(2); // twice is fine
        assert_eq!(expired(&mut w, 6, 100), [0]);
        assert_eq!(expired(&mut w, 8, 100), [1]);
        assert_eq!(expired(&mut w, 100, 100), []);
    }

    #[test]
    fn far_and_past_deadlines_come_back_early_not_late() {
        let mut w = TimerWheel::new(4, 10, 4);
        w.schedule(0, 0, 0);
        // Beyond the span (3 buckets ahead): filed at its end, due early.
        w.schedule(1, 1000, 0);
        assert_eq!(expired(&mut w, 10, 100), [0]);
        w.schedule(0, 5, 0); // in the past: due at the next expiry
        assert_eq!(expired(&mut w, 20, 100), [0]);
        assert_eq!(expired(&mut w, 40, 100), [1], "the far one, early");
        // After a long pause every entry comes due in one call.
        w.schedule(2, 45, 0);
        w.schedule(3, 51, 0);
        assert_eq!(expired(&mut w, 10_000, 100), [2, 3]);
    }

    #[test]
    fn expiry_is_bounded_per_call_and_resumes() {
        let mut w = TimerWheel::new(100, 1, 8);
        for s in 0..100 {
            w.schedule(s, 3, 0);
        }
        let mut all = Vec::new();
        for _ in 0..5 {
            let got = expired(&mut w, 10, 30);
            assert!(got.len() <= 30);
            all.extend(got);
        }
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert!(!w.due(10));
    }

    #[test]
    fn a_model_of_many_deadlines() {
        // Random schedules, cancels and expiries against a model: a slot
        // comes due at the first expiry past the tick of its deadline (or
        // of the last expiry, for a deadline already past when filed), or
        // early at the end of the span, and then its owner files it again.
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let (slots, tick, buckets) = (64, 10i64, 32i64);
        let mut w = TimerWheel::new(slots, tick, buckets as usize);
        // Per slot: its deadline and the tick it is due after.
        let mut model: Vec<Option<(i64, i64)>> = vec![None; slots];
        let (mut now, mut cursor) = (0i64, 0i64);
        w.schedule(0, 0, 0);
        model[0] = Some((0, 0));
        let file = |d: i64, cursor: i64| (d.div_euclid(tick)).clamp(cursor, cursor + buckets - 1);
        for _ in 0..20_000 {
            match rand(4) {
                0 | 1 => {
                    let s = rand(slots as u64) as usize;
                    let d = now + rand(600) as i64 - 50;
                    w.schedule(s, d, 0);
                    model[s] = Some((d, file(d, cursor)));
                }
                2 => {
                    let s = rand(slots as u64) as usize;
                    w.cancel(s);
                    model[s] = None;
                }
                _ => {
                    now += rand(40) as i64;
                    let upto = now.div_euclid(tick);
                    let mut got = Vec::new();
                    w.expire(now, usize::MAX, |s| got.push(s));
                    got.sort();
                    let want: Vec<usize> = (0..slots)
                        .filter(|&s| model[s].is_some_and(|(_, at)| at < upto))
                        .collect();
                    assert_eq!(got, want, "at {now}");
                    cursor = cursor.max(upto);
                    for s in got {
                        let (d, _) = model[s].take().unwrap();
                        if d.div_euclid(tick) >= upto {
                            // Early (it lay beyond the span): filed again.
                            w.schedule(s, d, 0);
                            model[s] = Some((d, file(d, cursor)));
                        }
                    }
                }
            }
        }
    }
}
