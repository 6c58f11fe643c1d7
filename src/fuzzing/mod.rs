//! Entry points for the fuzz targets in `fuzz/` and for their regression
//! tests (`tests/fuzz_inputs.rs`), and a hostile shared-memory peer for
//! tests. Each entry point takes arbitrary bytes and must neither panic
//! nor hang; none of this is part of the stable API.
//!
//! The entry points in `peers` drive the real server, client and TCP
//! session over loopback sockets and real queue files, the input choosing
//! what each peer does and when (a fake clock).

mod peers;
mod ptcp;
mod shm_group;
#[cfg(test)]
mod tests;

pub use self::peers::{client_login, server_login, session_conn};
pub use self::ptcp::ptcp_open;
pub use self::shm_group::shm_group;

use std::io::{self, Read};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::ptcp_queue::PtcpQueue;
use crate::session::{RecvBuf, ReloginGuard};
use crate::shm_queue::{self, ShmReader, ShmWriter, BLOCK, TRAILER, TRAILER_WORDS};
use crate::sys::{HeapRegion, Region};
use crate::wire::{
    u32_at, Assembler, FragmentError, Login, LoginResponse, MsgHeader, Name, Step, FRAGMENT_HEADER,
    NAME_SIZE,
};

/// Frame decoding: headers, logins, responses, names. Whatever decodes
/// must encode back to what decodes the same.
pub fn frames(data: &[u8]) {
    let _ = MsgHeader::decode(data);
    if let Ok((h, l)) = Login::<u8>::decode(data) {
        let again = Login::<u8>::decode(&l.encode(h.ack_seq)).expect("re-decodes");
        assert_eq!(again, (h, l));
        let _ = Name::from_wire(&l.client_name);
        let _ = Name::from_wire_opt(&l.last_server_name);
    }
    if let Ok((h, r)) = LoginResponse::<u8>::decode(data) {
        let again = LoginResponse::<u8>::decode(&r.encode(h.ack_seq)).expect("re-decodes");
        assert_eq!(again, (h, r));
        let _ = r.error_text();
    }
    if let Ok((_, l)) = Login::<[u8; 13]>::decode(data) {
        let _ = l.user_data;
    }
    if data.len() >= NAME_SIZE {
        let mut f = [0u8; NAME_SIZE];
        f.copy_from_slice(&data[..NAME_SIZE]);
        if let Ok(n) = Name::from_wire(&f) {
            assert_eq!(Name::new(n.as_str()), Ok(n));
        }
    }
}

/// Fragments of large messages from a peer: byte 0 sets the largest
/// message taken (a multiple of 64, up to 16,320 bytes); then each
/// fragment payload is a length byte and that many bytes. What the
/// assembler makes of each must be what the layout (`docs/protocol.md`,
/// "Messages over 64 KiB") says, worked out here from the layout alone:
/// a refused fragment changes nothing, an orphan is a piece not at 0 with
/// nothing in progress, and a whole message is exactly its pieces.
pub fn fragments(data: &[u8]) {
    let Some((&m, mut rest)) = data.split_first() else {
        return;
    };
    let max = usize::from(m) * 64;
    let mut asm = Assembler::new(max);
    // The message in progress: length, type, bytes so far.
    let mut model: Option<(usize, u16, Vec<u8>)> = None;
    while let Some((&n, tail)) = rest.split_first() {
        let n = usize::from(n).min(tail.len());
        let (p, tail) = tail.split_at(n);
        rest = tail;
        let want = expected_fragment(p, max, &model);
        assert_eq!(asm.take(p), want, "fragment {p:?}");
        if let Ok(step) = want {
            if step == Step::Orphan {
                continue;
            }
            let (total, t) = (u32_at(p, 0) as usize, u16::from_le_bytes([p[8], p[9]]));
            let m = model.get_or_insert_with(|| (total, t, Vec::new()));
            m.2.extend_from_slice(&p[FRAGMENT_HEADER..]);
            if step == Step::Complete {
                assert_eq!(asm.message(), (m.1, &m.2[..]));
                asm.reset();
                model = None;
            }
        }
    }
}

