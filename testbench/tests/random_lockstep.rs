// SPDX-License-Identifier: Apache-2.0
//! Random verbs workloads between two NICs in lockstep (RTL and model compared event by event).
//!
//! A workload is a list of operations (SEND, SEND_WITH_IMM, RDMA WRITE, WRITE_WITH_IMM, READ,
//! CMP_SWAP, FETCH_ADD) in both directions on random QPs, with random sizes, offsets and
//! scatter/gather lists. The test keeps a **shadow copy** of both registered buffers and updates it
//! with its own understanding of each operation; every completion is checked against what the test
//! expects (status, opcode, byte_len, imm, wr_id, wqe_idx) and at the end every byte of both
//! buffers must equal the shadow, and the fabric must settle (RTL and model host memories
//! identical, no pending prediction).
//!
//! Operations are posted as a stream with bounded outstanding work per QP (queue depth). Ops run
//! concurrently unless their memory footprints overlap (a write overlapping anything): then the
//! later op waits until the earlier one is known complete, so the shadow (applied in posting order)
//! is exact. Atomics target per-QP, per-direction words that nothing else touches, and ops of one
//! QP execute in order at the responder, so atomic results are exact as well. An unsignaled op
//! whose completion is needed (to release memory, or at the end) is followed by a *fence*: a
//! signaled zero-length RDMA WRITE on the same QP.
//!
//! Replay a failure with the seed the failing test prints:
//! `RNIC_SEED=<seed> RNIC_CASES=<n> cargo test --release -p rnic-testbench --test random_lockstep`.
//! `RNIC_CASES` (or `PROPTEST_CASES`) sets the number of random workloads (default 8).

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use rnic_regs::counter;
use rnic_driver::{Mtu, RecvWr, SendWr, Sge, WcOpcode, WcStatus, WorkCompletion, WrOpcode};
use rnic_testbench::fabric::Backend;
use rnic_testbench::harness::{Endpoint, Pair, PairOptions};
use rnic_testbench::scenarios::pattern;

// ------------------------------------------------------------------------------------------------
// Workload description
// ------------------------------------------------------------------------------------------------

/// Kind of operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Send,
    SendImm,
    Write,
    WriteImm,
    Read,
    CmpSwap,
    FetchAdd,
}

const KINDS: [Kind; 7] = [Kind::Send, Kind::SendImm, Kind::Write, Kind::WriteImm, Kind::Read, Kind::CmpSwap, Kind::FetchAdd];

impl Kind {
    fn is_atomic(self) -> bool {
        matches!(self, Kind::CmpSwap | Kind::FetchAdd)
    }
    fn consumes_recv(self) -> bool {
        matches!(self, Kind::Send | Kind::SendImm | Kind::WriteImm)
    }
}

/// One operation as generated; offsets and splits are seeds mapped onto the buffer layout.
#[derive(Clone, Debug)]
struct OpSpec {
    /// Requester is NIC 1 (B) instead of NIC 0 (A).
    from_b: bool,
    /// QP pair (taken modulo the number of QPs).
    qp: u16,
    kind: Kind,
    /// Message length (atomics: ignored, 8).
    len: u32,
    /// Seed of the local (requester) offset.
    loc: u64,
    /// Seed of the remote offset (WRITE/READ target, receive buffer).
    rem: u64,
    /// Number of local SGEs (1..=4).
    sges: u8,
    /// Number of receive SGEs (1..=3).
    rsges: u8,
    /// Seed of SGE split points, gaps and slack.
    split: u64,
    /// Requested signaling (forced on when the send queue would otherwise fill with unsignaled WRs).
    signaled: bool,
    /// imm / compare / add.
    v1: u64,
    /// swap.
    v2: u64,
    /// CMP_SWAP: compare with the word's current value (a hit) instead of `v1`.
    hit: bool,
    /// Atomic word (0..ATOM_WORDS).
    word: u8,
}

#[derive(Clone, Debug)]
struct Workload {
    qps: usize,
    mtu: Mtu,
    scrambled: bool,
    /// Send/receive queue depth of every QP.
    depth: u32,
    /// Least size of the data area of each buffer (a small area makes footprints overlap often,
    /// a large one lets more ops run concurrently).
    min_data: u64,
    ops: Vec<OpSpec>,
}

/// Atomic words per QP per direction.
const ATOM_WORDS: u64 = 4;
/// Tag of receive WR ids.
const RECV_TAG: u64 = 1 << 40;
/// Tag of fence WR ids.
const FENCE_TAG: u64 = 1 << 41;
/// Progress calls (1000 cycles each) without any completion before the run is declared hung.
const STALL_LIMIT: u32 = 5000;

fn mtu_of(code: u8) -> Mtu {
    match code % 5 {
        0 => Mtu::Mtu256,
        1 => Mtu::Mtu512,
        2 => Mtu::Mtu1024,
        3 => Mtu::Mtu2048,
        _ => Mtu::Mtu4096,
    }
}

// ------------------------------------------------------------------------------------------------
// The test's own small RNG (split points; the deterministic workload generator)
// ------------------------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03 | 1)
    }
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, lo: u64, hi_incl: u64) -> u64 {
        lo + self.below(hi_incl - lo + 1)
    }
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

