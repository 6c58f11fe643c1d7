//! A client of `examples/echo_server.rs`: sends numbered messages one at
//! a time and checks that each echo comes back once, in order.
//!
//! ```text
//! cargo run --example echo_client -- [ADDR] [tcp|shm] [COUNT] [NAME]
//! ```
//!
//! The numbering comes from the connection's own counters, which survive
//! a crash: kill the client midway with kill -9 and run it again, and it
//! goes on from where it stopped, nothing lost or doubled. Kill the server
//! instead and start it again: the client logs in again by itself, and
//! the library resends what the server had not consumed.

use std::time::{Duration, Instant};

use tcpshm::{Client, ClientHandler, Close, Config, ConnTx, ConnectError, Received, Transport};

/// Checks that echo `next` is the next to come back.
struct Check {
    next: u64,
    closed: Option<Close>,
}

impl ClientHandler for Check {
    fn on_server_msg(&mut self, msg: Received<'_>, _: &mut ConnTx) {
        let n = u64::from_le_bytes(msg.payload()[..8].try_into().unwrap());
        assert_eq!(n, self.next, "echo out of order, doubled or lost");
        self.next += 1;
        msg.pop();
    }

    fn on_disconnected(&mut self, close: Close) {
        self.closed = Some(close);
    }
}

/// Logs in, retrying for a minute while the server is down or still
/// closing this client's previous session.
fn connect(client: &mut Client, transport: Transport, addr: &str) -> Result<(), ConnectError> {
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        match client.connect(transport, addr, 0) {
            Ok(_) => return Ok(()),
            Err(e) if e.is_transient() && Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => return Err(e),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or(default.into());
    let addr = arg(0, "127.0.0.1:12345");
    let transport = if arg(1, "tcp") == "shm" {
        Transport::Shm
    } else {
        Transport::Tcp
    };
    let count: u64 = arg(2, "10000").parse()?;
    let name = arg(3, "client1");

    let mut client: Client = Client::new(&name, &name, Config::default())?;
    connect(&mut client, transport, &addr)?;
    // Messages sent and echoes received before (by an earlier run).
    let mut sent = u64::from(client.connection().messages_pushed());
    let mut check = Check {
        next: u64::from(client.connection().messages_popped()),
        closed: None,
    };
    println!(
        "{name} over {transport:?}: {sent} sent and {} echoed before",
        check.next
    );

    let t0 = Instant::now();
    let now = || t0.elapsed().as_nanos() as i64;
    let (start, mut worst) = (check.next, Duration::ZERO);
    while check.next < count {
        if sent == check.next {
            let mut m = client.connection().alloc(1, 8)?;
            m.payload_mut().copy_from_slice(&sent.to_le_bytes());
            m.push();
            sent += 1;
        }
        let t = Instant::now();
        while check.next < sent && check.closed.is_none() {
            client.poll(now(), &mut check);
        }
        worst = worst.max(t.elapsed());
        if let Some(close) = check.closed.take() {
            println!("disconnected ({close}): logging in again");
            connect(&mut client, transport, &addr)?;
        }
    }
    let n = (check.next - start).max(1);
    println!(
        "{} echoes in order, mean round trip {:?}, worst {worst:?}",
        check.next - start,
        t0.elapsed() / n as u32
    );
    Ok(())
}