/// What the layout says taking fragment payload `p` does, given the
/// message in progress.
fn expected_fragment(
    p: &[u8],
    max: usize,
    model: &Option<(usize, u16, Vec<u8>)>,
) -> Result<Step, FragmentError> {
    if p.len() <= FRAGMENT_HEADER {
        return Err(FragmentError::Bad);
    }
    let (total, offset) = (u32_at(p, 0), u32_at(p, 4) as usize);
    let t = u16::from_le_bytes([p[8], p[9]]);
    if p[10] != 0 || p[11] != 0 || t == 0 || t >= 0xfff0 {
        return Err(FragmentError::Bad);
    }
    let piece = p.len() - FRAGMENT_HEADER;
    let got = match model {
        None if offset != 0 => return Ok(Step::Orphan),
        None if total as usize > max => return Err(FragmentError::TooLarge { len: total, max }),
        None => 0,
        Some((mt, mtype, so_far)) => {
            if total as usize != *mt || t != *mtype || offset != so_far.len() {
                return Err(FragmentError::Bad);
            }
            so_far.len()
        }
    };
    if got + piece > total as usize {
        return Err(FragmentError::Bad);
    }
    Ok(if got + piece == total as usize {
        Step::Complete
    } else {
        Step::More
    })
}

/// A reader that hands out `data` in chunks whose sizes come from the data.
struct Chunks<'a> {
    data: &'a [u8],
    pos: usize,
    step: usize,
}

impl Read for Chunks<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.data.len() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.step).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        self.step = self.step % 97 + 1 + (self.data[self.pos - 1] as usize % 13);
        Ok(n)
    }
}

/// The peer's name in `session_recv`: its login frame after login is a
/// violation (the re-login guard).
const PEER_NAME: [u8; NAME_SIZE] = *b"peer\0\0\0\0\0\0\0\0\0\0\0\0";

/// What an honest receiver makes of a byte stream after login, worked
/// out here from the protocol alone: the application messages (type,
/// payload) up to the first violation, and whether there is one. The
/// peer may ack up to `start + sent`; a login frame from the peer named
/// "peer" is a violation after login; frames over `max` bytes are refused.
fn expected_stream(data: &[u8], start: u32, sent: u32, max: usize) -> (Vec<(u16, Vec<u8>)>, bool) {
    let (mut out, mut at) = (Vec::new(), 0);
    // Acks as the C++ queue and PROTOCOL.md take them: one not newer than
    // the oldest held is ignored; else one past the newest sent is a
    // violation; else it drops what it covers.
    let (mut oldest, end) = (start, start.wrapping_add(sent));
    while data.len() - at >= 8 {
        let Ok(h) = MsgHeader::decode(&data[at..]) else {
            return (out, true); // size below 8
        };
        let padded = h.padded_size();
        let newer = h.ack_seq.wrapping_sub(oldest);
        let beyond = newer as i32 > 0 && newer > end.wrapping_sub(oldest);
        if padded > max || beyond {
            return (out, true);
        }
        if newer as i32 > 0 {
            oldest = h.ack_seq;
        }
        if data.len() - at < padded {
            break;
        }
        let frame = &data[at..at + h.size as usize];
        let off = Login::<u8>::CLIENT_NAME_OFFSET;
        if h.msg_type == 1
            && h.size as usize == Login::<u8>::SIZE
            && frame[off..off + NAME_SIZE] == PEER_NAME
        {
            return (out, true);
        }
        if h.msg_type != 0 {
            out.push((h.msg_type, frame[8..].to_vec()));
        }
        at += padded;
    }
    (out, false)
}