// ------------------------------------------------------------------------------------------------
// Concrete plan of one op on the buffer layout
// ------------------------------------------------------------------------------------------------

/// Buffer layout (same on both sides): `[0, atom_len)` atomic words, `[atom_len, mr_len)` data.
#[derive(Clone, Copy, Debug)]
struct Layout {
    atom_len: u64,
    mr_len: u64,
}

impl Layout {
    fn new(w: &Workload) -> Layout {
        let atom_len = (w.qps as u64 * ATOM_WORDS * 8).next_multiple_of(64);
        let max_len = w.ops.iter().map(|o| u64::from(o.len)).max().unwrap_or(0);
        let data = (2 * (max_len + 256)).max(w.min_data).next_multiple_of(4096);
        Layout { atom_len, mr_len: atom_len + data }
    }
    fn data_len(&self) -> u64 {
        self.mr_len - self.atom_len
    }
    /// MR offset of atomic word `word` of QP `q` (targeted by the peer's QP `q`).
    fn atom(&self, q: usize, word: u8) -> u64 {
        (q as u64 * ATOM_WORDS + u64::from(word) % ATOM_WORDS) * 8
    }
    /// A data-area start offset for `span` bytes from `seed`.
    fn place(&self, seed: u64, span: u64) -> u64 {
        self.atom_len + seed % (self.data_len() - span + 1)
    }
}

/// Split `total` bytes into `n` SGE pieces (offsets relative to the first) with small random gaps:
/// returns `(offset, len)` per SGE and the span covered.
fn split_sgl(rng: &mut Rng, total: u64, n: u8) -> (Vec<(u64, u64)>, u64) {
    let n = u64::from(n.max(1));
    // Cut points (may coincide: zero-length SGEs).
    let mut cuts: Vec<u64> = (1..n).map(|_| if total == 0 { 0 } else { rng.range(0, total) }).collect();
    cuts.sort_unstable();
    let mut lens = Vec::new();
    let mut prev = 0;
    for c in cuts.into_iter().chain([total]) {
        lens.push(c - prev);
        prev = c;
    }
    let gaps: Vec<u64> = (0..n).map(|i| if i == 0 || rng.chance(1, 2) { 0 } else { rng.range(1, 24) }).collect();
    let mut out = Vec::new();
    let mut pos = 0;
    for (l, g) in lens.iter().zip(&gaps) {
        pos += g;
        out.push((pos, *l));
        pos += l;
    }
    (out, pos)
}

/// Relative SGE layout -> absolute MR offsets starting at `base`.
fn at(base: u64, rel: &[(u64, u64)]) -> Vec<(u64, u64)> {
    rel.iter().map(|(o, l)| (base + o, *l)).collect()
}

/// A memory footprint: `(side, start, end, write)`.
type Foot = (usize, u64, u64, bool);

/// Everything the test decided for one op.
#[derive(Clone, Debug)]
struct Plan {
    /// Requester side (0 = A, 1 = B); the responder is `1 - req`.
    req: usize,
    q: usize,
    kind: Kind,
    len: u64,
    /// Local SGEs (MR offsets on the requester).
    local: Vec<(u64, u64)>,
    /// Remote offset (WRITE/READ target on the responder, atomic word).
    remote: u64,
    /// Receive SGEs (MR offsets on the responder) for a receive-consuming op.
    recv: Vec<(u64, u64)>,
    signaled: bool,
    imm: u32,
    compare: u64,
    swap_add: u64,
    hit: bool,
    footprint: Vec<Foot>,
}

fn plan(spec: &OpSpec, w: &Workload, lay: &Layout) -> Plan {
    let req = usize::from(spec.from_b);
    let resp = 1 - req;
    let q = usize::from(spec.qp) % w.qps;
    let mut rng = Rng::new(spec.split);
    let kind = spec.kind;
    let len = if kind.is_atomic() { 8 } else { u64::from(spec.len) };
    let mut fp = Vec::new();
    let mut local = Vec::new();
    let mut recv = Vec::new();
    let mut remote = 0;
    if kind.is_atomic() {
        // Result slot: mostly 8-aligned, sometimes not (may straddle a page).
        let mut off = lay.place(spec.loc, 8);
        if rng.chance(3, 4) {
            off = (off - lay.atom_len) / 8 * 8 + lay.atom_len;
        }
        local.push((off, 8));
        fp.push((req, off, off + 8, true));
        remote = lay.atom(q, spec.word);
    } else {
        let (rel, span) = split_sgl(&mut rng, len, spec.sges.clamp(1, 4));
        let base = lay.place(spec.loc, span);
        local = at(base, &rel);
        // READ scatters into the local SGEs; the others gather from them.
        let local_write = kind == Kind::Read;
        fp.extend(local.iter().filter(|s| s.1 > 0).map(|&(o, l)| (req, o, o + l, local_write)));
        match kind {
            Kind::Write | Kind::WriteImm | Kind::Read => {
                remote = lay.place(spec.rem, len.max(1));
                if len > 0 {
                    fp.push((resp, remote, remote + len, kind != Kind::Read));
                }
            }
            _ => {}
        }
        match kind {
            Kind::Send | Kind::SendImm => {
                let slack = if rng.chance(1, 2) { 0 } else { rng.range(1, 40) };
                let (rrel, rspan) = split_sgl(&mut rng, len + slack, spec.rsges.clamp(1, 3));
                let rbase = lay.place(spec.rem, rspan);
                recv = at(rbase, &rrel);
                fp.extend(recv.iter().filter(|s| s.1 > 0).map(|&(o, l)| (resp, o, o + l, true)));
            }
            Kind::WriteImm => {
                // The receive WQE's buffers must not be written; sometimes give it one.
                if rng.chance(1, 2) {
                    let o = lay.place(spec.rem ^ 0x5555, 16);
                    recv.push((o, 16));
                }
            }
            _ => {}
        }
    }
    Plan {
        req,
        q,
        kind,
        len,
        local,
        remote,
        recv,
        signaled: spec.signaled,
        imm: spec.v1 as u32,
        compare: spec.v1,
        swap_add: spec.v2,
        hit: spec.hit,
        footprint: fp,
    }
}

