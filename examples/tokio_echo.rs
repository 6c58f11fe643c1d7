//! An echo server and two clients, one over TCP and one over shared
//! memory, all in one tokio runtime: each part sleeps in the reactor
//! between messages instead of spinning (`tcpshm::tokio::Async`).
//!
//! ```text
//! cargo run --release --features tokio --example tokio_echo -- [ROUND_TRIPS]   # default 10000
//! ```
//!
//! Each client times its round trips and prints their percentiles.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use tcpshm::tokio::Async;
use tcpshm::{
    Accept, Client, ClientHandler, Config, ConnId, ConnTx, ControlHandler, GroupHandler,
    LoginRequest, Received, Server, Transport,
};

struct Echo;

impl ControlHandler for Echo {
    fn on_new_connection(&mut self, _: &LoginRequest) -> Accept {
        Accept::group(0)
    }
}

impl GroupHandler for Echo {
    fn on_client_msg(&mut self, _: ConnId, msg: Received<'_>, tx: &mut ConnTx) {
        let Ok(mut reply) = tx.alloc(msg.msg_type(), msg.payload().len()) else {
            return; // no room yet: the message comes back at the next poll
        };
        reply.payload_mut().copy_from_slice(msg.payload());
        reply.push();
        msg.pop();
    }
}

/// Counts the echoes, and checks each carries the number sent.
#[derive(Default)]
struct Count(u64);

impl ClientHandler for Count {
    fn on_server_msg(&mut self, msg: Received<'_>, _: &mut ConnTx) {
        assert_eq!(msg.payload(), &self.0.to_le_bytes(), "echo {}", self.0);
        msg.pop();
        self.0 += 1;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => 10_000,
    };
    let dir = std::env::temp_dir().join(format!("tcpshm-tokio-echo-{}", std::process::id()));
    let mut cfg = Config::default();
    cfg.shm_dir = dir.join("shm");
    std::fs::create_dir_all(&cfg.shm_dir)?;
    let t0 = Instant::now();
    let now = move || t0.elapsed().as_nanos() as i64;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&rt, async {
        let mut server: Server = Server::new("server", dir.join("server"), cfg.clone())?;
        server.listen("127.0.0.1:0")?;
        let addr = server.local_addr().expect("listening");
        let stop = Rc::new(Cell::new(false));
        let stopped = stop.clone();
        // The server: poll until no work, then sleep in the reactor.
        let serving = tokio::task::spawn_local(async move {
            let mut server = Async::new(server)?;
            while !stopped.get() {
                while server.get_mut().poll(now(), &mut Echo) {}
                server.ready(now()).await?;
            }
            Ok::<_, std::io::Error>(())
        });
        for (name, transport) in [("tcp", Transport::Tcp), ("shm", Transport::Shm)] {
            // `connect` blocks until the login is answered: off the
            // runtime's thread, which serves the login meanwhile.
            let (cfg, dir) = (cfg.clone(), dir.clone());
            let client = tokio::task::spawn_blocking(move || {
                let mut c: Client = Client::new(name, dir.join(name), cfg).map_err(|e| e.to_string())?;
                c.connect(transport, addr, 0).map_err(|e| e.to_string())?;
                Ok::<_, String>(c)
            })
            .await??;
            let mut client = Async::new(client)?;
            let mut got = Count::default();
            let mut rtt = Vec::with_capacity(n as usize);
            for i in 0..n {
                let t = Instant::now();
                let mut m = client.get_mut().connection().alloc(1, 8)?;
                m.payload_mut().copy_from_slice(&i.to_le_bytes());
                m.push();
                while got.0 == i {
                    while client.get_mut().poll(now(), &mut got) {}
                    if got.0 == i {
                        client.ready(now()).await?;
                    }
                }
                rtt.push(t.elapsed().as_nanos() as u64);
            }
            rtt.sort_unstable();
            let at = |q: f64| rtt[((rtt.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
            let mean = rtt.iter().sum::<u64>() as f64 / rtt.len() as f64 / 1000.0;
            println!(
                "{name}: {n} echoes in order, RTT p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, mean {mean:.1} us",
                at(0.5),
                at(0.99),
                at(0.999)
            );
        }
        stop.set(true);
        serving.await??;
        Ok::<_, Box<dyn std::error::Error>>(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}
