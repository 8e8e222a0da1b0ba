// SPDX-License-Identifier: Apache-2.0
//! Bad-input conformance suite, all in `Backend::Lockstep`: RTL and model must agree event by
//! event (the fabric fails on any mismatch), and every test also asserts the exact outcome the
//! contract (docs/architecture.md sections 4, 8-11) prescribes: completion status and opcode on
//! both sides, QP state via QUERY_QP, the counter that must move, WR_FLUSH_ERR for later WQEs,
//! and victim memory byte for byte. Expectations come from the contract and from the data the
//! test wrote, never from what the implementation produced.
//!
//! Also holds the scenarios first written in `rtl/tb_core/lockstep_scenarios.rs` (RNR exhausted,
//! bad rkey, bad lkey, receive too small, many QPs, lossy link, scrambled pages, PSN wrap),
//! turned into assertions.

use rnic_driver::{
    AccessFlags, CmdImage, Context, Error, Mr, Mtu, QpAttr, QpInitAttr, QpState, QueuePair,
    RecvWr, RtrAttr, RtsAttr, SendWr, Sge, WcOpcode, WcStatus, WorkCompletion, WrOpcode,
    CMD_IMAGE_SIZE, CommandStatus, encode_send_wqe,
};
use rnic_model::{Nic, NicConfig};
use rnic_regs::{
    cmd, cmd_create_cq, cmd_create_qp, cmd_index, cmd_qp_args, cmd_reg_mr, cmd_write_mtt, counter,
    cqe, params, qp_attr, qp_state, reg, send_wqe, trace, wc_opcode, wc_status, wr_opcode,
};
use rnic_testbench::fabric::{Backend, Fabric};
use rnic_testbench::harness::{nic_ip, nic_mac, Endpoint, Pair, PairOptions};
use rnic_testbench::hostmem::HostMem;
use rnic_testbench::link::FaultHook;
use rnic_testbench::lockstep::{Checker, Observed, Stream};
use rnic_testbench::scenarios::pattern;

/// Progress budget of a completion wait (each call runs 1000 cycles): generous but finite.
const WAIT: u32 = 5_000;

fn opts() -> PairOptions {
    let mut o = PairOptions::on(Backend::Lockstep);
    o.mtu = Mtu::Mtu256;
    o
}

fn pair_with(o: &PairOptions) -> Pair {
    Pair::new(o).unwrap_or_else(|e| panic!("setup: {e}"))
}

fn pair() -> Pair {
    pair_with(&opts())
}

fn wait(ep: &Endpoint, n: usize) -> Vec<WorkCompletion> {
    ep.cq.wait(n, WAIT).unwrap_or_else(|e| panic!("waiting for {n} completions: {e}"))
}

/// Run the fabric for a while so every task started by earlier MMIO writes / frames finishes.
fn quiesce(p: &Pair) {
    p.fabric.borrow_mut().run_cycles(5_000).unwrap_or_else(|e| panic!("running the fabric: {e}"));
}

/// Let everything land, then check that the model has no prediction left, that both host
/// memories are identical, and that the run really was compared event by event.
fn settle(p: &Pair) {
    quiesce(p);
    p.settle().unwrap_or_else(|e| panic!("settle: {e}"));
    let f = p.fabric.borrow();
    assert_eq!(f.backend(), Backend::Lockstep);
    let stats = f.check_stats();
    assert!(stats.len() == 2 && stats.iter().all(|s| s.tasks > 0 && s.mmio_reads > 0), "lockstep did not compare: {stats:?}");
}

/// A backend failure (lockstep mismatch) makes driver reads return all ones; surface the real
/// error instead of a confusing value.
#[track_caller]
fn checked(ep: &Endpoint, v: u64) -> u64 {
    if v == u64::MAX {
        if let Err(e) = ep.ctx.progress() {
            panic!("{e}");
        }
    }
    v
}

/// MMIO read of function 0 through the driver, failing on a lockstep mismatch.
#[track_caller]
fn read(ep: &Endpoint, offset: u64) -> u64 {
    checked(ep, ep.ctx.raw_mmio_read(offset))
}

/// No further completion on `ep`'s CQ.
fn assert_cq_empty(ep: &Endpoint, who: &str) {
    let extra = ep.cq.poll_one().expect("poll");
    assert!(extra.is_none(), "{who}: unexpected completion {extra:?}");
}

fn state(qp: &QueuePair) -> QpState {
    qp.query().unwrap_or_else(|e| panic!("query QP {}: {e}", qp.qpn())).state
}

/// Every counter of a NIC, in `counter::ALL` order.
fn counters(ep: &Endpoint) -> Vec<(&'static str, u32, u64)> {
    counter::ALL
        .iter()
        .filter(|(_, i)| *i < counter::NUM)
        .map(|(n, i)| (*n, *i, checked(ep, ep.ctx.counter(*i))))
        .collect()
}

/// Assert that between `before` and `after` exactly the counters in `moved` changed, by the
/// given amounts.
fn assert_counter_delta(who: &str, before: &[(&str, u32, u64)], after: &[(&str, u32, u64)], moved: &[(u32, u64)]) {
    for ((name, idx, b), (_, _, a)) in before.iter().zip(after) {
        let want = moved.iter().find(|(i, _)| i == idx).map_or(0, |(_, d)| *d);
        assert_eq!(a - b, want, "{who}: counter {name} moved by {} (want {want})", a - b);
    }
}

/// Fill the whole MR with a pattern and return it (the reference for "unchanged").
fn fill(mr: &Mr, seed: u64) -> Vec<u8> {
    let data = pattern(seed, mr.len() as usize);
    mr.write(0, &data).expect("fill MR");
    data
}

fn assert_mr(mr: &Mr, want: &[u8], what: &str) {
    let got = mr.read_vec(0, want.len()).expect("read MR");
    if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: byte {at} is {:#04x}, want {:#04x}", got[at], want[at]);
    }
}

#[track_caller]
fn assert_wc(wc: &WorkCompletion, wr_id: u64, status: WcStatus, opcode: WcOpcode, qpn: u32, wqe_idx: u16) {
    assert_eq!(
        (wc.wr_id, wc.status, wc.opcode, wc.qpn, wc.wqe_idx),
        (wr_id, status, opcode, qpn, wqe_idx),
        "completion {wc:?}"
    );
}

/// An error or flush completion of a send WQE: byte_len 0 (contract 11, FLUSH_SQ).
#[track_caller]
fn assert_send_err(wc: &WorkCompletion, wr_id: u64, status: WcStatus, opcode: WcOpcode, qpn: u32, wqe_idx: u16) {
    assert_wc(wc, wr_id, status, opcode, qpn, wqe_idx);
    assert_eq!(wc.byte_len, 0, "error/flush CQE byte_len: {wc:?}");
}

fn sge(mr: &Mr, off: u64, len: u32) -> Sge {
    mr.sge(off, len).expect("sge")
}

fn send(wr_id: u64, sgl: Vec<Sge>) -> SendWr {
    SendWr::new(wr_id, WrOpcode::Send, sgl)
}

// ------------------------------------------------------------------------------------------
// Doorbells and MMIO (contract 4)
// ------------------------------------------------------------------------------------------

#[test]
fn doorbell_for_missing_qp_and_cq_counts_db_bad_only() {
    let p = pair();
    let (a, b) = (&p.a, &p.b);
    let a_mem = fill(&a.mr, 1);
    let b_mem = fill(&b.mr, 2);
    let (ca, cb) = (counters(a), counters(b));
    // The driver hands out QPNs/CQNs from the bottom; the last index of each is not in use.
    let qpn = a.ctx.caps().num_qp - 1;
    let cqn = a.ctx.caps().num_cq - 1;
    assert!(a.qps.iter().all(|q| q.qpn() != qpn) && a.cq.cqn() != cqn);
    a.ctx.raw_mmio_write(Context::qp_doorbell(qpn) + params::DB_SQ_PI, 1);
    a.ctx.raw_mmio_write(Context::qp_doorbell(qpn) + params::DB_RQ_PI, 1);
    a.ctx.raw_mmio_write(Context::cq_doorbell(cqn) + params::DB_CQ_CI, 1);
    a.ctx.raw_mmio_write(Context::cq_doorbell(cqn) + params::DB_CQ_ARM, 1);
    quiesce(&p);
    assert_counter_delta("NIC 0", &ca, &counters(a), &[(counter::DB_BAD, 4)]);
    assert_counter_delta("NIC 1", &cb, &counters(b), &[]);
    assert_cq_empty(a, "NIC 0");
    assert_cq_empty(b, "NIC 1");
    assert_eq!(state(&a.qps[0]), QpState::Rts);
    assert_mr(&a.mr, &a_mem, "NIC 0 buffer");
    assert_mr(&b.mr, &b_mem, "NIC 1 buffer");
    settle(&p);
}

#[test]
fn doorbell_for_qp_in_reset_counts_db_bad_only() {
    let p = pair();
    let a = &p.a;
    let qp = a
        .pd
        .create_qp(&QpInitAttr { send_cq: &a.cq, recv_cq: &a.cq, max_send_wr: 8, max_recv_wr: 8 })
        .expect("create QP");
    // A WQE the device would execute if it accepted the doorbell.
    let mut w = encode_send_wqe(&send(1, vec![sge(&a.mr, 0, 64)]));
    send_wqe::WR_ID.set(&mut w, 1);
    a.ctx.device().dma_write(qp.send_queue_addr(), &w).expect("write WQE");
    let before = counters(a);
    a.ctx.raw_mmio_write(Context::qp_doorbell(qp.qpn()) + params::DB_SQ_PI, 1);
    a.ctx.raw_mmio_write(Context::qp_doorbell(qp.qpn()) + params::DB_RQ_PI, 1);
    quiesce(&p);
    assert_counter_delta("NIC 0", &before, &counters(a), &[(counter::DB_BAD, 2)]);
    let info = qp.query().expect("query");
    assert_eq!((info.state, info.sq_pi, info.sq_ci, info.rq_ci), (QpState::Reset, 0, 0, 0), "{info:?}");
    assert_cq_empty(a, "NIC 0");
    settle(&p);
}

