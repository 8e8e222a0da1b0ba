// SPDX-License-Identifier: Apache-2.0
//! RC reliability conformance cases (in the style of datenlord roce-sim): each case drives two
//! NICs in `Backend::Lockstep` over a link with scripted faults or injected frames, and asserts
//! the packets on the wire (recorded by a [`Tap`] in front of the fault model: opcode, PSN, AETH
//! syndrome, payload), the completions, the counters, the QP states and every byte of memory.
//!
//! QPs use short timers so that the local ACK timeout (1024 << 4 = 16,384 cycles) and the RNR
//! timer (code 1 = 10 us = 2,500 cycles) are cheap to simulate (docs/architecture.md 10a).
//! NIC 0 (A) is the requester unless a case says otherwise; NIC 1 (B) is the responder.

use rnic_driver::{RecvWr, SendWr, Sge, WcOpcode, WcStatus, WorkCompletion, WrOpcode, QpState};
use rnic_regs::{aeth, bth_opcode as op, counter};
use rnic_testbench::craft::{self, pair_with, QpCfg, Tap, WireFrame, WireLog};
use rnic_testbench::faults::{FaultHandle, FaultKind, FaultModel, FaultRates, Script};
use rnic_testbench::harness::{Endpoint, Pair};
use rnic_testbench::link::FaultHook;
use rnic_testbench::scenarios::pattern;

/// Progress calls (1000 cycles each) a completion wait may take.
const WAIT: u32 = 3_000;
const M24: u32 = 0xFF_FFFF;

struct Rig {
    p: Pair,
    wire: WireLog,
    faults: Option<FaultHandle>,
}

fn rig_hook(cfg: QpCfg, hook: Box<dyn FaultHook>, faults: Option<FaultHandle>) -> Rig {
    let tap = Tap::new(hook);
    let wire = tap.log();
    let p = pair_with(&cfg, Box::new(tap));
    Rig { p, wire, faults }
}

fn rig(cfg: QpCfg, model: FaultModel) -> Rig {
    let h = model.handle();
    rig_hook(cfg, Box::new(model), Some(h))
}

/// A fault hook that drops the frames a closure picks (by sender and bytes), statefully.
struct DropIf<F: FnMut(usize, &[u8]) -> bool>(F);

impl<F: FnMut(usize, &[u8]) -> bool> FaultHook for DropIf<F> {
    fn on_frame(&mut self, from: usize, _to: usize, frame: Vec<u8>) -> Vec<(u64, Vec<u8>)> {
        if (self.0)(from, &frame) { vec![] } else { vec![(0, frame)] }
    }
}

impl Rig {
    fn a(&self) -> &Endpoint {
        &self.p.a
    }
    fn b(&self) -> &Endpoint {
        &self.p.b
    }
    fn frames(&self) -> Vec<WireFrame> {
        self.wire.borrow().clone()
    }
    /// Request frames (SEND/WRITE/READ/atomic) sent by NIC `from`.
    fn requests(&self, from: usize) -> Vec<WireFrame> {
        self.frames().into_iter().filter(|f| f.from == from && !rnic_model::wire::is_response(f.opcode())).collect()
    }
    /// Response frames (ACK/NAK, READ responses, atomic ACKs) sent by NIC `from`.
    fn responses(&self, from: usize) -> Vec<WireFrame> {
        self.frames().into_iter().filter(|f| f.from == from && rnic_model::wire::is_response(f.opcode())).collect()
    }
    /// ACK-opcode frames from `from` whose syndrome is `syn` (exact).
    fn acks_with(&self, from: usize, syn: u32) -> Vec<WireFrame> {
        self.responses(from).into_iter().filter(|f| f.opcode() == op::ACK && f.syndrome() == Some(syn as u8)).collect()
    }
    fn run(&self, cycles: u64) {
        self.p.fabric.borrow_mut().run_cycles(cycles).unwrap_or_else(|e| panic!("running: {e}"));
    }
    fn cycle(&self) -> u64 {
        self.p.fabric.borrow().cycle()
    }
    /// Run in steps of `step` cycles until `cond` holds on the wire log; returns the cycle.
    fn run_until(&self, what: &str, step: u64, max: u64, cond: impl Fn(&[WireFrame]) -> bool) -> u64 {
        let start = self.cycle();
        loop {
            if cond(&self.wire.borrow()) {
                return self.cycle();
            }
            assert!(self.cycle() - start < max, "{what}: not seen within {max} cycles; wire:\n{}", dump(&self.frames()));
            self.run(step);
        }
    }
    fn inject(&self, to: usize, f: Vec<u8>) {
        self.p.fabric.borrow_mut().inject(to, f);
    }
    /// Let everything land; no extra completion; lockstep drained; memories equal.
    fn finish(&self) {
        self.run(30_000);
        assert_cq_empty(self.a(), "NIC 0");
        assert_cq_empty(self.b(), "NIC 1");
        self.p.settle().unwrap_or_else(|e| panic!("settle: {e}"));
        let stats = self.p.fabric.borrow().check_stats();
        assert!(stats.len() == 2 && stats.iter().all(|s| s.tasks > 0), "lockstep did not compare: {stats:?}");
    }
}

fn dump(frames: &[WireFrame]) -> String {
    frames
        .iter()
        .map(|f| {
            let (o, q, p) = f.bth();
            format!(
                "  #{} {}->{} op {o:#04x} qp {q:#x} psn {p:#08x} syn {:?} len {} copies {}{}\n",
                f.index,
                f.from,
                f.from ^ 1,
                f.syndrome(),
                f.payload_len(),
                f.copies,
                if f.altered { " altered" } else { "" }
            )
        })
        .collect()
}

#[track_caller]
fn ctr(ep: &Endpoint, idx: u32) -> u64 {
    let v = ep.ctx.counter(idx);
    if v == u64::MAX {
        if let Err(e) = ep.ctx.progress() {
            panic!("{e}");
        }
    }
    v
}

/// Every defined counter of a NIC.
fn counters(ep: &Endpoint) -> Vec<(&'static str, u32, u64)> {
    counter::ALL.iter().filter(|(_, i)| *i < counter::NUM).map(|(n, i)| (*n, *i, ctr(ep, *i))).collect()
}

/// Counter deltas between two snapshots: exactly `moved` changed (others by 0); entries with
/// `None` are not checked.
#[track_caller]
fn assert_delta(who: &str, before: &[(&str, u32, u64)], after: &[(&str, u32, u64)], moved: &[(u32, Option<u64>)]) {
    for ((name, idx, b), (_, _, a)) in before.iter().zip(after) {
        match moved.iter().find(|(i, _)| i == idx) {
            Some((_, None)) => {}
            Some((_, Some(d))) => assert_eq!(a - b, *d, "{who}: counter {name} moved by {} (want {d})", a - b),
            None => assert_eq!(a - b, 0, "{who}: counter {name} moved by {} (want 0)", a - b),
        }
    }
}

fn delta(before: &[(&str, u32, u64)], after: &[(&str, u32, u64)], idx: u32) -> u64 {
    let get = |c: &[(&str, u32, u64)]| c.iter().find(|(_, i, _)| *i == idx).map_or(0, |x| x.2);
    get(after) - get(before)
}

#[track_caller]
fn wait(ep: &Endpoint, n: usize, who: &str) -> Vec<WorkCompletion> {
    ep.cq.wait(n, WAIT).unwrap_or_else(|e| panic!("{who}: waiting for {n} completions: {e}"))
}

#[track_caller]
fn assert_cq_empty(ep: &Endpoint, who: &str) {
    let extra = ep.cq.poll_one().expect("poll");
    assert!(extra.is_none(), "{who}: unexpected completion {extra:?}");
}

#[track_caller]
fn assert_wc(wc: &WorkCompletion, wr_id: u64, status: WcStatus, opcode: WcOpcode, byte_len: Option<u32>) {
    assert_eq!((wc.wr_id, wc.status, wc.opcode), (wr_id, status, opcode), "completion {wc:?}");
    if let Some(l) = byte_len {
        assert_eq!(wc.byte_len, l, "completion {wc:?}");
    }
}

fn sge(ep: &Endpoint, off: u64, len: u32) -> Sge {
    ep.mr.sge(off, len).expect("sge")
}

fn fill(ep: &Endpoint, seed: u64) -> Vec<u8> {
    let data = pattern(seed, ep.mr.len() as usize);
    ep.mr.write(0, &data).expect("fill MR");
    data
}

#[track_caller]
fn assert_mr(ep: &Endpoint, want: &[u8], what: &str) {
    let got = ep.mr.read_vec(0, want.len()).expect("read MR");
    if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: byte {at} is {:#04x}, want {:#04x}", got[at], want[at]);
    }
}

fn state(ep: &Endpoint) -> QpState {
    ep.qps[0].query().unwrap_or_else(|e| panic!("query: {e}")).state
}

