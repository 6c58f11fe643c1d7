//! Messages larger than one frame: the fragment layout, cutting a message
//! into fragments, and putting fragments back together
//! (`docs/protocol.md`, "Messages over 64 KiB").
//!
//! A large message travels as consecutive protocol-v1 messages of type
//! [`FRAGMENT_TYPE`], committed as one atomic batch. Each fragment's
//! payload starts with a 12-byte header, then a piece of the message:
//!
//! | offset | type | field |
//! |---:|---|---|
//! | 0 | u32 | the message's length, in bytes |
//! | 4 | u32 | where this piece starts in the message |
//! | 8 | u16 | the message's type |
//! | 10 | u16 | 0 (reserved) |
//! | 12 | | the piece: at least one byte |
//!
//! The pieces follow each other without a gap, from offset 0 to the
//! message's length. A C++ peer sees ordinary messages of type
//! [`FRAGMENT_TYPE`].
//!
//! Fragments are peer input: [`Assembler::take`] validates every header
//! against the fragments before it and copies the piece into its own
//! buffer; nothing else is read twice.
#![forbid(unsafe_code)]

use std::fmt;

use super::u32_at;

/// `msg_type` of a fragment.
pub(crate) const FRAGMENT_TYPE: u16 = 0xfff0;
/// The first type of the range reserved for tcpshm (`0xfff0..=0xffff`);
/// applications cannot send these types.
pub(crate) const RESERVED_TYPES: u16 = 0xfff0;
/// Bytes of a fragment's header.
pub(crate) const FRAGMENT_HEADER: usize = 12;

/// Writes the header of the fragment of a `total`-byte message of type
/// `msg_type` whose piece starts at `offset`.
pub(crate) fn write_header(out: &mut [u8], total: u32, offset: u32, msg_type: u16) {
    out[0..4].copy_from_slice(&total.to_le_bytes());
    out[4..8].copy_from_slice(&offset.to_le_bytes());
    out[8..10].copy_from_slice(&msg_type.to_le_bytes());
    out[10..12].copy_from_slice(&[0, 0]);
}

/// The pieces of a `total`-byte message cut for fragments whose payload is
/// at most `max_payload` bytes (header included): `(offset, len)` each.
pub(crate) fn pieces(total: usize, max_payload: usize) -> impl Iterator<Item = (usize, usize)> {
    let step = max_payload.saturating_sub(FRAGMENT_HEADER).max(1);
    (0..total)
        .step_by(step)
        .map(move |off| (off, step.min(total - off)))
}

/// What a fragment held that an honest sender never sends, or a message
/// this side does not take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FragmentError {
    /// The message is larger than this side's `Config::max_message_size`
    /// (0: large messages not enabled).
    TooLarge {
        /// The message's length.
        len: u32,
        /// This side's largest.
        max: usize,
    },
    /// A header that does not follow the fragments before it.
    Bad,
}

impl fmt::Display for FragmentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FragmentError::TooLarge { len, max } => write!(
                f,
                "a message of {len} bytes is larger than Config::max_message_size {max}"
            ),
            FragmentError::Bad => f.write_str("a fragment out of sequence"),
        }
    }
}

/// What a fragment taken by [`Assembler::take`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// A piece of a message not yet whole.
    More,
    /// The last piece: the message is whole.
    Complete,
    /// A piece after the first of a message this side already consumed
    /// (a crash cut the consuming of its fragments short): skip it.
    Orphan,
}

/// Puts the fragments of one message back together, in a buffer made once
/// for the largest message this side takes.
#[derive(Debug)]
pub(crate) struct Assembler {
    buf: Vec<u8>,
    /// The message's length and type (while `got > 0`).
    total: usize,
    msg_type: u16,
    /// Bytes of the message taken so far.
    got: usize,
    /// Fragments taken so far.
    frames: u32,
}

impl Assembler {
    /// An assembler for messages of up to `max` bytes (allocated now).
    pub(crate) fn new(max: usize) -> Self {
        Assembler {
            buf: vec![0; max],
            total: 0,
            msg_type: 0,
            got: 0,
            frames: 0,
        }
    }

    /// Forgets a message in progress (a new session sends it again).
    pub(crate) fn reset(&mut self) {
        self.total = 0;
        self.got = 0;
        self.frames = 0;
    }

    /// Whether a message is in progress or whole.
    pub(crate) fn busy(&self) -> bool {
        self.frames > 0
    }

    /// Whether the message is whole.
    pub(crate) fn complete(&self) -> bool {
        self.frames > 0 && self.got == self.total
    }

    /// The length of the message in progress (0 with none).
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// Fragments of the message taken so far.
    pub(crate) fn frames(&self) -> u32 {
        self.frames
    }

    /// The whole message: `(msg_type, payload)`.
    pub(crate) fn message(&self) -> (u16, &[u8]) {
        (self.msg_type, &self.buf[..self.got])
    }

