// SPDX-License-Identifier: Apache-2.0
//! The bad-input stream: random malformed frames injected on the link and random malformed
//! WQEs, doorbells and MMIO accesses from the hosts, interleaved with real checked traffic, all
//! in `Backend::Lockstep` (RTL and model must agree on every drop, counter and response).
//!
//! Layout per NIC (both sides alike): QP0 carries real traffic (SEND with a sequence number,
//! WRITE, READ, both directions, every byte checked); QP1 is the *victim* pair that receives the
//! injected frames with valid headers (random opcodes, PSNs near / far from the expected one,
//! random rkeys, lengths, pad counts, AETHs) and is reconnected whenever it ends in ERR; QP2
//! posts random malformed WQEs (`post_send_raw`) and is reconnected when drained and in ERR;
//! QP3 stays in RESET. Frames broken in their headers go to any QP (they are dropped before the
//! QP lookup); a frame that passes the header checks never reaches QP0 or QP2.
//!
//! Checked: a watchdog requires every posted WQE to complete (success or a defined error) in
//! order within [`BOUND`] cycles; QP0's completions are all successful with the right bytes and
//! sequence numbers; at the end the counters RX_PKTS, RX_DROP_HDR, RX_DROP_ICRC, RX_DROP_QP,
//! DB_BAD and MMIO_BAD moved by exactly what the test injected (computed from the contract's
//! section 7 checks), the fabric settles and both host memories are identical.
//!
//! `RNIC_SEED=<seed>` replays a run; `RNIC_MALFORMED=<n>` sets the number of malformed inputs
//! (default 10,000).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use rnic_driver::{
    Context, Mr, Mtu, QpInitAttr, QpState, QueuePair, RecvWr, RtrAttr, RtsAttr, SendWr, WcOpcode, WcStatus,
    WorkCompletion, WrOpcode,
};
use rnic_regs::{bth_opcode as op, counter, params, reg, send_wqe, wqe_flag};
use rnic_testbench::craft::{self, pair_with, Malform, QpCfg, Tap, WireLog};
use rnic_testbench::faults::SplitMix64;
use rnic_testbench::harness::{nic_ip, nic_mac, Endpoint, Pair, PairOptions};
use rnic_testbench::link::NoFaults;
use rnic_testbench::scenarios::pattern;

/// Largest age (cycles since posting) of a WQE without a completion.
const BOUND: u64 = 300_000;
/// Real traffic: at most this many send WQEs outstanding per side on QP0.
const REAL_DEPTH: u32 = 8;
/// Raw WQEs outstanding per side on QP2.
const RAW_DEPTH: u32 = 4;

// Real MR layout (each side).
const SRC: u64 = 0; // 8 SEND source slots of 4096
const WR_SRC: u64 = 32 << 10; // 8 WRITE source slots
const RECV: u64 = 64 << 10; // 16 receive slots
const WR_DST: u64 = 128 << 10; // 8 WRITE target slots
const RD_SRC: u64 = 160 << 10; // READ source, static
const RD_DST: u64 = 192 << 10; // 16 READ landing slots
const MR_LEN: u64 = 256 << 10;
const SLOT: u64 = 4096;

const T_SEND: u64 = 1 << 56;
const T_WRITE: u64 = 2 << 56;
const T_READ: u64 = 3 << 56;
const T_RECV: u64 = 4 << 56;
const T_RAW: u64 = 5 << 56;

fn seed_from_env() -> u64 {
    match std::env::var("RNIC_SEED") {
        Ok(s) => {
            let s = s.trim();
            s.strip_prefix("0x").map_or_else(|| s.parse().ok(), |h| u64::from_str_radix(h, 16).ok()).expect("RNIC_SEED")
        }
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64),
    }
}

fn count_from_env() -> u64 {
    std::env::var("RNIC_MALFORMED").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000)
}

#[derive(Debug)]
struct Posted {
    wr_id: u64,
    cycle: u64,
}

/// Real-traffic bookkeeping of one side (as requester and as receiver).
#[derive(Default)]
struct Real {
    seq_tx: u64,
    seq_rx: u64,
    recv_posted: u64,
    writes: u64,
    reads: u64,
    /// Payload of each SEND in flight, by sequence number.
    sends: HashMap<u64, Vec<u8>>,
    /// Expected content of WRITE target slots, by wr_id.
    write_data: HashMap<u64, (u64, Vec<u8>)>,
    /// READ (landing offset, expected bytes) by wr_id.
    read_data: HashMap<u64, (u64, Vec<u8>)>,
    completed: u64,
}

#[derive(Default, Debug, Clone, Copy)]
struct Expect {
    injected: u64,
    hdr: u64,
    icrc: u64,
    qp: u64,
    db_bad: u64,
    mmio_bad: u64,
}