/// The TCP session's receive path after a login: bytes from the peer in
/// arbitrary pieces, against a send queue whose sent count (0 to 39) and
/// first sequence number (0, or just before the u32 wrap) the input
/// picks, so acks up to, and beyond, what was sent reach the queue. What
/// is delivered must be exactly the application messages an honest
/// receiver finds in the stream (worked out from the protocol alone), in order, byte for
/// byte, up to the first violation, which must close the session; the
/// queue must drop exactly what was acked.
pub fn session_recv(data: &[u8]) {
    let (sent, wrap) = match data {
        [a, b, ..] => (u32::from(*a % 40), b & 1 == 1),
        _ => (0, false),
    };
    let stream = data.get(2..).unwrap_or(&[]);
    let start = if wrap { u32::MAX - 4 } else { 0 };
    let (mut q, mut ack) = PtcpQueue::heap(1024);
    q.restart_at(&mut ack, start, 0);
    for i in 0..sent {
        q.alloc(1, 8).expect("room")[0] = i as u8;
        q.push();
    }
    let n = q.sendable().len();
    q.mark_sent(n);
    let guard = ReloginGuard {
        msg_type: 1,
        size: Login::<u8>::SIZE as u16,
        name_off: Login::<u8>::CLIENT_NAME_OFFSET,
        name: PEER_NAME,
    };
    let max = 512;
    let (expected, violation) = expected_stream(stream, start, sent, max);
    let mut buf = RecvBuf::new(64, max);
    let mut src = Chunks {
        data: stream,
        pos: 0,
        step: 1 + data.first().map_or(0, |b| *b as usize % 64),
    };
    let mut got: Vec<(u16, Vec<u8>)> = Vec::new();
    let mut closed = false;
    // Every call reads at most one chunk; bound the loop by the input.
    for round in 0..=stream.len() * 2 + 8 {
        if let Some(space) = buf.space() {
            let n = crate::sys::socket::read_some(&mut src, space).unwrap_or(0);
            if buf.received(n, Some(&mut q), Some(&guard)).is_err() {
                closed = true;
                break;
            }
        }
        // Consume some of what arrived (all of it on even rounds).
        let mut k = 0;
        while let Some((t, len)) = buf.front() {
            got.push((t, buf.front_payload(len as usize).to_vec()));
            buf.pop();
            k += 1;
            if round % 2 == 1 && k == 2 {
                break;
            }
        }
        if src.pos >= stream.len() && buf.front().is_none() && buf.space().is_some() {
            break;
        }
    }
    assert!(
        got.len() <= expected.len() && got[..] == expected[..got.len()],
        "delivered {got:?}, expected {expected:?}"
    );
    if !violation {
        assert!(!closed, "closed an honest stream");
        assert_eq!(got, expected, "not everything delivered");
    }
    let (s, e) = q.seq_range();
    assert_eq!(e, start.wrapping_add(sent));
    assert!(e.wrapping_sub(s) <= sent);
}