fn psn_add(p: u32, d: i64) -> u32 {
    (i64::from(p) + d).rem_euclid(1 << 24) as u32
}

/// Split a PSN list into maximal runs of consecutive PSNs (mod 2^24).
fn runs(psns: &[u32]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &p in psns {
        match out.last_mut() {
            Some((_, end)) if psn_add(*end, 1) == p => *end = p,
            _ => out.push((p, p)),
        }
    }
    out
}

fn psns(frames: &[WireFrame]) -> Vec<u32> {
    frames.iter().map(WireFrame::psn).collect()
}

fn fmt_runs(r: &[(u32, u32)]) -> String {
    r.iter().map(|(a, b)| format!("[{a:#08x}..={b:#08x}]")).collect::<Vec<_>>().join(" ")
}

// ------------------------------------------------------------------------------------------------
// Implied NAK (PSN sequence error)
// ------------------------------------------------------------------------------------------------

#[test]
fn implied_nak_once_per_gap_with_the_expected_psn() {
    // Two 8-packet SENDs, one after the other; the first transmission of one middle packet of
    // each is lost. Each gap costs exactly one NAK_PSN_SEQ carrying the expected PSN (the later
    // out-of-order packets are dropped silently: nak_latch), and the requester goes back to it.
    let cfg = QpCfg::default();
    let a0 = cfg.psn(0, 0);
    let (l1, l2) = (a0 + 3, a0 + 13);
    let m = FaultModel::scripted([
        Script::new(FaultKind::Drop, 1).from(0).with_psn(l1),
        Script::new(FaultKind::Drop, 1).from(0).with_psn(l2),
    ]);
    let r = rig(cfg, m);
    let src = fill(r.a(), 1);
    let b0 = fill(r.b(), 2);
    let (ca, cb) = (counters(r.a()), counters(r.b()));
    r.b().qps[0].post_recv(&RecvWr { wr_id: 500, sgl: vec![sge(r.b(), 10000, 4096)] }).unwrap();
    r.b().qps[0].post_recv(&RecvWr { wr_id: 501, sgl: vec![sge(r.b(), 20000, 4096)] }).unwrap();
    r.a().qps[0].post_send(&SendWr::new(1, WrOpcode::Send, vec![sge(r.a(), 0, 2000)])).unwrap();
    assert_wc(&wait(r.a(), 1, "NIC 0")[0], 1, WcStatus::Success, WcOpcode::Send, Some(2000));
    assert_wc(&wait(r.b(), 1, "NIC 1")[0], 500, WcStatus::Success, WcOpcode::Recv, Some(2000));
    r.a().qps[0].post_send(&SendWr::new(2, WrOpcode::Send, vec![sge(r.a(), 4000, 2048)])).unwrap();
    assert_wc(&wait(r.a(), 1, "NIC 0")[0], 2, WcStatus::Success, WcOpcode::Send, Some(2048));
    assert_wc(&wait(r.b(), 1, "NIC 1")[0], 501, WcStatus::Success, WcOpcode::Recv, Some(2048));
    r.finish();

    let naks = r.acks_with(1, aeth::NAK_PSN_SEQ);
    assert_eq!(psns(&naks), vec![l1, l2], "NAK_PSN_SEQ frames from NIC 1:\n{}", dump(&r.frames()));
    assert!(naks.iter().all(|f| f.dqpn() == r.a().qps[0].qpn()), "NAKs go to the requester QP");
    // Requests on the wire: for each message, a first pass that reaches past the lost PSN,
    // then exactly one go-back starting at the lost PSN.
    let rq = psns(&r.requests(0));
    let want_runs = |lost: u32, first: u32, last: u32| -> Vec<(u32, u32)> {
        let seg: Vec<u32> = rq.iter().copied().filter(|p| (p.wrapping_sub(first) & M24) <= last - first).collect();
        let rr = runs(&seg);
        assert_eq!(rr.len(), 2, "message {first:#x}..={last:#x}: request runs {}", fmt_runs(&rr));
        assert_eq!(rr[0].0, first, "first pass starts at the message start: {}", fmt_runs(&rr));
        assert!(rr[0].1 > lost, "the first pass went past the lost PSN: {}", fmt_runs(&rr));
        assert_eq!(rr[1], (lost, last), "go-back starts at the lost PSN: {}", fmt_runs(&rr));
        rr
    };
    want_runs(l1, a0, a0 + 7);
    want_runs(l2, a0 + 8, a0 + 15);
    assert_delta("NIC 1", &cb, &counters(r.b()), &[
        (counter::RX_NAK_SENT, Some(2)),
        (counter::RX_PKTS, None),
        (counter::TX_PKTS, None),
        (counter::RX_DUP, Some(0)),
    ]);
    assert_delta("NIC 0", &ca, &counters(r.a()), &[(counter::RX_PKTS, None), (counter::TX_PKTS, None)]);
    let mut want = b0.clone();
    want[10000..12000].copy_from_slice(&src[0..2000]);
    want[20000..22048].copy_from_slice(&src[4000..6048]);
    assert_mr(r.b(), &want, "NIC 1 buffer");
    assert_eq!((state(r.a()), state(r.b())), (QpState::Rts, QpState::Rts));
}

// ------------------------------------------------------------------------------------------------
// Local ACK timeout
// ------------------------------------------------------------------------------------------------

#[test]
fn ack_timeout_recovers_tail_loss_of_the_last_packet() {
    // The last packet of an 8-packet SEND is lost: no later packet reveals the gap, so only the
    // local ACK timeout can recover. Nothing was acknowledged, so the requester goes back to the
    // message start; B sees 7 duplicates, places the last packet once and completes once.
    let cfg = QpCfg::default();
    let a0 = cfg.psn(0, 0);
    let r = rig(cfg, FaultModel::scripted([Script::new(FaultKind::Drop, 1).from(0).with_psn(a0 + 7)]));
    let src = fill(r.a(), 3);
    let b0 = fill(r.b(), 4);
    let (ca, cb) = (counters(r.a()), counters(r.b()));
    r.b().qps[0].post_recv(&RecvWr { wr_id: 500, sgl: vec![sge(r.b(), 10000, 4096)] }).unwrap();
    r.a().qps[0].post_send(&SendWr::new(1, WrOpcode::Send, vec![sge(r.a(), 100, 2000)])).unwrap();
    assert_wc(&wait(r.a(), 1, "NIC 0")[0], 1, WcStatus::Success, WcOpcode::Send, Some(2000));
    assert_wc(&wait(r.b(), 1, "NIC 1")[0], 500, WcStatus::Success, WcOpcode::Recv, Some(2000));
    r.finish();
    let rq = psns(&r.requests(0));
    assert_eq!(runs(&rq), vec![(a0, a0 + 7), (a0, a0 + 7)], "requests:\n{}", dump(&r.frames()));
    // B answers each duplicate with an ACK for rq_psn - 1 = a0 + 6; while the go-back is still
    // behind that PSN (sq_psn <= a0 + 6) such an ACK is a ghost by the contract's window check
    // (signed24(P - sq_psn) >= 0), so RX_GHOST_ACK moves too: not checked.
    assert_delta("NIC 0", &ca, &counters(r.a()), &[
        (counter::ACK_TIMEOUT, Some(1)),
        (counter::TX_PKTS, Some(16)),
        (counter::RX_PKTS, None),
        (counter::RX_GHOST_ACK, None),
    ]);
    assert_delta("NIC 1", &cb, &counters(r.b()), &[
        (counter::RX_DUP, Some(7)),
        (counter::RX_PKTS, Some(15)),
        (counter::TX_PKTS, None),
    ]);
    let mut want = b0.clone();
    want[10000..12000].copy_from_slice(&src[100..2100]);
    assert_mr(r.b(), &want, "NIC 1 buffer");
}

