//! Broken files give clear errors through the callbacks (server:
//! on_file_error and a "System error" reject; client: on_system_error and a
//! ConnectError::File), never a SIGBUS or a panic, and no existing file is
//! overwritten.

mod common;

use std::path::Path;

use common::*;
use tcpshm::SetupError;
use tcpshm::{
    Client, ClientHandler, Config, ConnTx, ConnectError, FileErrorKind, Received, Server,
};

/// A client that records system errors.
#[derive(Default)]
struct Recorder {
    errors: Vec<String>,
}

impl ClientHandler for Recorder {
    fn on_system_error(&mut self, e: &ConnectError) {
        self.errors.push(e.to_string());
    }
    fn on_login_success(&mut self, _: &tcpshm::wire::LoginResponse) -> i64 {
        now()
    }
    fn on_server_msg(&mut self, msg: Received<'_>, _: &mut ConnTx) {
        msg.pop();
    }
}

fn rejected_system_error(r: Result<(), ConnectError>) {
    match r {
        Err(ConnectError::Rejected(t)) => assert_eq!(t, "System error"),
        other => panic!("expected a System error reject, got {other:?}"),
    }
}

#[test]
fn server_side_queue_files_broken() {
    let dir = scratch("srvfiles");
    let _c = Cleanup(dir.clone());
    let cfg = config(&dir);
    std::fs::create_dir_all(dir.join("s")).unwrap();
    let size = tcpshm::ptcp_queue::FILE_HEADER_SIZE + cfg.tcp_queue_size;
    // garbage of the right size, a truncated file, a directory in its place
    std::fs::write(dir.join("s/srv_garbage.ptcp"), vec![0x42u8; size]).unwrap();
    std::fs::write(dir.join("s/srv_short.ptcp"), b"TCPSHMPQ").unwrap();
    std::fs::create_dir_all(dir.join("s/srv_adir.ptcp")).unwrap();
    let h = with_echo_server(&dir, "srv", &cfg, EchoServer::default(), |addr| {
        for name in ["garbage", "short", "adir"] {
            let mut c =
                Client::new(name, dir.join(name), cfg.clone(), CheckingClient::default()).unwrap();
            rejected_system_error(c.connect(tcpshm::Transport::Tcp, addr, 0));
        }
    });
    let e = &h.file_errors;
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(
        e[0].contains("srv_garbage.ptcp") && e[0].contains("magic"),
        "{}",
        e[0]
    );
    assert!(
        e[1].contains("srv_short.ptcp") && e[1].contains("size is 8 bytes"),
        "{}",
        e[1]
    );
    assert!(e[2].contains("srv_adir.ptcp"), "{}", e[2]);
    // Nothing was overwritten.
    assert_eq!(
        std::fs::read(dir.join("s/srv_garbage.ptcp")).unwrap(),
        vec![0x42u8; size]
    );
    assert_eq!(
        std::fs::read(dir.join("s/srv_short.ptcp")).unwrap(),
        b"TCPSHMPQ"
    );
}

#[test]
fn client_side_files_broken() {
    let dir = scratch("clifiles");
    let _c = Cleanup(dir.clone());
    let cfg = config(&dir);
    with_echo_server(&dir, "srv", &cfg, EchoServer::default(), |addr| {
        // lastserver of the wrong size, and lastserver garbage (no NUL).
        for (name, bytes, want) in [
            ("wsize", &b"srv"[..], "size is 3 bytes"),
            ("nonul", &[b'x'; 16][..], "no NUL"),
            (
                "slash",
                &b"a/b\0\0\0\0\0\0\0\0\0\0\0\0\0"[..],
                "name contains",
            ),
        ] {
            let d = dir.join(name);
            std::fs::create_dir_all(&d).unwrap();
            let f = d.join(format!("{name}.lastserver"));
            std::fs::write(&f, bytes).unwrap();
            let mut c = Client::new(name, &d, cfg.clone(), Recorder::default()).unwrap();
            match c.connect(tcpshm::Transport::Tcp, addr, 0) {
                Err(ConnectError::File(e)) => {
                    assert_eq!(e.path, f);
                    assert!(e.to_string().contains(want), "{e}");
                }
                other => panic!("{name}: expected a file error, got {other:?}"),
            }
            assert_eq!(c.handler().errors.len(), 1);
            assert_eq!(std::fs::read(&f).unwrap(), bytes, "not overwritten");
        }
        // The pair's queue file is corrupt on the client side.
        let mut c = Client::new("cq", dir.join("cq"), cfg.clone(), Recorder::default()).unwrap();
        c.connect(tcpshm::Transport::Tcp, addr, 0).unwrap();
        c.stop();
        let q = dir.join("cq/cq_srv.ptcp");
        let mut b = std::fs::read(&q).unwrap();
        b[0] = b'Z';
        std::fs::write(&q, &b).unwrap();
        let mut c = Client::new("cq", dir.join("cq"), cfg.clone(), Recorder::default()).unwrap();
        match c.connect(tcpshm::Transport::Tcp, addr, 0) {
            Err(ConnectError::File(e)) => {
                assert!(matches!(e.kind, FileErrorKind::Corrupt(_)), "{e}");
                assert_eq!(e.path, q);
            }
            other => panic!("expected a corrupt queue file, got {other:?}"),
        }
        assert_eq!(std::fs::read(&q).unwrap(), b, "not overwritten");
    });
}