/// The shm queue reader over arbitrary memory: the first 8 bytes are the
/// write and read indices (so short inputs reach every check); byte 8, if
/// odd, announces the fast path from the read index once the reader's
/// session has started (so the reader waits on stamps, which the input
/// chose), and with bit 1 set the next 16 bytes are the writer's and the
/// reader's commit records (which set the counts a restarted reader takes
/// up); the rest fills the blocks. Memory changes between reads too: each
/// 9-byte op of the input's tail rewrites a header word, or (top bit of
/// its first byte) a trailer word, as the reader goes.
pub fn shm_reader(data: &[u8]) {
    let cap = 1024;
    let mut mem = vec![0u8; cap + TRAILER];
    let idx = |o: usize| {
        let mut b = [0u8; 4];
        for (i, x) in b.iter_mut().enumerate() {
            *x = data.get(o + i).copied().unwrap_or(0);
        }
        b
    };
    mem[cap..cap + 4].copy_from_slice(&idx(0)); // write_idx
    mem[cap + 128..cap + 132].copy_from_slice(&idx(4)); // read_idx
    let flags = data.get(8).copied().unwrap_or(0);
    let announce = flags & 1 == 1;
    let records = flags & 2 == 2;
    let word = |o: usize| {
        u64::from_le_bytes(std::array::from_fn(|i| {
            data.get(o + i).copied().unwrap_or(0)
        }))
    };
    let body = data.get(if records { 25 } else { 9 }..).unwrap_or(&[]);
    let n = body.len().min(cap);
    mem[..n].copy_from_slice(&body[..n]);
    if records {
        mem[cap + 64..cap + 72].copy_from_slice(&word(9).to_le_bytes());
        mem[cap + 192..cap + 200].copy_from_slice(&word(17).to_le_bytes());
    }
    let (_w, mut r, s) = hostile_heap_queue(HeapRegion::with_contents(mem.len(), &mem));
    if announce {
        let from = u32::from_le_bytes(idx(4));
        s.trailer(2, (0x7473_6631u64 << 32) | from as u64);
    }
    let mut later = body.get(cap..).unwrap_or(&[]).chunks(9);
    for _ in 0..64 {
        let idle = match r.front() {
            Ok(Some((t, p))) => {
                let _ = p.iter().fold(0u8, |a, b| a ^ b);
                // Read ahead as a large message's receiver does, through
                // what the input made of the ring (at most four).
                if t & 1 == 1 {
                    let mut at = r.current_end();
                    for _ in 0..4 {
                        match at.map(|a| r.peek(a)) {
                            Some(Ok(Some((_, end, p)))) => {
                                let _ = p.iter().fold(0u8, |a, b| a ^ b);
                                at = Some(end);
                            }
                            _ => break,
                        }
                    }
                }
                r.pop();
                false
            }
            Ok(None) => true,
            Err(_) => return,
        };
        match later.next() {
            Some(op) => {
                let v = u64::from_le_bytes(std::array::from_fn(|i| {
                    op.get(1 + i).copied().unwrap_or(0)
                }));
                if op[0] & 0x80 != 0 {
                    s.trailer(usize::from(op[0] & 0x7f), v);
                } else {
                    // SAFETY: between queue operations no payload slice lives.
                    unsafe { s.header(u32::from(op[0]), v) };
                }
            }
            None if idle => return,
            None => {}
        }
    }
}

/// A hostile peer of an in-process shm queue: it rewrites the words of the
/// ring that the two ends read and write atomically (block headers and
/// trailer words), as another process could at any time.
#[derive(Debug)]
pub(crate) struct Scribbler {
    region: Arc<HeapRegion>,
    capacity: usize,
}

/// The two ends of a heap queue over `region` (any content), and a
/// [`Scribbler`] over the same memory.
///
/// # Panics
/// If `region` cannot hold a queue (a caller bug).
pub(crate) fn hostile_heap_queue(
    region: HeapRegion,
) -> (ShmWriter<HeapRegion>, ShmReader<HeapRegion>, Scribbler) {
    let (w, r) = shm_queue::heap_queue_in(region).expect("a queue region");
    let region = w.memory().shared_region();
    let capacity = w.capacity();
    (w, r, Scribbler { region, capacity })
}

impl Scribbler {
    /// Blocks in the ring.
    pub(crate) fn blocks(&self) -> u32 {
        (self.capacity / BLOCK) as u32
    }

    /// Stores `v` into trailer word `which` (modulo the six: write_idx,
    /// the writer's read cache, its fast-path announcement, its record,
    /// read_idx, the reader's record), with the access size the queue uses for it. Always sound:
    /// the queue reaches these words only atomically.
    pub(crate) fn trailer(&self, which: usize, v: u64) {
        let (off, size) = TRAILER_WORDS[which % TRAILER_WORDS.len()];
        let p = self.region.base().wrapping_add(self.capacity + off);
        if size == 4 {
            // SAFETY: a 4-aligned word of the trailer, inside the region the
            // Arc keeps alive, accessed by the queue only as an AtomicU32.
            unsafe { AtomicU32::from_ptr(p.cast()) }.store(v as u32, Ordering::Relaxed);
        } else {
            // SAFETY: as above, an 8-aligned record word (AtomicU64).
            unsafe { AtomicU64::from_ptr(p.cast()) }.store(v, Ordering::Relaxed);
        }
    }

