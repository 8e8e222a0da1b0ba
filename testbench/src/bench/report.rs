// SPDX-License-Identifier: Apache-2.0
//! Results of the benchmark: one [`Point`] per (test, function, size), perftest-like tables,
//! the JSON file and the SVG plot.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::run::{Raw, Test};
use super::stats::{bw_stats, gbits, lat_stats, mbytes, usec};

/// One measured point.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Point {
    /// Test name (`write_bw`, ...).
    pub test: String,
    /// PCIe function (`PF`, later `VF<n>`).
    pub func: String,
    /// Message size in bytes.
    pub bytes: u64,
    /// Iterations (per QP for BW tests).
    pub iterations: u64,
    /// QPs used.
    pub qps: usize,
    /// BW: peak in Gb/s (10^9 bit/s).
    pub bw_peak_gbps: Option<f64>,
    /// BW: average in Gb/s.
    pub bw_avg_gbps: Option<f64>,
    /// BW: peak in MB/s (2^20 bytes/s, perftest's unit).
    pub bw_peak_mbps: Option<f64>,
    /// BW: average in MB/s.
    pub bw_avg_mbps: Option<f64>,
    /// BW: messages per second, millions.
    pub msg_rate_mpps: Option<f64>,
    /// BW: cycles from the first post to the last completion.
    pub bw_cycles: Option<u64>,
    /// Latency: minimum in us.
    pub t_min_us: Option<f64>,
    /// Latency: maximum (after dropping the 2 largest samples) in us.
    pub t_max_us: Option<f64>,
    /// Latency: median in us.
    pub t_typical_us: Option<f64>,
    /// Latency: mean in us.
    pub t_avg_us: Option<f64>,
    /// Latency: standard deviation in us.
    pub t_stdev_us: Option<f64>,
    /// Latency: 99th percentile in us.
    pub t_p99_us: Option<f64>,
    /// Latency: 99.9th percentile in us.
    pub t_p999_us: Option<f64>,
    /// Latency: samples the statistics used.
    pub lat_samples: Option<usize>,
    /// Simulated fabric cycles of the point (the whole point, polling included).
    pub sim_cycles: u64,
    /// Wall time of the point in seconds.
    pub wall_s: f64,
    /// CPU seconds of the simulating thread (less sensitive to other load than `wall_s`).
    #[serde(default)]
    pub cpu_s: f64,
    /// Simulated fabric cycles per wall second (each of the two NICs ran this many).
    pub sim_cycles_per_s: f64,
    /// Operations of the point (both directions of a ping-pong).
    pub messages: u64,
    /// Operations per wall second (the only speed figure on the model backend).
    pub messages_per_wall_s: f64,
}

impl Point {
    /// Statistics of a raw point at `clock_mhz`.
    pub fn from_raw(test: Test, func: &str, bytes: u64, iterations: u64, qps: usize, raw: &Raw, clock_mhz: f64) -> Point {
        let wall = raw.wall.as_secs_f64();
        let mut p = Point {
            test: test.name().into(),
            func: func.into(),
            bytes,
            iterations,
            qps,
            bw_peak_gbps: None,
            bw_avg_gbps: None,
            bw_peak_mbps: None,
            bw_avg_mbps: None,
            msg_rate_mpps: None,
            bw_cycles: None,
            t_min_us: None,
            t_max_us: None,
            t_typical_us: None,
            t_avg_us: None,
            t_stdev_us: None,
            t_p99_us: None,
            t_p999_us: None,
            lat_samples: None,
            sim_cycles: raw.cycles,
            wall_s: wall,
            cpu_s: raw.cpu.as_secs_f64(),
            sim_cycles_per_s: if wall > 0.0 { raw.cycles as f64 / wall } else { 0.0 },
            messages: raw.messages,
            messages_per_wall_s: if wall > 0.0 { raw.messages as f64 / wall } else { 0.0 },
        };
        if test.is_bw() {
            if let Some(b) = bw_stats(bytes, &raw.posted, &raw.completed) {
                p.bw_peak_gbps = Some(gbits(b.peak_bytes_per_cycle, clock_mhz));
                p.bw_avg_gbps = Some(gbits(b.avg_bytes_per_cycle, clock_mhz));
                p.bw_peak_mbps = Some(mbytes(b.peak_bytes_per_cycle, clock_mhz));
                p.bw_avg_mbps = Some(mbytes(b.avg_bytes_per_cycle, clock_mhz));
                p.msg_rate_mpps = Some(b.msgs_per_cycle * clock_mhz);
                p.bw_cycles = Some(b.cycles);
            }
        } else if raw.rtt.iter().any(|&r| r > 0) {
            if let Some(s) = lat_stats(&raw.rtt, test.lat_scale()) {
                let u = |c: f64| usec(c, clock_mhz);
                p.t_min_us = Some(u(s.min));
                p.t_max_us = Some(u(s.max));
                p.t_typical_us = Some(u(s.typical));
                p.t_avg_us = Some(u(s.avg));
                p.t_stdev_us = Some(u(s.stdev));
                p.t_p99_us = Some(u(s.p99));
                p.t_p999_us = Some(u(s.p999));
                p.lat_samples = Some(s.samples);
            }
        }
        p
    }
}