struct Run {
    p: Pair,
    wire: WireLog,
    scratch: [Mr; 2],
    spare: [QueuePair; 2],
    rng: SplitMix64,
    seed: u64,
    watch: HashMap<(usize, u32, bool), VecDeque<Posted>>,
    real: [Real; 2],
    exp: [Expect; 2],
    /// rq_psn each side's QP1 (for "near" PSNs), updated at reconnect.
    victim_psn: [u32; 2],
    raw_posted: u64,
    wqes_posted: u64,
    reconnects: u64,
    /// WC status counts of raw WQEs.
    raw_status: HashMap<String, u64>,
    mtu: usize,
}

impl Run {
    fn ep(&self, nic: usize) -> &Endpoint {
        if nic == 0 { &self.p.a } else { &self.p.b }
    }
    fn cycle(&self) -> u64 {
        self.p.fabric.borrow().cycle()
    }
    #[track_caller]
    fn fail(&self, msg: String) -> ! {
        panic!("seed {:#x} (replay: RNIC_SEED={:#x} cargo test --release -p rnic-testbench --test malformed): {msg}", self.seed, self.seed)
    }
    fn run(&self, cycles: u64) {
        if let Err(e) = self.p.fabric.borrow_mut().run_cycles(cycles) {
            self.fail(format!("fabric: {e}"));
        }
    }
    fn counter(&self, nic: usize, idx: u32) -> u64 {
        let v = self.ep(nic).ctx.counter(idx);
        if v == u64::MAX {
            if let Err(e) = self.ep(nic).ctx.progress() {
                self.fail(format!("{e}"));
            }
        }
        v
    }
    fn watch_push(&mut self, nic: usize, qpn: u32, recv: bool, wr_id: u64) {
        let cycle = self.cycle();
        self.watch.entry((nic, qpn, recv)).or_default().push_back(Posted { wr_id, cycle });
        self.wqes_posted += 1;
    }
    fn qp_state(&self, nic: usize, k: usize) -> QpState {
        match self.ep(nic).qps[k].query() {
            Ok(i) => i.state,
            Err(e) => self.fail(format!("query NIC {nic} QP{k}: {e}")),
        }
    }

    // --------------------------------------------------------------------------------------
    // Real traffic on QP0
    // --------------------------------------------------------------------------------------

    fn post_real(&mut self, x: usize) {
        let y = x ^ 1;
        let ep = self.ep(x);
        if ep.qps[0].send_outstanding() >= REAL_DEPTH {
            return;
        }
        let kind = self.rng.range(0, 9);
        let qpn = self.ep(x).qps[0].qpn();
        if kind < 5 {
            // SEND with an 8-byte sequence number, to the peer's receive slots.
            if self.ep(y).qps[0].recv_outstanding() >= 16 {
                return;
            }
            let seq = self.real[x].seq_tx;
            let len = self.rng.range(8, 3000) as usize;
            let mut data = pattern(self.seed ^ (seq << 8) ^ x as u64, len);
            data[..8].copy_from_slice(&seq.to_le_bytes());
            let slot = SRC + (seq % 8) * SLOT;
            self.ep(x).mr.write(slot, &data).unwrap();
            // The receive for it (receivers post in the same order as senders send).
            let r = self.real[y].recv_posted;
            let rslot = RECV + (r % 16) * SLOT;
            let rwr = RecvWr { wr_id: T_RECV | r, sgl: vec![self.ep(y).mr.sge(rslot, SLOT as u32).unwrap()] };
            self.ep(y).qps[0].post_recv(&rwr).unwrap_or_else(|e| self.fail(format!("post_recv: {e}")));
            self.real[y].recv_posted += 1;
            let yq = self.ep(y).qps[0].qpn();
            self.watch_push(y, yq, true, T_RECV | r);
            let wr = SendWr::new(T_SEND | seq, WrOpcode::Send, vec![self.ep(x).mr.sge(slot, len as u32).unwrap()]);
            self.ep(x).qps[0].post_send(&wr).unwrap_or_else(|e| self.fail(format!("post_send: {e}")));
            self.real[x].sends.insert(seq, data);
            self.real[x].seq_tx += 1;
            self.watch_push(x, qpn, false, T_SEND | seq);
        } else if kind < 7 {
            let n = self.real[x].writes;
            let len = self.rng.range(0, SLOT) as usize;
            let data = pattern(self.seed ^ 0x77 ^ (n << 8) ^ x as u64, len);
            // Slots are reused only after their previous user completed (at most REAL_DEPTH
            // send WQEs outstanding, completions in order).
            let src = WR_SRC + (n % 8) * SLOT;
            self.ep(x).mr.write(src, &data).unwrap();
            let dst = WR_DST + (n % 8) * SLOT;
            let wr_id = T_WRITE | n;
            let wr = SendWr::new(
                wr_id,
                WrOpcode::Write { remote_addr: self.ep(y).mr.addr() + dst, rkey: self.ep(y).mr.rkey() },
                vec![self.ep(x).mr.sge(src, len as u32).unwrap()],
            );
            self.ep(x).qps[0].post_send(&wr).unwrap_or_else(|e| self.fail(format!("post WRITE: {e}")));
            self.real[x].write_data.insert(wr_id, (dst, data));
            self.real[x].writes += 1;
            self.watch_push(x, qpn, false, wr_id);
        } else {
            let n = self.real[x].reads;
            let len = self.rng.range(1, SLOT) as usize;
            let off = self.rng.range(0, 32 * 1024 - len as u64);
            let dst = RD_DST + (n % 16) * SLOT;
            let want = pattern(0xBEEF ^ y as u64, 32 * 1024)[off as usize..off as usize + len].to_vec();
            let wr_id = T_READ | n;
            let wr = SendWr::new(
                wr_id,
                WrOpcode::Read { remote_addr: self.ep(y).mr.addr() + RD_SRC + off, rkey: self.ep(y).mr.rkey() },
                vec![self.ep(x).mr.sge(dst, len as u32).unwrap()],
            );
            self.ep(x).qps[0].post_send(&wr).unwrap_or_else(|e| self.fail(format!("post READ: {e}")));
            self.real[x].read_data.insert(wr_id, (dst, want));
            self.real[x].reads += 1;
            self.watch_push(x, qpn, false, wr_id);
        }
    }