#[test]
fn ack_timeout_recovers_a_lost_ack() {
    // The only ACK of a one-packet SEND is lost: the requester times out and resends PSN a0; B
    // answers the duplicate with an ACK (rq_psn - 1) and does not deliver it again.
    let cfg = QpCfg::default();
    let a0 = cfg.psn(0, 0);
    let r = rig(cfg, FaultModel::scripted([Script::new(FaultKind::Drop, 1).from(1)]));
    let src = fill(r.a(), 5);
    let b0 = fill(r.b(), 6);
    let (ca, cb) = (counters(r.a()), counters(r.b()));
    r.b().qps[0].post_recv(&RecvWr { wr_id: 500, sgl: vec![sge(r.b(), 300, 200)] }).unwrap();
    r.a().qps[0].post_send(&SendWr::new(1, WrOpcode::Send, vec![sge(r.a(), 0, 100)])).unwrap();
    assert_wc(&wait(r.a(), 1, "NIC 0")[0], 1, WcStatus::Success, WcOpcode::Send, Some(100));
    assert_wc(&wait(r.b(), 1, "NIC 1")[0], 500, WcStatus::Success, WcOpcode::Recv, Some(100));
    r.finish();
    assert_eq!(psns(&r.requests(0)), vec![a0, a0], "requests:\n{}", dump(&r.frames()));
    let acks = r.acks_with(1, aeth::ACK_UNLIMITED);
    assert_eq!(psns(&acks), vec![a0, a0], "ACKs:\n{}", dump(&r.frames()));
    assert_eq!(acks[0].copies, 0, "the first ACK was dropped");
    assert_delta("NIC 0", &ca, &counters(r.a()), &[
        (counter::ACK_TIMEOUT, Some(1)),
        (counter::TX_PKTS, Some(2)),
        (counter::RX_PKTS, Some(1)),
    ]);
    assert_delta("NIC 1", &cb, &counters(r.b()), &[
        (counter::RX_DUP, Some(1)),
        (counter::RX_PKTS, Some(2)),
        (counter::TX_PKTS, Some(2)),
    ]);
    let mut want = b0.clone();
    want[300..400].copy_from_slice(&src[0..100]);
    assert_mr(r.b(), &want, "NIC 1 buffer");
}

#[test]
fn retry_exceeded_completes_retry_exc_err_and_flushes_the_rest() {
    // Every frame from A is lost. retry_cnt = 2: the three one-packet SENDs go out three times
    // (first try + 2 retries, each after a local ACK timeout); the third timeout finds
    // retry_left == 0 → RETRY_EXC_ERR for the first WQE, QP in ERR, the others WR_FLUSH_ERR.
    let cfg = QpCfg { retry_cnt: 2, timeout: 3, ..QpCfg::default() };
    let a0 = cfg.psn(0, 0);
    let r = rig(cfg, FaultModel::new(9, FaultRates { drop: 1.0, only_from: Some(0), ..FaultRates::default() }));
    let (ca, cb) = (counters(r.a()), counters(r.b()));
    let wrs: Vec<SendWr> = (0..3).map(|k| SendWr::new(1 + k, WrOpcode::Send, vec![sge(r.a(), 100 * k, 100)])).collect();
    r.a().qps[0].post_send_list(&wrs).unwrap();
    let w = wait(r.a(), 3, "NIC 0");
    assert_wc(&w[0], 1, WcStatus::RetryExcErr, WcOpcode::Send, Some(0));
    assert_wc(&w[1], 2, WcStatus::WrFlushErr, WcOpcode::Send, Some(0));
    assert_wc(&w[2], 3, WcStatus::WrFlushErr, WcOpcode::Send, Some(0));
    assert_eq!((w[0].wqe_idx, w[1].wqe_idx, w[2].wqe_idx), (0, 1, 2));
    r.finish();
    assert_eq!(state(r.a()), QpState::Err);
    assert_eq!(state(r.b()), QpState::Rts, "the responder saw nothing");
    let rq = psns(&r.requests(0));
    assert_eq!(runs(&rq), vec![(a0, a0 + 2); 3], "requests:\n{}", dump(&r.frames()));
    assert!(r.responses(1).is_empty(), "B sent nothing");
    assert_delta("NIC 0", &ca, &counters(r.a()), &[(counter::ACK_TIMEOUT, Some(3)), (counter::TX_PKTS, Some(9))]);
    assert_delta("NIC 1", &cb, &counters(r.b()), &[]);
    // A WR posted in ERR is flushed too.
    r.a().qps[0].post_send(&SendWr::new(4, WrOpcode::Send, vec![sge(r.a(), 0, 10)])).unwrap();
    let w = wait(r.a(), 1, "NIC 0");
    assert_wc(&w[0], 4, WcStatus::WrFlushErr, WcOpcode::Send, Some(0));
}

// ------------------------------------------------------------------------------------------------
// RNR
// ------------------------------------------------------------------------------------------------

fn is_rnr(f: &WireFrame) -> bool {
    f.from == 1 && f.opcode() == op::ACK && f.syndrome().is_some_and(|s| u32::from(s) & 0x60 == aeth::RNR_NAK_BASE)
}

#[test]
fn rnr_nak_waits_the_rnr_timer_then_retries_until_the_recv_is_posted() {
    // No receive WQE: B answers the SEND with RNR NAK (0x20 | min_rnr_timer 1, PSN a0). A waits
    // the RNR timer (code 1 = 10 us = 2,500 cycles) before each retry, counting RNR_TIMER.
    // rnr_retry 7 = infinite. After three RNR NAKs the receive is posted and the SEND completes.
    let cfg = QpCfg::default();
    let a0 = cfg.psn(0, 0);
    let r = rig(cfg, FaultModel::scripted([]));
    let src = fill(r.a(), 7);
    let b0 = fill(r.b(), 8);
    let (ca, cb) = (counters(r.a()), counters(r.b()));
    r.a().qps[0].post_send(&SendWr::new(1, WrOpcode::Send, vec![sge(r.a(), 0, 100)])).unwrap();
    let sends = |w: &[WireFrame]| w.iter().filter(|f| f.from == 0 && f.opcode() == op::SEND_ONLY).count();
    let rnrs = |w: &[WireFrame]| w.iter().filter(|f| is_rnr(f)).count();
    const STEP: u64 = 50;
    let rnr_cycles = rnic_regs::tables::RNR_TIMER_US[1] * rnic_regs::params::CLOCK_MHZ;
    for k in 1..=3usize {
        let t_nak = r.run_until("RNR NAK", STEP, 200_000, |w| rnrs(w) >= k);
        let t_send = r.run_until("retried SEND", STEP, 200_000, |w| sends(w) > k);
        let gap = t_send - t_nak;
        assert!(gap + STEP >= rnr_cycles, "retry {k} after {gap} cycles, before the RNR timer ({rnr_cycles} cycles)");
        assert!(gap <= rnr_cycles + 1024 + 1000, "retry {k} after {gap} cycles: the RNR timer fired much too late");
    }
    // A retry may be under way: post the receive, then everything completes once.
    r.b().qps[0].post_recv(&RecvWr { wr_id: 500, sgl: vec![sge(r.b(), 5000, 100)] }).unwrap();
    assert_wc(&wait(r.a(), 1, "NIC 0")[0], 1, WcStatus::Success, WcOpcode::Send, Some(100));
    assert_wc(&wait(r.b(), 1, "NIC 1")[0], 500, WcStatus::Success, WcOpcode::Recv, Some(100));
    r.finish();
    let w = r.frames();
    let naks: Vec<WireFrame> = w.iter().filter(|f| is_rnr(f)).cloned().collect();
    let n = naks.len() as u64;
    assert!(n >= 3);
    for f in &naks {
        assert_eq!((f.psn(), f.syndrome()), (a0, Some((aeth::RNR_NAK_BASE | 1) as u8)), "RNR NAK\n{}", dump(&w));
    }
    assert!(r.requests(0).iter().all(|f| f.psn() == a0 && f.opcode() == op::SEND_ONLY));
    assert_eq!(sends(&w) as u64, n + 1, "one SEND per RNR NAK plus the accepted one");
    assert_delta("NIC 0", &ca, &counters(r.a()), &[
        (counter::RNR_TIMER, Some(n)),
        (counter::ACK_TIMEOUT, Some(0)),
        (counter::TX_PKTS, Some(n + 1)),
        (counter::RX_PKTS, Some(n + 1)),
    ]);
    assert_delta("NIC 1", &cb, &counters(r.b()), &[
        (counter::RX_NAK_SENT, Some(n)),
        (counter::TX_PKTS, Some(n + 1)),
        (counter::RX_PKTS, Some(n + 1)),
    ]);
    let mut want = b0.clone();
    want[5000..5100].copy_from_slice(&src[0..100]);
    assert_mr(r.b(), &want, "NIC 1 buffer");
}

