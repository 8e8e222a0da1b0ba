// SPDX-License-Identifier: Apache-2.0
//! Random workloads under random link faults (drop, duplicate, reorder, corrupt, delay from the
//! seeded [`FaultModel`]), in `Backend::Lockstep`, checking exactly-once, in-order delivery:
//!
//! * every SEND carries (sender, QP, sequence number) in its first bytes; each receiver must see
//!   the sequence numbers of each QP exactly once, in order, with the right bytes (nothing
//!   skipped, nothing delivered twice);
//! * every successful WRITE's bytes are in the target slot when it completes, and at the end
//!   every WRITE slot holds the last WRITE to it (a stale retransmission placed late would show);
//! * every successful READ returns the source bytes;
//! * FETCH_ADDs on a per-QP word return exactly the running sum in order and the word ends at
//!   the total (a duplicate executed twice would show);
//! * every WQE completes successfully (retry_cnt 7, RNR never happens: receives are posted
//!   before the SENDs), and the fabric settles with identical host memories.
//!
//! Goodput = payload bytes of successful completions / modeled cycles (and Gb/s at the nominal
//! 250 MHz: 1 byte/cycle = 2 Gb/s) is printed per run.
//!
//! `RNIC_SEED` replays the proptest cases; `RNIC_CASES` sets their number (default 4).
//!
//! Atomics: the responder keeps the results of the last `ATOM_HIST` atomics (contract section 9),
//! so a lost ATOMIC_ACK of an atomic is answered from its saved result even after later atomics of
//! the same QP executed. This suite first found that a single saved result was not enough
//! (`conformance::lost_atomic_ack_with_a_second_atomic_executed_is_recovered` is the regression
//! case); `three_thousand_...` still keeps one FETCH_ADD outstanding per QP and direction, and
//! `ten_percent_faults_with_concurrent_atomics` runs the full mix.

use std::collections::HashMap;
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use rnic_driver::{Mtu, RecvWr, SendWr, WcOpcode, WcStatus, WorkCompletion, WrOpcode};
use rnic_regs::counter;
use rnic_testbench::craft::{pair_with, QpCfg, Tap, WireLog};
use rnic_testbench::faults::{FaultHandle, FaultKind, FaultModel, FaultRates, SplitMix64};
use rnic_testbench::harness::{Endpoint, Pair};
use rnic_testbench::scenarios::pattern;

const QPS: usize = 2;
/// Send WQEs outstanding per QP per side.
const DEPTH: u32 = 8;
const SLOT: u64 = 4096;
/// Per-QP region: SEND sources (8), WRITE sources (8), receive slots (16), WRITE targets (8),
/// READ landing slots (8).
const Q_SRC: u64 = 0;
const Q_WSRC: u64 = 8 * SLOT;
const Q_RECV: u64 = 16 * SLOT;
const Q_WDST: u64 = 32 * SLOT;
const Q_RDST: u64 = 40 * SLOT;
/// FETCH_ADD results (64 x 8 bytes).
const Q_FADD: u64 = 48 * SLOT;
const Q_LEN: u64 = 49 * SLOT;
/// READ source (static) and atomic words, after the QP regions.
const RD_SRC: u64 = QPS as u64 * Q_LEN;
const RD_LEN: u64 = 32 << 10;
const ATOM: u64 = RD_SRC + RD_LEN;
const MR_LEN: u64 = ATOM + 4096;

const T_SEND: u64 = 1 << 56;
const T_WRITE: u64 = 2 << 56;
const T_READ: u64 = 3 << 56;
const T_FADD: u64 = 4 << 56;
const T_RECV: u64 = 5 << 56;
const TAG: u64 = 0xFF << 56;

