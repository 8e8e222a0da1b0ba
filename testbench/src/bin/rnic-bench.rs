// SPDX-License-Identifier: Apache-2.0
//! `rnic-bench`: perftest (`ib_write_bw`, `ib_read_bw`, `ib_send_bw`, `ib_write_lat`,
//! `ib_read_lat`, `ib_send_lat`) on two simulated NICs linked back to back, in modelled time,
//! with perftest's columns; `--sim-speed` measures the simulator instead. See `docs/bench.md`.
//!
//! ```text
//! cargo run --release -p rnic-testbench --bin rnic-bench                      # full sweep, RTL
//! cargo run --release -p rnic-testbench --bin rnic-bench -- --test write_bw --size 65536
//! cargo run --release -p rnic-testbench --bin rnic-bench -- --json target/bench/results.json --plot target/bench/results.svg
//! cargo run --release -p rnic-testbench --bin rnic-bench -- --sim-speed --json target/bench/simspeed.json
//! ```

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use rnic_driver::Mtu;
use rnic_testbench::bench::report::{self, Point};
use rnic_testbench::bench::run::{Bench, BenchConfig, Test};
use rnic_testbench::bench::{simspeed, stats};
use rnic_testbench::fabric::Backend;
use serde::Serialize;

/// perftest (write/read/send, bandwidth and latency) in modelled time on two simulated RNICs, or
/// with --sim-speed the simulator's speed. See docs/bench.md.
#[derive(Parser, Debug, Clone)]
#[command(version)]
struct Args {
    /// Tests to run, comma separated: write_bw, read_bw, send_bw, write_lat, read_lat, send_lat
    /// (default: all six)
    #[arg(long, value_delimiter = ',')]
    test: Vec<Test>,
    /// One message size in bytes (default: the sweep, like perftest -a)
    #[arg(long, short = 's')]
    size: Option<u64>,
    /// Sweep sizes (powers of two from --min-size to --max-size); the default without --size
    #[arg(long, short = 'a')]
    all: bool,
    /// Smallest size of the sweep
    #[arg(long, default_value_t = 2)]
    min_size: u64,
    /// Largest size of the sweep (8 MiB = perftest -a)
    #[arg(long, default_value_t = 8 << 20)]
    max_size: u64,
    /// Iterations per point (default: scaled with the size, see --budget)
    #[arg(long, short = 'n')]
    iters: Option<u64>,
    /// Bytes one point moves when --iters is not given (iterations = budget / size, or /(2 size)
    /// for SEND/WRITE ping-pong, clamped to --min-iters..--max-iters)
    #[arg(long, default_value_t = 4 << 20)]
    budget: u64,
    /// Fewest iterations of a scaled point
    #[arg(long, default_value_t = 2)]
    min_iters: u64,
    /// Most iterations of a scaled point (perftest's latency default)
    #[arg(long, default_value_t = 1000)]
    max_iters: u64,
    /// Connected QP pairs (BW tests spread the messages over all; latency tests use one)
    #[arg(long, short = 'q', default_value_t = 1)]
    qps: usize,
    /// PCIe function(s): PF, VF<n> (n VFs are enabled; VF n gets 1/(n+1) of every table), or a
    /// comma list such as PF,VF2 (each is run in turn; the JSON and the plot get one series each)
    #[arg(long, default_value = "PF")]
    func: String,
    /// model, rtl or lockstep
    #[arg(long, default_value = "rtl")]
    backend: Backend,
    /// Nominal clock in MHz, used to turn cycles into time (the RTL is built for 250 MHz)
    #[arg(long, default_value_t = 250.0)]
    clock_mhz: f64,
    /// DMA (PCIe) read latency in cycles: request to first completion beat (50 = 200 ns)
    #[arg(long, default_value_t = 50)]
    dma_latency: u64,
    /// Wire latency in cycles, each way (25 = 100 ns)
    #[arg(long, default_value_t = 25)]
    wire_latency: u64,
    /// Line rate of the link in Gb/s: frames leave each NIC no faster (with FCS, preamble and
    /// inter-frame gap); 0 = no limit but the 512-bit MAC interface (128 Gb/s at 250 MHz)
    #[arg(long, default_value_t = 100.0)]
    link_gbps: f64,
    /// Path MTU: 256, 512, 1024, 2048 or 4096 (4096: RoCE on jumbo frames, where the 100 Gb/s
    /// targets are defined; 1024 is RoCE on a 1500-byte Ethernet MTU)
    #[arg(long, default_value_t = 4096)]
    mtu: u32,
    /// Outstanding send WQEs per QP in BW tests (perftest -t)
    #[arg(long, default_value_t = 128)]
    tx_depth: u64,
    /// Receive WQEs kept posted (perftest -r)
    #[arg(long, default_value_t = 512)]
    rx_depth: u64,
    /// Signal every N-th send WQE (perftest -Q)
    #[arg(long, default_value_t = 100)]
    cq_mod: u64,
    /// Largest message sent inline in the WQE (perftest -I; at most MAX_INLINE = 64). Default as
    /// perftest: the maximum for write_lat/send_lat, 0 for the bandwidth tests
    #[arg(long)]
    inline_size: Option<u64>,
    /// Cycles simulated between two polls of the CQs (1: completions timed to the cycle)
    #[arg(long, default_value_t = 1)]
    step_cycles: u64,
    /// Write the results as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the throughput / latency plot (SVG) to this file
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Measure the simulator's speed instead of running perftest
    #[arg(long)]
    sim_speed: bool,
    /// Cycles of the idle speed measurements (--sim-speed)
    #[arg(long, default_value_t = 200_000)]
    idle_cycles: u64,
    /// Runs of each --sim-speed measurement; the fastest counts (the machine may be shared)
    #[arg(long, default_value_t = 3)]
    reps: u32,
    /// Do not run anything: re-draw --plot from a results file written by --json
    #[arg(long, value_name = "JSON")]
    replot: Option<PathBuf>,
}