    /// Takes the payload of a fragment (its header and piece): checks it
    /// against what came before and copies the piece.
    ///
    /// # Errors
    /// [`FragmentError`]: nothing is taken; the assembler keeps what it
    /// had.
    pub(crate) fn take(&mut self, payload: &[u8]) -> Result<Step, FragmentError> {
        if payload.len() <= FRAGMENT_HEADER || self.complete() {
            return Err(FragmentError::Bad);
        }
        let (total, offset) = (u32_at(payload, 0), u32_at(payload, 4));
        let msg_type = u16::from_le_bytes([payload[8], payload[9]]);
        let piece = &payload[FRAGMENT_HEADER..];
        if payload[10..12] != [0, 0] || msg_type == 0 || msg_type >= RESERVED_TYPES {
            return Err(FragmentError::Bad);
        }
        if self.frames == 0 {
            if offset != 0 {
                // Only a message whose first fragment was consumed leaves
                // its other fragments first in line.
                return Ok(Step::Orphan);
            }
            if total as usize > self.buf.len() {
                return Err(FragmentError::TooLarge {
                    len: total,
                    max: self.buf.len(),
                });
            }
            self.total = total as usize;
            self.msg_type = msg_type;
        } else if total as usize != self.total
            || msg_type != self.msg_type
            || offset as usize != self.got
        {
            return Err(FragmentError::Bad);
        }
        let end = self.got + piece.len();
        if end > self.total {
            return Err(FragmentError::Bad);
        }
        self.buf[self.got..end].copy_from_slice(piece);
        self.got = end;
        self.frames += 1;
        Ok(if end == self.total {
            Step::Complete
        } else {
            Step::More
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frags(msg: &[u8], msg_type: u16, max_payload: usize) -> Vec<Vec<u8>> {
        pieces(msg.len(), max_payload)
            .map(|(off, len)| {
                let mut f = vec![0; FRAGMENT_HEADER + len];
                write_header(&mut f, msg.len() as u32, off as u32, msg_type);
                f[FRAGMENT_HEADER..].copy_from_slice(&msg[off..off + len]);
                f
            })
            .collect()
    }

    #[test]
    fn a_message_cut_and_put_back_is_the_same() {
        let msg: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let fs = frags(&msg, 42, 65_527);
        assert_eq!(fs.len(), 2);
        assert!(fs.iter().all(|f| f.len() <= 65_527));
        let mut a = Assembler::new(1 << 20);
        assert_eq!(a.take(&fs[0]), Ok(Step::More));
        assert!(!a.complete());
        assert_eq!(a.take(&fs[1]), Ok(Step::Complete));
        assert_eq!(a.message(), (42, &msg[..]));
        assert_eq!(a.frames(), 2);
        // A whole message takes nothing more until reset.
        assert_eq!(a.take(&fs[0]), Err(FragmentError::Bad));
        a.reset();
        assert!(!a.busy());
        assert_eq!(a.take(&fs[0]), Ok(Step::More));
    }

    #[test]
    fn fragments_out_of_sequence_are_refused() {
        let msg = vec![9u8; 300];
        let fs = frags(&msg, 7, 112);
        assert_eq!(fs.len(), 3);
        let mut a = Assembler::new(1000);
        // A later piece first: the rest of a message already consumed.
        assert_eq!(a.take(&fs[1]), Ok(Step::Orphan));
        assert_eq!(a.take(&fs[0]), Ok(Step::More));
        // The first again, a gap, another type, another length.
        assert_eq!(a.take(&fs[0]), Err(FragmentError::Bad));
        assert_eq!(a.take(&fs[2]), Err(FragmentError::Bad));
        let mut other = fs[1].clone();
        other[8] = 8;
        assert_eq!(a.take(&other), Err(FragmentError::Bad));
        let mut longer = fs[1].clone();
        longer[0] = 255;
        assert_eq!(a.take(&longer), Err(FragmentError::Bad));
        // A piece past the end, an empty piece, a reserved or zero type.
        let mut past = fs[2].clone();
        past.push(1);
        let mut b = Assembler::new(1000);
        for f in &fs[..2] {
            b.take(f).unwrap();
        }
        assert_eq!(b.take(&past), Err(FragmentError::Bad));
        assert_eq!(b.take(&fs[2][..FRAGMENT_HEADER]), Err(FragmentError::Bad));
        for t in [0u16, FRAGMENT_TYPE, 0xffff] {
            let mut f = fs[2].clone();
            f[8..10].copy_from_slice(&t.to_le_bytes());
            assert_eq!(b.take(&f), Err(FragmentError::Bad));
        }
        let mut flags = fs[2].clone();
        flags[10] = 1;
        assert_eq!(b.take(&flags), Err(FragmentError::Bad));
        assert_eq!(b.take(&fs[2]), Ok(Step::Complete));
        assert_eq!(b.message().1, &msg[..]);
    }

    #[test]
    fn a_message_larger_than_the_maximum_is_refused_at_its_first_fragment() {
        let fs = frags(&[1u8; 2000], 7, 1000);
        let mut a = Assembler::new(1999);
        assert_eq!(
            a.take(&fs[0]),
            Err(FragmentError::TooLarge {
                len: 2000,
                max: 1999
            })
        );
        assert!(!a.busy());
        let mut off = Assembler::new(0);
        assert!(matches!(
            off.take(&fs[0]),
            Err(FragmentError::TooLarge { max: 0, .. })
        ));
    }
}