/// What one run measured.
#[derive(Debug, Clone, Copy, Default)]
struct Report {
    messages: u64,
    bytes: u64,
    cycles: u64,
    faults: u64,
    frames: u64,
    wall: f64,
    ack_timeouts: u64,
    naks: u64,
    dups: u64,
    /// Times a QP pair ended in RETRY_EXC_ERR (then moved to ERR, flushed and reconnected).
    dead_pairs: u64,
}

impl Report {
    fn bytes_per_cycle(&self) -> f64 {
        self.bytes as f64 / self.cycles.max(1) as f64
    }
    fn gbps(&self) -> f64 {
        // 250 MHz: 4 ns per cycle; Gb/s = bits / ns.
        self.bytes as f64 * 8.0 / (self.cycles.max(1) as f64 * 4.0)
    }
}

/// Per-direction, per-QP state of the requester `x` on QP `k` (and of its peer's receives).
#[derive(Default)]
struct Flow {
    send_seq: u64,
    recv_seq: u64,
    recvs_posted: u64,
    writes: u64,
    reads: u64,
    fadds: u64,
    fadd_done: u64,
    sends: HashMap<u64, Vec<u8>>,
    write_data: HashMap<u64, (u64, Vec<u8>)>,
    read_data: HashMap<u64, (u64, Vec<u8>)>,
    /// Last WRITE data per target slot, for the final check.
    slot_last: HashMap<u64, Vec<u8>>,
    outstanding: u32,
    recv_flushed: u64,
}

struct Work {
    p: Pair,
    wire: WireLog,
    faults: FaultHandle,
    rng: SplitMix64,
    seed: u64,
    rates: FaultRates,
    flows: Vec<Flow>, // index x * QPS + k
    bytes: u64,
    done: u64,
    posted: u64,
    mix: [u64; 4],
    max_len: u64,
    /// At most one FETCH_ADD outstanding per QP and direction (the original workaround; see the
    /// module docs).
    one_atomic: bool,
    /// QP pairs that ended in RETRY_EXC_ERR (moved to ERR, being flushed).
    dead: [bool; QPS],
    /// How many times a pair died and was reconnected.
    revived: u64,
    cfg: QpCfg,
}

impl Work {
    fn ep(&self, x: usize) -> &Endpoint {
        if x == 0 { &self.p.a } else { &self.p.b }
    }
    fn f(&mut self, x: usize, k: usize) -> &mut Flow {
        &mut self.flows[x * QPS + k]
    }
    #[track_caller]
    fn fail(&self, msg: String) -> ! {
        let log = self.faults.borrow();
        let tail: Vec<String> = log.log.0.iter().rev().take(20).map(ToString::to_string).collect();
        self.dump_wire();
        panic!(
            "seed {:#x}, rates {:?}: {msg}\n(replay: RNIC_SEED={:#x}; last faults, newest first:\n  {})",
            self.seed,
            self.rates,
            self.seed,
            tail.join("\n  ")
        )
    }
    fn cycle(&self) -> u64 {
        self.p.fabric.borrow().cycle()
    }
    /// With `RNIC_WIRE_DUMP` set: the last 400 frames on the link, to stderr.
    fn dump_wire(&self) {
        if std::env::var_os("RNIC_WIRE_DUMP").is_some() {
            let w = self.wire.borrow();
            for f in w.iter().rev().take(400).rev() {
                let (o, q, p) = f.bth();
                eprintln!("  #{} {}->{} op {o:#04x} qp {q:#x} psn {p:#08x} syn {:?} len {} copies {}{}", f.index, f.from, f.from ^ 1, f.syndrome(), f.payload_len(), f.copies, if f.altered { " altered" } else { "" });
            }
        }
    }
    fn region(k: usize) -> u64 {
        k as u64 * Q_LEN
    }

