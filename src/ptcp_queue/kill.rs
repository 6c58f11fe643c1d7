//! Persistence of the TCP send queue across kill -9: a child process
//! pushes messages into a file-backed queue and is killed with SIGKILL at
//! random moments; every message push returned for is there after a
//! reopen, and the file passes its sanity check.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::PtcpQueue;
use crate::sys::MapOptions;

const CAP: usize = 4096;
const CHILD_ENV: &str = "TCPSHM_PERSIST_CHILD_FILE";

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tcpshm-kill-{}-{name}", std::process::id()));
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
fn verify(q: &mut PtcpQueue) -> (u32, u32) {
    let (start, end) = q.seq_range();
    q.login_ack(start).unwrap();
    let s = q.sendable();
    let mut off = 0;
    for seq in start..end {
        let h = crate::wire::MsgHeader::decode(&s[off..]).unwrap();
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
/// returned. Spawned by the parent test; run alone it fails.
#[test]
#[ignore = "the child process of kill_9_loses_nothing_pushed, which runs it"]
fn persist_child() {
    let path = std::env::var(CHILD_ENV).expect("spawned by kill_9_loses_nothing_pushed");
    let (mut q, _ack) = PtcpQueue::open_file(Path::new(&path), CAP, MapOptions::default()).unwrap();
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

/// Kills the child on every exit path, a failed assertion included.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill(); // SIGKILL
        let _ = self.0.wait();
    }
}

/// kill -9 at random moments: every message push returned for is there
/// after a reopen, the sanity check passes, and nothing was corrupted.
#[test]
#[cfg_attr(miri, ignore = "processes and files")]
fn kill_9_loses_nothing_pushed() {
    let dir = scratch("kill");
    let file = dir.join("a_b.ptcp");
    let exe = std::env::current_exe().unwrap();
    let mut reported_total = 0u32;
    let mut rng = 0x9e37_79b9u32;
    for round in 0..12 {
        let mut child = Child(
            Command::new(&exe)
                .args([
                    "ptcp_queue::kill::persist_child",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, &file)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
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
        drop(child); // SIGKILL
        let last = last.unwrap_or_else(|| panic!("round {round}: child reported nothing"));
        let (mut q, _ack) = PtcpQueue::open_file(&file, CAP, MapOptions::default()).unwrap();
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
