// SPDX-License-Identifier: Apache-2.0
//! Transaction-level reference model of one RNIC (RoCEv2, RC), implementing
//! `docs/architecture.md` sections 3-11 task by task, so that a lockstep checker can run it next
//! to the RTL and compare frames, DMA writes and MSI-X messages.
//!
//! The split follows Linux rxe: [`wire`] (frames, ICRC), `cmd` (admin commands), `recv` (receive
//! checks and routing), `req` (requester), `resp` (responder), `comp` (completer), `cq` (CQE
//! writer and flushes), `mr` (key checks, translation, piece splitting).
//!
//! Where the contract is silent the model chooses (to be folded into the contract):
//! * MAC / IPv4 numbers go on the wire most significant byte first.
//! * QP commands (MODIFY/QUERY/DESTROY) use the CREATE_QP index range `2..NUM_QP`.
//! * WRITE MIDDLE/LAST re-check the message's rkey for the bytes they place (NAK_REM_ACCESS if
//!   the MR went away); AETH type 2 (reserved) is treated like an unknown NAK (REM_OP_ERR).
//! * Reads of write-only or unaligned offsets return 0 and count `MMIO_BAD`.
//! * A frame with more than 4096 payload bytes is a header drop (section 13).
//! * Model-only scheduling pushes a QP onto the ring whenever an ACK moves `acked_psn`, and
//!   re-pushes after a TX task only if it did something.
//! * Function Level Reset / VF disable (section 4): the configuration write puts the function in
//!   reset; [`Task::Flr`] and [`Task::FlrDone`] follow the RTL's two teardown tasks.

mod cfg;
mod cmd;
mod comp;
mod cq;
mod error;
mod mr;
mod recv;
mod req;
mod resp;
pub mod wire;

use std::collections::VecDeque;

pub use error::{MemError, ModelError};
use rnic_regs::{
    counter, params, qp_state, recv_wqe, reg, send_wqe, trace, wqe_flag, wr_opcode, Cqc, Mrc, Pdc,
    Qpc,
};

/// Sizes of the context memories (the RTL parameters `NumQp`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NicConfig {
    /// Number of queue pairs.
    pub num_qp: u32,
    /// Number of completion queues.
    pub num_cq: u32,
    /// Number of memory regions.
    pub num_mr: u32,
    /// Number of protection domains.
    pub num_pd: u32,
    /// Number of MTT entries.
    pub num_mtt: u32,
    /// SR-IOV TotalVFs (the RTL parameter `NumVf`).
    pub num_vf: u16,
}

impl Default for NicConfig {
    fn default() -> Self {
        NicConfig {
            num_qp: params::NUM_QP as u32,
            num_cq: params::NUM_CQ as u32,
            num_mr: params::NUM_MR as u32,
            num_pd: params::NUM_PD as u32,
            num_mtt: params::NUM_MTT as u32,
            num_vf: params::NUM_VF as u16,
        }
    }
}

/// Host memory as the NIC's DMA engine sees it. `func` is the PCIe function of the request.
pub trait HostMemory {
    /// Read `buf.len()` bytes at `addr`.
    ///
    /// # Errors
    /// [`MemError`] when the range is not backed.
    fn read(&mut self, func: u8, addr: u64, buf: &mut [u8]) -> Result<(), MemError>;
    /// Write `data` at `addr`.
    ///
    /// # Errors
    /// [`MemError`] when the range is not backed.
    fn write(&mut self, func: u8, addr: u64, data: &[u8]) -> Result<(), MemError>;
}

/// One engine task (section 5); the trace port reports one per task start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// Execute the pending admin command of a function.
    Cmd {
        /// The function whose command runs.
        func: u8,
    },
    /// Pop and execute one doorbell.
    Db,
    /// Process the oldest received frame.
    Rx,
    /// One requester step on a QP.
    Tx {
        /// Local QP number.
        qpn: u32,
    },
    /// Flush one send WQE of a QP in ERR.
    FlushSq {
        /// Local QP number.
        qpn: u32,
    },
    /// Flush one receive WQE of a QP in ERR.
    FlushRq {
        /// Local QP number.
        qpn: u32,
    },
    /// The QP's retransmission or RNR timer expired (section 10a).
    Timer {
        /// Local QP number.
        qpn: u32,
    },
    /// Function Level Reset, phase 1 (section 4): the function's command interface resets and
    /// its QPs go to ERR, so the flush tasks complete their WQEs.
    Flr {
        /// The function being reset.
        func: u8,
    },
    /// Function Level Reset, phase 2: every object of the function is freed; its reset ends.
    FlrDone {
        /// The function being reset.
        func: u8,
    },
}

impl Task {
    /// Decode a trace event (`trace::*` kind, its QPN and its function).
    pub fn from_trace(kind: u8, qpn: u32, func: u8) -> Option<Task> {
        Some(match kind {
            trace::CMD => Task::Cmd { func },
            trace::DB => Task::Db,
            trace::RX => Task::Rx,
            trace::TX => Task::Tx { qpn },
            trace::FLUSH_SQ => Task::FlushSq { qpn },
            trace::FLUSH_RQ => Task::FlushRq { qpn },
            trace::TIMER => Task::Timer { qpn },
            trace::FLR => Task::Flr { func },
            trace::FLR_DONE => Task::FlrDone { func },
            _ => return None,
        })
    }

    /// The `trace::*` kind of this task.
    pub fn trace_kind(&self) -> u8 {
        match self {
            Task::Cmd { .. } => trace::CMD,
            Task::Db => trace::DB,
            Task::Rx => trace::RX,
            Task::Tx { .. } => trace::TX,
            Task::FlushSq { .. } => trace::FLUSH_SQ,
            Task::FlushRq { .. } => trace::FLUSH_RQ,
            Task::Timer { .. } => trace::TIMER,
            Task::Flr { .. } => trace::FLR,
            Task::FlrDone { .. } => trace::FLR_DONE,
        }
    }

