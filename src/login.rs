//! The login rules of `docs/protocol.md` §4 that both sides apply, in one
//! place: which files a pair uses, when a pair starts afresh, whether two
//! sides' sequence numbers fit, and which frame the peer must not send
//! again after login.
#![forbid(unsafe_code)]

use std::path::Path;

use crate::config::Config;
use crate::conn::{Connection, Transport};
use crate::error::FileError;
use crate::pair_files::{pair_tag, ptcp_path, shm_path};
use crate::ptcp_queue::PtcpQueue;
use crate::session::ReloginGuard;
use crate::shm_queue::{ShmReader, ShmWriter};
use crate::wire::{
    seq_within, Login, LoginResponse, Name, UserData, MSG_TYPE_LOGIN, MSG_TYPE_LOGIN_RESPONSE,
};

/// The six numbers of a sequence mismatch: each side's ack and the range
/// of messages it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SeqMismatch {
    /// Messages this side consumed from the peer.
    pub local_ack: u32,
    /// Oldest message this side holds unacknowledged.
    pub local_seq_start: u32,
    /// One past this side's newest message.
    pub local_seq_end: u32,
    /// Messages the peer consumed from this side.
    pub remote_ack: u32,
    /// Oldest message the peer holds unacknowledged.
    pub remote_seq_start: u32,
    /// One past the peer's newest message.
    pub remote_seq_end: u32,
}

impl std::fmt::Display for SeqMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "this side acked {} and holds {}..{}; the peer acked {} and holds {}..{}",
            self.local_ack,
            self.local_seq_start,
            self.local_seq_end,
            self.remote_ack,
            self.remote_seq_start,
            self.remote_seq_end
        )
    }
}

impl SeqMismatch {
    /// The two sides fit when each one's ack lies within what the other
    /// holds (rule 7): nothing acknowledged was never sent, nothing
    /// unacknowledged is gone.
    pub fn fits(&self) -> bool {
        seq_within(self.remote_ack, self.local_seq_start, self.local_seq_end)
            && seq_within(self.local_ack, self.remote_seq_start, self.remote_seq_end)
    }
}

/// Why a server refused a login ([`ConnectError::Rejected`](crate::ConnectError::Rejected)),
/// from the text of its response. The server's own refusals (a C++
/// server sends the same texts) are told apart, so a client knows which
/// to retry: see [`is_transient`](Self::is_transient).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// The name's previous session is still up on the server: it may not
    /// have noticed the disconnect yet (it does within
    /// `Config::connection_timeout`), or another process logged in with
    /// this name. Text "Already loggned on" (sic: the C++ text, which
    /// clients match).
    AlreadyLoggedOn,
    /// Every slot of the group serves another client ("Max client cnt
    /// exceeded").
    ServerFull,
    /// The client name is empty or unusable ("Invalid client name").
    InvalidName,
    /// The server application chose a group that does not exist
    /// ("Invalid group"): a server bug.
    InvalidGroup,
    /// The server cannot open or trust the pair's files ("System error");
    /// its log names the file.
    System,
    /// The server application refused the login, with this text
    /// ("Login Reject" when it gave none).
    Application(String),
}

impl Rejection {
    /// The text a server sends for this refusal.
    pub fn text(&self) -> &str {
        match self {
            Rejection::AlreadyLoggedOn => "Already loggned on",
            Rejection::ServerFull => "Max client cnt exceeded",
            Rejection::InvalidName => "Invalid client name",
            Rejection::InvalidGroup => "Invalid group",
            Rejection::System => "System error",
            Rejection::Application(t) if t.is_empty() => "Login Reject",
            Rejection::Application(t) => t,
        }
    }

    /// The refusal a response's text names.
    pub(crate) fn from_text(text: String) -> Rejection {
        [
            Rejection::AlreadyLoggedOn,
            Rejection::ServerFull,
            Rejection::InvalidName,
            Rejection::InvalidGroup,
            Rejection::System,
        ]
        .into_iter()
        .find(|r| r.text() == text)
        .unwrap_or(Rejection::Application(text))
    }

    /// Whether the same login may succeed later: the old session is
    /// still being closed, or a slot may free up. A refusal by the
    /// application, or for the name or the files, wants a person.
    pub fn is_transient(&self) -> bool {
        matches!(self, Rejection::AlreadyLoggedOn | Rejection::ServerFull)
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text())
    }
}

