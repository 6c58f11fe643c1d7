//! The 8-byte header in front of every message (`docs/protocol.md` §1).
#![forbid(unsafe_code)]

use super::{padded, DecodeError, HEADER_SIZE};

/// The 8-byte header in front of every message (`docs/protocol.md` §1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MsgHeader {
    /// Header plus payload in bytes, padding excluded.
    pub size: u16,
    /// 0 heartbeat, 1 login, 2 login response, else application-defined.
    pub msg_type: u16,
    /// Application messages the sender has consumed from the receiver.
    pub ack_seq: u32,
}

impl MsgHeader {
    /// The header as it goes on the wire.
    #[inline]
    pub(crate) fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        self.encode_into(&mut b);
        b
    }

    /// Writes the header into the first 8 bytes of `out`.
    ///
    /// # Panics
    /// If `out` is shorter than 8 bytes (a caller bug, never input-driven).
    #[inline]
    pub(crate) fn encode_into(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.size.to_le_bytes());
        out[2..4].copy_from_slice(&self.msg_type.to_le_bytes());
        out[4..8].copy_from_slice(&self.ack_seq.to_le_bytes());
    }

    /// Reads a header from the first 8 bytes of `b` without judging it.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] if `b` has fewer than 8 bytes.
    #[inline]
    pub(crate) fn read(b: &[u8]) -> Result<MsgHeader, DecodeError> {
        match b.get(..HEADER_SIZE) {
            Some(h) => Ok(MsgHeader {
                size: u16::from_le_bytes([h[0], h[1]]),
                msg_type: u16::from_le_bytes([h[2], h[3]]),
                ack_seq: u32::from_le_bytes([h[4], h[5], h[6], h[7]]),
            }),
            None => Err(DecodeError::Truncated {
                need: HEADER_SIZE,
                have: b.len(),
            }),
        }
    }

    /// Reads and validates a header: `size` must be at least 8.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] or [`DecodeError::SizeTooSmall`].
    #[inline]
    pub(crate) fn decode(b: &[u8]) -> Result<MsgHeader, DecodeError> {
        let h = Self::read(b)?;
        if (h.size as usize) < HEADER_SIZE {
            return Err(DecodeError::SizeTooSmall(h.size));
        }
        Ok(h)
    }

    /// Bytes the message occupies on the wire and in the TCP queue.
    #[inline]
    pub(crate) fn padded_size(&self) -> usize {
        padded(self.size as usize)
    }
}
