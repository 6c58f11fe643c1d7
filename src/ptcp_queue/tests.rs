//! The send queue's unit tests over heap memory, and its files.
use std::path::{Path, PathBuf};

use super::*;
use crate::error::FileErrorKind;

type Q = PtcpQueue<HeapRegion>;

fn push(q: &mut Q, t: u16, payload: &[u8]) -> bool {
    match q.alloc(t, payload.len()) {
        Some(p) => {
            p.copy_from_slice(payload);
            q.push();
            true
        }
        None => false,
    }
}

fn reopen(q: Q, ack: AckCounter<HeapRegion>) -> Result<(Q, AckCounter<HeapRegion>), String> {
    PtcpQueue::open(q.into_region(ack))
}

#[test]
fn push_send_ack_and_reopen() {
    let (mut q, mut ack) = Q::heap(256);
    ack.set(5);
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
    let (q2, ack2) = reopen(q, ack).unwrap();
    assert_eq!(q2.seq_range(), (1, 2));
    assert_eq!((q2.local_ack(), ack2.get()), (5, 5));
    assert_eq!(q2.sendable().len(), 32, "reopen resends from the oldest");
}

#[test]
fn full_then_compaction() {
    let (mut q, _ack) = Q::heap(64); // 8 blocks
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
    let (mut q, ack) = Q::heap(80); // 10 blocks
    for i in 0..5u8 {
        assert!(push(&mut q, 1, &[i; 8]));
    }
    q.mark_sent(80);
    q.ack(2).unwrap(); // read = 4 blocks, live = 6 blocks: overlapping move
    assert_eq!(q.sendable().len(), 0);
    // Simulate a crash after the first chunk of the journaled copy.
    let (mut probe, ack) = reopen(q, ack).unwrap();
    probe.mem.set(OFF_PROGRESS, 0);
    probe.commit(State {
        compacting: 1,
        ..probe.st
    });
    let (read, chunk) = (probe.st.read as usize, probe.st.read as usize);
    probe
        .data_mut()
        .copy_within(read * 8..(read + chunk) * 8, 0);
    probe.mem.set(OFF_PROGRESS, chunk as u32);
    let (q2, _) = reopen(probe, ack).unwrap();
    assert_eq!(q2.seq_range(), (2, 5));
    assert_eq!(q2.st.read, 0);
    let d = q2.data();
    for (k, v) in (2u8..5).enumerate() {
        assert_eq!(&d[k * 16 + 8..k * 16 + 16], &[v; 8]);
    }
}

fn open_bytes(b: &[u8]) -> Result<(Q, AckCounter<HeapRegion>), String> {
    PtcpQueue::open(HeapRegion::with_contents(b.len(), b))
}

#[test]
fn corrupt_regions_are_errors() {
    assert!(open_bytes(&[0u8; 10]).is_err());
    let mut garbage = vec![0xA5u8; Q::region_size(64)];
    assert!(open_bytes(&garbage).unwrap_err().contains("magic"));
    garbage[..8].copy_from_slice(MAGIC);
    assert!(open_bytes(&garbage).is_err());
    let (mut q, ack) = Q::heap(64);
    push(&mut q, 1, &[1; 8]);
    let good = q.into_region(ack);
    let mut m = good.clone();
    // Header size 3 at the first message.
    let o = FILE_HEADER_SIZE;
    m.as_mut_slice()[o..o + 2].copy_from_slice(&[3, 0]);
    assert!(PtcpQueue::open(m.clone()).unwrap_err().contains("below 8"));
    // A size that runs past the write index.
    m.as_mut_slice()[o] = 200;
    assert!(PtcpQueue::open(m).unwrap_err().contains("past"));
    // Wrong version.
    let mut v = good.clone();
    v.as_mut_slice()[OFF_VERSION] = 9;
    assert!(PtcpQueue::open(v).unwrap_err().contains("version"));
    // A stored ack newer than the local ack (C++'s sanity check).
    let mut a = good;
    a.as_mut_slice()[o + 4] = 1;
    assert!(PtcpQueue::open(a)
        .unwrap_err()
        .contains("newer than the local ack"));
}

#[test]
fn reset_and_too_large() {
    let (mut q, mut ack) = Q::heap(64);
    assert!(q.alloc(1, 57).is_none(), "larger than the capacity");
    assert!(q.alloc(1, MAX_PAYLOAD + 1).is_none());
    push(&mut q, 1, &[1; 8]);
    ack.set(9);
    q.reset(&mut ack);
    assert_eq!(q.seq_range(), (0, 0));
    assert_eq!((q.local_ack(), ack.get()), (0, 0));
    assert!(q.sendable().is_empty());
}

#[test]
#[should_panic(expected = "another queue")]
fn reset_with_another_queues_counter_is_refused() {
    let (mut q, _) = Q::heap(64);
    let (_, mut other) = Q::heap(64);
    q.reset(&mut other);
}

