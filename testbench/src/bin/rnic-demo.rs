// SPDX-License-Identifier: Apache-2.0
//! The main demo: two simulated NICs linked back to back, every verb run through the driver, with
//! the RTL and the reference model in lockstep (by default). Prints what it did and what the
//! lockstep checker compared.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use rnic_driver::{Mtu, SendWr, WcStatus, WrOpcode};
use rnic_testbench::fabric::Backend;
use rnic_testbench::harness::{Pair, PairOptions};
use rnic_testbench::pcap::CLOCK_PERIOD_PS;
use rnic_testbench::scenarios::{every_verb, pattern};

/// Connect two simulated RNICs and run every verb.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// model, rtl or lockstep
    #[arg(long, default_value = "lockstep")]
    backend: Backend,
    /// Message size in bytes for SEND/WRITE/READ
    #[arg(long, default_value_t = 5000)]
    len: usize,
    /// Path MTU in bytes (256, 512, 1024, 2048, 4096)
    #[arg(long, default_value_t = 1024)]
    mtu: u32,
    /// Write every frame on the link to this pcap file
    #[arg(long)]
    pcap: Option<PathBuf>,
    /// Size of the large RDMA WRITE timed at the end (0 to skip)
    #[arg(long, default_value_t = 2 << 20)]
    big_write: usize,
}

fn mtu(bytes: u32) -> Result<Mtu, String> {
    Mtu::from_bytes(bytes).map_err(|e| format!("--mtu: {e}"))
}

fn run(args: &Args) -> Result<(), String> {
    let mut o = PairOptions::on(args.backend);
    o.mtu = mtu(args.mtu)?;
    o.mr_len = ((args.len as u64 * 2 + 4096).max(args.big_write as u64) + 4095) & !4095;
    o.fabric.capture = args.pcap.clone();
    println!("backend: {:?}; two NICs linked back to back ({} cycles one way); MTU {}; message {} bytes", args.backend, o.fabric.link_delay, args.mtu, args.len);
    let t0 = Instant::now();
    let pair = Pair::new(&o)?;
    println!("connected QP {:#x} (NIC 0) <-> QP {:#x} (NIC 1)", pair.a.qps[0].qpn(), pair.b.qps[0].qpn());
    every_verb(&pair, args.len, &mut |l| println!("  {l}"))?;
    pair.settle()?;
    let verbs_wall = t0.elapsed();
    let verbs_cycles = pair.fabric.borrow().cycle();

    if args.big_write > 0 {
        let data = pattern(99, args.big_write);
        pair.a.mr.write(0, &data).map_err(|e| e.to_string())?;
        let c0 = pair.fabric.borrow().cycle();
        let t1 = Instant::now();
        let op = WrOpcode::Write { remote_addr: pair.b.mr.addr(), rkey: pair.b.mr.rkey() };
        let sge = pair.a.mr.sge(0, args.big_write as u32).map_err(|e| e.to_string())?;
        pair.a.qps[0].post_send(&SendWr::new(77, op, vec![sge])).map_err(|e| e.to_string())?;
        let wc = Pair::wait(&pair.a, 1)?;
        let wall = t1.elapsed();
        let cycles = pair.fabric.borrow().cycle() - c0;
        if wc[0].status != WcStatus::Success {
            return Err(format!("large WRITE completed with {:?}", wc[0].status));
        }
        let got = pair.b.mr.read_vec(0, args.big_write).map_err(|e| e.to_string())?;
        if got != data {
            return Err("large WRITE: data differs".into());
        }
        pair.settle()?;
        let ns = cycles as f64 * CLOCK_PERIOD_PS as f64 / 1000.0;
        println!(
            "  RDMA WRITE of {} bytes: OK in {cycles} cycles ({:.1} us modelled at 250 MHz, {:.2} Gb/s), {:.2} s wall",
            args.big_write,
            ns / 1000.0,
            args.big_write as f64 * 8.0 / ns,
            wall.as_secs_f64()
        );
    }

    let f = pair.fabric.borrow();
    let wall = t0.elapsed().as_secs_f64();
    println!("frames on the link: {}", f.frames_sent());
    for (i, s) in f.check_stats().iter().enumerate() {
        println!(
            "lockstep NIC {i}: {} tasks followed; compared {} frames, {} DMA writes, {} MSI-X, {} MMIO reads: 0 mismatches",
            s.tasks, s.frames, s.dma_writes, s.msix, s.mmio_reads
        );
    }
    if f.cycle() > 0 {
        println!(
            "simulated {} cycles ({:.1} us at 250 MHz) in {wall:.2} s wall: {:.0} cycles/s (verbs part: {} cycles in {:.2} s)",
            f.cycle(),
            f.cycle() as f64 * CLOCK_PERIOD_PS as f64 / 1e6,
            f.cycle() as f64 / wall,
            verbs_cycles,
            verbs_wall.as_secs_f64()
        );
    }
    println!("demo passed");
    Ok(())
}

fn main() {
    env_logger::init();
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("demo FAILED: {e}");
        std::process::exit(1);
    }
}