#[test]
fn doorbell_past_ring_capacity_counts_db_bad() {
    let p = pair();
    let (a, b) = (&p.a, &p.b);
    let (qa, qb) = (&a.qps[0], &b.qps[0]);
    let sq = qa.send_queue_depth() as u64;
    let rq = qa.recv_queue_depth() as u64;
    let before = counters(a);
    // (new - comp_ci) mod 2^16 > 2^log_sq_size with comp_ci = 0.
    a.ctx.raw_mmio_write(Context::qp_doorbell(qa.qpn()) + params::DB_SQ_PI, sq + 1);
    a.ctx.raw_mmio_write(Context::qp_doorbell(qa.qpn()) + params::DB_RQ_PI, rq + 1);
    // A "negative" distance wraps to a huge one.
    a.ctx.raw_mmio_write(Context::qp_doorbell(qa.qpn()) + params::DB_SQ_PI, 0xFFFF);
    quiesce(&p);
    assert_counter_delta("NIC 0", &before, &counters(a), &[(counter::DB_BAD, 3)]);
    let info = qa.query().expect("query");
    assert_eq!((info.state, info.sq_pi, info.sq_ci, info.rq_ci), (QpState::Rts, 0, 0, 0), "{info:?}");
    assert_cq_empty(a, "NIC 0");
    // The QP still works.
    let data = pattern(7, 100);
    a.mr.write(0, &data).unwrap();
    qb.post_recv(&RecvWr { wr_id: 9, sgl: vec![sge(&b.mr, 0, 100)] }).unwrap();
    qa.post_send(&send(8, vec![sge(&a.mr, 0, 100)])).unwrap();
    assert_wc(&wait(a, 1)[0], 8, WcStatus::Success, WcOpcode::Send, qa.qpn(), 0);
    let wb = wait(b, 1);
    assert_wc(&wb[0], 9, WcStatus::Success, WcOpcode::Recv, qb.qpn(), 0);
    assert_eq!(wb[0].byte_len, 100);
    assert_eq!(b.mr.read_vec(0, 100).unwrap(), data);
    settle(&p);
}

/// Doorbell coalescing (contract 4, Doorbells): a doorbell for the queue of the newest one still
/// waiting replaces it. Eight back-to-back SQ doorbells alternating between a bad value and a good
/// one: only the values that were not replaced count as bad (the model coalesces the same ones:
/// lockstep), and the last, good one takes effect.
#[test]
fn back_to_back_doorbells_for_one_queue_coalesce() {
    let p = pair();
    let a = &p.a;
    let qa = &a.qps[0];
    let sq = qa.send_queue_depth() as u64;
    let bad0 = a.ctx.counter(counter::DB_BAD);
    for k in 0..8u64 {
        let v = if k % 2 == 0 { sq + 1 } else { 0 };
        a.ctx.raw_mmio_write(Context::qp_doorbell(qa.qpn()) + params::DB_SQ_PI, v);
    }
    quiesce(&p);
    let bad = a.ctx.counter(counter::DB_BAD) - bad0;
    assert!((1..4).contains(&bad), "bad doorbells replaced before the engine took them: {bad} of 4 counted");
    let info = qa.query().expect("query");
    assert_eq!((info.state, info.sq_pi), (QpState::Rts, 0), "{info:?}");
    settle(&p);
}

#[test]
fn mmio_to_bad_offsets_counts_mmio_bad() {
    let p = pair();
    let a = &p.a;
    let before = counters(a);
    let counters_end = reg::COUNTERS + 8 * u64::from(counter::NUM);
    // Writes to read-only registers and an unknown offset: ignored, MMIO_BAD each.
    a.ctx.raw_mmio_write(reg::DEV_ID, 0x1234);
    a.ctx.raw_mmio_write(reg::CMD_STATUS, 0);
    a.ctx.raw_mmio_write(reg::COUNTERS + 8 * u64::from(counter::DB_BAD), 77);
    a.ctx.raw_mmio_write(counters_end, 1);
    // Doorbell window offsets that are not a doorbell register, and a CQ index past NUM_CQ.
    let unused = (params::DB_SQ_PI.max(params::DB_RQ_PI) + 8) as u64;
    a.ctx.raw_mmio_write(Context::qp_doorbell(a.qps[0].qpn()) + unused, 1);
    a.ctx.raw_mmio_write(Context::cq_doorbell(a.cq.cqn()) + unused, 1);
    a.ctx.raw_mmio_write(Context::cq_doorbell(a.ctx.caps().num_cq), 1);
    quiesce(&p);
    // Reads of an unknown offset return 0 and count too.
    assert_eq!(read(a, counters_end), 0);
    // The read-only registers kept their values.
    assert_eq!(read(a, reg::DEV_ID), reg::DEV_ID_RESET);
    assert_counter_delta("NIC 0", &before, &counters(a), &[(counter::MMIO_BAD, 8)]);
    assert_cq_empty(a, "NIC 0");
    assert_eq!(state(&a.qps[0]), QpState::Rts);
    settle(&p);
}

/// Regression for the first lockstep mismatch this suite found: a CMD_OP written in the cycle the
/// previous command's task starts. The RTL accepted it while still BUSY (ignored it) but the model,
/// which runs a command atomically at its trace event, took it as a new command. Now a CMD_OP write
/// is back-pressured while a CMD task runs (docs/architecture.md section 4), so the second NOP is
/// taken after the first one ends and runs as a command of its own: no MMIO_BAD, status OK.
#[test]
fn cmd_op_during_a_running_command_is_held_back_not_lost() {
    let p = pair();
    let a = &p.a;
    let before = counters(a);
    let tasks_before = p.fabric.borrow().check_stats()[0].tasks;
    a.ctx.raw_mmio_write(reg::CMD_OP, u64::from(cmd::NOP));
    a.ctx.raw_mmio_write(reg::CMD_OP, u64::from(cmd::NOP));
    quiesce(&p);
    assert_eq!(read(a, reg::CMD_STATUS) & 0xFF, u64::from(rnic_regs::cmd_status::OK));
    assert_counter_delta("NIC 0", &before, &counters(a), &[]);
    let tasks = p.fabric.borrow().check_stats()[0].tasks - tasks_before;
    assert_eq!(tasks, 2, "both NOPs ran as CMD tasks");
    settle(&p);
}

#[test]
fn mmio_from_nonzero_function_counts_mmio_bad() {
    let p = pair();
    let a = &p.a;
    let before = counters(a);
    let qa = &a.qps[0];
    {
        let mut f = p.fabric.borrow_mut();
        // A doorbell and a command from function 1: ignored.
        f.mmio_write(0, 1, Context::qp_doorbell(qa.qpn()) + params::DB_SQ_PI, 1).unwrap();
        f.mmio_write(0, 1, reg::CMD_OP, u64::from(cmd::NOP)).unwrap();
        // A read from function 1 returns all ones.
        assert_eq!(f.mmio_read(0, 1, reg::DEV_ID).unwrap(), u64::MAX);
    }
    quiesce(&p);
    assert_counter_delta("NIC 0", &before, &counters(a), &[(counter::MMIO_BAD, 3)]);
    let info = qa.query().unwrap();
    assert_eq!((info.state, info.sq_pi), (QpState::Rts, 0));
    assert_cq_empty(a, "NIC 0");
    settle(&p);
}

// ------------------------------------------------------------------------------------------
// Requester-side local errors (contract 8)
// ------------------------------------------------------------------------------------------

/// Post `bad` (raw) then a valid SEND on A's QP 0; expect `status` with `opcode` for the first,
/// WR_FLUSH_ERR for the second, A's QP in ERR, nothing on the wire, B's buffer unchanged.
fn local_error(bad: impl Fn(&Pair) -> [u8; send_wqe::SIZE], status: WcStatus, opcode: WcOpcode) {
    let p = pair();
    let bad = bad(&p);
    let (a, b) = (&p.a, &p.b);
    let (qa, qb) = (&a.qps[0], &b.qps[0]);
    fill(&a.mr, 3);
    let b_mem = fill(&b.mr, 4);
    qb.post_recv(&RecvWr { wr_id: 50, sgl: vec![sge(&b.mr, 0, 4096)] }).unwrap();
    let (ca, cb) = (counters(a), counters(b));
    qa.post_send_raw(&bad).unwrap();
    qa.post_send(&send(2, vec![sge(&a.mr, 0, 100)])).unwrap();
    let w = wait(a, 2);
    let bad_id = send_wqe::WR_ID.get(&bad);
    assert_send_err(&w[0], bad_id, status, opcode, qa.qpn(), 0);
    assert_send_err(&w[1], 2, WcStatus::WrFlushErr, WcOpcode::Send, qa.qpn(), 1);
    quiesce(&p);
    assert_cq_empty(a, "NIC 0");
    assert_cq_empty(b, "NIC 1");
    let info = qa.query().unwrap();
    assert_eq!((info.state, info.sq_pi, info.comp_ci), (QpState::Err, 2, 2), "{info:?}");
    assert_eq!(state(qb), QpState::Rts);
    // A local error sends nothing.
    assert_counter_delta("NIC 0", &ca, &counters(a), &[]);
    assert_counter_delta("NIC 1", &cb, &counters(b), &[]);
    assert_mr(&b.mr, &b_mem, "NIC 1 buffer");
    settle(&p);
}

fn raw_send(wr_id: u64, sgl: &[Sge]) -> [u8; send_wqe::SIZE] {
    encode_send_wqe(&send(wr_id, sgl.to_vec()))
}

#[test]
fn unknown_wqe_opcode_is_loc_qp_op_err_and_flushes_later_wqes() {
    let max = wr_opcode::ALL.iter().map(|(_, v)| *v).max().unwrap();
    // Contract 11: a flushed WR with an invalid opcode reports wc opcode 0.
    local_error(
        |p| {
            let mut w = raw_send(1, &[sge(&p.a.mr, 0, 64)]);
            send_wqe::OPCODE.set(&mut w, u64::from(max) + 1);
            w
        },
        WcStatus::LocQpOpErr,
        WcOpcode::from_code(0),
    );
}

#[test]
fn too_many_sges_is_loc_len_err() {
    local_error(
        |p| {
            let s = sge(&p.a.mr, 0, 16);
            let mut w = raw_send(1, &[s, s, s, s]);
            send_wqe::NUM_SGE.set(&mut w, params::MAX_SEND_SGE + 1);
            w
        },
        WcStatus::LocLenErr,
        WcOpcode::Send,
    );
}

#[test]
fn message_over_max_msg_len_is_loc_len_err() {
    local_error(
        |p| {
            let mut big = sge(&p.a.mr, 0, 16);
            big.len = params::MAX_MSG_LEN as u32;
            let mut one = big;
            one.len = 1;
            // L = MAX_MSG_LEN + 1 (checked before the lkeys, which these lengths would fail).
            raw_send(1, &[big, one])
        },
        WcStatus::LocLenErr,
        WcOpcode::Send,
    );
}

#[test]
fn atomic_with_wrong_sge_length_is_loc_len_err() {
    local_error(
        |p| {
            let op = WrOpcode::FetchAdd { remote_addr: p.b.mr.addr(), rkey: p.b.mr.rkey(), add: 1 };
            encode_send_wqe(&SendWr::new(1, op, vec![sge(&p.a.mr, 0, 16)]))
        },
        WcStatus::LocLenErr,
        WcOpcode::FetchAdd,
    );
}

