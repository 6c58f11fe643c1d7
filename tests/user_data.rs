//! An application's own fixed-size login data types, end to end: the
//! client sends a token in its login, the server checks it and answers
//! with its own type in the response.

mod common;

use std::sync::atomic::AtomicBool;

use common::*;
use tcpshm::{
    Accept, Client, ConnId, ConnTx, ConnectError, ControlHandler, GroupHandler, LoginRequest,
    Received, Server, UserData,
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

impl ControlHandler<Token, [u8; 4]> for Gate {
    fn on_new_connection(&mut self, l: &LoginRequest<Token>) -> Accept<[u8; 4]> {
        if l.user_data.secret != 0xfeed_beef {
            return Accept::reject("bad token");
        }
        Accept::Serve {
            group: 0,
            user_data: l.user_data.user.to_le_bytes(),
        }
    }
}

impl GroupHandler<Token> for Gate {
    fn on_client_msg(&mut self, _: ConnId, msg: Received<'_>, _: &mut ConnTx) {
        msg.pop();
    }
}

#[test]
fn custom_login_user_data_types() {
    // 8 (seqs) + 16 (token, 8-aligned) + 1 (use_shm) + 32 (names), padded
    // to 8: the C layout a C++ peer with the same type uses.
    let token = tcpshm_v1::UserLayout { size: 16, align: 8 };
    assert_eq!(tcpshm_v1::Login::size(token), 8 + 8 + 16 + 1 + 32 + 7);
    let dir = scratch("userdata");
    let _c = Cleanup(dir.clone());
    let cfg = config(&dir);
    let mut server = Server::<Token, [u8; 4]>::new("srv", dir.join("s"), cfg.clone()).unwrap();
    server.listen("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                server.poll(now(), &mut Gate);
                std::thread::yield_now();
            }
        });
        let _stop = StopOnDrop(&stop);
        let mut bad = Client::<Token, [u8; 4]>::new("bad", dir.join("b"), cfg.clone()).unwrap();
        match bad.connect(tcpshm::Transport::Tcp, addr, Token { user: 1, secret: 2 }) {
            Err(ConnectError::Rejected(why)) => assert_eq!(why.text(), "bad token"),
            other => panic!("{other:?}"),
        }
        let mut good = Client::<Token, [u8; 4]>::new("good", dir.join("g"), cfg.clone()).unwrap();
        let token = Token {
            user: 0x0102_0304,
            secret: 0xfeed_beef,
        };
        let reply = good.connect(tcpshm::Transport::Tcp, addr, token).unwrap();
        assert_eq!(reply, [4, 3, 2, 1]);
    });
}
