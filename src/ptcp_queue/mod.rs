//! The persistent TCP send queue: every application message sent over TCP
//! is appended here and kept until the peer acknowledges it, so it survives
//! disconnects and crashes (kill -9 included) of either process and is sent
//! again after the next login.
//!
//! The queue works over a [`Region`]: a [`HeapRegion`] in tests, a
//! [`Mapping`] of `<dir>/<local>_<remote>.ptcp` in real use.
//!
//! # The local ack lives here, with one writer
//!
//! The file also holds the local ack: how many messages this side has
//! consumed from the peer, stamped into every message pushed. The receive
//! side advances it and the send side reads it, possibly on two threads.
//! [`PtcpQueue::open`] therefore hands out the queue together with the one
//! [`AckCounter`] of the file: the counter is the ack's only writer, and
//! both reach the word only atomically, so the two halves of a connection
//! can live on two threads (the counter is not `Clone`: one writer of the
//! ack per file). The queue's own bytes (the message area and its state
//! words) are reached by the queue alone.
//!
//! # File format (version 1, ours: `docs/protocol.md` leaves it open)
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
//! | 24 | 4 | compaction progress in blocks, or the intent's local ack (see below) |
//! | 28 | 4 | pair tag: the low half of `pair_files::pair_tag` of the file's pair (0: not yet claimed) |
//! | 32 | 16 | state slot 0: write index, read index, sequence number at the read index, journal flag (0 none, 1 compacting, 2 consume intent) |
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
//! compiler from moving message bytes across it (after a kill -9 the page
//! cache holds every store the process executed, in program order: a
//! signal is taken at an instruction boundary).
//! Compacting (moving unacknowledged messages to the front) is journaled:
//! it is copied in chunks no larger than the gap it closes, recording
//! progress after each, so a copy interrupted by a crash is finished on
//! the next open without reading bytes it has already overwritten.
//!
//! A batch ([`batch`]) is written after the write index and published by
//! one selector store; a consume-and-reply also moves the local ack, through
//! an intent the next open rolls forward (see there).
//!
//! Power loss is not covered: the kernel writes the pages back when it
//! chooses.

use std::path::Path;
use std::sync::atomic::{compiler_fence, AtomicU32, Ordering};
use std::sync::Arc;

use crate::error::FileError;
use crate::sys::{HeapRegion, MapOptions, Mapping, Region};
use crate::wire::{padded, MsgHeader, HEADER_SIZE, MAX_PAYLOAD};

pub(crate) const MAGIC: &[u8; 8] = b"TCPSHMPQ";
pub(crate) const VERSION: u32 = 1;
pub(crate) const OFF_VERSION: usize = 8;
pub(crate) const OFF_BLKS: usize = 12;
const OFF_SELECTOR: usize = 16;
const OFF_LOCAL_ACK: usize = 20;
const OFF_PROGRESS: usize = 24;
const OFF_PAIR: usize = 28;
const OFF_SLOTS: usize = 32;
const SLOT_SIZE: usize = 16;
/// Bytes before the message area.
pub(crate) const FILE_HEADER_SIZE: usize = 64;
const BLK: usize = 8;
/// The slot's journal flag: a compaction is under way.
const COMPACTING: u32 = 1;
/// The slot's journal flag: a consume-and-reply committed; the local ack
/// must become the word at [`OFF_PROGRESS`] (see [`batch`]).
const INTENT: u32 = 2;

/// The 32 bits of a pair tag a queue file keeps (never 0).
pub(crate) fn pair_tag32(tag: u64) -> u32 {
    ((tag >> 32) as u32 ^ tag as u32).max(1)
}

fn rd32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Why an acknowledgement was refused. The queue is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AckError {
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

/// The memory of one queue file: header words reached atomically, the
/// message area by the queue alone.
#[derive(Debug)]
struct FileMem<R> {
    region: Arc<R>,
    base: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the pointer is into the region the Arc keeps alive (R is Send and
// Sync). The queue reaches the message area through `&self`/`&mut self` of
// its single owner; the only other holder (the AckCounter) reaches one
// header word, atomically.
unsafe impl<R: Region> Send for FileMem<R> {}
// SAFETY: as above.
unsafe impl<R: Region> Sync for FileMem<R> {}

impl<R: Region> FileMem<R> {
    fn new(region: Arc<R>) -> Self {
        let len = region.size();
        let base = std::ptr::NonNull::new(region.base()).expect("a region has an address");
        FileMem { region, base, len }
    }

    fn share(&self) -> Self {
        FileMem {
            region: self.region.clone(),
            base: self.base,
            len: self.len,
        }
    }

    /// The header word at `off` (below [`FILE_HEADER_SIZE`], 4-aligned).
    fn word(&self, off: usize) -> &AtomicU32 {
        assert!(off % 4 == 0 && off + 4 <= FILE_HEADER_SIZE && off + 4 <= self.len);
        // SAFETY: the word is inside the region (checked) and 4-aligned
        // (the base of every Region is 64-aligned); header words are only
        // ever accessed atomically.
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(off).cast()) }
    }

    fn get(&self, off: usize) -> u32 {
        // Relaxed: a header word is read by the thread that writes it,
        // except the local ack (see AckCounter); crash consistency is about
        // program order, which the compiler fences in `commit` keep.
        self.word(off).load(Ordering::Relaxed)
    }

    fn set(&self, off: usize, v: u32) {
        // Relaxed: as in `get`.
        self.word(off).store(v, Ordering::Relaxed)
    }

    fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.region, &other.region)
    }
}