#[test]
fn shm_object_of_the_wrong_size() {
    let dir = scratch("shmsize");
    let _c = Cleanup(dir.clone());
    let cfg = config(&dir);
    // The server's send queue to "w" exists with another size.
    let obj = cfg.shm_dir.join("srv_w.shm");
    std::fs::write(&obj, vec![7u8; 1000]).unwrap();
    let h = with_echo_server(&dir, "srv", &cfg, EchoServer::default(), |addr| {
        let mut c =
            Client::new("w", dir.join("w"), cfg.clone(), CheckingClient::default()).unwrap();
        rejected_system_error(c.connect(tcpshm::Transport::Shm, addr, 0));
    });
    assert!(
        h.file_errors[0].contains("srv_w.shm") && h.file_errors[0].contains("size is 1000"),
        "{:?}",
        h.file_errors
    );
    assert_eq!(std::fs::read(&obj).unwrap(), vec![7u8; 1000]);
}

#[test]
fn directory_not_writable() {
    let dir = scratch("nodir");
    let _c = Cleanup(dir.clone());
    let file = dir.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    // A directory below a regular file cannot be created (root included).
    match Client::<_>::new(
        "c",
        file.join("sub"),
        config(&dir),
        CheckingClient::default(),
    ) {
        Err(SetupError::Dir(e)) => assert!(e.to_string().contains("a-file/sub"), "{e}"),
        Err(e) => panic!("expected a directory error, got {e}"),
        Ok(_) => panic!("expected a directory error"),
    }
    assert!(Server::<_>::new("s", file.join("sub"), config(&dir), EchoServer::default()).is_err());
}

/// Mounts a 1 MiB tmpfs at `at` if this machine allows it (root in a
/// sandbox usually does); returns whether it did.
fn small_tmpfs(at: &Path) -> bool {
    std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(at)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn full_shm_filesystem_is_a_clear_error_at_login() {
    let dir = scratch("shmfull");
    let _c = Cleanup(dir.clone());
    let small = dir.join("small-shm");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = small_tmpfs(&small);
    let _umount = Umount(mounted.then(|| small.clone()));
    let cfg = Config {
        shm_dir: small.clone(),
        // On the 1 MiB tmpfs a 2 MiB queue cannot be reserved; without the
        // mount, a queue larger than any /dev/shm stands in for "full".
        shm_queue_size: if mounted { 2 << 20 } else { 1 << 36 },
        ..config(&dir)
    };
    let h = with_echo_server(&dir, "srv", &cfg, EchoServer::default(), |addr| {
        let mut c =
            Client::new("f", dir.join("f"), cfg.clone(), CheckingClient::default()).unwrap();
        rejected_system_error(c.connect(tcpshm::Transport::Shm, addr, 0));
        // A TCP client of the same server is unaffected.
        let mut t =
            Client::new("t", dir.join("t"), cfg.clone(), CheckingClient::default()).unwrap();
        t.connect(tcpshm::Transport::Tcp, addr, 0).unwrap();
    });
    let e = &h.file_errors[0];
    assert!(
        e.contains("reserve space") && e.contains("No space left"),
        "{e}"
    );
    // Nothing half-made is left behind.
    assert!(!small.join("srv_f.shm").exists());
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Umount(Option<std::path::PathBuf>);

impl Drop for Umount {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::process::Command::new("umount").arg(p).status();
        }
    }
}

#[test]
fn file_mode_option_shares_with_the_group() {
    let dir = scratch("mode");
    let _c = Cleanup(dir.clone());
    let cfg = Config {
        file_mode: 0o660,
        ..config(&dir)
    };
    with_echo_server(&dir, "srv", &cfg, EchoServer::default(), |addr| {
        let mut c =
            Client::new("m", dir.join("m"), cfg.clone(), CheckingClient::default()).unwrap();
        c.connect(tcpshm::Transport::Shm, addr, 0).unwrap();
    });
    use std::os::unix::fs::PermissionsExt;
    for f in [
        cfg.shm_dir.join("srv_m.shm"),
        cfg.shm_dir.join("m_srv.shm"),
        dir.join("m/m.lastserver"),
    ] {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660, "{}", f.display());
    }
    // And the default is 0600.
    let d2 = scratch("mode2");
    let _c2 = Cleanup(d2.clone());
    let cfg2 = config(&d2);
    with_echo_server(&d2, "srv", &cfg2, EchoServer::default(), |addr| {
        let mut c =
            Client::new("m", d2.join("m"), cfg2.clone(), CheckingClient::default()).unwrap();
        c.connect(tcpshm::Transport::Tcp, addr, 0).unwrap();
    });
    let mode = std::fs::metadata(d2.join("s/srv_m.ptcp"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}