    /// Post one random op from `x` on QP `k` if the QP has room.
    fn post(&mut self, x: usize, k: usize) -> bool {
        if self.dead[k] || self.flows[x * QPS + k].outstanding >= DEPTH {
            return false;
        }
        let y = x ^ 1;
        let base = Work::region(k);
        let kind = self.rng.range(0, 99);
        let mut kind = if kind < 45 { 0 } else if kind < 75 { 1 } else if kind < 92 { 2 } else { 3 };
        let f = &self.flows[x * QPS + k];
        if kind == 3 && self.one_atomic && f.fadds > f.fadd_done {
            kind = 1;
        }
        let (wr, what) = match kind {
            0 => {
                // SEND: (x, k, seq) then a pattern; the peer's receive is posted first.
                let fl = &self.flows[y * QPS + k];
                if fl.recvs_posted - fl.recv_seq >= 16 {
                    return false;
                }
                let r = fl.recvs_posted;
                let rslot = base + Q_RECV + (r % 16) * SLOT;
                let rwr = RecvWr { wr_id: T_RECV | r, sgl: vec![self.ep(y).mr.sge(rslot, SLOT as u32).unwrap()] };
                self.ep(y).qps[k].post_recv(&rwr).unwrap_or_else(|e| self.fail(format!("post_recv: {e}")));
                self.f(y, k).recvs_posted += 1;
                let seq = self.flows[x * QPS + k].send_seq;
                let len = self.rng.range(16, self.max_len) as usize;
                let mut data = pattern(self.seed ^ (seq << 12) ^ ((x * QPS + k) as u64), len);
                data[..8].copy_from_slice(&seq.to_le_bytes());
                data[8] = x as u8;
                data[9] = k as u8;
                let src = base + Q_SRC + (seq % 8) * SLOT;
                self.ep(x).mr.write(src, &data).unwrap();
                let wr = SendWr::new(T_SEND | seq, WrOpcode::Send, vec![self.ep(x).mr.sge(src, len as u32).unwrap()]);
                let f = self.f(x, k);
                f.sends.insert(seq, data);
                f.send_seq += 1;
                (wr, len as u64)
            }
            1 => {
                let n = self.flows[x * QPS + k].writes;
                let len = self.rng.range(0, self.max_len) as usize;
                let data = pattern(self.seed ^ 0x5757 ^ (n << 12) ^ ((x * QPS + k) as u64), len);
                let src = base + Q_WSRC + (n % 8) * SLOT;
                self.ep(x).mr.write(src, &data).unwrap();
                let dst = base + Q_WDST + (n % 8) * SLOT;
                let wr_id = T_WRITE | n;
                let wr = SendWr::new(
                    wr_id,
                    WrOpcode::Write { remote_addr: self.ep(y).mr.addr() + dst, rkey: self.ep(y).mr.rkey() },
                    vec![self.ep(x).mr.sge(src, len as u32).unwrap()],
                );
                let f = self.f(x, k);
                f.write_data.insert(wr_id, (dst, data.clone()));
                f.slot_last.insert(dst, data);
                f.writes += 1;
                (wr, len as u64)
            }
            2 => {
                let n = self.flows[x * QPS + k].reads;
                let len = self.rng.range(1, self.max_len.min(RD_LEN)) as usize;
                let off = self.rng.range(0, RD_LEN - len as u64);
                let dst = base + Q_RDST + (n % 8) * SLOT;
                let want = pattern(0xBEEF ^ y as u64, RD_LEN as usize)[off as usize..off as usize + len].to_vec();
                let wr_id = T_READ | n;
                let wr = SendWr::new(
                    wr_id,
                    WrOpcode::Read { remote_addr: self.ep(y).mr.addr() + RD_SRC + off, rkey: self.ep(y).mr.rkey() },
                    vec![self.ep(x).mr.sge(dst, len as u32).unwrap()],
                );
                let f = self.f(x, k);
                f.read_data.insert(wr_id, (dst, want));
                f.reads += 1;
                (wr, len as u64)
            }
            _ => {
                // FETCH_ADD of (n + 1) on the peer's word for (x, k); result into a per-n slot.
                let n = self.flows[x * QPS + k].fadds;
                let word = ATOM + ((x * QPS + k) as u64) * 8;
                let res = base + Q_FADD + 8 * (n % 64);
                let wr = SendWr::new(
                    T_FADD | n,
                    WrOpcode::FetchAdd { remote_addr: self.ep(y).mr.addr() + word, rkey: self.ep(y).mr.rkey(), add: n + 1 },
                    vec![self.ep(x).mr.sge(res, 8).unwrap()],
                );
                self.f(x, k).fadds += 1;
                (wr, 8)
            }
        };
        let _ = what;
        self.mix[kind] += 1;
        if let Err(e) = self.ep(x).qps[k].post_send(&wr) {
            self.fail(format!("post_send: {e}"));
        }
        self.f(x, k).outstanding += 1;
        self.posted += 1;
        true
    }