    fn check_real(&mut self, nic: usize, wc: &WorkCompletion) {
        if wc.status != WcStatus::Success {
            self.fail(format!("NIC {nic} QP0 (real traffic): {wc:?}"));
        }
        let tag = wc.wr_id & (0xFF << 56);
        let n = wc.wr_id & !(0xFF << 56);
        match tag {
            T_SEND => {
                if !self.real[nic].sends.contains_key(&n) && self.real[nic ^ 1].seq_rx <= n {
                    self.fail(format!("unknown SEND {wc:?}"));
                }
            }
            T_WRITE => {
                let (dst, data) = self.real[nic].write_data.remove(&wc.wr_id).unwrap();
                let got = self.ep(nic ^ 1).mr.read_vec(dst, data.len()).unwrap();
                if got != data {
                    self.fail(format!("NIC {nic}: WRITE {n} landed wrong on NIC {}", nic ^ 1));
                }
            }
            T_READ => {
                let (dst, want) = self.real[nic].read_data.remove(&wc.wr_id).unwrap();
                if wc.byte_len as usize != want.len() || self.ep(nic).mr.read_vec(dst, want.len()).unwrap() != want {
                    self.fail(format!("NIC {nic}: READ {n} returned wrong data ({wc:?})"));
                }
            }
            T_RECV => {
                let seq = self.real[nic].seq_rx;
                let data = self.real[nic ^ 1].sends.remove(&seq).unwrap_or_default();
                let slot = RECV + (n % 16) * SLOT;
                let got = self.ep(nic).mr.read_vec(slot, wc.byte_len as usize).unwrap();
                if wc.byte_len as usize != data.len() || got != data {
                    let got_seq = got.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
                    self.fail(format!(
                        "NIC {nic}: receive {n} holds {} bytes with sequence {got_seq:?}, want SEND {seq} of {} bytes (skipped, repeated or corrupted)",
                        wc.byte_len,
                        data.len()
                    ));
                }
                if wc.opcode != WcOpcode::Recv {
                    self.fail(format!("NIC {nic}: {wc:?}"));
                }
                self.real[nic].seq_rx += 1;
            }
            _ => self.fail(format!("NIC {nic}: unexpected completion on QP0: {wc:?}")),
        }
        self.real[nic].completed += 1;
    }

    /// Poll both CQs; check order, statuses and the watchdog.
    fn poll(&mut self) {
        for nic in 0..2 {
            loop {
                let mut buf = [WorkCompletion::default(); 32];
                let n = match self.ep(nic).cq.poll(&mut buf) {
                    Ok(n) => n,
                    Err(e) => self.fail(format!("poll NIC {nic}: {e}")),
                };
                for wc in &buf[..n] {
                    let key = (nic, wc.qpn, wc.opcode.is_recv());
                    let Some(front) = self.watch.get_mut(&key).and_then(VecDeque::pop_front) else {
                        self.fail(format!("NIC {nic}: completion nothing was posted for: {wc:?}"));
                    };
                    if front.wr_id != wc.wr_id {
                        self.fail(format!("NIC {nic}: completion out of order: {wc:?}, expected wr_id {:#x}", front.wr_id));
                    }
                    if matches!(wc.status, WcStatus::Other(_)) || matches!(wc.opcode, WcOpcode::Other(_)) && wc.status.is_success() {
                        self.fail(format!("NIC {nic}: undefined completion {wc:?}"));
                    }
                    if wc.qpn == self.ep(nic).qps[0].qpn() {
                        self.check_real(nic, wc);
                    } else if wc.qpn == self.ep(nic).qps[2].qpn() {
                        *self.raw_status.entry(format!("{:?}", wc.status)).or_default() += 1;
                    } else {
                        self.fail(format!("NIC {nic}: completion on a QP that has no WQEs: {wc:?}"));
                    }
                }
                if n < buf.len() {
                    break;
                }
            }
        }
        let now = self.cycle();
        for ((nic, qpn, recv), q) in &self.watch {
            if let Some(p) = q.front() {
                if now - p.cycle > BOUND {
                    self.fail(format!(
                        "watchdog: NIC {nic} QP {qpn:#x} {} WQE wr_id {:#x} posted at cycle {} has no completion at cycle {now}",
                        if *recv { "receive" } else { "send" },
                        p.wr_id,
                        p.cycle
                    ));
                }
            }
        }
    }

