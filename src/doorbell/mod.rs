//! A group's doorbell: how a server's SHM group with many connections
//! learns which rings have messages without looking at every ring.
//!
//! The bell is a shared-memory object the server makes for the group,
//! `<shm_dir>/<server>.<group>.bell`: a header line, then one 64-byte line
//! per 64 slots whose first word holds a bit per slot. A tcpshm client
//! whose server announced the bell (`bits::announce`, in words of the
//! ring's trailer a C++ peer never touches) rings its slot's bit after
//! every publication; the group's poll takes the words that are not zero
//! and polls the rings they name, so an idle poll reads N/64 words that
//! stay in its cache. Rings whose writer does not ring (a C++ or v1 peer)
//! are polled at every poll, as before.
//!
//! The bell is peer-written memory: any client can set or clear any bit.
//! A bit set for nothing costs a look at a ring; a bit cleared before the
//! server took it delays a message until the group's slow sweep
//! (`Config::shm_sweep_interval`), which also finds the message of a
//! writer killed between its publication and its ring.

mod bits;

/// The atomics `bits` uses (loom's in the loom test).
pub(crate) mod sync {
    pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
}

use std::path::Path;

pub(crate) use self::bits::{acknowledge, acknowledged, announce, announcement};
use crate::error::{FileError, FileErrorKind};
use crate::sys::files;
use crate::sys::{Lock, MapOptions, Mapping};

/// Header words: magic, version, slots.
const MAGIC: u64 = u64::from_le_bytes(*b"TSHMBELL");
const VERSION: u64 = 1;
const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 8;
const OFF_SLOTS: usize = 16;
/// A cache line: the header's, and each word of bits's (the 64 clients
/// of a word share its line; two words never share one).
const LINE: usize = 64;
/// The largest bell a client maps.
const MAX_LEN: usize = LINE * (1 + MAX_SLOTS as usize / 64);

/// The high 16 bits of an announcement: `ANNOUNCED << 48 | group << 32 |
/// slot`.
const ANNOUNCED: u64 = 0xbe11;

/// The announcement of `slot` in `group` (`None` past their ranges).
pub(crate) fn announcement_of(group: usize, slot: usize) -> Option<u64> {
    let (g, s) = (u16::try_from(group).ok()?, u32::try_from(slot).ok()?);
    Some(ANNOUNCED << 48 | u64::from(g) << 32 | u64::from(s))
}

/// The group and slot an announcement names, if it is one.
pub(crate) fn parse_announcement(word: u64) -> Option<(usize, usize)> {
    (word >> 48 == ANNOUNCED).then_some(((word >> 32) as u16 as usize, word as u32 as usize))
}

/// The most slots a bell holds (2^20: 128 KiB of bell).
pub(crate) const MAX_SLOTS: u64 = 1 << 20;

/// Bytes of a bell for `slots` slots (at most `MAX_SLOTS`, checked where
/// the number comes from a peer).
fn len_for(slots: usize) -> usize {
    LINE * (1 + slots.div_ceil(64))
}

/// The bytes a bell of `slots` slots read from a file must have; `None`
/// for a number no bell has.
fn len_for_peer(slots: u64) -> Option<usize> {
    (slots <= MAX_SLOTS).then(|| len_for(slots as usize))
}