#[test]
fn rnr_retry_exceeded_completes_rnr_retry_exc_err() {
    // rnr_retry = 2 and no receive ever: three RNR NAKs, two RNR timer expiries, then
    // RNR_RETRY_EXC_ERR; the responder is unchanged (RTS, rq_ci 0).
    let cfg = QpCfg { rnr_retry: 2, ..QpCfg::default() };
    let a0 = cfg.psn(0, 0);
    let r = rig(cfg, FaultModel::scripted([]));
    let b0 = fill(r.b(), 9);
    let (ca, cb) = (counters(r.a()), counters(r.b()));
    r.a().qps[0].post_send(&SendWr::new(1, WrOpcode::Send, vec![sge(r.a(), 0, 100)])).unwrap();
    assert_wc(&wait(r.a(), 1, "NIC 0")[0], 1, WcStatus::RnrRetryExcErr, WcOpcode::Send, Some(0));
    r.a().qps[0].post_send(&SendWr::new(2, WrOpcode::Send, vec![sge(r.a(), 0, 10)])).unwrap();
    let w = wait(r.a(), 1, "NIC 0");
    assert_wc(&w[0], 2, WcStatus::WrFlushErr, WcOpcode::Send, Some(0));
    assert_eq!(w[0].wqe_idx, 1);
    r.finish();
    let w = r.frames();
    assert_eq!(psns(&r.requests(0)), vec![a0; 3], "requests:\n{}", dump(&w));
    let naks: Vec<u32> = w.iter().filter(|f| is_rnr(f)).map(WireFrame::psn).collect();
    assert_eq!(naks, vec![a0; 3], "RNR NAKs:\n{}", dump(&w));
    assert_delta("NIC 0", &ca, &counters(r.a()), &[
        (counter::RNR_TIMER, Some(2)),
        (counter::TX_PKTS, Some(3)),
        (counter::RX_PKTS, Some(3)),
    ]);
    assert_delta("NIC 1", &cb, &counters(r.b()), &[
        (counter::RX_NAK_SENT, Some(3)),
        (counter::TX_PKTS, Some(3)),
        (counter::RX_PKTS, Some(3)),
    ]);
    assert_eq!(state(r.a()), QpState::Err);
    let ib = r.b().qps[0].query().unwrap();
    assert_eq!((ib.state, ib.rq_ci), (QpState::Rts, 0), "{ib:?}");
    assert_mr(r.b(), &b0, "NIC 1 buffer");
}

// ------------------------------------------------------------------------------------------------
// Remote access error
// ------------------------------------------------------------------------------------------------

#[test]
fn rkey_violation_naks_rem_access_and_moves_both_qps_to_err() {
    let cfg = QpCfg::default();
    let a0 = cfg.psn(0, 0);
    let r = rig(cfg, FaultModel::scripted([]));
    fill(r.a(), 10);
    let b0 = fill(r.b(), 11);
    r.b().qps[0].post_recv(&RecvWr { wr_id: 500, sgl: vec![sge(r.b(), 5000, 100)] }).unwrap();
    let bad = WrOpcode::Write { remote_addr: r.b().mr.addr() + 64, rkey: r.b().mr.rkey() ^ 0x5A };
    r.a().qps[0].post_send(&SendWr::new(1, bad, vec![sge(r.a(), 0, 100)])).unwrap();
    let w = wait(r.a(), 1, "NIC 0");
    assert_wc(&w[0], 1, WcStatus::RemAccessErr, WcOpcode::RdmaWrite, Some(0));
    // The responder QP went to ERR: its posted receive is flushed.
    let wb = wait(r.b(), 1, "NIC 1");
    assert_wc(&wb[0], 500, WcStatus::WrFlushErr, WcOpcode::Recv, None);
    r.a().qps[0].post_send(&SendWr::new(2, WrOpcode::Send, vec![sge(r.a(), 0, 10)])).unwrap();
    assert_wc(&wait(r.a(), 1, "NIC 0")[0], 2, WcStatus::WrFlushErr, WcOpcode::Send, Some(0));
    r.finish();
    let resp = r.responses(1);
    assert_eq!(resp.len(), 1, "one response from B:\n{}", dump(&r.frames()));
    assert_eq!((resp[0].opcode(), resp[0].psn(), resp[0].syndrome()), (op::ACK, a0, Some(aeth::NAK_REM_ACCESS as u8)));
    assert_eq!(psns(&r.requests(0)), vec![a0]);
    assert_eq!((state(r.a()), state(r.b())), (QpState::Err, QpState::Err));
    assert_mr(r.b(), &b0, "NIC 1 buffer (nothing written)");
}

// ------------------------------------------------------------------------------------------------
// Ghost ACKs
// ------------------------------------------------------------------------------------------------

#[test]
fn ghost_acks_when_nothing_is_outstanding_count_and_change_nothing() {
    let cfg = QpCfg::default();
    let a0 = cfg.psn(0, 0);
    let r = rig(cfg, FaultModel::scripted([]));
    fill(r.a(), 12);
    let b0 = fill(r.b(), 13);
    r.b().qps[0].post_recv(&RecvWr { wr_id: 500, sgl: vec![sge(r.b(), 0, 100)] }).unwrap();
    r.a().qps[0].post_send(&SendWr::new(1, WrOpcode::Send, vec![sge(r.a(), 0, 100)])).unwrap();
    wait(r.a(), 1, "NIC 0");
    wait(r.b(), 1, "NIC 1");
    r.run(2000);
    let qa = r.a().qps[0].qpn();
    let info = r.a().qps[0].query().unwrap();
    let b_mem = r.b().mr.read_vec(0, b0.len()).unwrap();
    let (ca, cb) = (counters(r.a()), counters(r.b()));
    let n_wire = r.frames().len();
    let ghosts = [
        craft::ack(0, qa, a0 + 5, aeth::ACK_UNLIMITED as u8, 7),      // never sent
        craft::ack(0, qa, a0, aeth::ACK_UNLIMITED as u8, 1),          // already acknowledged
        craft::ack(0, qa, a0 + 1, aeth::NAK_PSN_SEQ as u8, 1),        // NAK with nothing outstanding
        craft::ack(0, qa, a0 + 1, (aeth::RNR_NAK_BASE | 1) as u8, 1), // RNR NAK, ditto
        craft::ack(0, qa, a0 + 1, aeth::NAK_REM_ACCESS as u8, 1),     // fatal NAK, ditto
    ];
    for g in ghosts {
        r.inject(0, g);
    }
    r.run(5000);
    assert_eq!(r.frames().len(), n_wire, "a ghost ACK made a NIC send something:\n{}", dump(&r.frames()[n_wire..]));
    assert_delta("NIC 0", &ca, &counters(r.a()), &[(counter::RX_PKTS, Some(5)), (counter::RX_GHOST_ACK, Some(5))]);
    assert_delta("NIC 1", &cb, &counters(r.b()), &[]);
    assert_eq!(r.a().qps[0].query().unwrap(), info, "QP state changed");
    assert_cq_empty(r.a(), "NIC 0");
    // The QP still works.
    r.b().qps[0].post_recv(&RecvWr { wr_id: 501, sgl: vec![sge(r.b(), 200, 100)] }).unwrap();
    r.a().qps[0].post_send(&SendWr::new(2, WrOpcode::Send, vec![sge(r.a(), 0, 100)])).unwrap();
    assert_wc(&wait(r.a(), 1, "NIC 0")[0], 2, WcStatus::Success, WcOpcode::Send, Some(100));
    assert_wc(&wait(r.b(), 1, "NIC 1")[0], 501, WcStatus::Success, WcOpcode::Recv, Some(100));
    r.finish();
    let mut want = b_mem;
    want[200..300].copy_from_slice(&r.a().mr.read_vec(0, 100).unwrap());
    assert_mr(r.b(), &want, "NIC 1 buffer");
}

#[test]
fn ghost_acks_outside_the_outstanding_window_are_ignored() {
    // B's ACK of a one-packet SEND is lost, so the SEND stays outstanding. ACKs for a PSN never
    // sent (>= sq_psn) and for one before the WQE (< comp_wqe_psn) are ghosts: counted, nothing
    // completes; the local ACK timeout then recovers the WQE normally.
    let cfg = QpCfg::default();
    let a0 = cfg.psn(0, 0);
    let r = rig(cfg, FaultModel::scripted([Script::new(FaultKind::Drop, 1).from(1)]));
    fill(r.a(), 14);
    r.b().qps[0].post_recv(&RecvWr { wr_id: 500, sgl: vec![sge(r.b(), 0, 100)] }).unwrap();
    let ca = counters(r.a());
    r.a().qps[0].post_send(&SendWr::new(1, WrOpcode::Send, vec![sge(r.a(), 0, 100)])).unwrap();
    r.run_until("B's first (dropped) ACK", 50, 100_000, |w| w.iter().any(|f| f.from == 1));
    let qa = r.a().qps[0].qpn();
    r.inject(0, craft::ack(0, qa, a0 + 1, aeth::ACK_UNLIMITED as u8, 1));
    r.inject(0, craft::ack(0, qa, a0 + 100, aeth::ACK_UNLIMITED as u8, 1));
    r.inject(0, craft::ack(0, qa, psn_add(a0, -1), aeth::ACK_UNLIMITED as u8, 1));
    r.run(3000);
    assert_cq_empty(r.a(), "NIC 0 (a ghost ACK completed the WQE)");
    assert_eq!(ctr(r.a(), counter::RX_GHOST_ACK) - ca[counter::RX_GHOST_ACK as usize].2, 3);
    assert_wc(&wait(r.a(), 1, "NIC 0")[0], 1, WcStatus::Success, WcOpcode::Send, Some(100));
    assert_wc(&wait(r.b(), 1, "NIC 1")[0], 500, WcStatus::Success, WcOpcode::Recv, Some(100));
    r.finish();
    assert_delta("NIC 0", &ca, &counters(r.a()), &[
        (counter::RX_GHOST_ACK, Some(3)),
        (counter::ACK_TIMEOUT, Some(1)),
        (counter::RX_PKTS, Some(4)),
        (counter::TX_PKTS, Some(2)),
    ]);
    assert_eq!(psns(&r.requests(0)), vec![a0, a0]);
}

