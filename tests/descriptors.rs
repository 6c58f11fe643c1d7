//! What a connection costs in file descriptors: one, its socket, on each
//! side, over TCP and over shared memory (the queue files and rings are
//! mapped, and a mapping keeps its file, and the file's lock, without a
//! descriptor). A server near its process's descriptor limit serves that
//! many clients. (A client also has one epoll set, its `Wait`
//! descriptor, from its making, whatever its connections.)

mod common;

use std::sync::atomic::AtomicBool;

use common::*;
use tcpshm::{Server, Transport};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn one_descriptor_per_connection_and_side() {
    let dir = scratch("fds");
    let _c = Cleanup(dir.clone());
    let cfg = config_with(&dir, |c| {
        c.tcp_conns_per_group = 8;
        c.shm_conns_per_group = 8;
    });
    let mut server: Server = Server::new("srv", dir.join("s"), cfg.clone()).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let stop = AtomicBool::new(false);
    let mut echo = EchoServer::default();
    std::thread::scope(|s| {
        serve(s, &mut server, &mut echo, &stop);
        let _stop = StopOnDrop(&stop);
        let mut clients = Vec::new();
        for (i, transport) in [
            Transport::Tcp,
            Transport::Shm,
            Transport::Tcp,
            Transport::Shm,
        ]
        .into_iter()
        .enumerate()
        {
            // A client has an epoll set of its own (its `Wait`
            // descriptor), from its making: not the connection's.
            let mut c = client(&dir, &format!("c{i}"), &cfg);
            let before = open_fds();
            let mut h = CheckingClient::default();
            c.connect(transport, addr, 0).unwrap();
            // Both sides in this process: the client's socket and the
            // server's, once it has answered and an echo came back.
            assert!(send(c.connection(), 0, 16));
            wait_until(10, "an echo", || {
                c.poll(now(), &mut h);
                h.received == 1
            });
            let after = open_fds();
            assert_eq!(
                after - before,
                2,
                "{transport:?}: {before} descriptors before the login, {after} after"
            );
            clients.push(c);
        }
    });
}
