//! A server whose parts run on threads of their own: the control part
//! with an allow-list on one thread, two SHM groups and a TCP group on a
//! thread each, each thread with a handler of its own (a group's handler
//! never sees a login decision, the control part's never a message).
//! Three clients echo in parallel; a fourth, not on the list, is refused.
//!
//! ```text
//! cargo run --example threads
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tcpshm::{
    Accept, Client, ClientHandler, Close, Config, ConnId, ConnTx, ConnectError, Connection,
    ControlHandler, GroupHandler, LoginRequest, Name, Received, Server, ServerParts, Transport,
};

/// The control part's handler: who may log in, and which group of its
/// transport serves each client (here every SHM desk has a group, so a
/// busy desk never shares its thread).
struct AllowList(HashMap<&'static str, usize>);

impl ControlHandler for AllowList {
    fn on_new_connection(&mut self, login: &LoginRequest) -> Accept {
        match self.0.get(login.client.as_str()) {
            Some(&group) => Accept::group(group),
            None => Accept::reject("not on the list"),
        }
    }
}

/// A group's handler: echoes, and keeps per-connection state from logon
/// to disconnect, all on its own thread.
#[derive(Default)]
struct Echo {
    echoed: HashMap<ConnId, u64>,
}

impl GroupHandler for Echo {
    fn on_client_logon(&mut self, id: ConnId, login: &LoginRequest, _: &mut Connection) {
        println!("{} in {:?} group {}", login.client, id.transport, id.group);
        self.echoed.insert(id, 0);
    }

    fn on_client_msg(&mut self, id: ConnId, msg: Received<'_>, tx: &mut ConnTx) {
        let Ok(mut reply) = tx.alloc(msg.msg_type(), msg.payload().len()) else {
            return;
        };
        reply.payload_mut().copy_from_slice(msg.payload());
        reply.push();
        msg.pop();
        *self.echoed.entry(id).or_default() += 1;
    }

    fn on_client_disconnected(&mut self, id: ConnId, client: &Name, close: Close) {
        let n = self.echoed.remove(&id).unwrap_or(0);
        println!("{client} left after {n} echoes: {close}");
    }
}

struct Count(u64);

impl ClientHandler for Count {
    fn on_server_msg(&mut self, msg: Received<'_>, _: &mut ConnTx) {
        msg.pop();
        self.0 += 1;
    }
}

/// A client that sends `n` messages, streaming, and waits for the echoes.
fn run_client(
    name: &str,
    transport: Transport,
    addr: std::net::SocketAddr,
    dir: &std::path::Path,
    cfg: &Config,
) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    let t0 = Instant::now();
    let mut client: Client = Client::new(name, dir.join(name), cfg.clone())?;
    client.connect(transport, addr, 0)?;
    let (mut sent, mut got, n) = (0, Count(0), 10_000);
    while got.0 < n {
        while sent < n && client.connection().alloc(1, 64).map(|m| m.push()).is_ok() {
            sent += 1;
        }
        client.poll(t0.elapsed().as_nanos() as i64, &mut got);
        std::thread::yield_now(); // two cores, five threads: let the others run
    }
    Ok(got.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("tcpshm-threads-{}", std::process::id()));
    let mut cfg = Config::default();
    (cfg.tcp_groups, cfg.shm_groups) = (1, 2);
    cfg.shm_queue_size = 1 << 16;
    cfg.shm_dir = dir.join("shm"); // a deployment keeps /dev/shm
    std::fs::create_dir_all(&cfg.shm_dir)?;
    let mut server: Server = Server::new("server", dir.join("server"), cfg.clone())?;
    server.listen("127.0.0.1:0")?;
    let addr = server.local_addr().unwrap();
    let done = AtomicBool::new(false);
    let t0 = Instant::now();
    let now = || t0.elapsed().as_nanos() as i64;

    std::thread::scope(|s| {
        let ServerParts {
            control, tcp, shm, ..
        } = server.parts();
        for group in tcp.iter_mut().chain(shm.iter_mut()) {
            s.spawn(|| {
                let mut echo = Echo::default();
                while !done.load(Ordering::Relaxed) {
                    group.poll(now(), &mut echo);
                    std::thread::yield_now();
                }
            });
        }
        s.spawn(|| {
            // desk1 and desk2 in SHM groups 0 and 1, tcp1 in TCP group 0.
            let mut allow = AllowList(HashMap::from([("desk1", 0), ("desk2", 1), ("tcp1", 0)]));
            while !done.load(Ordering::Relaxed) {
                control.poll(now(), &mut allow);
                std::thread::yield_now();
            }
        });
        let clients = [
            ("desk1", Transport::Shm),
            ("desk2", Transport::Shm),
            ("tcp1", Transport::Tcp),
        ];
        let runs: Vec<_> = clients
            .iter()
            .map(|&(name, t)| {
                let (dir, cfg) = (&dir, &cfg);
                s.spawn(move || run_client(name, t, addr, dir, cfg))
            })
            .collect();
        let result = (|| {
            for ((name, _), run) in clients.iter().zip(runs) {
                let n = run.join().unwrap().map_err(|e| format!("{name}: {e}"))?;
                println!("{name}: {n} echoes");
            }
            let mut intruder: Client = Client::new("intruder", dir.join("intruder"), cfg.clone())?;
            match intruder.connect(Transport::Tcp, addr, 0) {
                Err(ConnectError::Rejected(why)) => println!("intruder refused: {why}"),
                other => return Err(format!("the intruder got in: {other:?}").into()),
            }
            Ok::<(), Box<dyn std::error::Error>>(())
        })();
        done.store(true, Ordering::Relaxed); // on every path: the threads end
        result
    })?;
    drop(server);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
