//! Two threads, millions of variable-size messages through a small shm
//! queue (so it wraps and fills constantly), every byte checked, with a
//! deadline so a bug fails instead of hanging. Some messages take more
//! than half the ring, so the writer must publish wrap markers alone.

use std::time::{Duration, Instant};

use crate::shm_queue::heap_queue;

fn len_of(i: u64) -> usize {
    // Mostly small, sometimes up to a few blocks, sometimes empty, and one
    // in 256 more than half the 16 KiB ring.
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56;
    match h {
        0..=199 => (h % 56) as usize,
        200..=249 => (h * 3) as usize,
        250..=254 => 0,
        _ => 9000 + (i % 512) as usize,
    }
}

fn byte(i: u64, j: usize) -> u8 {
    (i as u8).wrapping_mul(31).wrapping_add(j as u8)
}

#[test]
fn millions_of_messages_every_byte_checked() {
    let n: u64 = if cfg!(miri) { 500 } else { 2_000_000 };
    let (mut w, mut r) = heap_queue(1 << 14).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let producer = std::thread::spawn(move || {
        for i in 0..n {
            let len = len_of(i);
            loop {
                if let Some(p) = w.alloc(i as u16, len) {
                    for (j, b) in p.iter_mut().enumerate() {
                        *b = byte(i, j);
                    }
                    w.push();
                    break;
                }
                assert!(Instant::now() < deadline, "producer stalled at {i}");
                std::thread::yield_now();
            }
        }
        w.lone_markers()
    });
    let mut bytes = 0usize;
    for i in 0..n {
        loop {
            if let Some((t, p)) = r.front().unwrap() {
                assert_eq!(t, i as u16, "message {i}");
                assert_eq!(p.len(), len_of(i), "message {i}");
                for (j, &b) in p.iter().enumerate() {
                    assert_eq!(b, byte(i, j), "message {i} byte {j}");
                }
                bytes += p.len();
                r.pop();
                break;
            }
            assert!(Instant::now() < deadline, "consumer stalled at {i}");
            std::thread::yield_now();
        }
    }
    let lone_markers = producer.join().unwrap();
    assert!(r.front().unwrap().is_none());
    assert!(bytes > 0);
    assert!(
        lone_markers > 0 || cfg!(miri),
        "the lone wrap-marker path was never taken"
    );
}
