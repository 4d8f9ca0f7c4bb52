//! Resident memory over a long run (`bench live --soak-s`, `bench train`): sampled every few seconds,
//! so a leak shows as growth between the settled start and the end. On a CPU adapter (lavapipe) GPU
//! buffers live in this process too, so the figure covers them.

use std::time::{Duration, Instant};

/// The process's resident memory now (Linux `VmRSS`), in MiB; 0 where unknown.
pub fn rss_mib() -> f64 {
    status_field("VmRSS:")
}

/// The process's peak resident memory (Linux `VmHWM`), in MiB; 0 where unknown.
pub fn peak_rss_mib() -> f64 {
    status_field("VmHWM:")
}

fn status_field(name: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(name)).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Resident memory sampled at most every `every`.
pub struct MemoryTrace {
    start: Instant,
    every: Duration,
    /// (seconds since the start, MiB).
    samples: Vec<(f64, f64)>,
}

impl MemoryTrace {
    pub fn new(every: Duration) -> Self {
        let mut trace = Self {
            start: Instant::now(),
            every,
            samples: Vec::new(),
        };
        trace.sample();
        trace
    }

    /// Records the resident memory if the last sample is `every` old.
    pub fn sample(&mut self) {
        let t = self.start.elapsed().as_secs_f64();
        if self
            .samples
            .last()
            .is_none_or(|&(last, _)| t - last >= self.every.as_secs_f64())
        {
            self.samples.push((t, rss_mib()));
        }
    }

    /// The summary: resident memory once settled (the mean of the second fifth of the samples: the
    /// first holds model loading and kernel compilation), at the end (the mean of the last fifth),
    /// the growth between them per minute, the maximum, and every sample.
    pub fn report(&mut self) -> serde_json::Value {
        self.samples.push((self.start.elapsed().as_secs_f64(), rss_mib()));
        let n = self.samples.len();
        let fifth = (n / 5).max(1);
        let mean = |s: &[(f64, f64)]| {
            let k = s.len().max(1) as f64;
            (
                s.iter().map(|p| p.0).sum::<f64>() / k,
                s.iter().map(|p| p.1).sum::<f64>() / k,
            )
        };
        let settled = mean(&self.samples[fifth.min(n - 1)..(2 * fifth).min(n)]);
        let end = mean(&self.samples[n - fifth..]);
        let minutes = ((end.0 - settled.0) / 60.0).max(1e-9);
        serde_json::json!({
            "seconds": self.start.elapsed().as_secs_f64(),
            "rss_settled_mib": settled.1,
            "rss_end_mib": end.1,
            "rss_growth_mib_per_minute": (end.1 - settled.1) / minutes,
            "rss_max_mib": self.samples.iter().map(|s| s.1).fold(0.0, f64::max),
            "samples": self.samples.iter().map(|&(t, m)| [t.round(), (m * 10.0).round() / 10.0]).collect::<Vec<_>>(),
        })
    }
}