// ------------------------------------------------------------------------------------------------
// Running a workload
// ------------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
struct ExpectWc {
    wr_id: u64,
    opcode: WcOpcode,
    byte_len: u32,
    imm: Option<u32>,
    wqe_idx: u16,
}

struct Posted {
    seq: u64,
    /// Op index, or None for a fence.
    op: Option<usize>,
    /// Expected completion if signaled.
    wc: Option<ExpectWc>,
}

struct InFlight {
    foot: Foot,
    owner: (usize, usize),
    seq: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    ops: usize,
    fences: usize,
    unsignaled: usize,
    send_cqes: usize,
    recv_cqes: usize,
    bytes: u64,
    cycles: u64,
    per_kind: [usize; 7],
    /// Most send WRs outstanding at once (all QPs, both NICs).
    max_outstanding: usize,
}

struct Runner<'a> {
    w: &'a Workload,
    pair: &'a Pair,
    lay: Layout,
    plans: Vec<Plan>,
    /// Shadow of each side's MR.
    shadow: [Vec<u8>; 2],
    /// Last op (index + 1) that wrote each shadow byte (0: initial contents), for reports.
    writer: [Vec<u32>; 2],
    /// Per side, per QP: posted send WRs not yet known complete, in order.
    sq: [Vec<VecDeque<Posted>>; 2],
    /// Per side, per QP: expected receive completions, in order.
    rq: [Vec<VecDeque<ExpectWc>>; 2],
    /// Per side, per QP: WQEs posted (16-bit counters, the device's indices).
    sq_idx: [Vec<u16>; 2],
    rq_idx: [Vec<u16>; 2],
    /// Per side, per QP: sequence number of the last signaled WR posted.
    last_signaled: [Vec<Option<u64>>; 2],
    inflight: Vec<InFlight>,
    qp_index: HashMap<(usize, u32), usize>,
    seq: u64,
    stats: Stats,
}

fn ep(pair: &Pair, side: usize) -> &Endpoint {
    if side == 0 {
        &pair.a
    } else {
        &pair.b
    }
}

fn side_name(side: usize) -> &'static str {
    if side == 0 {
        "A"
    } else {
        "B"
    }
}

fn wc_opcode(kind: Kind) -> WcOpcode {
    match kind {
        Kind::Send | Kind::SendImm => WcOpcode::Send,
        Kind::Write | Kind::WriteImm => WcOpcode::RdmaWrite,
        Kind::Read => WcOpcode::RdmaRead,
        Kind::CmpSwap => WcOpcode::CompSwap,
        Kind::FetchAdd => WcOpcode::FetchAdd,
    }
}

fn overlaps(a: &Foot, b: &Foot) -> bool {
    a.0 == b.0 && a.1 < b.2 && b.1 < a.2 && (a.3 || b.3)
}

enum Block {
    /// A conflicting footprint owned by (side, qp) with this seq.
    Conflict(usize, usize, u64),
    SqFull,
    RqFull,
}