/// The message allocated and not yet pushed: our own copy of its size,
/// never read back from the file.
#[derive(Clone, Copy, Debug)]
struct Pending {
    blks: u32,
    size: usize,
}

/// The persistent send queue over a region `R`.
#[derive(Debug)]
pub(crate) struct PtcpQueue<R: Region = Mapping> {
    mem: FileMem<R>,
    blk_cnt: u32,
    sel: u32,
    st: State,
    /// One past the newest message pushed.
    seq_end: u32,
    /// Byte offset (from the message area) of the next byte to send.
    send_off: usize,
    /// The message allocated but not yet pushed.
    pending: Option<Pending>,
    /// The batch being written after the write index, if any.
    batch: Option<batch::Tentative>,
}

/// The local ack of a queue file: messages this side consumed from the
/// peer. Handed out once by [`PtcpQueue::open`], not `Clone`: the ack's
/// only writer. Stored with one aligned atomic store, so it survives a
/// kill -9 as soon as the store is done.
#[derive(Debug)]
pub(crate) struct AckCounter<R: Region = Mapping> {
    mem: FileMem<R>,
}

impl<R: Region> AckCounter<R> {
    /// The local ack.
    #[inline]
    pub(crate) fn get(&self) -> u32 {
        // Relaxed: the ack is a number, not a publication: nothing is read
        // because of it. The queue stamps whatever value it loads (Relaxed
        // in PtcpQueue::local_ack); a stamp that lags a concurrent pop is
        // corrected by the next header or heartbeat.
        self.mem.word(OFF_LOCAL_ACK).load(Ordering::Relaxed)
    }

    /// One more message consumed.
    #[inline]
    pub(crate) fn advance(&mut self) {
        self.set(self.get().wrapping_add(1));
    }

    /// Sets the local ack.
    #[inline]
    pub(crate) fn set(&mut self, ack: u32) {
        // Relaxed: as in `get`; this counter is the only writer.
        self.mem.word(OFF_LOCAL_ACK).store(ack, Ordering::Relaxed);
    }
}

impl<R: Region> PtcpQueue<R> {
    /// Region size for a queue of `capacity` message bytes (a multiple of 8).
    pub(crate) const fn region_size(capacity: usize) -> usize {
        FILE_HEADER_SIZE + capacity
    }

