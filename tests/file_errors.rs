//! Broken files give clear errors (server: on_file_error and a "System
//! error" reject; client: a ConnectError::File), never a SIGBUS or a
//! panic, and no existing file is overwritten.

mod common;

use std::path::Path;

use common::*;
use tcpshm::{Client, ConnectError, FileErrorKind, Rejection, Server, SetupError};

/// Bytes of a queue file's header, before its message area
/// (`docs/protocol.md`, "The send queue file").
const FILE_HEADER_SIZE: usize = 64;

fn rejected_system_error(r: Result<u8, ConnectError>) {
    match r {
        Err(ConnectError::Rejected(why)) => assert_eq!(why, Rejection::System),
        other => panic!("expected a System error reject, got {other:?}"),
    }
}

#[test]
fn server_side_queue_files_broken() {
    let dir = scratch("srvfiles");
    let _c = Cleanup(dir.clone());
    let cfg = config(&dir);
    std::fs::create_dir_all(dir.join("s")).unwrap();
    let size = FILE_HEADER_SIZE + cfg.tcp_queue_size;
    // garbage of the right size, a truncated file, a directory in its place
    std::fs::write(dir.join("s/srv_garbage.ptcp"), vec![0x42u8; size]).unwrap();
    std::fs::write(dir.join("s/srv_short.ptcp"), b"TCPSHMPQ").unwrap();
    std::fs::create_dir_all(dir.join("s/srv_adir.ptcp")).unwrap();
    let h = with_echo_server(&dir, "srv", &cfg, EchoServer::default(), |addr| {
        for name in ["garbage", "short", "adir"] {
            let mut c = client(&dir, name, &cfg);
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
            let mut c: Client = Client::new(name, &d, cfg.clone()).unwrap();
            match c.connect(tcpshm::Transport::Tcp, addr, 0) {
                Err(ConnectError::File(e)) => {
                    assert_eq!(e.path, f);
                    assert!(e.to_string().contains(want), "{e}");
                }
                other => panic!("{name}: expected a file error, got {other:?}"),
            }
            assert_eq!(std::fs::read(&f).unwrap(), bytes, "not overwritten");
        }
        // The pair's queue file is corrupt on the client side.
        let mut c = client(&dir, "cq", &cfg);
        c.connect(tcpshm::Transport::Tcp, addr, 0).unwrap();
        c.stop();
        let q = dir.join("cq/cq_srv.ptcp");
        let mut b = std::fs::read(&q).unwrap();
        b[0] = b'Z';
        std::fs::write(&q, &b).unwrap();
        let mut c = client(&dir, "cq", &cfg);
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
        let mut c = client(&dir, "w", &cfg);
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
    match Client::<u8, u8>::new("c", file.join("sub"), config(&dir)) {
        Err(SetupError::Dir(e)) => assert!(e.to_string().contains("a-file/sub"), "{e}"),
        Err(e) => panic!("expected a directory error, got {e}"),
        Ok(_) => panic!("expected a directory error"),
    }
    assert!(Server::<u8, u8>::new("s", file.join("sub"), config(&dir)).is_err());
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
    // On the 1 MiB tmpfs a 2 MiB queue cannot be reserved; without the
    // mount, a queue larger than the directory's free space stands in for
    // "full" (whatever the size of the disk).
    let size = if mounted {
        2 << 20
    } else {
        beyond_free_space(&small)
    };
    let cfg = config_with(&dir, |c| {
        c.shm_dir = small.clone();
        c.shm_queue_size = size;
    });
    let h = with_echo_server(&dir, "srv", &cfg, EchoServer::default(), |addr| {
        let mut c = client(&dir, "f", &cfg);
        rejected_system_error(c.connect(tcpshm::Transport::Shm, addr, 0));
        // A TCP client of the same server is unaffected.
        let mut t = client(&dir, "t", &cfg);
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

/// A queue size that cannot be reserved in `dir` now: a power of two
/// above its free space.
fn beyond_free_space(dir: &Path) -> usize {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    // SAFETY: a zeroed statvfs is a valid value; the path is a valid C
    // string and the struct valid for the call.
    let free = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c.as_ptr(), &mut st), 0);
        st.f_bavail as u64 * st.f_frsize as u64
    };
    (free as usize + 1).next_power_of_two()
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
    let cfg = config_with(&dir, |c| c.file_mode = 0o660);
    with_echo_server(&dir, "srv", &cfg, EchoServer::default(), |addr| {
        let mut c = client(&dir, "m", &cfg);
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
        let mut c = client(&d2, "m", &cfg2);
        c.connect(tcpshm::Transport::Tcp, addr, 0).unwrap();
    });
    let mode = std::fs::metadata(d2.join("s/srv_m.ptcp"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}
