//! The persistent TCP send queue: every application message sent over TCP
//! is appended here and kept until the peer acknowledges it, so it survives
//! disconnects and crashes (kill -9 included) of either process and is sent
//! again after the next login.
//!
//! The queue works over any byte region (`AsRef<[u8]> + AsMut<[u8]>`): a
//! `Vec<u8>` in tests, a [`crate::sys::Mapping`] of
//! `<dir>/<local>_<remote>.ptcp` in real use.
//!
//! # File format (version 1, ours: `PROTOCOL.md` leaves it open)
//!
//! All fields little-endian.
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 8 | magic `b"TCPSHMPQ"` |
//! | 8  | 4 | format version, 1 |
//! | 12 | 4 | capacity in 8-byte blocks |
//! | 16 | 4 | selector: which state slot (0 or 1) is current |
//! | 20 | 4 | local ack: messages consumed from the peer |
//! | 24 | 4 | compaction progress in blocks (see below) |
//! | 28 | 4 | reserved, 0 |
//! | 32 | 16 | state slot 0: write index, read index, sequence number at the read index, compaction flag |
//! | 48 | 16 | state slot 1 |
//! | 64 | capacity × 8 | messages, each a wire header + payload padded to 8 bytes |
//!
//! Messages between the read and the write index are unacknowledged, in
//! wire format (headers little-endian), so they can be sent as they are.
//!
//! # Crash consistency
//!
//! A process may die between any two instructions. The read index and its
//! sequence number must change together, so a state change is written to
//! the slot that is not current and then published by one aligned 4-byte
//! store of the selector. Compiler fences around that store keep the
//! compiler from moving message bytes across it (the CPU cannot reorder a
//! process's own stores as seen by the page cache after the process dies).
//! Compacting (moving unacknowledged messages to the front) is journaled:
//! it is copied in chunks no larger than the gap it closes, recording
//! progress after each, so a copy interrupted by a crash is finished on
//! the next open without reading bytes it has already overwritten.
//!
//! Power loss is not covered: the kernel writes the pages back when it
//! chooses.
#![forbid(unsafe_code)]

use std::sync::atomic::{compiler_fence, Ordering};

use std::path::Path;

use crate::error::FileError;
use crate::sys::{MapOptions, Mapping, SharedMapping};
use crate::wire::{padded, MsgHeader, HEADER_SIZE, MAX_PAYLOAD};

const MAGIC: &[u8; 8] = b"TCPSHMPQ";
const VERSION: u32 = 1;
const OFF_VERSION: usize = 8;
const OFF_BLKS: usize = 12;
const OFF_SELECTOR: usize = 16;
const OFF_LOCAL_ACK: usize = 20;
const OFF_PROGRESS: usize = 24;
const OFF_SLOTS: usize = 32;
const SLOT_SIZE: usize = 16;
/// Bytes before the message area.
pub const FILE_HEADER_SIZE: usize = 64;
const BLK: usize = 8;

/// Why an acknowledgement was refused. The queue is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckError {
    /// The ack is beyond the newest message ever pushed.
    BeyondPushed {
        /// The ack received.
        ack: u32,
        /// One past the newest message pushed.
        seq_end: u32,
    },
    /// The ack covers a message that has not been completely sent on this
    /// connection.
    BeyondSent {
        /// The ack received.
        ack: u32,
    },
    /// A stored header is impossible (the file was altered under us).
    Corrupt,
}

impl std::fmt::Display for AckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            AckError::BeyondPushed { ack, seq_end } => {
                write!(f, "ack {ack} beyond the newest message sent ({seq_end})")
            }
            AckError::BeyondSent { ack } => write!(f, "ack {ack} beyond what was sent"),
            AckError::Corrupt => f.write_str("send queue corrupt"),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct State {
    write: u32,
    read: u32,
    read_seq: u32,
    compacting: u32,
}