#[test]
fn bad_lkey_is_loc_prot_err() {
    // Ported from lockstep_scenarios.rs C1.
    local_error(
        |p| {
            let mut s = sge(&p.a.mr, 0, 100);
            s.lkey ^= 1;
            raw_send(4, &[s])
        },
        WcStatus::LocProtErr,
        WcOpcode::Send,
    );
}

#[test]
fn sge_outside_mr_is_loc_prot_err() {
    local_error(
        |p| {
            let mut s = sge(&p.a.mr, 0, 100);
            s.addr = p.a.mr.addr() + p.a.mr.len() - 50;
            raw_send(4, &[s])
        },
        WcStatus::LocProtErr,
        WcOpcode::Send,
    );
}

#[test]
fn read_with_max_rd_atomic_zero_is_loc_qp_op_err() {
    // A second QP pair whose requester side allows no outstanding READ/atomic.
    let p = pair();
    let (a, b) = (&p.a, &p.b);
    let attr = |cq| QpInitAttr { send_cq: cq, recv_cq: cq, max_send_wr: 8, max_recv_wr: 8 };
    let qa = a.pd.create_qp(&attr(&a.cq)).unwrap();
    let qb = b.pd.create_qp(&attr(&b.cq)).unwrap();
    for (qp, peer, dest, max_rd) in [(&qa, 1, qb.qpn(), 0u8), (&qb, 0, qa.qpn(), 4)] {
        qp.to_init(AccessFlags::all()).unwrap();
        qp.to_rtr(&RtrAttr { dest_qpn: dest, rq_psn: 0x42, path_mtu: Mtu::Mtu256, dest_mac: nic_mac(peer), dest_ip: nic_ip(peer), max_dest_rd_atomic: 4, min_rnr_timer: 12 }).unwrap();
        qp.to_rts(&RtsAttr { sq_psn: 0x42, timeout: 14, retry_cnt: 7, rnr_retry: 7, max_rd_atomic: max_rd }).unwrap();
    }
    let a_mem = fill(&a.mr, 34);
    let b_mem = fill(&b.mr, 35);
    let (ca, cb) = (counters(a), counters(b));
    let rd = SendWr::new(1, WrOpcode::Read { remote_addr: b.mr.addr(), rkey: b.mr.rkey() }, vec![sge(&a.mr, 0, 64)]);
    qa.post_send_list(&[rd, send(2, vec![sge(&a.mr, 0, 10)])]).unwrap();
    let w = wait(a, 2);
    assert_send_err(&w[0], 1, WcStatus::LocQpOpErr, WcOpcode::RdmaRead, qa.qpn(), 0);
    assert_send_err(&w[1], 2, WcStatus::WrFlushErr, WcOpcode::Send, qa.qpn(), 1);
    quiesce(&p);
    assert_eq!((state(&qa), state(&qb)), (QpState::Err, QpState::Rts));
    assert_counter_delta("NIC 0", &ca, &counters(a), &[]);
    assert_counter_delta("NIC 1", &cb, &counters(b), &[]);
    assert_cq_empty(a, "NIC 0");
    assert_cq_empty(b, "NIC 1");
    assert_mr(&a.mr, &a_mem, "NIC 0 buffer");
    assert_mr(&b.mr, &b_mem, "NIC 1 buffer");
    settle(&p);
}

// ------------------------------------------------------------------------------------------
// Responder-side errors reported to the requester (contract 9, 10)
// ------------------------------------------------------------------------------------------

/// A sends `wr` (and a second WRITE behind it) to B; expect `status`/`opcode` at A, both QPs in
/// ERR, one NAK sent by B, A's and B's buffers unchanged, and a receive posted on B afterwards
/// flushed.
fn remote_error(p: &Pair, wr: SendWr, status: WcStatus, opcode: WcOpcode, a_mem: &[u8], b_mem: &[u8]) {
    let (a, b) = (&p.a, &p.b);
    let (qa, qb) = (&a.qps[0], &b.qps[0]);
    let cb = counters(b);
    let follow = SendWr::new(
        2,
        WrOpcode::Write { remote_addr: b.mr.addr() + 8192, rkey: b.mr.rkey() },
        vec![sge(&a.mr, 0, 64)],
    );
    qa.post_send_list(&[wr.clone(), follow]).unwrap();
    let w = wait(a, 2);
    assert_send_err(&w[0], wr.wr_id, status, opcode, qa.qpn(), 0);
    assert_send_err(&w[1], 2, WcStatus::WrFlushErr, WcOpcode::RdmaWrite, qa.qpn(), 1);
    assert_eq!(state(qa), QpState::Err);
    assert_eq!(state(qb), QpState::Err, "responder QP after an error NAK");
    // B's QP in ERR flushes a receive posted now (ported from lockstep_scenarios.rs B).
    qb.post_recv(&RecvWr { wr_id: 77, sgl: vec![sge(&b.mr, 0, 100)] }).unwrap();
    let wb = wait(b, 1);
    assert_wc(&wb[0], 77, WcStatus::WrFlushErr, WcOpcode::Recv, qb.qpn(), 0);
    quiesce(p);
    assert_cq_empty(a, "NIC 0");
    assert_cq_empty(b, "NIC 1");
    let after = counters(b);
    let nak = |c: &[(&str, u32, u64)]| c.iter().find(|(_, i, _)| *i == counter::RX_NAK_SENT).unwrap().2;
    assert_eq!(nak(&after) - nak(&cb), 1, "NIC 1 RX_NAK_SENT");
    assert_mr(&a.mr, a_mem, "NIC 0 buffer");
    assert_mr(&b.mr, b_mem, "NIC 1 buffer");
    settle(p);
}

#[test]
fn bad_rkey_on_write_is_rem_access_err() {
    let p = pair();
    let a_mem = fill(&p.a.mr, 5);
    let b_mem = fill(&p.b.mr, 6);
    let wr = SendWr::new(
        3,
        WrOpcode::Write { remote_addr: p.b.mr.addr(), rkey: p.b.mr.rkey() ^ 1 },
        vec![sge(&p.a.mr, 0, 100)],
    );
    remote_error(&p, wr, WcStatus::RemAccessErr, WcOpcode::RdmaWrite, &a_mem, &b_mem);
}

#[test]
fn bad_rkey_on_read_is_rem_access_err() {
    let p = pair();
    let a_mem = fill(&p.a.mr, 7);
    let b_mem = fill(&p.b.mr, 8);
    let wr = SendWr::new(
        3,
        WrOpcode::Read { remote_addr: p.b.mr.addr(), rkey: p.b.mr.rkey() ^ 1 },
        vec![sge(&p.a.mr, 4096, 100)],
    );
    remote_error(&p, wr, WcStatus::RemAccessErr, WcOpcode::RdmaRead, &a_mem, &b_mem);
}

#[test]
fn write_outside_remote_mr_is_rem_access_err() {
    let p = pair();
    let a_mem = fill(&p.a.mr, 9);
    let b_mem = fill(&p.b.mr, 10);
    let wr = SendWr::new(
        3,
        WrOpcode::Write { remote_addr: p.b.mr.addr() + p.b.mr.len() - 10, rkey: p.b.mr.rkey() },
        vec![sge(&p.a.mr, 0, 100)],
    );
    remote_error(&p, wr, WcStatus::RemAccessErr, WcOpcode::RdmaWrite, &a_mem, &b_mem);
}

/// B's QP loses every remote right (RTS -> RTS with ACCESS_FLAGS = LOCAL_WRITE): contract 9
/// step 2 answers NAK_INV_REQ.
fn qp_without_remote_access(wr: impl Fn(&Pair) -> SendWr, opcode: WcOpcode) {
    let p = pair();
    p.b.qps[0].modify(&QpAttr::new(QpState::Rts).with_access(AccessFlags::LOCAL_WRITE)).expect("RTS -> RTS");
    let a_mem = fill(&p.a.mr, 11);
    let b_mem = fill(&p.b.mr, 12);
    remote_error(&p, wr(&p), WcStatus::RemInvReqErr, opcode, &a_mem, &b_mem);
}

#[test]
fn write_to_qp_without_remote_write_is_rem_inv_req_err() {
    qp_without_remote_access(
        |p| SendWr::new(3, WrOpcode::Write { remote_addr: p.b.mr.addr(), rkey: p.b.mr.rkey() }, vec![sge(&p.a.mr, 0, 100)]),
        WcOpcode::RdmaWrite,
    );
}

#[test]
fn read_from_qp_without_remote_read_is_rem_inv_req_err() {
    qp_without_remote_access(
        |p| SendWr::new(3, WrOpcode::Read { remote_addr: p.b.mr.addr(), rkey: p.b.mr.rkey() }, vec![sge(&p.a.mr, 4096, 100)]),
        WcOpcode::RdmaRead,
    );
}

#[test]
fn atomic_on_qp_without_remote_atomic_is_rem_inv_req_err() {
    qp_without_remote_access(
        |p| {
            SendWr::new(
                3,
                WrOpcode::FetchAdd { remote_addr: p.b.mr.addr() + 8, rkey: p.b.mr.rkey(), add: 5 },
                vec![sge(&p.a.mr, 4096, 8)],
            )
        },
        WcOpcode::FetchAdd,
    );
}

/// A region on B registered with only `access`; an access it lacks → NAK_REM_ACCESS.
fn mr_without_remote_access(access: AccessFlags, wr: impl Fn(&Pair, &Mr) -> SendWr, opcode: WcOpcode) {
    let p = pair();
    let victim = p.b.pd.reg_mr(4096, access).expect("reg_mr");
    let victim_mem = fill(&victim, 13);
    let a_mem = fill(&p.a.mr, 14);
    let b_mem = fill(&p.b.mr, 15);
    remote_error(&p, wr(&p, &victim), WcStatus::RemAccessErr, opcode, &a_mem, &b_mem);
    assert_mr(&victim, &victim_mem, "victim MR");
    settle(&p);
}

#[test]
fn write_to_mr_without_remote_write_is_rem_access_err() {
    mr_without_remote_access(
        AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_READ | AccessFlags::REMOTE_ATOMIC,
        |p, v| SendWr::new(3, WrOpcode::Write { remote_addr: v.addr(), rkey: v.rkey() }, vec![sge(&p.a.mr, 0, 100)]),
        WcOpcode::RdmaWrite,
    );
}

#[test]
fn read_from_mr_without_remote_read_is_rem_access_err() {
    mr_without_remote_access(
        AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_WRITE | AccessFlags::REMOTE_ATOMIC,
        |p, v| SendWr::new(3, WrOpcode::Read { remote_addr: v.addr(), rkey: v.rkey() }, vec![sge(&p.a.mr, 4096, 100)]),
        WcOpcode::RdmaRead,
    );
}

