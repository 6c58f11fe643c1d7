//! Batches in the TCP send queue: several messages written after the
//! write index and published by one state commit, and the
//! consume-and-reply, which also moves the local ack.
//!
//! # All or nothing
//!
//! A batch's messages are written after the write index, where no reader
//! of the file (a restarted process, the sender) looks. One commit (a
//! state slot, then the selector store) moves the write index past all of
//! them: a crash before the selector store leaves none in the queue, after
//! it all.
//!
//! # Consume and reply
//!
//! The local ack (offset 20) and the state slots are separate words, so
//! they cannot change in one store. The commit therefore records an
//! intent first:
//! 1. the new local ack goes to offset 24 (the journal word; no compaction
//!    is under way, `alloc` finishes one before it returns);
//! 2. the state commit moves the write index past the replies with the
//!    journal flag 2 (the intent): the commit point;
//! 3. the local ack word is set to the new ack;
//! 4. a second state commit clears the flag.
//!
//! [`PtcpQueue::open`] rolls an intent forward: it finds flag 2 only after
//! a crash between steps 2 and 4, and then sets the local ack to the
//! journal word's (a consume-and-reply consumes one message or more: the
//! word is the stored ack or up to 2^31 - 1 more, anything else is
//! refused as corrupt) and clears the flag. A crash before step 2 leaves
//! the requests unconsumed and no reply in the queue; after it, the
//! requests consumed and every reply queued.

use std::sync::atomic::{compiler_fence, Ordering};

use super::{AckCounter, PtcpQueue, State, BLK, INTENT, OFF_LOCAL_ACK, OFF_PROGRESS};
use crate::sys::Region;
use crate::wire::HEADER_SIZE;

/// A batch being written: our own record of it, never read back from the
/// file.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Tentative {
    /// Blocks written after the write index.
    blks: u32,
    /// Messages in it.
    n: u32,
    /// The last message's header block (counted from the write index) and
    /// size: where `batch_payload` is.
    last: Option<(u32, usize)>,
    /// The ack stamped into the last message (the newest: each is
    /// stamped with the local ack when it is allocated).
    last_ack: u32,
}

/// What a committed batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Committed {
    /// Messages published.
    pub(crate) messages: u32,
    /// The ack stamped into the last of them (the session's "the peer
    /// learns it from there"); `None` for an empty batch.
    pub(crate) stamped: Option<u32>,
}

impl<R: Region> PtcpQueue<R> {
    /// Starts a batch (dropping one not committed, and the pending `alloc`).
    pub(crate) fn batch_begin(&mut self) {
        self.pending = None;
        self.batch = Some(Tentative::default());
    }

    /// Adds a message of `msg_type` with `payload_len` bytes of payload to
    /// the batch and returns the payload to fill; the header, stamped with
    /// the current local ack, is written here. `None` without a batch, or
    /// when the batch with it does not fit (the batch is unchanged: what
    /// it holds can still be committed).
    pub(crate) fn batch_alloc(&mut self, msg_type: u16, payload_len: usize) -> Option<&mut [u8]> {
        let mut b = self.batch?;
        let ack = self.local_ack();
        let (size, blks) = self.place(b.blks, msg_type, payload_len, ack)?;
        b.last_ack = ack;
        b.last = Some((b.blks, size));
        b.blks += blks;
        b.n += 1;
        self.batch = Some(b);
        self.batch_payload()
    }

    /// The payload of the batch's last message.
    pub(crate) fn batch_payload(&mut self) -> Option<&mut [u8]> {
        let (at, size) = self.batch?.last?;
        let off = (self.st.write + at) as usize * BLK;
        Some(&mut self.data_mut()[off + HEADER_SIZE..off + size])
    }

    /// Messages in the batch.
    pub(crate) fn batch_len(&self) -> u32 {
        self.batch.map_or(0, |b| b.n)
    }

    /// Bytes of messages the queue holds at most.
    pub(crate) fn capacity(&self) -> usize {
        self.blk_cnt as usize * BLK
    }

    /// Publishes the batch: one state commit, so after a crash the queue
    /// holds all of it or none. With `consume`, the counter of this file's
    /// local ack and a count `k` (1 or more), the same commit consumes `k`
    /// more messages from the peer (see the module). `None` if `consume`
    /// is the counter of another file (nothing changes), else what was
    /// published.
    pub(crate) fn batch_commit(
        &mut self,
        consume: Option<(&mut AckCounter<R>, u32)>,
    ) -> Option<Committed> {
        if consume
            .as_ref()
            .is_some_and(|(a, _)| !self.mem.same(&a.mem))
        {
            return None;
        }
        let mut b = self.batch.take().unwrap_or_default();
        let write = self.st.write + b.blks;
        match consume {
            None => {
                if b.n > 0 {
                    self.commit(State { write, ..self.st });
                }
            }
            Some((ack, k)) => {
                let target = ack.get().wrapping_add(k);
                if let Some((at, _)) = b.last {
                    // The last reply carries the ack of its request (one
                    // send per reply): still after the write index, so
                    // nothing reads it before the commit, and an open
                    // after a crash rolls the local ack forward before it
                    // checks the stamps.
                    let off = (self.st.write + at) as usize * BLK + 4;
                    self.data_mut()[off..off + 4].copy_from_slice(&target.to_le_bytes());
                    b.last_ack = target;
                }
                self.mem.set(OFF_PROGRESS, target);
                crate::failpoint::hit();
                // The journal word before the commit that names it (a kill
                // between two stores sees them in program order).
                compiler_fence(Ordering::SeqCst);
                self.commit(State {
                    write,
                    compacting: INTENT,
                    ..self.st
                });
                ack.set(target);
                crate::failpoint::hit();
                compiler_fence(Ordering::SeqCst);
                self.commit(State {
                    compacting: 0,
                    ..self.st
                });
            }
        }
        self.seq_end = self.seq_end.wrapping_add(b.n);
        Some(Committed {
            messages: b.n,
            stamped: (b.n > 0).then_some(b.last_ack),
        })
    }

    /// At open, the state slot says a consume-and-reply committed and may
    /// not have set the local ack: sets it to the journal word, then
    /// clears the flag (see the module).
    ///
    /// # Errors
    /// A journal word older than the local ack (or 2^31 or more ahead).
    pub(super) fn roll_forward(&mut self) -> Result<(), String> {
        let target = self.mem.get(OFF_PROGRESS);
        let ack = self.mem.get(OFF_LOCAL_ACK);
        let ahead = target.wrapping_sub(ack);
        if ahead >= 1 << 31 {
            return Err(format!(
                "consume intent for local ack {target}, the file's ack is {ack}"
            ));
        }
        if ahead > 0 {
            self.mem.set(OFF_LOCAL_ACK, target);
            crate::failpoint::hit();
            compiler_fence(Ordering::SeqCst);
        }
        self.commit(State {
            compacting: 0,
            ..self.st
        });
        Ok(())
    }
}