/// The persistent send queue over a byte region `M`.
#[derive(Debug)]
pub struct PtcpQueue<M> {
    mem: M,
    blk_cnt: u32,
    sel: u32,
    st: State,
    /// One past the newest message pushed.
    seq_end: u32,
    /// Byte offset (from the message area) of the next byte to send.
    send_off: usize,
    /// Blocks of the message allocated but not yet pushed.
    pending: u32,
}

fn rd32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn wr32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

impl<M: AsRef<[u8]> + AsMut<[u8]>> PtcpQueue<M> {
    /// Region size for a queue of `capacity` message bytes (a multiple of 8).
    pub const fn region_size(capacity: usize) -> usize {
        FILE_HEADER_SIZE + capacity
    }

    /// Opens the queue stored in `mem`: formats a region that is all zero,
    /// otherwise checks magic, version, size and every stored header, and
    /// finishes a compaction a crash interrupted.
    ///
    /// # Errors
    /// A description of what is wrong; the caller adds the file name.
    pub fn open(mut mem: M) -> Result<Self, String> {
        let len = mem.as_ref().len();
        if len < FILE_HEADER_SIZE + BLK || (len - FILE_HEADER_SIZE) % BLK != 0 {
            return Err(format!(
                "region of {len} bytes is not a header plus a multiple of 8"
            ));
        }
        let blk_cnt = u32::try_from((len - FILE_HEADER_SIZE) / BLK)
            .map_err(|_| format!("region of {len} bytes is too large"))?;
        let b = mem.as_mut();
        if b[..FILE_HEADER_SIZE].iter().all(|&x| x == 0) {
            b[..8].copy_from_slice(MAGIC);
            wr32(b, OFF_VERSION, VERSION);
            wr32(b, OFF_BLKS, blk_cnt);
        }
        if &b[..8] != MAGIC {
            return Err("not a tcpshm send queue (wrong magic)".into());
        }
        let version = rd32(b, OFF_VERSION);
        if version != VERSION {
            return Err(format!(
                "format version {version}, this build reads {VERSION}"
            ));
        }
        let stored = rd32(b, OFF_BLKS);
        if stored != blk_cnt {
            return Err(format!(
                "header says {stored} blocks, the file holds {blk_cnt}"
            ));
        }
        let sel = rd32(b, OFF_SELECTOR);
        if sel > 1 {
            return Err(format!("state selector {sel} is not 0 or 1"));
        }
        let so = OFF_SLOTS + sel as usize * SLOT_SIZE;
        let st = State {
            write: rd32(b, so),
            read: rd32(b, so + 4),
            read_seq: rd32(b, so + 8),
            compacting: rd32(b, so + 12),
        };
        if st.read > st.write || st.write > blk_cnt {
            return Err(format!(
                "indices out of range: read {} write {} capacity {blk_cnt}",
                st.read, st.write
            ));
        }
        let mut q = PtcpQueue {
            mem,
            blk_cnt,
            sel,
            st,
            seq_end: st.read_seq,
            send_off: 0,
            pending: 0,
        };
        if st.compacting != 0 {
            let progress = rd32(q.mem.as_ref(), OFF_PROGRESS);
            if st.compacting != 1 || st.read == 0 || progress > st.write - st.read {
                return Err("interrupted compaction has an impossible state".into());
            }
            q.compact_from(progress);
        }
        let (_, end) = q.check()?;
        q.seq_end = end;
        q.send_off = q.st.read as usize * BLK;
        Ok(q)
    }

    /// Walks every stored message and returns the sequence range
    /// `(start, end)`: the oldest unacknowledged message and one past the
    /// newest.
    ///
    /// # Errors
    /// A description of the first impossible header.
    pub fn check(&self) -> Result<(u32, u32), String> {
        let data = self.data();
        let mut idx = self.st.read;
        let mut end = self.st.read_seq;
        while idx < self.st.write {
            let off = idx as usize * BLK;
            let h = MsgHeader::decode(&data[off..])
                .map_err(|e| format!("message at block {idx}: {e}"))?;
            let blks = (h.padded_size() / BLK) as u32;
            if blks > self.st.write - idx {
                return Err(format!(
                    "message at block {idx} of {} bytes runs past the write index {}",
                    h.size, self.st.write
                ));
            }
            idx += blks;
            end = end.wrapping_add(1);
        }
        Ok((self.st.read_seq, end))
    }