    /// The QPN the trace port reports (0 for CMD, DB and RX).
    pub fn qpn(&self) -> u32 {
        match *self {
            Task::Tx { qpn } | Task::FlushSq { qpn } | Task::FlushRq { qpn } | Task::Timer { qpn } => {
                qpn
            }
            _ => 0,
        }
    }
}

/// An observable output, in the order the model produced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// A frame sent on the link (no FCS).
    Frame(Vec<u8>),
    /// One DMA write burst (already applied to host memory).
    DmaWrite {
        /// PCIe function.
        func: u8,
        /// Host address.
        addr: u64,
        /// Data.
        data: Vec<u8>,
    },
    /// One MSI-X message.
    Msix {
        /// PCIe function.
        func: u8,
        /// Vector.
        vector: u16,
    },
}

/// A queued doorbell write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Doorbell {
    SqPi { func: u8, qpn: u32, value: u64 },
    RqPi { func: u8, qpn: u32, value: u64 },
    CqCi { func: u8, cqn: u32, value: u64 },
    CqArm { func: u8, cqn: u32 },
}

impl Doorbell {
    fn func(&self) -> u8 {
        match *self {
            Doorbell::SqPi { func, .. }
            | Doorbell::RqPi { func, .. }
            | Doorbell::CqCi { func, .. }
            | Doorbell::CqArm { func, .. } => func,
        }
    }
}

/// Per-function state outside the context tables (docs/architecture.md, Functions).
#[derive(Clone, Debug, Default)]
pub(crate) struct Function {
    pub mac: u64,
    pub ip: u32,
    pub trust: bool,
    /// Spoof-check: frames must carry the address the PF assigned (`admin_mac`/`admin_ip`).
    pub spoofchk: bool,
    pub admin_mac: u64,
    pub admin_ip: u32,
    /// DMA window `[dma_base, dma_end)` the PF set with SET_VF_DMA (reset: empty; the PF's own
    /// window is all of memory and not stored).
    pub dma_base: u64,
    pub dma_end: u64,
    /// Transmit rate limit in Mb/s (SET_VF_RATE; 0 = none). Only the RTL's scheduler applies
    /// it (the model has no clock); the model keeps it for the command's checks.
    pub rate_mbps: u32,
    pub cmd_args: [u64; 6],
    /// Opcode of the queued command (CMD_STATUS reads BUSY while set).
    pub cmd_pending: Option<u8>,
    pub cmd_status: u8,
    pub cmd_out: [u64; 2],
}

/// Resource types with a per-function range, in `RES_*` register order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Res {
    Qp = 0,
    Cq = 1,
    Mr = 2,
    Pd = 3,
    Mtt = 4,
}

/// One scatter/gather entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sge {
    pub addr: u64,
    pub len: u32,
    pub lkey: u32,
}

/// A send WQE decoded with the `send_wqe` layout.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SendWqe {
    pub wr_id: u64,
    pub opcode: u8,
    pub flags: u8,
    pub num_sge: u8,
    pub imm: u32,
    pub remote_addr: u64,
    pub rkey: u32,
    pub compare_add: u64,
    pub swap: u64,
    pub sge: [Sge; params::MAX_SEND_SGE as usize],
    /// `flags & INLINE`: the payload is `inline[..inline_len]` (WQE bytes 64..128).
    pub inline_len: u16,
    pub inline: [u8; params::MAX_INLINE as usize],
}

impl Default for SendWqe {
    fn default() -> SendWqe {
        SendWqe {
            wr_id: 0,
            opcode: 0,
            flags: 0,
            num_sge: 0,
            imm: 0,
            remote_addr: 0,
            rkey: 0,
            compare_add: 0,
            swap: 0,
            sge: [Sge::default(); params::MAX_SEND_SGE as usize],
            inline_len: 0,
            inline: [0; params::MAX_INLINE as usize],
        }
    }
}

impl SendWqe {
    fn decode(b: &[u8]) -> SendWqe {
        use send_wqe as w;
        let addr = [w::SGE0_ADDR, w::SGE1_ADDR, w::SGE2_ADDR, w::SGE3_ADDR];
        let len = [w::SGE0_LEN, w::SGE1_LEN, w::SGE2_LEN, w::SGE3_LEN];
        let lkey = [w::SGE0_LKEY, w::SGE1_LKEY, w::SGE2_LKEY, w::SGE3_LKEY];
        let mut sge = [Sge::default(); params::MAX_SEND_SGE as usize];
        for (i, s) in sge.iter_mut().enumerate() {
            *s = Sge {
                addr: addr[i].get(b),
                len: len[i].get(b) as u32,
                lkey: lkey[i].get(b) as u32,
            };
        }
        SendWqe {
            wr_id: w::WR_ID.get(b),
            opcode: w::OPCODE.get(b) as u8,
            flags: w::FLAGS.get(b) as u8,
            num_sge: w::NUM_SGE.get(b) as u8,
            imm: w::IMM.get(b) as u32,
            remote_addr: w::REMOTE_ADDR.get(b),
            rkey: w::RKEY.get(b) as u32,
            compare_add: w::COMPARE_ADD.get(b),
            swap: w::SWAP.get(b),
            sge,
            inline_len: w::INLINE_LEN.get(b) as u16,
            inline: b[64..64 + params::MAX_INLINE as usize].try_into().expect("a 128-byte WQE"),
        }
    }

    /// The SGEs in use (num_sge clamped to the array, for WQEs validated earlier).
    pub fn sges(&self) -> &[Sge] {
        &self.sge[..(self.num_sge as usize).min(self.sge.len())]
    }

    /// Message length `L`.
    pub fn len(&self) -> u64 {
        if self.is_inline() {
            return u64::from(self.inline_len);
        }
        self.sges().iter().map(|s| s.len as u64).sum()
    }

    /// `IBV_SEND_INLINE`: the payload is in the WQE.
    pub fn is_inline(&self) -> bool {
        u32::from(self.flags) & wqe_flag::INLINE != 0
    }