#[test]
fn atomic_on_mr_without_remote_atomic_is_rem_access_err() {
    mr_without_remote_access(
        AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_WRITE | AccessFlags::REMOTE_READ,
        |p, v| {
            SendWr::new(
                3,
                WrOpcode::CompareSwap { remote_addr: v.addr() + 16, rkey: v.rkey(), compare: 0, swap: 1 },
                vec![sge(&p.a.mr, 4096, 8)],
            )
        },
        WcOpcode::CompSwap,
    );
}

#[test]
fn misaligned_atomic_is_rem_inv_req_err() {
    let p = pair();
    let a_mem = fill(&p.a.mr, 16);
    let b_mem = fill(&p.b.mr, 17);
    let wr = SendWr::new(
        3,
        WrOpcode::CompareSwap { remote_addr: p.b.mr.addr() + 12, rkey: p.b.mr.rkey(), compare: 0, swap: 1 },
        vec![sge(&p.a.mr, 4096, 8)],
    );
    remote_error(&p, wr, WcStatus::RemInvReqErr, WcOpcode::CompSwap, &a_mem, &b_mem);
}

#[test]
fn receive_buffer_too_small_is_rem_inv_req_err_and_loc_len_err() {
    // Ported from lockstep_scenarios.rs C2: 200 bytes (one packet at MTU 256) into 100.
    let p = pair();
    let (a, b) = (&p.a, &p.b);
    let (qa, qb) = (&a.qps[0], &b.qps[0]);
    let a_mem = fill(&a.mr, 18);
    let b_mem = fill(&b.mr, 19);
    let cb = counters(b);
    qb.post_recv(&RecvWr { wr_id: 88, sgl: vec![sge(&b.mr, 0, 100)] }).unwrap();
    qa.post_send(&send(5, vec![sge(&a.mr, 0, 200)])).unwrap();
    qa.post_send(&send(6, vec![sge(&a.mr, 0, 10)])).unwrap();
    let wa = wait(a, 2);
    let wb = wait(b, 1);
    assert_send_err(&wa[0], 5, WcStatus::RemInvReqErr, WcOpcode::Send, qa.qpn(), 0);
    assert_send_err(&wa[1], 6, WcStatus::WrFlushErr, WcOpcode::Send, qa.qpn(), 1);
    assert_wc(&wb[0], 88, WcStatus::LocLenErr, WcOpcode::Recv, qb.qpn(), 0);
    assert_eq!((state(qa), state(qb)), (QpState::Err, QpState::Err));
    quiesce(&p);
    assert_cq_empty(a, "NIC 0");
    assert_cq_empty(b, "NIC 1");
    let nak = |c: &[(&str, u32, u64)]| c.iter().find(|(_, i, _)| *i == counter::RX_NAK_SENT).unwrap().2;
    assert_eq!(nak(&counters(b)) - nak(&cb), 1, "NIC 1 RX_NAK_SENT");
    // All checks precede any write: nothing of the 200 bytes landed.
    assert_mr(&a.mr, &a_mem, "NIC 0 buffer");
    assert_mr(&b.mr, &b_mem, "NIC 1 buffer");
    settle(&p);
}

#[test]
fn rnr_retry_exhausted_single_packet_exact_counts() {
    let mut o = opts();
    o.rnr_retry = 1;
    let p = pair_with(&o);
    let (a, b) = (&p.a, &p.b);
    let (qa, qb) = (&a.qps[0], &b.qps[0]);
    let b_mem = fill(&b.mr, 20);
    let (ca, cb) = (counters(a), counters(b));
    qa.post_send(&send(1, vec![sge(&a.mr, 0, 100)])).unwrap();
    let w = wait(a, 1);
    assert_send_err(&w[0], 1, WcStatus::RnrRetryExcErr, WcOpcode::Send, qa.qpn(), 0);
    quiesce(&p);
    // rnr_retry = 1: the SEND goes out twice, each answered by an RNR NAK; the second exhausts.
    // Between them the requester waits the RNR timer once (section 10a).
    assert_counter_delta(
        "NIC 0",
        &ca,
        &counters(a),
        &[(counter::TX_PKTS, 2), (counter::RX_PKTS, 2), (counter::RNR_TIMER, 1)],
    );
    assert_counter_delta(
        "NIC 1",
        &cb,
        &counters(b),
        &[(counter::TX_PKTS, 2), (counter::RX_PKTS, 2), (counter::RX_NAK_SENT, 2)],
    );
    assert_eq!(state(qa), QpState::Err);
    // An RNR NAK changes nothing at the responder.
    let ib = qb.query().unwrap();
    assert_eq!((ib.state, ib.rq_ci), (QpState::Rts, 0), "{ib:?}");
    // A WR posted to the QP in ERR is flushed.
    qa.post_send(&send(2, vec![sge(&a.mr, 0, 10)])).unwrap();
    assert_send_err(&wait(a, 1)[0], 2, WcStatus::WrFlushErr, WcOpcode::Send, qa.qpn(), 1);
    assert_cq_empty(b, "NIC 1");
    assert_mr(&b.mr, &b_mem, "NIC 1 buffer");
    settle(&p);
}

#[test]
fn rnr_retry_exhausted_flushes_queued_wqes() {
    // Ported from lockstep_scenarios.rs A: a 3-packet SEND and a queued SEND, no receive posted.
    let mut o = opts();
    o.rnr_retry = 1;
    let p = pair_with(&o);
    let (a, b) = (&p.a, &p.b);
    let (qa, qb) = (&a.qps[0], &b.qps[0]);
    let b_mem = fill(&b.mr, 21);
    qa.post_send(&send(1, vec![sge(&a.mr, 0, 600)])).unwrap();
    qa.post_send(&send(2, vec![sge(&a.mr, 0, 10)])).unwrap();
    let w = wait(a, 2);
    assert_send_err(&w[0], 1, WcStatus::RnrRetryExcErr, WcOpcode::Send, qa.qpn(), 0);
    assert_send_err(&w[1], 2, WcStatus::WrFlushErr, WcOpcode::Send, qa.qpn(), 1);
    quiesce(&p);
    assert!(read(b, reg::COUNTERS + 8 * u64::from(counter::RX_NAK_SENT)) >= 2, "at least rnr_retry + 1 RNR NAKs");
    assert_eq!(state(qa), QpState::Err);
    assert_eq!(state(qb), QpState::Rts);
    assert_cq_empty(a, "NIC 0");
    assert_cq_empty(b, "NIC 1");
    assert_mr(&b.mr, &b_mem, "NIC 1 buffer");
    settle(&p);
}

// ------------------------------------------------------------------------------------------
// Admin commands (contract 4)
// ------------------------------------------------------------------------------------------

#[track_caller]
fn expect_cmd(ctx: &Context, op: u8, img: &CmdImage, want: u8, what: &str) {
    match ctx.raw_command(op, img) {
        Err(Error::CommandFailed { status, .. }) => {
            assert_eq!(status, CommandStatus::from_code(want), "{what}: status")
        }
        other => panic!("{what}: expected status {want:#x}, got {other:?}"),
    }
}

fn img() -> CmdImage {
    [0u8; CMD_IMAGE_SIZE]
}

fn index_img(i: u64) -> CmdImage {
    let mut b = img();
    cmd_index::INDEX.set(&mut b, i);
    b
}

