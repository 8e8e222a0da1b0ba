// SPDX-License-Identifier: Apache-2.0
//! Interop with the Linux kernel's rxe in a QEMU guest (docs/interop.md), on the model backend:
//! `ibv_rc_pingpong` both ways and ib_write_bw / ib_read_bw / ib_send_bw against the simulated
//! NIC, captures and both sides' counters checked.
//!
//! The guest image is built by `make interop` (cached in target/interop/guest). Without it, or
//! without QEMU, this test prints `SKIPPED: <reason>` (loudly, on stderr and stdout) and passes:
//! `make interop` is the entry point that builds the image and runs every backend.

use std::path::Path;

use rnic_testbench::fabric::Backend;
use rnic_testbench::interop::suite::{self, SuiteOptions};

#[test]
fn rxe_guest_interop_model() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut o = SuiteOptions::new(Backend::from_env(Backend::Model), &root);
    o.out_dir = root.join("target/interop/test-run");
    o.pp_iters = 20;
    o.pt_sizes = vec![2, 4096];
    o.pt_iters = 10;
    if let Some(why) = suite::skip_reason(&o) {
        let line = format!("SKIPPED: rxe_guest_interop_model: {why}");
        eprintln!("\n{}\n{line}\n{}\n", "*".repeat(line.len()), "*".repeat(line.len()));
        println!("{line}");
        return;
    }
    let rep = suite::run(&o).expect("interop setup");
    let failed: Vec<String> = rep
        .outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().err().map(|e| format!("{}: {e}", o.name)))
        .collect();
    assert!(failed.is_empty(), "interop checks failed:\n{}", failed.join("\n"));
}