    pub fn is_read_or_atomic(&self) -> bool {
        matches!(
            self.opcode,
            wr_opcode::RDMA_READ | wr_opcode::ATOMIC_CMP_AND_SWP | wr_opcode::ATOMIC_FETCH_AND_ADD
        )
    }

    pub fn is_atomic(&self) -> bool {
        matches!(
            self.opcode,
            wr_opcode::ATOMIC_CMP_AND_SWP | wr_opcode::ATOMIC_FETCH_AND_ADD
        )
    }

    /// PSNs the WQE uses: `max(1, ceil(L / mtu))`, atomics 1.
    pub fn npkts(&self, mtu: u32) -> u32 {
        if self.is_atomic() {
            1
        } else {
            (self.len().div_ceil(mtu as u64)).max(1) as u32
        }
    }
}

/// A receive WQE decoded with the `recv_wqe` layout.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RecvWqe {
    pub wr_id: u64,
    pub num_sge: u8,
    pub sge: [Sge; params::MAX_RECV_SGE as usize],
}

impl RecvWqe {
    fn decode(b: &[u8]) -> RecvWqe {
        use recv_wqe as w;
        let addr = [w::SGE0_ADDR, w::SGE1_ADDR, w::SGE2_ADDR];
        let len = [w::SGE0_LEN, w::SGE1_LEN, w::SGE2_LEN];
        let lkey = [w::SGE0_LKEY, w::SGE1_LKEY, w::SGE2_LKEY];
        let mut sge = [Sge::default(); params::MAX_RECV_SGE as usize];
        for (i, s) in sge.iter_mut().enumerate() {
            *s = Sge {
                addr: addr[i].get(b),
                len: len[i].get(b) as u32,
                lkey: lkey[i].get(b) as u32,
            };
        }
        RecvWqe {
            wr_id: w::WR_ID.get(b),
            num_sge: w::NUM_SGE.get(b) as u8,
            sge,
        }
    }

    pub fn sges(&self) -> &[Sge] {
        &self.sge[..(self.num_sge as usize).min(self.sge.len())]
    }
}

/// PSN arithmetic: 24-bit wrap.
pub(crate) fn psn_add(a: u32, n: u32) -> u32 {
    a.wrapping_add(n) & 0xFF_FFFF
}

/// Signed 24-bit distance `a - b` (positive: `a` is ahead).
pub(crate) fn psn_diff(a: u32, b: u32) -> i32 {
    ((a.wrapping_sub(b) << 8) as i32) >> 8
}

/// One entry of the responder's resource ring (section 9a).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RespRes {
    /// A READ request (else an executed atomic).
    pub read: bool,
    /// PSN of the request.
    pub psn: u32,
    /// READ: remote virtual address; atomic: the original value.
    pub va: u64,
    /// READ: rkey and length.
    pub rkey: u32,
    pub len: u32,
}

/// The model of one NIC.
pub struct Nic {
    cfg: NicConfig,
    qpc: Vec<Qpc>,
    cqc: Vec<Cqc>,
    mrc: Vec<Mrc>,
    pdc: Vec<Pdc>,
    mtt: Vec<u64>,
    /// PF and VFs (index = function number).
    funcs: Vec<Function>,
    /// Per QP: the responder's resource ring (section 9a): accepted READ requests and executed
    /// atomics; `qpc.rsp_cnt` entries ending at `qpc.atom_wp` still wait for their responses.
    pub(crate) atom_hist: Vec<[Option<RespRes>; params::ATOM_HIST as usize]>,
    /// Per QP: the receive WQE copies (section 9), slot = ring index mod `WQE_COPIES`, filled
    /// by lines read by the responder and the RQ_PI doorbell's read-ahead.
    pub(crate) rq_copies: Vec<[Option<(u16, RecvWqe)>; params::WQE_COPIES as usize]>,
    /// Per QP: the send WQE copies (section 8), slot = ring index mod `WQE_COPIES`, each a WQE
    /// with its index; the requester and the completer look WQEs up here first.
    pub(crate) wqe_copies: Vec<[Option<(u16, SendWqe)>; params::WQE_COPIES as usize]>,
    /// Per QP: the completer's own copies of send WQEs (section 10), filled the same way.
    pub(crate) comp_copies: Vec<[Option<(u16, SendWqe)>; params::WQE_COPIES as usize]>,
    /// Function of the last command the engine took (round-robin).
    cmd_last: u8,
    /// Function of the command running now.
    cur_func: u8,
    /// VF resource profile: number of VFs and per-VF count of each `Res`.
    vf_res: (u64, [u64; 5]),
    db_fifo: VecDeque<Doorbell>,
    rx_queue: VecDeque<Vec<u8>>,
    /// Model-only scheduling, two levels like the RTL (section 5): per function a FIFO of QPs
    /// that may have work, served round-robin over functions after `ring_last`.
    rings: Vec<VecDeque<u32>>,
    ring_last: usize,
    in_ring: Vec<bool>,
    counters: [u64; counter::NUM as usize],
    outputs: Vec<Output>,
    /// Reused payload buffer (no allocation per packet).
    scratch: Vec<u8>,
    /// PCI configuration space (PF and VFs).
    cfgspace: cfg::ConfigSpace,
    /// Functions whose FLR task ran and whose FLR_DONE task has not (index = function).
    flr_on: Vec<bool>,
}

