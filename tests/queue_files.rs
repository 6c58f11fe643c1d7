//! The queues over real files: persistence across kill -9 of the writing
//! process, and corrupt or foreign files giving error values.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tcpshm::ptcp_queue::PtcpQueue;
use tcpshm::shm_queue::{map_shm, ShmReader, ShmWriter};
use tcpshm::sys::{MapOptions, SharedMapping};
use tcpshm::{FileError, FileErrorKind};

const CAP: usize = 4096;
const CHILD_ENV: &str = "TCPSHM_PERSIST_CHILD_FILE";

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tcpshm-files-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn payload(seq: u32) -> Vec<u8> {
    let len = (seq as usize * 13) % 90;
    (0..len).map(|j| (seq as usize + j) as u8).collect()
}

/// Checks that the queue holds the messages `start..end`, each with the
/// payload of its sequence number.
fn verify(q: &mut PtcpQueue<SharedMapping>) -> (u32, u32) {
    let (start, end) = q.seq_range();
    q.login_ack(start).unwrap();
    let s = q.sendable();
    let mut off = 0;
    for seq in start..end {
        let h = tcpshm::wire::MsgHeader::decode(&s[off..]).unwrap();
        let p = payload(seq);
        assert_eq!(h.msg_type, (seq % 60000) as u16 + 10, "seq {seq}");
        assert_eq!(&s[off + 8..off + h.size as usize], &p[..], "seq {seq}");
        off += h.padded_size();
    }
    assert_eq!(off, s.len());
    (start, end)
}

/// The child: pushes messages forever, acking older ones as a peer would
/// (so compaction runs), and reports each sequence number once push has
/// returned. Runs only when spawned by the parent test.
#[test]
fn persist_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut q = PtcpQueue::open_file(Path::new(&path), CAP, MapOptions::default()).unwrap();
    let (_, mut next) = verify(&mut q);
    let mut out = std::io::stdout();
    loop {
        let p = payload(next);
        let Some(b) = q.alloc((next % 60000) as u16 + 10, p.len()) else {
            // Full: the "peer" acks all but the newest few.
            let (s, e) = q.seq_range();
            let keep = (next % 7).min(e - s);
            q.mark_sent(q.sendable().len());
            q.ack(e - keep).unwrap();
            let _ = s;
            continue;
        };
        b.copy_from_slice(&p);
        q.push();
        use std::io::Write;
        writeln!(out, "{next}").unwrap();
        out.flush().unwrap();
        next += 1;
    }
}

/// kill -9 at random moments: every message push returned for is there
/// after a reopen, the sanity check passes, and nothing was corrupted.
#[test]
fn kill_9_loses_nothing_pushed() {
    let dir = scratch("kill");
    let file = dir.join("a_b.ptcp");
    let exe = std::env::current_exe().unwrap();
    let mut reported_total = 0u32;
    let mut rng = 0x9e37_79b9u32;
    for round in 0..12 {
        let mut child = Command::new(&exe)
            .args([
                "persist_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &file)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        let target = 50 + rng % 3000;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = None;
        for _ in 0..target {
            match lines.next() {
                Some(Ok(l)) => match l.trim().parse::<u32>() {
                    Ok(v) => last = Some(v),
                    Err(_) => continue, // the test harness's own lines
                },
                _ => break,
            }
            assert!(Instant::now() < deadline, "child too slow");
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let last = last.unwrap_or_else(|| panic!("round {round}: child reported nothing"));
        let mut q = PtcpQueue::open_file(&file, CAP, MapOptions::default()).unwrap();
        let (_, end) = verify(&mut q);
        assert!(
            end > last,
            "round {round}: message {last} was pushed but is gone (end {end})"
        );
        reported_total = last;
    }
    assert!(reported_total > 12, "the child made progress");
    std::fs::remove_dir_all(&dir).unwrap();
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
    let size = PtcpQueue::<Vec<u8>>::region_size(CAP);

    // Truncated: a valid file cut short.
    let p = dir.join("trunc.ptcp");
    {
        let mut q = PtcpQueue::open_file(&p, CAP, opts).unwrap();
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
        let mut q = PtcpQueue::open_file(&p, CAP, opts).unwrap();
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
    let e = expect_err(map_shm(&p, 1 << 13, opts), &p);
    assert!(matches!(e.kind, FileErrorKind::WrongSize { .. }), "{e}");
    let e = expect_err(map_shm(&p, 1000, opts), &p);
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
    let r = map_shm(&p, 1 << 36, MapOptions::default());
    let e = expect_err(r, &p);
    assert!(
        matches!(e.errno(), ENOSPC | EFBIG),
        "expected ENOSPC or EFBIG, got {e}"
    );
    assert!(!p.exists(), "a failed object is removed");
}