fn f(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.prec$}"))
}

/// The header line of a test's table (perftest's column names, plus the simulation columns).
pub fn header(test: Test) -> String {
    if test.is_bw() {
        format!(
            " {:<10} {:<12} {:>16} {:>18} {:>16} {:>19} {:>14} {:>12} {:>9}",
            "#bytes", "#iterations", "BW peak[Gb/sec]", "BW average[Gb/sec]", "BW peak[MB/sec]", "BW average[MB/sec]", "MsgRate[Mpps]", "sim cycles", "wall[s]"
        )
    } else {
        format!(
            " {:<10} {:<12} {:>12} {:>12} {:>16} {:>12} {:>14} {:>22} {:>24} {:>12} {:>9}",
            "#bytes", "#iterations", "t_min[usec]", "t_max[usec]", "t_typical[usec]", "t_avg[usec]", "t_stdev[usec]", "99% percentile[usec]", "99.9% percentile[usec]", "sim cycles", "wall[s]"
        )
    }
}

/// One table row.
pub fn row(p: &Point) -> String {
    if p.test.ends_with("_bw") {
        format!(
            " {:<10} {:<12} {:>16} {:>18} {:>16} {:>19} {:>14} {:>12} {:>9.2}",
            p.bytes,
            p.iterations,
            f(p.bw_peak_gbps, 2),
            f(p.bw_avg_gbps, 2),
            f(p.bw_peak_mbps, 2),
            f(p.bw_avg_mbps, 2),
            f(p.msg_rate_mpps, 6),
            p.sim_cycles,
            p.wall_s
        )
    } else {
        format!(
            " {:<10} {:<12} {:>12} {:>12} {:>16} {:>12} {:>14} {:>22} {:>24} {:>12} {:>9.2}",
            p.bytes,
            p.iterations,
            f(p.t_min_us, 3),
            f(p.t_max_us, 3),
            f(p.t_typical_us, 3),
            f(p.t_avg_us, 3),
            f(p.t_stdev_us, 3),
            f(p.t_p99_us, 3),
            f(p.t_p999_us, 3),
            p.sim_cycles,
            p.wall_s
        )
    }
}

/// Human size: 2, 1K, 64K, 8M.
pub fn size_label(b: f64) -> String {
    let b = b.round() as u64;
    if b >= 1 << 20 && b.is_multiple_of(1 << 20) {
        format!("{}M", b >> 20)
    } else if b >= 1 << 10 && b.is_multiple_of(1 << 10) {
        format!("{}K", b >> 10)
    } else {
        b.to_string()
    }
}