    fn outstanding(&self) -> usize {
        self.watch.values().map(VecDeque::len).sum()
    }

    // --------------------------------------------------------------------------------------
    // Injected frames
    // --------------------------------------------------------------------------------------

    /// QPNs of NIC `t` that exist (any state).
    fn valid_qpns(&self, t: usize) -> Vec<u32> {
        let mut v: Vec<u32> = self.ep(t).qps.iter().map(QueuePair::qpn).collect();
        v.push(self.spare[t].qpn());
        v
    }

    fn protected(&self, t: usize, qpn: u32) -> bool {
        qpn == self.ep(t).qps[0].qpn() || qpn == self.ep(t).qps[2].qpn()
    }

    fn bad_qpn(&mut self, t: usize) -> u32 {
        let valid = self.valid_qpns(t);
        loop {
            let q = match self.rng.range(0, 4) {
                0 => self.rng.range(0, 1) as u32,
                1 => (params::NUM_QP - 1) as u32,
                2 => self.rng.range(params::NUM_QP, 0xFF_FFFF) as u32,
                _ => self.rng.range(16, params::NUM_QP - 1) as u32,
            };
            if !valid.contains(&q) {
                return q;
            }
        }
    }

    /// A frame with valid headers for the victim QP of NIC `t`: random opcode, PSN near the
    /// expected one or far away, random or valid (scratch) rkeys and lengths.
    fn victim_frame(&mut self, t: usize) -> Vec<u8> {
        let qpn = self.ep(t).qps[1].qpn();
        let base = self.victim_psn[t];
        let psn = match self.rng.range(0, 5) {
            0 => self.rng.next_u64() as u32,
            1 => base.wrapping_sub(self.rng.range(1, 64) as u32),
            2 => base.wrapping_add(self.rng.range(0x1000, 0x80_0000) as u32),
            _ => base.wrapping_add(self.rng.range(0, 6) as u32),
        } & 0xFF_FFFF;
        let mut f = craft::random_frame(&mut self.rng, t, qpn, psn, self.mtu);
        // Sometimes point RETH/AtomicETH at the victim side's scratch MR with its real rkey.
        if self.rng.range(0, 2) == 0 {
            let (mut h, payload) = {
                let p = rnic_model::wire::parse(&f).expect("built frame parses");
                (p.hdr, p.payload.to_vec())
            };
            let mr = &self.scratch[t];
            let off = self.rng.range(0, mr.len() - 8) & !7;
            if let Some(r) = h.reth.as_mut() {
                r.rkey = mr.rkey();
                r.va = mr.addr() + off;
                r.dma_len = (self.rng.range(0, (mr.len() - off).min(3 * self.mtu as u64))) as u32;
            }
            if let Some(a) = h.atomic_eth.as_mut() {
                a.rkey = mr.rkey();
                a.va = mr.addr() + off + if self.rng.range(0, 4) == 0 { self.rng.range(1, 7) } else { 0 };
            }
            if self.rng.range(0, 3) == 0 {
                h.aeth = h.aeth.map(|mut a| {
                    a.syndrome = [0x1F, 0x21, 0x60, 0x61, 0x62, 0x63, 0x40][self.rng.range(0, 6) as usize];
                    a
                });
            }
            f = craft::build(&h, &payload);
        }
        f
    }