// ------------------------------------------------------------------------------------------------
// Partial retry of a multi-packet message
// ------------------------------------------------------------------------------------------------

#[test]
fn partial_retry_of_a_16_packet_write_restarts_at_the_lost_psn() {
    // A 4096-byte WRITE is 16 packets at MTU 256. The first transmission of packet 7 is lost:
    // the go-back starts at PSN a0 + 7 with a WRITE_MIDDLE carrying bytes 1792..2048, not at
    // the message start; packets 0..6 are never sent twice.
    let cfg = QpCfg::default();
    let a0 = cfg.psn(0, 0);
    let lost = a0 + 7;
    let r = rig(cfg, FaultModel::scripted([Script::new(FaultKind::Drop, 1).from(0).with_psn(lost)]));
    let src = fill(r.a(), 15);
    let b0 = fill(r.b(), 16);
    let cb = counters(r.b());
    let wr = WrOpcode::Write { remote_addr: r.b().mr.addr() + 8192, rkey: r.b().mr.rkey() };
    r.a().qps[0].post_send(&SendWr::new(1, wr, vec![sge(r.a(), 1000, 4096)])).unwrap();
    assert_wc(&wait(r.a(), 1, "NIC 0")[0], 1, WcStatus::Success, WcOpcode::RdmaWrite, None);
    r.finish();
    let req = r.requests(0);
    let rr = runs(&psns(&req));
    assert_eq!(rr.len(), 2, "requests: {}\n{}", fmt_runs(&rr), dump(&r.frames()));
    assert_eq!(rr[0].0, a0);
    assert!(rr[0].1 > lost);
    assert_eq!(rr[1], (lost, a0 + 15), "go-back range: {}", fmt_runs(&rr));
    let naks = r.acks_with(1, aeth::NAK_PSN_SEQ);
    assert_eq!(psns(&naks), vec![lost]);
    // The retransmitted packet: WRITE_MIDDLE, no RETH, the right 256 bytes.
    let re = req.iter().filter(|f| f.psn() == lost).nth(1).expect("retransmission of the lost PSN");
    assert_eq!(re.opcode(), op::WRITE_MIDDLE);
    let parsed = rnic_model::wire::parse(&re.bytes).expect("valid frame");
    assert!(parsed.hdr.reth.is_none());
    assert_eq!(parsed.payload, &src[1000 + 7 * 256..1000 + 8 * 256], "payload of the retransmitted packet");
    let first = req.iter().find(|f| f.psn() == a0).unwrap();
    assert_eq!(first.opcode(), op::WRITE_FIRST);
    assert_eq!(req.iter().filter(|f| f.psn() == a0 + 15).last().unwrap().opcode(), op::WRITE_LAST);
    assert_delta("NIC 1", &cb, &counters(r.b()), &[
        (counter::RX_NAK_SENT, Some(1)),
        (counter::RX_DUP, Some(0)),
        (counter::RX_PKTS, None),
        (counter::TX_PKTS, None),
    ]);
    let mut want = b0.clone();
    want[8192..8192 + 4096].copy_from_slice(&src[1000..1000 + 4096]);
    assert_mr(r.b(), &want, "NIC 1 buffer");
}

#[test]
fn forward_progress_restarts_the_retry_counter() {
    // retry_cnt 1 and a 16-packet WRITE that loses the first transmission of packet 4 and the
    // retransmission of packet 11 (its first copy has left before the NAK for +4 comes back: the
    // requester streams payload without waiting for each packet's DMA read): each loss costs one
    // go-back (NAK at +4, then NAK at +11). The second NAK acknowledges +4..+10 (forward
    // progress), so the retry counter starts over and the WRITE succeeds; without the restart
    // the second loss would end in RETRY_EXC_ERR.
    let cfg = QpCfg { retry_cnt: 1, ..QpCfg::default() };
    let a0 = cfg.psn(0, 0);
    let m = FaultModel::scripted([
        Script::new(FaultKind::Drop, 1).from(0).with_psn(a0 + 4),
        Script::new(FaultKind::Drop, 2).from(0).with_psn(a0 + 11),
    ]);
    let r = rig(cfg, m);
    let src = fill(r.a(), 17);
    let b0 = fill(r.b(), 18);
    let wr = WrOpcode::Write { remote_addr: r.b().mr.addr() + 4096, rkey: r.b().mr.rkey() };
    r.a().qps[0].post_send(&SendWr::new(1, wr, vec![sge(r.a(), 0, 4096)])).unwrap();
    let wc = wait(r.a(), 1, "NIC 0");
    assert_wc(&wc[0], 1, WcStatus::Success, WcOpcode::RdmaWrite, None);
    r.finish();
    let naks = r.acks_with(1, aeth::NAK_PSN_SEQ);
    assert_eq!(psns(&naks), vec![a0 + 4, a0 + 11], "one NAK per loss: {}", dump(&r.frames()));
    let sent_11 = r.frames().iter().filter(|f| f.from == 0 && f.psn() == a0 + 11).count();
    assert_eq!(sent_11, 3, "packet 11: sent, resent after the first NAK (dropped), resent again");
    let mut want = b0.clone();
    want[4096..8192].copy_from_slice(&src[..4096]);
    assert_mr(r.b(), &want, "NIC 1 buffer");
}

// ------------------------------------------------------------------------------------------------
// Duplicate READ and atomic requests
// ------------------------------------------------------------------------------------------------

#[test]
fn duplicate_read_request_is_replayed_and_the_data_lands_once() {
    let cfg = QpCfg::default();
    let a0 = cfg.psn(0, 0);
    let r = rig(cfg, FaultModel::scripted([Script::duplicate_psn(a0).from(0)]));
    let a_mem = fill(r.a(), 17);
    let b_mem = fill(r.b(), 18);
    let (ca, cb) = (counters(r.a()), counters(r.b()));
    let rd = WrOpcode::Read { remote_addr: r.b().mr.addr() + 3000, rkey: r.b().mr.rkey() };
    r.a().qps[0].post_send(&SendWr::new(1, rd, vec![sge(r.a(), 20000, 700)])).unwrap();
    assert_wc(&wait(r.a(), 1, "NIC 0")[0], 1, WcStatus::Success, WcOpcode::RdmaRead, Some(700));
    r.finish();
    let req = r.requests(0);
    assert_eq!(req.len(), 1);
    assert_eq!((req[0].opcode(), req[0].copies), (op::READ_REQUEST, 2));
    let resp = r.responses(1);
    let got: Vec<(u8, u32)> = resp.iter().map(|f| (f.opcode(), f.psn())).collect();
    let set = [(op::READ_RESP_FIRST, a0), (op::READ_RESP_MIDDLE, a0 + 1), (op::READ_RESP_LAST, a0 + 2)];
    assert_eq!(got, [set, set].concat(), "B's responses:\n{}", dump(&r.frames()));
    for (f, g) in resp[..3].iter().zip(&resp[3..]) {
        let (p1, p2) = (rnic_model::wire::parse(&f.bytes).unwrap(), rnic_model::wire::parse(&g.bytes).unwrap());
        assert_eq!(p1.payload, p2.payload, "the replay carries the same data");
    }
    let mut want = a_mem.clone();
    want[20000..20700].copy_from_slice(&b_mem[3000..3700]);
    assert_mr(r.a(), &want, "NIC 0 buffer");
    assert_mr(r.b(), &b_mem, "NIC 1 buffer");
    assert_delta("NIC 1", &cb, &counters(r.b()), &[
        (counter::RX_DUP, Some(1)),
        (counter::RX_PKTS, Some(2)),
        (counter::TX_PKTS, Some(6)),
    ]);
    // The replayed responses find nothing outstanding on A: ghosts (or response drops).
    let ca2 = counters(r.a());
    let late = delta(&ca, &ca2, counter::RX_GHOST_ACK) + delta(&ca, &ca2, counter::RX_DROP_RESP);
    assert_eq!(late, 3, "replayed responses dropped at the requester");
    assert_delta("NIC 0", &ca, &ca2, &[
        (counter::RX_GHOST_ACK, None),
        (counter::RX_DROP_RESP, None),
        (counter::RX_PKTS, Some(6)),
        (counter::TX_PKTS, Some(1)),
    ]);
}