/// What a bell file holds, read without mapping or locking it (for
/// `admin::doorbell`): its slots, and how many bits are set now. `Err`:
/// what makes it no bell.
pub(crate) fn read_header(bytes: &[u8]) -> Result<(u64, u32), String> {
    let word = |off: usize| {
        bytes
            .get(off..off + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    if bytes.len() < 2 * LINE || word(OFF_MAGIC) != Some(MAGIC) {
        return Err("no doorbell magic".into());
    }
    if word(OFF_VERSION) != Some(VERSION) {
        return Err(format!(
            "doorbell version {:?}, not {VERSION}",
            word(OFF_VERSION)
        ));
    }
    let slots = word(OFF_SLOTS).unwrap_or(0);
    if len_for_peer(slots) != Some(bytes.len()) {
        return Err(format!("{slots} slots, but {} bytes", bytes.len()));
    }
    let rung = (LINE..bytes.len())
        .step_by(LINE)
        .map(|off| word(off).unwrap_or(0).count_ones())
        .sum();
    Ok((slots, rung))
}

/// The server's side of a group's bell: it makes it and takes its bits.
#[derive(Debug)]
pub(crate) struct Doorbell {
    map: Mapping,
    lines: usize,
}

impl Doorbell {
    /// Makes the bell of a group of `slots` slots at `path` (mode
    /// `mode`), locked while this value lives: a second server of the
    /// same name over the same `shm_dir` is refused with "in use". A bell
    /// left by a server that is gone is taken over (or replaced, if its
    /// size differs), its bits cleared.
    ///
    /// # Errors
    /// A [`FileError`] naming the file.
    pub(crate) fn create(path: &Path, slots: usize, mode: u32) -> Result<Doorbell, FileError> {
        let len = len_for(slots);
        let opts = MapOptions {
            mode,
            lock: Lock::File,
        };
        let map = match Mapping::open(path, len, opts) {
            Err(FileError {
                kind: FileErrorKind::WrongSize { .. },
                ..
            }) => {
                // A bell of another configuration, which no server holds
                // (else: "in use"): replaced. A client still mapping it
                // keeps the old one, and rings nothing anyone reads until
                // it logs in again.
                files::take_for_removal(path, None)?.remove()?;
                Mapping::open(path, len, opts)?
            }
            r => r?,
        };
        let lines = slots.div_ceil(64);
        for l in 0..lines {
            map.word64(LINE * (1 + l)).store(0, sync::Ordering::Relaxed);
        }
        map.word64(OFF_VERSION)
            .store(VERSION, sync::Ordering::Relaxed);
        map.word64(OFF_SLOTS)
            .store(slots as u64, sync::Ordering::Relaxed);
        // Release: a client that reads the magic (after the announcement,
        // which comes later still) sees the header.
        map.word64(OFF_MAGIC).store(MAGIC, sync::Ordering::Release);
        Ok(Doorbell { map, lines })
    }

    /// Words of bits (64 slots each).
    pub(crate) fn lines(&self) -> usize {
        self.lines
    }

    /// The bits rung in word `line` since the last take (slot `64 * line
    /// + b` for bit `b`), cleared; one load when none is.
    #[inline(always)]
    pub(crate) fn take(&self, line: usize) -> u64 {
        bits::take(self.map.word64(LINE * (1 + line)))
    }
}

/// A client's side of its server's bell: its slot's bit, rung after each
/// publication.
#[derive(Debug)]
pub(crate) struct Ringer {
    map: Mapping,
    off: usize,
    bit: u64,
}

impl Ringer {
    /// Maps the bell at `path` for `slot`, if it is a bell (header
    /// checked) with that slot: the file is the server's, and read as
    /// input.
    ///
    /// # Errors
    /// Why not: the file cannot be mapped, or is no bell for `slot`.
    pub(crate) fn open(path: &Path, slot: usize) -> Result<Ringer, String> {
        let map = Mapping::open_existing(path, MAX_LEN).map_err(|e| e.to_string())?;
        let word = |off| map.word64(off).load(sync::Ordering::Acquire);
        if map.len() < 2 * LINE || word(OFF_MAGIC) != MAGIC || word(OFF_VERSION) != VERSION {
            return Err(format!("{} is no doorbell", path.display()));
        }
        let slots = word(OFF_SLOTS);
        if len_for_peer(slots) != Some(map.len()) || slot as u64 >= slots {
            return Err(format!(
                "{}: slot {slot} of {slots}, {} bytes",
                path.display(),
                map.len()
            ));
        }
        Ok(Ringer {
            map,
            off: LINE * (1 + slot / 64),
            bit: 1 << (slot % 64),
        })
    }

    /// Rings: after a publication.
    #[inline(always)]
    pub(crate) fn ring(&self) {
        bits::ring(self.map.word64(self.off), self.bit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("tcpshm-bell-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d.join(name)
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri does not support mmap of files")]
    fn rings_reach_the_bits_of_their_slots_once() {
        let p = tmp("a.0.bell");
        let bell = Doorbell::create(&p, 130, 0o600).unwrap();
        assert_eq!(bell.lines(), 3);
        let r0 = Ringer::open(&p, 0).unwrap();
        let r129 = Ringer::open(&p, 129).unwrap();
        let r65 = Ringer::open(&p, 65).unwrap();
        assert!(Ringer::open(&p, 130).is_err(), "beyond the slots");
        r0.ring();
        r129.ring();
        r129.ring();
        r65.ring();
        assert_eq!(bell.take(0), 1);
        assert_eq!(bell.take(1), 2);
        assert_eq!(bell.take(2), 2);
        assert_eq!((bell.take(0), bell.take(1), bell.take(2)), (0, 0, 0));
        // A second server of the same name is refused; a new one after the
        // first takes the bell over, and a different size replaces it.
        assert!(matches!(
            Doorbell::create(&p, 130, 0o600),
            Err(FileError {
                kind: FileErrorKind::InUse,
                ..
            })
        ));
        r0.ring();
        drop(bell);
        let bell = Doorbell::create(&p, 130, 0o600).unwrap();
        assert_eq!(bell.take(0), 0, "bits cleared at start");
        drop(bell);
        let bell = Doorbell::create(&p, 10, 0o600).unwrap();
        assert_eq!(bell.lines(), 1);
        assert!(Ringer::open(&p, 10).is_err());
        Ringer::open(&p, 9).unwrap().ring();
        assert_eq!(bell.take(0), 1 << 9);
        drop(bell);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri does not support mmap of files")]
    fn a_file_that_is_no_bell_is_refused() {
        let p = tmp("junk.bell");
        std::fs::write(&p, [7u8; 256]).unwrap();
        assert!(Ringer::open(&p, 0).is_err());
        std::fs::write(&p, [7u8; 13]).unwrap();
        assert!(Ringer::open(&p, 0).is_err());
        // A header claiming more slots than any bell has (no overflow).
        let mut b = vec![0u8; 128];
        b[..8].copy_from_slice(b"TSHMBELL");
        b[8] = 1;
        b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(&p, &b).unwrap();
        assert!(Ringer::open(&p, 0).is_err());
        assert!(read_header(&b).is_err());
        assert!(Ringer::open(&tmp("missing.bell"), 0).is_err());
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn announcements_name_their_group_and_slot() {
        let w = announcement_of(3, 70_000).unwrap();
        assert_eq!(parse_announcement(w), Some((3, 70_000)));
        assert_eq!(parse_announcement(0), None);
        assert_eq!(parse_announcement(w ^ 1 << 60), None);
        assert!(announcement_of(1 << 16, 0).is_none());
    }
}