    fn data(&self) -> &[u8] {
        &self.mem.as_ref()[FILE_HEADER_SIZE..]
    }

    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.mem.as_mut()[FILE_HEADER_SIZE..]
    }

    /// Publishes `st` atomically with respect to a crash.
    fn commit(&mut self, st: State) {
        let next = self.sel ^ 1;
        let b = self.mem.as_mut();
        let so = OFF_SLOTS + next as usize * SLOT_SIZE;
        wr32(b, so, st.write);
        wr32(b, so + 4, st.read);
        wr32(b, so + 8, st.read_seq);
        wr32(b, so + 12, st.compacting);
        // The slot (and any message bytes written before) must be in memory
        // before the selector names it, and nothing written after may move
        // before it: a kill between two stores sees them in program order.
        compiler_fence(Ordering::SeqCst);
        wr32(b, OFF_SELECTOR, next);
        compiler_fence(Ordering::SeqCst);
        self.sel = next;
        self.st = st;
    }

    /// Capacity of the message area in bytes.
    pub fn capacity(&self) -> usize {
        self.blk_cnt as usize * BLK
    }

    /// Bytes a message with `payload_len` bytes of payload occupies.
    pub const fn footprint(payload_len: usize) -> usize {
        padded(HEADER_SIZE + payload_len)
    }

    /// Reserves room for a message of type `msg_type` with `payload_len`
    /// bytes of payload and returns the payload to fill. The header is
    /// written here; [`push`](Self::push) commits the message.
    ///
    /// Returns `None` when the queue has no room (the peer has not
    /// acknowledged enough), or when the message can never fit
    /// (`payload_len` above [`MAX_PAYLOAD`] or the capacity). When the free
    /// space is split between the front and the back, the unacknowledged
    /// messages are moved to the front first.
    ///
    /// A second `alloc` before `push` replaces the first.
    pub fn alloc(&mut self, msg_type: u16, payload_len: usize) -> Option<&mut [u8]> {
        if payload_len > MAX_PAYLOAD {
            return None;
        }
        let size = HEADER_SIZE + payload_len;
        let blks = (padded(size) / BLK) as u32;
        if blks > self.blk_cnt - self.st.write {
            if blks > self.blk_cnt - self.st.write + self.st.read {
                return None;
            }
            self.compact();
        }
        self.pending = blks;
        let off = self.st.write as usize * BLK;
        let msg = &mut self.data_mut()[off..off + blks as usize * BLK];
        MsgHeader {
            size: size as u16,
            msg_type,
            ack_seq: 0,
        }
        .encode_into(msg);
        // Padding goes on the wire: never leak older bytes.
        msg[size..].fill(0);
        Some(&mut msg[HEADER_SIZE..size])
    }

    /// The payload of the message allocated and not yet pushed.
    pub fn pending_payload(&mut self) -> Option<&mut [u8]> {
        if self.pending == 0 {
            return None;
        }
        let off = self.st.write as usize * BLK;
        let data = self.data_mut();
        let size = u16::from_le_bytes([data[off], data[off + 1]]) as usize;
        Some(&mut data[off + HEADER_SIZE..off + size])
    }

    /// Byte offset in the region of the local ack word.
    pub const LOCAL_ACK_OFFSET: usize = OFF_LOCAL_ACK;

    /// Commits the message from the last [`alloc`](Self::alloc), stamping
    /// the current local ack into its header. Once this returns, the
    /// message survives a crash of the process. Without a pending
    /// allocation it does nothing.
    pub fn push(&mut self) {
        if self.pending == 0 {
            return;
        }
        let ack = self.local_ack();
        let off = self.st.write as usize * BLK;
        wr32(self.data_mut(), off + 4, ack);
        let st = State {
            write: self.st.write + self.pending,
            ..self.st
        };
        self.pending = 0;
        self.commit(st);
        self.seq_end = self.seq_end.wrapping_add(1);
    }

    /// Moves the unacknowledged messages to the front of the area.
    fn compact(&mut self) {
        if self.st.read == 0 {
            return;
        }
        wr32(self.mem.as_mut(), OFF_PROGRESS, 0);
        compiler_fence(Ordering::SeqCst);
        self.commit(State {
            compacting: 1,
            ..self.st
        });
        self.compact_from(0);
    }

    /// Copies the live blocks `[read + done, write)` to `[done, ..)` in
    /// chunks no larger than the gap `read`, recording progress after each
    /// chunk, then publishes the moved state.
    fn compact_from(&mut self, mut done: u32) {
        let State {
            read,
            write,
            read_seq,
            ..
        } = self.st;
        let live = write - read;
        while done < live {
            let chunk = read.min(live - done);
            let src = (read + done) as usize * BLK;
            let dst = done as usize * BLK;
            self.data_mut()
                .copy_within(src..src + chunk as usize * BLK, dst);
            done += chunk;
            compiler_fence(Ordering::SeqCst);
            wr32(self.mem.as_mut(), OFF_PROGRESS, done);
            compiler_fence(Ordering::SeqCst);
        }
        self.send_off = self.send_off.saturating_sub(read as usize * BLK);
        self.commit(State {
            write: live,
            read: 0,
            read_seq,
            compacting: 0,
        });
    }

    /// The bytes pushed but not yet sent on this connection.
    pub fn sendable(&self) -> &[u8] {
        &self.data()[self.send_off..self.st.write as usize * BLK]
    }

    /// Records that `n` bytes of [`sendable`](Self::sendable) were sent
    /// (any count, partial messages included).
    pub fn mark_sent(&mut self, n: usize) {
        self.send_off = (self.send_off + n).min(self.st.write as usize * BLK);
    }

    /// Drops every message with a sequence number below `ack` that was
    /// completely sent on this connection. An ack that is not newer than
    /// the oldest message held is ignored.
    ///
    /// # Errors
    /// [`AckError`] for an ack beyond what was pushed or sent; nothing changes.
    pub fn ack(&mut self, ack: u32) -> Result<(), AckError> {
        self.ack_upto(ack, true)
    }

    /// The ack a peer reports at login: drops what it acknowledges (it may
    /// cover messages sent on an earlier connection) and rewinds the send
    /// position to the oldest unacknowledged message, to send it all again.
    ///
    /// # Errors
    /// [`AckError::BeyondPushed`] for an ack beyond the newest message.
    pub fn login_ack(&mut self, ack: u32) -> Result<(), AckError> {
        self.ack_upto(ack, false)?;
        self.send_off = self.st.read as usize * BLK;
        Ok(())
    }

    fn ack_upto(&mut self, ack: u32, only_sent: bool) -> Result<(), AckError> {
        let n = ack.wrapping_sub(self.st.read_seq);
        if n as i32 <= 0 {
            return Ok(());
        }
        let held = self.seq_end.wrapping_sub(self.st.read_seq);
        if n > held {
            return Err(AckError::BeyondPushed {
                ack,
                seq_end: self.seq_end,
            });
        }
        let data = self.data();
        let mut idx = self.st.read;
        for _ in 0..n {
            let off = idx as usize * BLK;
            let h = MsgHeader::decode(&data[off..]).map_err(|_| AckError::Corrupt)?;
            let blks = (h.padded_size() / BLK) as u32;
            if blks > self.st.write - idx {
                return Err(AckError::Corrupt);
            }
            idx += blks;
        }
        if only_sent && idx as usize * BLK > self.send_off {
            return Err(AckError::BeyondSent { ack });
        }
        let st = if idx == self.st.write && self.pending == 0 {
            // Empty: start again at the front, no compaction needed later.
            self.send_off = 0;
            State {
                write: 0,
                read: 0,
                read_seq: ack,
                compacting: 0,
            }
        } else {
            self.send_off = self.send_off.max(idx as usize * BLK);
            State {
                read: idx,
                read_seq: ack,
                ..self.st
            }
        };
        self.commit(st);
        Ok(())
    }

    /// `(start, end)`: the oldest unacknowledged message and one past the newest.
    pub fn seq_range(&self) -> (u32, u32) {
        (self.st.read_seq, self.seq_end)
    }

    /// Messages held (pushed and not yet acknowledged).
    pub fn len(&self) -> u32 {
        self.seq_end.wrapping_sub(self.st.read_seq)
    }

    /// Whether no message is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The local ack: how many messages were consumed from the peer.
    pub fn local_ack(&self) -> u32 {
        rd32(self.mem.as_ref(), OFF_LOCAL_ACK)
    }

    /// Sets the local ack (persisted at once: one aligned store).
    pub fn set_local_ack(&mut self, ack: u32) {
        wr32(self.mem.as_mut(), OFF_LOCAL_ACK, ack);
    }

    /// Empties the queue and sets every sequence number and the local ack to 0.
    pub fn reset(&mut self) {
        self.pending = 0;
        self.commit(State::default());
        self.seq_end = 0;
        self.send_off = 0;
        self.set_local_ack(0);
    }

    /// The underlying region.
    pub fn region(&self) -> &M {
        &self.mem
    }
}