    fn complete(&mut self, x: usize, wc: &WorkCompletion) {
        let k = (0..QPS).find(|&k| self.ep(x).qps[k].qpn() == wc.qpn).unwrap_or_else(|| self.fail(format!("{wc:?}")));
        let n = wc.wr_id & !TAG;
        let y = x ^ 1;
        if wc.status != WcStatus::Success {
            // The only legal error under link faults is RETRY_EXC_ERR (retries exhausted); the
            // pair is then moved to ERR on both sides and everything else on it is flushed.
            // Data delivered before that must still be exactly once and in order.
            match wc.status {
                WcStatus::RetryExcErr if !self.dead[k] => {
                    println!("NIC {x} QP{k}: retries exhausted: {wc:?} (the pair is moved to ERR and flushed)");
                    self.dump_wire();
                    self.dead[k] = true;
                    for z in 0..2 {
                        if let Err(e) = self.ep(z).qps[k].to_err() {
                            self.fail(format!("to_err: {e}"));
                        }
                    }
                }
                WcStatus::RetryExcErr | WcStatus::WrFlushErr if self.dead[k] => {}
                _ => self.fail(format!("NIC {x} QP{k}: error completion {wc:?}")),
            }
            let f = self.f(x, k);
            if wc.wr_id & TAG == T_RECV {
                f.recv_flushed += 1;
            } else {
                f.outstanding -= 1;
                f.write_data.remove(&wc.wr_id);
                f.read_data.remove(&wc.wr_id);
            }
            return;
        }
        match wc.wr_id & TAG {
            T_SEND => {
                self.f(x, k).outstanding -= 1;
                self.done += 1;
            }
            T_WRITE => {
                let (dst, data) = self.f(x, k).write_data.remove(&wc.wr_id).unwrap_or_else(|| self.fail(format!("{wc:?}")));
                let got = self.ep(y).mr.read_vec(dst, data.len()).unwrap();
                if got != data {
                    self.fail(format!("NIC {x} QP{k}: WRITE {n} completed but NIC {y} slot {dst:#x} holds other bytes"));
                }
                self.bytes += data.len() as u64;
                self.f(x, k).outstanding -= 1;
                self.done += 1;
            }
            T_READ => {
                let (dst, want) = self.f(x, k).read_data.remove(&wc.wr_id).unwrap_or_else(|| self.fail(format!("{wc:?}")));
                let got = self.ep(x).mr.read_vec(dst, want.len()).unwrap();
                if wc.byte_len as usize != want.len() || got != want {
                    self.fail(format!("NIC {x} QP{k}: READ {n} returned wrong bytes ({wc:?})"));
                }
                self.bytes += want.len() as u64;
                self.f(x, k).outstanding -= 1;
                self.done += 1;
            }
            T_FADD => {
                let base = Work::region(k);
                let res = base + Q_FADD + 8 * (n % 64);
                let got = u64::from_le_bytes(self.ep(x).mr.read_vec(res, 8).unwrap().try_into().unwrap());
                let f = self.f(x, k);
                // Executed in order, exactly once: the word held sum(1..=n) before this one.
                let want = n * (n + 1) / 2;
                if f.fadd_done != n || got != want {
                    let done = f.fadd_done;
                    self.fail(format!("NIC {x} QP{k}: FETCH_ADD {n} (after {done}) returned {got}, want {want} (executed twice or skipped?)"));
                }
                f.fadd_done += 1;
                f.outstanding -= 1;
                self.bytes += 8;
                self.done += 1;
            }
            T_RECV => {
                // A receive on x for a SEND from y on QP k.
                let seq = self.flows[x * QPS + k].recv_seq;
                let data = self.f(y, k).sends.remove(&seq).unwrap_or_else(|| self.fail(format!("NIC {x} QP{k}: receive {wc:?} but SEND {seq} from NIC {y} is unknown")));
                let slot = Work::region(k) + Q_RECV + (n % 16) * SLOT;
                let got = self.ep(x).mr.read_vec(slot, wc.byte_len as usize).unwrap();
                if n != seq || got != data || wc.opcode != WcOpcode::Recv {
                    let got_seq = got.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
                    self.fail(format!(
                        "NIC {x} QP{k}: receive {n} has {} bytes with sequence {got_seq:?}, want SEND {seq} of {} bytes (skipped, duplicated or corrupted)",
                        wc.byte_len,
                        data.len()
                    ));
                }
                self.bytes += data.len() as u64;
                self.f(x, k).recv_seq += 1;
            }
            _ => self.fail(format!("NIC {x}: unknown completion {wc:?}")),
        }
    }