#[test]
fn duplicate_fetch_add_executes_once_and_is_answered_from_the_saved_result() {
    let cfg = QpCfg::default();
    let a0 = cfg.psn(0, 0);
    let r = rig(cfg, FaultModel::scripted([Script::duplicate_psn(a0).from(0)]));
    fill(r.a(), 19);
    let orig: u64 = 0x1122_3344_5566_7788;
    r.b().mr.write(64, &orig.to_le_bytes()).unwrap();
    let b_mem = r.b().mr.read_vec(0, r.b().mr.len() as usize).unwrap();
    let cb = counters(r.b());
    let fa = WrOpcode::FetchAdd { remote_addr: r.b().mr.addr() + 64, rkey: r.b().mr.rkey(), add: 5 };
    r.a().qps[0].post_send(&SendWr::new(1, fa, vec![sge(r.a(), 8, 8)])).unwrap();
    assert_wc(&wait(r.a(), 1, "NIC 0")[0], 1, WcStatus::Success, WcOpcode::FetchAdd, Some(8));
    r.finish();
    let word = u64::from_le_bytes(r.b().mr.read_vec(64, 8).unwrap().try_into().unwrap());
    assert_eq!(word, orig + 5, "remote word incremented exactly once");
    let mut want = b_mem;
    want[64..72].copy_from_slice(&(orig + 5).to_le_bytes());
    assert_mr(r.b(), &want, "NIC 1 buffer");
    let got = u64::from_le_bytes(r.a().mr.read_vec(8, 8).unwrap().try_into().unwrap());
    assert_eq!(got, orig, "original value returned");
    let resp = r.responses(1);
    assert_eq!(resp.len(), 2, "two ATOMIC_ACKs:\n{}", dump(&r.frames()));
    for f in &resp {
        let h = f.headers().unwrap();
        assert_eq!((f.opcode(), f.psn(), h.atomic_ack), (op::ATOMIC_ACK, a0, Some(orig)), "{f:?}");
    }
    assert_delta("NIC 1", &cb, &counters(r.b()), &[
        (counter::RX_DUP, Some(1)),
        (counter::RX_PKTS, Some(2)),
        (counter::TX_PKTS, Some(2)),
    ]);
}

// ------------------------------------------------------------------------------------------------
// PSN wrap with loss
// ------------------------------------------------------------------------------------------------

#[test]
fn psn_wrap_with_a_lost_packet_and_a_lost_tail() {
    // sq_psn starts at 0xFFFFFC: an 8-packet SEND uses 0xFFFFFC..=0x000003. The first
    // transmission of 0xFFFFFF is lost (NAK_PSN_SEQ 0xFFFFFF, go-back across the wrap), and the
    // go-back's copy of 0x000003 is lost too (tail loss: the ACK timeout goes back to the first
    // unacknowledged PSN 0x000000; B sees 3 duplicates, and delivers the message once).
    let cfg = QpCfg { psn_a: 0xFF_FFFC, ..QpCfg::default() };
    let a0 = cfg.psn(0, 0);
    let (mut n_ff, mut dropped_3) = (0, false);
    let hook = DropIf(move |from: usize, f: &[u8]| {
        let Some((o, _, p)) = craft::bth(f) else { return false };
        if from != 0 || rnic_model::wire::is_response(o) {
            return false;
        }
        if p == 0xFF_FFFF {
            n_ff += 1;
            return n_ff == 1;
        }
        if p == 3 && n_ff == 2 && !dropped_3 {
            dropped_3 = true;
            return true;
        }
        false
    });
    let r = rig_hook(cfg, Box::new(hook), None);
    let src = fill(r.a(), 21);
    let b0 = fill(r.b(), 22);
    let (ca, cb) = (counters(r.a()), counters(r.b()));
    r.b().qps[0].post_recv(&RecvWr { wr_id: 500, sgl: vec![sge(r.b(), 30000, 2048)] }).unwrap();
    r.a().qps[0].post_send(&SendWr::new(1, WrOpcode::Send, vec![sge(r.a(), 0, 2000)])).unwrap();
    assert_wc(&wait(r.a(), 1, "NIC 0")[0], 1, WcStatus::Success, WcOpcode::Send, Some(2000));
    assert_wc(&wait(r.b(), 1, "NIC 1")[0], 500, WcStatus::Success, WcOpcode::Recv, Some(2000));
    // Then a WRITE straight after the wrap, no loss.
    let wr = WrOpcode::Write { remote_addr: r.b().mr.addr() + 40000, rkey: r.b().mr.rkey() };
    r.a().qps[0].post_send(&SendWr::new(2, wr, vec![sge(r.a(), 5000, 1000)])).unwrap();
    assert_wc(&wait(r.a(), 1, "NIC 0")[0], 2, WcStatus::Success, WcOpcode::RdmaWrite, None);
    r.finish();
    let rq = psns(&r.requests(0));
    let rr = runs(&rq);
    assert_eq!(rr.len(), 3, "request runs {}\n{}", fmt_runs(&rr), dump(&r.frames()));
    assert_eq!(rr[0].0, a0);
    assert!(rr[0].1 <= 3, "the first pass went past the lost PSN 0xFFFFFF: {}", fmt_runs(&rr));
    assert_eq!(rr[1], (0xFF_FFFF, 3), "go-back after the NAK: {}", fmt_runs(&rr));
    // 0xFFFFFF carries BTH.A ((psn & 0x3F) == 0x3F), so B acknowledged it in the go-back:
    // acked_psn = 0, and the timeout goes back to 0, then the WRITE follows.
    assert_eq!(rr[2], (0, 7), "go-back after the timeout, then the WRITE: {}", fmt_runs(&rr));
    let naks = r.acks_with(1, aeth::NAK_PSN_SEQ);
    assert_eq!(psns(&naks), vec![0xFF_FFFF]);
    assert_eq!(delta(&ca, &counters(r.a()), counter::ACK_TIMEOUT), 1, "one ACK timeout");
    let cb2 = counters(r.b());
    assert_eq!(delta(&cb, &cb2, counter::RX_DUP), 3, "duplicates 0x000000..=0x000002");
    assert_eq!(delta(&cb, &cb2, counter::RX_NAK_SENT), 1);
    let mut want = b0.clone();
    want[30000..32000].copy_from_slice(&src[0..2000]);
    want[40000..41000].copy_from_slice(&src[5000..6000]);
    assert_mr(r.b(), &want, "NIC 1 buffer");
    let ia = r.a().qps[0].query().unwrap();
    assert_eq!(ia.sq_psn, 8, "sq_psn after the wrap");
    assert_eq!(r.b().qps[0].query().unwrap().rq_psn, 8, "rq_psn after the wrap");
}

// ------------------------------------------------------------------------------------------------
// ICRC
// ------------------------------------------------------------------------------------------------

#[test]
fn icrc_corrupted_packets_are_dropped_and_counted() {
    // A bit flip in the payload/ICRC of request PSN a0 + 2: B drops it (RX_DROP_ICRC), NAKs
    // the gap once, the data lands once. A forged ACK with a bad ICRC injected into A is
    // dropped before anything else looks at it (not a ghost ACK).
    let cfg = QpCfg::default();
    let a0 = cfg.psn(0, 0);
    let rates = FaultRates { corrupt_from: 54, ..FaultRates::default() };
    let m = FaultModel::new(0xC0C0, rates).with_script(Script::new(FaultKind::Corrupt, 1).from(0).with_psn(a0 + 2));
    let r = rig(cfg, m);
    let src = fill(r.a(), 23);
    let b0 = fill(r.b(), 24);
    let (ca, cb) = (counters(r.a()), counters(r.b()));
    r.b().qps[0].post_recv(&RecvWr { wr_id: 500, sgl: vec![sge(r.b(), 100, 2000)] }).unwrap();
    r.a().qps[0].post_send(&SendWr::new(1, WrOpcode::Send, vec![sge(r.a(), 0, 1500)])).unwrap();
    assert_wc(&wait(r.a(), 1, "NIC 0")[0], 1, WcStatus::Success, WcOpcode::Send, Some(1500));
    assert_wc(&wait(r.b(), 1, "NIC 1")[0], 500, WcStatus::Success, WcOpcode::Recv, Some(1500));
    let mut forged = craft::ack(0, r.a().qps[0].qpn(), a0, aeth::ACK_UNLIMITED as u8, 1);
    let n = forged.len();
    forged[n - 2] ^= 0x10;
    assert!(rnic_testbench::oracle::icrc_check(&forged).is_some_and(|(c, w)| c != w), "forged ICRC is bad");
    r.inject(0, forged);
    r.finish();
    let f = r.faults.as_ref().unwrap().borrow();
    assert_eq!(f.count(FaultKind::Corrupt), 1, "{}", f.log);
    let cb2 = counters(r.b());
    assert_eq!(delta(&cb, &cb2, counter::RX_DROP_ICRC), 1);
    assert_eq!(delta(&cb, &cb2, counter::RX_NAK_SENT), 1);
    assert_eq!(psns(&r.acks_with(1, aeth::NAK_PSN_SEQ)), vec![a0 + 2]);
    let ca2 = counters(r.a());
    assert_eq!(delta(&ca, &ca2, counter::RX_DROP_ICRC), 1, "forged ACK");
    assert_eq!(delta(&ca, &ca2, counter::RX_GHOST_ACK), 0, "an ICRC drop is not a ghost");
    let mut want = b0.clone();
    want[100..1600].copy_from_slice(&src[0..1500]);
    assert_mr(r.b(), &want, "NIC 1 buffer");
}

