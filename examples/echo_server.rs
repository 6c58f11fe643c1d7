//! An echo server, over TCP and shared memory: every message comes back
//! with its type and payload. Run it, then `examples/echo_client.rs`.
//!
//! ```text
//! cargo run --example echo_server -- [ADDR] [DIR]     # default 127.0.0.1:12345 echo-server
//! ```
//!
//! Its queue files live in DIR, its shared-memory rings in /dev/shm: stop
//! it (even with kill -9) and start it again, and its clients resume
//! where they were. Its loop sleeps when no message comes (`Idle::block`):
//! idle, it takes no CPU, not a whole core.

use std::time::Instant;

use tcpshm::{
    Accept, Close, Config, ConnId, ConnTx, ControlHandler, GroupHandler, Idle, LoginRequest, Name,
    Received, Server,
};

struct Echo;

impl ControlHandler for Echo {
    fn on_new_connection(&mut self, login: &LoginRequest) -> Accept {
        println!("{} logs in over {:?}", login.client, login.transport);
        Accept::group(0) // group 0 of the transport the client asked for
    }
}

impl GroupHandler for Echo {
    fn on_client_msg(&mut self, _: ConnId, msg: Received<'_>, tx: &mut ConnTx) {
        // No room for the reply yet: leave the message, it comes back.
        let Ok(mut reply) = tx.alloc(msg.msg_type(), msg.payload().len()) else {
            return;
        };
        reply.payload_mut().copy_from_slice(msg.payload());
        reply.push();
        msg.pop();
    }

    fn on_client_disconnected(&mut self, _: ConnId, client: &Name, close: Close) {
        println!("{client} left: {close}");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:12345".into());
    let dir = args.next().unwrap_or_else(|| "echo-server".into());
    let mut server: Server = Server::new("server", &dir, Config::default())?;
    server.listen(&addr)?;
    println!("listening on {}", server.local_addr().unwrap());
    let t0 = Instant::now();
    // Spins while messages come, then sleeps until one does (or a timer
    // is due); `Idle::busy()` spins always (the lowest latency, a core).
    let mut idle = Idle::block();
    loop {
        // One thread polls it all; `now` in nanoseconds, the default tick.
        let now = t0.elapsed().as_nanos() as i64;
        let worked = server.poll(now, &mut Echo);
        idle.idle_on(&mut server, now, worked)?;
    }
}
