// SPDX-License-Identifier: Apache-2.0
//! Interoperability run against the Linux kernel's rxe in a QEMU guest (`make interop`):
//! `ibv_rc_pingpong` in both directions and perftest's ib_write_bw / ib_read_bw / ib_send_bw
//! against one simulated NIC bridged to the guest, with captures and both sides' counters
//! checked. See docs/interop.md.
//!
//! ```text
//! cargo run --release -p rnic-testbench --bin rnic-interop -- --backend model
//! cargo run --release -p rnic-testbench --bin rnic-interop -- --backend lockstep --sizes 2,4096
//! ```
//!
//! Where the guest cannot run (no QEMU, no image), prints `SKIP: <reason>` and exits 0.

use std::path::PathBuf;

use clap::Parser;
use rnic_testbench::fabric::Backend;
use rnic_testbench::interop::perftest::PtVerb;
use rnic_testbench::interop::suite::{self, SuiteOptions};

/// ibv_rc_pingpong and perftest in a QEMU guest (rxe) against a simulated NIC.
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// model, rtl or lockstep; several separated by commas (one guest boot each)
    #[arg(long, default_value = "model")]
    backend: String,
    /// Repository root (the guest image is under <root>/target/interop/guest)
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// ibv_rc_pingpong message size
    #[arg(long, default_value_t = 4096)]
    pp_size: u32,
    /// ibv_rc_pingpong round trips
    #[arg(long, default_value_t = 50)]
    pp_iters: u32,
    /// perftest message sizes, comma separated (empty: no perftest)
    #[arg(long, default_value = "2,1024,4096,65536")]
    sizes: String,
    /// perftest iterations per size
    #[arg(long, default_value_t = 20)]
    iters: u32,
    /// perftest tools: write,read,send
    #[arg(long, default_value = "write,read,send")]
    verbs: String,
    /// Run perftest only with the tool as the client (our NIC the responder)
    #[arg(long)]
    no_reverse: bool,
    /// QEMU netdev of the bridge: dgram (UDP, one frame per datagram) or stream (TCP, length-prefixed)
    #[arg(long, default_value = "dgram")]
    netdev: String,
}

fn main() {
    env_logger::init();
    let a = Args::parse();
    let mut failed = false;
    let (mut passed_n, mut failed_n) = (0usize, 0usize);
    for b in a.backend.split(',').filter(|s| !s.is_empty()) {
        let backend: Backend = match b.parse() {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        };
        let mut o = SuiteOptions::new(backend, &a.root);
        o.pp_size = a.pp_size;
        o.pp_iters = a.pp_iters;
        o.pt_sizes = a.sizes.split(',').filter(|s| !s.is_empty()).map(|s| s.parse().expect("size")).collect();
        o.pt_iters = a.iters;
        o.pt_reverse = !a.no_reverse;
        o.stream = match a.netdev.as_str() {
            "dgram" => false,
            "stream" => true,
            n => {
                eprintln!("unknown --netdev {n}: use dgram or stream");
                std::process::exit(2);
            }
        };
        o.pt_verbs = a
            .verbs
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|v| match v {
                "write" => PtVerb::Write,
                "read" => PtVerb::Read,
                "send" => PtVerb::Send,
                _ => panic!("unknown perftest verb {v}"),
            })
            .collect();
        if let Some(why) = suite::skip_reason(&o) {
            println!("SKIP: interop ({b}): {why}");
            continue;
        }
        match suite::run(&o) {
            Ok(rep) => {
                let p = rep.outcomes.iter().filter(|o| o.result.is_ok()).count();
                let f = rep.outcomes.len() - p;
                passed_n += p;
                failed_n += f;
                println!(
                    "interop ({b}): {} of {} checks passed; boot {:.1} s, whole run {:.1} s",
                    p,
                    rep.outcomes.len(),
                    rep.boot.as_secs_f64(),
                    rep.wall.as_secs_f64()
                );
                failed |= !rep.passed();
            }
            Err(e) => {
                println!("interop ({b}): setup failed: {e}");
                failed_n += 1;
                failed = true;
            }
        }
    }
    println!("interop: {passed_n} passed, {failed_n} failed");
    if failed {
        std::process::exit(1);
    }
}
