//! An application's own fixed-size login data types, end to end: the
//! client sends a token in its login, the server checks it and answers
//! with its own type in the response.

mod common;

use std::sync::atomic::AtomicBool;

use common::*;
use tcpshm::server::ConnId;
use tcpshm::wire::{Login, LoginResponse, UserData};
use tcpshm::{
    Accept, Client, ClientHandler, ConnTx, ConnectError, Received, Server, ServerHandler,
};

#[derive(Clone, Copy, Default, Debug, PartialEq)]
#[repr(C)]
struct Token {
    user: u32,
    secret: u64,
}

impl UserData for Token {
    const SIZE: usize = 16;
    const ALIGN: usize = 8;
    fn write_to(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&self.user.to_le_bytes());
        out[4..8].fill(0);
        out[8..16].copy_from_slice(&self.secret.to_le_bytes());
    }
    fn read_from(b: &[u8]) -> Self {
        Token {
            user: u32::from_le_bytes(b[..4].try_into().unwrap()),
            secret: u64::from_le_bytes(b[8..16].try_into().unwrap()),
        }
    }
}

struct Gate;

impl ServerHandler<Token, [u8; 4]> for Gate {
    fn on_new_connection(
        &mut self,
        _: std::net::SocketAddr,
        l: &Login<Token>,
        r: &mut LoginResponse<[u8; 4]>,
    ) -> Accept {
        if l.user_data.secret != 0xfeed_beef {
            return Accept::Reject("bad token".into());
        }
        r.user_data = l.user_data.user.to_le_bytes();
        Accept::Group(0)
    }
    fn on_client_msg(&mut self, _: ConnId, msg: Received<'_>, _: &mut ConnTx) {
        msg.pop();
    }
}

#[derive(Default)]
struct Seen(Vec<[u8; 4]>);

impl ClientHandler<[u8; 4]> for Seen {
    fn on_login_success(&mut self, r: &LoginResponse<[u8; 4]>) -> i64 {
        self.0.push(r.user_data);
        now()
    }
    fn on_server_msg(&mut self, msg: Received<'_>, _: &mut ConnTx) {
        msg.pop();
    }
}

#[test]
fn custom_login_user_data_types() {
    assert_eq!(Login::<Token>::SIZE, 8 + 8 + 16 + 1 + 32 + 7);
    let dir = scratch("userdata");
    let _c = Cleanup(dir.clone());
    let cfg = config(&dir);
    let mut server =
        Server::<Gate, Token, [u8; 4]>::new("srv", dir.join("s"), cfg.clone(), Gate).unwrap();
    server.start("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                server.poll_ctl(now());
                server.poll_tcp(now(), 0);
                std::thread::yield_now();
            }
        });
        let _stop = StopOnDrop(&stop);
        let mut bad =
            Client::<Seen, Token, [u8; 4]>::new("bad", dir.join("b"), cfg.clone(), Seen::default())
                .unwrap();
        match bad.connect(tcpshm::Transport::Tcp, addr, Token { user: 1, secret: 2 }) {
            Err(ConnectError::Rejected(t)) => assert_eq!(t, "bad token"),
            other => panic!("{other:?}"),
        }
        let mut good = Client::<Seen, Token, [u8; 4]>::new(
            "good",
            dir.join("g"),
            cfg.clone(),
            Seen::default(),
        )
        .unwrap();
        good.connect(
            tcpshm::Transport::Tcp,
            addr,
            Token {
                user: 0x0102_0304,
                secret: 0xfeed_beef,
            },
        )
        .unwrap();
        assert_eq!(good.handler().0, vec![[4, 3, 2, 1]]);
    });
}
