//! The persisted TCP queue file, fuzzed as a peer and a crash leave it:
//! opened from bytes the input shapes, then used in the order the input
//! chooses, against a model of what it must hold.

use std::collections::VecDeque;

use super::Input;
use crate::ptcp_queue::{PtcpQueue, FILE_HEADER_SIZE, MAGIC, OFF_BLKS, OFF_VERSION, VERSION};
use crate::sys::HeapRegion;
use crate::wire::{padded, MsgHeader, HEADER_SIZE};

/// One message the model says the queue holds: its sequence number, its
/// frame size padded to 8, and (for messages pushed here) its type and
/// the byte its payload is filled with.
#[derive(Clone, Copy, Debug)]
struct Held {
    seq: u32,
    padded: usize,
    content: Option<(u16, u8)>,
}

/// What the queue must hold: the messages from the oldest unacknowledged
/// one, one past the newest, and how many bytes of them were sent.
struct Model {
    held: VecDeque<Held>,
    end: u32,
    sent: usize,
}

impl Model {
    /// The oldest unacknowledged sequence number.
    fn start(&self) -> u32 {
        self.held.front().map_or(self.end, |h| h.seq)
    }

    fn bytes(&self) -> usize {
        self.held.iter().map(|h| h.padded).sum()
    }

    /// `ack` as the protocol defines it: older than the oldest held is
    /// ignored; beyond the newest pushed, or (`only_sent`) covering bytes
    /// not completely sent, is refused; else the messages below it go.
    fn ack(&mut self, ack: u32, only_sent: bool) -> bool {
        let n = ack.wrapping_sub(self.start());
        if n as i32 <= 0 {
            return true;
        }
        if n as usize > self.held.len() {
            return false;
        }
        let covered: usize = self.held.iter().take(n as usize).map(|h| h.padded).sum();
        if only_sent && covered > self.sent {
            return false;
        }
        self.held.drain(..n as usize);
        self.sent = self.sent.saturating_sub(covered);
        true
    }
}

/// Checks the queue against the model: its range, its length, what is
/// left to send, and (after a rewind) every frame's size, type and
/// payload bytes for the messages pushed here.
fn check(q: &mut PtcpQueue<HeapRegion>, m: &Model) {
    assert_eq!(q.seq_range(), (m.start(), m.end), "sequence range");
    assert_eq!(q.len() as usize, m.held.len());
    assert_eq!(q.sendable().len(), m.bytes() - m.sent, "bytes left to send");
    q.check()
        .expect("a queue used by the rules stays consistent");
}

/// The frames of everything held, from a rewind (as after a login).
fn check_frames(q: &mut PtcpQueue<HeapRegion>, m: &mut Model) {
    q.login_ack(m.start())
        .expect("the oldest held is always a valid ack");
    m.sent = 0;
    let bytes = q.sendable();
    let mut at = 0;
    for h in &m.held {
        let hdr = MsgHeader::decode(&bytes[at..]).expect("a held frame");
        assert_eq!(hdr.padded_size(), h.padded, "size of message {}", h.seq);
        if let Some((t, fill)) = h.content {
            assert_eq!(hdr.msg_type, t, "type of message {}", h.seq);
            let payload = &bytes[at + HEADER_SIZE..at + hdr.size as usize];
            assert!(payload.iter().all(|&b| b == fill), "payload of {}", h.seq);
        }
        at += h.padded;
    }
    assert_eq!(at, bytes.len());
}