#[test]
fn admin_commands_with_bad_arguments() {
    use rnic_regs::cmd_status::{BAD_INDEX, BAD_OPCODE, BAD_PARAM, BAD_STATE};
    let p = pair();
    let a = &p.a;
    let ctx = &a.ctx;
    let caps = ctx.caps();
    let (num_qp, num_cq, num_mr, num_pd, num_mtt) =
        (u64::from(caps.num_qp), u64::from(caps.num_cq), u64::from(caps.num_mr), u64::from(caps.num_pd), u64::from(caps.num_mtt));
    let before = counters(a);

    // An opcode the spec does not define.
    let unknown = (0..=u8::MAX).rev().find(|o| cmd::ALL.iter().all(|(_, v)| v != o)).unwrap();
    expect_cmd(ctx, unknown, &img(), BAD_OPCODE, "unknown opcode");

    // CREATE_CQ: index, state, then parameters. A free CQN is the top one.
    let free_cq = num_cq - 1;
    let cq_img = |cqn: u64, base: u64, log: u64| {
        let mut b = img();
        cmd_create_cq::CQN.set(&mut b, cqn);
        cmd_create_cq::BASE.set(&mut b, base);
        cmd_create_cq::LOG_SIZE.set(&mut b, log);
        b
    };
    expect_cmd(ctx, cmd::CREATE_CQ, &cq_img(num_cq, 0x10000, 4), BAD_INDEX, "CREATE_CQ cqn = NUM_CQ");
    expect_cmd(ctx, cmd::CREATE_CQ, &cq_img(u64::from(a.cq.cqn()), 0x10000, 4), BAD_STATE, "CREATE_CQ on a valid CQ");
    expect_cmd(ctx, cmd::CREATE_CQ, &cq_img(free_cq, 0x10000, 0), BAD_PARAM, "CREATE_CQ log_size 0");
    expect_cmd(ctx, cmd::CREATE_CQ, &cq_img(free_cq, 0x10000, 17), BAD_PARAM, "CREATE_CQ log_size 17");
    expect_cmd(ctx, cmd::CREATE_CQ, &cq_img(free_cq, 0x10000 + 16, 4), BAD_PARAM, "CREATE_CQ base % 32 != 0");
    // Nothing was created by the failed commands.
    expect_cmd(ctx, cmd::DESTROY_CQ, &index_img(free_cq), BAD_STATE, "DESTROY_CQ of a CQ never created");
    expect_cmd(ctx, cmd::DESTROY_CQ, &index_img(num_cq), BAD_INDEX, "DESTROY_CQ cqn = NUM_CQ");

    // PDs.
    expect_cmd(ctx, cmd::ALLOC_PD, &index_img(num_pd), BAD_INDEX, "ALLOC_PD pdn = NUM_PD");
    expect_cmd(ctx, cmd::ALLOC_PD, &index_img(u64::from(a.pd.pdn())), BAD_STATE, "ALLOC_PD of a valid PD");
    expect_cmd(ctx, cmd::DEALLOC_PD, &index_img(num_pd - 1), BAD_STATE, "DEALLOC_PD of a free PD");
    expect_cmd(ctx, cmd::DEALLOC_PD, &index_img(num_pd), BAD_INDEX, "DEALLOC_PD pdn = NUM_PD");

    // WRITE_MTT: count first (BAD_PARAM), then range (BAD_INDEX).
    let mtt_img = |start: u64, count: u64| {
        let mut b = img();
        cmd_write_mtt::START.set(&mut b, start);
        cmd_write_mtt::COUNT.set(&mut b, count);
        cmd_write_mtt::SRC.set(&mut b, a.mr.addr());
        b
    };
    expect_cmd(ctx, cmd::WRITE_MTT, &mtt_img(0, 0), BAD_PARAM, "WRITE_MTT count 0");
    expect_cmd(ctx, cmd::WRITE_MTT, &mtt_img(0, params::MTT_WRITE_MAX + 1), BAD_PARAM, "WRITE_MTT count > MTT_WRITE_MAX");
    expect_cmd(ctx, cmd::WRITE_MTT, &mtt_img(num_mtt - 1, 2), BAD_INDEX, "WRITE_MTT past NUM_MTT");

    // REG_MR.
    let free_mr = num_mr - 1;
    let mr_img = |index: u64, pdn: u64, log_page: u64, length: u64, mtt_base: u64| {
        let mut b = img();
        cmd_reg_mr::INDEX.set(&mut b, index);
        cmd_reg_mr::KEY.set(&mut b, 0x5a);
        cmd_reg_mr::PDN.set(&mut b, pdn);
        cmd_reg_mr::ACCESS.set(&mut b, u64::from(AccessFlags::all().bits()));
        cmd_reg_mr::IOVA.set(&mut b, 0x10000);
        cmd_reg_mr::LENGTH.set(&mut b, length);
        cmd_reg_mr::MTT_BASE.set(&mut b, mtt_base);
        cmd_reg_mr::LOG_PAGE.set(&mut b, log_page);
        b
    };
    let pdn = u64::from(a.pd.pdn());
    expect_cmd(ctx, cmd::REG_MR, &mr_img(num_mr, pdn, 12, 4096, 0), BAD_INDEX, "REG_MR index = NUM_MR");
    expect_cmd(ctx, cmd::REG_MR, &mr_img(u64::from(a.mr.lkey() >> 8), pdn, 12, 4096, 0), BAD_STATE, "REG_MR on a valid MR");
    expect_cmd(ctx, cmd::REG_MR, &mr_img(free_mr, num_pd - 1, 12, 4096, 0), BAD_PARAM, "REG_MR with a free PD");
    expect_cmd(ctx, cmd::REG_MR, &mr_img(free_mr, num_pd, 12, 4096, 0), BAD_PARAM, "REG_MR pdn = NUM_PD");
    expect_cmd(ctx, cmd::REG_MR, &mr_img(free_mr, pdn, 11, 4096, 0), BAD_PARAM, "REG_MR log_page 11");
    expect_cmd(ctx, cmd::REG_MR, &mr_img(free_mr, pdn, 31, 4096, 0), BAD_PARAM, "REG_MR log_page 31");
    expect_cmd(ctx, cmd::REG_MR, &mr_img(free_mr, pdn, 12, 0, 0), BAD_PARAM, "REG_MR length 0");
    // iova 0x10000, 2 pages at mtt_base NUM_MTT - 1: one entry short.
    expect_cmd(ctx, cmd::REG_MR, &mr_img(free_mr, pdn, 12, 8192, num_mtt - 1), BAD_PARAM, "REG_MR pages past NUM_MTT");
    expect_cmd(ctx, cmd::DEREG_MR, &index_img(free_mr), BAD_STATE, "DEREG_MR of an MR never registered");
    expect_cmd(ctx, cmd::DEREG_MR, &index_img(num_mr), BAD_INDEX, "DEREG_MR index = NUM_MR");

    // CREATE_QP.
    let free_qp = num_qp - 1;
    let cqn = u64::from(a.cq.cqn());
    let qp_img = |qpn: u64, pdn: u64, send_cq: u64, log_sq: u64, log_rq: u64, sq_base: u64, rq_base: u64| {
        let mut b = img();
        cmd_create_qp::QPN.set(&mut b, qpn);
        cmd_create_qp::SQ_BASE.set(&mut b, sq_base);
        cmd_create_qp::RQ_BASE.set(&mut b, rq_base);
        cmd_create_qp::LOG_SQ_SIZE.set(&mut b, log_sq);
        cmd_create_qp::LOG_RQ_SIZE.set(&mut b, log_rq);
        cmd_create_qp::PDN.set(&mut b, pdn);
        cmd_create_qp::SEND_CQN.set(&mut b, send_cq);
        cmd_create_qp::RECV_CQN.set(&mut b, cqn);
        b
    };
    let good = |qpn| qp_img(qpn, pdn, cqn, 4, 4, 0x20000, 0x30000);
    expect_cmd(ctx, cmd::CREATE_QP, &good(0), BAD_INDEX, "CREATE_QP qpn 0");
    expect_cmd(ctx, cmd::CREATE_QP, &good(1), BAD_INDEX, "CREATE_QP qpn 1");
    expect_cmd(ctx, cmd::CREATE_QP, &good(num_qp), BAD_INDEX, "CREATE_QP qpn = NUM_QP");
    expect_cmd(ctx, cmd::CREATE_QP, &good(u64::from(a.qps[0].qpn())), BAD_STATE, "CREATE_QP on a valid QP");
    expect_cmd(ctx, cmd::CREATE_QP, &qp_img(free_qp, num_pd - 1, cqn, 4, 4, 0x20000, 0x30000), BAD_PARAM, "CREATE_QP free PD");
    expect_cmd(ctx, cmd::CREATE_QP, &qp_img(free_qp, pdn, free_cq, 4, 4, 0x20000, 0x30000), BAD_PARAM, "CREATE_QP free CQ");
    expect_cmd(ctx, cmd::CREATE_QP, &qp_img(free_qp, pdn, cqn, 0, 4, 0x20000, 0x30000), BAD_PARAM, "CREATE_QP log_sq_size 0");
    expect_cmd(ctx, cmd::CREATE_QP, &qp_img(free_qp, pdn, cqn, 16, 4, 0x20000, 0x30000), BAD_PARAM, "CREATE_QP log_sq_size 16");
    expect_cmd(ctx, cmd::CREATE_QP, &qp_img(free_qp, pdn, cqn, 4, 0, 0x20000, 0x30000), BAD_PARAM, "CREATE_QP log_rq_size 0");
    expect_cmd(ctx, cmd::CREATE_QP, &qp_img(free_qp, pdn, cqn, 4, 16, 0x20000, 0x30000), BAD_PARAM, "CREATE_QP log_rq_size 16");
    expect_cmd(ctx, cmd::CREATE_QP, &qp_img(free_qp, pdn, cqn, 4, 4, 0x20000 + 64, 0x30000), BAD_PARAM, "CREATE_QP sq_base % 128");
    expect_cmd(ctx, cmd::CREATE_QP, &qp_img(free_qp, pdn, cqn, 4, 4, 0x20000, 0x30000 + 32), BAD_PARAM, "CREATE_QP rq_base % 64");
    // None of them created the QP.
    expect_cmd(ctx, cmd::QUERY_QP, &index_img(free_qp), BAD_STATE, "QUERY_QP of a QP never created");
    expect_cmd(ctx, cmd::QUERY_QP, &index_img(num_qp), BAD_INDEX, "QUERY_QP qpn = NUM_QP");
    expect_cmd(ctx, cmd::DESTROY_QP, &index_img(free_qp), BAD_STATE, "DESTROY_QP of a QP never created");
    expect_cmd(ctx, cmd::DESTROY_QP, &index_img(num_qp), BAD_INDEX, "DESTROY_QP qpn = NUM_QP");

    // MODIFY_QP: index, validity, then the STATE bit of the mask.
    let modify = |qpn: u64, mask: u32, st: u8| {
        let mut b = img();
        cmd_qp_args::QPN.set(&mut b, qpn);
        cmd_qp_args::ATTR_MASK.set(&mut b, u64::from(mask));
        cmd_qp_args::STATE.set(&mut b, u64::from(st));
        b
    };
    expect_cmd(ctx, cmd::MODIFY_QP, &modify(num_qp, qp_attr::STATE, qp_state::ERR), BAD_INDEX, "MODIFY_QP qpn = NUM_QP");
    expect_cmd(ctx, cmd::MODIFY_QP, &modify(free_qp, qp_attr::STATE, qp_state::ERR), BAD_STATE, "MODIFY_QP of a free QP");
    let qa = u64::from(a.qps[0].qpn());
    expect_cmd(ctx, cmd::MODIFY_QP, &modify(qa, 0, qp_state::ERR), BAD_PARAM, "MODIFY_QP without the STATE bit");

    // The connected QP is untouched and still works; no MMIO or doorbell was bad.
    assert_eq!(state(&a.qps[0]), QpState::Rts);
    assert_counter_delta("NIC 0", &before, &counters(a), &[]);
    let data = pattern(22, 300);
    a.mr.write(0, &data).unwrap();
    p.b.qps[0].post_recv(&RecvWr { wr_id: 1, sgl: vec![sge(&p.b.mr, 0, 300)] }).unwrap();
    a.qps[0].post_send(&send(2, vec![sge(&a.mr, 0, 300)])).unwrap();
    assert_wc(&wait(a, 1)[0], 2, WcStatus::Success, WcOpcode::Send, a.qps[0].qpn(), 0);
    assert_wc(&wait(&p.b, 1)[0], 1, WcStatus::Success, WcOpcode::Recv, p.b.qps[0].qpn(), 0);
    assert_eq!(p.b.mr.read_vec(0, 300).unwrap(), data);
    settle(&p);
}

#[track_caller]
fn expect_rejected(qp: &QueuePair, attr: &QpAttr, want: CommandStatus, from: QpState) {
    match qp.modify_unchecked(attr) {
        Err(Error::TransitionRejected { qpn, from: f, to, status }) => {
            assert_eq!((qpn, f, to, status), (qp.qpn(), from, attr.state, want), "modify {attr:?}");
        }
        other => panic!("modify {attr:?}: expected TransitionRejected {want}, got {other:?}"),
    }
    // Checked completely before anything changed.
    assert_eq!(state(qp), from, "state after a rejected modify");
}

