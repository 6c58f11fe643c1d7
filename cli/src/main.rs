//! The `tcpshm` command: echo server and client (compatible with the C++
//! library's echo example), a demo, benchmarks, and the operating
//! commands (inspect, clean, reset, import-cpp, stats).

mod admin;
mod bench;
mod demo;
mod echo_client;
mod echo_server;
mod isolation;
mod stats_file;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tcpshm",
    version,
    about = "Recoverable low-latency messaging over TCP or shared memory"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Echo every message back (same type and payload).
    EchoServer(echo_server::Args),
    /// Send a checked rising sequence of integers and verify the echoes.
    EchoClient(echo_client::Args),
    /// Run a server and a client on this host over TCP and SHM, with a
    /// kill -9 of the client mid-run, and show the latency.
    Demo(demo::Args),
    /// Measure RTT and throughput against same-run baselines.
    Bench(bench::Args),
    /// Measure how much stalled, flooding or streaming peers slow another
    /// client of the same connection group (interleaved quiet rounds).
    Isolation(isolation::Args),
    /// What is in queue directories, queue files and shm objects: pairs,
    /// formats, sequence ranges, pending messages, fill, live holders.
    Inspect(admin::InspectArgs),
    /// Remove the files of stale pairs no live process holds (a dry run
    /// unless --yes).
    Clean(admin::CleanArgs),
    /// Move a pair's files to a timestamped backup, so its next login
    /// starts it afresh (after a sequence number mismatch).
    Reset(admin::ResetArgs),
    /// Convert a C++ library `.ptcp` file into this project's format,
    /// keeping its pending messages and sequence numbers.
    ImportCpp(admin::ImportArgs),
    /// Live statistics the echo programs publish (every second, into
    /// <dir>/<name>.stats): a table, like AeronStat.
    Stats(stats_file::Args),
    /// The other process of `bench` (not for direct use).
    #[command(hide = true)]
    BenchPeer(bench::PeerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::EchoServer(a) => echo_server::run(a),
        Cmd::EchoClient(a) => echo_client::run(a),
        Cmd::Demo(a) => demo::run(a),
        Cmd::Bench(a) => bench::run(a),
        Cmd::Isolation(a) => isolation::run(a),
        Cmd::BenchPeer(a) => bench::peer(a),
        Cmd::Inspect(a) => admin::inspect(a),
        Cmd::Clean(a) => admin::clean(a),
        Cmd::Reset(a) => admin::reset(a),
        Cmd::ImportCpp(a) => admin::import_cpp(a),
        Cmd::Stats(a) => stats_file::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            if e.starts_with("bad echo") {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
