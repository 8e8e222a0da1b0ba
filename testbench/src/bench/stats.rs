// SPDX-License-Identifier: Apache-2.0
//! perftest's arithmetic: latency statistics over round-trip samples, bandwidth (average and
//! peak) from per-message post / completion cycles, units, and the iteration counts of a sweep.

/// Samples perftest drops from the top of the sorted latency samples (`LAT_MEASURE_TAIL`).
pub const LAT_MEASURE_TAIL: usize = 2;

/// Latency statistics in cycles (perftest's `ib_*_lat` columns before the unit conversion).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatStats {
    /// Samples the statistics are computed over (after dropping the tail).
    pub samples: usize,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample kept.
    pub max: f64,
    /// Median (`t_typical`): element `n / 2` of the sorted samples.
    pub typical: f64,
    /// Mean.
    pub avg: f64,
    /// Population standard deviation.
    pub stdev: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// 99.9th percentile (nearest rank).
    pub p999: f64,
}

/// Nearest-rank percentile of sorted samples: the smallest sample with at least `p` of the
/// samples at or below it (`sorted[ceil(p * n) - 1]`).
///
/// # Panics
/// On an empty slice.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    assert!(!sorted.is_empty(), "percentile of no samples");
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Statistics of `samples` (any order) the way perftest reports them: sort, drop the
/// [`LAT_MEASURE_TAIL`] largest samples when more than that many would remain, then min, max,
/// median, mean, standard deviation and the 99 / 99.9 % percentiles of the rest. `scale`
/// multiplies every sample first (0.5 for the half round trip of SEND / WRITE latency).
/// `None` without samples.
pub fn lat_stats(samples: &[u64], scale: f64) -> Option<LatStats> {
    if samples.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = samples.iter().map(|&s| s as f64 * scale).collect();
    v.sort_by(f64::total_cmp);
    if v.len() > LAT_MEASURE_TAIL {
        v.truncate(v.len() - LAT_MEASURE_TAIL);
    }
    let n = v.len() as f64;
    let avg = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - avg) * (x - avg)).sum::<f64>() / n;
    Some(LatStats {
        samples: v.len(),
        min: v[0],
        max: v[v.len() - 1],
        typical: v[v.len() / 2],
        avg,
        stdev: var.sqrt(),
        p99: percentile(&v, 0.99),
        p999: percentile(&v, 0.999),
    })
}

/// Bandwidth figures in bytes per cycle and messages per cycle.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BwStats {
    /// Messages.
    pub messages: usize,
    /// Cycles from the first post to the last completion.
    pub cycles: u64,
    /// Average: `size * messages / cycles`.
    pub avg_bytes_per_cycle: f64,
    /// Peak: `size / best per-message time`, the best time being the minimum over all windows
    /// `i <= j` of `(completed[j] - posted[i]) / (j - i + 1)` (perftest's peak search).
    pub peak_bytes_per_cycle: f64,
    /// Messages per cycle (average).
    pub msgs_per_cycle: f64,
}

/// Bandwidth of `posted.len()` messages of `size` bytes: `posted[k]` is the cycle the k-th
/// message was posted, `completed[k]` the cycle the k-th completion (in completion order) was
/// seen. Both must have the same length and be non-decreasing. `None` if there are no messages or
/// no cycle elapsed (a backend without a clock).
pub fn bw_stats(size: u64, posted: &[u64], completed: &[u64]) -> Option<BwStats> {
    let n = posted.len();
    if n == 0 || completed.len() != n {
        return None;
    }
    let cycles = completed[n - 1].saturating_sub(posted[0]);
    if cycles == 0 {
        return None;
    }
    // Best per-message time over every window [i, j]; O(n^2), n is at most a few thousand.
    let mut best = f64::INFINITY;
    for (i, &p) in posted.iter().enumerate() {
        for (j, &c) in completed.iter().enumerate().skip(i) {
            let t = c.saturating_sub(p);
            if t == 0 {
                continue;
            }
            let per = t as f64 / (j - i + 1) as f64;
            if per < best {
                best = per;
            }
        }
    }
    Some(BwStats {
        messages: n,
        cycles,
        avg_bytes_per_cycle: (size * n as u64) as f64 / cycles as f64,
        peak_bytes_per_cycle: size as f64 / best,
        msgs_per_cycle: n as f64 / cycles as f64,
    })
}

/// Gb/s (10^9 bits per second) of `bytes_per_cycle` at `clock_mhz`.
pub fn gbits(bytes_per_cycle: f64, clock_mhz: f64) -> f64 {
    bytes_per_cycle * 8.0 * clock_mhz * 1e6 / 1e9
}

/// MB/s in perftest's units (MB = 2^20 bytes) of `bytes_per_cycle` at `clock_mhz`.
pub fn mbytes(bytes_per_cycle: f64, clock_mhz: f64) -> f64 {
    bytes_per_cycle * clock_mhz * 1e6 / f64::from(1u32 << 20)
}

/// Microseconds of `cycles` at `clock_mhz`.
pub fn usec(cycles: f64, clock_mhz: f64) -> f64 {
    cycles / clock_mhz
}

