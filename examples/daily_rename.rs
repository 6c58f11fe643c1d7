//! A server that renames itself every day ("prices-20261206", then
//! "prices-20261207"): its clients start every day afresh. At the login
//! after a rename both sides empty the pair's queues and count from 0,
//! so yesterday's unconsumed messages are not delivered today (the C++
//! library's rule, `docs/protocol.md` §4 rule 5).
//!
//! ```text
//! cargo run --example daily_rename
//! ```

use std::time::{Duration, Instant};

use tcpshm::{
    Accept, Client, ClientHandler, Config, ConnId, ConnTx, ControlHandler, GroupHandler,
    LoginRequest, Received, Server, Transport,
};

/// The server's handler: records what it receives.
#[derive(Default)]
struct Sink(Vec<String>);

impl ControlHandler for Sink {
    fn on_new_connection(&mut self, login: &LoginRequest) -> Accept {
        let last = login.last_server.map(|n| n.to_string());
        println!(
            "  {} logs in (last server: {})",
            login.client,
            last.as_deref().unwrap_or("none")
        );
        Accept::group(0)
    }
}

impl GroupHandler for Sink {
    fn on_client_msg(&mut self, _: ConnId, msg: Received<'_>, _: &mut ConnTx) {
        self.0
            .push(String::from_utf8_lossy(msg.payload()).into_owned());
        msg.pop();
    }
}

struct Ignore;

impl ClientHandler for Ignore {
    fn on_server_msg(&mut self, msg: Received<'_>, _: &mut ConnTx) {
        msg.pop();
    }
}

/// One day: the server named `name` runs while the client logs in and
/// sends `orders`; returns what the server received.
fn day(
    name: &str,
    dir: &std::path::Path,
    cfg: &Config,
    client: &mut Client,
    orders: &[&str],
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    println!("day of {name}:");
    let mut server: Server = Server::new(name, dir.join("server"), cfg.clone())?;
    server.listen("127.0.0.1:0")?;
    let addr = server.local_addr().unwrap();
    let mut sink = Sink::default();
    let t0 = Instant::now();
    let now = || t0.elapsed().as_nanos() as i64;
    std::thread::scope(|s| {
        // The login blocks: the server is polled on this thread meanwhile.
        let login = s.spawn(|| client.connect(Transport::Tcp, addr, 0));
        while !login.is_finished() {
            server.poll(now(), &mut sink);
        }
        login.join().unwrap()
    })?;
    println!(
        "  pair counters after login: {} sent, {} received",
        client.connection().messages_pushed(),
        client.connection().messages_popped()
    );
    for o in orders {
        let mut m = client.connection().alloc(1, o.len())?;
        m.payload_mut().copy_from_slice(o.as_bytes());
        m.push();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.0.len() < orders.len() && Instant::now() < deadline {
        server.poll(now(), &mut sink);
        client.poll(now(), &mut Ignore);
    }
    println!("  the server received {:?}", sink.0);
    Ok(sink.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("tcpshm-rename-{}", std::process::id()));
    let mut cfg = Config::default();
    cfg.shm_dir = dir.join("shm"); // a deployment keeps /dev/shm
    std::fs::create_dir_all(&cfg.shm_dir)?;
    let mut client: Client = Client::new("desk1", dir.join("desk1"), cfg.clone())?;

    let got = day(
        "prices-20261206",
        &dir,
        &cfg,
        &mut client,
        &["buy 1", "buy 2"],
    )?;
    assert_eq!(got, ["buy 1", "buy 2"]);
    // The server stopped at the end of its day; the client sees it close.
    let t0 = Instant::now();
    while !client.connection().is_closed() && t0.elapsed() < Duration::from_secs(10) {
        client.poll(t0.elapsed().as_nanos() as i64, &mut Ignore);
    }
    // Pushed after the day's server stopped: it waits in the client's
    // queue file for the next login.
    let mut m = client.connection().alloc(1, 6)?;
    m.payload_mut().copy_from_slice(b"late 3");
    m.push();
    println!("  pushed \"late 3\" after the server stopped");

    // The next day, a new name: the pair starts afresh; "late 3" is gone.
    let got = day("prices-20261207", &dir, &cfg, &mut client, &["sell 1"])?;
    assert_eq!(
        got,
        ["sell 1"],
        "yesterday's message is not delivered today"
    );
    drop(client);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
