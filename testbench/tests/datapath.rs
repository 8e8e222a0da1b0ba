// SPDX-License-Identifier: Apache-2.0
//! The NIC's data paths (docs/architecture.md section 13): the transmit payload queue with several
//! tagged DMA reads in flight, the DMA write queue behind the engine, the ordering rule between
//! them, and the line rate of the uplink. In lockstep unless said otherwise: every DMA write and
//! frame is compared with the reference model, and the data is checked against values the test
//! computes itself.

use rnic_driver::{Mtu, SendWr, WcOpcode, WcStatus, WrOpcode};
use rnic_testbench::fabric::Backend;
use rnic_testbench::harness::{Pair, PairOptions};
use rnic_testbench::scenarios::{every_verb, pattern};

fn pair(backend: Backend, mtu: Mtu, scrambled: bool, reorder: Option<u64>) -> Pair {
    let mut o = PairOptions::on(backend);
    o.mtu = mtu;
    o.scrambled = scrambled;
    o.mr_len = 1 << 18;
    o.fabric.dma_reorder_seed = reorder;
    Pair::new(&o).unwrap_or_else(|e| panic!("setup: {e}"))
}

/// With the host completing reads of different tags in random order, payload still leaves in
/// order: every verb, and a burst of multi-packet WRITEs from scattered pages (two reads per
/// packet, four tags in flight) posted without waiting.
#[test]
fn payload_reads_completed_out_of_order_go_out_in_order() {
    for seed in 1..=3u64 {
        let p = pair(Backend::Lockstep, Mtu::Mtu4096, true, Some(seed));
        every_verb(&p, 3 * 4096 + 777, &mut |_| {}).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let (a, b) = (&p.a, &p.b);
        let mut want = b.mr.read_vec(0, 1 << 18).unwrap();
        for k in 0..6u64 {
            let (src, dst, len) = (100 + 12_000 * k, 80_000 + 12_000 * k + k, 9000 + 500 * k);
            let data = pattern(100 + seed * 10 + k, len as usize);
            a.mr.write(src, &data).unwrap();
            want[dst as usize..(dst + len) as usize].copy_from_slice(&data);
            let wr = WrOpcode::Write { remote_addr: b.mr.addr() + dst, rkey: b.mr.rkey() };
            a.qps[0].post_send(&SendWr::new(k, wr, vec![a.mr.sge(src, len as u32).unwrap()])).unwrap();
        }
        let wcs = Pair::wait(a, 6).unwrap();
        assert!(wcs.iter().all(|w| w.status == WcStatus::Success), "seed {seed}: {wcs:?}");
        assert!(b.mr.read_vec(0, 1 << 18).unwrap() == want, "seed {seed}: B's buffer after the burst");
        p.settle().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}

/// A DMA read does not pass the writes queued before it (PCIe ordering; the model runs a task's
/// writes at once): a WRITE and then, without waiting, a FETCH_ADD and a READ of the same bytes
/// on the same QP. The responder's write queue still holds the WRITE's data when the atomic and
/// the READ response read it, so they must wait for it.
#[test]
fn a_read_sees_the_writes_queued_before_it() {
    let p = pair(Backend::Lockstep, Mtu::Mtu1024, false, None);
    let (a, b) = (&p.a, &p.b);
    let data = pattern(7, 4096);
    a.mr.write(0, &data).unwrap();
    b.mr.write(8192, &[0u8; 4096]).unwrap();
    let word = u64::from_le_bytes(data[4088..4096].try_into().unwrap());
    let remote = b.mr.addr() + 8192;
    let qp = &a.qps[0];
    qp.post_send(&SendWr::new(1, WrOpcode::Write { remote_addr: remote, rkey: b.mr.rkey() }, vec![a.mr.sge(0, 4096).unwrap()])).unwrap();
    let fa = WrOpcode::FetchAdd { remote_addr: remote + 4088, rkey: b.mr.rkey(), add: 5 };
    qp.post_send(&SendWr::new(2, fa, vec![a.mr.sge(20_000, 8).unwrap()])).unwrap();
    let rd = WrOpcode::Read { remote_addr: remote, rkey: b.mr.rkey() };
    qp.post_send(&SendWr::new(3, rd, vec![a.mr.sge(24_576, 4096).unwrap()])).unwrap();
    let wcs = Pair::wait(a, 3).unwrap();
    let ops: Vec<WcOpcode> = wcs.iter().map(|w| w.opcode).collect();
    assert_eq!(ops, [WcOpcode::RdmaWrite, WcOpcode::FetchAdd, WcOpcode::RdmaRead]);
    assert!(wcs.iter().all(|w| w.status == WcStatus::Success), "{wcs:?}");
    let orig = u64::from_le_bytes(a.mr.read_vec(20_000, 8).unwrap().try_into().unwrap());
    assert_eq!(orig, word, "the atomic read the word the WRITE had just written");
    let mut want = data.clone();
    want[4088..4096].copy_from_slice(&word.wrapping_add(5).to_le_bytes());
    assert!(b.mr.read_vec(8192, 4096).unwrap() == want, "B's buffer: the WRITE, then the add");
    // The READ was executed after the atomic (responder order), so it returns the sum too.
    assert!(a.mr.read_vec(24_576, 4096).unwrap() == want, "the READ returned what B holds");
    p.settle().unwrap();
}

/// Modelled cycles of one 64 KiB WRITE at MTU 4096 (RTL backend) with the link at `mbps`.
fn write_cycles(mbps: u64) -> u64 {
    let mut o = PairOptions::on(Backend::Rtl);
    o.mtu = Mtu::Mtu4096;
    o.mr_len = 1 << 17;
    o.fabric.link_mbps = mbps;
    o.fabric.progress_cycles = 1; // completions timed to the cycle
    let p = Pair::new(&o).unwrap();
    let (a, b) = (&p.a, &p.b);
    let t0 = p.fabric.borrow().cycle();
    let wr = WrOpcode::Write { remote_addr: b.mr.addr(), rkey: b.mr.rkey() };
    a.qps[0].post_send(&SendWr::new(1, wr, vec![a.mr.sge(0, 65536).unwrap()])).unwrap();
    assert_eq!(Pair::wait(a, 1).unwrap()[0].status, WcStatus::Success);
    let t1 = p.fabric.borrow().cycle();
    t1 - t0
}

/// Frames leave no faster than the line rate: 16 frames of 4,154 bytes (+24 bytes of FCS,
/// preamble and gap) take at least 16 x 4,178 / 50 cycles at 100 Gb/s and four times that at
/// 25 Gb/s; at 100 Gb/s the NIC comes within 10 % of the wire time plus one round trip.
#[test]
fn frames_leave_at_the_line_rate() {
    let wire = |mbps: u64| 16 * 4178 * 8 * 250 / mbps; // cycles of the frames on the wire
    let (c100, c25) = (write_cycles(100_000), write_cycles(25_000));
    assert!(c100 >= wire(100_000), "100 Gb/s: {c100} cycles, the wire needs {}", wire(100_000));
    assert!(c25 >= wire(25_000), "25 Gb/s: {c25} cycles, the wire needs {}", wire(25_000));
    assert!(c100 <= wire(100_000) * 11 / 10 + 400, "100 Gb/s: {c100} cycles for {} on the wire", wire(100_000));
}
