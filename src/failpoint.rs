//! Crash points for the kill -9 tests of the commit and recovery paths.
//!
//! Every store of a batch commit, a consume-and-reply and their recovery
//! is followed by a call to [`hit`]. In the library it is an empty inline
//! function. In the crate's unit tests it counts the points a process
//! passes once [`arm`] was called, and kills the process with SIGKILL at
//! the point named by `TCPSHM_FAILPOINT` (1 is the first): a child process
//! dies between two stores, as a real crash would, and its parent checks
//! what recovery makes of the files. A parent finds every point by raising
//! the number until the child runs to its end.

#[cfg(test)]
mod armed {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    static ARMED: AtomicBool = AtomicBool::new(false);
    static COUNT: AtomicU32 = AtomicU32::new(0);

    /// The environment variable naming the point to die at.
    pub(crate) const VAR: &str = "TCPSHM_FAILPOINT";

    /// Starts counting points from here on.
    pub(crate) fn arm() {
        COUNT.store(0, Ordering::SeqCst);
        ARMED.store(true, Ordering::SeqCst);
    }

    #[inline(never)]
    pub(crate) fn hit() {
        if !ARMED.load(Ordering::SeqCst) {
            return;
        }
        let n = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
        let target = std::env::var(VAR).ok().and_then(|v| v.parse::<u32>().ok());
        if target == Some(n) {
            // SAFETY: kill(2) with our own pid and a valid signal number
            // has no memory effects on this process before it dies.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
}

#[cfg(test)]
pub(crate) use armed::{arm, hit};

#[cfg(test)]
/// How a child run by [`run_child`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Killed at its crash point.
    Killed,
    /// Ran to its end (the point named is past its last one).
    Finished,
}

#[cfg(test)]
/// Runs the ignored unit test `test` (a child scenario of this binary)
/// in a child process that dies at crash point `point`, with `env` set,
/// and waits for it (at most 60 s; it is killed on every exit path).
///
/// # Panics
/// If the child fails otherwise, or hangs.
pub(crate) fn run_child(test: &str, point: u32, env: &[(&str, &std::path::Path)]) -> Ended {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    /// Kills the child on every exit path, a failed assertion included.
    struct Child(std::process::Child);
    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill(); // SIGKILL
            let _ = self.0.wait();
        }
    }

    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--ignored", "--test-threads=1"])
        .env(armed::VAR, point.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = Child(cmd.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            if st.signal() == Some(libc::SIGKILL) {
                return Ended::Killed;
            }
            let mut err = String::new();
            use std::io::Read;
            let _ = child.0.stderr.take().unwrap().read_to_string(&mut err);
            assert!(st.success(), "child {test} at point {point}: {st}\n{err}");
            return Ended::Finished;
        }
        assert!(
            Instant::now() < deadline,
            "child {test} hangs at point {point}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A crash point (see the module): nothing outside the unit tests.
#[cfg(not(test))]
#[inline(always)]
pub(crate) fn hit() {}
