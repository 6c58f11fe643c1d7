//! `tcpshm-bench batch`: what atomicity costs, against the non-atomic way
//! measured in interleaved rounds of the same run, over shared memory and
//! over TCP:
//! - streaming groups of 16 messages of 64 bytes, each an atomic batch
//!   (`Batch::commit`), against the same groups pushed with `push_more`
//!   and a `flush`: messages per second, and their ratio per run;
//! - a round trip echoed by a consume-and-reply
//!   (`Batch::commit_consuming`, as `tcpshm echo-server --exactly-once`)
//!   against the plain echo (push, then pop): p50, p99, p99.9 and mean, and
//!   the per-round ratio of p50s.

use std::path::PathBuf;

use crate::ours::{
    group_tput, our_client, spawn_server, typed_round, CLIENT_SHM, EXACTLY_ONCE_TYPE, SERVER,
};
use crate::peer::{online_cpus, pin};
use crate::rounds::{median, ratios, spread, Rtt, Series, Spread};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Interleaved rounds of each measurement.
    #[arg(long, default_value_t = 7)]
    pub rounds: usize,
    /// Round trips per echo round.
    #[arg(long, default_value_t = 20_000)]
    pub round_trips: u32,
    /// Messages per streaming run.
    #[arg(long, default_value_t = 200_000)]
    pub messages: u32,
    /// Messages per group (batch).
    #[arg(long, default_value_t = 16)]
    pub per_batch: u32,
    /// Payload bytes of the streamed messages.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Directory of shared-memory objects.
    #[arg(long, default_value = "/dev/shm")]
    pub shm_dir: PathBuf,
    /// Write the results as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One transport's results.
struct Results {
    name: &'static str,
    plain: Series,
    exact: Series,
    more_rates: Vec<f64>,
    batch_rates: Vec<f64>,
}

pub fn run(a: Args) -> Result<(), String> {
    let rounds = a.rounds.max(1);
    let pinned = pin(0);
    println!(
        "tcpshm-bench batch: {rounds} rounds of {} round trips, {} messages per streaming run \
         in groups of {} x {} B; {} CPUs{}",
        a.round_trips,
        a.messages,
        a.per_batch,
        a.size,
        online_cpus(),
        if pinned {
            ", this process on CPU 0, the server on CPU 1"
        } else {
            ""
        }
    );
    let dir = std::env::temp_dir().join(format!("tcpshm-bench-batch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let res = measure(&a, rounds, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(a.shm_dir.join(format!("{SERVER}_{CLIENT_SHM}.shm")));
    let _ = std::fs::remove_file(a.shm_dir.join(format!("{CLIENT_SHM}_{SERVER}.shm")));
    report(&a, &res?)
}

fn measure(a: &Args, rounds: usize, dir: &std::path::Path) -> Result<Vec<Results>, String> {
    let (mut server, addr) = spawn_server(&dir.join("server"), &a.shm_dir, false, None)?;
    let mut out = Vec::new();
    for (name, shm) in [("shared memory", true), ("TCP", false)] {
        println!("  {name}...");
        let mut c = our_client(dir, &addr, shm, false, &a.shm_dir)?;
        let mut r = Results {
            name,
            plain: Series::new(),
            exact: Series::new(),
            more_rates: Vec::new(),
            batch_rates: Vec::new(),
        };
        let mut seq = 0;
        server.pause();
        for k in 0..rounds {
            // Alternate which goes first.
            for j in 0..2 {
                if (k + j) % 2 == 0 {
                    let p = server.running(|| typed_round(&mut c, a.round_trips, &mut seq, 1))?;
                    r.plain.rounds.push(p);
                } else {
                    let e = server.running(|| {
                        typed_round(&mut c, a.round_trips, &mut seq, EXACTLY_ONCE_TYPE)
                    })?;
                    r.exact.rounds.push(e);
                }
            }
        }
        for k in 0..rounds {
            for j in 0..2 {
                let atomic = (k + j) % 2 == 1;
                let rate = server
                    .running(|| group_tput(&mut c, a.size, a.messages, a.per_batch, atomic))?;
                if atomic {
                    r.batch_rates.push(rate);
                } else {
                    r.more_rates.push(rate);
                }
            }
        }
        server.resume();
        c.client.stop();
        out.push(r);
    }
    server.stop();
    Ok(out)
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1000.0 {
        format!("{:.2} us", ns / 1000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

fn report(a: &Args, res: &[Results]) -> Result<(), String> {
    let mut json = Vec::new();
    println!();
    println!(
        "| transport | echo | p50 | p99 | p99.9 | mean | p50 / plain, per-round median [p25-p75] |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in res {
        let (p, e) = (r.plain.merged(), r.exact.merged());
        let ratio: Spread = spread(&ratios(&r.exact.p50s(), &r.plain.p50s()));
        let row = |what: &str, x: &Rtt, tail: String| {
            println!(
                "| {} | {what} | {} | {} | {} | {} | {tail} |",
                r.name,
                fmt_ns(x.p50 as f64),
                fmt_ns(x.p99 as f64),
                fmt_ns(x.p999 as f64),
                fmt_ns(x.mean)
            )
        };
        row("plain (push, pop)", &p, String::new());
        row(
            "exactly once (commit_consuming)",
            &e,
            format!("{:.3}x [{:.3}-{:.3}]", ratio.median, ratio.p25, ratio.p75),
        );
        json.push(format!(
            "{{\"transport\":\"{}\",\"plain\":{},\"exactly_once\":{},\"exactly_once_over_plain_p50\":{}",
            r.name,
            p.json(),
            e.json(),
            ratio.json()
        ));
    }
    println!();
    println!(
        "| transport | {} x {} B with push_more + flush | as one atomic batch | cost ratio (batch / push_more), per run median [p25-p75] |",
        a.per_batch, a.size
    );
    println!("|---|---|---|---|");
    for (i, r) in res.iter().enumerate() {
        let cost = spread(&ratios(&r.more_rates, &r.batch_rates));
        let (m, b) = (median(&r.more_rates), median(&r.batch_rates));
        println!(
            "| {} | {:.2} M msg/s | {:.2} M msg/s | {:.3}x [{:.3}-{:.3}] |",
            r.name,
            m / 1e6,
            b / 1e6,
            cost.median,
            cost.p25,
            cost.p75
        );
        json[i].push_str(&format!(
            ",\"push_more_msgs_per_s\":{m:.0},\"batch_msgs_per_s\":{b:.0},\"batch_cost_over_push_more\":{}}}",
            cost.json()
        ));
    }
    if let Some(p) = &a.json {
        std::fs::write(p, format!("[{}]\n", json.join(",")))
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}
