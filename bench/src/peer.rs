//! The other process of a run: `tcpshm-bench peer MODE TARGET`, started
//! by the harnesses (never by hand), pinned to the second CPU unless it
//! is an abuser or the idle clients; and pinning.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use tcpshm_cli::util::IdleArg;

#[derive(clap::Args, Debug)]
pub struct PeerArgs {
    /// cacheline FILE | rawtcp ADDR | blocktcp ADDR | server DIR
    pub mode: String,
    pub target: String,
    #[arg(long, default_value = "/dev/shm")]
    pub shm_dir: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// server mode: the shared-memory fast path off (v1 ring).
    #[arg(long)]
    pub v1: bool,
    /// abuse modes (`tcpshm-bench isolation`): over shared memory.
    #[arg(long)]
    pub shm: bool,
    /// abuse modes: the directory for a client's queue files.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// server mode: what its loop does with a poll that found nothing.
    #[arg(long, value_enum, default_value_t = IdleArg::Busy)]
    pub idle: IdleArg,
}

/// Pins the calling thread to CPU `cpu` if the machine has it.
pub fn pin(cpu: usize) -> bool {
    let n = online_cpus();
    if n < 2 {
        return false;
    }
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it (cpu < n
    // <= CPU_SETSIZE on the machines we run on, checked below); the call
    // only reads the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= libc::CPU_SETSIZE as usize {
            return false;
        }
        libc::CPU_SET(cpu % n, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// CPUs online (not the affinity mask, which a pinned parent passes on).
pub(crate) fn online_cpus() -> usize {
    // SAFETY: plain sysconf query.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    n.max(1) as usize
}

pub(crate) struct Peer {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Peer {
    pub(crate) fn spawn(args: &[String]) -> Result<Peer, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .arg("peer")
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the bench peer: {e}"))?;
        let out = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Peer { child, out })
    }
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
    pub(crate) fn line(&mut self) -> String {
        let mut l = String::new();
        let _ = self.out.read_line(&mut l);
        l.trim().to_string()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    /// Pauses the peer (SIGSTOP): it takes no CPU while another pair is
    /// measured.
    pub(crate) fn pause(&self) {
        // SAFETY: plain syscall; the pid is our child's.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGSTOP) };
    }
    pub(crate) fn resume(&self) {
        // SAFETY: as in `pause`.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
    }
    /// Asks the peer to stop (SIGTERM: a server stops its clients, so
    /// their files are let go) and waits for it.
    pub(crate) fn stop(&mut self) {
        // SAFETY: plain syscall; the pid is our child's.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }

    /// Runs `f` with the peer resumed, and pauses it again.
    pub(crate) fn running<T>(&self, f: impl FnOnce() -> T) -> T {
        self.resume();
        let r = f();
        self.pause();
        r
    }
}

pub fn peer(p: PeerArgs) -> Result<(), String> {
    // A peer spins (or, as an abuser, wakes every millisecond) until it is
    // killed: if the parent dies first, even by kill -9, the kernel kills
    // the peer too, so no spinning process outlives a run.
    // SAFETY: plain syscalls with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() == 1 {
            return Err("the bench parent is gone".into());
        }
    }
    if let Some(kind) = p.mode.strip_prefix("abuse-") {
        // Paced, and not pinned: see `isolation`.
        return crate::isolation::abuse(kind, &p);
    }
    if p.mode == "idle-clients" {
        // Asleep but for a heartbeat a second: not pinned.
        return crate::scale::peer_idle(&p);
    }
    pin(1);
    match p.mode.as_str() {
        "cacheline" => crate::bench::peer_cacheline(&p),
        "rawtcp" => crate::bench::peer_rawtcp(&p),
        "blocktcp" => crate::idle::peer_blocktcp(&p),
        "server" => crate::ours::peer_server(&p),
        "large-server" => crate::large::peer_server(&p),
        "scale-server" => crate::scale::peer_server(&p),
        m => Err(format!("unknown bench peer mode {m}")),
    }
}