impl<'a> Runner<'a> {
    fn new(w: &'a Workload, pair: &'a Pair, lay: Layout) -> Result<Runner<'a>, String> {
        let n = w.qps;
        let mut shadow = [Vec::new(), Vec::new()];
        for side in 0..2 {
            let data = pattern(0xA11CE + side as u64 * 7919 + lay.mr_len, lay.mr_len as usize);
            ep(pair, side).mr.write(0, &data).map_err(|e| format!("initialising MR {}: {e}", side_name(side)))?;
            shadow[side] = data;
        }
        let mut qp_index = HashMap::new();
        for side in 0..2 {
            for (i, qp) in ep(pair, side).qps.iter().enumerate() {
                qp_index.insert((side, qp.qpn()), i);
            }
        }
        let plans = w.ops.iter().map(|o| plan(o, w, &lay)).collect();
        Ok(Runner {
            w,
            pair,
            lay,
            plans,
            shadow,
            writer: [vec![0; lay.mr_len as usize], vec![0; lay.mr_len as usize]],
            sq: [(0..n).map(|_| VecDeque::new()).collect(), (0..n).map(|_| VecDeque::new()).collect()],
            rq: [(0..n).map(|_| VecDeque::new()).collect(), (0..n).map(|_| VecDeque::new()).collect()],
            sq_idx: [vec![0; n], vec![0; n]],
            rq_idx: [vec![0; n], vec![0; n]],
            last_signaled: [vec![None; n], vec![None; n]],
            inflight: Vec::new(),
            qp_index,
            seq: 0,
            stats: Stats::default(),
        })
    }

    fn depth(&self) -> usize {
        self.w.depth.max(2).next_power_of_two() as usize
    }

    fn blocked(&self, p: &Plan) -> Option<Block> {
        for f in &p.footprint {
            if let Some(g) = self.inflight.iter().find(|g| overlaps(f, &g.foot)) {
                return Some(Block::Conflict(g.owner.0, g.owner.1, g.seq));
            }
        }
        if self.sq[p.req][p.q].len() >= self.depth() {
            return Some(Block::SqFull);
        }
        if p.kind.consumes_recv() && self.rq[1 - p.req][p.q].len() >= self.depth() {
            return Some(Block::RqFull);
        }
        None
    }

    fn sges(&self, side: usize, list: &[(u64, u64)]) -> Result<Vec<Sge>, String> {
        list.iter()
            .map(|&(o, l)| ep(self.pair, side).mr.sge(o, l as u32).map_err(|e| format!("sge: {e}")))
            .collect()
    }

    fn gather(&self, side: usize, list: &[(u64, u64)]) -> Vec<u8> {
        let mut v = Vec::new();
        for &(o, l) in list {
            v.extend_from_slice(&self.shadow[side][o as usize..(o + l) as usize]);
        }
        v
    }

    fn scatter(&mut self, side: usize, list: &[(u64, u64)], data: &[u8], op: usize) {
        let mut done = 0usize;
        for &(o, l) in list {
            if done == data.len() {
                break;
            }
            let n = (l as usize).min(data.len() - done);
            let o = o as usize;
            self.shadow[side][o..o + n].copy_from_slice(&data[done..done + n]);
            self.writer[side][o..o + n].fill(op as u32 + 1);
            done += n;
        }
    }

    fn word(&self, side: usize, off: u64) -> u64 {
        u64::from_le_bytes(self.shadow[side][off as usize..off as usize + 8].try_into().expect("8 bytes"))
    }

    /// Post op `i` (all checks passed): receive first, then the send; update the shadow.
    fn post(&mut self, i: usize) -> Result<(), String> {
        let p = self.plans[i].clone();
        let (req, resp, q) = (p.req, 1 - p.req, p.q);
        let rq_pair = ep(self.pair, resp);
        let wr_id = i as u64 + 1;
        let mut imm = None;
        if matches!(p.kind, Kind::SendImm | Kind::WriteImm) {
            imm = Some(p.imm);
        }
        if p.kind.consumes_recv() {
            let rwr = RecvWr { wr_id: RECV_TAG | wr_id, sgl: self.sges(resp, &p.recv)? };
            rq_pair.qps[q].post_recv(&rwr).map_err(|e| format!("op {i}: post_recv: {e}"))?;
            let idx = self.rq_idx[resp][q];
            self.rq_idx[resp][q] = idx.wrapping_add(1);
            self.rq[resp][q].push_back(ExpectWc {
                wr_id: RECV_TAG | wr_id,
                opcode: if p.kind == Kind::WriteImm { WcOpcode::RecvRdmaWithImm } else { WcOpcode::Recv },
                byte_len: p.len as u32,
                imm,
                wqe_idx: idx,
            });
        }
        // Shadow effects (exact: conflicting ops are never in flight together).
        let (raddr, rkey) = (rq_pair.mr.addr() + p.remote, rq_pair.mr.rkey());
        let opcode = match p.kind {
            Kind::Send | Kind::SendImm => {
                let data = self.gather(req, &p.local);
                self.scatter(resp, &p.recv.clone(), &data, i);
                if p.kind == Kind::Send {
                    WrOpcode::Send
                } else {
                    WrOpcode::SendWithImm(p.imm)
                }
            }
            Kind::Write | Kind::WriteImm => {
                let data = self.gather(req, &p.local);
                self.scatter(resp, &[(p.remote, p.len)], &data, i);
                if p.kind == Kind::Write {
                    WrOpcode::Write { remote_addr: raddr, rkey }
                } else {
                    WrOpcode::WriteWithImm { remote_addr: raddr, rkey, imm: p.imm }
                }
            }
            Kind::Read => {
                let data = self.gather(resp, &[(p.remote, p.len)]);
                self.scatter(req, &p.local.clone(), &data, i);
                WrOpcode::Read { remote_addr: raddr, rkey }
            }
            Kind::CmpSwap | Kind::FetchAdd => {
                let orig = self.word(resp, p.remote);
                let (op, new) = if p.kind == Kind::CmpSwap {
                    let compare = if p.hit { orig } else { p.compare };
                    let new = if orig == compare { p.swap_add } else { orig };
                    (WrOpcode::CompareSwap { remote_addr: raddr, rkey, compare, swap: p.swap_add }, new)
                } else {
                    (WrOpcode::FetchAdd { remote_addr: raddr, rkey, add: p.swap_add }, orig.wrapping_add(p.swap_add))
                };
                self.scatter(resp, &[(p.remote, 8)], &new.to_le_bytes(), i);
                self.scatter(req, &p.local.clone(), &orig.to_le_bytes(), i);
                op
            }
        };
        // Signaled unless asked otherwise, but never let the ring fill with unsignaled WRs.
        let signaled = p.signaled || self.sq[req][q].len() + 1 >= self.depth();
        let wr = SendWr::new(wr_id, opcode, self.sges(req, &p.local)?).with_signaled(signaled).with_solicited(p.imm & 1 == 1);
        ep(self.pair, req).qps[q].post_send(&wr).map_err(|e| format!("op {i}: post_send: {e}"))?;
        let idx = self.sq_idx[req][q];
        self.sq_idx[req][q] = idx.wrapping_add(1);
        self.seq += 1;
        let seq = self.seq;
        let wc = signaled.then(|| ExpectWc { wr_id, opcode: wc_opcode(p.kind), byte_len: p.len as u32, imm: None, wqe_idx: idx });
        if signaled {
            self.last_signaled[req][q] = Some(seq);
        } else {
            self.stats.unsignaled += 1;
        }
        self.sq[req][q].push_back(Posted { seq, op: Some(i), wc });
        for f in &p.footprint {
            self.inflight.push(InFlight { foot: *f, owner: (req, q), seq });
        }
        self.stats.ops += 1;
        self.stats.bytes += p.len;
        let outstanding: usize = self.sq.iter().flatten().map(VecDeque::len).sum();
        self.stats.max_outstanding = self.stats.max_outstanding.max(outstanding);
        self.stats.per_kind[KINDS.iter().position(|k| *k == p.kind).expect("kind")] += 1;
        Ok(())
    }

    /// A signaled zero-length RDMA WRITE on (side, q): its completion proves the unsignaled WRs
    /// before it complete.
    fn fence(&mut self, side: usize, q: usize) -> Result<(), String> {
        let peer = ep(self.pair, 1 - side);
        self.seq += 1;
        let seq = self.seq;
        let wr_id = FENCE_TAG | seq;
        let wr = SendWr::new(wr_id, WrOpcode::Write { remote_addr: peer.mr.addr(), rkey: peer.mr.rkey() }, vec![]);
        ep(self.pair, side).qps[q].post_send(&wr).map_err(|e| format!("fence on {} QP {q}: {e}", side_name(side)))?;
        let idx = self.sq_idx[side][q];
        self.sq_idx[side][q] = idx.wrapping_add(1);
        self.last_signaled[side][q] = Some(seq);
        self.sq[side][q].push_back(Posted {
            seq,
            op: None,
            wc: Some(ExpectWc { wr_id, opcode: WcOpcode::RdmaWrite, byte_len: 0, imm: None, wqe_idx: idx }),
        });
        self.stats.fences += 1;
        Ok(())
    }

    /// Whether (side, q) has unsignaled WRs after its last signaled one.
    fn unsignaled_tail(&self, side: usize, q: usize) -> bool {
        match self.sq[side][q].back() {
            Some(b) => self.last_signaled[side][q].is_none_or(|s| b.seq > s),
            None => false,
        }
    }

    fn describe_op(&self, i: usize) -> String {
        let p = &self.plans[i];
        format!(
            "op {i} ({:?} {}->{} QP {} len {} local {:?} remote {:#x} recv {:?} signaled {})",
            p.kind,
            side_name(p.req),
            side_name(1 - p.req),
            p.q,
            p.len,
            p.local,
            p.remote,
            p.recv,
            p.signaled
        )
    }

    fn describe_wr(&self, wr_id: u64) -> String {
        if wr_id & FENCE_TAG != 0 {
            "a fence".into()
        } else {
            let i = (wr_id & !RECV_TAG) as usize;
            if i >= 1 && i <= self.plans.len() {
                self.describe_op(i - 1)
            } else {
                format!("unknown wr_id {wr_id:#x}")
            }
        }
    }

    fn check_wc(&self, side: usize, wc: &WorkCompletion, want: &ExpectWc) -> Result<(), String> {
        let got = ExpectWc { wr_id: wc.wr_id, opcode: wc.opcode, byte_len: wc.byte_len, imm: wc.imm, wqe_idx: wc.wqe_idx };
        if wc.status != WcStatus::Success || got != *want {
            return Err(format!(
                "NIC {}: wrong completion {wc:?}\n  expected {want:?} with status Success\n  for {}",
                side_name(side),
                self.describe_wr(want.wr_id)
            ));
        }
        Ok(())
    }

    fn on_wc(&mut self, side: usize, wc: &WorkCompletion) -> Result<(), String> {
        let Some(&q) = self.qp_index.get(&(side, wc.qpn)) else {
            return Err(format!("NIC {}: completion for unknown QP: {wc:?}", side_name(side)));
        };
        if wc.opcode.is_recv() {
            self.stats.recv_cqes += 1;
            let Some(want) = self.rq[side][q].pop_front() else {
                return Err(format!("NIC {}: unexpected receive completion {wc:?} ({})", side_name(side), self.describe_wr(wc.wr_id)));
            };
            return self.check_wc(side, wc, &want);
        }
        self.stats.send_cqes += 1;
        let fifo = &self.sq[side][q];
        let Some(k) = fifo.iter().position(|p| p.wc.is_some()) else {
            return Err(format!("NIC {}: unexpected send completion {wc:?} ({})", side_name(side), self.describe_wr(wc.wr_id)));
        };
        let want = fifo[k].wc.clone().expect("signaled");
        let seq = fifo[k].seq;
        self.check_wc(side, wc, &want)?;
        for _ in 0..=k {
            self.sq[side][q].pop_front();
        }
        self.inflight.retain(|f| !(f.owner == (side, q) && f.seq <= seq));
        Ok(())
    }

    fn poll(&mut self) -> Result<usize, String> {
        let mut n = 0;
        let mut buf = [WorkCompletion::default(); 64];
        for side in 0..2 {
            loop {
                let k = ep(self.pair, side).cq.poll(&mut buf).map_err(|e| format!("poll CQ of NIC {}: {e}", side_name(side)))?;
                for wc in &buf[..k] {
                    self.on_wc(side, wc)?;
                }
                n += k;
                if k < buf.len() {
                    break;
                }
            }
        }
        Ok(n)
    }

    fn outstanding(&self) -> String {
        let mut s = String::new();
        for side in 0..2 {
            for q in 0..self.w.qps {
                if let Some(p) = self.sq[side][q].front() {
                    s += &format!(
                        "\n  NIC {} QP {q}: {} send WRs outstanding, oldest {}",
                        side_name(side),
                        self.sq[side][q].len(),
                        p.op.map(|i| self.describe_op(i)).unwrap_or_else(|| "a fence".into())
                    );
                }
                if let Some(r) = self.rq[side][q].front() {
                    s += &format!(
                        "\n  NIC {} QP {q}: {} receive completions missing, first for {}",
                        side_name(side),
                        self.rq[side][q].len(),
                        self.describe_wr(r.wr_id)
                    );
                }
            }
        }
        s
    }

    fn run(&mut self) -> Result<(), String> {
        let mut next = 0;
        let mut idle = 0u32;
        let mut tail_fenced = false;
        loop {
            // Post as much as the queues and the footprints allow, in order.
            while next < self.plans.len() {
                match self.blocked(&self.plans[next]) {
                    None => {
                        self.post(next)?;
                        next += 1;
                    }
                    Some(Block::Conflict(side, q, seq)) => {
                        // The blocker is only ever released if a signaled WR follows it.
                        if self.last_signaled[side][q].is_none_or(|s| s < seq) {
                            self.fence(side, q)?;
                        }
                        break;
                    }
                    Some(Block::SqFull | Block::RqFull) => break,
                }
            }
            if next == self.plans.len() && !tail_fenced {
                for side in 0..2 {
                    for q in 0..self.w.qps {
                        if self.unsignaled_tail(side, q) {
                            self.fence(side, q)?;
                        }
                    }
                }
                tail_fenced = true;
            }
            let got = self.poll()?;
            let busy = (0..2).any(|s| self.sq[s].iter().any(|f| !f.is_empty()) || self.rq[s].iter().any(|f| !f.is_empty()));
            if next == self.plans.len() && !busy {
                return Ok(());
            }
            if got > 0 {
                idle = 0;
                continue;
            }
            idle += 1;
            if idle > STALL_LIMIT {
                return Err(format!(
                    "no completion for {STALL_LIMIT} progress calls ({} cycles); {next} of {} ops posted; outstanding:{}",
                    STALL_LIMIT as u64 * 1000,
                    self.plans.len(),
                    self.outstanding()
                ));
            }
            self.pair.a.ctx.progress().map_err(|e| format!("after posting {next} of {} ops: {e}", self.plans.len()))?;
        }
    }

    /// Every byte of both MRs must equal the shadow.
    fn check_memory(&self) -> Result<(), String> {
        for side in 0..2 {
            let got = ep(self.pair, side).mr.read_vec(0, self.lay.mr_len as usize).map_err(|e| format!("read MR: {e}"))?;
            let want = &self.shadow[side];
            if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
                let bad = got.iter().zip(want).filter(|(a, b)| a != b).count();
                let last = got.iter().zip(want).rposition(|(a, b)| a != b).unwrap_or(at);
                let w = self.writer[side][at];
                return Err(format!(
                    "NIC {} MR: {bad} bytes differ from the shadow, first at offset {at:#x} (got {:#04x}, want {:#04x}), last at {last:#x}; \
                     last writer of that byte per the shadow: {}",
                    side_name(side),
                    got[at],
                    want[at],
                    if w == 0 { "none (initial contents)".into() } else { self.describe_op(w as usize - 1) }
                ));
            }
        }
        Ok(())
    }
}

