//! `tcpshm-bench`: the measurement harnesses of tcpshm, beside the
//! operator's `tcpshm` command. Every figure is measured against a floor
//! (or a quiet round) in the same run, so results are ratios that survive
//! a noisy machine; `docs/benchmarks.md` has the method and the numbers.

mod batch;
mod bench;
mod idle;
mod isolation;
mod large;
mod ours;
mod peer;
mod rounds;
mod scale;
mod shared_page;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tcpshm-bench",
    version,
    about = "tcpshm's benchmarks: latency and throughput against same-run floors, isolation"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// RTT and throughput of tcpshm against the cache-line and raw TCP
    /// floors, in interleaved rounds.
    Bench(bench::Args),
    /// How much stalled, flooding or streaming peers slow another client
    /// of the same connection group (interleaved quiet rounds).
    Isolation(isolation::Args),
    /// What N idle clients in the active client's group cost its round
    /// trip, against lone rounds of the same run; the server's system
    /// calls per idle poll and what it holds per connection.
    Scale(scale::Args),
    /// What each idle strategy costs and gives a server: idle CPU with
    /// idle clients, the round trip of a quiet client, ping-pong against
    /// busy polling.
    Idle(idle::Args),
    /// What atomicity costs: atomic batches against `push_more`, and an
    /// exactly-once echo (consume-and-reply) against the plain echo.
    Batch(batch::Args),
    /// Streaming messages of 1 MiB (fragments, `Config::max_message_size`)
    /// over shared memory and TCP, against `memcpy` between the two CPUs.
    Large(large::Args),
    /// The other process of a run (not for direct use).
    #[command(hide = true)]
    Peer(peer::PeerArgs),
}

fn main() -> ExitCode {
    let r = match Cli::parse().cmd {
        Cmd::Bench(a) => bench::run(a),
        Cmd::Isolation(a) => isolation::run(a),
        Cmd::Scale(a) => scale::run(a),
        Cmd::Idle(a) => idle::run(a),
        Cmd::Batch(a) => batch::run(a),
        Cmd::Large(a) => large::run(a),
        Cmd::Peer(a) => peer::peer(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
