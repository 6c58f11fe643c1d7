//! Entry points for the fuzz targets in `fuzz/` and for their regression
//! tests (`tests/fuzz_inputs.rs`). Each takes arbitrary bytes and must
//! neither panic nor hang; they are not part of the stable API.
#![forbid(unsafe_code)]

use std::io::{self, Read};
use std::sync::Arc;

use crate::ptcp_queue::PtcpQueue;
use crate::session::{RecvBuf, ReloginGuard};
use crate::shm_queue::{HeapRegion, ShmReader};
use crate::wire::{Login, LoginResponse, MsgHeader, Name, NAME_SIZE};

/// Frame decoding: headers, logins, responses, names. Whatever decodes
/// must encode back to what decodes the same.
pub fn frames(data: &[u8]) {
    let _ = MsgHeader::decode(data);
    if let Ok((h, l)) = Login::<u8>::decode(data) {
        let again = Login::<u8>::decode(&l.encode(h.ack_seq)).expect("re-decodes");
        assert_eq!(again, (h, l));
        let _ = Name::from_wire(&l.client_name);
        let _ = Name::from_wire_opt(&l.last_server_name);
    }
    if let Ok((h, r)) = LoginResponse::<u8>::decode(data) {
        let again = LoginResponse::<u8>::decode(&r.encode(h.ack_seq)).expect("re-decodes");
        assert_eq!(again, (h, r));
        let _ = r.error_text();
    }
    if let Ok((_, l)) = Login::<[u8; 13]>::decode(data) {
        let _ = l.user_data;
    }
    if data.len() >= NAME_SIZE {
        let mut f = [0u8; NAME_SIZE];
        f.copy_from_slice(&data[..NAME_SIZE]);
        if let Ok(n) = Name::from_wire(&f) {
            assert_eq!(Name::new(n.as_str()), Ok(n));
        }
    }
}

/// A reader that hands out `data` in chunks whose sizes come from the data.
struct Chunks<'a> {
    data: &'a [u8],
    pos: usize,
    step: usize,
}

impl Read for Chunks<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.data.len() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.step).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        self.step = self.step % 97 + 1 + (self.data[self.pos - 1] as usize % 13);
        Ok(n)
    }
}

/// The TCP session's receive path after a login: arbitrary bytes from the
/// peer, arriving in arbitrary pieces, with a send queue that holds 5 sent
/// messages (so acks 0..=5 are legal), messages consumed as they come.
pub fn session_recv(data: &[u8]) {
    let mut q =
        PtcpQueue::open(vec![0u8; PtcpQueue::<Vec<u8>>::region_size(512)]).expect("fresh queue");
    for i in 0..5u8 {
        q.alloc(1, 8).expect("room")[0] = i;
        q.push();
    }
    let n = q.sendable().len();
    q.mark_sent(n);
    let guard = ReloginGuard {
        msg_type: 1,
        size: Login::<u8>::SIZE as u16,
        name_off: Login::<u8>::CLIENT_NAME_OFFSET,
        name: *b"peer\0\0\0\0\0\0\0\0\0\0\0\0",
    };
    let mut buf = RecvBuf::new(64, 512);
    let mut src = Chunks {
        data,
        pos: 0,
        step: 1 + data.first().map_or(0, |b| *b as usize % 64),
    };
    // Every call reads at most one chunk; bound the loop by the input.
    for round in 0..=data.len() * 2 + 8 {
        match buf.read_from(&mut src, Some(&mut q), Some(&guard)) {
            Err(_) => return, // closed with a reason: fine
            Ok(Some(0)) if src.pos >= data.len() => return,
            Ok(_) => {}
        }
        // Consume some of what arrived (all of it on even rounds).
        let mut k = 0;
        while let Some((_t, off, len)) = buf.front() {
            let _ = buf.payload(off, len).iter().fold(0u8, |a, b| a ^ b);
            buf.pop();
            k += 1;
            if round % 2 == 1 && k == 2 {
                break;
            }
        }
        let (s, e) = q.seq_range();
        assert!(e.wrapping_sub(s) <= 5);
    }
}

/// The persisted queue file opened from arbitrary bytes, then used.
pub fn ptcp_open(data: &[u8]) {
    let Ok(mut q) = PtcpQueue::open(data.to_vec()) else {
        return;
    };
    let (s, e) = q.check().expect("open checked it");
    assert_eq!(q.seq_range(), (s, e));
    let _ = q.login_ack(s.wrapping_add(data.len() as u32 % 4));
    let n = q.sendable().len();
    q.mark_sent(n / 2);
    let _ = q.ack(s.wrapping_add(1));
    for i in 0..4usize {
        if let Some(p) = q.alloc(3, i * 9) {
            p.fill(i as u8);
            q.push();
        }
    }
    q.check().expect("still consistent");
    let again = PtcpQueue::open(q.region().clone()).expect("reopens");
    assert_eq!(again.seq_range(), q.seq_range());
}

/// The shm queue reader over arbitrary memory: the first 8 bytes are the
/// write and read indices (so short inputs reach every check), the rest
/// fills the blocks.
pub fn shm_reader(data: &[u8]) {
    let cap = 1024;
    let mut mem = vec![0u8; cap + crate::shm_queue::TRAILER];
    let idx = |o: usize| {
        let mut b = [0u8; 4];
        for (i, x) in b.iter_mut().enumerate() {
            *x = data.get(o + i).copied().unwrap_or(0);
        }
        b
    };
    mem[cap..cap + 4].copy_from_slice(&idx(0)); // write_idx
    mem[cap + 128..cap + 132].copy_from_slice(&idx(4)); // read_idx
    let body = data.get(8..).unwrap_or(&[]);
    let n = body.len().min(cap);
    mem[..n].copy_from_slice(&body[..n]);
    let region = Arc::new(HeapRegion::with_contents(cap, &mem).expect("capacity"));
    let mut r = ShmReader::new(region).expect("region");
    for _ in 0..64 {
        match r.front() {
            Ok(Some((_t, p))) => {
                let _ = p.iter().fold(0u8, |a, b| a ^ b);
                r.pop();
            }
            Ok(None) | Err(_) => return,
        }
    }
}