/// What --replot reads back from a results file.
#[derive(serde::Deserialize)]
struct Saved {
    backend: String,
    clock_mhz: f64,
    mtu: u32,
    dma_latency_cycles: u64,
    wire_latency_cycles: u64,
    points: Vec<Point>,
}

/// The JSON record of a perftest run.
#[derive(Serialize)]
struct Results<'a> {
    tool: &'static str,
    version: &'static str,
    backend: String,
    func: &'a str,
    clock_mhz: f64,
    datapath_bits: u32,
    link_gbps: f64,
    dma_latency_cycles: u64,
    wire_latency_cycles: u64,
    mtu: u32,
    qps: usize,
    tx_depth: u64,
    rx_depth: u64,
    cq_mod: u64,
    inline_size: String,
    step_cycles: u64,
    iterations: String,
    host_cpus: usize,
    unix_time: u64,
    wall_s: f64,
    points: &'a [Point],
}

#[derive(Serialize)]
struct SpeedResults<'a> {
    tool: &'static str,
    version: &'static str,
    clock_mhz: f64,
    dma_latency_cycles: u64,
    wire_latency_cycles: u64,
    mtu: u32,
    host_cpus: usize,
    unix_time: u64,
    report: &'a simspeed::SpeedReport,
}

fn mtu(bytes: u32) -> Result<Mtu, String> {
    Mtu::from_bytes(bytes).map_err(|e| format!("--mtu: {e}"))
}

/// The function number of `--func`.
fn func(s: &str) -> Result<u8, String> {
    let up = s.to_ascii_uppercase();
    if up == "PF" {
        return Ok(0);
    }
    if let Some(n) = up.strip_prefix("VF") {
        if let Ok(n) = n.parse::<u16>() {
            let total = rnic_regs::params::NUM_VF;
            return match u8::try_from(n) {
                Ok(n) if n >= 1 && u64::from(n) <= total => Ok(n),
                _ => Err(format!("--func {s}: the NIC has VF1..=VF{total}")),
            };
        }
    }
    Err(format!("--func {s}: use PF or VF<n>"))
}

fn progress_bar(len: u64) -> ProgressBar {
    if std::env::var_os("CI").is_some() || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} points {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb
}

fn unix_time() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn write_json(path: &PathBuf, value: &impl Serialize) -> Result<(), String> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
}