impl Nic {
    /// A NIC after reset: every context invalid, port address 0.
    pub fn new(cfg: NicConfig) -> Nic {
        Nic {
            cfg,
            qpc: vec![Qpc::default(); cfg.num_qp as usize],
            cqc: vec![Cqc::default(); cfg.num_cq as usize],
            mrc: vec![Mrc::default(); cfg.num_mr as usize],
            pdc: vec![Pdc::default(); cfg.num_pd as usize],
            mtt: vec![0; cfg.num_mtt as usize],
            funcs: vec![Function::default(); cfg.num_vf as usize + 1],
            atom_hist: vec![[None; params::ATOM_HIST as usize]; cfg.num_qp as usize],
            rq_copies: vec![[None; params::WQE_COPIES as usize]; cfg.num_qp as usize],
            wqe_copies: vec![[None; params::WQE_COPIES as usize]; cfg.num_qp as usize],
            comp_copies: vec![[None; params::WQE_COPIES as usize]; cfg.num_qp as usize],
            cmd_last: 0,
            cur_func: 0,
            vf_res: (0, [0; 5]),
            db_fifo: VecDeque::new(),
            rx_queue: VecDeque::new(),
            rings: vec![VecDeque::new(); cfg.num_vf as usize + 1],
            ring_last: 0,
            in_ring: vec![false; cfg.num_qp as usize],
            counters: [0; counter::NUM as usize],
            outputs: Vec::new(),
            scratch: Vec::with_capacity(wire::MAX_PAYLOAD),
            cfgspace: cfg::ConfigSpace::new(cfg.num_vf),
            flr_on: vec![false; cfg.num_vf as usize + 1],
        }
    }

    /// A PCI configuration read of the dword at byte `offset` (bits 11:2) of function `func`
    /// (docs/sriov.md). A function that does not exist reads all-ones.
    pub fn cfg_read(&self, func: u8, offset: u32) -> u32 {
        self.cfgspace.read(func, offset)
    }

    /// A PCI configuration write of the dword at byte `offset` (bits 11:2) of function `func`.
    /// Read-only fields and functions that do not exist ignore it.
    pub fn cfg_write(&mut self, func: u8, offset: u32, value: u32) {
        self.cfgspace.write(func, offset, value)
    }

    /// The configuration this NIC was built with.
    pub fn config(&self) -> NicConfig {
        self.cfg
    }

    fn count(&mut self, index: u32) {
        self.counters[index as usize] += 1;
    }

    /// Whether memory requests to function `func` are decoded (section 4, Functions).
    fn decodes(&self, func: u8) -> bool {
        func == 0
            || (self.cfgspace.is_vf(func) && self.cfgspace.vf_mem_enabled() && !self.cfgspace.in_reset(func))
    }

    /// The range `(first, count)` of resource `t` that function `f` owns (section 4, Functions).
    pub(crate) fn range(&self, f: u8, t: Res) -> (u64, u64) {
        let c = &self.cfg;
        let total = [c.num_qp, c.num_cq, c.num_mr, c.num_pd, c.num_mtt][t as usize] as u64;
        let (vfs, q) = self.vf_res;
        let pool = total - vfs * q[t as usize];
        match f {
            0 => (0, pool),
            f if u64::from(f) <= vfs => (pool + (u64::from(f) - 1) * q[t as usize], q[t as usize]),
            _ => (pool, 0),
        }
    }

    /// Whether index `i` of resource `t` is in function `f`'s range.
    pub(crate) fn owns(&self, f: u8, t: Res, i: u64) -> bool {
        let (first, n) = self.range(f, t);
        i >= first && i - first < n
    }

    /// Queue a doorbell; one for the same function, kind and queue as the newest one waiting
    /// replaces it (doorbell coalescing, section 4, Doorbells).
    fn push_doorbell(&mut self, db: Doorbell) {
        let key = |d: &Doorbell| match *d {
            Doorbell::SqPi { func, qpn, .. } => (0u8, func, qpn),
            Doorbell::RqPi { func, qpn, .. } => (1, func, qpn),
            Doorbell::CqCi { func, cqn, .. } => (2, func, cqn),
            Doorbell::CqArm { func, cqn } => (3, func, cqn),
        };
        match self.db_fifo.back_mut() {
            Some(last) if key(last) == key(&db) => *last = db,
            _ => self.db_fifo.push_back(db),
        }
    }

    /// A BAR0 write (section 4). Writes to a function that does not decode, to read-only or
    /// unknown offsets are ignored and counted in `MMIO_BAD`.
    pub fn mmio_write(&mut self, func: u8, offset: u64, value: u64) {
        if !self.decodes(func) || !offset.is_multiple_of(8) {
            self.count(counter::MMIO_BAD);
            return;
        }
        let page_mask = (1u64 << params::DB_PAGE_SHIFT) - 1;
        if (params::DB_QP_BASE..params::DB_CQ_BASE).contains(&offset) {
            let idx = (offset - params::DB_QP_BASE) >> params::DB_PAGE_SHIFT;
            let po = offset & page_mask;
            if idx < self.cfg.num_qp as u64 {
                let qpn = idx as u32;
                match po {
                    params::DB_SQ_PI => return self.push_doorbell(Doorbell::SqPi { func, qpn, value }),
                    params::DB_RQ_PI => return self.push_doorbell(Doorbell::RqPi { func, qpn, value }),
                    _ => {}
                }
            }
            self.count(counter::MMIO_BAD);
            return;
        }
        if (params::DB_CQ_BASE..params::BAR0_SIZE).contains(&offset) {
            let idx = (offset - params::DB_CQ_BASE) >> params::DB_PAGE_SHIFT;
            let po = offset & page_mask;
            if idx < self.cfg.num_cq as u64 {
                let cqn = idx as u32;
                match po {
                    params::DB_CQ_CI => return self.push_doorbell(Doorbell::CqCi { func, cqn, value }),
                    params::DB_CQ_ARM => return self.push_doorbell(Doorbell::CqArm { func, cqn }),
                    _ => {}
                }
            }
            self.count(counter::MMIO_BAD);
            return;
        }
        let fs = &mut self.funcs[func as usize];
        if (reg::CMD_ARG0..=reg::CMD_ARG5).contains(&offset) {
            fs.cmd_args[((offset - reg::CMD_ARG0) / 8) as usize] = value;
        } else if offset == reg::CMD_OP {
            if fs.cmd_pending.is_some() {
                self.count(counter::MMIO_BAD);
            } else {
                fs.cmd_pending = Some(value as u8);
            }
        } else {
            self.count(counter::MMIO_BAD);
        }
    }