#[test]
fn invalid_qp_transitions_are_rejected_by_the_device() {
    let p = pair();
    let a = &p.a;
    let qp = a
        .pd
        .create_qp(&QpInitAttr { send_cq: &a.cq, recv_cq: &a.cq, max_send_wr: 8, max_recv_wr: 8 })
        .expect("create QP");
    let peer = &p.b.qps[0];
    let rtr = QpAttr::new(QpState::Rtr)
        .with_av(rnic_driver::AddressVector { dest_mac: nic_mac(1), dest_ip: nic_ip(1) })
        .with_path_mtu(Mtu::Mtu256)
        .with_dest_qpn(peer.qpn())
        .with_rq_psn(0x100)
        .with_max_dest_rd_atomic(4)
        .with_min_rnr_timer(12);
    let rts = QpAttr::new(QpState::Rts)
        .with_sq_psn(0x200)
        .with_timeout(14)
        .with_retry_cnt(7)
        .with_rnr_retry(7)
        .with_max_rd_atomic(4);
    let init = QpAttr::new(QpState::Init).with_pkey_index(0).with_port(1).with_access(AccessFlags::all());
    use CommandStatus::{BadParam, BadState};

    // From RESET: only INIT (and RESET/ERR) are transitions.
    expect_rejected(&qp, &rtr, BadState, QpState::Reset);
    expect_rejected(&qp, &rts, BadState, QpState::Reset);
    // Transition is checked before values: RESET -> RTR with a bad value is still BAD_STATE.
    expect_rejected(&qp, &rtr.with_max_dest_rd_atomic(17), BadState, QpState::Reset);
    // RESET -> INIT missing a required bit, or with a bit outside required ∪ optional.
    let mut no_access = init;
    no_access.access = None;
    expect_rejected(&qp, &no_access, BadParam, QpState::Reset);
    expect_rejected(&qp, &init.with_sq_psn(1), BadParam, QpState::Reset);
    // any -> RESET / ERR accept no other bit.
    expect_rejected(&qp, &QpAttr::new(QpState::Reset).with_access(AccessFlags::all()), BadParam, QpState::Reset);
    expect_rejected(&qp, &QpAttr::new(QpState::Err).with_timeout(1), BadParam, QpState::Reset);

    qp.modify_unchecked(&init).expect("RESET -> INIT");
    assert_eq!(state(&qp), QpState::Init);
    expect_rejected(&qp, &rts, BadState, QpState::Init);
    // INIT -> RTR value checks.
    expect_rejected(&qp, &rtr.with_max_dest_rd_atomic(17), BadParam, QpState::Init);
    let mut no_psn = rtr;
    no_psn.rq_psn = None;
    expect_rejected(&qp, &no_psn, BadParam, QpState::Init);

    qp.modify_unchecked(&rtr).expect("INIT -> RTR");
    assert_eq!(state(&qp), QpState::Rtr);
    expect_rejected(&qp, &init, BadState, QpState::Rtr);
    expect_rejected(&qp, &rts.with_max_rd_atomic(17), BadParam, QpState::Rtr);
    expect_rejected(&qp, &rts.with_path_mtu(Mtu::Mtu512), BadParam, QpState::Rtr);

    qp.modify_unchecked(&rts).expect("RTR -> RTS");
    let info = qp.query().unwrap();
    assert_eq!((info.state, info.sq_psn, info.rq_psn), (QpState::Rts, 0x200, 0x100));
    expect_rejected(&qp, &rtr, BadState, QpState::Rts);
    expect_rejected(&qp, &init, BadState, QpState::Rts);
    // RTS -> RTS only takes ACCESS_FLAGS and MIN_RNR_TIMER.
    expect_rejected(&qp, &QpAttr::new(QpState::Rts).with_sq_psn(5), BadParam, QpState::Rts);

    // INIT -> RTR with path_mtu 0 (not expressible through the typed API): raw image.
    qp.modify_unchecked(&QpAttr::new(QpState::Reset)).expect("-> RESET");
    qp.modify_unchecked(&init).expect("RESET -> INIT");
    let mut raw = rtr.encode(qp.qpn());
    cmd_qp_args::PATH_MTU.set(&mut raw, 0);
    expect_cmd(&a.ctx, cmd::MODIFY_QP, &raw, rnic_regs::cmd_status::BAD_PARAM, "INIT -> RTR path_mtu 0");
    cmd_qp_args::PATH_MTU.set(&mut raw, u64::from(rnic_regs::mtu::MTU_4096) + 1);
    expect_cmd(&a.ctx, cmd::MODIFY_QP, &raw, rnic_regs::cmd_status::BAD_PARAM, "INIT -> RTR path_mtu 6");
    assert_eq!(state(&qp), QpState::Init);
    settle(&p);
}

// ------------------------------------------------------------------------------------------
// Lossy link and the ported stress scenarios
// ------------------------------------------------------------------------------------------

/// Drops and duplicates frames from NIC 0 by their index (1-based).
struct Lossy {
    n: u64,
    drop: &'static [u64],
    dup: &'static [u64],
}

impl FaultHook for Lossy {
    fn on_frame(&mut self, from: usize, _to: usize, f: Vec<u8>) -> Vec<(u64, Vec<u8>)> {
        if from != 0 {
            return vec![(0, f)];
        }
        self.n += 1;
        if self.drop.contains(&self.n) {
            vec![]
        } else if self.dup.contains(&self.n) {
            vec![(0, f.clone()), (7, f)]
        } else {
            vec![(0, f)]
        }
    }
}

/// NIC 0's first send PSN in [`lossy_pair`].
const LOSSY_SQ_PSN_A: u32 = 0x10_0000;

/// Two NICs on a link with `hook`, one connected QP each (MTU 256, A sends from
/// [`LOSSY_SQ_PSN_A`], B from 0xFFFF00), returned as endpoints.
fn lossy_pair(hook: Box<dyn FaultHook>) -> (rnic_testbench::fabric::FabricRef, Vec<Endpoint>) {
    let o = opts();
    let fabric = Fabric::with_faults(o.fabric.clone(), hook).expect("fabric");
    let mut eps = Vec::new();
    for i in 0..2 {
        let ctx = Context::open(Fabric::device(&fabric, i, 0)).unwrap();
        ctx.set_port(nic_mac(i), nic_ip(i)).unwrap();
        let pd = ctx.alloc_pd().unwrap();
        let cq = ctx.create_cq(64).unwrap();
        let mr = pd.reg_mr(1 << 16, o.access).unwrap();
        let qp = pd.create_qp(&QpInitAttr { send_cq: &cq, recv_cq: &cq, max_send_wr: 64, max_recv_wr: 64 }).unwrap();
        eps.push(Endpoint { ctx, pd, cq, mr, qps: vec![qp] });
    }
    let (qa, qb) = (eps[0].qps[0].qpn(), eps[1].qps[0].qpn());
    for (i, (dest, rq, sq)) in [(qb, 0xFF_FF00u32, LOSSY_SQ_PSN_A), (qa, LOSSY_SQ_PSN_A, 0xFF_FF00)].into_iter().enumerate() {
        let qp = &eps[i].qps[0];
        qp.to_init(o.access).unwrap();
        qp.to_rtr(&RtrAttr { dest_qpn: dest, rq_psn: rq, path_mtu: o.mtu, dest_mac: nic_mac(1 - i), dest_ip: nic_ip(1 - i), max_dest_rd_atomic: 16, min_rnr_timer: 12 }).unwrap();
        qp.to_rts(&RtsAttr { sq_psn: sq, timeout: 14, retry_cnt: 7, rnr_retry: 7, max_rd_atomic: 16 }).unwrap();
    }
    (fabric, eps)
}

/// Drops / duplicates the FIRST transmission of frames from NIC 0 with the given BTH PSNs.
struct ByPsn {
    drop: Vec<u32>,
    dup: Vec<u32>,
    seen: std::collections::HashSet<u32>,
}

impl FaultHook for ByPsn {
    fn on_frame(&mut self, from: usize, _to: usize, f: Vec<u8>) -> Vec<(u64, Vec<u8>)> {
        let Some((_, _, psn)) = rnic_testbench::lockstep::bth_summary(&f) else { return vec![(0, f)] };
        if from != 0 || !self.seen.insert(psn) {
            return vec![(0, f)];
        }
        if self.drop.contains(&psn) {
            vec![]
        } else if self.dup.contains(&psn) {
            vec![(0, f.clone()), (7, f)]
        } else {
            vec![(0, f)]
        }
    }
}

/// A 2000-byte SEND (8 packets at MTU 256) and a 100-byte SEND from A to B over `hook`; both
/// must arrive exactly once, byte for byte. Returns B's (RX_DUP, RX_NAK_SENT) deltas.
fn two_sends_over(hook: ByPsn) -> (u64, u64) {
    let (fabric, eps) = lossy_pair(Box::new(hook));
    let (a, b) = (&eps[0], &eps[1]);
    let (qa, qb) = (&a.qps[0], &b.qps[0]);
    let a0 = fill(&a.mr, 32);
    let b0 = fill(&b.mr, 33);
    let cb = counters(b);
    qb.post_recv(&RecvWr { wr_id: 500, sgl: vec![sge(&b.mr, 10000, 4000)] }).unwrap();
    qb.post_recv(&RecvWr { wr_id: 501, sgl: vec![sge(&b.mr, 20000, 4000)] }).unwrap();
    qa.post_send_list(&[send(1, vec![sge(&a.mr, 0, 2000)]), send(2, vec![sge(&a.mr, 3000, 100)])]).unwrap();
    let wa = a.cq.wait(2, WAIT).unwrap_or_else(|e| panic!("NIC 0 completions: {e}"));
    let wb = b.cq.wait(2, WAIT).unwrap_or_else(|e| panic!("NIC 1 completions: {e}"));
    assert_wc(&wa[0], 1, WcStatus::Success, WcOpcode::Send, qa.qpn(), 0);
    assert_wc(&wa[1], 2, WcStatus::Success, WcOpcode::Send, qa.qpn(), 1);
    assert_wc(&wb[0], 500, WcStatus::Success, WcOpcode::Recv, qb.qpn(), 0);
    assert_wc(&wb[1], 501, WcStatus::Success, WcOpcode::Recv, qb.qpn(), 1);
    assert_eq!((wb[0].byte_len, wb[1].byte_len), (2000, 100));
    fabric.borrow_mut().run_cycles(20_000).unwrap();
    assert!(a.cq.poll_one().unwrap().is_none() && b.cq.poll_one().unwrap().is_none(), "a message was delivered twice");
    let mut b_want = b0.clone();
    b_want[10000..12000].copy_from_slice(&a0[0..2000]);
    b_want[20000..20100].copy_from_slice(&a0[3000..3100]);
    assert_mr(&b.mr, &b_want, "NIC 1 buffer");
    assert_mr(&a.mr, &a0, "NIC 0 buffer");
    assert_eq!((state(qa), state(qb)), (QpState::Rts, QpState::Rts));
    let after = counters(b);
    let delta = |idx: u32| {
        let get = |c: &[(&str, u32, u64)]| c.iter().find(|(_, i, _)| *i == idx).unwrap().2;
        get(&after) - get(&cb)
    };
    let r = (delta(counter::RX_DUP), delta(counter::RX_NAK_SENT));
    let mut f = fabric.borrow_mut();
    f.check_drained().unwrap_or_else(|e| panic!("{e}"));
    f.check_memories().unwrap_or_else(|e| panic!("{e}"));
    r
}