    /// Opens the queue stored in `region`: formats a region whose header is
    /// all zero, otherwise checks magic, version, size and every stored
    /// header, and finishes a compaction a crash interrupted. Returns the
    /// queue and the one [`AckCounter`] of the file.
    ///
    /// # Errors
    /// A description of what is wrong; the caller adds the file name.
    pub(crate) fn open(region: R) -> Result<(Self, AckCounter<R>), String> {
        let mem = FileMem::new(Arc::new(region));
        let len = mem.len;
        if len < FILE_HEADER_SIZE + BLK || (len - FILE_HEADER_SIZE) % BLK != 0 {
            return Err(format!(
                "region of {len} bytes is not a header plus a multiple of 8"
            ));
        }
        let blk_cnt = u32::try_from((len - FILE_HEADER_SIZE) / BLK)
            .map_err(|_| format!("region of {len} bytes is too large"))?;
        let magic = [rd32(MAGIC, 0), rd32(MAGIC, 4)];
        if (0..FILE_HEADER_SIZE).step_by(4).all(|o| mem.get(o) == 0) {
            mem.set(0, magic[0]);
            mem.set(4, magic[1]);
            mem.set(OFF_VERSION, VERSION);
            mem.set(OFF_BLKS, blk_cnt);
        }
        if [mem.get(0), mem.get(4)] != magic {
            return Err("not a tcpshm send queue (wrong magic)".into());
        }
        let version = mem.get(OFF_VERSION);
        if version != VERSION {
            return Err(format!(
                "format version {version}, this build reads {VERSION}"
            ));
        }
        let stored = mem.get(OFF_BLKS);
        if stored != blk_cnt {
            return Err(format!(
                "header says {stored} blocks, the file holds {blk_cnt}"
            ));
        }
        let sel = mem.get(OFF_SELECTOR);
        if sel > 1 {
            return Err(format!("state selector {sel} is not 0 or 1"));
        }
        let so = OFF_SLOTS + sel as usize * SLOT_SIZE;
        let st = State {
            write: mem.get(so),
            read: mem.get(so + 4),
            read_seq: mem.get(so + 8),
            compacting: mem.get(so + 12),
        };
        if st.read > st.write || st.write > blk_cnt {
            return Err(format!(
                "indices out of range: read {} write {} capacity {blk_cnt}",
                st.read, st.write
            ));
        }
        let ack = AckCounter { mem: mem.share() };
        let mut q = PtcpQueue {
            mem,
            blk_cnt,
            sel,
            st,
            seq_end: st.read_seq,
            send_off: 0,
            pending: None,
            batch: None,
        };
        match st.compacting {
            0 => {}
            COMPACTING => {
                let progress = q.mem.get(OFF_PROGRESS);
                if st.read == 0 || progress > st.write - st.read {
                    return Err("interrupted compaction has an impossible state".into());
                }
                q.compact_from(progress);
            }
            INTENT => q.roll_forward()?,
            f => return Err(format!("journal flag {f} is not 0, 1 or 2")),
        }
        let (_, end) = q.check()?;
        q.seq_end = end;
        q.send_off = q.st.read as usize * BLK;
        Ok((q, ack))
    }

