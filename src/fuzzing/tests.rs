//! The fuzz targets' entry points on the stable toolchain, in every test
//! run: inputs that once found bugs (`fuzz/regressions/<target>/`),
//! hand-made edge cases, mutations of valid inputs, and deterministic
//! random bytes. `fuzz/` runs the same entry points under libFuzzer.

use crate::fuzzing;
use crate::ptcp_queue::PtcpQueue;
use crate::wire::{Login, LoginResponse, MsgHeader};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = (self.next() % max as u64) as usize;
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn mutate(&mut self, mut v: Vec<u8>) -> Vec<u8> {
        for _ in 0..1 + self.next() % 4 {
            if v.is_empty() {
                break;
            }
            let i = (self.next() % v.len() as u64) as usize;
            v[i] = self.next() as u8;
        }
        v
    }
}

/// The inputs kept in `fuzz/regressions/<target>/` (every file but the
/// README): what the fuzzers once found, replayed in every test run.
fn saved(target: &str) -> Vec<Vec<u8>> {
    if cfg!(miri) {
        return Vec::new(); // no files under Miri's isolation
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    assert!(
        root.join("README.md").is_file(),
        "{} is missing",
        root.display()
    );
    let mut v: Vec<_> = std::fs::read_dir(root.join(target))
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_none_or(|x| x != "md"))
                .filter_map(|p| std::fs::read(p).ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn header(size: u16, t: u16, ack: u32) -> Vec<u8> {
    MsgHeader {
        size,
        msg_type: t,
        ack_seq: ack,
    }
    .encode()
    .to_vec()
}

const N: usize = if cfg!(miri) { 20 } else { 3000 };

#[test]
fn frames() {
    let mut rng = Rng(1);
    let login = Login::<u8>::default().encode(7);
    let rsp = LoginResponse::<u8>::default().encode(9);
    let mut inputs = saved("frames");
    inputs.extend([
        vec![],
        vec![0; 7],
        header(0, 1, 0),
        header(52, 1, 0),
        login.clone(),
        rsp.clone(),
    ]);
    for _ in 0..N {
        inputs.push(rng.bytes(100));
        inputs.push(rng.mutate(login.clone()));
        inputs.push(rng.mutate(rsp.clone()));
    }
    inputs.iter().for_each(|i| fuzzing::frames(i));
}

/// `session_recv` inputs: the sent count, the wrap flag, then the stream.
fn session_recv_seeds() -> Vec<Vec<u8>> {
    let mut valid = Vec::new();
    for k in 0..20u32 {
        valid.extend(header(8 + (k as u16 * 7) % 40, (k % 3) as u16, k % 6));
        valid.resize(
            valid.len().next_multiple_of(8) + ((8 + (k as usize * 7) % 40 + 7) & !7) - 8,
            k as u8,
        );
    }
    let mut relogin = Login::<u8>::default();
    relogin.client_name[..4].copy_from_slice(b"peer");
    let streams = [
        vec![],
        header(3, 1, 0),
        header(0, 0, 0),
        header(8, 0, 6),
        header(u16::MAX, 9, 0),
        [header(600, 5, 0), vec![1; 600]].concat(),
        [header(52, 1, 0), Login::<u8>::default().encode(0)].concat(),
        relogin.encode(0),
        [valid.clone(), relogin.encode(0), valid.clone()].concat(),
        valid.clone(),
    ];
    let mut seeds = Vec::new();
    for s in streams {
        seeds.push([&[5u8, 0][..], &s].concat()); // 5 sent, from 0
        seeds.push([&[39u8, 1][..], &s].concat()); // 39 sent, across the wrap
    }
    // Acks up to 5 sent (the header's k % 6), then one sent too few.
    seeds.push([&[4u8, 1][..], &valid].concat());
    seeds
}

#[test]
fn session_recv() {
    let mut rng = Rng(2);
    let mut inputs = saved("session_recv");
    let seeds = session_recv_seeds();
    for _ in 0..N {
        inputs.push(rng.bytes(700));
        inputs.push(rng.mutate(seeds[seeds.len() - 3].clone()));
    }
    inputs.extend(seeds);
    inputs.iter().for_each(|i| fuzzing::session_recv(i));
}

/// `ptcp_open` inputs: the shape byte (capacity `8 * (1 + (shape & 15))`
/// blocks; top bit: keep the header as given), the file, the operations.
fn ptcp_open_seeds() -> Vec<Vec<u8>> {
    // A file the library wrote: 6 messages, 40 bytes sent, 2 acked.
    let (mut q, ack) = PtcpQueue::heap(32 * 8);
    for i in 0..6 {
        q.alloc(1, i * 5).unwrap();
        q.push();
    }
    q.mark_sent(40);
    q.ack(2).unwrap();
    let file = q.into_region(ack).as_slice().to_vec();
    let ops: Vec<u8> = [
        &[0u8, 20, 7][..], // push 20 bytes of 7s
        &[8, 0, 1],        // push an empty one
        &[1, 9, 2],        // alloc, no push
        &[2, 40],          // 40 bytes sent
        &[3, 1, 0],        // ack the oldest + 1
        &[3, 9, 0],        // ack beyond what was sent
        &[4, 11, 1],       // login ack beyond what was pushed
        &[5],              // reopen
        &[6],              // every frame checked
        &[7, 2, 3],        // restart near the wrap
        &[0, 50, 1, 0, 60, 2, 2, 200, 3, 2, 0, 6],
    ]
    .concat();
    let valid = [&[3u8][..], &file].concat();
    vec![
        vec![],
        vec![0x80; 80],
        [&[3u8][..], &[0; 320]].concat(),
        valid.clone(),
        [valid, ops].concat(),
    ]
}

#[test]
fn ptcp_open() {
    let mut rng = Rng(3);
    let mut inputs = saved("ptcp_open");
    let seeds = ptcp_open_seeds();
    for _ in 0..N {
        inputs.push(rng.bytes(400));
        inputs.push(rng.mutate(seeds[4].clone()));
        // Mutations of the header and state slots only.
        let mut v = seeds[4].clone();
        let i = 1 + (rng.next() % 64) as usize;
        v[i] = rng.next() as u8;
        inputs.push(v);
    }
    inputs.extend(seeds);
    inputs.iter().for_each(|i| fuzzing::ptcp_open(i));
}

#[test]
fn shm_reader() {
    let mut rng = Rng(4);
    let mut inputs = saved("shm_reader");
    // write_idx 5, read_idx 0, v1, blocks: a message of 70 bytes, a wrap
    // marker.
    let mut valid = vec![5, 0, 0, 0, 0, 0, 0, 0, 0];
    valid.extend(header(70, 3, 0));
    valid.resize(9 + 64 * 2, 9);
    // The fast path announced at 0: the same message stamped 0, then one
    // stamped 2, then scribbles after the blocks (a header rewritten).
    let mut fast = vec![0, 0, 0, 0, 0, 0, 0, 0, 1];
    fast.extend(header(70, 3, 0));
    fast.resize(9 + 128, 9);
    fast.extend(header(20, 4, 2));
    fast.resize(9 + 1024, 7);
    fast.extend([3, 30, 0, 5, 0, 3, 0, 0, 0]);
    // The fast path with both commit records set (writer: index 2, count
    // 1; reader: index 0, count 0) and, after the blocks, a scribble of
    // write_idx (trailer word 0) to 9.
    let mut records = vec![0, 0, 0, 0, 0, 0, 0, 0, 3];
    records.extend((2u64 << 32 | 1 << 1 | 1).to_le_bytes());
    records.extend(0u64.to_le_bytes());
    records.extend(header(70, 3, 0));
    records.resize(25 + 1024, 5);
    records.extend([0x80, 9, 0, 0, 0, 0, 0, 0, 0]);
    inputs.extend([vec![], vec![0xff; 8], valid.clone(), fast.clone(), records]);
    for _ in 0..N {
        let mut v = rng.bytes(300);
        if v.len() >= 8 {
            // Mostly plausible indices, so the reader gets past the first checks.
            v[..4].copy_from_slice(&((rng.next() % 40) as u32).to_le_bytes());
            v[4..8].copy_from_slice(&((rng.next() % 8) as u32).to_le_bytes());
        }
        inputs.push(v);
        inputs.push(rng.mutate(valid.clone()));
        inputs.push(rng.mutate(fast.clone()));
    }
    inputs.iter().for_each(|i| fuzzing::shm_reader(i));
}

#[test]
fn shm_writer() {
    let mut rng = Rng(5);
    let mut inputs = saved("shm_writer");
    // alloc 30, fill, push, front, pop; then the same with a scribble of
    // write_idx and of block 0's header in between.
    let plain: Vec<u8> = [
        [0u8, 10, 0, 0, 0, 0, 0, 0, 0, 0],
        [1, 7, 0, 0, 0, 0, 0, 0, 0, 0],
        [2, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [3, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [4, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ]
    .concat();
    let hostile: Vec<u8> = [
        [0u8, 10, 0, 0, 0, 0, 0, 0, 0, 0],
        [5, 0x80, 3, 0, 0, 0, 0, 0, 0, 0],
        [1, 7, 0, 0, 0, 0, 0, 0, 0, 0],
        [5, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0],
        [2, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [3, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [5, 0x80, 0xff, 0xff, 0, 0, 0, 0, 0, 0],
        [3, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [4, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ]
    .concat();
    inputs.extend([vec![], plain.clone(), hostile.clone()]);
    for _ in 0..N {
        inputs.push(rng.bytes(600));
        inputs.push(rng.mutate(plain.clone()));
        inputs.push(rng.mutate(hostile.clone()));
    }
    inputs.iter().for_each(|i| fuzzing::shm_writer(i));
}

/// Inputs for the entry points that drive real peers over sockets: fewer
/// random ones (each starts a server or a client).
const PEER_N: usize = 150;

/// The inputs of a peer target: saved regressions, its seeds, and
/// `PEER_N` random inputs of up to `max` bytes and mutations of the seed
/// `mutated`.
fn peer_inputs(
    target: &str,
    rng: u64,
    seeds: Vec<Vec<u8>>,
    mutated: usize,
    max: usize,
) -> Vec<Vec<u8>> {
    let mut rng = Rng(rng);
    let mut inputs = saved(target);
    for _ in 0..PEER_N {
        inputs.push(rng.bytes(max));
        inputs.push(rng.mutate(seeds[mutated].clone()));
    }
    inputs.extend(seeds);
    inputs
}

/// A `server_login` login op: connection `i`, client range 0..0, name
/// pick `name` (index into the entry point's dictionary: 0 "a", 1 "b",
/// 3 "", 4 "../x"), last server pick (0 "srv", 1 none), header ack `ack`,
/// cut after `cut` bytes.
fn login_op(i: u8, shm: bool, name: u8, last: u8, ack: u8, cut: u8) -> Vec<u8> {
    vec![1, i, 0, 0, 0, if shm { 0 } else { 1 }, name, last, ack, cut]
}

/// Seeds that reach the deep paths of the server's login: a new pair
/// whose logon pushes 3 messages; the same name back on the existing pair
/// with ranges that fit, then with an ack beyond them (mismatch); an
/// invalid name; a path-like name; SHM; a login split in two; a silent
/// connection past the login timeouts.
fn server_login_seeds() -> Vec<Vec<u8>> {
    let fresh = [vec![0, 0, 0, 0, 3, 0, 0], login_op(0, false, 0, 1, 0, 20)].concat();
    let back = [
        fresh.clone(),
        vec![3, 0, 0, 0],                // close it
        vec![4, 0, 1],                   // a little time
        vec![0, 0],                      // connect again
        login_op(0, false, 0, 0, 3, 56), // ack 3 of [0, 3]: fits
        vec![3, 0, 0, 0, 0],
        login_op(1, false, 0, 0, 9, 0), // ack 9: mismatch
    ]
    .concat();
    let odd = [
        vec![2, 0, 3, 0, 0],
        login_op(0, false, 3, 1, 0, 9), // empty name
        vec![0, 0],
        login_op(1, true, 4, 1, 0, 30), // "../x" over shm
        vec![0, 0],
        login_op(2, true, 1, 1, 0, 56), // "b" over shm
        vec![0, 0, 4, 0, 80, 4, 0, 80], // silent, then 8 s
    ]
    .concat();
    vec![vec![], fresh, back, odd]
}

#[test]
#[cfg_attr(miri, ignore = "sockets")]
fn server_login() {
    peer_inputs("server_login", 6, server_login_seeds(), 2, 120)
        .iter()
        .for_each(|i| fuzzing::server_login(i));
}

/// Seeds for the client's login: an OK response from "srv" followed by
/// messages (a heartbeat, types 1 and 7, one with an ack beyond what the
/// client sent); a mismatch; a rejection; a short raw answer; an OK with a
/// persisted last server.
fn client_login_seeds() -> Vec<Vec<u8>> {
    // persisted, kind, rsp: start, end, user, name pick, ack
    let ok = vec![0, 0, 0, 0, 7, 0, 0];
    let frames = vec![
        4, 0, 0, 1, 0, // heartbeat
        2, 5, 1, 9, 9, 9, 9, 9, // type 1, 5 bytes
        3, 20, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18,
        19, // type 7
        3, 2, 0, 1, 2, 7, 7, // ack 2: beyond what was sent
        2, 1, 1, 1, // never delivered
    ];
    vec![
        vec![],
        [ok.clone(), frames.clone()].concat(),
        vec![0, 1, 0, 0, 0, 0, 0, 0],
        vec![0, 2, 0, 0, 0, 0, 0, 0],
        vec![0, 3, 40, 1, 2, 3],
        [vec![1], ok[1..].to_vec(), frames].concat(),
    ]
}

#[test]
#[cfg_attr(miri, ignore = "sockets")]
fn client_login() {
    peer_inputs("client_login", 7, client_login_seeds(), 1, 120)
        .iter()
        .for_each(|i| fuzzing::client_login(i));
}

/// Seeds for a logged-in session: pushes both ways with polls; bursts
/// that fill the small socket buffers (partial sends) and are read later;
/// a held message delivered again; clock jumps past the heartbeat and the
/// timeout, then a new login with resends.
fn session_conn_seeds() -> Vec<Vec<u8>> {
    let exchange = vec![0, 3, 1, 9, 4, 0, 6, 0, 0, 50, 16, 50, 6, 0, 4, 0];
    let bursts = vec![22, 0, 23, 0, 4, 0, 6, 0, 4, 0, 6, 0, 4, 0, 6, 0, 4, 0];
    let hold = vec![24, 0, 0, 5, 6, 0, 8, 0, 6, 0, 4, 0];
    let timeout = vec![
        0, 9, 7, 0, 60, 4, 0, 6, 0, 7, 0, 200, 4, 0, 6, 0, 9, 0, 6, 0, 4, 0,
    ];
    vec![
        vec![],
        exchange.clone(),
        [exchange.clone(), bursts.clone()].concat(),
        [hold, exchange.clone()].concat(),
        [bursts, timeout, exchange].concat(),
    ]
}

#[test]
#[cfg_attr(miri, ignore = "sockets")]
fn session_conn() {
    peer_inputs("session_conn", 8, session_conn_seeds(), 4, 160)
        .iter()
        .for_each(|i| fuzzing::session_conn(i));
}

/// Seeds for `shm_group`: pushes and polls with the clock moving
/// (rings, hot rings cooling down, the sweep); the same with the bell's
/// words of bits cleared after pushes (the sweep finds them); the header
/// scribbled; a writer's acknowledgement scribbled.
fn shm_group_seeds() -> Vec<Vec<u8>> {
    let plain = vec![0, 0, 0, 1, 2, 0, 2, 5, 250, 0, 2, 2, 1, 0x10, 2, 4, 2];
    let cleared = [
        vec![0, 0, 0, 1],
        vec![6, 8, 0, 0, 0, 0, 0, 0, 0, 0], // bits of slots 0-63 cleared
        vec![5, 250, 2, 5, 250, 2, 5, 250, 2],
    ]
    .concat();
    let header = [vec![6, 0, 1, 2, 3, 4, 5, 6, 7, 8], plain.clone()].concat();
    let ack = [vec![7, 1, 0, 9, 9, 9, 9, 9, 9, 9, 9], plain.clone()].concat();
    vec![vec![], plain, cleared, header, ack]
}

#[test]
#[cfg_attr(miri, ignore = "sockets")]
fn shm_group() {
    peer_inputs("shm_group", 9, shm_group_seeds(), 2, 120)
        .iter()
        .for_each(|i| fuzzing::shm_group(i));
}

/// Writes the hand-made seeds of the peer targets into `fuzz/seeds/`,
/// where `cargo fuzz run` (and CI) start from them:
/// `cargo test --lib -- --ignored write_corpus_seeds`.
#[test]
#[ignore = "writes fuzz/seeds; run by hand when the seeds change"]
fn write_corpus_seeds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    for (target, seeds) in [
        ("session_recv", session_recv_seeds()),
        ("ptcp_open", ptcp_open_seeds()),
        ("server_login", server_login_seeds()),
        ("client_login", client_login_seeds()),
        ("session_conn", session_conn_seeds()),
        ("shm_group", shm_group_seeds()),
    ] {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, s) in seeds.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
            std::fs::write(dir.join(format!("seed-{i}")), s).unwrap();
        }
    }
}

/// A message's fragments in the target's input format (a length byte,
/// then the fragment's payload), cut into pieces of `piece` bytes.
fn fragment_input(msg: &[u8], msg_type: u16, piece: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for (off, len) in crate::wire::pieces(msg.len(), piece + crate::wire::FRAGMENT_HEADER) {
        let mut f = vec![0; crate::wire::FRAGMENT_HEADER + len];
        crate::wire::write_fragment_header(&mut f, msg.len() as u32, off as u32, msg_type);
        f[crate::wire::FRAGMENT_HEADER..].copy_from_slice(&msg[off..off + len]);
        v.push(f.len() as u8);
        v.extend(f);
    }
    v
}

#[test]
fn fragments() {
    let mut rng = Rng(5);
    let msg: Vec<u8> = (0..600u32).map(|i| (i * 13) as u8).collect();
    let whole = fragment_input(&msg, 3, 200);
    let mut inputs = saved("fragments");
    // Taken whole; too large; orphans first; a piece missing; twice.
    for (max, body) in [
        (10u8, whole.clone()),
        (9, whole.clone()),
        (10, whole[whole.len() / 3..].to_vec()),
        (
            10,
            [&whole[..whole.len() / 3], &whole[2 * whole.len() / 3..]].concat(),
        ),
        (10, [&whole[..], &whole[..]].concat()),
    ] {
        inputs.push([&[max][..], &body[..]].concat());
    }
    for _ in 0..N {
        let base = inputs[(rng.next() % inputs.len() as u64) as usize].clone();
        inputs.push(rng.mutate(base));
        inputs.push(rng.bytes(300));
    }
    for input in &inputs {
        fuzzing::fragments(input);
    }
}