#[test]
fn dropped_request_is_recovered_with_exactly_one_psn_nak() {
    // PSN 2 of the first SEND is lost once: the next packet is ahead by one, B sends one
    // NAK_PSN_SEQ (nak_latch suppresses more), A goes back to PSN 2; nothing is a duplicate.
    let hook = ByPsn { drop: vec![LOSSY_SQ_PSN_A + 2], dup: vec![], seen: Default::default() };
    assert_eq!(two_sends_over(hook), (0, 1), "(RX_DUP, RX_NAK_SENT) on NIC 1");
}

#[test]
fn duplicated_request_counts_rx_dup_once_and_is_not_redelivered() {
    // PSN 5 of the first SEND arrives twice; the copy is behind rq_psn: RX_DUP, ACK, no NAK.
    let hook = ByPsn { drop: vec![], dup: vec![LOSSY_SQ_PSN_A + 5], seen: Default::default() };
    assert_eq!(two_sends_over(hook), (1, 0), "(RX_DUP, RX_NAK_SENT) on NIC 1");
}

#[test]
fn lossy_link_delivers_every_message_exactly_once() {
    // Ported from lockstep_scenarios.rs E, plus a duplicate of the very first frame (accepted
    // first, so its copy is certainly a duplicate).
    let (fabric, eps) = lossy_pair(Box::new(Lossy { n: 0, drop: &[3, 40], dup: &[1, 10, 25] }));
    let (qa, qb) = (eps[0].qps[0].qpn(), eps[1].qps[0].qpn());
    let (a, b) = (&eps[0], &eps[1]);
    let a0 = fill(&a.mr, 30);
    let b0 = fill(&b.mr, 31);
    let recv_at = [20000u64, 23000, 26000];
    for (k, off) in recv_at.iter().enumerate() {
        b.qps[0].post_recv(&RecvWr { wr_id: 500 + k as u64, sgl: vec![sge(&b.mr, *off, 2500)] }).unwrap();
    }
    let rk = b.mr.rkey();
    let wrs = vec![
        SendWr::new(1, WrOpcode::Send, vec![sge(&a.mr, 0, 2000)]),
        SendWr::new(2, WrOpcode::Write { remote_addr: b.mr.addr() + 100, rkey: rk }, vec![sge(&a.mr, 10, 2000)]),
        SendWr::new(3, WrOpcode::Read { remote_addr: b.mr.addr() + 5000, rkey: rk }, vec![sge(&a.mr, 30000, 2000)]),
        SendWr::new(4, WrOpcode::Send, vec![sge(&a.mr, 40000, 1500)]),
        SendWr::new(5, WrOpcode::Write { remote_addr: b.mr.addr() + 9000, rkey: rk }, vec![sge(&a.mr, 10, 2000)]),
        SendWr::new(6, WrOpcode::Send, vec![sge(&a.mr, 50, 2300)]),
    ];
    for w in &wrs {
        a.qps[0].post_send(w).unwrap();
    }
    let wa = a.cq.wait(6, WAIT).unwrap_or_else(|e| panic!("NIC 0 completions: {e}"));
    let wb = b.cq.wait(3, WAIT).unwrap_or_else(|e| panic!("NIC 1 completions: {e}"));
    let ops = [WcOpcode::Send, WcOpcode::RdmaWrite, WcOpcode::RdmaRead, WcOpcode::Send, WcOpcode::RdmaWrite, WcOpcode::Send];
    for (i, wc) in wa.iter().enumerate() {
        assert_wc(wc, i as u64 + 1, WcStatus::Success, ops[i], qa, i as u16);
        assert_eq!(wc.byte_len as u64, wrs[i].total_len(), "{wc:?}");
    }
    for (k, (wc, len)) in wb.iter().zip([2000u32, 1500, 2300]).enumerate() {
        assert_wc(wc, 500 + k as u64, WcStatus::Success, WcOpcode::Recv, qb, k as u16);
        assert_eq!(wc.byte_len, len, "{wc:?}");
    }
    fabric.borrow_mut().run_cycles(20_000).unwrap();
    assert!(a.cq.poll_one().unwrap().is_none() && b.cq.poll_one().unwrap().is_none(), "a message was delivered twice");
    // Every byte of both buffers: the five placements on B and the READ on A, nothing else.
    let mut b_want = b0.clone();
    b_want[20000..22000].copy_from_slice(&a0[0..2000]);
    b_want[100..2100].copy_from_slice(&a0[10..2010]);
    b_want[23000..24500].copy_from_slice(&a0[40000..41500]);
    b_want[9000..11000].copy_from_slice(&a0[10..2010]);
    b_want[26000..28300].copy_from_slice(&a0[50..2350]);
    let mut a_want = a0.clone();
    a_want[30000..32000].copy_from_slice(&b0[5000..7000]);
    assert_mr(&b.mr, &b_want, "NIC 1 buffer");
    assert_mr(&a.mr, &a_want, "NIC 0 buffer");
    assert!(checked(b, b.ctx.counter(counter::RX_DUP)) >= 1, "duplicated requests must count RX_DUP");
    assert!(checked(b, b.ctx.counter(counter::RX_NAK_SENT)) >= 1, "a dropped request must cause a PSN sequence NAK");
    let mut f = fabric.borrow_mut();
    f.check_drained().unwrap_or_else(|e| panic!("{e}"));
    f.check_memories().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn many_qps_multi_packet_writes_and_reads() {
    // Ported from lockstep_scenarios.rs D (PSN window, read limit, ring of active QPs), with
    // disjoint regions so every byte can be checked.
    let mut o = opts();
    o.qps = 4;
    o.mr_len = 1 << 18;
    let p = pair_with(&o);
    let (a, b) = (&p.a, &p.b);
    let a0 = fill(&a.mr, 40);
    let b0 = fill(&b.mr, 41);
    let n = 12u64;
    let len = 3000usize;
    let (mut a_want, mut b_want) = (a0.clone(), b0.clone());
    for i in 0..n {
        for (k, qa) in a.qps.iter().enumerate() {
            let off = (k as u64 * n + i) * len as u64;
            let r = off as usize..off as usize + len;
            let op = if i % 3 == 2 {
                a_want[r.clone()].copy_from_slice(&b0[r]);
                WrOpcode::Read { remote_addr: b.mr.addr() + off, rkey: b.mr.rkey() }
            } else {
                b_want[r.clone()].copy_from_slice(&a0[r]);
                WrOpcode::Write { remote_addr: b.mr.addr() + off, rkey: b.mr.rkey() }
            };
            qa.post_send(&SendWr::new(1000 + i, op, vec![sge(&a.mr, off, len as u32)])).unwrap();
        }
    }
    let w = wait(a, (n * 4) as usize);
    for (k, qa) in a.qps.iter().enumerate() {
        let mine: Vec<_> = w.iter().filter(|c| c.qpn == qa.qpn()).collect();
        assert_eq!(mine.len(), n as usize, "QP {k}");
        for (i, wc) in mine.iter().enumerate() {
            let op = if i % 3 == 2 { WcOpcode::RdmaRead } else { WcOpcode::RdmaWrite };
            assert_wc(wc, 1000 + i as u64, WcStatus::Success, op, qa.qpn(), i as u16);
            assert_eq!(wc.byte_len as usize, len);
        }
    }
    assert_mr(&a.mr, &a_want, "NIC 0 buffer");
    assert_mr(&b.mr, &b_want, "NIC 1 buffer");
    settle(&p);
}

#[test]
fn every_verb_on_scrambled_pages_mtu4096_and_512() {
    // Ported from lockstep_scenarios.rs F.
    for (mtu, len) in [(Mtu::Mtu4096, 9000usize), (Mtu::Mtu512, 3333)] {
        let mut o = opts();
        o.mtu = mtu;
        o.scrambled = true;
        let p = pair_with(&o);
        rnic_testbench::scenarios::every_verb(&p, len, &mut |_| {}).unwrap_or_else(|e| panic!("{mtu:?}: {e}"));
        settle(&p);
    }
}

#[test]
fn psn_wrap_long_send_unsignaled_writes_solicited_imm() {
    // Ported from lockstep_scenarios.rs G: B -> A with B's send PSN starting at 0xFFFF00, a
    // 157-packet SEND, unsignaled WRITEs completed by a later signaled one, solicited SEND+imm.
    let mut o = opts();
    o.mr_len = 1 << 17;
    let p = pair_with(&o);
    let (a, b) = (&p.a, &p.b);
    let (qa, qb) = (&a.qps[0], &b.qps[0]);
    let a0 = fill(&a.mr, 50);
    let b0 = fill(&b.mr, 51);
    qa.post_recv(&RecvWr { wr_id: 900, sgl: vec![sge(&a.mr, 0, 40000)] }).unwrap();
    qa.post_recv(&RecvWr { wr_id: 901, sgl: vec![sge(&a.mr, 50000, 100)] }).unwrap();
    qb.post_send(&send(10, vec![sge(&b.mr, 0, 40000)])).unwrap();
    for k in 0..3u64 {
        let w = SendWr::new(
            20 + k,
            WrOpcode::Write { remote_addr: a.mr.addr() + 60000 + 1000 * k, rkey: a.mr.rkey() },
            vec![sge(&b.mr, 100 * k, 700)],
        )
        .with_signaled(k == 2);
        qb.post_send(&w).unwrap();
    }
    qb.post_send(&SendWr::new(30, WrOpcode::SendWithImm(0x5a5a), vec![sge(&b.mr, 0, 50)]).with_solicited(true)).unwrap();
    let wb = wait(b, 3);
    let wa = wait(a, 2);
    assert_wc(&wb[0], 10, WcStatus::Success, WcOpcode::Send, qb.qpn(), 0);
    assert_eq!(wb[0].byte_len, 40000);
    assert_wc(&wb[1], 22, WcStatus::Success, WcOpcode::RdmaWrite, qb.qpn(), 3);
    assert_wc(&wb[2], 30, WcStatus::Success, WcOpcode::Send, qb.qpn(), 4);
    assert_wc(&wa[0], 900, WcStatus::Success, WcOpcode::Recv, qa.qpn(), 0);
    assert_eq!((wa[0].byte_len, wa[0].imm), (40000, None));
    assert_wc(&wa[1], 901, WcStatus::Success, WcOpcode::Recv, qa.qpn(), 1);
    assert_eq!((wa[1].byte_len, wa[1].imm), (50, Some(0x5a5a)));
    let mut a_want = a0.clone();
    a_want[0..40000].copy_from_slice(&b0[0..40000]);
    for k in 0..3usize {
        let dst = 60000 + 1000 * k;
        a_want[dst..dst + 700].copy_from_slice(&b0[100 * k..100 * k + 700]);
    }
    a_want[50000..50050].copy_from_slice(&b0[0..50]);
    assert_mr(&a.mr, &a_want, "NIC 0 buffer");
    assert_mr(&b.mr, &b0, "NIC 1 buffer");
    // 0xFFFF00 + 157 + 3*3 + 1 packets wrapped past 0xFFFFFF.
    let mtu = Mtu::Mtu256.bytes() as u32;
    let pkts = 40000u32.div_ceil(mtu) + 3 * 700u32.div_ceil(mtu) + 1;
    let info = qb.query().unwrap();
    assert_eq!(info.sq_psn, (0xFF_FF00 + pkts) & 0xFF_FFFF, "{info:?}");
    assert_eq!(qa.query().unwrap().rq_psn, info.sq_psn);
    settle(&p);
}

// ------------------------------------------------------------------------------------------
// The checker itself can fail
// ------------------------------------------------------------------------------------------

const CQ_LOG: u64 = 2;
const QPN: u32 = 2;

/// A checker whose model has flushed one SEND WQE (wr_id 0xC0DE) on QP 2 in ERR and predicts
/// its CQE. Returns the checker, the CQ base, the cycle of the last event, and the CQE the
/// contract prescribes.
fn checker_with_predicted_cqe() -> (Checker<HostMem>, u64, u64, [u8; cqe::SIZE]) {
    let mut mem = HostMem::new(1 << 20).expect("host memory");
    let cq_base = mem.alloc((cqe::SIZE as u64) << CQ_LOG, 4096).unwrap();
    let sq_base = mem.alloc(send_wqe::SIZE as u64 * 2, 4096).unwrap();
    let rq_base = mem.alloc(64 * 2, 4096).unwrap();
    let mut wqe = [0u8; send_wqe::SIZE];
    send_wqe::WR_ID.set(&mut wqe, 0xC0DE);
    send_wqe::OPCODE.set(&mut wqe, u64::from(wr_opcode::SEND));
    mem.write_bytes(sq_base, &wqe).unwrap();
    let mut chk = Checker::new(0, Nic::new(NicConfig::default()), mem);
    let mut cycle = 100;
    let mut ev = |chk: &mut Checker<HostMem>, e: Observed| {
        cycle += 10;
        chk.step(cycle, &e).unwrap_or_else(|m| panic!("setup event {e:?}: {m}"));
    };
    let command = |chk: &mut Checker<HostMem>, ev: &mut dyn FnMut(&mut Checker<HostMem>, Observed), op: u8, img: &CmdImage| {
        for (i, c) in img.chunks_exact(8).enumerate() {
            let value = u64::from_le_bytes(c.try_into().unwrap());
            ev(chk, Observed::MmioWrite { func: 0, offset: reg::CMD_ARG0 + 8 * i as u64, value });
        }
        ev(chk, Observed::MmioWrite { func: 0, offset: reg::CMD_OP, value: u64::from(op) });
        ev(chk, Observed::Task { kind: trace::CMD, qpn: 0, func: 0 });
        assert_eq!(chk.model.mmio_read(0, reg::CMD_STATUS), u64::from(rnic_regs::cmd_status::OK), "command {op:#x}");
    };
    command(&mut chk, &mut ev, cmd::ALLOC_PD, &index_img(0));
    let mut b = img();
    cmd_create_cq::CQN.set(&mut b, 0);
    cmd_create_cq::BASE.set(&mut b, cq_base);
    cmd_create_cq::LOG_SIZE.set(&mut b, CQ_LOG);
    command(&mut chk, &mut ev, cmd::CREATE_CQ, &b);
    let mut b = img();
    cmd_create_qp::QPN.set(&mut b, u64::from(QPN));
    cmd_create_qp::SQ_BASE.set(&mut b, sq_base);
    cmd_create_qp::RQ_BASE.set(&mut b, rq_base);
    cmd_create_qp::LOG_SQ_SIZE.set(&mut b, 1);
    cmd_create_qp::LOG_RQ_SIZE.set(&mut b, 1);
    command(&mut chk, &mut ev, cmd::CREATE_QP, &b);
    let mut b = img();
    cmd_qp_args::QPN.set(&mut b, u64::from(QPN));
    cmd_qp_args::ATTR_MASK.set(&mut b, u64::from(qp_attr::STATE));
    cmd_qp_args::STATE.set(&mut b, u64::from(qp_state::ERR));
    command(&mut chk, &mut ev, cmd::MODIFY_QP, &b);
    ev(&mut chk, Observed::MmioWrite { func: 0, offset: Context::qp_doorbell(QPN) + params::DB_SQ_PI, value: 1 });
    ev(&mut chk, Observed::Task { kind: trace::DB, qpn: 0, func: 0 });
    ev(&mut chk, Observed::Task { kind: trace::FLUSH_SQ, qpn: QPN, func: 0 });
    assert_eq!(chk.pending(), 1, "the model must predict exactly the flush CQE");
    // Contract 11: FLUSH_SQ CQE, first entry of the CQ (owner = ((0 >> log) & 1) ^ 1 = 1).
    let mut want = [0u8; cqe::SIZE];
    cqe::WR_ID.set(&mut want, 0xC0DE);
    cqe::QPN.set(&mut want, u64::from(QPN));
    cqe::OPCODE.set(&mut want, u64::from(wc_opcode::SEND));
    cqe::STATUS.set(&mut want, u64::from(wc_status::WR_FLUSH_ERR));
    cqe::OWNER.set(&mut want, 1);
    (chk, cq_base, cycle, want)
}

#[test]
fn checker_accepts_the_contract_cqe() {
    let (mut chk, base, cycle, want) = checker_with_predicted_cqe();
    chk.step(cycle + 5, &Observed::DmaWrite { func: 0, addr: base, data: want.to_vec() })
        .unwrap_or_else(|m| panic!("the CQE the contract prescribes was rejected:\n{m}"));
    assert_eq!(chk.pending(), 0);
    chk.check_drained(cycle + 6).unwrap_or_else(|m| panic!("{m}"));
}

#[test]
fn checker_reports_a_flipped_byte_in_a_dma_write() {
    let (mut chk, base, cycle, want) = checker_with_predicted_cqe();
    let mut bad = want;
    let at = cqe::STATUS.byte();
    bad[at] ^= 0x01;
    let m = chk
        .step(cycle + 5, &Observed::DmaWrite { func: 0, addr: base, data: bad.to_vec() })
        .expect_err("a flipped CQE byte must be a mismatch");
    assert_eq!((m.stream, m.cycle, m.nic), (Stream::DmaWrite, cycle + 5, 0));
    let text = m.to_string();
    for needle in [
        format!("LOCKSTEP MISMATCH at cycle {}", cycle + 5),
        "DmaWrite".to_string(),
        format!("expected (model): DMA write fn 0 at {base:#x}, 32 bytes"),
        format!("actual   (RTL)  : DMA write fn 0 at {base:#x}, 32 bytes"),
        format!("first difference at byte {at}"),
    ] {
        assert!(text.contains(&needle), "report lacks `{needle}`:\n{text}");
    }
}

#[test]
fn checker_reports_a_dma_write_to_the_wrong_address_and_a_missing_one() {
    let (mut chk, base, cycle, want) = checker_with_predicted_cqe();
    let m = chk
        .step(cycle + 5, &Observed::DmaWrite { func: 0, addr: base + 32, data: want.to_vec() })
        .expect_err("a CQE at the wrong slot must be a mismatch");
    assert_eq!(m.stream, Stream::DmaWrite);
    assert!(m.to_string().contains(&format!("at {:#x}", base + 32)), "{m}");
    // A fresh checker whose prediction never comes.
    let (chk, _, cycle, _) = checker_with_predicted_cqe();
    let m = chk.check_drained(cycle + 1000).expect_err("a missing CQE must be reported");
    assert_eq!(m.stream, Stream::Missing);
    assert!(m.to_string().contains("RTL went quiet without writing it"), "{m}");
}

#[test]
fn checker_reports_unpredicted_outputs() {
    let (mut chk, _, cycle, _) = checker_with_predicted_cqe();
    // A frame nobody predicted (any bytes: the model predicted no frame at all).
    let frame = pattern(60, 80);
    let m = chk.step(cycle + 7, &Observed::TxFrame { bytes: frame, local: false }).expect_err("an unpredicted frame");
    assert_eq!((m.stream, m.cycle), (Stream::Frame, cycle + 7));
    let text = m.to_string();
    assert!(text.contains(&format!("at cycle {}", cycle + 7)) && text.contains("Frame"), "{text}");
    assert!(text.contains("expected (model): no frame") && text.contains("actual   (RTL)  : frame 80 bytes"), "{text}");

    // A DMA write with nothing predicted.
    let mut chk = Checker::new(1, Nic::new(NicConfig::default()), HostMem::new(1 << 16).unwrap());
    let m = chk
        .step(42, &Observed::DmaWrite { func: 0, addr: 0x1000, data: vec![1, 2, 3] })
        .expect_err("an unpredicted DMA write");
    assert_eq!((m.stream, m.cycle, m.nic), (Stream::DmaWrite, 42, 1));
    let text = m.to_string();
    assert!(text.contains("at cycle 42 on NIC 1") && text.contains("expected (model): no DMA write"), "{text}");
    assert!(text.contains("DMA write fn 0 at 0x1000, 3 bytes"), "{text}");

    // An MMIO read value the model does not agree with.
    let m = chk
        .step(43, &Observed::MmioRead { func: 0, offset: reg::DEV_ID, value: reg::DEV_ID_RESET ^ 1 })
        .expect_err("a wrong DEV_ID");
    assert_eq!(m.stream, Stream::MmioRead);
    assert!(m.to_string().contains(&format!("[{:#x}] = {:#x}", reg::DEV_ID, reg::DEV_ID_RESET)), "{m}");
}


#[test]
fn inline_payload_longer_than_max_inline_is_loc_len_err() {
    local_error(
        |_| {
            let mut w = encode_send_wqe(&SendWr::inline(1, WrOpcode::Send, &[7; 64]));
            send_wqe::INLINE_LEN.set(&mut w, params::MAX_INLINE + 1);
            w
        },
        WcStatus::LocLenErr,
        WcOpcode::Send,
    );
}

#[test]
fn inline_flag_on_a_read_is_loc_qp_op_err() {
    local_error(
        |p| {
            let mut w = raw_send(1, &[sge(&p.a.mr, 0, 64)]);
            send_wqe::OPCODE.set(&mut w, u64::from(wr_opcode::RDMA_READ));
            let f = send_wqe::FLAGS.get(&w) | u64::from(rnic_regs::wqe_flag::INLINE);
            send_wqe::FLAGS.set(&mut w, f);
            w
        },
        WcStatus::LocQpOpErr,
        WcOpcode::RdmaRead,
    );
}
