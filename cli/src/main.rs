//! The `tcpshm` command (see the library of this package).

fn main() -> std::process::ExitCode {
    tcpshm_cli::run()
}