impl PtcpQueue<SharedMapping> {
    /// Opens (or creates) the queue file at `path` with `capacity` bytes of
    /// messages (a multiple of 8). An existing file is checked, never
    /// overwritten.
    ///
    /// # Errors
    /// A [`FileError`] naming the file: it cannot be created, mapped or
    /// locked, has another size, or its content is corrupt.
    pub fn open_file(path: &Path, capacity: usize, opts: MapOptions) -> Result<Self, FileError> {
        let m = SharedMapping::new(Mapping::open(path, Self::region_size(capacity), opts)?);
        PtcpQueue::open(m).map_err(|why| FileError::corrupt(path, why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(cap: usize) -> PtcpQueue<Vec<u8>> {
        PtcpQueue::open(vec![0u8; PtcpQueue::<Vec<u8>>::region_size(cap)]).unwrap()
    }

    fn push(q: &mut PtcpQueue<Vec<u8>>, t: u16, payload: &[u8]) -> bool {
        match q.alloc(t, payload.len()) {
            Some(p) => {
                p.copy_from_slice(payload);
                q.push();
                true
            }
            None => false,
        }
    }

    #[test]
    fn push_send_ack_and_reopen() {
        let mut q = q(256);
        q.set_local_ack(5);
        assert!(push(&mut q, 10, b"hello"));
        assert!(push(&mut q, 11, &[1; 20]));
        assert_eq!(q.seq_range(), (0, 2));
        let s = q.sendable().to_vec();
        assert_eq!(s.len(), 16 + 32);
        assert_eq!(
            MsgHeader::decode(&s).unwrap(),
            MsgHeader {
                size: 13,
                msg_type: 10,
                ack_seq: 5
            }
        );
        assert_eq!(&s[8..13], b"hello");
        assert_eq!(&s[13..16], &[0, 0, 0]);
        // Acks beyond what was sent are refused, nothing changes.
        assert_eq!(q.ack(1), Err(AckError::BeyondSent { ack: 1 }));
        q.mark_sent(16);
        assert_eq!(q.ack(3), Err(AckError::BeyondPushed { ack: 3, seq_end: 2 }));
        q.ack(1).unwrap();
        assert_eq!(q.seq_range(), (1, 2));
        q.ack(0).unwrap(); // old ack: ignored
        let mem = q.region().clone();
        let q2 = PtcpQueue::open(mem).unwrap();
        assert_eq!(q2.seq_range(), (1, 2));
        assert_eq!(q2.local_ack(), 5);
        assert_eq!(q2.sendable().len(), 32, "reopen resends from the oldest");
    }

    #[test]
    fn full_then_compaction() {
        let mut q = q(64); // 8 blocks
        for i in 0..4 {
            assert!(push(&mut q, 1, &[i; 8]), "{i}");
        }
        assert!(!push(&mut q, 1, &[9; 8]));
        q.mark_sent(64);
        q.ack(3).unwrap();
        // Free: 6 blocks at the front, 0 at the back; a 2-block message
        // needs compaction.
        assert!(push(&mut q, 1, &[7; 8]));
        assert_eq!(q.seq_range(), (3, 5));
        let s = q.sendable();
        assert_eq!(s.len(), 16, "only the new message is unsent");
        assert_eq!(&s[8..16], &[7; 8]);
        let (a, b) = q.check().unwrap();
        assert_eq!((a, b), (3, 5));
    }

    #[test]
    fn interrupted_compaction_is_finished_on_open() {
        let mut q = q(80); // 10 blocks
        for i in 0..5u8 {
            assert!(push(&mut q, 1, &[i; 8]));
        }
        q.mark_sent(80);
        q.ack(2).unwrap(); // read = 4 blocks, live = 6 blocks: overlapping move
        let before = q.sendable().len();
        assert_eq!(before, 0);
        // Simulate a crash after the first chunk of the journaled copy.
        let mut mem = q.region().clone();
        {
            let mut probe = PtcpQueue::open(mem.clone()).unwrap();
            wr32(probe.mem.as_mut(), OFF_PROGRESS, 0);
            probe.commit(State {
                compacting: 1,
                ..probe.st
            });
            let (read, chunk) = (probe.st.read as usize, probe.st.read as usize);
            probe
                .data_mut()
                .copy_within(read * 8..(read + chunk) * 8, 0);
            wr32(probe.mem.as_mut(), OFF_PROGRESS, chunk as u32);
            mem = probe.mem.clone();
        }
        let q2 = PtcpQueue::open(mem).unwrap();
        assert_eq!(q2.seq_range(), (2, 5));
        assert_eq!(q2.st.read, 0);
        let d = q2.data();
        for (k, v) in (2u8..5).enumerate() {
            assert_eq!(&d[k * 16 + 8..k * 16 + 16], &[v; 8]);
        }
    }

    #[test]
    fn corrupt_regions_are_errors() {
        assert!(PtcpQueue::open(vec![0u8; 10]).is_err());
        let mut garbage = vec![0xA5u8; PtcpQueue::<Vec<u8>>::region_size(64)];
        assert!(PtcpQueue::open(garbage.clone())
            .unwrap_err()
            .contains("magic"));
        garbage[..8].copy_from_slice(MAGIC);
        assert!(PtcpQueue::open(garbage).is_err());
        let mut q = q(64);
        push(&mut q, 1, &[1; 8]);
        let mut m = q.region().clone();
        // Header size 3 at the first message.
        let o = FILE_HEADER_SIZE;
        m[o] = 3;
        m[o + 1] = 0;
        assert!(PtcpQueue::open(m.clone()).unwrap_err().contains("below 8"));
        // A size that runs past the write index.
        m[o] = 200;
        assert!(PtcpQueue::open(m.clone()).unwrap_err().contains("past"));
        // Wrong version.
        let mut v = q.region().clone();
        wr32(&mut v, OFF_VERSION, 9);
        assert!(PtcpQueue::open(v).unwrap_err().contains("version"));
    }

    #[test]
    fn reset_and_too_large() {
        let mut q = q(64);
        assert!(q.alloc(1, 57).is_none(), "larger than the capacity");
        assert!(q.alloc(1, MAX_PAYLOAD + 1).is_none());
        push(&mut q, 1, &[1; 8]);
        q.set_local_ack(9);
        q.reset();
        assert_eq!(q.seq_range(), (0, 0));
        assert_eq!(q.local_ack(), 0);
        assert!(q.sendable().is_empty());
    }
}
