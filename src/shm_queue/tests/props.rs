//! Property tests of the ring against a simple model (a `VecDeque`),
//! on v1 and on the fast path, across the wrap of the ring and of its u32
//! indices.

use std::collections::VecDeque;

use proptest::prelude::*;

use crate::shm_queue::{heap_queue_in, BLOCK, TRAILER};
use crate::sys::HeapRegion;

fn payload(seq: u32, len: usize) -> Vec<u8> {
    (0..len).map(|j| (seq as usize * 7 + j) as u8).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    #[cfg_attr(miri, ignore = "slow under Miri")]
    fn shm_queue_matches_model(
        ops in prop::collection::vec(prop_oneof![3 => (0usize..300).prop_map(Some), 1 => (300usize..504).prop_map(Some), 3 => Just(None)], 1..400),
        start in prop_oneof![Just(0u32), Just(u32::MAX - 9), any::<u32>()],
    ) {
        run_shm(512, start, ops, false);
    }

    /// The same model on the fast path: the writer keeps one block free.
    #[test]
    #[cfg_attr(miri, ignore = "slow under Miri")]
    fn shm_queue_fast_path_matches_model(
        ops in prop::collection::vec(prop_oneof![3 => (0usize..300).prop_map(Some), 1 => (300usize..440).prop_map(Some), 3 => Just(None)], 1..400),
        start in prop_oneof![Just(0u32), Just(u32::MAX - 9), any::<u32>()],
    ) {
        run_shm(512, start, ops, true);
    }
}

/// The shm model: published messages in order and the ring positions by
/// the protocol's rule (a message never straddles the end of the ring; on
/// the fast path one block stays free).
fn run_shm(cap: usize, start: u32, ops: Vec<Option<usize>>, fast: bool) {
    let mut region = HeapRegion::new(cap + TRAILER);
    // Start the indices at `start` to cross the u32 wrap.
    for off in [cap, cap + 4, cap + 128] {
        region.as_mut_slice()[off..off + 4].copy_from_slice(&start.to_le_bytes());
    }
    let (mut w, mut r) = heap_queue_in(region).unwrap();
    w.set_fast_path(fast);
    r.set_fast_path(fast);
    let blk_cnt = (cap / BLOCK) as u32;
    let limit = blk_cnt - fast as u32;
    let (mut widx, mut ridx) = (start, start);
    let mut q: VecDeque<(u16, Vec<u8>, u32)> = VecDeque::new(); // type, payload, end idx
    let mut n = 0u32;
    for op in ops {
        match op {
            Some(len) => {
                let blks = (8 + len).div_ceil(BLOCK) as u32;
                let to_end = blk_cnt - (widx % blk_cnt);
                let begin = if blks > to_end {
                    widx.wrapping_add(to_end)
                } else {
                    widx
                };
                let end = begin.wrapping_add(blks);
                let fits = end.wrapping_sub(ridx) <= limit;
                let pl = payload(n, len);
                match w.alloc(n as u16, len) {
                    Some(b) => {
                        assert!(fits, "alloc beyond capacity");
                        b.copy_from_slice(&pl);
                        w.push();
                        q.push_back((n as u16, pl, end));
                        widx = end;
                        n += 1;
                    }
                    None => {
                        assert!(!fits, "alloc refused with room");
                        // A rewinding message that does not fit publishes
                        // the wrap marker alone when the tail is free.
                        if begin != widx && begin.wrapping_sub(ridx) <= limit {
                            widx = begin;
                        }
                        // Liveness: on an empty queue, a message that fits
                        // the ring is accepted at the latest on the retry.
                        if q.is_empty() && 8 + len <= limit as usize * BLOCK {
                            assert!(r.front().unwrap().is_none(), "the queue is empty");
                            ridx = widx;
                            let b = w
                                .alloc(n as u16, len)
                                .expect("empty queue refused a message twice");
                            b.copy_from_slice(&pl);
                            w.push();
                            let end = widx.wrapping_add(blks);
                            q.push_back((n as u16, pl, end));
                            widx = end;
                            n += 1;
                        }
                    }
                }
            }
            None => match (r.front().unwrap(), q.pop_front()) {
                // The reader skipped any wrap marker and released it.
                (None, None) => ridx = widx,
                (Some((t, p)), Some((mt, mp, end))) => {
                    assert_eq!((t, p), (mt, &mp[..]));
                    r.pop();
                    ridx = end;
                }
                (got, want) => panic!("front {got:?}, model {want:?}"),
            },
        }
    }
}
