//! The queues over real files: corrupt or foreign files give error values,
//! shm objects in /dev/shm. (kill -9 persistence: tests/ptcp_kill.rs, a
//! binary of its own, so its fork never runs beside these opens.)

use std::path::{Path, PathBuf};

use tcpshm::ptcp_queue::PtcpQueue;
use tcpshm::shm_queue::{ShmReader, ShmWriter};
use tcpshm::sys::MapOptions;
use tcpshm::{FileError, FileErrorKind};

const CAP: usize = 4096;
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tcpshm-files-{}-{name}", std::process::id()));
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
fn corrupt_ptcp_files_are_errors() {
    let dir = scratch("corrupt");
    let opts = MapOptions::default();
    let size = PtcpQueue::<tcpshm::sys::HeapRegion>::region_size(CAP);

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
    assert!(matches!(e.kind, FileErrorKind::Io { .. }), "{e}");
    assert_ne!(e.errno(), 0);

    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn shm_objects_in_dev_shm() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("no /dev/shm here: skipped");
        return;
    }
    let name = format!("tcpshm-test-{}", std::process::id());
    let p = tcpshm::shm_queue::shm_path(shm, &name, "peer");
    let _ = std::fs::remove_file(&p);
    let opts = MapOptions::default();
    // A writer and a reader over two separate mappings of one object, as
    // two processes would have.
    let mut w = ShmWriter::open_file(&p, 1 << 12, opts).unwrap();
    let mut r = ShmReader::open_file(&p, 1 << 12, opts).unwrap();
    // One writer and one reader per object: a second of either is refused
    // while the first lives (in this process or another).
    let e = expect_err(ShmWriter::open_file(&p, 1 << 12, opts), &p);
    assert!(matches!(e.kind, FileErrorKind::InUse), "{e}");
    let e = expect_err(ShmReader::open_file(&p, 1 << 12, opts), &p);
    assert!(matches!(e.kind, FileErrorKind::InUse), "{e}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&p).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    for i in 0..1000u32 {
        w.alloc(1, 4).unwrap().copy_from_slice(&i.to_le_bytes());
        w.push();
        let (_, pl) = r.front().unwrap().unwrap();
        assert_eq!(pl, i.to_le_bytes());
        r.pop();
    }
    // Messages persist in the object across unmapping (a crash).
    w.alloc(9, 3).unwrap().copy_from_slice(b"abc");
    w.push();
    drop((w, r));
    let mut r = ShmReader::open_file(&p, 1 << 12, opts).unwrap();
    assert_eq!(r.front().unwrap().unwrap(), (9, &b"abc"[..]));
    drop(r);
    // Wrong size and bad capacity are errors.
    drop(ShmWriter::open_file(&p, 1 << 12, opts).unwrap()); // the lock went with the end
    let e = expect_err(ShmWriter::open_file(&p, 1 << 13, opts), &p);
    assert!(matches!(e.kind, FileErrorKind::WrongSize { .. }), "{e}");
    let e = expect_err(ShmReader::open_file(&p, 1000, opts), &p);
    assert!(e.to_string().contains("power of two"), "{e}");
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn full_shm_filesystem_is_an_error_at_open() {
    // A small tmpfs would need mount privileges; a full one is simulated
    // by asking for more than /dev/shm can ever hold: posix_fallocate
    // fails with ENOSPC at open, not SIGBUS on first touch.
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        return;
    }
    let p = shm.join(format!("tcpshm-huge-{}.shm", std::process::id()));
    const ENOSPC: i32 = 28;
    const EFBIG: i32 = 27;
    let r = ShmWriter::open_file(&p, 1 << 36, MapOptions::default());
    let e = expect_err(r, &p);
    assert!(
        matches!(e.errno(), ENOSPC | EFBIG),
        "expected ENOSPC or EFBIG, got {e}"
    );
    assert!(!p.exists(), "a failed object is removed");
}