    fn inject_one(&mut self) {
        let t = self.rng.range(0, 1) as usize;
        let class = self.rng.range(0, 99);
        let mut f = if class < 50 {
            // A header/ICRC malformation of a frame to any QP (dropped before the QP lookup,
            // except for the few kinds that can leave a valid frame: those are retargeted).
            let kind = Malform::ALL[self.rng.range(0, Malform::ALL.len() as u64 - 1) as usize];
            let qpn = match self.rng.range(0, 2) {
                0 => self.ep(t).qps[1].qpn(),
                1 => self.bad_qpn(t),
                _ => {
                    let k = self.rng.range(0, 3) as usize;
                    self.valid_qpns(t)[k]
                }
            };
            let psn = self.rng.next_u64() as u32;
            let base = craft::random_frame(&mut self.rng, t, qpn, psn, self.mtu);
            craft::malformed(&mut self.rng, kind, &base)
        } else if class < 80 {
            self.victim_frame(t)
        } else if class < 90 {
            let q = self.bad_qpn(t);
            let psn = self.rng.next_u64() as u32;
            craft::random_frame(&mut self.rng, t, q, psn, self.mtu)
        } else if class < 95 {
            let q = self.spare[t].qpn();
            let psn = self.rng.next_u64() as u32;
            craft::random_frame(&mut self.rng, t, q, psn, self.mtu)
        } else {
            // Frames of the peer's own direction sent back to the sender (wrong MAC/IP), or to
            // the right NIC from an unknown source.
            let q = self.ep(t).qps[1].qpn();
            let psn = self.rng.next_u64() as u32;
            let mut h = craft::to_nic(t ^ 1, op::SEND_ONLY, q, psn);
            if self.rng.range(0, 1) == 0 {
                h = craft::to_nic(t, op::SEND_ONLY, q, psn);
                h.src_mac = 0x0200_DEAD_BEEF;
                h.src_ip = 0xC0A8_0101;
            }
            craft::build(&h, &[0xAB; 13])
        };
        // Never let a frame that passes the header checks reach the real or the raw-WQE QPs.
        if let Ok(h) = craft::classify(&f, t) {
            if self.protected(t, h.bth.dqpn) {
                f = self.victim_frame(t);
            }
        }
        let valid = self.valid_qpns(t);
        let e = &mut self.exp[t];
        e.injected += 1;
        match craft::classify(&f, t) {
            Err(c) if c == counter::RX_DROP_HDR => e.hdr += 1,
            Err(c) if c == counter::RX_DROP_ICRC => e.icrc += 1,
            Err(c) => panic!("classify returned counter {c}"),
            Ok(h) => {
                if !valid.contains(&h.bth.dqpn) {
                    e.qp += 1;
                }
            }
        }
        self.p.fabric.borrow_mut().inject(t, f);
    }

    // --------------------------------------------------------------------------------------
    // Malformed WQEs, doorbells and MMIO from the hosts
    // --------------------------------------------------------------------------------------

    fn raw_wqe(&mut self, x: usize) -> bool {
        let y = x ^ 1;
        {
            let qp = &self.ep(x).qps[2];
            if qp.send_outstanding() >= RAW_DEPTH || !matches!(qp.state(), QpState::Rts | QpState::Err) {
                return false;
            }
        }
        let (m_addr, m_len, m_lkey) = (self.scratch[x].addr(), self.scratch[x].len(), self.scratch[x].lkey());
        let real_lkey = self.ep(x).mr.lkey();
        let (t_addr, t_len, t_rkey) = (self.scratch[y].addr(), self.scratch[y].len(), self.scratch[y].rkey());
        let opc = [
            WrOpcode::Send,
            WrOpcode::SendWithImm(7),
            WrOpcode::Write { remote_addr: t_addr + 64, rkey: t_rkey },
            WrOpcode::WriteWithImm { remote_addr: t_addr + 64, rkey: t_rkey, imm: 9 },
            WrOpcode::Read { remote_addr: t_addr + 128, rkey: t_rkey },
            WrOpcode::CompareSwap { remote_addr: t_addr + 8, rkey: t_rkey, compare: 1, swap: 2 },
            WrOpcode::FetchAdd { remote_addr: t_addr + 16, rkey: t_rkey, add: 3 },
        ][self.rng.range(0, 6) as usize];
        let len = if opc.is_atomic() { 8 } else { self.rng.range(0, 3000) as u32 };
        let off = self.rng.range(0, 32) * 8;
        let sgl = vec![rnic_driver::Sge { addr: m_addr + off, len, lkey: m_lkey }];
        let mut w = rnic_driver::encode_send_wqe(&SendWr::new(0, opc, sgl));
        match self.rng.range(0, 12) {
            0 => send_wqe::OPCODE.set(&mut w, self.rng.range(7, 255)),
            1 => send_wqe::NUM_SGE.set(&mut w, self.rng.range(params::MAX_SEND_SGE + 1, 255)),
            2 => send_wqe::SGE0_LEN.set(&mut w, self.rng.range(params::MAX_MSG_LEN + 1, u64::from(u32::MAX))),
            3 => send_wqe::SGE0_LKEY.set(&mut w, self.rng.next_u64() & 0xFFFF_FFFF),
            4 => send_wqe::SGE0_ADDR.set(&mut w, m_addr + m_len - self.rng.range(0, 16)),
            5 => send_wqe::RKEY.set(&mut w, self.rng.next_u64() & 0xFFFF_FFFF),
            6 => send_wqe::REMOTE_ADDR.set(&mut w, t_addr + self.rng.range(0, 2 * t_len)),
            7 => {
                // Several SGEs, some with the real MR's lkey (outside it), some zero-length.
                send_wqe::NUM_SGE.set(&mut w, self.rng.range(0, params::MAX_SEND_SGE));
                let rest = [
                    [send_wqe::SGE1_ADDR, send_wqe::SGE1_LEN, send_wqe::SGE1_LKEY],
                    [send_wqe::SGE2_ADDR, send_wqe::SGE2_LEN, send_wqe::SGE2_LKEY],
                    [send_wqe::SGE3_ADDR, send_wqe::SGE3_LEN, send_wqe::SGE3_LKEY],
                ];
                for [a, l, key] in rest {
                    a.set(&mut w, m_addr + self.rng.range(0, m_len));
                    l.set(&mut w, self.rng.range(0, 600));
                    key.set(&mut w, u64::from(if self.rng.range(0, 1) == 0 { m_lkey } else { real_lkey }));
                }
            }
            8 => {
                // Entirely random bytes.
                for b in w.iter_mut() {
                    *b = self.rng.next_u64() as u8;
                }
            }
            9 => send_wqe::FLAGS.set(&mut w, self.rng.next_u64() & 0xFF),
            _ => {} // valid
        }
        // Always signaled, so that the watchdog sees every WQE complete.
        let flags = send_wqe::FLAGS.get(&w) as u32 | wqe_flag::SIGNALED;
        send_wqe::FLAGS.set(&mut w, u64::from(flags));
        let wr_id = T_RAW | self.raw_posted;
        send_wqe::WR_ID.set(&mut w, wr_id);
        let qpn = self.ep(x).qps[2].qpn();
        if let Err(e) = self.ep(x).qps[2].post_send_raw(&w) {
            self.fail(format!("post_send_raw: {e}"));
        }
        self.raw_posted += 1;
        self.watch_push(x, qpn, false, wr_id);
        true
    }

