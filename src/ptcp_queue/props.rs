//! Property tests of the send queue against a simple model (a
//! `VecDeque`), including the wrap of u32 sequence numbers.

use std::collections::VecDeque;

use proptest::prelude::*;

use super::{AckCounter, AckError, PtcpQueue, FILE_HEADER_SIZE};
use crate::sys::HeapRegion;
use crate::wire::{padded, MsgHeader};

fn payload(seq: u32, len: usize) -> Vec<u8> {
    (0..len).map(|j| (seq as usize * 7 + j) as u8).collect()
}

/// A fresh ptcp region whose first sequence number is `seq0`, written
/// field by field from the documented file format.
fn ptcp_region(cap: usize, seq0: u32) -> HeapRegion {
    let mut r = HeapRegion::new(FILE_HEADER_SIZE + cap);
    let m = r.as_mut_slice();
    m[..8].copy_from_slice(b"TCPSHMPQ");
    m[8..12].copy_from_slice(&1u32.to_le_bytes());
    m[12..16].copy_from_slice(&((cap / 8) as u32).to_le_bytes());
    m[40..44].copy_from_slice(&seq0.to_le_bytes()); // slot 0: read_seq
    r
}

#[derive(Clone, Debug)]
enum POp {
    Push(usize),
    Send(usize),
    Ack(u32),
    LoginAck(u32),
    Reopen,
    /// The receive side consumed this many more messages (the local ack
    /// only grows).
    Consume(u32),
}

fn pop_strategy() -> impl Strategy<Value = POp> {
    prop_oneof![
        4 => (0usize..120).prop_map(POp::Push),
        3 => (0usize..200).prop_map(POp::Send),
        3 => (0u32..6).prop_map(POp::Ack),
        1 => (0u32..6).prop_map(POp::LoginAck),
        1 => Just(POp::Reopen),
        1 => (0u32..1000).prop_map(POp::Consume),
    ]
}

struct PModel {
    msgs: VecDeque<(u32, u16, Vec<u8>, u32)>, // seq, type, payload, stamped ack
    start: u32,
    next: u32,
    send_pos: usize, // bytes sent from the first held message
    local_ack: u32,
}

impl PModel {
    fn bytes(&self) -> usize {
        self.msgs.iter().map(|m| padded(8 + m.2.len())).sum()
    }
    fn bytes_of_first(&self, n: usize) -> usize {
        self.msgs
            .iter()
            .take(n)
            .map(|m| padded(8 + m.2.len()))
            .sum()
    }
}

type Q = PtcpQueue<HeapRegion>;

fn check_ptcp(q: &Q, m: &PModel) {
    assert_eq!(q.seq_range(), (m.start, m.next));
    assert_eq!(q.check().unwrap(), (m.start, m.next));
    assert_eq!(q.local_ack(), m.local_ack);
    let s = q.sendable();
    assert_eq!(s.len(), m.bytes() - m.send_pos);
    // Decode the sendable bytes that start at a message boundary.
    let mut skip = m.send_pos;
    let mut off = 0usize;
    for (seq, t, p, ack) in &m.msgs {
        let fp = padded(8 + p.len());
        if skip >= fp {
            skip -= fp;
            continue;
        }
        if skip > 0 {
            off += fp - skip;
            skip = 0;
            continue;
        }
        let h = MsgHeader::decode(&s[off..]).unwrap();
        assert_eq!(
            (h.size as usize, h.msg_type, h.ack_seq),
            (8 + p.len(), *t, *ack),
            "seq {seq}"
        );
        assert_eq!(&s[off + 8..off + 8 + p.len()], &p[..]);
        off += fp;
    }
}

fn run_ptcp(cap: usize, seq0: u32, ops: Vec<POp>) {
    let (mut q, mut ack): (Q, AckCounter<HeapRegion>) =
        PtcpQueue::open(ptcp_region(cap, seq0)).unwrap();
    let mut m = PModel {
        msgs: VecDeque::new(),
        start: seq0,
        next: seq0,
        send_pos: 0,
        local_ack: 0,
    };
    for op in ops {
        match op {
            POp::Push(len) => {
                let t = (m.next % 1000) as u16 + 3;
                let fits = m.bytes() + padded(8 + len) <= cap;
                let pl = payload(m.next, len);
                match q.alloc(t, len) {
                    Some(buf) => {
                        assert!(fits, "alloc succeeded beyond capacity");
                        buf.copy_from_slice(&pl);
                        q.push();
                        m.msgs.push_back((m.next, t, pl, m.local_ack));
                        m.next = m.next.wrapping_add(1);
                    }
                    None => assert!(!fits, "alloc refused with room: {} + {len}", m.bytes()),
                }
            }
            POp::Send(n) => {
                let n = n.min(q.sendable().len());
                q.mark_sent(n);
                m.send_pos += n;
            }
            POp::Ack(k) | POp::LoginAck(k) => {
                let login = matches!(op, POp::LoginAck(_));
                let a = m.start.wrapping_add(k);
                let r = if login { q.login_ack(a) } else { q.ack(a) };
                let k = k as usize;
                if k == 0 {
                    assert_eq!(r, Ok(()));
                } else if k > m.msgs.len() {
                    assert_eq!(
                        r,
                        Err(AckError::BeyondPushed {
                            ack: a,
                            seq_end: m.next
                        })
                    );
                } else if !login && m.bytes_of_first(k) > m.send_pos {
                    assert_eq!(r, Err(AckError::BeyondSent { ack: a }));
                } else {
                    assert_eq!(r, Ok(()));
                    let dropped = m.bytes_of_first(k);
                    m.msgs.drain(..k);
                    m.start = a;
                    m.send_pos = m.send_pos.saturating_sub(dropped);
                }
                if login && r.is_ok() {
                    m.send_pos = 0;
                }
            }
            POp::Reopen => {
                (q, ack) = PtcpQueue::open(q.into_region(ack)).unwrap();
                m.send_pos = 0;
            }
            POp::Consume(k) => {
                m.local_ack = m.local_ack.wrapping_add(k);
                ack.set(m.local_ack);
            }
        }
        check_ptcp(&q, &m);
    }
}

proptest! {
    // Not under Miri: the model runs thousands of operations per case.
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    #[cfg_attr(miri, ignore = "slow under Miri")]
    fn ptcp_queue_matches_model(ops in prop::collection::vec(pop_strategy(), 1..300)) {
        run_ptcp(512, 0, ops);
    }

    #[test]
    #[cfg_attr(miri, ignore = "slow under Miri")]
    fn ptcp_queue_sequence_numbers_wrap(ops in prop::collection::vec(pop_strategy(), 1..300)) {
        run_ptcp(256, u32::MAX - 4, ops);
    }
}