    fn poll(&mut self) -> usize {
        let mut total = 0;
        for x in 0..2 {
            loop {
                let mut buf = [WorkCompletion::default(); 64];
                let n = self.ep(x).cq.poll(&mut buf).unwrap_or_else(|e| self.fail(format!("poll: {e}")));
                for wc in &buf[..n] {
                    self.complete(x, wc);
                }
                total += n;
                if n < buf.len() {
                    break;
                }
            }
        }
        total
    }

    /// A pair that ran out of retries, once everything on it is flushed, is reset and
    /// reconnected with fresh PSNs (as an application would), and its bookkeeping restarts.
    fn revive(&mut self) {
        for k in 0..QPS {
            let drained = (0..2).all(|x| {
                let f = &self.flows[x * QPS + k];
                f.outstanding == 0 && f.recvs_posted == f.recv_seq + f.recv_flushed
            });
            if !self.dead[k] || !drained {
                continue;
            }
            let mut cfg = self.cfg.clone();
            cfg.psn_a = self.rng.next_u64() as u32 & 0xFF_FFFF;
            cfg.psn_b = self.rng.next_u64() as u32 & 0xFF_FFFF;
            for x in 0..2 {
                if let Err(e) = self.ep(x).qps[k].reset() {
                    self.fail(format!("reset: {e}"));
                }
            }
            for x in 0..2 {
                let dest = self.ep(x ^ 1).qps[k].qpn();
                if let Err(e) = cfg.connect(&self.ep(x).qps[k], x, k, dest) {
                    self.fail(format!("reconnect: {e}"));
                }
                // The peer's atomic word for this direction starts again from 0.
                let word = ATOM + ((x * QPS + k) as u64) * 8;
                self.ep(x ^ 1).mr.write(word, &[0; 8]).unwrap();
                self.flows[x * QPS + k] = Flow::default();
            }
            self.dead[k] = false;
            self.revived += 1;
        }
    }

    fn outstanding(&self) -> u32 {
        self.flows.iter().map(|f| f.outstanding + (f.recvs_posted - f.recv_seq - f.recv_flushed) as u32).sum()
    }

    fn counter_sum(&self, idx: u32) -> u64 {
        (0..2).map(|x| self.ep(x).ctx.counter(idx)).sum()
    }
}