fn config(args: &Args) -> Result<BenchConfig, String> {
    let max_qps = rnic_regs::params::NUM_QP as usize;
    if args.qps == 0 || args.qps > max_qps {
        return Err(format!("--qps {}: use 1..={max_qps} (the QPs of one NIC)", args.qps));
    }
    if args.clock_mhz <= 0.0 {
        return Err("--clock-mhz must be positive".into());
    }
    if args.tx_depth == 0 || args.rx_depth == 0 || args.cq_mod == 0 {
        return Err("--tx-depth, --rx-depth and --cq-mod must be at least 1".into());
    }
    if args.cq_mod > args.tx_depth {
        return Err(format!(
            "--cq-mod {} is larger than --tx-depth {}: no signaled WR would ever be in flight, so no completion could free the queue; use --cq-mod {} or less",
            args.cq_mod, args.tx_depth, args.tx_depth
        ));
    }
    if args.inline_size.is_some_and(|n| n > rnic_regs::params::MAX_INLINE) {
        return Err(format!("--inline-size must be at most MAX_INLINE = {} (the WQE's inline area)", rnic_regs::params::MAX_INLINE));
    }
    Ok(BenchConfig {
        backend: args.backend,
        qps: args.qps,
        mtu: mtu(args.mtu)?,
        dma_latency: args.dma_latency,
        link_delay: args.wire_latency.max(1),
        // the RTL earns link credit per cycle of its 250 MHz design clock
        link_mbps: (args.link_gbps * 1000.0 * 250.0 / args.clock_mhz).round() as u64,
        tx_depth: args.tx_depth,
        rx_depth: args.rx_depth,
        cq_mod: args.cq_mod,
        inline_size: args.inline_size,
        step_cycles: args.step_cycles.max(1),
        max_size: args.size.unwrap_or(args.max_size),
        func: 0,
    })
}

fn sim_speed(args: &Args) -> Result<(), String> {
    let cfg = config(args)?;
    let pb = progress_bar(0);
    let mut say = |s: &str| {
        if pb.is_hidden() {
            eprintln!("measuring: {s}");
        } else {
            pb.set_message(s.to_string());
            pb.tick();
        }
    };
    let rep = simspeed::measure(&cfg, args.idle_cycles, args.reps, &mut say)?;
    pb.finish_and_clear();
    println!(
        "simulation speed ({} CPUs; nominal clock {} MHz, DMA latency {} cycles, wire {} cycles, MTU {})",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.clock_mhz,
        args.dma_latency,
        args.wire_latency,
        args.mtu
    );
    print!("{}", simspeed::table(&rep));
    if let Some(p) = &args.json {
        let r = SpeedResults {
            tool: "rnic-bench --sim-speed",
            version: env!("CARGO_PKG_VERSION"),
            clock_mhz: args.clock_mhz,
            dma_latency_cycles: args.dma_latency,
            wire_latency_cycles: args.wire_latency,
            mtu: args.mtu,
            host_cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            unix_time: unix_time(),
            report: &rep,
        };
        write_json(p, &r)?;
        println!("results: {}", p.display());
    }
    Ok(())
}

