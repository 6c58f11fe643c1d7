//! Messages larger than 64 KiB: a client asks for a snapshot, and the
//! server answers with one message of 1 MiB.
//!
//! A frame's size field is 16 bits. With `Config::max_message_size` set on
//! both sides, `ConnTx::send` (or `Batch::append`) cuts a larger message
//! into fragments and commits them as one batch: a crash leaves all of
//! them in the queue or none. The receiver gets the message whole, as one
//! `Received`, once every fragment has arrived. The queues must hold a
//! message whole: here 4 MiB each.
//!
//! ```text
//! cargo run --example large_messages
//! ```
//!
//! The run goes over TCP and then over shared memory, then shows what a
//! client without `max_message_size` gets: a clear close reason, and the
//! snapshot waiting in the server's queue.

use std::time::{Duration, Instant};

use tcpshm::{
    Accept, Client, ClientHandler, CloseReason, Config, ConnId, ConnTx, ControlHandler,
    GroupHandler, LoginRequest, Received, Server, Transport,
};

const SNAPSHOT: u16 = 2;
const MIB: usize = 1 << 20;

/// The server: answers each request with a snapshot of 1 MiB.
struct Snapshots;

impl ControlHandler for Snapshots {
    fn on_new_connection(&mut self, _: &LoginRequest) -> Accept {
        Accept::group(0)
    }
}

impl GroupHandler for Snapshots {
    fn on_client_msg(&mut self, _: ConnId, req: Received<'_>, tx: &mut ConnTx) {
        let book = snapshot(req.payload()[0]);
        // The snapshot is queued and the request consumed as one step.
        let mut reply = tx.batch();
        if reply.append(SNAPSHOT, &book).is_ok() {
            let _ = reply.commit_consuming(req);
        } // else the queue is full: the request comes back at the next poll
    }
}

/// Snapshot number `n`: 1 MiB of bytes derived from it.
fn snapshot(n: u8) -> Vec<u8> {
    (0..MIB).map(|i| (i / 4096) as u8 ^ n).collect()
}

/// The client: keeps the snapshots it receives.
#[derive(Default)]
struct Keep(Vec<Vec<u8>>);

impl ClientHandler for Keep {
    fn on_server_msg(&mut self, msg: Received<'_>, _: &mut ConnTx) {
        println!(
            "  a snapshot of {} bytes ({} fragments)",
            msg.payload().len(),
            msg.frames()
        );
        self.0.push(msg.payload().to_vec());
        msg.pop();
    }
}

fn config(dir: &std::path::Path, max_message_size: usize) -> Config {
    let mut cfg = Config::default();
    cfg.shm_dir = dir.join("shm"); // a deployment keeps /dev/shm
    cfg.max_message_size = max_message_size;
    cfg.tcp_queue_size = 4 * MIB;
    cfg.tcp_recv_buf_max_size = 4 * MIB + 64;
    cfg.shm_queue_size = 4 * MIB;
    cfg
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("tcpshm-large-{}", std::process::id()));
    let cfg = config(&dir, MIB);
    std::fs::create_dir_all(&cfg.shm_dir)?;
    let mut server: Server = Server::new("snapshots", dir.join("server"), cfg.clone())?;
    server.listen("127.0.0.1:0")?;
    let addr = server.local_addr().unwrap();
    let t0 = Instant::now();
    let now = || t0.elapsed().as_nanos() as i64;
    let deadline = Instant::now() + Duration::from_secs(30);

    for (name, transport, max) in [
        ("desk-tcp", Transport::Tcp, MIB),
        ("desk-shm", Transport::Shm, MIB),
        ("old-desk", Transport::Tcp, 0),
    ] {
        println!("{name} over {transport:?}, max_message_size {max}:");
        let mut client: Client = Client::new(name, dir.join(name), config(&dir, max))?;
        std::thread::scope(|s| {
            // The login blocks: the server is polled on this thread meanwhile.
            let login = s.spawn(|| client.connect(transport, addr, 0));
            while !login.is_finished() {
                server.poll(now(), &mut Snapshots);
            }
            login.join().unwrap()
        })?;
        let mut got = Keep::default();
        for n in 0..3u8 {
            client.connection().send(1, &[n])?;
            while got.0.len() <= usize::from(n) && !client.connection().is_closed() {
                assert!(Instant::now() < deadline, "no snapshot");
                server.poll(now(), &mut Snapshots);
                client.poll(now(), &mut got);
            }
            if let Some(close) = client.connection().close_reason() {
                // Without max_message_size the client refuses the first
                // fragment; the snapshot stays in the server's queue.
                println!("  closed: {close}");
                assert_eq!(close.reason, CloseReason::LargeMessage);
                break;
            }
            assert_eq!(got.0[usize::from(n)], snapshot(n), "snapshot {n}, whole");
        }
        client.stop();
        // The server sees the client go before the next one logs in.
        while server
            .stats()
            .iter()
            .any(|(_, c, s)| c.as_str() == name && s.connected)
        {
            assert!(
                Instant::now() < deadline,
                "the server did not see {name} go"
            );
            server.poll(now(), &mut Snapshots);
        }
    }
    drop(server);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
