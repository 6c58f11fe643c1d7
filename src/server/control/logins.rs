//! Logins: accepting connections, reading their login frames within
//! `new_connection_timeout` (and not letting a flood of idle or slow
//! connections keep a real login waiting), and rules 1 to 4 of the login
//! (the name, the application's answer, a slot) before the group
//! finishes it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};

use super::slots::{Choice, SlotState};
use super::{Control, PENDING_TOKENS};
use crate::config::Ticks;
use crate::conn::Transport;
use crate::login::Rejection;
use crate::server::{Accept, ControlHandler, LoginHandoff, LoginRequest, ToGroup};
use crate::sys::READABLE;
use crate::wire::{
    error_msg_field, Login, LoginResponse, LoginStatus, MsgHeader, Name, UserData, MSG_TYPE_LOGIN,
};

/// Connections accepted per poll: enough to drain a flood quickly, and a
/// bound all the same.
const ACCEPTS_PER_POLL: usize = 64;

/// A connection whose login is being read.
pub(super) struct PendingLogin {
    stream: TcpStream,
    peer: SocketAddr,
    since: i64,
    buf: Vec<u8>,
    got: usize,
    /// The readiness set said it is readable (or it is new).
    pub(super) readable: bool,
}

impl PendingLogin {
    /// When the poll finds its time up: one tick past its timeout (the
    /// shorter one while it has sent nothing).
    pub(super) fn deadline(&self, t: &Ticks) -> i64 {
        let mut wait = t.new_connection_timeout;
        if self.got == 0 {
            wait = wait.min(t.silent_login_timeout);
        }
        self.since.wrapping_add(wait).wrapping_add(1)
    }
}

impl<U: UserData, R: UserData> Control<U, R> {
    /// Drains the accept backlog (at most `ACCEPTS_PER_POLL` a poll), each
    /// new connection taking a free pending place or evicting one.
    pub(super) fn accept<H: ControlHandler<U, R>>(&mut self, now: i64, handler: &mut H) {
        for _ in 0..ACCEPTS_PER_POLL {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    self.worked = true;
                    if stream.set_nonblocking(true).is_err()
                        || stream.set_nodelay(self.cfg.tcp_no_delay).is_err()
                    {
                        continue;
                    }
                    let mut at = self.place_for(peer);
                    if self.pending[at].is_some() {
                        // Before evicting a pending login, read it: clients
                        // that connect together (a restart's reconnects, from
                        // one host for shared memory) have sent their whole
                        // login already, and it goes to its group now.
                        if let Some(p) = &mut self.pending[at] {
                            p.readable = true;
                        }
                        self.poll_pending(at, now, handler);
                        at = self.place_for(peer);
                    }
                    // Replacing a pending login drops (closes) it, and so
                    // takes it out of the readiness set.
                    self.pending[at] = None;
                    if let Err(e) = self
                        .poller
                        .add(&stream, PENDING_TOKENS + at as u64, READABLE)
                    {
                        handler.on_system_error("watch a new connection", &e);
                        continue;
                    }
                    // Read at once: a client sends its login as it connects.
                    self.pending[at] = Some(PendingLogin {
                        stream,
                        peer,
                        since: now,
                        buf: vec![0; Login::<U>::FRAME],
                        got: 0,
                        readable: true,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // Aborted handshakes and the like: not the server's fault.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    // Out of descriptors, say: report, and try again next poll.
                    handler.on_system_error("accept", &e);
                    return;
                }
            }
        }
    }