/// The sizes of a sweep: powers of two from `min` to `max` inclusive (perftest `-a`: 2 .. 2^23).
pub fn sweep_sizes(min: u64, max: u64) -> Vec<u64> {
    let mut v = Vec::new();
    let mut s = min.max(1).next_power_of_two();
    while s <= max {
        v.push(s);
        s *= 2;
    }
    v
}

/// Default iteration count for one point of the sweep: enough messages to move `budget_bytes`
/// (the data crossing the link in one iteration counts: twice the size for a SEND / WRITE
/// ping-pong), at least `min` and at most `max`. Keeps every point of an RTL sweep at roughly the
/// same simulated time, so the whole sweep takes a few minutes.
pub fn scaled_iters(size: u64, bytes_per_iter_factor: u64, budget_bytes: u64, min: u64, max: u64) -> u64 {
    let per_iter = size.max(1) * bytes_per_iter_factor.max(1);
    (budget_bytes / per_iter).clamp(min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.99), 990.0);
        assert_eq!(percentile(&v, 0.999), 999.0);
        assert_eq!(percentile(&v, 0.5), 500.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        let small = [1.0, 2.0, 3.0];
        assert_eq!(percentile(&small, 0.99), 3.0);
        assert_eq!(percentile(&small, 0.0), 1.0);
    }

    #[test]
    fn lat_stats_drop_the_tail_and_scale() {
        // 1..=100 shuffled, plus two huge outliers that perftest drops.
        let mut s: Vec<u64> = (1..=100).rev().collect();
        s.push(1_000_000);
        s.insert(17, 999_999);
        let st = lat_stats(&s, 0.5).unwrap();
        assert_eq!(st.samples, 100);
        assert_eq!(st.min, 0.5);
        assert_eq!(st.max, 50.0);
        assert_eq!(st.typical, 25.5); // sorted[50] = 51 cycles, halved
        assert!((st.avg - 25.25).abs() < 1e-9);
        // stdev of 1..=100 is sqrt((100^2 - 1) / 12) = 28.866; halved.
        assert!((st.stdev - 14.4330).abs() < 1e-3, "{}", st.stdev);
        assert_eq!(st.p99, 49.5);
        assert_eq!(st.p999, 50.0);
    }

    #[test]
    fn lat_stats_of_few_samples_keep_them_all() {
        assert_eq!(lat_stats(&[], 1.0), None);
        let st = lat_stats(&[10, 30], 1.0).unwrap();
        assert_eq!((st.samples, st.min, st.max, st.typical, st.avg), (2, 10.0, 30.0, 30.0, 20.0));
        assert_eq!(st.stdev, 10.0);
        let st = lat_stats(&[5, 1, 9], 1.0).unwrap();
        assert_eq!((st.samples, st.min, st.max), (1, 1.0, 1.0));
    }

    #[test]
    fn bw_average_and_peak() {
        // Four messages of 100 bytes, all posted at cycle 0; completions at 10, 20, 30, 100.
        let st = bw_stats(100, &[0, 0, 0, 0], &[10, 20, 30, 100]).unwrap();
        assert_eq!(st.cycles, 100);
        assert_eq!(st.avg_bytes_per_cycle, 4.0);
        // Best window: any [0, j] with j < 3 gives 10 cycles per message -> 10 bytes/cycle.
        assert_eq!(st.peak_bytes_per_cycle, 10.0);
        assert_eq!(st.msgs_per_cycle, 0.04);
        assert!(st.peak_bytes_per_cycle >= st.avg_bytes_per_cycle);
        // A window that does not start at the first message can be the best one.
        let st = bw_stats(8, &[0, 50, 60], &[100, 104, 106]).unwrap();
        assert_eq!(st.peak_bytes_per_cycle, 8.0 / 28.0); // [1, 2]: (106 - 50) / 2 = 28
        assert_eq!(bw_stats(8, &[], &[]), None);
        assert_eq!(bw_stats(8, &[0], &[0]), None); // no clock
        assert_eq!(bw_stats(8, &[0, 1], &[5]), None);
    }

    #[test]
    fn units() {
        // 64 bytes per cycle at 250 MHz = 128 Gb/s = 15258.8 MB/s (2^20).
        assert!((gbits(64.0, 250.0) - 128.0).abs() < 1e-9);
        assert!((mbytes(64.0, 250.0) - 15258.789).abs() < 1e-3);
        assert_eq!(usec(500.0, 250.0), 2.0);
    }

    #[test]
    fn sweep_and_iteration_scaling() {
        let s = sweep_sizes(2, 8 << 20);
        assert_eq!(s.len(), 23);
        assert_eq!((s[0], s[22]), (2, 8 << 20));
        assert_eq!(sweep_sizes(3, 16), vec![4, 8, 16]);
        assert_eq!(scaled_iters(2, 1, 4 << 20, 2, 1000), 1000);
        assert_eq!(scaled_iters(4096, 1, 4 << 20, 2, 1000), 1000);
        assert_eq!(scaled_iters(65536, 1, 4 << 20, 2, 1000), 64);
        assert_eq!(scaled_iters(65536, 2, 4 << 20, 2, 1000), 32);
        assert_eq!(scaled_iters(8 << 20, 1, 4 << 20, 2, 1000), 2);
    }
}