/// The two halves on two threads: one pushes (stamping the ack), the
/// other pops (advancing it). Under Miri this is the data-race check of
/// the split: the ack word is the only memory both reach.
#[test]
fn halves_on_two_threads() {
    let n: u32 = if cfg!(miri) { 200 } else { 20_000 };
    let (mut q, mut ack) = Q::heap(256);
    let popper = std::thread::spawn(move || {
        for _ in 0..n {
            ack.advance();
        }
        ack
    });
    let mut stamps = Vec::new();
    for i in 0..n {
        if !push(&mut q, 1, &i.to_le_bytes()) {
            let all = q.sendable().len();
            q.mark_sent(all);
            let (_, end) = q.seq_range();
            q.ack(end).unwrap();
            assert!(push(&mut q, 1, &i.to_le_bytes()));
        }
        let s = q.sendable();
        let h = MsgHeader::decode(&s[s.len() - 16..]).unwrap();
        stamps.push(h.ack_seq);
    }
    let ack = popper.join().unwrap();
    assert_eq!(ack.get(), n);
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "acks only grow");
    assert!(stamps.iter().all(|&a| a <= n));
    q.check().unwrap();
}

// ---------------------------------------------------------- over files

const CAP: usize = 4096;
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tcpshm-ptcp-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn expect_err<T: std::fmt::Debug>(r: Result<T, FileError>, path: &Path) -> FileError {
    let e = r.expect_err("expected an error");
    assert_eq!(e.path, path);
    assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
    e
}

#[test]
#[cfg_attr(miri, ignore = "files")]
fn corrupt_ptcp_files_are_errors() {
    let dir = scratch("corrupt");
    let opts = MapOptions::default();
    let size = PtcpQueue::<HeapRegion>::region_size(CAP);

    // Truncated: a valid file cut short.
    let p = dir.join("trunc.ptcp");
    {
        let (mut q, _ack) = PtcpQueue::open_file(&p, CAP, opts).unwrap();
        q.alloc(5, 10).unwrap();
        q.push();
    }
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(100).unwrap();
    let e = expect_err(PtcpQueue::open_file(&p, CAP, opts), &p);
    assert!(
        matches!(e.kind, FileErrorKind::WrongSize { found: 100, .. }),
        "{e}"
    );
    // The file was not "repaired" behind the user's back.
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 100);

    // Garbage of the right size.
    let p = dir.join("garbage.ptcp");
    std::fs::write(&p, vec![0x5au8; size]).unwrap();
    let e = expect_err(PtcpQueue::open_file(&p, CAP, opts), &p);
    assert!(e.to_string().contains("magic"), "{e}");
    assert_eq!(
        std::fs::read(&p).unwrap(),
        vec![0x5au8; size],
        "not overwritten"
    );

    // Wrong magic on an otherwise valid file.
    let p = dir.join("magic.ptcp");
    drop(PtcpQueue::open_file(&p, CAP, opts).unwrap());
    let mut b = std::fs::read(&p).unwrap();
    b[0] = b'X';
    std::fs::write(&p, &b).unwrap();
    let e = expect_err(PtcpQueue::open_file(&p, CAP, opts), &p);
    assert!(matches!(e.kind, FileErrorKind::Corrupt(_)), "{e}");

    // Impossible sizes: a stored header of size 2, and indices past the end.
    let p = dir.join("sizes.ptcp");
    {
        let (mut q, _ack) = PtcpQueue::open_file(&p, CAP, opts).unwrap();
        q.alloc(5, 10).unwrap();
        q.push();
    }
    let good = std::fs::read(&p).unwrap();
    let sel = u32::from_le_bytes(good[16..20].try_into().unwrap()) as usize;
    let mut b = good.clone();
    b[64] = 2;
    std::fs::write(&p, &b).unwrap();
    let e = expect_err(PtcpQueue::open_file(&p, CAP, opts), &p);
    assert!(e.to_string().contains("below 8"), "{e}");
    let mut b = good.clone();
    let slot = 32 + sel * 16;
    b[slot..slot + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    let e = expect_err(PtcpQueue::open_file(&p, CAP, opts), &p);
    assert!(e.to_string().contains("out of range"), "{e}");
    let mut b = good;
    b[16] = 7; // selector
    std::fs::write(&p, &b).unwrap();
    expect_err(PtcpQueue::open_file(&p, CAP, opts), &p);

    // Unreadable: a directory where the file should be.
    let p = dir.join("adir.ptcp");
    std::fs::create_dir(&p).unwrap();
    let e = expect_err(PtcpQueue::open_file(&p, CAP, opts), &p);
    assert!(
        matches!(&e.kind, FileErrorKind::Io { source, .. } if source.raw_os_error().is_some()),
        "{e}"
    );

    std::fs::remove_dir_all(&dir).unwrap();
}

/// A file records its pair's tag and refuses another pair whose names
/// make the same file name (`a_b`+`c` and `a`+`b_c`).
#[test]
#[cfg_attr(miri, ignore = "files")]
fn a_queue_file_belongs_to_one_pair() {
    use crate::pair_files::pair_tag;
    use crate::wire::Name;
    let n = |s: &str| Name::new(s).unwrap();
    let dir = scratch("collide");
    let p = dir.join("a_b_c.ptcp");
    let opts = MapOptions::default();
    let t1 = pair_tag(&n("a_b"), &n("c"));
    drop(PtcpQueue::open_pair(&p, CAP, opts, t1).unwrap());
    drop(PtcpQueue::open_pair(&p, CAP, opts, t1).unwrap());
    let e = expect_err(
        PtcpQueue::open_pair(&p, CAP, opts, pair_tag(&n("a"), &n("b_c"))),
        &p,
    );
    assert!(matches!(e.kind, FileErrorKind::NameCollision), "{e}");
    assert!(e.to_string().contains("rename one of the peers"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