/// Run `messages` random ops (both directions, QPS QP pairs) with `rates`, seeded by `seed`.
fn run(seed: u64, messages: u64, rates: FaultRates, mtu: Mtu, max_len: u64) -> Report {
    run_with(seed, messages, rates, mtu, max_len, true)
}

fn run_with(seed: u64, messages: u64, rates: FaultRates, mtu: Mtu, max_len: u64, one_atomic: bool) -> Report {
    let wall = Instant::now();
    let model = FaultModel::new(seed ^ 0xFA17, rates.clone());
    let faults = model.handle();
    let cfg = QpCfg {
        qps: QPS,
        mtu,
        timeout: 3,
        retry_cnt: 7,
        rnr_retry: 7,
        min_rnr_timer: 1,
        max_rd_atomic: 4,
        mr_len: MR_LEN,
        depth: 64,
        cq_depth: 1024,
        ..QpCfg::default()
    };
    let tap = Tap::new(Box::new(model));
    let wire = tap.log();
    let p = pair_with(&cfg, Box::new(tap));
    for (i, ep) in [&p.a, &p.b].into_iter().enumerate() {
        ep.mr.write(RD_SRC, &pattern(0xBEEF ^ i as u64, RD_LEN as usize)).unwrap();
        ep.mr.write(ATOM, &[0u8; 4096]).unwrap();
    }
    let mut w = Work {
        p,
        wire,
        faults,
        rng: SplitMix64::new(seed),
        seed,
        rates,
        flows: (0..2 * QPS).map(|_| Flow::default()).collect(),
        bytes: 0,
        done: 0,
        posted: 0,
        mix: [0; 4],
        max_len: max_len.min(SLOT),
        one_atomic,
        dead: [false; QPS],
        revived: 0,
        cfg: cfg.clone(),
    };
    let c0 = [counter::ACK_TIMEOUT, counter::RX_NAK_SENT, counter::RX_DUP].map(|c| w.counter_sum(c));
    let start = w.cycle();
    let mut last_progress = start;
    while w.posted < messages || w.outstanding() > 0 {
        if w.posted < messages {
            for _ in 0..4 {
                let x = w.rng.range(0, 1) as usize;
                let k = w.rng.range(0, QPS as u64 - 1) as usize;
                if w.posted < messages {
                    w.post(x, k);
                }
            }
        }
        if let Err(e) = w.p.fabric.borrow_mut().run_cycles(500) {
            w.fail(format!("fabric: {e}"));
        }
        if w.poll() > 0 {
            last_progress = w.cycle();
        }
        w.revive();
        if w.cycle() - last_progress > 3_000_000 {
            w.fail(format!("no completion for 3M cycles ({} outstanding, {} of {messages} posted)", w.outstanding(), w.posted));
        }
    }
    let cycles = w.cycle() - start;
    if let Err(e) = w.p.fabric.borrow_mut().run_cycles(30_000) {
        w.fail(format!("fabric: {e}"));
    }
    if w.poll() != 0 {
        w.fail("completions after everything completed".into());
    }
    // Final state: WRITE slots hold the last WRITE, atomic words the totals.
    for x in 0..2 {
        let y = x ^ 1;
        for k in 0..QPS {
            if w.dead[k] {
                continue;
            }
            let f = &w.flows[x * QPS + k];
            for (dst, data) in &f.slot_last {
                if w.ep(y).mr.read_vec(*dst, data.len()).unwrap() != *data {
                    w.fail(format!("NIC {y}: WRITE slot {dst:#x} does not hold the last WRITE of NIC {x} QP{k} (stale retransmission placed?)"));
                }
            }
            let word = ATOM + ((x * QPS + k) as u64) * 8;
            let v = u64::from_le_bytes(w.ep(y).mr.read_vec(word, 8).unwrap().try_into().unwrap());
            let n = f.fadds;
            if v != n * (n + 1) / 2 {
                w.fail(format!("NIC {y}: atomic word of NIC {x} QP{k} is {v}, want {} after {n} FETCH_ADDs", n * (n + 1) / 2));
            }
            if f.recv_seq != w.flows[y * QPS + k].send_seq {
                w.fail(format!("NIC {x} QP{k}: received {} SENDs of {}", f.recv_seq, w.flows[y * QPS + k].send_seq));
            }
        }
    }
    if let Err(e) = w.p.settle() {
        w.fail(format!("settle: {e}"));
    }
    let c1 = [counter::ACK_TIMEOUT, counter::RX_NAK_SENT, counter::RX_DUP].map(|c| w.counter_sum(c));
    let faults = w.faults.borrow();
    let r = Report {
        messages: w.done,
        bytes: w.bytes,
        cycles,
        faults: faults.total(),
        frames: faults.frames,
        wall: wall.elapsed().as_secs_f64(),
        ack_timeouts: c1[0] - c0[0],
        naks: c1[1] - c0[1],
        dups: c1[2] - c0[2],
        dead_pairs: w.revived + w.dead.iter().filter(|d| **d).count() as u64,
    };
    let per_kind: Vec<String> = FaultKind::ALL.iter().map(|k| format!("{k:?} {}", faults.count(*k))).collect();
    println!(
        "seed {seed:#x} rates drop {} dup {} reorder {} delay {} corrupt {} ({mtu:?}, up to {max_len} B): {} messages (SEND/WRITE/READ/FADD {:?}), {} bytes in {} cycles = {:.2} B/cycle = {:.2} Gb/s at 250 MHz; {} frames, faults {} [{}]; ACK_TIMEOUT {} NAKs {} RX_DUP {}; {} QP pair failures (RETRY_EXC_ERR, reconnected); {:.1} s wall",
        w.rates.drop,
        w.rates.duplicate,
        w.rates.reorder,
        w.rates.delay,
        w.rates.corrupt,
        r.messages,
        w.mix,
        r.bytes,
        r.cycles,
        r.bytes_per_cycle(),
        r.gbps(),
        r.frames,
        r.faults,
        per_kind.join(", "),
        r.ack_timeouts,
        r.naks,
        r.dups,
        r.dead_pairs,
        r.wall
    );
    r
}

