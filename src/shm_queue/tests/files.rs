//! The ring over shared-memory objects in /dev/shm: one writer and one
//! reader per object, messages that outlive a crash, clear errors for a
//! wrong size, a full filesystem or another pair's object, and no page
//! fault on the first lap of a fresh ring.

use std::path::{Path, PathBuf};

use crate::error::{FileError, FileErrorKind};
use crate::shm_queue::{ShmReader, ShmWriter};
use crate::sys::MapOptions;

/// The pair tag of the objects here.
const TAG: u64 = 0x0074_6167;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tcpshm-shmfiles-{}-{name}", std::process::id()));
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
fn shm_objects_in_dev_shm() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("no /dev/shm here: skipped");
        return;
    }
    let p = shm.join(format!("tcpshm-test-{}_peer.shm", std::process::id()));
    let _ = std::fs::remove_file(&p);
    let opts = MapOptions::default();
    // A writer and a reader over two separate mappings of one object, as
    // two processes would have.
    let mut w = ShmWriter::open_file(&p, 1 << 12, opts, TAG).unwrap();
    let mut r = ShmReader::open_file(&p, 1 << 12, opts, TAG).unwrap();
    // One writer and one reader per object: a second of either is refused
    // while the first lives (in this process or another).
    let e = expect_err(ShmWriter::open_file(&p, 1 << 12, opts, TAG), &p);
    assert!(matches!(e.kind, FileErrorKind::InUse), "{e}");
    let e = expect_err(ShmReader::open_file(&p, 1 << 12, opts, TAG), &p);
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
    let mut r = ShmReader::open_file(&p, 1 << 12, opts, TAG).unwrap();
    assert_eq!(r.front().unwrap().unwrap(), (9, &b"abc"[..]));
    drop(r);
    // Wrong size and bad capacity are errors.
    drop(ShmWriter::open_file(&p, 1 << 12, opts, TAG).unwrap()); // the lock went with the end
    let e = expect_err(ShmWriter::open_file(&p, 1 << 13, opts, TAG), &p);
    assert!(matches!(e.kind, FileErrorKind::WrongSize { .. }), "{e}");
    let e = expect_err(ShmReader::open_file(&p, 1000, opts, TAG), &p);
    assert!(e.to_string().contains("power of two"), "{e}");
    std::fs::remove_file(&p).unwrap();
}

#[test]
#[cfg_attr(miri, ignore = "files")]
fn full_shm_filesystem_is_an_error_at_open() {
    // A small tmpfs would need mount privileges; a full one is simulated
    // by asking for more than /dev/shm has free: posix_fallocate fails
    // with ENOSPC at open, not SIGBUS on first touch.
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        return;
    }
    let p = shm.join(format!("tcpshm-huge-{}.shm", std::process::id()));
    const ENOSPC: i32 = 28;
    const EFBIG: i32 = 27;
    let c = std::ffi::CString::new("/dev/shm").unwrap();
    // SAFETY: a zeroed statvfs is a valid value; a valid C string and a
    // struct valid for the call.
    let free = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c.as_ptr(), &mut st), 0);
        st.f_bavail as u64 * st.f_frsize as u64
    };
    let beyond = (free as usize + 1).next_power_of_two();
    let r = ShmWriter::open_file(&p, beyond, MapOptions::default(), TAG);
    let e = expect_err(r, &p);
    let errno = match &e.kind {
        FileErrorKind::Io { source, .. } => source.raw_os_error(),
        _ => None,
    };
    assert!(
        matches!(errno, Some(ENOSPC | EFBIG)),
        "expected ENOSPC or EFBIG, got {e}"
    );
    assert!(!p.exists(), "a failed object is removed");
}

/// The minor page faults this thread has taken.
fn minor_faults() -> i64 {
    // SAFETY: getrusage writes the struct we pass; zeroed is a valid one.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage, RUSAGE_THREAD (Linux).
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) }, 0);
    u.ru_minflt
}

/// A fresh 1 MiB shared-memory ring (tmpfs, as in production) carries a
/// whole lap of messages without a page fault: without `MAP_POPULATE`
/// the writer's and the reader's first touch of each of its 256 pages
/// faulted (512 faults).
#[test]
#[cfg_attr(miri, ignore = "files")]
fn no_page_fault_on_the_first_lap_of_a_shm_ring() {
    let shm = std::path::Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("no /dev/shm: skipped");
        return;
    }
    let path = shm.join(format!("tcpshm-it-{}-faults.shm", std::process::id()));
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _rm = Remove(path.clone());
    let cap = 1 << 20;
    let mut w = ShmWriter::open_file(&path, cap, MapOptions::default(), TAG).unwrap();
    let mut r = ShmReader::open_file(&path, cap, MapOptions::default(), TAG).unwrap();
    let src = [7u8; 48];
    let mut sum = 0u64;
    let before = minor_faults();
    // One-block messages: a lap and a half of the 16,384 blocks.
    for i in 0..(cap / 64 * 3 / 2) as u32 {
        let p = w.alloc(1, 48).expect("room: the reader keeps up");
        p.copy_from_slice(&src);
        p[..4].copy_from_slice(&i.to_le_bytes());
        w.push();
        let (_, got) = r.front().unwrap().expect("published");
        sum += u64::from(u32::from_le_bytes(got[..4].try_into().unwrap()));
        r.pop();
    }
    let faults = minor_faults() - before;
    let n = (cap / 64 * 3 / 2) as u64;
    assert_eq!(sum, n * (n - 1) / 2, "every message read once");
    assert!(faults < 16, "{faults} page faults in a lap of the ring");
}

/// An object records its pair's tag when first opened and refuses an end
/// of another pair whose names make the same object name; the library's
/// clean-up of a renamed pair leaves another pair's object alone.
#[test]
#[cfg_attr(miri, ignore = "files")]
fn an_object_belongs_to_one_pair() {
    use crate::pair_files::{pair_tag, remove_shm_pair};
    use crate::wire::Name;
    let n = |s: &str| Name::new(s).unwrap();
    let dir = scratch("collide");
    let opts = MapOptions::default();
    // a_b writes to c: a_b_c.shm. Then a writes to b_c: the same name.
    let p = dir.join("a_b_c.shm");
    let w = ShmWriter::open_file(&p, 1 << 12, opts, pair_tag(&n("a_b"), &n("c"))).unwrap();
    drop(w);
    let e = expect_err(
        ShmWriter::open_file(&p, 1 << 12, opts, pair_tag(&n("a"), &n("b_c"))),
        &p,
    );
    assert!(matches!(e.kind, FileErrorKind::NameCollision), "{e}");
    let e = expect_err(
        ShmReader::open_file(&p, 1 << 12, opts, pair_tag(&n("a"), &n("b_c"))),
        &p,
    );
    assert!(matches!(e.kind, FileErrorKind::NameCollision), "{e}");
    // Removing the pair a/b_c's objects keeps a_b's.
    assert!(remove_shm_pair(&dir, &n("a"), &n("b_c")).is_empty());
    assert!(p.exists());
    assert_eq!(remove_shm_pair(&dir, &n("a_b"), &n("c")), vec![p.clone()]);
    std::fs::remove_dir_all(&dir).unwrap();
}
