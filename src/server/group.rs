//! A group of connections (TCP or SHM), polled by one thread: finishes the
//! logins the control part hands over (opens files, checks sequence
//! numbers, answers) and delivers messages.

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;

use super::mailbox::{Inbox, Outbox};
use super::{ConnId, LoginHandoff, ServerHandler, ToCtl, ToGroup, ERR_SYSTEM};
use crate::config::Config;
use crate::conn::{deliver, deliver_ready, Connection, LinkState, TcpLink, Transport};
use crate::error::FileError;
use crate::login::{self, SeqMismatch};
use crate::wire::{error_msg_field, LoginResponse, LoginStatus, Name, UserData};

/// A group of connections (TCP or SHM), polled by one thread.
pub struct Group<U: UserData = u8, R: UserData = u8> {
    transport: Transport,
    idx: usize,
    server: Name,
    dir: PathBuf,
    cfg: Arc<Config>,
    conns: Vec<Connection>,
    /// Slots with a session this group serves.
    live: Vec<usize>,
    inbox: Inbox<ToGroup<U, R>>,
    to_ctl: Outbox<ToCtl>,
}

impl<U: UserData, R: UserData> Group<U, R> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        transport: Transport,
        idx: usize,
        server: Name,
        dir: PathBuf,
        cfg: Arc<Config>,
        per: usize,
        inbox: Inbox<ToGroup<U, R>>,
        to_ctl: Outbox<ToCtl>,
    ) -> Self {
        Group {
            transport,
            idx,
            server,
            dir,
            cfg,
            conns: (0..per).map(|_| Connection::new(server)).collect(),
            live: Vec::with_capacity(per),
            inbox,
            to_ctl,
        }
    }

    /// Statistics of the slots bound to a client name.
    pub fn stats(&self) -> Vec<(ConnId, String, crate::ConnStats)> {
        self.conns
            .iter()
            .enumerate()
            .filter_map(|(slot, c)| {
                let name = c.remote_name()?.as_str().to_string();
                Some((self.id(slot), name, c.stats()))
            })
            .collect()
    }

    /// Closes the files of the idle slot bound to `client`, if any (for
    /// [`super::Server::reset_pair`]). `Err` if that slot has a session.
    pub(super) fn release_pair(&mut self, client: &Name) -> Result<(), ()> {
        for (slot, c) in self.conns.iter_mut().enumerate() {
            if c.remote_name() == Some(client) {
                if self.live.contains(&slot) {
                    return Err(());
                }
                c.release();
            }
        }
        Ok(())
    }

    /// This group's id for slot `slot`.
    fn id(&self, slot: usize) -> ConnId {
        ConnId {
            transport: self.transport,
            group: self.idx,
            slot,
        }
    }

    /// Connections of this group with a session up now.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// A connection of this group, to push to outside callbacks.
    pub fn connection(&mut self, slot: usize) -> Option<&mut Connection> {
        self.conns.get_mut(slot)
    }

    /// Serves a TCP group: finishes logins handed over by the control
    /// part, then for each live connection reads, sends, heartbeats,
    /// checks timeouts and delivers the messages in its receive buffer to
    /// `handler` (at most `tcp_recv_buf_max_size` bytes of them).
    #[inline]
    pub fn poll_tcp<H: ServerHandler<U, R>>(&mut self, now: i64, handler: &mut H) {
        self.take_mail(now, handler);
        if !self.live.is_empty() {
            self.serve_tcp(now, handler);
        }
    }

    fn serve_tcp<H: ServerHandler<U, R>>(&mut self, now: i64, handler: &mut H) {
        let mut i = 0;
        while i < self.live.len() {
            let slot = self.live[i];
            let id = self.id(slot);
            let conn = &mut self.conns[slot];
            if let Some(closed) = conn.poll_tcp_io(now) {
                self.live.swap_remove(i);
                let _ = self.to_ctl.send(ToCtl::Disconnected { id, closed });
                continue;
            }
            deliver(conn, u32::MAX, |msg, tx| handler.on_client_msg(id, msg, tx));
            i += 1;
        }
    }

    /// Serves an SHM group: finishes logins handed over by the control
    /// part and delivers at most `Config::shm_msgs_per_poll` messages per
    /// connection from shared memory to `handler`. The TCP side
    /// (heartbeats, timeouts) is the control part's; a connection it
    /// closed is reported back to it from here, after its last delivery.
    #[inline]
    pub fn poll_shm<H: ServerHandler<U, R>>(&mut self, handler: &mut H) {
        self.take_mail(0, handler);
        if !self.live.is_empty() {
            self.serve_shm(handler);
        }
    }

    #[inline(always)]
    fn serve_shm<H: ServerHandler<U, R>>(&mut self, handler: &mut H) {
        let mut i = 0;
        while i < self.live.len() {
            let slot = self.live[i];
            let conn = &mut self.conns[slot];
            // The empty poll: a cached index, or one load. Closes by the
            // control part come through the mailbox.
            if !conn.rx.may_have_messages() {
                // A batch pushed with `push_more` outside a handler goes
                // with this poll, and a message pushed outside one is handed
                // over (fields of ours, no shared-memory load).
                conn.tx.settle();
                i += 1;
                continue;
            }
            let id = self.id(slot);
            let conn = &mut self.conns[slot];
            deliver_ready(conn, self.cfg.shm_msgs_per_poll, |msg, tx| {
                handler.on_client_msg(id, msg, tx)
            });
            if let Some(f) = conn.rx.fault.take() {
                conn.tx.state.close(f);
            }
            // Closed by the handler, or for a corrupt queue.
            if let Some(closed) = conn.close_reason() {
                self.live.swap_remove(i);
                let _ = self.to_ctl.send(ToCtl::Disconnected { id, closed });
                continue;
            }
            i += 1;
        }
    }

    /// The control part closed slot `slot`: stop serving it and report it
    /// (after its last delivery, which happened on this thread).
    fn handle_closed(&mut self, slot: usize) {
        let Some(i) = self.live.iter().position(|&s| s == slot) else {
            return; // already reported
        };
        let Some(closed) = self.conns[slot].close_reason() else {
            return; // a newer session of the slot
        };
        self.live.swap_remove(i);
        let id = self.id(slot);
        let _ = self.to_ctl.send(ToCtl::Disconnected { id, closed });
    }

    pub(super) fn stop(&mut self) {
        for c in &mut self.conns {
            c.end_session();
        }
        self.live.clear();
    }

    /// Takes what the control part sent (logins to finish, sessions it
    /// closed): one load when there is nothing (every poll comes here).
    #[inline(always)]
    fn take_mail<H: ServerHandler<U, R>>(&mut self, now: i64, handler: &mut H) {
        if !self.inbox.is_empty() {
            self.take_mail_slow(now, handler);
        }
    }

    #[cold]
    #[inline(never)]
    fn take_mail_slow<H: ServerHandler<U, R>>(&mut self, now: i64, handler: &mut H) {
        // Bounded: a login and a close per slot at most; the rest waits
        // for the next poll.
        for _ in 0..2 * self.conns.len() {
            match self.inbox.take() {
                None => break,
                Some(ToGroup::Closed { slot }) => self.handle_closed(slot),
                Some(ToGroup::Login(h)) => {
                    let id = self.id(h.slot);
                    let shm = self.finish_login(h, now, handler);
                    let _ = self.to_ctl.send(ToCtl::LoginDone {
                        id,
                        ok: shm.is_some(),
                        shm: shm.flatten(),
                    });
                }
            }
        }
    }

    /// Rules 5 to 7 of the login: open the pair's files, start afresh for
    /// a new pair, check the sequence numbers, answer. Returns
    /// `Some(shm socket)` on success.
    #[allow(clippy::type_complexity)]
    fn finish_login<H: ServerHandler<U, R>>(
        &mut self,
        h: LoginHandoff<U, R>,
        now: i64,
        handler: &mut H,
    ) -> Option<Option<(TcpStream, Arc<LinkState>)>> {
        let LoginHandoff {
            slot,
            name,
            mut stream,
            peer,
            ack,
            login,
            user_data,
        } = h;
        let mut rsp = LoginResponse::<R> {
            server_name: self.server.to_wire(),
            user_data,
            status: LoginStatus::Rejected,
            ..Default::default()
        };
        let conn = &mut self.conns[slot];
        let opened = login::open_pair(
            conn,
            &self.dir,
            &self.server,
            &name,
            self.transport,
            &self.cfg,
        );
        if let Err(e) = opened {
            handler.on_file_error(&name, &e);
            rsp.error_msg = error_msg_field(ERR_SYSTEM);
            let _ = stream.write(&rsp.encode(0));
            return None;
        }
        let mut m = SeqMismatch {
            local_ack: 0,
            local_seq_start: 0,
            local_seq_end: 0,
            remote_ack: ack,
            remote_seq_start: login.client_seq_start,
            remote_seq_end: login.client_seq_end,
        };
        let last = Name::from_wire_opt(&login.last_server_name).ok().flatten();
        if login::is_new_pair(last, self.server) {
            conn.reset_queues();
            (m.remote_ack, m.remote_seq_start, m.remote_seq_end) = (0, 0, 0);
        } else {
            match conn.login_seqs() {
                Ok(v) => (m.local_ack, m.local_seq_start, m.local_seq_end) = v,
                Err(why) => {
                    let path = login::ptcp_path(&self.dir, &self.server, &name);
                    handler.on_file_error(&name, &FileError::corrupt(path, why));
                    rsp.error_msg = error_msg_field(ERR_SYSTEM);
                    let _ = stream.write(&rsp.encode(0));
                    return None;
                }
            }
        }
        rsp.server_seq_start = m.local_seq_start;
        rsp.server_seq_end = m.local_seq_end;
        if !m.fits() {
            handler.on_seq_mismatch(&name, &m);
            rsp.status = LoginStatus::SeqMismatch;
            let _ = stream.write(&rsp.encode(m.local_ack));
            return None;
        }
        rsp.status = LoginStatus::Ok;
        let frame = rsp.encode(m.local_ack);
        // A fresh socket's buffer takes a 72-byte frame whole.
        if !matches!(stream.write(&frame), Ok(n) if n == frame.len()) {
            return None;
        }
        conn.guard = Some(login::guard_against_login::<U>(&name));
        let state = LinkState::new_open();
        let shm_back = match self.transport {
            Transport::Shm => {
                let _ = conn.open_session(None, 0, state.clone());
                Some((stream, state))
            }
            Transport::Tcp => {
                // A failed start closes the state; the next poll reports it.
                let link = TcpLink::new(stream, now, &self.cfg);
                let _ = conn.open_session(Some(link), m.remote_ack, state);
                None
            }
        };
        self.live.push(slot);
        let id = self.id(slot);
        handler.on_client_logon(peer, id, &mut self.conns[slot]);
        Some(shm_back)
    }
}