// ------------------------------------------------------------------------------------------------
// Outstanding READ / atomic limit
// ------------------------------------------------------------------------------------------------

fn rd_atomic_in_flight(limit: u8) {
    let cfg = QpCfg { max_rd_atomic: limit, ..QpCfg::default() };
    let r = rig(cfg, FaultModel::scripted([]));
    let a_mem = fill(r.a(), 25);
    let b_mem = fill(r.b(), 26);
    let (rk, base) = (r.b().mr.rkey(), r.b().mr.addr());
    let mut wrs = Vec::new();
    for k in 0..6u64 {
        wrs.push(SendWr::new(k, WrOpcode::Read { remote_addr: base + 1000 * k, rkey: rk }, vec![sge(r.a(), 20000 + 1000 * k, 700)]));
    }
    wrs.push(SendWr::new(6, WrOpcode::FetchAdd { remote_addr: base + 8000, rkey: rk, add: 1 }, vec![sge(r.a(), 40000, 8)]));
    wrs.push(SendWr::new(7, WrOpcode::FetchAdd { remote_addr: base + 8000, rkey: rk, add: 1 }, vec![sge(r.a(), 40008, 8)]));
    wrs.push(SendWr::new(8, WrOpcode::Send, vec![sge(r.a(), 0, 100)]));
    r.b().qps[0].post_recv(&RecvWr { wr_id: 500, sgl: vec![sge(r.b(), 50000, 100)] }).unwrap();
    r.a().qps[0].post_send_list(&wrs).unwrap();
    let w = wait(r.a(), wrs.len(), "NIC 0");
    for (k, wc) in w.iter().enumerate() {
        assert!(wc.status.is_success() && wc.wr_id == k as u64, "{wc:?}");
    }
    wait(r.b(), 1, "NIC 1");
    r.finish();
    let (mut inflight, mut max) = (0i32, 0i32);
    for f in r.frames() {
        match (f.from, f.opcode()) {
            (0, op::READ_REQUEST | op::FETCH_ADD | op::CMP_SWAP) => {
                inflight += 1;
                max = max.max(inflight);
                assert!(inflight <= i32::from(limit), "{inflight} READ/atomic requests in flight (max_rd_atomic {limit}) at frame #{}:\n{}", f.index, dump(&r.frames()));
            }
            (1, op::READ_RESP_LAST | op::READ_RESP_ONLY | op::ATOMIC_ACK) => inflight -= 1,
            _ => {}
        }
    }
    assert_eq!(max, i32::from(limit), "the limit was reached");
    let mut want = a_mem.clone();
    for k in 0..6usize {
        want[20000 + 1000 * k..20000 + 1000 * k + 700].copy_from_slice(&b_mem[1000 * k..1000 * k + 700]);
    }
    let w0 = u64::from_le_bytes(b_mem[8000..8008].try_into().unwrap());
    want[40000..40008].copy_from_slice(&w0.to_le_bytes());
    want[40008..40016].copy_from_slice(&w0.wrapping_add(1).to_le_bytes());
    assert_mr(r.a(), &want, "NIC 0 buffer");
}

#[test]
fn max_rd_atomic_1_keeps_one_read_or_atomic_in_flight() {
    rd_atomic_in_flight(1);
}

#[test]
fn max_rd_atomic_2_keeps_two_reads_or_atomics_in_flight() {
    rd_atomic_in_flight(2);
}

// ------------------------------------------------------------------------------------------------
// Duplicate of an earlier atomic while a later one has executed
// ------------------------------------------------------------------------------------------------

#[test]
fn lost_atomic_ack_with_a_second_atomic_executed_is_recovered() {
    // Two FETCH_ADDs back to back (max_rd_atomic 16); the ATOMIC_ACK of the first is lost. B has
    // executed both; IBTA (responder resources for max_dest_rd_atomic requests) and rxe answer the
    // retransmitted first request from its saved result. The contract (section 9) saves only the
    // last atomic (atom_psn = a0 + 1), so the duplicate a0 is dropped every time and the
    // requester ends with RETRY_EXC_ERR after retry_cnt local ACK timeouts.
    let cfg = QpCfg { retry_cnt: 2, timeout: 3, ..QpCfg::default() };
    let a0 = cfg.psn(0, 0);
    let r = rig(cfg, FaultModel::scripted([Script::new(FaultKind::Drop, 1).from(1).with_psn(a0)]));
    fill(r.a(), 27);
    let orig: u64 = 1000;
    r.b().mr.write(64, &orig.to_le_bytes()).unwrap();
    let (rk, va) = (r.b().mr.rkey(), r.b().mr.addr() + 64);
    r.a().qps[0]
        .post_send_list(&[
            SendWr::new(1, WrOpcode::FetchAdd { remote_addr: va, rkey: rk, add: 1 }, vec![sge(r.a(), 0, 8)]),
            SendWr::new(2, WrOpcode::FetchAdd { remote_addr: va, rkey: rk, add: 10 }, vec![sge(r.a(), 8, 8)]),
        ])
        .unwrap();
    let w = wait(r.a(), 2, "NIC 0");
    assert_wc(&w[0], 1, WcStatus::Success, WcOpcode::FetchAdd, Some(8));
    assert_wc(&w[1], 2, WcStatus::Success, WcOpcode::FetchAdd, Some(8));
    r.finish();
    let got = |off| u64::from_le_bytes(r.a().mr.read_vec(off, 8).unwrap().try_into().unwrap());
    assert_eq!((got(0), got(8)), (orig, orig + 1));
    let word = u64::from_le_bytes(r.b().mr.read_vec(64, 8).unwrap().try_into().unwrap());
    assert_eq!(word, orig + 11, "each FETCH_ADD executed once");
    let acks: Vec<u32> = r.responses(1).iter().filter(|f| f.opcode() == op::ATOMIC_ACK).map(WireFrame::psn).collect();
    assert!(acks.iter().filter(|p| **p == a0).count() >= 2, "the first ATOMIC_ACK was replayed: {acks:x?}");
}

// ------------------------------------------------------------------------------------------------
// Timeout 0 and lost READ responses
// ------------------------------------------------------------------------------------------------

#[test]
fn timeout_zero_disables_the_local_ack_timeout() {
    // timeout = 0 means no local ACK timeout (IBTA: infinite): a lost last packet is never
    // retransmitted; the WQE completes only when the QP is moved to ERR (WR_FLUSH_ERR).
    let cfg = QpCfg { timeout: 0, ..QpCfg::default() };
    let a0 = cfg.psn(0, 0);
    let r = rig(cfg, FaultModel::scripted([Script::new(FaultKind::Drop, 1).from(0).with_psn(a0 + 1)]));
    fill(r.a(), 28);
    let ca = counters(r.a());
    r.b().qps[0].post_recv(&RecvWr { wr_id: 500, sgl: vec![sge(r.b(), 0, 1000)] }).unwrap();
    r.a().qps[0].post_send(&SendWr::new(1, WrOpcode::Send, vec![sge(r.a(), 0, 400)])).unwrap();
    r.run(300_000);
    assert_cq_empty(r.a(), "NIC 0");
    assert_cq_empty(r.b(), "NIC 1");
    assert_eq!(psns(&r.requests(0)), vec![a0, a0 + 1], "nothing retransmitted");
    assert_eq!(state(r.a()), QpState::Rts);
    assert_delta("NIC 0", &ca, &counters(r.a()), &[(counter::TX_PKTS, Some(2))]);
    r.a().qps[0].to_err().unwrap();
    assert_wc(&wait(r.a(), 1, "NIC 0")[0], 1, WcStatus::WrFlushErr, WcOpcode::Send, Some(0));
    r.b().qps[0].to_err().unwrap();
    assert_wc(&wait(r.b(), 1, "NIC 1")[0], 500, WcStatus::WrFlushErr, WcOpcode::Recv, None);
    r.finish();
}

