//! The `tcpshm` command as a library: echo server and client (compatible
//! with the C++ library's echo example), a demo, and the operating
//! commands (inspect, clean, reset, import-cpp, stats); `src/main.rs` runs
//! it. The benchmark harnesses (`bench/`) share its clock, signals and
//! formatting ([`util`]).

mod admin;
mod demo;
mod echo_client;
mod echo_server;
mod stats_file;
pub mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::util::CliError;

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
    /// What is in queue directories, queue files, shm objects and
    /// doorbells: pairs, formats, sequence ranges, pending messages, fill,
    /// live holders.
    Inspect(admin::InspectArgs),
    /// Remove the files of stale pairs, and the doorbells of servers that
    /// are not running, that no live process holds (a dry run unless
    /// --yes).
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
}

/// Parses the command line and runs the command: what `tcpshm` does.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let failed = CliError::Failed;
    let r = match cli.cmd {
        Cmd::EchoServer(a) => echo_server::run(a),
        Cmd::EchoClient(a) => echo_client::run(a),
        Cmd::Demo(a) => demo::run(a).map_err(failed),
        Cmd::Inspect(a) => admin::inspect(a),
        Cmd::Clean(a) => admin::clean(a),
        Cmd::Reset(a) => admin::reset(a),
        Cmd::ImportCpp(a) => admin::import_cpp(a),
        Cmd::Stats(a) => stats_file::run(a).map_err(failed),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}
