// SPDX-License-Identifier: Apache-2.0
//! Waveform and capture of the every-verb scenario: two NICs in lockstep (RTL and model compared),
//! SEND, SEND with immediate, RDMA WRITE, WRITE with immediate, READ and the atomics, with an FST
//! waveform of the RTL over a cycle window and a pcap of the link. Prints where both were written
//! and how to open them.
//!
//! `cargo run --release -p rnic-testbench --bin rnic-waves -- --out target/waves/every-verb.fst`
//! (`--start`/`--end` bound the window in NIC cycles; `--pcap` names the capture). The options
//! default to `RNIC_WAVES`, `RNIC_WAVES_START`, `RNIC_WAVES_END` and `RNIC_PCAP`, so a replay
//! command printed by a failure runs it unchanged.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use rnic_driver::Mtu;
use rnic_testbench::fabric::Backend;
use rnic_testbench::harness::{Pair, PairOptions};
use rnic_testbench::pcap::CLOCK_PERIOD_PS;
use rnic_testbench::rtl::DEFAULT_WAVE_WINDOW;
use rnic_testbench::scenarios::every_verb;

/// Run every verb between two NICs in lockstep and dump an FST waveform and a pcap.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// FST file of NIC 0 (NIC 1 writes NAME.1.fst) [default: $RNIC_WAVES or target/waves/every-verb.fst]
    #[arg(long)]
    out: Option<PathBuf>,
    /// First NIC cycle dumped (0 also dumps the reset) [default: $RNIC_WAVES_START or 0]
    #[arg(long)]
    start: Option<u64>,
    /// First NIC cycle not dumped [default: $RNIC_WAVES_END or start + 200000]
    #[arg(long)]
    end: Option<u64>,
    /// pcap of every frame on the link [default: $RNIC_PCAP or the FST path with .pcap]
    #[arg(long)]
    pcap: Option<PathBuf>,
    /// Message size in bytes for SEND/WRITE/READ
    #[arg(long, default_value_t = 5000)]
    len: usize,
}

fn env_u64(k: &str) -> Option<u64> {
    std::env::var(k).ok().and_then(|v| v.trim().parse().ok())
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// A spinner on stderr, hidden when stderr is not a terminal or under CI.
fn spinner() -> ProgressBar {
    if std::env::var_os("CI").is_some() || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("{spinner} [{elapsed}] {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

fn run(args: &Args) -> Result<(), String> {
    let out = args
        .out
        .clone()
        .or_else(|| std::env::var_os("RNIC_WAVES").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target/waves/every-verb.fst"));
    let out = absolute(&out);
    let start = args.start.or_else(|| env_u64("RNIC_WAVES_START")).unwrap_or(0);
    let end = args.end.or_else(|| env_u64("RNIC_WAVES_END")).unwrap_or(start.saturating_add(DEFAULT_WAVE_WINDOW));
    if end <= start {
        return Err(format!("empty window: --start {start} --end {end}"));
    }
    let pcap = args
        .pcap
        .clone()
        .or_else(|| std::env::var_os("RNIC_PCAP").map(PathBuf::from))
        .unwrap_or_else(|| out.with_extension("pcap"));
    let pcap = absolute(&pcap);
    // The RTL NICs read their waveform window from the environment when the fabric creates them
    // (rtl::WaveConfig::from_env); nothing else runs yet, so setting it here is race-free.
    std::env::set_var("RNIC_WAVES", &out);
    std::env::set_var("RNIC_WAVES_START", start.to_string());
    std::env::set_var("RNIC_WAVES_END", end.to_string());
    for f in [out.clone(), out.with_extension("1.fst")] {
        let _ = std::fs::remove_file(f); // a stale file would pass for this run's
    }

    let mut o = PairOptions::on(Backend::Lockstep);
    o.mtu = Mtu::Mtu1024;
    o.mr_len = ((args.len as u64 * 2 + 4096) + 4095) & !4095;
    o.fabric.capture = Some(pcap.clone());
    let t0 = Instant::now();
    let pb = spinner();
    pb.set_message("connecting two NICs");
    let (waves0, waves1, cycles, frames) = {
        let pair = Pair::new(&o)?;
        every_verb(&pair, args.len, &mut |l| {
            let cycle = pair.fabric.try_borrow().map(|f| f.cycle()).unwrap_or(0);
            pb.set_message(format!("cycle {cycle}: {l}"));
            pb.suspend(|| println!("  {l}"));
        })?;
        pb.set_message("settling (lockstep drain and memory compare)");
        pair.settle()?;
        let mut f = pair.fabric.borrow_mut();
        f.flush_capture();
        (out.clone(), out.with_extension("1.fst"), f.cycle(), f.frames_sent())
        // The pair drops here: the RTL NICs close (and flush) their FST files.
    };
    pb.finish_and_clear();

    let ns = |c: u64| c * CLOCK_PERIOD_PS / 1000;
    println!(
        "every verb in lockstep: OK, {cycles} cycles ({:.1} us at 250 MHz), {frames} frames, {:.2} s wall",
        ns(cycles) as f64 / 1000.0,
        t0.elapsed().as_secs_f64()
    );
    println!("window: NIC cycles [{start}, {})", end.min(cycles));
    let mut ok = true;
    for (nic, w) in [(0, &waves0), (1, &waves1)] {
        match std::fs::metadata(w) {
            Ok(m) if m.len() > 0 => println!("waveform of NIC {nic}: {} ({} bytes)", w.display(), m.len()),
            Ok(_) => {
                ok = false;
                println!("waveform of NIC {nic}: {} is EMPTY", w.display());
            }
            Err(_) => {
                ok = false;
                println!("waveform of NIC {nic}: {} was not written (the window starts after the run ended?)", w.display());
            }
        }
    }
    match std::fs::metadata(&pcap) {
        Ok(m) => println!("capture of the link: {} ({} bytes, {frames} frames)", pcap.display(), m.len()),
        Err(e) => return Err(format!("capture {} missing: {e}", pcap.display())),
    }
    println!();
    println!("open them:");
    println!("  gtkwave {}", waves0.display());
    println!("    signals: TOP.rnic_top.cycle_o (NIC cycle + 1), u_engine.state_q (engine FSM), trace_* (task starts),");
    println!("    dma_rd_* / dma_wr_* (host DMA), tx_t* / rx_t* (MAC streams), mmio_* (BAR0), msix_*;");
    println!("    time axis: NIC cycle N is at (N + 16) x 4 ns (16 reset cycles, 250 MHz)");
    println!("  wireshark {}    (RoCEv2 is decoded on UDP 4791)", pcap.display());
    println!("  tshark -r {} -V | less    (every field of every frame)", pcap.display());
    if ok {
        Ok(())
    } else {
        Err("a waveform file is missing or empty".into())
    }
}

fn main() {
    env_logger::init();
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("rnic-waves FAILED: {e}");
        std::process::exit(1);
    }
}