    /// One malformed doorbell or MMIO access from host `x`; returns (DB_BAD, MMIO_BAD) it adds.
    fn raw_mmio(&mut self, x: usize) {
        let rng = &mut self.rng;
        let pick = |rng: &mut SplitMix64, a: u64, b: u64| if rng.range(0, 1) == 0 { a } else { b };
        let (mut db, mut bad) = (0, 0);
        let mut writes: Vec<(u8, u64, u64)> = Vec::new();
        let mut read: Option<u64> = None;
        match rng.range(0, 8) {
            0 => {
                // Doorbells for a QP that does not exist.
                let q = 600 + rng.range(0, 400) as u32;
                let off = pick(rng, params::DB_SQ_PI, params::DB_RQ_PI);
                writes.push((0, Context::qp_doorbell(q) + off, rng.next_u64()));
                db += 1;
            }
            1 => {
                // Doorbells for the QP in RESET.
                let off = pick(rng, params::DB_SQ_PI, params::DB_RQ_PI);
                writes.push((0, Context::qp_doorbell(self.spare[x].qpn()) + off, rng.range(1, 0xFFFF)));
                db += 1;
            }
            2 => {
                // A producer index far past the ring capacity of a live QP.
                let k = rng.range(0, 1) as usize;
                let sq = rng.range(0, 1) == 0;
                let dist = rng.range(0x4000, 0xBFFF) as u16;
                let qp = &self.ep(x).qps[k];
                let info = qp.query().unwrap_or_else(|e| self.fail(format!("query: {e}")));
                let (off, base) = if sq { (params::DB_SQ_PI, info.comp_ci) } else { (params::DB_RQ_PI, info.rq_ci) };
                writes.push((0, Context::qp_doorbell(qp.qpn()) + off, u64::from(base.wrapping_add(dist))));
                db += 1;
            }
            3 => {
                let c = 700 + rng.range(0, 300) as u32;
                let off = pick(rng, params::DB_CQ_CI, params::DB_CQ_ARM);
                writes.push((0, Context::cq_doorbell(c) + off, rng.next_u64()));
                db += 1;
            }
            4 => {
                // Not a doorbell register inside a doorbell page.
                let off = 16 + rng.range(0, 500) * 8;
                let base = pick(rng, Context::qp_doorbell(self.p.a.qps[0].qpn()), Context::cq_doorbell(self.p.a.cq.cqn()));
                writes.push((0, base + off, rng.next_u64()));
                bad += 1;
            }
            5 => {
                // Read-only registers.
                let r = [reg::DEV_ID, reg::DEV_CAPS, reg::CMD_STATUS, reg::CMD_OUT0, reg::COUNTERS + 8 * rng.range(0, 15)]
                    [rng.range(0, 4) as usize];
                writes.push((0, r, rng.next_u64()));
                bad += 1;
            }
            6 => {
                // Unknown offset, or an unaligned one.
                let off = if rng.range(0, 1) == 0 { 0x1000 + rng.range(0, 0x1000) * 8 } else { reg::CMD_ARG0 + rng.range(1, 7) };
                writes.push((0, off, rng.next_u64()));
                bad += 1;
            }
            7 => {
                // Read of an unknown offset: 0 and MMIO_BAD.
                read = Some(0x1000 + rng.range(0, 0x1000) * 8);
                bad += 1;
            }
            _ => {
                // A function that does not exist (no VFs): write ignored.
                let q = Context::qp_doorbell(self.p.a.qps[0].qpn()) + params::DB_SQ_PI;
                writes.push((1 + rng.range(0, 6) as u8, q, rng.next_u64()));
                bad += 1;
            }
        }
        for (func, off, v) in writes {
            if func == 0 {
                self.ep(x).ctx.raw_mmio_write(off, v);
            } else if let Err(e) = self.p.fabric.borrow_mut().mmio_write(x, func, off, v) {
                self.fail(format!("{e}"));
            }
        }
        if let Some(off) = read {
            let v = self.ep(x).ctx.raw_mmio_read(off);
            if v != 0 {
                self.fail(format!("NIC {x}: read of unknown offset {off:#x} returned {v:#x}"));
            }
        }
        self.exp[x].db_bad += db;
        self.exp[x].mmio_bad += bad;
    }