    /// Where a new connection from `peer` goes: the oldest pending login
    /// of the same source if that source is at its cap, else a free place,
    /// else the oldest pending login that has sent nothing, else the oldest.
    fn place_for(&self, peer: SocketAddr) -> usize {
        let oldest = |keep: &dyn Fn(&PendingLogin) -> bool| {
            self.pending
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.as_ref().filter(|p| keep(p)).map(|p| (p.since, i)))
                .min()
                .map(|(_, i)| i)
        };
        let same = |p: &PendingLogin| p.peer.ip() == peer.ip();
        let of_source = self.pending.iter().flatten().filter(|p| same(p)).count();
        if of_source >= self.cfg.max_pending_per_source {
            if let Some(i) = oldest(&same) {
                return i;
            }
        }
        self.pending
            .iter()
            .position(Option::is_none)
            .or_else(|| oldest(&|p: &PendingLogin| p.got == 0))
            .or_else(|| oldest(&|_: &PendingLogin| true))
            .unwrap_or(0)
    }

    /// Reads pending login `i` if its socket is readable, hands it on once
    /// complete, drops it when it breaks the rules or its time is up.
    pub(super) fn poll_pending<H: ControlHandler<U, R>>(
        &mut self,
        i: usize,
        now: i64,
        handler: &mut H,
    ) {
        let Some(p) = &mut self.pending[i] else {
            return;
        };
        let read = if std::mem::take(&mut p.readable) {
            p.stream.read(&mut p.buf[p.got..])
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        };
        let drop_it = match read {
            Ok(0) => true,
            Ok(n) => {
                self.worked = true;
                p.got += n;
                false
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                false
            }
            Err(_) => true,
        };
        // A header that is not a login header: drop at once.
        let bad_header = p.got >= 8
            && MsgHeader::read(&p.buf)
                .is_ok_and(|h| h.msg_type != MSG_TYPE_LOGIN || h.size as usize != Login::<U>::SIZE);
        let waited = now.wrapping_sub(p.since);
        let timed_out = waited > self.ticks.new_connection_timeout
            || (p.got == 0 && waited > self.ticks.silent_login_timeout);
        if drop_it || bad_header || (timed_out && p.got < p.buf.len()) {
            self.pending[i] = None;
            return;
        }
        if p.got == p.buf.len() {
            let p = self.pending[i].take().expect("checked above");
            self.handle_login(p, handler);
        }
    }

    /// Rules 1 to 4 of the login: the name, the application's answer, a
    /// slot; then the group finishes it.
    fn handle_login<H: ControlHandler<U, R>>(&mut self, p: PendingLogin, handler: &mut H) {
        let Ok((hdr, login)) = Login::<U>::decode(&p.buf) else {
            return; // dropped with the connection
        };
        let server_name = self.name.to_wire();
        let reject = |mut stream: TcpStream, why: Rejection| {
            let rsp = LoginResponse::<R> {
                status: LoginStatus::Rejected,
                server_name,
                error_msg: error_msg_field(why.text()),
                ..Default::default()
            };
            let _ = stream.write(&rsp.encode(0));
        };
        let Ok(client) = Name::from_wire(&login.client_name) else {
            return reject(p.stream, Rejection::InvalidName);
        };
        let req = LoginRequest {
            client,
            peer: p.peer,
            transport: Transport::from_use_shm(login.use_shm),
            user_data: login.user_data,
            last_server: Name::from_wire_opt(&login.last_server_name).ok().flatten(),
        };
        let (group, user_data) = match handler.on_new_connection(&req) {
            Accept::Serve { group, user_data } => (group, user_data),
            Accept::Reject(text) => return reject(p.stream, Rejection::Application(text)),
        };
        let Some(g) = self.groups(req.transport).get_mut(group) else {
            return reject(p.stream, Rejection::InvalidGroup);
        };
        debug_assert_eq!(g.transport, req.transport);
        let slot = match g.choose(client) {
            Choice::Slot(s) => s,
            Choice::Busy => return reject(p.stream, Rejection::AlreadyLoggedOn),
            Choice::Full => return reject(p.stream, Rejection::ServerFull),
        };
        // The group watches the socket from here (TCP), or hands it back
        // for the session's heartbeats (SHM).
        self.poller.delete(&p.stream);
        let g = &mut self.groups(req.transport)[group];
        let handoff = LoginHandoff {
            slot,
            stream: p.stream,
            seqs: (hdr.ack_seq, login.client_seq_start, login.client_seq_end),
            login: req,
            user_data,
        };
        if g.to_group.send(ToGroup::Login(Box::new(handoff))).is_err() {
            g.set(slot, SlotState::Idle);
        }
    }
}