/// On a fault-free link with receives posted before the sends that need them, no frame is dropped,
/// duplicated or NAKed, and every frame one NIC sent the other received.
fn check_counters(pair: &Pair) -> Result<(), String> {
    let read = |side: usize| -> Vec<(&'static str, u64)> {
        counter::ALL.iter().filter(|(n, _)| *n != "NUM").map(|&(n, i)| (n, ep(pair, side).ctx.counter(i))).collect()
    };
    let c = [read(0), read(1)];
    for side in 0..2 {
        let bad: Vec<_> = c[side].iter().filter(|(n, v)| !matches!(*n, "TX_PKTS" | "RX_PKTS") && *v != 0).collect();
        let tx_peer = c[1 - side].iter().find(|(n, _)| *n == "TX_PKTS").map(|x| x.1);
        let rx = c[side].iter().find(|(n, _)| *n == "RX_PKTS").map(|x| x.1);
        if !bad.is_empty() || tx_peer != rx {
            return Err(format!("NIC {} counters: {:?} (peer sent {tx_peer:?} frames)", side_name(side), c[side]));
        }
    }
    Ok(())
}

/// Run one workload in lockstep; returns statistics.
fn run_workload(w: &Workload) -> Result<Stats, String> {
    let lay = Layout::new(w);
    let depth = w.depth.max(2).next_power_of_two();
    let mut o = PairOptions::on(Backend::Lockstep);
    o.qps = w.qps;
    o.mtu = w.mtu;
    o.scrambled = w.scrambled;
    o.mr_len = lay.mr_len;
    o.depth = depth;
    // Every QP's send and receive queues can be full at once: the CQ must hold them all.
    o.cq_depth = (2 * depth * w.qps as u32).next_power_of_two().clamp(64, 1 << 16);
    o.fabric.host_mem_bytes = (64 << 20).max(4 * lay.mr_len as usize + (16 << 20));
    let pair = Pair::new(&o).map_err(|e| format!("setup: {e}"))?;
    let mut r = Runner::new(w, &pair, lay)?;
    r.run()?;
    r.check_memory()?;
    pair.settle().map_err(|e| format!("settle: {e}"))?;
    check_counters(&pair)?;
    let mut stats = r.stats;
    stats.cycles = pair.fabric.borrow().cycle();
    Ok(stats)
}