/// A combined fault rate `total` split over the five kinds (drop 30 %, duplicate 20 %,
/// reorder 20 %, corrupt 20 %, delay 10 %).
fn combined(total: f64) -> FaultRates {
    FaultRates {
        drop: total * 0.3,
        duplicate: total * 0.2,
        reorder: total * 0.2,
        corrupt: total * 0.2,
        delay: total * 0.1,
        reorder_window: 1500,
        delay_max: 300,
        ..FaultRates::default()
    }
}

#[test]
fn three_thousand_mixed_messages_at_10_percent_faults_exactly_once() {
    let r = run(0x3000_0010, 3000, combined(0.10), Mtu::Mtu1024, 3000);
    assert_eq!((r.messages, r.dead_pairs), (3000, 0), "{r:?}");
    assert!(r.faults > 100, "faults were injected: {r:?}");
    assert!(r.ack_timeouts > 0 && r.naks > 0 && r.dups > 0, "recovery paths exercised: {r:?}");
}

#[test]
fn ten_percent_faults_with_concurrent_atomics() {
    let r = run_with(0x3000_0010, 3000, combined(0.10), Mtu::Mtu1024, 3000, false);
    assert_eq!((r.messages, r.dead_pairs), (3000, 0), "a FETCH_ADD ended in RETRY_EXC_ERR: {r:?}");
}

#[test]
fn fault_free_baseline_goodput() {
    let r = run(0x3000_0000, 600, combined(0.0), Mtu::Mtu1024, 3000);
    assert_eq!((r.faults, r.ack_timeouts, r.naks, r.dups), (0, 0, 0, 0), "{r:?}");
}