    /// A BAR0 read (section 4). Reads from a function that does not decode return all ones,
    /// unknown (or write-only) offsets return 0; both count `MMIO_BAD`.
    pub fn mmio_read(&mut self, func: u8, offset: u64) -> u64 {
        if !self.decodes(func) {
            self.count(counter::MMIO_BAD);
            return u64::MAX;
        }
        let res = |t: Res| {
            let (first, n) = self.range(func, t);
            first | n << 32
        };
        match offset {
            reg::FUNC_ID => return u64::from(func),
            reg::RES_QP => return res(Res::Qp),
            reg::RES_CQ => return res(Res::Cq),
            reg::RES_MR => return res(Res::Mr),
            reg::RES_PD => return res(Res::Pd),
            reg::RES_MTT => return res(Res::Mtt),
            _ => {}
        }
        let fs = &self.funcs[func as usize];
        let c = &self.cfg;
        let counters_end = reg::COUNTERS + 8 * counter::NUM as u64;
        match offset {
            reg::DEV_ID => reg::DEV_ID_RESET,
            reg::DEV_CAPS => {
                (c.num_qp as u64 & 0xFFFF)
                    | (c.num_cq as u64 & 0xFFFF) << 16
                    | (c.num_mr as u64 & 0xFFFF) << 32
                    | (c.num_pd as u64 & 0xFFFF) << 48
            }
            reg::DEV_CAPS2 => {
                c.num_mtt as u64 | params::MAX_SEND_SGE << 32 | params::MAX_RECV_SGE << 40
            }
            o if (reg::CMD_ARG0..=reg::CMD_ARG5).contains(&o) && o % 8 == 0 => {
                fs.cmd_args[((o - reg::CMD_ARG0) / 8) as usize]
            }
            reg::CMD_STATUS => match fs.cmd_pending {
                Some(_) => rnic_regs::cmd_status::BUSY as u64,
                None => fs.cmd_status as u64,
            },
            reg::CMD_OUT0 => fs.cmd_out[0],
            reg::CMD_OUT1 => fs.cmd_out[1],
            o if (reg::COUNTERS..counters_end).contains(&o) && o % 8 == 0 => {
                self.counters[((o - reg::COUNTERS) / 8) as usize]
            }
            _ => {
                self.count(counter::MMIO_BAD);
                0
            }
        }
    }

    /// Queue a frame accepted by the rx port; one RX task processes it.
    pub fn rx_enqueue(&mut self, frame: Vec<u8>) {
        self.rx_queue.push_back(frame);
    }

    /// Run one task to completion.
    ///
    /// # Errors
    /// [`ModelError::NoSuchTask`] when the task has nothing to work on (an RX task with no
    /// queued frame, a DB task with an empty FIFO, a CMD task with no command, a QP task on an
    /// out-of-range QP, a flush whose condition does not hold); [`ModelError::Mem`] when a DMA
    /// access fails (the task is cut short).
    pub fn run_task(&mut self, task: Task, mem: &mut dyn HostMemory) -> Result<(), ModelError> {
        let no = |reason| ModelError::NoSuchTask(task, reason);
        match task {
            Task::Cmd { func } => {
                let fs = self.funcs.get(func as usize).ok_or(no("no such function"))?;
                let opcode = fs.cmd_pending.ok_or(no("no command pending on that function"))?;
                self.cmd_last = func;
                let r = self.run_cmd(func, opcode, mem);
                self.funcs[func as usize].cmd_pending = None;
                r
            }
            Task::Db => {
                let db = self.db_fifo.pop_front().ok_or(no("doorbell FIFO empty"))?;
                if self.flr_on.get(db.func() as usize).copied().unwrap_or(false) {
                    // A doorbell of a function between its FLR and FLR_DONE tasks is dropped.
                    self.count(counter::DB_BAD);
                } else {
                    self.run_doorbell(db, mem)?;
                }
                Ok(())
            }
            Task::Flr { func } => {
                if !self.cfgspace.in_reset(func) || self.flr_on[func as usize] {
                    return Err(no("function not in reset, or its FLR task already ran"));
                }
                self.run_flr(func);
                Ok(())
            }
            Task::FlrDone { func } => {
                if !self.flr_on.get(func as usize).copied().unwrap_or(false) {
                    return Err(no("no FLR of that function is running"));
                }
                if self.flr_work(func) {
                    return Err(no("a QP of the function still has WQEs to flush"));
                }
                self.run_flr_done(func);
                Ok(())
            }
            Task::Rx => {
                let frame = self.rx_queue.pop_front().ok_or(no("no received frame"))?;
                self.run_rx(&frame, mem)
            }
            Task::Tx { qpn } => {
                if qpn >= self.cfg.num_qp {
                    return Err(no("QPN out of range"));
                }
                let progressed = self.run_tx(qpn, mem)?;
                if progressed {
                    self.push_qp(qpn);
                }
                Ok(())
            }
            Task::FlushSq { qpn } => {
                if qpn >= self.cfg.num_qp {
                    return Err(no("QPN out of range"));
                }
                let q = &self.qpc[qpn as usize];
                if !(q.valid && q.state == qp_state::ERR && q.comp_ci != q.sq_pi) {
                    return Err(no("QP has no send WQE to flush"));
                }
                self.flush_sq(qpn, mem)?;
                self.push_qp(qpn);
                Ok(())
            }
            Task::FlushRq { qpn } => {
                if qpn >= self.cfg.num_qp {
                    return Err(no("QPN out of range"));
                }
                let q = &self.qpc[qpn as usize];
                if !(q.valid && q.state == qp_state::ERR && q.rq_ci != q.rq_pi) {
                    return Err(no("QP has no receive WQE to flush"));
                }
                self.flush_rq(qpn, mem)?;
                self.push_qp(qpn);
                Ok(())
            }
            Task::Timer { qpn } => {
                if qpn >= self.cfg.num_qp {
                    return Err(no("QPN out of range"));
                }
                self.run_timer(qpn, mem)
            }
        }
    }