/// The persisted queue file, from bytes shaped by the input and then used
/// as the input says, against a model of what it must hold.
///
/// The first byte picks the capacity (8 to 128 blocks of 8 bytes); unless
/// its top bit is set, the file header's magic, version and capacity are
/// made to match, so the state slots, selector, local ack, compaction
/// progress and message area (the rest of the input) are what gets
/// checked (a consume intent's journal word included). Then up to 64
/// operations: alloc and push, alloc without push, batches (plain and
/// consuming),
/// partial sends, acks and login acks (older, fitting, beyond), a reopen
/// of the same bytes, and a restart at a sequence number near the wrap.
pub fn ptcp_open(data: &[u8]) {
    let mut inp = Input::new(data);
    let shape = inp.byte();
    let blks = 8 * (1 + usize::from(shape & 15));
    let size = FILE_HEADER_SIZE + blks * 8;
    let mut file = inp.bytes(size);
    if shape & 0x80 == 0 {
        file[..MAGIC.len()].copy_from_slice(MAGIC);
        file[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&VERSION.to_le_bytes());
        file[OFF_BLKS..OFF_BLKS + 4].copy_from_slice(&(blks as u32).to_le_bytes());
    }
    let Ok((mut q, mut ack)) = PtcpQueue::open(HeapRegion::with_contents(size, &file)) else {
        return;
    };
    let (start, end) = q.check().expect("open checked it");
    // The model starts from what the file holds (validated by open).
    q.login_ack(start).expect("the oldest held is a valid ack");
    let mut m = Model {
        held: VecDeque::new(),
        end,
        sent: 0,
    };
    let mut at = 0;
    for k in 0..end.wrapping_sub(start) {
        let h = MsgHeader::decode(&q.sendable()[at..]).expect("a held frame");
        m.held.push_back(Held {
            seq: start.wrapping_add(k),
            padded: h.padded_size(),
            content: None,
        });
        at += h.padded_size();
    }
    check(&mut q, &m);
    for _ in 0..64 {
        if inp.done() {
            break;
        }
        let op = inp.byte();
        match op % 10 {
            0 | 1 => {
                let len = usize::from(inp.byte()) % (blks * 8);
                let (t, fill) = (u16::from(op >> 3) + 1, inp.byte());
                if let Some(p) = q.alloc(t, len) {
                    assert_eq!(p.len(), len);
                    p.fill(fill);
                    if op % 10 == 0 {
                        q.push();
                        m.held.push_back(Held {
                            seq: m.end,
                            padded: padded(HEADER_SIZE + len),
                            content: Some((t, fill)),
                        });
                        m.end = m.end.wrapping_add(1);
                    }
                }
            }
            2 => {
                let n = usize::from(inp.byte());
                q.mark_sent(n);
                m.sent = (m.sent + n).min(m.bytes());
            }
            3 | 4 => {
                let a = m.start().wrapping_add(inp.seq());
                let a = if inp.byte() & 1 == 0 {
                    a
                } else {
                    a.wrapping_sub(3)
                };
                let only_sent = op % 10 == 3;
                let got = if only_sent { q.ack(a) } else { q.login_ack(a) };
                assert_eq!(got.is_ok(), m.ack(a, only_sent), "ack {a} ({only_sent})");
                if !only_sent && got.is_ok() {
                    m.sent = 0;
                }
            }
            5 => {
                // A reopen of the same bytes (a restart): the range stays,
                // and nothing is left marked as sent.
                let region = q.into_region(ack);
                (q, ack) = PtcpQueue::open(region).expect("reopens");
                m.sent = 0;
            }
            6 => check_frames(&mut q, &mut m),
            // A batch of up to 4 messages, committed plain or consuming
            // one to three messages (the local ack moves with them); one that does not
            // fit publishes nothing.
            8 | 9 => {
                q.batch_begin();
                let k = inp.byte() % 5;
                let mut added = Vec::new();
                for _ in 0..k {
                    let len = usize::from(inp.byte()) % (blks * 8);
                    let (t, fill) = (u16::from(inp.byte() >> 3) + 1, inp.byte());
                    match q.batch_alloc(t, len) {
                        Some(p) => {
                            p.fill(fill);
                            added.push(Held {
                                seq: 0,
                                padded: padded(HEADER_SIZE + len),
                                content: Some((t, fill)),
                            });
                        }
                        None => break,
                    }
                }
                if added.len() == usize::from(k) {
                    let consume = (op % 10 == 9).then_some((&mut ack, 1 + u32::from(op % 3)));
                    let c = q.batch_commit(consume).expect("its own counter");
                    assert_eq!(c.messages as usize, added.len());
                    for mut h in added {
                        h.seq = m.end;
                        m.held.push_back(h);
                        m.end = m.end.wrapping_add(1);
                    }
                }
            }
            _ => {
                let seq = u32::MAX - u32::from(inp.byte() % 8);
                q.restart_at(&mut ack, seq, inp.seq());
                m.held.clear();
                m.end = seq;
                m.sent = 0;
            }
        }
        check(&mut q, &m);
    }
    check_frames(&mut q, &mut m);
    let region = q.into_region(ack);
    let (again, _) = PtcpQueue::open(region).expect("reopens");
    assert_eq!(again.seq_range(), (m.start(), m.end));
}