/// Write the SVG plot: throughput (average as lines, peak as dots) and typical latency against
/// message size, one series per (test, function). The line rate `target_gbps` is drawn as a
/// reference.
///
/// # Errors
/// The file could not be written.
pub fn plot(path: &Path, points: &[Point], title: &str, target_gbps: f64) -> Result<(), String> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| err(&e))?;
    }
    let mut series: Vec<(String, bool)> = Vec::new();
    for p in points {
        let key = (format!("{} {}", p.test, p.func), p.test.ends_with("_bw"));
        if !series.contains(&key) {
            series.push(key);
        }
    }
    let sizes: Vec<f64> = points.iter().map(|p| p.bytes as f64).collect();
    let xmin = sizes.iter().copied().fold(f64::INFINITY, f64::min).max(1.0);
    let xmax = sizes.iter().copied().fold(0.0, f64::max).max(xmin * 2.0);
    let xr = (xmin / 1.5)..(xmax * 1.5);
    let bw_max = points.iter().filter_map(|p| p.bw_peak_gbps).fold(target_gbps, f64::max) * 1.1;
    let lats: Vec<f64> = points.iter().filter_map(|p| p.t_typical_us).collect();
    let lat_min = lats.iter().copied().fold(f64::INFINITY, f64::min);
    let lat_max = lats.iter().copied().fold(0.0, f64::max);
    let (lat_lo, lat_hi) = if lats.is_empty() { (0.1, 10.0) } else { (lat_min / 2.0, lat_max * 2.0) };

    let root = SVGBackend::new(path, (1400, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root.titled(title, ("sans-serif", 18)).map_err(|e| err(&e))?;
    let (left, right) = root.split_horizontally(700);
    let color = |i: usize| Palette99::pick(i).to_rgba();

    let mut bw = ChartBuilder::on(&left)
        .caption("Throughput vs message size (line: average, dots: peak)", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(xr.clone().log_scale().base(2.0), 0.0..bw_max)
        .map_err(|e| err(&e))?;
    bw.configure_mesh()
        .x_desc("message size [bytes]")
        .y_desc("Gb/s")
        .x_label_formatter(&|x| size_label(*x))
        .draw()
        .map_err(|e| err(&e))?;
    bw.draw_series(LineSeries::new([(xr.start, target_gbps), (xr.end, target_gbps)], BLACK.mix(0.4)))
        .map_err(|e| err(&e))?
        .label(format!("target {target_gbps} Gb/s"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
    let mut lat = ChartBuilder::on(&right)
        .caption("Latency vs message size (t_typical)", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(xr.clone().log_scale().base(2.0), (lat_lo..lat_hi).log_scale())
        .map_err(|e| err(&e))?;
    lat.configure_mesh()
        .x_desc("message size [bytes]")
        .y_desc("usec")
        .x_label_formatter(&|x| size_label(*x))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, is_bw)) in series.iter().enumerate() {
        let c = color(i);
        let of = |p: &&Point| format!("{} {}", p.test, p.func) == *name;
        if *is_bw {
            let avg: Vec<(f64, f64)> = points.iter().filter(of).filter_map(|p| Some((p.bytes as f64, p.bw_avg_gbps?))).collect();
            let peak: Vec<(f64, f64)> = points.iter().filter(of).filter_map(|p| Some((p.bytes as f64, p.bw_peak_gbps?))).collect();
            bw.draw_series(LineSeries::new(avg, c.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
            bw.draw_series(peak.into_iter().map(|xy| Circle::new(xy, 3, c.filled()))).map_err(|e| err(&e))?;
        } else {
            let pts: Vec<(f64, f64)> = points.iter().filter(of).filter_map(|p| Some((p.bytes as f64, p.t_typical_us?))).collect();
            lat.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
            lat.draw_series(pts.into_iter().map(|xy| Circle::new(xy, 2, c.filled()))).map_err(|e| err(&e))?;
        }
    }
    bw.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    lat.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn point_units_from_cycles() {
        // 10 messages of 1000 bytes, posted at 0, completions every 100 cycles: 10 bytes/cycle
        // = 20 Gb/s at 250 MHz; 1000 cycles = 4 us.
        let raw = Raw {
            posted: vec![0; 10],
            completed: (1..=10).map(|k| k * 100).collect(),
            cycles: 1200,
            wall: Duration::from_millis(10),
            messages: 10,
            ..Raw::default()
        };
        let p = Point::from_raw(Test::WriteBw, "PF", 1000, 10, 1, &raw, 250.0);
        assert!((p.bw_avg_gbps.unwrap() - 20.0).abs() < 1e-9);
        assert!((p.bw_peak_gbps.unwrap() - 20.0).abs() < 1e-9);
        assert!((p.msg_rate_mpps.unwrap() - 2.5).abs() < 1e-9);
        assert_eq!(p.bw_cycles, Some(1000));
        assert!((p.sim_cycles_per_s - 120_000.0).abs() < 1e-6);
        assert_eq!(p.t_min_us, None);

        // Ping-pong round trips of 500 cycles: 2 us round trip, 1 us reported for WRITE, 2 us
        // for READ.
        let raw = Raw { rtt: vec![500; 5], cycles: 2500, wall: Duration::from_millis(1), messages: 10, ..Raw::default() };
        let w = Point::from_raw(Test::WriteLat, "PF", 2, 5, 1, &raw, 250.0);
        assert_eq!(w.t_typical_us, Some(1.0));
        assert_eq!(w.bw_avg_gbps, None);
        let r = Point::from_raw(Test::ReadLat, "PF", 2, 5, 1, &raw, 250.0);
        assert_eq!(r.t_typical_us, Some(2.0));
        assert_eq!(r.lat_samples, Some(3));
        // No clock (model backend): no figures, but a row still prints.
        let raw = Raw { rtt: vec![0; 5], ..Raw::default() };
        let m = Point::from_raw(Test::SendLat, "PF", 2, 5, 1, &raw, 250.0);
        assert_eq!(m.t_typical_us, None);
        assert!(row(&m).contains(" - "));
    }

    #[test]
    fn size_labels() {
        assert_eq!(size_label(2.0), "2");
        assert_eq!(size_label(1024.0), "1K");
        assert_eq!(size_label(8.0 * 1048576.0), "8M");
        assert_eq!(size_label(1536.0), "1536");
    }
}