    /// Whether QP `qpn` waits on a timer: the RNR timer, or the local ACK timeout with packets
    /// in flight (section 10a). The model-only fabric fires these when it is quiet.
    pub fn timer_pending(&self, qpn: u32) -> bool {
        let Some(q) = self.qpc.get(qpn as usize) else { return false };
        q.valid && q.state == qp_state::RTS && (q.rnr_wait || (q.timeout != 0 && q.sq_psn != q.acked_psn))
    }

    /// QPs with a pending timer, in QPN order (for model-only runs; see [`Nic::timer_pending`]).
    pub fn pending_timers(&self) -> Vec<u32> {
        (0..self.cfg.num_qp).filter(|&q| self.timer_pending(q)).collect()
    }

    /// The QP task a ring pop would run now (section 5), if any.
    fn qp_task(&self, qpn: u32) -> Option<Task> {
        let q = &self.qpc[qpn as usize];
        if !q.valid {
            return None;
        }
        if q.state == qp_state::ERR && q.comp_ci != q.sq_pi {
            Some(Task::FlushSq { qpn })
        } else if q.state == qp_state::ERR && q.rq_ci != q.rq_pi {
            Some(Task::FlushRq { qpn })
        } else if Self::rsp_work(q) {
            Some(Task::Tx { qpn })
        } else if q.state == qp_state::RTS && q.sq_ci != q.sq_pi {
            Some(Task::Tx { qpn })
        } else {
            None
        }
    }

    /// Put a QP on the active ring (once) because something may have given it work.
    pub(crate) fn push_qp(&mut self, qpn: u32) {
        let i = qpn as usize;
        if i < self.in_ring.len() && !self.in_ring[i] {
            self.in_ring[i] = true;
            let f = (self.qpc[i].func as usize).min(self.rings.len() - 1);
            self.rings[f].push_back(qpn);
        }
    }

    /// The model's own scheduler for model-only runs: CMD > FLR > DB > FLR_DONE > RX > QP tasks
    /// from the round-robin ring (a popped QP without work is dropped from the ring), as the RTL.
    pub fn next_task(&mut self) -> Option<Task> {
        if let Some(func) = self.next_cmd() {
            return Some(Task::Cmd { func });
        }
        if let Some(func) = self.next_flr() {
            return Some(Task::Flr { func });
        }
        if !self.db_fifo.is_empty() {
            return Some(Task::Db);
        }
        if let Some(func) = self.next_flr_done() {
            return Some(Task::FlrDone { func });
        }
        if !self.rx_queue.is_empty() {
            return Some(Task::Rx);
        }
        let n = self.rings.len();
        while let Some(f) = (1..=n).map(|k| (self.ring_last + k) % n).find(|&f| !self.rings[f].is_empty()) {
            self.ring_last = f;
            let qpn = self.rings[f].pop_front().expect("non-empty");
            self.in_ring[qpn as usize] = false;
            if let Some(t) = self.qp_task(qpn) {
                return Some(t);
            }
        }
        None
    }

    /// Run [`Nic::next_task`] until it returns `None`; returns the number of tasks run.
    ///
    /// # Errors
    /// The first [`ModelError`] of a task.
    pub fn run_until_idle(&mut self, mem: &mut dyn HostMemory) -> Result<usize, ModelError> {
        let mut n = 0;
        while let Some(t) = self.next_task() {
            self.run_task(t, mem)?;
            n += 1;
        }
        Ok(n)
    }

