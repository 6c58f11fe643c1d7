//! Rounds of round trips and their statistics: the histograms, the
//! percentiles and means, the spread of per-round ratios, and the sizes
//! the round trips use (the C++ library's method).

use std::time::Instant;

use hdrhistogram::Histogram;

/// Payload sizes of the RTT measurements (the C++ library's method).
const RTT_SIZES: [usize; 4] = [16, 36, 68, 200];

pub(crate) fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("histogram bounds")
}

/// Latency statistics of one measurement, in ns.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rtt {
    pub(crate) p50: u64,
    pub(crate) p99: u64,
    pub(crate) p999: u64,
    pub(crate) max: u64,
    pub(crate) mean: f64,
    /// (quantile, ns) along the distribution, for the plot.
    pub(crate) curve: Vec<(f64, u64)>,
}

/// Quantiles plotted: 50% to 99.99%.
pub(crate) const CURVE: [f64; 10] = [
    0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99999,
];

impl Rtt {
    pub(crate) fn of(h: &Histogram<u64>) -> Rtt {
        Rtt {
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
            curve: CURVE.iter().map(|&q| (q, h.value_at_quantile(q))).collect(),
        }
    }
    pub(crate) fn json(&self) -> String {
        format!(
            "{{\"p50_ns\":{},\"p99_ns\":{},\"p999_ns\":{},\"max_ns\":{},\"mean_ns\":{:.1}}}",
            self.p50, self.p99, self.p999, self.max, self.mean
        )
    }
}

pub(crate) fn median<T: Copy + PartialOrd>(v: &[T]) -> T {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    s[s.len() / 2]
}

/// Size of RTT message `i`: drawn from RTT_SIZES by a fixed sequence.
pub(crate) fn rtt_size(i: u32) -> usize {
    RTT_SIZES[(i.wrapping_mul(2_654_435_761) >> 30) as usize]
}

/// One round: latency samples, the same split by payload size (one-block
/// payloads of 16 and 36 bytes; 200 bytes), and the average RTT (wall time
/// / round trips).
pub(crate) struct Round {
    pub(crate) hist: Histogram<u64>,
    pub(crate) one_block: Histogram<u64>,
    pub(crate) b200: Histogram<u64>,
    pub(crate) avg_ns: f64,
}

/// p50, p99, p99.9 (ns) and mean of rounds merged.
pub(crate) fn merged_rtt(rounds: &[Round]) -> (u64, u64, u64, f64) {
    let mut h = hist();
    for r in rounds {
        let _ = h.add(&r.hist);
    }
    (
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.mean(),
    )
}

impl Round {
    /// The round's quantile `q` in nanoseconds.
    pub(crate) fn quantile(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64
    }

    /// p50 and p99 in nanoseconds.
    pub(crate) fn p50_p99(&self) -> (f64, f64) {
        (
            self.hist.value_at_quantile(0.5) as f64,
            self.hist.value_at_quantile(0.99) as f64,
        )
    }
}

/// Rounds of one measurement.
pub(crate) struct Series {
    pub(crate) rounds: Vec<Round>,
}

impl Series {
    pub(crate) fn new() -> Self {
        Series { rounds: Vec::new() }
    }
    /// All rounds merged.
    pub(crate) fn merged(&self) -> Rtt {
        let mut h = hist();
        for r in &self.rounds {
            let _ = h.add(&r.hist);
        }
        Rtt::of(&h)
    }
    pub(crate) fn p50s(&self) -> Vec<f64> {
        self.rounds
            .iter()
            .map(|r| r.hist.value_at_quantile(0.5) as f64)
            .collect()
    }
    pub(crate) fn avgs(&self) -> Vec<f64> {
        self.rounds.iter().map(|r| r.avg_ns).collect()
    }
    /// Per-round p50 of the one-block payloads (16 and 36 bytes).
    pub(crate) fn one_block_p50s(&self) -> Vec<f64> {
        self.rounds
            .iter()
            .map(|r| r.one_block.value_at_quantile(0.5) as f64)
            .collect()
    }
    /// Per-round p50 of the 200-byte payloads.
    pub(crate) fn b200_p50s(&self) -> Vec<f64> {
        self.rounds
            .iter()
            .map(|r| r.b200.value_at_quantile(0.5) as f64)
            .collect()
    }
}

/// Median, 25th and 75th percentiles, min and max of `v`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spread {
    pub median: f64,
    pub p25: f64,
    pub p75: f64,
    pub min: f64,
    pub max: f64,
}

pub(crate) fn spread(v: &[f64]) -> Spread {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
    Spread {
        median: at(0.5),
        p25: at(0.25),
        p75: at(0.75),
        min: s[0],
        max: s[s.len() - 1],
    }
}

impl Spread {
    pub(crate) fn json(&self) -> String {
        format!(
            "{{\"median\":{:.3},\"p25\":{:.3},\"p75\":{:.3},\"min\":{:.3},\"max\":{:.3}}}",
            self.median, self.p25, self.p75, self.min, self.max
        )
    }
}

pub(crate) fn ratios(ours: &[f64], floor: &[f64]) -> Vec<f64> {
    ours.iter()
        .zip(floor)
        .map(|(o, f)| o / f.max(1.0))
        .collect()
}

/// Samples of a round: the first tenth (or 100) is warm-up. `one`
/// returns the nanoseconds of a round trip and its payload size (0 for a
/// floor).
pub(crate) fn round(
    n: u32,
    mut one: impl FnMut(u32) -> Result<(u64, usize), String>,
) -> Result<Round, String> {
    let (mut h, mut one_block, mut b200) = (hist(), hist(), hist());
    let warm = (n / 10).min(100);
    let t0 = Instant::now();
    for i in 0..n {
        let (ns, size) = one(i)?;
        if i >= warm {
            let _ = h.record(ns.max(1));
            match size {
                1..=48 => drop(one_block.record(ns.max(1))),
                200 => drop(b200.record(ns.max(1))),
                _ => {}
            }
        }
    }
    let avg_ns = t0.elapsed().as_nanos() as f64 / f64::from(n.max(1));
    Ok(Round {
        hist: h,
        one_block,
        b200,
        avg_ns,
    })
}