#[test]
#[ignore = "goodput table: about a minute; run with --ignored --nocapture"]
fn goodput_by_fault_rate() {
    println!("| fault rate | messages | bytes | cycles | B/cycle | Gb/s @250MHz | faults | ACK timeouts | NAKs | dups | pairs in RETRY_EXC_ERR |");
    for total in [0.0, 0.01, 0.02, 0.05, 0.10, 0.20] {
        let r = run(0x600D_0000 ^ (total * 1000.0) as u64, 1500, combined(total), Mtu::Mtu1024, 3000);
        println!(
            "| {:>4.0} % | {} | {} | {} | {:.2} | {:.2} | {} | {} | {} | {} | {} |",
            total * 100.0,
            r.messages,
            r.bytes,
            r.cycles,
            r.bytes_per_cycle(),
            r.gbps(),
            r.faults,
            r.ack_timeouts,
            r.naks,
            r.dups,
            r.dead_pairs
        );
    }
}

#[test]
#[ignore = "100,000 messages at 10 % faults: several minutes; run with --ignored --nocapture"]
fn hundred_thousand_messages_at_10_percent_faults() {
    let r = run(0x10_0000, 100_000, combined(0.10), Mtu::Mtu1024, 3000);
    // Every message completes exactly once: no QP pair may run out of retries. (Before the
    // retry counters restarted on forward progress, one READ in 100,000 did.)
    assert_eq!((r.messages, r.dead_pairs), (100_000, 0), "{r:?}");
    println!(
        "goodput at 10 % faults over 100,000 messages: {:.2} B/cycle = {:.2} Gb/s at 250 MHz ({} QP pair failures)",
        r.bytes_per_cycle(),
        r.gbps(),
        r.dead_pairs
    );
}

fn cases() -> u32 {
    ["RNIC_CASES", "PROPTEST_CASES"].iter().find_map(|k| std::env::var(k).ok()?.parse().ok()).unwrap_or(4)
}

#[test]
fn random_fault_rates_small_workloads() {
    let seed = std::env::var("RNIC_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(7, |d| d.as_nanos() as u64));
    let n = cases();
    println!("random_fault_rates_small_workloads: seed {seed:#x}, {n} cases (replay: RNIC_SEED={seed:#x} RNIC_CASES={n} PROPTEST_MAX_SHRINK_ITERS=0)");
    let cfg = Config { cases: n, failure_persistence: None, max_shrink_iters: 0, rng_seed: RngSeed::Fixed(seed), ..Config::default() };
    let mut runner = TestRunner::new(cfg);
    let strat = (
        any::<u64>(),
        0.0f64..0.08,
        0.0f64..0.08,
        0.0f64..0.08,
        0.0f64..0.08,
        0.0f64..0.08,
        prop_oneof![Just(Mtu::Mtu256), Just(Mtu::Mtu512), Just(Mtu::Mtu1024), Just(Mtu::Mtu4096)],
        64u64..=4096,
    );
    let res = runner.run(&strat, |(s, d, u, o, c, l, mtu, max_len)| {
        let rates = FaultRates { drop: d, duplicate: u, reorder: o, corrupt: c, delay: l, reorder_window: 1000, ..FaultRates::default() };
        let r = std::panic::catch_unwind(|| run(s, 150, rates.clone(), mtu, max_len));
        match r {
            Ok(rep) => {
                // Every message completed successfully unless its QP pair ran out of retries.
                prop_assert!(rep.messages == 150 || rep.dead_pairs > 0, "{:?}", rep);
                Ok(())
            }
            Err(e) => {
                let msg = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
                Err(TestCaseError::fail(format!("workload seed {s:#x}, rates {rates:?}, {mtu:?}, max_len {max_len}: {msg}")))
            }
        }
    });
    if let Err(e) = res {
        panic!("seed {seed:#x}: {e}");
    }
}