fn perftest(args: &Args) -> Result<(), String> {
    let all_funcs = args.func.to_ascii_uppercase();
    let funcs: Vec<(String, u8)> = all_funcs
        .split(',')
        .map(|n| func(n.trim()).map(|f| (n.trim().to_string(), f)))
        .collect::<Result<_, _>>()?;
    let cfg = config(args)?;
    let tests: Vec<Test> = if args.test.is_empty() { Test::ALL.to_vec() } else { args.test.clone() };
    let sizes = match args.size {
        Some(s) if !args.all => vec![s],
        _ => stats::sweep_sizes(args.min_size, args.max_size),
    };
    if sizes.is_empty() {
        return Err(format!("no size in {}..={}", args.min_size, args.max_size));
    }
    let cfg = BenchConfig { max_size: *sizes.iter().max().unwrap_or(&2), ..cfg };
    let iters_of = |t: Test, size: u64| {
        args.iters.unwrap_or_else(|| stats::scaled_iters(size, t.size_factor(), args.budget, args.min_iters, args.max_iters))
    };
    let total = (funcs.len() * tests.len() * sizes.len()) as u64;
    let pb = progress_bar(total);
    let out = |line: String| {
        if pb.is_hidden() {
            println!("{line}");
        } else {
            pb.println(line);
        }
    };
    let dash = "-".repeat(150);
    let t_all = Instant::now();
    let mut points: Vec<Point> = Vec::new();
    for (fname, f) in &funcs {
        let cfg = BenchConfig { func: *f, ..cfg.clone() };
        for &test in &tests {
            let mut bench = Bench::new(&cfg)?;
            out(dash.clone());
            out(format!(
                " {test}  func {fname}  backend {:?}  {} QP{}  MTU {}  {} MHz  DMA latency {} cycles  wire {} cycles{}",
                args.backend,
                if test.is_bw() { args.qps } else { 1 },
                if test.is_bw() && args.qps > 1 { "s" } else { "" },
                args.mtu,
                args.clock_mhz,
                args.dma_latency,
                args.wire_latency,
                if test.is_bw() { format!("  tx-depth {}  cq-mod {}", args.tx_depth, args.cq_mod) } else { String::new() }
            ));
            out(dash.clone());
            out(report::header(test));
            for &size in &sizes {
                let iters = iters_of(test, size);
                pb.set_message(format!("{test} {size} B x {iters}"));
                let raw = bench.run(test, size, iters).map_err(|e| format!("{test} {size} B: {e}"))?;
                let qps = if test.is_bw() { args.qps } else { 1 };
                let p = Point::from_raw(test, fname, size, iters, qps, &raw, args.clock_mhz);
                out(report::row(&p));
                points.push(p);
                pb.inc(1);
            }
            bench.settle().map_err(|e| format!("{test}: {e}"))?;
        }
    }
    pb.finish_and_clear();
    let wall = t_all.elapsed().as_secs_f64();
    out(dash);
    if args.backend == Backend::Model {
        println!("(the model backend has no clock: modelled figures are '-'; messages_per_wall_s in the JSON)");
    }
    println!("{} points in {wall:.1} s wall", points.len());
    if let Some(p) = &args.json {
        let r = Results {
            tool: "rnic-bench",
            version: env!("CARGO_PKG_VERSION"),
            backend: format!("{:?}", args.backend).to_lowercase(),
            func: &all_funcs,
            clock_mhz: args.clock_mhz,
            datapath_bits: 512,
            link_gbps: args.link_gbps,
            dma_latency_cycles: args.dma_latency,
            wire_latency_cycles: args.wire_latency,
            mtu: args.mtu,
            qps: args.qps,
            tx_depth: args.tx_depth,
            rx_depth: args.rx_depth,
            cq_mod: args.cq_mod,
            inline_size: match args.inline_size {
                Some(n) => format!("{n}"),
                None => format!("{} for write_lat/send_lat, 0 for bandwidth tests", rnic_regs::params::MAX_INLINE),
            },
            step_cycles: cfg.step_cycles,
            iterations: match args.iters {
                Some(n) => format!("{n}"),
                None => format!("clamp({} / (size x factor), {}, {}); factor 2 for send_lat/write_lat", args.budget, args.min_iters, args.max_iters),
            },
            host_cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            unix_time: unix_time(),
            wall_s: wall,
            points: &points,
        };
        write_json(p, &r)?;
        println!("results: {}", p.display());
    }
    if let Some(p) = &args.plot {
        let title = format!(
            "rnic-bench ({} backend, {} MHz, MTU {}, DMA {} cyc, wire {} cyc)",
            format!("{:?}", args.backend).to_lowercase(),
            args.clock_mhz,
            args.mtu,
            args.dma_latency,
            args.wire_latency
        );
        report::plot(p, &points, &title, 100.0)?;
        println!("plot: {}", p.display());
    }
    Ok(())
}

fn replot(json: &PathBuf, plot: Option<&PathBuf>) -> Result<(), String> {
    let plot = plot.ok_or("--replot needs --plot FILE")?;
    let text = std::fs::read_to_string(json).map_err(|e| format!("{}: {e}", json.display()))?;
    let s: Saved = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", json.display()))?;
    let title = format!(
        "rnic-bench ({} backend, {} MHz, MTU {}, DMA {} cyc, wire {} cyc)",
        s.backend, s.clock_mhz, s.mtu, s.dma_latency_cycles, s.wire_latency_cycles
    );
    report::plot(plot, &s.points, &title, 100.0)?;
    println!("plot: {}", plot.display());
    Ok(())
}

fn main() {
    env_logger::init();
    let args = Args::parse();
    let r = if let Some(j) = &args.replot {
        replot(j, args.plot.as_ref())
    } else if args.sim_speed {
        sim_speed(&args)
    } else {
        perftest(&args)
    };
    if let Err(e) = r {
        eprintln!("rnic-bench: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions() {
        assert_eq!(func("PF"), Ok(0));
        assert_eq!(func("pf"), Ok(0));
        assert_eq!(func("VF3"), Ok(3));
        assert_eq!(func("vf8"), Ok(8));
        assert!(func("VF0").unwrap_err().contains("has VF1..=VF8"));
        assert!(func("VF9").unwrap_err().contains("has VF1..=VF8"));
        assert!(func("VFx").unwrap_err().contains("use PF or VF<n>"));
        assert!(func("XF").is_err());
    }
}