// ------------------------------------------------------------------------------------------------
// Proptest: random workloads
// ------------------------------------------------------------------------------------------------

fn len_strategy() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => Just(0u32),
        40 => 1u32..=64,
        35 => 65u32..=4096,
        14 => 4097u32..=32768,
        4 => 32769u32..=(256 << 10),
        1 => (256u32 << 10) + 1..=(1 << 20),
    ]
}

fn op_strategy() -> impl Strategy<Value = OpSpec> {
    (
        (any::<bool>(), any::<u16>(), prop::sample::select(KINDS.to_vec()), len_strategy()),
        (any::<u64>(), any::<u64>(), 1u8..=4, 1u8..=3, any::<u64>()),
        (prop::bool::weighted(0.75), any::<u64>(), any::<u64>(), any::<bool>(), 0u8..ATOM_WORDS as u8),
    )
        .prop_map(|((from_b, qp, kind, len), (loc, rem, sges, rsges, split), (signaled, v1, v2, hit, word))| OpSpec {
            from_b,
            qp,
            kind,
            len,
            loc,
            rem,
            sges,
            rsges,
            split,
            signaled,
            v1,
            v2,
            hit,
            word,
        })
}

fn workload_strategy() -> impl Strategy<Value = Workload> {
    (
        prop_oneof![12 => 1usize..=4, 4 => 5usize..=16, 1 => 17usize..=64],
        (0u8..5).prop_map(mtu_of),
        prop::bool::weighted(0.3),
        prop::sample::select(vec![4u32, 8, 16, 64]),
        prop::sample::select(vec![16u64 << 10, 64 << 10, 1 << 20]),
        prop::collection::vec(op_strategy(), 1..64),
    )
        .prop_map(|(qps, mtu, scrambled, depth, min_data, ops)| Workload { qps, mtu, scrambled, depth, min_data, ops })
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

fn summary(w: &Workload, s: &Stats, wall: Duration) -> String {
    format!(
        "{} QPs, {:?}, depth {}{}, data {} KiB, {} ops ({} unsignaled, {} fences, up to {} outstanding), {} bytes, kinds {:?}, {} cycles, {:.2?}",
        w.qps,
        w.mtu,
        w.depth,
        if w.scrambled { ", scrambled" } else { "" },
        Layout::new(w).data_len() >> 10,
        s.ops,
        s.unsignaled,
        s.fences,
        s.max_outstanding,
        s.bytes,
        s.per_kind,
        s.cycles,
        wall
    )
}

#[test]
fn random_workloads_in_lockstep() {
    let mut cfg = Config::default(); // honours PROPTEST_CASES, PROPTEST_RNG_SEED, ...
    if std::env::var_os("PROPTEST_CASES").is_none() {
        cfg.cases = 8;
    }
    if let Some(n) = env_u64("RNIC_CASES") {
        cfg.cases = n as u32;
    }
    let seed = env_u64("RNIC_SEED").unwrap_or_else(|| match cfg.rng_seed {
        RngSeed::Fixed(s) => s,
        RngSeed::Random => {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            (t.as_nanos() as u64) ^ u64::from(std::process::id()).rotate_left(32)
        }
    });
    cfg.rng_seed = RngSeed::Fixed(seed);
    cfg.failure_persistence = None;
    // Shrinking re-runs the simulation: bound it (override with the PROPTEST_ variables).
    if std::env::var_os("PROPTEST_MAX_SHRINK_TIME").is_none() {
        cfg.max_shrink_time = 300_000;
    }
    if std::env::var_os("PROPTEST_MAX_SHRINK_ITERS").is_none() {
        cfg.max_shrink_iters = 1000;
    }
    let cases = cfg.cases;
    let replay = format!("RNIC_SEED={seed:#x} RNIC_CASES={cases} cargo test --release -p rnic-testbench --test random_lockstep -- random_workloads_in_lockstep --nocapture");
    eprintln!("random_workloads_in_lockstep: seed {seed:#x}, {cases} cases (replay: {replay})");
    let started = Instant::now();
    let mut runner = TestRunner::new(cfg);
    // Counts every run, including the re-runs while shrinking a failure.
    let case = Cell::new(0usize);
    let total = Cell::new((0usize, 0u64));
    let result = runner.run(&workload_strategy(), |w| {
        let case = case.replace(case.get() + 1) + 1;
        let t = Instant::now();
        match run_workload(&w) {
            Ok(s) => {
                eprintln!("run {case}: OK: {}", summary(&w, &s, t.elapsed()));
                let (ops, cycles) = total.get();
                total.set((ops + s.ops, cycles + s.cycles));
                Ok(())
            }
            Err(e) => {
                eprintln!("run {case}: FAILED ({} QPs, {:?}, {} ops): {e}", w.qps, w.mtu, w.ops.len());
                Err(TestCaseError::fail(e))
            }
        }
    });
    match result {
        Ok(()) => eprintln!(
            "random_workloads_in_lockstep: {cases} workloads passed, {} ops, {} cycles simulated, wall {:.2?}",
            total.get().0,
            total.get().1,
            started.elapsed()
        ),
        Err(TestError::Fail(reason, w)) => panic!(
            "random lockstep workload failed: {reason}\n\nminimal failing workload: {w:#?}\n\n\
             replay (seed {seed:#x}): {replay}\n(set PROPTEST_MAX_SHRINK_ITERS=0 to skip shrinking)"
        ),
        Err(e) => panic!("{e}\nreplay: {replay}"),
    }
}

// ------------------------------------------------------------------------------------------------
// Deterministic: ten thousand ops
// ------------------------------------------------------------------------------------------------

/// A seeded workload of `n` small ops over `qps` QPs.
fn small_workload(rng: &mut Rng, qps: usize, mtu: Mtu, n: usize) -> Workload {
    let ops = (0..n)
        .map(|_| {
            let kind = KINDS[rng.below(7) as usize];
            let len = match rng.below(100) {
                0..=4 => 0,
                5..=59 => rng.range(1, 64),
                60..=94 => rng.range(65, 1024),
                _ => rng.range(1025, (4 * u64::from(mtu.bytes())).max(2048)),
            } as u32;
            OpSpec {
                from_b: rng.chance(1, 2),
                qp: rng.below(qps as u64) as u16,
                kind,
                len,
                loc: rng.next(),
                rem: rng.next(),
                sges: rng.range(1, 4) as u8,
                rsges: rng.range(1, 3) as u8,
                split: rng.next(),
                signaled: rng.chance(3, 4),
                v1: rng.next(),
                v2: rng.next(),
                hit: rng.chance(1, 2),
                word: rng.below(ATOM_WORDS) as u8,
            }
        })
        .collect();
    let min_data = if rng.chance(1, 2) { 64 << 10 } else { 1 << 20 };
    Workload { qps, mtu, scrambled: rng.chance(1, 2), depth: 64, min_data, ops }
}

#[test]
fn ten_thousand_ops_in_lockstep() {
    const SEED: u64 = 0x10_000;
    let mut rng = Rng::new(SEED);
    let started = Instant::now();
    let mut total = Stats::default();
    let mtus = [Mtu::Mtu1024, Mtu::Mtu256, Mtu::Mtu4096, Mtu::Mtu512, Mtu::Mtu2048];
    // Progress on stderr for a person watching; hidden when stderr is not a terminal or under CI.
    let bar = if std::env::var_os("CI").is_some() || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(mtus.len() as u64)
    };
    for (k, mtu) in mtus.into_iter().enumerate() {
        let qps = rng.range(8, 16) as usize;
        let w = small_workload(&mut rng, qps, mtu, 2000);
        let t = Instant::now();
        let s = run_workload(&w).unwrap_or_else(|e| panic!("segment {k} (seed {SEED:#x}, {qps} QPs, {mtu:?}): {e}"));
        bar.suspend(|| eprintln!("segment {k}: {}", summary(&w, &s, t.elapsed())));
        bar.inc(1);
        total.ops += s.ops;
        total.fences += s.fences;
        total.unsignaled += s.unsignaled;
        total.send_cqes += s.send_cqes;
        total.recv_cqes += s.recv_cqes;
        total.bytes += s.bytes;
        total.cycles += s.cycles;
        total.max_outstanding = total.max_outstanding.max(s.max_outstanding);
        for i in 0..7 {
            total.per_kind[i] += s.per_kind[i];
        }
    }
    bar.finish_and_clear();
    let wall = started.elapsed();
    eprintln!(
        "ten_thousand_ops_in_lockstep: {} ops (SEND, SEND_IMM, WRITE, WRITE_IMM, READ, CMP_SWAP, FETCH_ADD = {:?}), \
         {} unsignaled, {} fences, up to {} WRs outstanding, {} send + {} recv completions, {} payload bytes, {} cycles simulated, wall {:.2?}, 0 mismatches",
        total.ops, total.per_kind, total.unsignaled, total.fences, total.max_outstanding, total.send_cqes, total.recv_cqes, total.bytes, total.cycles, wall
    );
    assert!(total.ops >= 10_000, "only {} ops ran", total.ops);
    assert!(total.per_kind.iter().all(|&n| n > 0), "some op kind never ran: {:?}", total.per_kind);
}