    /// Take the outputs produced since the last call, in production order.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outputs)
    }

    /// The context of QP `qpn`.
    ///
    /// # Panics
    /// If `qpn >= num_qp`.
    pub fn qpc(&self, qpn: u32) -> &Qpc {
        &self.qpc[qpn as usize]
    }

    /// The context of CQ `cqn`.
    ///
    /// # Panics
    /// If `cqn >= num_cq`.
    pub fn cqc(&self, cqn: u32) -> &Cqc {
        &self.cqc[cqn as usize]
    }

    /// The context of MR `index`.
    ///
    /// # Panics
    /// If `index >= num_mr`.
    pub fn mrc(&self, index: u32) -> &Mrc {
        &self.mrc[index as usize]
    }

    /// Counter `index` (`counter::*`); 0 for an index outside the block.
    pub fn counter(&self, index: u32) -> u64 {
        self.counters.get(index as usize).copied().unwrap_or(0)
    }

    /// The PF's MAC and IPv4 address (set by SET_PORT).
    pub fn port(&self) -> (u64, u32) {
        (self.funcs[0].mac, self.funcs[0].ip)
    }

    /// The function whose command the engine takes next: round-robin after the last one.
    fn next_cmd(&self) -> Option<u8> {
        let n = self.funcs.len();
        (1..=n)
            .map(|k| (self.cmd_last as usize + k) % n)
            .find(|&f| self.funcs[f].cmd_pending.is_some())
            .map(|f| f as u8)
    }

    /// Addresses of the functions that receive frames now (index = function).
    pub(crate) fn rx_ports(&self) -> Vec<Option<(u64, u32)>> {
        (0..self.funcs.len())
            .map(|f| {
                let exists = f == 0 || self.cfgspace.is_vf(f as u8);
                exists.then(|| (self.funcs[f].mac, self.funcs[f].ip))
            })
            .collect()
    }

    /// The embedded switch's decision for a frame this NIC emits (section 4b): true when its
    /// destination MAC is the (non-zero) MAC of a function that exists here, so the frame loops
    /// back into this NIC's receive path instead of leaving on the uplink.
    pub fn is_local_dest(&self, frame: &[u8]) -> bool {
        let Some(d) = frame.get(..6) else { return false };
        let dmac = d.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b));
        dmac != 0 && self.rx_ports().iter().flatten().any(|&(mac, _)| mac == dmac)
    }

    /// The embedded switch dropped a looped frame for want of receive-buffer room (a choice the
    /// model cannot predict; the RTL reports it): count it.
    pub fn esw_drop(&mut self) {
        self.count(counter::ESW_DROP);
    }

    /// True when there is no pending command, doorbell, received frame or QP task.
    pub fn is_idle(&self) -> bool {
        self.next_flr().is_none()
            && self.next_flr_done().is_none()
            && self.funcs.iter().all(|f| f.cmd_pending.is_none())
            && self.db_fifo.is_empty()
            && self.rx_queue.is_empty()
            && self.rings.iter().flatten().all(|&q| self.qp_task(q).is_none())
    }

    // ------------------------------------------------------------------ Function Level Reset

    /// The lowest function in reset whose FLR task has not run.
    fn next_flr(&self) -> Option<u8> {
        (1..self.funcs.len()).find(|&f| self.cfgspace.in_reset(f as u8) && !self.flr_on[f]).map(|f| f as u8)
    }

    /// The lowest function whose FLR task ran and whose QPs have nothing left to flush.
    fn next_flr_done(&self) -> Option<u8> {
        (1..self.funcs.len()).find(|&f| self.flr_on[f] && !self.flr_work(f as u8)).map(|f| f as u8)
    }

    /// Whether a QP of `func` still has WQEs to flush.
    fn flr_work(&self, func: u8) -> bool {
        self.qpc.iter().any(|q| {
            q.valid && q.func == func && q.state == qp_state::ERR && (q.comp_ci != q.sq_pi || q.rq_ci != q.rq_pi)
        })
    }

    /// FLR task (section 4, Function Level Reset): reset the function's command interface and its
    /// address to the one the PF assigned; every valid QP of it goes to ERR, and one with WQEs
    /// to flush goes on the ring.
    fn run_flr(&mut self, func: u8) {
        self.flr_on[func as usize] = true;
        let fs = &mut self.funcs[func as usize];
        fs.cmd_args = [0; 6];
        fs.cmd_pending = None;
        fs.cmd_status = 0;
        fs.cmd_out = [0; 2];
        fs.mac = fs.admin_mac;
        fs.ip = fs.admin_ip;
        for qpn in 0..self.cfg.num_qp {
            let q = &mut self.qpc[qpn as usize];
            if q.valid && q.func == func {
                q.state = qp_state::ERR;
                if q.comp_ci != q.sq_pi || q.rq_ci != q.rq_pi {
                    self.push_qp(qpn);
                }
            }
        }
    }

    /// FLR_DONE task: every valid QP, CQ, MR and PD of the function is invalidated and its reset
    /// ends (Transactions Pending clears, memory requests are decoded again).
    fn run_flr_done(&mut self, func: u8) {
        for q in self.qpc.iter_mut().filter(|q| q.valid && q.func == func) {
            q.valid = false;
        }
        for c in self.cqc.iter_mut().filter(|c| c.valid && c.func == func) {
            c.valid = false;
        }
        for m in self.mrc.iter_mut().filter(|m| m.valid && m.func == func) {
            m.valid = false;
        }
        for p in self.pdc.iter_mut().filter(|p| p.valid && p.func == func) {
            p.valid = false;
        }
        self.flr_on[func as usize] = false;
        self.cfgspace.end_reset(func);
    }

    // ------------------------------------------------------------------ shared helpers

    /// Apply a DMA write to host memory and record it as an output.
    pub(crate) fn dma_write(
        &mut self,
        mem: &mut dyn HostMemory,
        func: u8,
        addr: u64,
        data: &[u8],
    ) -> Result<(), MemError> {
        mem.write(func, addr, data)?;
        self.outputs.push(Output::DmaWrite {
            func,
            addr,
            data: data.to_vec(),
        });
        Ok(())
    }

    /// Build and send a frame from QP `qpn` (addresses from its context).
    pub(crate) fn send_frame(&mut self, qpn: u32, mut hdr: wire::Headers, payload: &[u8]) {
        let q = &self.qpc[qpn as usize];
        hdr.dst_mac = q.dest_mac;
        let f = &self.funcs[q.func as usize];
        hdr.src_mac = f.mac;
        hdr.src_ip = f.ip;
        // Spoof-check (docs/architecture.md, Functions): a trusted VF that changed its address
        // does not get frames out while the PF checks it; counted, and TX_PKTS still counts it.
        let spoofed = q.func != 0 && f.spoofchk && (f.mac != f.admin_mac || f.ip != f.admin_ip);
        hdr.dst_ip = q.dest_ip;
        hdr.udp_sport = (params::UDP_SPORT_BASE | (qpn as u64 & 0x3FFF)) as u16;
        hdr.bth.pkey = params::DEFAULT_PKEY as u16;
        hdr.bth.dqpn = q.dest_qpn;
        self.count(counter::TX_PKTS);
        if spoofed {
            self.count(counter::TX_SPOOF);
            return;
        }
        let f = wire::build(&hdr, payload);
        self.outputs.push(Output::Frame(f));
    }

    /// Fetch the send WQE at ring index `idx` of QP `qpn`.
    pub(crate) fn fetch_send_wqe(
        &mut self,
        mem: &mut dyn HostMemory,
        qpn: u32,
        idx: u16,
    ) -> Result<SendWqe, MemError> {
        let q = &self.qpc[qpn as usize];
        let slot = idx as u64 & ((1u64 << q.log_sq_size) - 1);
        let mut b = [0u8; send_wqe::SIZE];
        mem.read(q.func, q.sq_base + slot * send_wqe::SIZE as u64, &mut b)?;
        Ok(SendWqe::decode(&b))
    }

    /// The send WQE at ring index `idx` of QP `qpn` from its copy slot, or else read with the
    /// line it starts (section 8): the posted WQEs from `idx` on (up to `sq_pi`), at most
    /// `WQE_LINE`, not past the ring's end, in one read, each kept in its slot.
    /// `completer`: the completer's set of copies, else the requester's.
    pub(crate) fn send_wqe_copy(
        &mut self,
        mem: &mut dyn HostMemory,
        qpn: u32,
        idx: u16,
        completer: bool,
    ) -> Result<SendWqe, MemError> {
        let k = params::WQE_COPIES as usize;
        let set = if completer { &self.comp_copies } else { &self.wqe_copies };
        if let Some((i, w)) = set[qpn as usize][idx as usize % k] {
            if i == idx {
                return Ok(w);
            }
        }
        let q = &self.qpc[qpn as usize];
        let size = 1u16 << q.log_sq_size;
        let slot = idx & (size - 1);
        let n = (params::WQE_LINE as u16).min(q.sq_pi.wrapping_sub(idx)).min(size - slot).max(1);
        let mut b = vec![0u8; n as usize * send_wqe::SIZE];
        mem.read(q.func, q.sq_base + u64::from(slot) * send_wqe::SIZE as u64, &mut b)?;
        let set = if completer { &mut self.comp_copies } else { &mut self.wqe_copies };
        for j in 0..n {
            let w = SendWqe::decode(&b[j as usize * send_wqe::SIZE..][..send_wqe::SIZE]);
            let ix = idx.wrapping_add(j);
            set[qpn as usize][ix as usize % k] = Some((ix, w));
        }
        Ok(set[qpn as usize][idx as usize % k].expect("just kept").1)
    }

    /// Fetch the receive WQE at ring index `idx` of QP `qpn`.
    pub(crate) fn fetch_recv_wqe(
        &mut self,
        mem: &mut dyn HostMemory,
        qpn: u32,
        idx: u16,
    ) -> Result<RecvWqe, MemError> {
        let q = &self.qpc[qpn as usize];
        let slot = idx as u64 & ((1u64 << q.log_rq_size) - 1);
        let mut b = [0u8; recv_wqe::SIZE];
        mem.read(q.func, q.rq_base + slot * recv_wqe::SIZE as u64, &mut b)?;
        Ok(RecvWqe::decode(&b))
    }

    /// The receive WQE at `rq_ci` for the responder: the copy in the read-ahead slot if it is
    /// that one (read by the last RQ_PI doorbell or by an earlier packet of the message), else
    /// read now and kept there (section 9).
    pub(crate) fn recv_wqe_at_ci(&mut self, mem: &mut dyn HostMemory, qpn: u32) -> Result<RecvWqe, MemError> {
        let ci = self.qpc[qpn as usize].rq_ci;
        self.recv_wqe_copy(mem, qpn, ci)
    }

    /// Whether the receive WQE copy of `idx` is in its slot.
    pub(crate) fn has_recv_copy(&self, qpn: u32, idx: u16) -> bool {
        matches!(self.rq_copies[qpn as usize][idx as usize % params::WQE_COPIES as usize], Some((i, _)) if i == idx)
    }

    /// The receive WQE at ring index `idx` of QP `qpn` from its copy slot, or else read with the
    /// line it starts (section 9): the posted WQEs from `idx` on (up to `rq_pi`), at most
    /// `WQE_LINE`, not past the ring's end, in one read, each kept in its slot.
    pub(crate) fn recv_wqe_copy(
        &mut self,
        mem: &mut dyn HostMemory,
        qpn: u32,
        idx: u16,
    ) -> Result<RecvWqe, MemError> {
        let k = params::WQE_COPIES as usize;
        if let Some((i, w)) = self.rq_copies[qpn as usize][idx as usize % k] {
            if i == idx {
                return Ok(w);
            }
        }
        let q = &self.qpc[qpn as usize];
        let size = 1u16 << q.log_rq_size;
        let slot = idx & (size - 1);
        let n = (params::WQE_LINE as u16).min(q.rq_pi.wrapping_sub(idx)).min(size - slot).max(1);
        let mut b = vec![0u8; n as usize * recv_wqe::SIZE];
        mem.read(q.func, q.rq_base + u64::from(slot) * recv_wqe::SIZE as u64, &mut b)?;
        for j in 0..n {
            let w = RecvWqe::decode(&b[j as usize * recv_wqe::SIZE..][..recv_wqe::SIZE]);
            let ix = idx.wrapping_add(j);
            self.rq_copies[qpn as usize][ix as usize % k] = Some((ix, w));
        }
        Ok(self.rq_copies[qpn as usize][idx as usize % k].expect("just kept").1)
    }

    /// Move QP `qpn` to ERR because of a send-queue error at `idx` with `status`.
    pub(crate) fn sq_error(&mut self, qpn: u32, idx: u16, status: u8) {
        let q = &mut self.qpc[qpn as usize];
        q.sq_err_valid = true;
        q.sq_err_idx = idx;
        q.sq_err_status = status;
        q.state = qp_state::ERR;
        self.push_qp(qpn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psn_arith() {
        assert_eq!(psn_add(0xFF_FFFF, 2), 1);
        assert_eq!(psn_diff(1, 0xFF_FFFF), 2);
        assert_eq!(psn_diff(0xFF_FFFF, 1), -2);
        assert_eq!(psn_diff(0x80_0000, 0), -0x80_0000);
        assert_eq!(psn_diff(0x7F_FFFF, 0), 0x7F_FFFF);
    }

    #[test]
    fn trace_roundtrip() {
        for t in [
            Task::Cmd { func: 3 },
            Task::Db,
            Task::Rx,
            Task::Tx { qpn: 5 },
            Task::FlushSq { qpn: 6 },
            Task::FlushRq { qpn: 7 },
            Task::Timer { qpn: 8 },
        ] {
            assert_eq!(Task::from_trace(t.trace_kind(), t.qpn(), if let Task::Cmd { func } = t { func } else { 0 }), Some(t));
        }
        assert_eq!(Task::from_trace(0, 0, 0), None);
        assert_eq!(Task::from_trace(trace::FLR, 0, 3), Some(Task::Flr { func: 3 }));
        assert_eq!(Task::from_trace(trace::FLR_DONE, 0, 3), Some(Task::FlrDone { func: 3 }));
        assert_eq!(Task::from_trace(15, 0, 0), None);
    }
}