    // --------------------------------------------------------------------------------------
    // Reconnecting the victim and raw-WQE pairs
    // --------------------------------------------------------------------------------------

    fn reconnect(&mut self, k: usize) {
        let psn = [self.rng.next_u64() as u32 & 0xFF_FFFF, self.rng.next_u64() as u32 & 0xFF_FFFF];
        let rd = [self.rng.range(0, 16) as u8, self.rng.range(0, 16) as u8, self.rng.range(0, 4) as u8, self.rng.range(0, 4) as u8];
        let access = PairOptions::default().access;
        for x in 0..2 {
            let qp = &self.ep(x).qps[k];
            qp.to_err().unwrap_or_else(|e| self.fail(format!("to_err: {e}")));
            qp.reset().unwrap_or_else(|e| self.fail(format!("reset: {e}")));
        }
        for x in 0..2 {
            let y = x ^ 1;
            let qp = &self.ep(x).qps[k];
            let dest = self.ep(y).qps[k].qpn();
            let r = (|| {
                qp.to_init(access)?;
                qp.to_rtr(&RtrAttr {
                    dest_qpn: dest,
                    rq_psn: psn[y],
                    path_mtu: Mtu::Mtu1024,
                    dest_mac: nic_mac(y),
                    dest_ip: nic_ip(y),
                    max_dest_rd_atomic: rd[x],
                    min_rnr_timer: 1,
                })?;
                qp.to_rts(&RtsAttr { sq_psn: psn[x], timeout: 3, retry_cnt: 2, rnr_retry: 2, max_rd_atomic: rd[2 + x] })
            })();
            r.unwrap_or_else(|e| self.fail(format!("reconnect NIC {x} QP{k}: {e}")));
            if k == 1 {
                self.victim_psn[x] = psn[y];
            }
        }
        self.reconnects += 1;
    }

    fn maybe_reconnect(&mut self) {
        for k in [1usize, 2] {
            let drained = (0..2).all(|x| self.ep(x).qps[k].send_outstanding() == 0 && self.ep(x).qps[k].recv_outstanding() == 0);
            if !drained {
                continue;
            }
            if (0..2).any(|x| self.qp_state(x, k) != QpState::Rts) {
                self.reconnect(k);
            }
        }
    }
}

