// SPDX-License-Identifier: Apache-2.0
//! Every verb through the driver on each backend: the model alone, the RTL alone, and both in
//! lockstep. Data and completions are checked against values the test computes itself. Every
//! case runs twice: on the PFs of two NICs, then on VFs (VF 3 of NIC 0 and VF 6 of NIC 1, with 8
//! VFs enabled on each).

use rnic_driver::Mtu;
use rnic_testbench::fabric::Backend;
use rnic_testbench::harness::{Pair, PairOptions};
use rnic_testbench::scenarios::every_verb;

fn run(backend: Backend, mtu: Mtu, len: usize, scrambled: bool) {
    for funcs in [[0, 0], [3, 6]] {
        let mut o = PairOptions::on(backend);
        o.mtu = mtu;
        o.scrambled = scrambled;
        o.funcs = funcs;
        let pair = Pair::new(&o).unwrap_or_else(|e| panic!("setup on {backend:?} {funcs:?}: {e}"));
        assert_eq!(pair.b.ctx.resources().func, funcs[1], "the endpoint runs on the function asked for");
        every_verb(&pair, len, &mut |l| eprintln!("{l}")).unwrap_or_else(|e| panic!("{backend:?} {funcs:?}: {e}"));
        pair.settle().unwrap_or_else(|e| panic!("{backend:?} {funcs:?}: {e}"));
    }
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
    run_on_nics(backend, [0, 1], funcs, mtu, len);
}

fn run_on_nics(backend: Backend, nics: [usize; 2], funcs: [u8; 2], mtu: Mtu, len: usize) {
    let mut o = PairOptions::on(backend);
    o.mtu = mtu;
    o.funcs = funcs;
    o.nics = nics;
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

// Both endpoints on NIC 0: every frame goes through its embedded switch and none reaches the
// link (section 4b).
fn on_one_nic(backend: Backend, funcs: [u8; 2], mtu: Mtu, len: usize) {
    let mut o = PairOptions::on(backend);
    o.mtu = mtu;
    o.funcs = funcs;
    o.nics = [0, 0];
    let pair = Pair::new(&o).unwrap_or_else(|e| panic!("setup on {backend:?} {funcs:?}: {e}"));
    every_verb(&pair, len, &mut |l| eprintln!("{l}")).unwrap_or_else(|e| panic!("{backend:?} {funcs:?}: {e}"));
    pair.settle().unwrap_or_else(|e| panic!("{backend:?} {funcs:?}: {e}"));
    let f = pair.fabric.borrow();
    assert_eq!(f.frames_sent(), 0, "traffic between functions of one NIC never reaches the uplink");
}

#[test]
fn every_verb_between_vfs_of_one_nic_in_lockstep() {
    on_one_nic(Backend::Lockstep, [2, 5], Mtu::Mtu1024, 20_000);
}

#[test]
fn every_verb_between_pf_and_vf_of_one_nic_in_lockstep() {
    on_one_nic(Backend::Lockstep, [0, 4], Mtu::Mtu4096, 30_000);
}

#[test]
fn every_verb_between_vfs_of_one_nic_on_model() {
    on_one_nic(Backend::Model, [1, 8], Mtu::Mtu256, 9000);
}
