// SPDX-License-Identifier: Apache-2.0
//! Every verb through the driver on each backend: the model alone, the RTL alone, and both in
//! lockstep. Data and completions are checked against values the test computes itself.

use rnic_driver::Mtu;
use rnic_testbench::fabric::Backend;
use rnic_testbench::harness::{Pair, PairOptions};
use rnic_testbench::scenarios::every_verb;

fn run(backend: Backend, mtu: Mtu, len: usize, scrambled: bool) {
    let mut o = PairOptions::on(backend);
    o.mtu = mtu;
    o.scrambled = scrambled;
    let pair = Pair::new(&o).unwrap_or_else(|e| panic!("setup on {backend:?}: {e}"));
    every_verb(&pair, len, &mut |l| eprintln!("{l}")).unwrap_or_else(|e| panic!("{backend:?}: {e}"));
    pair.settle().unwrap_or_else(|e| panic!("{backend:?}: {e}"));
}

#[test]
fn every_verb_on_model() {
    run(Backend::Model, Mtu::Mtu1024, 5000, false);
}

#[test]
fn every_verb_on_rtl() {
    run(Backend::Rtl, Mtu::Mtu1024, 5000, false);
}

#[test]
fn every_verb_in_lockstep() {
    run(Backend::Lockstep, Mtu::Mtu1024, 5000, false);
}

#[test]
fn every_verb_in_lockstep_mtu256_scrambled_pages() {
    run(Backend::Lockstep, Mtu::Mtu256, 9000, true);
}

#[test]
fn every_verb_in_lockstep_mtu4096_single_byte() {
    run(Backend::Lockstep, Mtu::Mtu4096, 1, false);
}

#[test]
fn every_verb_in_lockstep_zero_length() {
    run(Backend::Lockstep, Mtu::Mtu512, 0, false);
}

fn run_on(backend: Backend, funcs: [u8; 2], mtu: Mtu, len: usize) {
    let mut o = PairOptions::on(backend);
    o.mtu = mtu;
    o.funcs = funcs;
    let pair = Pair::new(&o).unwrap_or_else(|e| panic!("setup on {backend:?} {funcs:?}: {e}"));
    let ra = pair.a.ctx.resources();
    assert_eq!(ra.func, funcs[0], "the endpoint runs on the function asked for");
    every_verb(&pair, len, &mut |l| eprintln!("{l}")).unwrap_or_else(|e| panic!("{backend:?} {funcs:?}: {e}"));
    pair.settle().unwrap_or_else(|e| panic!("{backend:?} {funcs:?}: {e}"));
}

#[test]
fn every_verb_between_vfs_in_lockstep() {
    // VF 3 of NIC 0 talks to VF 8 of NIC 1 (8 VFs enabled on each NIC).
    run_on(Backend::Lockstep, [3, 8], Mtu::Mtu1024, 5000);
}

#[test]
fn every_verb_between_pf_and_vf_in_lockstep() {
    run_on(Backend::Lockstep, [0, 1], Mtu::Mtu512, 3000);
}

#[test]
fn every_verb_between_vfs_on_model() {
    run_on(Backend::Model, [2, 7], Mtu::Mtu4096, 9000);
}