    /// Walks every stored message and returns the sequence range
    /// `(start, end)`: the oldest unacknowledged message and one past the
    /// newest. A message stamped with an ack newer than the local ack
    /// (which only grows) is impossible, as in the C++ check.
    ///
    /// # Errors
    /// A description of the first impossible header.
    pub(crate) fn check(&self) -> Result<(u32, u32), String> {
        let data = self.data();
        let local_ack = self.local_ack();
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
            if (local_ack.wrapping_sub(h.ack_seq) as i32) < 0 {
                return Err(format!(
                    "message at block {idx} carries ack {}, newer than the local ack {local_ack}",
                    h.ack_seq
                ));
            }
            idx += blks;
            end = end.wrapping_add(1);
        }
        Ok((self.st.read_seq, end))
    }

    fn data(&self) -> &[u8] {
        // SAFETY: the message area [FILE_HEADER_SIZE, len) is inside the
        // region (open checked len), reached only by this queue (the
        // AckCounter touches one header word); `&self` gives out no `&mut`
        // to it meanwhile.
        unsafe {
            std::slice::from_raw_parts(
                self.mem.base.as_ptr().add(FILE_HEADER_SIZE),
                self.mem.len - FILE_HEADER_SIZE,
            )
        }
    }

    fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`, and `&mut self` makes the slice exclusive.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.mem.base.as_ptr().add(FILE_HEADER_SIZE),
                self.mem.len - FILE_HEADER_SIZE,
            )
        }
    }

    /// Publishes `st` atomically with respect to a crash.
    fn commit(&mut self, st: State) {
        let next = self.sel ^ 1;
        let so = OFF_SLOTS + next as usize * SLOT_SIZE;
        // (The crash points: the kill -9 tests stop a process after each
        // store; nothing outside the unit tests.)
        self.mem.set(so, st.write);
        crate::failpoint::hit();
        self.mem.set(so + 4, st.read);
        crate::failpoint::hit();
        self.mem.set(so + 8, st.read_seq);
        crate::failpoint::hit();
        self.mem.set(so + 12, st.compacting);
        crate::failpoint::hit();
        // The slot (and any message bytes written before) must be in memory
        // before the selector names it, and nothing written after may move
        // before it: a kill between two stores sees them in program order.
        compiler_fence(Ordering::SeqCst);
        self.mem.set(OFF_SELECTOR, next);
        compiler_fence(Ordering::SeqCst);
        crate::failpoint::hit();
        self.sel = next;
        self.st = st;
    }

    /// The pair tag the file records (0: none yet).
    pub(crate) fn pair_tag(&self) -> u32 {
        self.mem.get(OFF_PAIR)
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
    pub(crate) fn alloc(&mut self, msg_type: u16, payload_len: usize) -> Option<&mut [u8]> {
        self.pending = None;
        let (size, blks) = self.place(0, msg_type, payload_len, 0)?;
        self.pending = Some(Pending { blks, size });
        self.pending_payload()
    }

    /// Makes room for a message with `payload_len` bytes of payload,
    /// `after` blocks past the write index (compacting first when the free
    /// space is split, carrying those blocks along), and writes its header,
    /// stamped with `ack`, and zeroed padding. Returns its size and blocks;
    /// `None` if it does not fit now or can never fit.
    fn place(
        &mut self,
        after: u32,
        msg_type: u16,
        payload_len: usize,
        ack: u32,
    ) -> Option<(usize, u32)> {
        if payload_len > MAX_PAYLOAD {
            return None;
        }
        let size = HEADER_SIZE + payload_len;
        let blks = (padded(size) / BLK) as u32;
        let need = after.checked_add(blks)?;
        if need > self.blk_cnt - self.st.write {
            if need > self.blk_cnt - self.st.write + self.st.read {
                return None;
            }
            self.compact(after);
        }
        let off = (self.st.write + after) as usize * BLK;
        let msg = &mut self.data_mut()[off..off + blks as usize * BLK];
        MsgHeader {
            size: size as u16,
            msg_type,
            ack_seq: ack,
        }
        .encode_into(msg);
        // Padding goes on the wire: never leak older bytes.
        msg[size..].fill(0);
        Some((size, blks))
    }

    /// The payload of the message allocated and not yet pushed (its size
    /// is the queue's own copy, never read back from the file).
    pub(crate) fn pending_payload(&mut self) -> Option<&mut [u8]> {
        let p = self.pending?;
        let off = self.st.write as usize * BLK;
        Some(&mut self.data_mut()[off + HEADER_SIZE..off + p.size])
    }

    /// Commits the message from the last [`alloc`](Self::alloc), stamping
    /// the current local ack into its header, and returns that ack. Once
    /// this returns, the message survives a crash of the process. Without a
    /// pending allocation it does nothing.
    pub(crate) fn push(&mut self) -> Option<u32> {
        let p = self.pending.take()?;
        let ack = self.local_ack();
        let off = self.st.write as usize * BLK;
        self.data_mut()[off + 4..off + 8].copy_from_slice(&ack.to_le_bytes());
        let st = State {
            write: self.st.write + p.blks,
            ..self.st
        };
        self.commit(st);
        self.seq_end = self.seq_end.wrapping_add(1);
        Some(ack)
    }

    /// Moves the unacknowledged messages to the front of the area (and
    /// `extra` blocks after the write index with them: a batch being
    /// written, which is not in the queue yet, so no crash can need it).
    fn compact(&mut self, extra: u32) {
        if self.st.read == 0 {
            return;
        }
        let (read, write) = (self.st.read, self.st.write);
        self.mem.set(OFF_PROGRESS, 0);
        compiler_fence(Ordering::SeqCst);
        self.commit(State {
            compacting: COMPACTING,
            ..self.st
        });
        self.compact_from(0);
        let from = write as usize * BLK;
        self.data_mut().copy_within(
            from..from + extra as usize * BLK,
            (write - read) as usize * BLK,
        );
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
            self.mem.set(OFF_PROGRESS, done);
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
    pub(crate) fn sendable(&self) -> &[u8] {
        &self.data()[self.send_off..self.st.write as usize * BLK]
    }

    /// Records that `n` bytes of [`sendable`](Self::sendable) were sent
    /// (any count, partial messages included).
    pub(crate) fn mark_sent(&mut self, n: usize) {
        self.send_off = (self.send_off + n).min(self.st.write as usize * BLK);
    }

    /// Drops every message with a sequence number below `ack` that was
    /// completely sent on this connection. An ack that is not newer than
    /// the oldest message held is ignored.
    ///
    /// # Errors
    /// [`AckError`] for an ack beyond what was pushed or sent; nothing changes.
    pub(crate) fn ack(&mut self, ack: u32) -> Result<(), AckError> {
        self.ack_upto(ack, true)
    }

    /// The ack a peer reports at login: drops what it acknowledges (it may
    /// cover messages sent on an earlier connection) and rewinds the send
    /// position to the oldest unacknowledged message, to send it all again.
    ///
    /// # Errors
    /// [`AckError::BeyondPushed`] for an ack beyond the newest message.
    pub(crate) fn login_ack(&mut self, ack: u32) -> Result<(), AckError> {
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
        let st = if idx == self.st.write && self.pending.is_none() {
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
    pub(crate) fn seq_range(&self) -> (u32, u32) {
        (self.st.read_seq, self.seq_end)
    }

    /// Messages held (pushed and not yet acknowledged).
    pub(crate) fn len(&self) -> u32 {
        self.seq_end.wrapping_sub(self.st.read_seq)
    }

    /// Share of the message area in use (0 to 1).
    pub(crate) fn fill(&self) -> f64 {
        f64::from(self.st.write - self.st.read) / f64::from(self.blk_cnt.max(1))
    }

    /// The local ack as the file holds it (its writer is the
    /// [`AckCounter`]).
    pub(crate) fn local_ack(&self) -> u32 {
        // Relaxed: see AckCounter::get.
        self.mem.word(OFF_LOCAL_ACK).load(Ordering::Relaxed)
    }

    /// Empties the queue and sets every sequence number and the local ack
    /// (through its counter) to 0.
    ///
    /// # Panics
    /// If `ack` is not this file's counter (a caller bug).
    pub(crate) fn reset(&mut self, ack: &mut AckCounter<R>) {
        assert!(self.mem.same(&ack.mem), "the AckCounter of another queue");
        self.pending = None;
        self.batch = None;
        self.commit(State::default());
        self.seq_end = 0;
        self.send_off = 0;
        ack.set(0);
    }

    /// Empties the queue and starts it again at sequence number `seq`, with
    /// the local ack `local_ack`: for carrying another implementation's
    /// queue over (`tcpshm import-cpp`), whose messages are then pushed in
    /// order and keep their sequence numbers.
    ///
    /// # Panics
    /// If `ack` is not this file's counter (a caller bug).
    pub(crate) fn restart_at(&mut self, ack: &mut AckCounter<R>, seq: u32, local_ack: u32) {
        assert!(self.mem.same(&ack.mem), "the AckCounter of another queue");
        self.pending = None;
        self.batch = None;
        self.commit(State {
            read_seq: seq,
            ..State::default()
        });
        self.seq_end = seq;
        self.send_off = 0;
        ack.set(local_ack);
    }

    #[cfg(any(test, fuzzing))]
    /// Closes the queue and gives its region back.
    ///
    /// # Panics
    /// If `ack` is not this file's counter (a caller bug).
    pub(crate) fn into_region(self, ack: AckCounter<R>) -> R {
        assert!(self.mem.same(&ack.mem), "the AckCounter of another queue");
        drop(ack);
        match Arc::try_unwrap(self.mem.region) {
            Ok(r) => r,
            Err(_) => unreachable!("the queue and its counter were the only holders"),
        }
    }
}

impl PtcpQueue<HeapRegion> {
    #[cfg(any(test, fuzzing))]
    /// A queue of `capacity` message bytes in heap memory, with its
    /// counter: for tests and in-process use.
    ///
    /// # Panics
    /// If `capacity` is not a multiple of 8 of at least 8 (a caller bug).
    pub(crate) fn heap(capacity: usize) -> (Self, AckCounter<HeapRegion>) {
        PtcpQueue::open(HeapRegion::new(Self::region_size(capacity))).expect("a fresh region")
    }
}

impl PtcpQueue<Mapping> {
    /// Opens (or creates) the queue file at `path` with `capacity` bytes of
    /// messages (a multiple of 8). An existing file is checked, never
    /// overwritten.
    ///
    /// # Errors
    /// A [`FileError`] naming the file: it cannot be created, mapped or
    /// locked, has another size, or its content is corrupt.
    pub(crate) fn open_file(
        path: &Path,
        capacity: usize,
        opts: MapOptions,
    ) -> Result<(Self, AckCounter), FileError> {
        let m = Mapping::open(path, Self::region_size(capacity), opts)?;
        PtcpQueue::open(m).map_err(|why| FileError::corrupt(path, why))
    }

    /// [`open_file`](Self::open_file) for the queue of a pair: the file
    /// records the pair's tag when first opened, and is refused to any
    /// other pair ([`FileErrorKind::NameCollision`](crate::FileErrorKind::NameCollision)).
    ///
    /// # Errors
    /// As `open_file`, and the name collision.
    pub(crate) fn open_pair(
        path: &Path,
        capacity: usize,
        opts: MapOptions,
        tag: u64,
    ) -> Result<(Self, AckCounter), FileError> {
        let (q, ack) = Self::open_file(path, capacity, opts)?;
        // The file is locked (opts.lock): this process alone claims it.
        let stored = q.mem.get(OFF_PAIR);
        let want = pair_tag32(tag);
        if stored == 0 {
            q.mem.set(OFF_PAIR, want);
        } else if stored != want {
            return Err(FileError::new(path, crate::FileErrorKind::NameCollision));
        }
        Ok((q, ack))
    }
}

mod batch;
#[cfg(test)]
mod batch_kill;
#[cfg(test)]
mod kill;
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