#[test]
fn lost_read_response_is_recovered_by_the_ack_timeout() {
    // The middle response of a 3-packet READ (MTU 256) is lost: the LAST response is out of
    // sequence at the requester (RX_DROP_RESP); the local ACK timeout resumes the READ at its
    // first missing response (contract 10: a new READ request for the rest, from PSN a0 + 1, RETH
    // va + 256, length 344, as rxe does), which B answers as a duplicate with FIRST and LAST.
    let cfg = QpCfg::default();
    let a0 = cfg.psn(0, 0);
    let r = rig(cfg, FaultModel::scripted([Script::new(FaultKind::Drop, 1).from(1).with_psn(a0 + 1)]));
    let a_mem = fill(r.a(), 29);
    let b_mem = fill(r.b(), 30);
    let (ca, cb) = (counters(r.a()), counters(r.b()));
    let va = r.b().mr.addr() + 1000;
    let rd = WrOpcode::Read { remote_addr: va, rkey: r.b().mr.rkey() };
    r.a().qps[0].post_send(&SendWr::new(1, rd, vec![sge(r.a(), 30000, 600)])).unwrap();
    assert_wc(&wait(r.a(), 1, "NIC 0")[0], 1, WcStatus::Success, WcOpcode::RdmaRead, Some(600));
    r.finish();
    let req = r.requests(0);
    assert_eq!(req.iter().map(|f| (f.opcode(), f.psn())).collect::<Vec<_>>(), vec![(op::READ_REQUEST, a0), (op::READ_REQUEST, a0 + 1)], "{}", dump(&r.frames()));
    let reth: Vec<(u64, u32)> = req.iter().map(|f| f.headers().and_then(|h| h.reth).map(|t| (t.va, t.dma_len)).expect("a RETH")).collect();
    assert_eq!(reth, vec![(va, 600), (va + 256, 344)], "the resumed READ asks for the rest only");
    let resp: Vec<(u8, u32)> = r.responses(1).iter().map(|f| (f.opcode(), f.psn())).collect();
    assert_eq!(resp, vec![
        (op::READ_RESP_FIRST, a0), (op::READ_RESP_MIDDLE, a0 + 1), (op::READ_RESP_LAST, a0 + 2),
        (op::READ_RESP_FIRST, a0 + 1), (op::READ_RESP_LAST, a0 + 2),
    ]);
    assert_delta("NIC 0", &ca, &counters(r.a()), &[
        (counter::ACK_TIMEOUT, Some(1)),
        (counter::RX_DROP_RESP, Some(1)),
        (counter::TX_PKTS, Some(2)),
        (counter::RX_PKTS, Some(4)),
    ]);
    assert_delta("NIC 1", &cb, &counters(r.b()), &[(counter::RX_DUP, Some(1)), (counter::TX_PKTS, Some(5)), (counter::RX_PKTS, Some(2))]);
    let mut want = a_mem.clone();
    want[30000..30600].copy_from_slice(&b_mem[1000..1600]);
    assert_mr(r.a(), &want, "NIC 0 buffer");
}

// ------------------------------------------------------------------------------------------------
// Responder replay of injected duplicate READ requests; NAK inside a READ
// ------------------------------------------------------------------------------------------------

/// A READ_REQUEST frame from NIC 0's QP to NIC 1's QP `dqpn`.
fn read_request(dqpn: u32, psn: u32, va: u64, rkey: u32, len: u32) -> Vec<u8> {
    let mut h = craft::to_nic(1, op::READ_REQUEST, dqpn, psn);
    h.bth.ackreq = true;
    h.reth = Some(rnic_model::wire::Reth { va, rkey, dma_len: len });
    craft::build(&h, &[])
}

#[test]
fn duplicate_read_request_replays_the_range_of_its_own_reth() {
    // After a 4-packet READ (PSNs a0..a0+3) completed, a duplicate READ_REQUEST for PSN a0 + 1
    // with a different (smaller) range is injected into B: B replays from that PSN and RETH
    // (300 bytes at +5000: FIRST a0+1, LAST a0+2) without changing rq_psn or msn; A finds
    // nothing outstanding (ghosts). A duplicate with a bad rkey is dropped silently.
    let cfg = QpCfg::default();
    let a0 = cfg.psn(0, 0);
    let r = rig(cfg, FaultModel::scripted([]));
    fill(r.a(), 31);
    let b_mem = fill(r.b(), 32);
    let (rk, base) = (r.b().mr.rkey(), r.b().mr.addr());
    r.a().qps[0].post_send(&SendWr::new(1, WrOpcode::Read { remote_addr: base, rkey: rk }, vec![sge(r.a(), 0, 1000)])).unwrap();
    assert_wc(&wait(r.a(), 1, "NIC 0")[0], 1, WcStatus::Success, WcOpcode::RdmaRead, Some(1000));
    r.run(2000);
    let ib = r.b().qps[0].query().unwrap();
    assert_eq!(ib.rq_psn, a0 + 4);
    let (ca, cb) = (counters(r.a()), counters(r.b()));
    let n0 = r.frames().len();
    let qb = r.b().qps[0].qpn();
    r.inject(1, read_request(qb, a0 + 1, base + 5000, rk, 300));
    r.inject(1, read_request(qb, a0 + 2, base + 5000, rk ^ 0x33, 300));
    r.run(5000);
    let new: Vec<WireFrame> = r.frames()[n0..].to_vec();
    let got: Vec<(usize, u8, u32)> = new.iter().map(|f| (f.from, f.opcode(), f.psn())).collect();
    assert_eq!(got, vec![(1, op::READ_RESP_FIRST, a0 + 1), (1, op::READ_RESP_LAST, a0 + 2)], "{}", dump(&new));
    let p1 = rnic_model::wire::parse(&new[0].bytes).unwrap();
    let p2 = rnic_model::wire::parse(&new[1].bytes).unwrap();
    assert_eq!([p1.payload, p2.payload].concat(), &b_mem[5000..5300], "replayed bytes come from the duplicate's RETH");
    assert_eq!(p1.hdr.aeth.map(|a| a.msn), Some(1), "a replay carries the current MSN");
    assert_delta("NIC 1", &cb, &counters(r.b()), &[(counter::RX_DUP, Some(2)), (counter::RX_PKTS, Some(2)), (counter::TX_PKTS, Some(2))]);
    assert_delta("NIC 0", &ca, &counters(r.a()), &[(counter::RX_GHOST_ACK, Some(2)), (counter::RX_PKTS, Some(2))]);
    let ib2 = r.b().qps[0].query().unwrap();
    assert_eq!(ib2, ib, "a replay changes nothing at the responder");
    r.finish();
}

#[test]
fn nak_for_a_lost_read_request_rewinds_to_the_read() {
    // READ (3 PSNs a0..a0+2) then SEND (a0+3); the READ request is lost. The SEND is ahead:
    // B sends NAK_PSN_SEQ a0; A rewinds to the READ's first PSN and sends READ and SEND again.
    let cfg = QpCfg::default();
    let a0 = cfg.psn(0, 0);
    let r = rig(cfg, FaultModel::scripted([Script::new(FaultKind::Drop, 1).from(0).with_psn(a0)]));
    let a_mem = fill(r.a(), 33);
    let b_mem = fill(r.b(), 34);
    r.b().qps[0].post_recv(&RecvWr { wr_id: 500, sgl: vec![sge(r.b(), 40000, 100)] }).unwrap();
    let rd = WrOpcode::Read { remote_addr: r.b().mr.addr() + 2000, rkey: r.b().mr.rkey() };
    r.a().qps[0]
        .post_send_list(&[SendWr::new(1, rd, vec![sge(r.a(), 10000, 700)]), SendWr::new(2, WrOpcode::Send, vec![sge(r.a(), 0, 100)])])
        .unwrap();
    let w = wait(r.a(), 2, "NIC 0");
    assert_wc(&w[0], 1, WcStatus::Success, WcOpcode::RdmaRead, Some(700));
    assert_wc(&w[1], 2, WcStatus::Success, WcOpcode::Send, Some(100));
    assert_wc(&wait(r.b(), 1, "NIC 1")[0], 500, WcStatus::Success, WcOpcode::Recv, Some(100));
    r.finish();
    let req: Vec<(u8, u32)> = r.requests(0).iter().map(|f| (f.opcode(), f.psn())).collect();
    assert_eq!(req, vec![(op::READ_REQUEST, a0), (op::SEND_ONLY, a0 + 3), (op::READ_REQUEST, a0), (op::SEND_ONLY, a0 + 3)], "{}", dump(&r.frames()));
    assert_eq!(psns(&r.acks_with(1, aeth::NAK_PSN_SEQ)), vec![a0]);
    let mut want = a_mem.clone();
    want[10000..10700].copy_from_slice(&b_mem[2000..2700]);
    assert_mr(r.a(), &want, "NIC 0 buffer");
    let mut bw = b_mem.clone();
    bw[40000..40100].copy_from_slice(&a_mem[0..100]);
    assert_mr(r.b(), &bw, "NIC 1 buffer");
}