/// Opens the queues of the pair `local` ↔ `remote` into `conn`, unless it
/// already holds them: the TCP queue file in `dir`, or the two shm objects
/// (ours to write, the peer's to read).
///
/// # Errors
/// A [`FileError`] naming the file.
pub(crate) fn open_pair(
    conn: &mut Connection,
    dir: &Path,
    local: &Name,
    remote: &Name,
    transport: Transport,
    cfg: &Config,
) -> Result<(), FileError> {
    if conn.remote_name() == Some(remote) && conn.has_queue(transport) {
        return Ok(());
    }
    conn.release();
    let opts = cfg.map_options();
    match transport {
        Transport::Shm => {
            let sp = shm_path(&cfg.shm_dir, local, remote);
            let rp = shm_path(&cfg.shm_dir, remote, local);
            let size = cfg.shm_queue_size;
            let mut w = ShmWriter::open_file(&sp, size, opts, pair_tag(local, remote))?;
            let mut r = ShmReader::open_file(&rp, size, opts, pair_tag(remote, local))?;
            // A batch or consume-and-reply a crash cut short is finished
            // before anything else reads the rings.
            crate::shm_queue::recover(&mut w, &mut r)
                .map_err(|why| FileError::corrupt(&sp, why))?;
            w.set_fast_path(cfg.shm_fast_path);
            w.set_hand_over(cfg.shm_hand_over);
            r.set_fast_path(cfg.shm_fast_path);
            conn.set_shm_queues(w, r, cfg);
        }
        Transport::Tcp => {
            let p = ptcp_path(dir, local, remote);
            let q = PtcpQueue::open_pair(&p, cfg.tcp_queue_size, opts, pair_tag(local, remote))?;
            conn.set_tcp_queue(q, cfg);
        }
    }
    conn.tx.remote = Some(*remote);
    Ok(())
}

/// Whether a login starts the pair afresh: the client last logged in to
/// another server name (or none), so both sides empty their queues.
pub(crate) fn is_new_pair(last_server: Option<Name>, server: Name) -> bool {
    last_server != Some(server)
}

/// The server's guard: the client must not send its login again.
pub(crate) fn guard_against_login<U: UserData>(client: &Name) -> ReloginGuard {
    ReloginGuard {
        msg_type: MSG_TYPE_LOGIN,
        size: Login::<U>::SIZE as u16,
        name_off: Login::<U>::CLIENT_NAME_OFFSET,
        name: client.to_wire(),
    }
}

/// The client's guard: the server must not send its response again.
pub(crate) fn guard_against_response<R: UserData>(server: &Name) -> ReloginGuard {
    ReloginGuard {
        msg_type: MSG_TYPE_LOGIN_RESPONSE,
        size: LoginResponse::<R>::SIZE as u16,
        name_off: LoginResponse::<R>::SERVER_NAME_OFFSET,
        name: server.to_wire(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_fit_within_each_others_ranges() {
        let m = |local_ack, ls, le, remote_ack, rs, re| SeqMismatch {
            local_ack,
            local_seq_start: ls,
            local_seq_end: le,
            remote_ack,
            remote_seq_start: rs,
            remote_seq_end: re,
        };
        assert!(m(0, 0, 0, 0, 0, 0).fits());
        assert!(m(3, 5, 9, 7, 1, 3).fits());
        assert!(
            !m(3, 5, 9, 10, 1, 3).fits(),
            "peer acks beyond what we hold"
        );
        assert!(
            !m(4, 5, 9, 7, 1, 3).fits(),
            "we ack beyond what the peer holds"
        );
        assert!(
            m(1, u32::MAX, 2, 0, 0, 2).fits(),
            "ranges across the u32 wrap"
        );
        let n = Name::new("srv").unwrap();
        for r in [Rejection::AlreadyLoggedOn, Rejection::System] {
            assert_eq!(Rejection::from_text(r.text().to_string()), r);
        }
        let app = Rejection::from_text("bad token".into());
        assert_eq!(app, Rejection::Application("bad token".into()));
        assert!(!app.is_transient() && Rejection::ServerFull.is_transient());
        assert!(is_new_pair(None, n));
        assert!(!is_new_pair(Some(n), n));
    }
}
