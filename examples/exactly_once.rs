//! Exactly-once request/reply, across kill -9 of the server.
//!
//! A request is consumed by popping it and answered by pushing a reply;
//! done one after the other, a crash can fall between the two:
//! - reply, then pop: after a crash in between, the request is delivered
//!   again although its reply exists;
//! - pop, then reply: after a crash in between, the reply is lost.
//!
//! A [`Batch`](tcpshm::Batch) committed with
//! [`commit_consuming`](tcpshm::Batch::commit_consuming) does both as one
//! step: after a crash at any instruction, either the request is still
//! unconsumed and no reply exists, or it is consumed and its reply is
//! queued. The restarted server is handed exactly the requests it has not
//! answered, with no bookkeeping of its own.
//!
//! While more requests wait, the server answers up to 8 with one commit:
//! it [`hold`](tcpshm::Received::hold)s each but the last, which the
//! commit consumes with them, all or none.
//!
//! ```text
//! cargo run --example exactly_once
//! ```
//!
//! runs the server as a child process, kills it with SIGKILL at random
//! moments (the server waits a little between writing its reply and
//! committing it, so some kills land there), starts it again, and checks
//! that every one of the client's requests gets exactly one reply, in
//! order.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tcpshm::{
    Accept, Client, ClientHandler, Close, Config, ConnId, ConnTx, ControlHandler, GroupHandler,
    LoginRequest, Name, Received, Server, Transport,
};

/// The server's handler: answers request `n` with `2n`, exactly once.
#[derive(Default)]
struct Replier {
    /// The requests held, per connection (`None`: not a request of this
    /// example, consumed unanswered).
    held: HashMap<ConnId, Vec<Option<u64>>>,
}

impl ControlHandler for Replier {
    fn on_new_connection(&mut self, _: &LoginRequest) -> Accept {
        Accept::group(0)
    }
}

impl GroupHandler for Replier {
    fn on_client_msg(&mut self, id: ConnId, mut msg: Received<'_>, tx: &mut ConnTx) {
        let n = msg.payload().try_into().ok().map(u64::from_le_bytes);
        let held = self.held.entry(id).or_default();
        if held.len() < 7 && msg.next_ready() {
            // More requests wait: this one is answered with the last.
            match msg.hold() {
                Ok(()) => return held.push(n),
                Err(large) => msg = large, // (a large message is not held)
            }
        }
        let mut reply = tx.batch();
        for n in held.drain(..).chain([n]).flatten() {
            // No room: the batch commits nothing (below).
            if let Ok(p) = reply.alloc(1, 8) {
                p.copy_from_slice(&(2 * n).to_le_bytes());
            }
        }
        // A window for the kills to land in, before the commit.
        let t = Instant::now();
        while t.elapsed() < Duration::from_micros(20) {}
        // The replies queued and the requests consumed, as one step (not
        // committed, they all come back at the next poll).
        let _ = reply.commit_consuming(msg);
    }
    fn on_client_disconnected(&mut self, id: ConnId, _: &Name, _: Close) {
        self.held.remove(&id); // a new session delivers them again
    }
}

fn config(dir: &std::path::Path) -> Config {
    let mut cfg = Config::default();
    cfg.shm_dir = dir.join("shm"); // a deployment keeps /dev/shm
    cfg
}

/// The server process: listens, prints its address, serves until killed
/// (or until its parent goes: its stdin closes).
fn server(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut server: Server = Server::new("replier", dir.join("server"), config(dir))?;
    server.listen("127.0.0.1:0")?;
    println!("{}", server.local_addr().unwrap());
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_line(&mut String::new());
        std::process::exit(0);
    });
    let (t0, mut replier) = (Instant::now(), Replier::default());
    loop {
        server.poll(t0.elapsed().as_nanos() as i64, &mut replier);
    }
}

/// The client's handler: reply `k` must be `2k`, once, in order.
struct Check {
    next: u64,
}

impl ClientHandler for Check {
    fn on_server_msg(&mut self, msg: Received<'_>, _: &mut ConnTx) {
        let r = u64::from_le_bytes(msg.payload().try_into().unwrap());
        assert_eq!(
            r,
            2 * self.next,
            "reply {} lost, doubled or out of order",
            self.next
        );
        self.next += 1;
        msg.pop();
    }
}

/// The server child, killed (SIGKILL) when dropped: on every exit path.
struct ServerProcess {
    child: Child,
    addr: String,
}

impl ServerProcess {
    fn start(dir: &std::path::Path) -> Result<ServerProcess, Box<dyn std::error::Error>> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("server")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = lines.next().ok_or("the server printed nothing")??;
        Ok(ServerProcess { child, addr })
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("server") {
        return server(std::path::Path::new(&args[2]));
    }
    let dir = std::env::temp_dir().join(format!("tcpshm-exactly-once-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("shm"))?;
    let mut client: Client = Client::new("desk", dir.join("desk"), config(&dir))?;
    let (requests, mut kills) = (20_000u64, 0);
    let mut check = Check { next: 0 };
    let mut sent = 0u64;
    let mut rng = 0x2545_f491u32;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(120);
    while check.next < requests {
        let server = ServerProcess::start(&dir)?;
        // Log in again; what was sent and not consumed is resent by itself.
        loop {
            match client.connect(Transport::Tcp, server.addr.as_str(), 0) {
                Ok(_) => break,
                // The server still closing the killed one's session, say.
                Err(e) if e.is_transient() && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => return Err(e.into()),
            }
        }
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        let kill_at = Instant::now() + Duration::from_millis(10 + u64::from(rng % 30));
        while check.next < requests && Instant::now() < kill_at {
            // Up to 8 requests in flight.
            while sent < requests && sent < check.next + 8 {
                let mut m = client.connection().alloc(1, 8)?;
                m.payload_mut().copy_from_slice(&sent.to_le_bytes());
                m.push();
                sent += 1;
            }
            client.poll(t0.elapsed().as_nanos() as i64, &mut check);
            assert!(Instant::now() < deadline, "stuck at reply {}", check.next);
        }
        drop(server); // kill -9
        if check.next < requests {
            kills += 1;
            while !client.connection().is_closed() {
                client.poll(t0.elapsed().as_nanos() as i64, &mut check);
            }
        }
    }
    println!(
        "{requests} requests, each answered exactly once, in order, across {kills} kill -9 of the \
         server"
    );
    drop(client);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