#[test]
fn malformed_input_stream_in_lockstep() {
    let seed = seed_from_env();
    let target = count_from_env();
    println!("malformed: seed {seed:#x}, {target} malformed inputs (replay: RNIC_SEED={seed:#x} RNIC_MALFORMED={target} cargo test --release -p rnic-testbench --test malformed -- --nocapture)");
    let wall = Instant::now();
    let cfg = QpCfg {
        qps: 3,
        mtu: Mtu::Mtu1024,
        timeout: 3,
        retry_cnt: 3,
        rnr_retry: 3,
        min_rnr_timer: 1,
        max_rd_atomic: 4,
        mr_len: MR_LEN,
        depth: 64,
        cq_depth: 1024,
        ..QpCfg::default()
    };
    let tap = Tap::new(Box::new(NoFaults));
    let wire = tap.log();
    let p = pair_with(&cfg, Box::new(tap));
    let access = PairOptions::default().access;
    let scratch = [p.a.pd.reg_mr(64 << 10, access).unwrap(), p.b.pd.reg_mr(64 << 10, access).unwrap()];
    let spare = [&p.a, &p.b].map(|ep| {
        ep.pd.create_qp(&QpInitAttr { send_cq: &ep.cq, recv_cq: &ep.cq, max_send_wr: 8, max_recv_wr: 8 }).unwrap()
    });
    for (i, ep) in [&p.a, &p.b].into_iter().enumerate() {
        ep.mr.write(RD_SRC, &pattern(0xBEEF ^ i as u64, 32 * 1024)).unwrap();
    }
    let mut run = Run {
        victim_psn: [cfg.psn(1, 1), cfg.psn(0, 1)],
        p,
        wire,
        scratch,
        spare,
        rng: SplitMix64::new(seed),
        seed,
        watch: HashMap::new(),
        real: [Real::default(), Real::default()],
        exp: [Expect::default(); 2],
        raw_posted: 0,
        wqes_posted: 0,
        reconnects: 0,
        raw_status: HashMap::new(),
        mtu: 1024,
    };
    let base: Vec<Vec<u64>> = (0..2)
        .map(|x| [counter::RX_PKTS, counter::RX_DROP_HDR, counter::RX_DROP_ICRC, counter::RX_DROP_QP, counter::DB_BAD, counter::MMIO_BAD].map(|c| run.counter(x, c)).to_vec())
        .collect();
    let wire_base = run.wire.borrow().len();
    let start_cycle = run.cycle();
    let mut inputs = 0u64;
    let mut round = 0u64;
    while inputs < target {
        round += 1;
        for x in 0..2 {
            if run.rng.range(0, 2) == 0 {
                run.post_real(x);
            }
        }
        let k = run.rng.range(1, 8);
        for _ in 0..k {
            run.inject_one();
            inputs += 1;
        }
        for x in 0..2 {
            if run.rng.range(0, 3) == 0 && run.raw_wqe(x) {
                inputs += 1;
            }
            if run.rng.range(0, 4) == 0 {
                run.raw_mmio(x);
                inputs += 1;
            }
        }
        let c = run.rng.range(200, 1500);
        run.run(c);
        run.poll();
        if round % 8 == 0 {
            run.maybe_reconnect();
        }
    }
    // Drain: every WQE completes.
    let mut calls = 0;
    while run.outstanding() > 0 {
        run.run(1000);
        run.poll();
        calls += 1;
        if calls % 16 == 0 {
            run.maybe_reconnect();
        }
        assert!(calls < 2000, "drain did not finish");
    }
    run.run(20_000);
    run.poll();
    let cycles = run.cycle() - start_cycle;
    // Counters: exactly what was injected / what crossed the link.
    let delivered: [u64; 2] = {
        let w = run.wire.borrow();
        let mut d = [0u64; 2];
        for f in &w[wire_base..] {
            d[f.from ^ 1] += f.copies as u64;
        }
        d
    };
    for x in 0..2 {
        let now = [counter::RX_PKTS, counter::RX_DROP_HDR, counter::RX_DROP_ICRC, counter::RX_DROP_QP, counter::DB_BAD, counter::MMIO_BAD]
            .map(|c| run.counter(x, c));
        let d: Vec<u64> = now.iter().zip(&base[x]).map(|(a, b)| a - b).collect();
        let e = run.exp[x];
        let want = [delivered[x] + e.injected, e.hdr, e.icrc, e.qp, e.db_bad, e.mmio_bad];
        println!("NIC {x}: injected {} frames; (RX_PKTS, RX_DROP_HDR, RX_DROP_ICRC, RX_DROP_QP, DB_BAD, MMIO_BAD) moved {d:?}, want {want:?}", e.injected);
        if d != want {
            run.fail(format!("NIC {x}: counters (RX_PKTS, RX_DROP_HDR, RX_DROP_ICRC, RX_DROP_QP, DB_BAD, MMIO_BAD) moved {d:?}, want {want:?}"));
        }
        let others = [counter::RX_DROP_STATE, counter::RX_NAK_SENT, counter::RX_GHOST_ACK, counter::RX_DUP, counter::RX_DROP_RESP, counter::ACK_TIMEOUT, counter::RNR_TIMER]
            .map(|c| run.counter(x, c));
        println!("NIC {x}: RX_DROP_STATE {} RX_NAK_SENT {} RX_GHOST_ACK {} RX_DUP {} RX_DROP_RESP {} ACK_TIMEOUT {} RNR_TIMER {}", others[0], others[1], others[2], others[3], others[4], others[5], others[6]);
    }
    assert_eq!(run.real[0].seq_rx, run.real[1].seq_tx, "every SEND from NIC 1 received in order");
    assert_eq!(run.real[1].seq_rx, run.real[0].seq_tx, "every SEND from NIC 0 received in order");
    assert!(run.real[0].completed + run.real[1].completed > 100, "real traffic ran");
    if let Err(e) = run.p.settle() {
        run.fail(format!("settle: {e}"));
    }
    let stats = run.p.fabric.borrow().check_stats();
    assert!(stats.iter().all(|s| s.tasks > 0 && s.frames > 0), "lockstep compared: {stats:?}");
    println!(
        "malformed: {inputs} malformed inputs ({} frames, {} raw WQEs, {} raw MMIO), {} WQEs completed ({} real), raw WQE statuses {:?}, {} reconnects, {cycles} cycles, {:.1} s wall, lockstep {stats:?}",
        run.exp[0].injected + run.exp[1].injected,
        run.raw_posted,
        inputs - run.exp[0].injected - run.exp[1].injected - run.raw_posted,
        run.wqes_posted,
        run.real[0].completed + run.real[1].completed,
        run.raw_status,
        run.reconnects,
        wall.elapsed().as_secs_f64()
    );
}
