//! The C++ library's `.ptcp` send-queue file, read and written byte for
//! byte, so `tcpshm inspect` shows one and `tcpshm import-cpp` carries its
//! unacknowledged messages into this project's format (whose layout is in
//! [`crate::ptcp_queue`]): replacing a C++ process by a tcpshm one then
//! loses nothing.
//!
//! The C++ file is its `PTCPQueue<Bytes>` object mapped as it is in memory
//! (x86-64, little-endian): `Bytes / 8` blocks of 8 bytes holding messages
//! in wire format (header little-endian, payload padded to 8), then five
//! u32: `write_idx`, `read_idx`, `send_idx` (block indices), `read_seq_num`
//! (the sequence number of the message at `read_idx`) and `ack_seq_num`
//! (messages consumed from the peer). The file is `Bytes + 20` bytes and
//! carries no magic.
#![forbid(unsafe_code)]

#[cfg(test)]
use crate::wire::padded;
use crate::wire::{MsgHeader, HEADER_SIZE};

/// Bytes after the blocks.
pub(crate) const TRAILER: usize = 20;

/// A C++ send queue, read and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CppQueue {
    /// `Bytes`: the block area in bytes.
    pub capacity: usize,
    /// Index one past the newest message, in 8-byte blocks.
    pub write_idx: u32,
    /// Index of the oldest unacknowledged message.
    pub read_idx: u32,
    /// Index of the next byte to send (may be inside a message).
    pub send_idx: u32,
    /// Sequence number of the message at `read_idx`.
    pub read_seq: u32,
    /// Messages this side has consumed from the peer (its ack).
    pub ack_seq: u32,
    /// The unacknowledged messages, oldest first: header and payload.
    pub messages: Vec<(MsgHeader, Vec<u8>)>,
}

/// Whether a file of `len` bytes has the size of a C++ queue (and could
/// not be one of ours, whose size is 64 plus a multiple of 8).
pub(crate) fn has_cpp_size(len: usize) -> bool {
    len >= TRAILER + 8 && len % 8 == 4
}

fn rd32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

impl CppQueue {
    /// Reads a C++ queue from the file's bytes, checking what the C++
    /// library checks at login (every stored header fits, and none is
    /// stamped with an ack newer than the file's own).
    ///
    /// # Errors
    /// What is wrong, in one line.
    pub(crate) fn parse(b: &[u8]) -> Result<CppQueue, String> {
        if !has_cpp_size(b.len()) {
            return Err(format!(
                "{} bytes is not the size of a C++ send queue (8 x blocks + 20)",
                b.len()
            ));
        }
        let capacity = b.len() - TRAILER;
        let blk_cnt = (capacity / 8) as u32;
        let t = capacity;
        let (write_idx, read_idx, send_idx) = (rd32(b, t), rd32(b, t + 4), rd32(b, t + 8));
        let (read_seq, ack_seq) = (rd32(b, t + 12), rd32(b, t + 16));
        if !(read_idx <= send_idx && send_idx <= write_idx && write_idx <= blk_cnt) {
            return Err(format!(
                "indices out of order: read {read_idx} send {send_idx} write {write_idx} capacity {blk_cnt} blocks"
            ));
        }
        let mut messages = Vec::new();
        let mut idx = read_idx;
        while idx < write_idx {
            let off = idx as usize * 8;
            let h = MsgHeader::decode(&b[off..capacity])
                .map_err(|e| format!("message at block {idx}: {e}"))?;
            let blks = (h.padded_size() / 8) as u32;
            if blks > write_idx - idx {
                return Err(format!(
                    "message at block {idx} of {} bytes runs past the write index {write_idx}",
                    h.size
                ));
            }
            if (ack_seq.wrapping_sub(h.ack_seq) as i32) < 0 {
                return Err(format!(
                    "message at block {idx} carries ack {} newer than the file's ack {ack_seq}",
                    h.ack_seq
                ));
            }
            messages.push((h, b[off + HEADER_SIZE..off + h.size as usize].to_vec()));
            idx += blks;
        }
        Ok(CppQueue {
            capacity,
            write_idx,
            read_idx,
            send_idx,
            read_seq,
            ack_seq,
            messages,
        })
    }

    /// Sequence numbers `(start, end)`: the oldest unacknowledged message
    /// and one past the newest.
    pub(crate) fn seq_range(&self) -> (u32, u32) {
        (
            self.read_seq,
            self.read_seq.wrapping_add(self.messages.len() as u32),
        )
    }

    #[cfg(test)]
    /// The file's bytes: a queue of `capacity` bytes holding `messages`
    /// (type and payload; each stamped with `ack_seq`) from sequence number
    /// `read_seq` on, none sent yet. What the C++ library leaves behind, for
    /// tests and tools.
    ///
    /// # Errors
    /// If the messages do not fit or `capacity` is not a multiple of 8.
    pub(crate) fn encode(
        capacity: usize,
        read_seq: u32,
        ack_seq: u32,
        messages: &[(u16, &[u8])],
    ) -> Result<Vec<u8>, String> {
        if capacity % 8 != 0 || capacity == 0 {
            return Err(format!("capacity {capacity} is not a multiple of 8"));
        }
        let mut b = vec![0u8; capacity + TRAILER];
        let mut off = 0;
        for &(t, p) in messages {
            let size = HEADER_SIZE + p.len();
            if size > u16::MAX as usize || off + padded(size) > capacity {
                return Err("the messages do not fit the capacity".into());
            }
            MsgHeader {
                size: size as u16,
                msg_type: t,
                ack_seq,
            }
            .encode_into(&mut b[off..]);
            b[off + HEADER_SIZE..off + size].copy_from_slice(p);
            off += padded(size);
        }
        let w = (off / 8) as u32;
        for (i, v) in [w, 0, 0, read_seq, ack_seq].into_iter().enumerate() {
            b[capacity + 4 * i..capacity + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_checks() {
        let b = CppQueue::encode(2000, 7, 3, &[(5, b"hello"), (6, &[1; 30])]).unwrap();
        assert_eq!(b.len(), 2020);
        let q = CppQueue::parse(&b).unwrap();
        assert_eq!((q.read_seq, q.ack_seq, q.write_idx), (7, 3, 2 + 5));
        assert_eq!(q.seq_range(), (7, 9));
        assert_eq!(q.messages[0].1, b"hello");
        assert_eq!(q.messages[1].0.msg_type, 6);
        let mut bad = b.clone();
        bad[2000..2004].copy_from_slice(&9999u32.to_le_bytes());
        assert!(CppQueue::parse(&bad).unwrap_err().contains("indices"));
        let mut newer = b.clone();
        newer[4..8].copy_from_slice(&4u32.to_le_bytes());
        assert!(CppQueue::parse(&newer).unwrap_err().contains("newer"));
        assert!(CppQueue::parse(&b[..64]).is_err());
    }
}