    /// Stores `v` into the header word of block `block` (modulo the block
    /// count).
    ///
    /// # Safety
    /// No payload slice of either end may cover that block's first 8
    /// bytes meanwhile (a header inside a multi-block message's payload):
    /// call it between operations, or with single-block messages only.
    /// Another process can do this at any time; in one process it would be
    /// a data race on those payload bytes.
    pub(crate) unsafe fn header(&self, block: u32, v: u64) {
        let b = block % self.blocks();
        let p = self.region.base().wrapping_add(b as usize * BLOCK);
        // SAFETY: an 8-aligned header word inside the blocks; the queue
        // reaches header words only atomically, and the caller rules out a
        // payload slice over it.
        unsafe { AtomicU64::from_ptr(p.cast()) }.store(v, Ordering::Relaxed);
    }
}

/// Lets `data` pick a scribble: a trailer word or a block header.
fn scribble(s: &Scribbler, op: &[u8]) {
    let v = u64::from_le_bytes(std::array::from_fn(|i| op.get(2 + i).copied().unwrap_or(0)));
    let which = op.get(1).copied().unwrap_or(0);
    if which & 0x80 == 0 {
        s.trailer(which as usize, v);
    } else {
        // SAFETY: called between queue operations; no payload slice lives.
        unsafe { s.header(u32::from(which & 0x7f), v) };
    }
}

/// The writer (and reader) side of the shm ring with a hostile peer
/// rewriting headers and indices (and the intent record) between every
/// operation: the input picks the operations (messages, batches, commits
/// that consume, holds, a restart's recovery), sizes and scribbles. Every payload handed out has the
/// length asked for and lies inside the ring; nothing panics.
pub fn shm_writer(data: &[u8]) {
    let cap = 512;
    let (mut w, mut r, s) = hostile_heap_queue(HeapRegion::new(cap + TRAILER));
    for op in data.chunks(10).take(256) {
        match op[0] % 8 {
            0 => {
                let len = usize::from(op.get(1).copied().unwrap_or(0)) * 3;
                if let Some(p) = w.alloc(op[0] as u16 | 1, len) {
                    assert_eq!(p.len(), len);
                }
            }
            1 => {
                if let Some(p) = w.pending_payload() {
                    p.fill(op.get(1).copied().unwrap_or(0));
                }
            }
            // A push, a push into a held batch, or letting a batch go.
            2 => match op.get(1).copied().unwrap_or(0) % 3 {
                0 => w.push(),
                1 => w.push_more(),
                _ => w.release(),
            },
            3 => {
                if let Ok(Some((_t, p))) = r.front() {
                    let _ = p.iter().fold(0u8, |a, b| a ^ b);
                }
            }
            // A pop (of the held too), a hold, or giving the held back.
            4 => match op.get(1).copied().unwrap_or(0) % 3 {
                0 => {
                    r.pop();
                }
                1 => {
                    r.hold();
                }
                _ => r.unhold(),
            },
            // A batch: begin, add a message, commit it, or commit it
            // consuming the reader's held and current messages.
            6 => match op.get(1).copied().unwrap_or(0) % 4 {
                0 => w.batch_begin(),
                1 => {
                    let len = usize::from(op.get(2).copied().unwrap_or(0)) * 3;
                    if let Some(p) = w.batch_alloc(op[0] as u16 | 1, len) {
                        assert_eq!(p.len(), len);
                        p.fill(op.get(3).copied().unwrap_or(0));
                    }
                }
                2 => {
                    let _ = w.batch_commit(None);
                }
                _ => {
                    let _ = w.batch_commit(Some(&mut r));
                }
            },
            // A restart's recovery of the intent record (which the
            // scribbles may have written): refused or rolled forward.
            7 => {
                if let Ok(true) = crate::shm_queue::recover(&mut w, &mut r) {
                    w.reload();
                    r.reload();
                }
            }
            _ => scribble(&s, op),
        }
    }
}

/// The input, read a value at a time; zeros once it runs out.
pub(crate) struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Input { data, pos: 0 }
    }
    pub(crate) fn done(&self) -> bool {
        self.pos >= self.data.len()
    }
    pub(crate) fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
    /// A sequence number: mostly small (so ranges can fit), sometimes
    /// anything (wrap-around).
    pub(crate) fn seq(&mut self) -> u32 {
        match self.byte() {
            b @ 0..=239 => u32::from(b % 12),
            _ => u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()]),
        }
    }
}
