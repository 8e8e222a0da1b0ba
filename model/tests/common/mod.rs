// SPDX-License-Identifier: Apache-2.0
//! Two-NIC test harness: each `Host` is one `Nic` with its own Vec-backed host memory and a
//! tiny hand-written "driver" that issues admin commands over MMIO and writes WQEs / reads CQEs
//! with the `rnic_regs` layouts. Translation for checking is done here independently of the
//! model (from the page list the harness itself chose).
#![allow(dead_code)]

use std::collections::HashMap;

use rnic_model::{HostMemory, MemError, Nic, NicConfig, Output, Task};
use rnic_regs::{
    access, cmd, cmd_create_cq, cmd_create_qp, cmd_index, cmd_qp_args as qa, cmd_reg_mr,
    cmd_set_port, cmd_status, cmd_write_mtt, cqe, params, qp_attr as attr, qp_state, recv_wqe, reg,
    send_wqe,
};

/// Host memory: one Vec at `base`; anything outside is a DMA error.
pub struct VecMem {
    pub base: u64,
    pub bytes: Vec<u8>,
}

impl VecMem {
    fn range(&self, func: u8, addr: u64, len: usize) -> Result<std::ops::Range<usize>, MemError> {
        let err = MemError {
            func,
            addr,
            len: len as u64,
        };
        if func != 0 || addr < self.base {
            return Err(err);
        }
        let s = (addr - self.base) as usize;
        let e = s.checked_add(len).ok_or(err)?;
        if e > self.bytes.len() {
            return Err(err);
        }
        Ok(s..e)
    }
    pub fn rd(&self, addr: u64, len: usize) -> Vec<u8> {
        self.bytes[self.range(0, addr, len).unwrap()].to_vec()
    }
    pub fn wr(&mut self, addr: u64, data: &[u8]) {
        let r = self.range(0, addr, data.len()).unwrap();
        self.bytes[r].copy_from_slice(data);
    }
}

impl HostMemory for VecMem {
    fn read(&mut self, func: u8, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let r = self.range(func, addr, buf.len())?;
        buf.copy_from_slice(&self.bytes[r]);
        Ok(())
    }
    fn write(&mut self, func: u8, addr: u64, data: &[u8]) -> Result<(), MemError> {
        let r = self.range(func, addr, data.len())?;
        self.bytes[r].copy_from_slice(data);
        Ok(())
    }
}

pub const PAGE: u64 = 4096;
pub const MEM_BASE: u64 = 0x1_0000_0000;
pub const MEM_SIZE: usize = 16 << 20;

/// Small deterministic PRNG (xorshift64*), so the tests need no extra crates.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A registered MR as the harness knows it.
#[derive(Clone, Debug)]
pub struct Mr {
    pub index: u32,
    pub key: u8,
    pub iova: u64,
    pub len: u64,
    pub log_page: u8,
    /// Host page address of each MR page, in MR order (scrambled in host memory).
    pub pages: Vec<u64>,
}

impl Mr {
    pub fn lkey(&self) -> u32 {
        self.index << 8 | self.key as u32
    }
    /// Host address of MR offset `off` (independent translation).
    pub fn phys(&self, off: u64) -> u64 {
        let va = self.iova + off;
        let idx = (va >> self.log_page) - (self.iova >> self.log_page);
        self.pages[idx as usize] + (va & ((1 << self.log_page) - 1))
    }
}

#[derive(Clone, Debug)]
pub struct QpSw {
    pub qpn: u32,
    pub sq_base: u64,
    pub rq_base: u64,
    pub log_sq: u8,
    pub log_rq: u8,
    pub sq_pi: u16,
    pub rq_pi: u16,
    pub scq: u32,
    pub rcq: u32,
}

#[derive(Clone, Debug)]
pub struct CqSw {
    pub base: u64,
    pub log: u8,
    pub ci: u32,
}

/// A decoded CQE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wc {
    pub wr_id: u64,
    pub byte_len: u32,
    pub imm: u32,
    pub qpn: u32,
    pub opcode: u8,
    pub status: u8,
    pub flags: u8,
    pub wqe_idx: u16,
}

/// One scatter/gather element for posting.
#[derive(Clone, Copy, Debug)]
pub struct Sg {
    pub addr: u64,
    pub len: u32,
    pub lkey: u32,
}

/// A send work request.
#[derive(Clone, Debug, Default)]
pub struct SendWr {
    pub wr_id: u64,
    pub opcode: u8,
    pub flags: u8,
    pub imm: u32,
    pub remote_addr: u64,
    pub rkey: u32,
    pub compare_add: u64,
    pub swap: u64,
    pub sges: Vec<Sg>,
    /// Override of num_sge (to post malformed WQEs).
    pub num_sge: Option<u8>,
}

pub struct Host {
    pub nic: Nic,
    pub mem: VecMem,
    pub mac: u64,
    pub ip: u32,
    next: u64,
    pub qps: HashMap<u32, QpSw>,
    pub cqs: HashMap<u32, CqSw>,
    next_mtt: u32,
    pub msix: Vec<(u8, u16)>,
    pub rng: Rng,
}

pub fn small_cfg() -> NicConfig {
    NicConfig {
        num_qp: 16,
        num_cq: 16,
        num_mr: 16,
        num_pd: 4,
        num_mtt: 2048,
        num_vf: 2,
    }
}

impl Host {
    pub fn new(mac: u64, ip: u32, seed: u64) -> Host {
        let mut h = Host {
            nic: Nic::new(small_cfg()),
            mem: VecMem {
                base: MEM_BASE,
                bytes: vec![0; MEM_SIZE],
            },
            mac,
            ip,
            next: MEM_BASE,
            qps: HashMap::new(),
            cqs: HashMap::new(),
            next_mtt: 0,
            msix: Vec::new(),
            rng: Rng(seed | 1),
        };
        let mut a = [0u8; 48];
        cmd_set_port::MAC.set(&mut a, mac);
        cmd_set_port::IP.set(&mut a, ip as u64);
        assert_eq!(h.cmd(cmd::SET_PORT, &a), cmd_status::OK);
        let mut a = [0u8; 48];
        cmd_index::INDEX.set(&mut a, 1);
        assert_eq!(h.cmd(cmd::ALLOC_PD, &a), cmd_status::OK);
        h
    }

    /// Bump allocation of host memory.
    pub fn alloc(&mut self, size: u64, align: u64) -> u64 {
        let a = self.next.div_ceil(align) * align;
        self.next = a + size;
        assert!(
            self.next <= MEM_BASE + MEM_SIZE as u64,
            "harness memory exhausted"
        );
        a
    }

    /// Issue one admin command through MMIO and run the CMD task; returns CMD_STATUS.
    pub fn cmd(&mut self, op: u8, args: &[u8; 48]) -> u8 {
        for i in 0..6 {
            let w = u64::from_le_bytes(args[8 * i..8 * i + 8].try_into().unwrap());
            self.nic.mmio_write(0, reg::CMD_ARG0 + 8 * i as u64, w);
        }
        self.nic.mmio_write(0, reg::CMD_OP, op as u64);
        assert_eq!(
            self.nic.mmio_read(0, reg::CMD_STATUS),
            cmd_status::BUSY as u64
        );
        self.nic.run_task(Task::Cmd { func: 0 }, &mut self.mem).unwrap();
        self.nic.mmio_read(0, reg::CMD_STATUS) as u8
    }

    pub fn create_cq(&mut self, cqn: u32, log: u8, vector: u16) -> u8 {
        let base = self.alloc(32 << log, 4096);
        let mut a = [0u8; 48];
        cmd_create_cq::CQN.set(&mut a, cqn as u64);
        cmd_create_cq::BASE.set(&mut a, base);
        cmd_create_cq::LOG_SIZE.set(&mut a, log as u64);
        cmd_create_cq::VECTOR.set(&mut a, vector as u64);
        let s = self.cmd(cmd::CREATE_CQ, &a);
        if s == cmd_status::OK {
            self.cqs.insert(cqn, CqSw { base, log, ci: 0 });
        }
        s
    }

    pub fn create_qp(&mut self, qpn: u32, scq: u32, rcq: u32, log_sq: u8, log_rq: u8) -> u8 {
        let sq_base = self.alloc(128 << log_sq, 4096);
        let rq_base = self.alloc(64 << log_rq, 4096);
        let mut a = [0u8; 48];
        cmd_create_qp::QPN.set(&mut a, qpn as u64);
        cmd_create_qp::SQ_BASE.set(&mut a, sq_base);
        cmd_create_qp::RQ_BASE.set(&mut a, rq_base);
        cmd_create_qp::LOG_SQ_SIZE.set(&mut a, log_sq as u64);
        cmd_create_qp::LOG_RQ_SIZE.set(&mut a, log_rq as u64);
        cmd_create_qp::PDN.set(&mut a, 1);
        cmd_create_qp::SEND_CQN.set(&mut a, scq as u64);
        cmd_create_qp::RECV_CQN.set(&mut a, rcq as u64);
        let s = self.cmd(cmd::CREATE_QP, &a);
        if s == cmd_status::OK {
            self.qps.insert(
                qpn,
                QpSw {
                    qpn,
                    sq_base,
                    rq_base,
                    log_sq,
                    log_rq,
                    sq_pi: 0,
                    rq_pi: 0,
                    scq,
                    rcq,
                },
            );
        }
        s
    }

    /// MODIFY_QP with `mask` (STATE included by the caller) and the args set by `f`.
    pub fn modify(&mut self, qpn: u32, state: u8, mask: u32, f: impl FnOnce(&mut [u8; 48])) -> u8 {
        let mut a = [0u8; 48];
        qa::QPN.set(&mut a, qpn as u64);
        qa::ATTR_MASK.set(&mut a, mask as u64);
        qa::STATE.set(&mut a, state as u64);
        f(&mut a);
        self.cmd(cmd::MODIFY_QP, &a)
    }

    /// Register an MR of `len` bytes at an iova with offset `iova_off` inside its first page,
    /// backed by freshly allocated pages placed in a scrambled order in host memory.
    pub fn reg_mr(&mut self, index: u32, key: u8, acc: u32, len: u64, iova_off: u64) -> Mr {
        let log_page = 12u8;
        let iova = 0x7F00_0000_0000 + ((index as u64) << 32) + iova_off;
        let npages = (((iova + len - 1) >> log_page) - (iova >> log_page) + 1) as usize;
        let mut pages: Vec<u64> = (0..npages).map(|_| self.alloc(PAGE, PAGE)).collect();
        // Scramble (Fisher-Yates) so contiguous MR pages are not contiguous in host memory.
        for i in (1..pages.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            pages.swap(i, j);
        }
        let mtt_base = self.next_mtt;
        self.next_mtt += npages as u32;
        for (c, chunk) in pages.chunks(params::MTT_WRITE_MAX as usize).enumerate() {
            let src = self.alloc(8 * chunk.len() as u64, 8);
            let bytes: Vec<u8> = chunk.iter().flat_map(|p| p.to_le_bytes()).collect();
            self.mem.wr(src, &bytes);
            let mut a = [0u8; 48];
            cmd_write_mtt::START.set(
                &mut a,
                (mtt_base as usize + c * params::MTT_WRITE_MAX as usize) as u64,
            );
            cmd_write_mtt::COUNT.set(&mut a, chunk.len() as u64);
            cmd_write_mtt::SRC.set(&mut a, src);
            assert_eq!(self.cmd(cmd::WRITE_MTT, &a), cmd_status::OK);
        }
        let mut a = [0u8; 48];
        cmd_reg_mr::INDEX.set(&mut a, index as u64);
        cmd_reg_mr::KEY.set(&mut a, key as u64);
        cmd_reg_mr::PDN.set(&mut a, 1);
        cmd_reg_mr::ACCESS.set(&mut a, acc as u64);
        cmd_reg_mr::IOVA.set(&mut a, iova);
        cmd_reg_mr::LENGTH.set(&mut a, len);
        cmd_reg_mr::MTT_BASE.set(&mut a, mtt_base as u64);
        cmd_reg_mr::LOG_PAGE.set(&mut a, log_page as u64);
        assert_eq!(self.cmd(cmd::REG_MR, &a), cmd_status::OK);
        Mr {
            index,
            key,
            iova,
            len,
            log_page,
            pages,
        }
    }

    pub fn dereg_mr(&mut self, index: u32) -> u8 {
        let mut a = [0u8; 48];
        cmd_index::INDEX.set(&mut a, index as u64);
        self.cmd(cmd::DEREG_MR, &a)
    }

    /// Write bytes into an MR through the harness's own translation.
    pub fn mr_fill(&mut self, mr: &Mr, off: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            let p = mr.phys(off + i as u64);
            self.mem.wr(p, &[*b]);
        }
    }

    pub fn mr_get(&self, mr: &Mr, off: u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| self.mem.rd(mr.phys(off + i as u64), 1)[0])
            .collect()
    }

    /// Write a send WQE at the SQ producer index (no doorbell).
    pub fn write_send_wqe(&mut self, qpn: u32, wr: &SendWr) {
        let q = self.qps[&qpn].clone();
        let mut b = [0u8; send_wqe::SIZE];
        send_wqe::WR_ID.set(&mut b, wr.wr_id);
        send_wqe::OPCODE.set(&mut b, wr.opcode as u64);
        send_wqe::FLAGS.set(&mut b, wr.flags as u64);
        send_wqe::NUM_SGE.set(&mut b, wr.num_sge.unwrap_or(wr.sges.len() as u8) as u64);
        send_wqe::IMM.set(&mut b, wr.imm as u64);
        send_wqe::REMOTE_ADDR.set(&mut b, wr.remote_addr);
        send_wqe::RKEY.set(&mut b, wr.rkey as u64);
        send_wqe::COMPARE_ADD.set(&mut b, wr.compare_add);
        send_wqe::SWAP.set(&mut b, wr.swap);
        let f = [
            (send_wqe::SGE0_ADDR, send_wqe::SGE0_LEN, send_wqe::SGE0_LKEY),
            (send_wqe::SGE1_ADDR, send_wqe::SGE1_LEN, send_wqe::SGE1_LKEY),
            (send_wqe::SGE2_ADDR, send_wqe::SGE2_LEN, send_wqe::SGE2_LKEY),
            (send_wqe::SGE3_ADDR, send_wqe::SGE3_LEN, send_wqe::SGE3_LKEY),
        ];
        for (s, (fa, fl, fk)) in wr.sges.iter().zip(f) {
            fa.set(&mut b, s.addr);
            fl.set(&mut b, s.len as u64);
            fk.set(&mut b, s.lkey as u64);
        }
        let slot = q.sq_pi as u64 & ((1 << q.log_sq) - 1);
        self.mem.wr(q.sq_base + slot * 128, &b);
        self.qps.get_mut(&qpn).unwrap().sq_pi = q.sq_pi.wrapping_add(1);
    }

    pub fn ring_sq(&mut self, qpn: u32) {
        let pi = self.qps[&qpn].sq_pi;
        self.nic.mmio_write(
            0,
            params::DB_QP_BASE + ((qpn as u64) << 12) + params::DB_SQ_PI,
            pi as u64,
        );
    }

    pub fn post_send(&mut self, qpn: u32, wr: &SendWr) {
        self.write_send_wqe(qpn, wr);
        self.ring_sq(qpn);
    }

    pub fn post_recv(&mut self, qpn: u32, wr_id: u64, sges: &[Sg]) {
        let q = self.qps[&qpn].clone();
        let mut b = [0u8; recv_wqe::SIZE];
        recv_wqe::WR_ID.set(&mut b, wr_id);
        recv_wqe::NUM_SGE.set(&mut b, sges.len() as u64);
        let f = [
            (recv_wqe::SGE0_ADDR, recv_wqe::SGE0_LEN, recv_wqe::SGE0_LKEY),
            (recv_wqe::SGE1_ADDR, recv_wqe::SGE1_LEN, recv_wqe::SGE1_LKEY),
            (recv_wqe::SGE2_ADDR, recv_wqe::SGE2_LEN, recv_wqe::SGE2_LKEY),
        ];
        for (s, (fa, fl, fk)) in sges.iter().zip(f) {
            fa.set(&mut b, s.addr);
            fl.set(&mut b, s.len as u64);
            fk.set(&mut b, s.lkey as u64);
        }
        let slot = q.rq_pi as u64 & ((1 << q.log_rq) - 1);
        self.mem.wr(q.rq_base + slot * 64, &b);
        let pi = q.rq_pi.wrapping_add(1);
        self.qps.get_mut(&qpn).unwrap().rq_pi = pi;
        self.nic.mmio_write(
            0,
            params::DB_QP_BASE + ((qpn as u64) << 12) + params::DB_RQ_PI,
            pi as u64,
        );
    }

    /// Read every new CQE of CQ `cqn` (owner-bit protocol) and return the consumer index.
    pub fn poll_cq(&mut self, cqn: u32) -> Vec<Wc> {
        let mut out = Vec::new();
        loop {
            let c = self.cqs[&cqn].clone();
            let slot = c.ci & ((1 << c.log) - 1);
            let b = self.mem.rd(c.base + slot as u64 * 32, 32);
            let owner = cqe::OWNER.get(&b) as u32;
            if owner != ((c.ci >> c.log) & 1) ^ 1 {
                break;
            }
            out.push(Wc {
                wr_id: cqe::WR_ID.get(&b),
                byte_len: cqe::BYTE_LEN.get(&b) as u32,
                imm: cqe::IMM.get(&b) as u32,
                qpn: cqe::QPN.get(&b) as u32,
                opcode: cqe::OPCODE.get(&b) as u8,
                status: cqe::STATUS.get(&b) as u8,
                flags: cqe::FLAGS.get(&b) as u8,
                wqe_idx: cqe::WQE_IDX.get(&b) as u16,
            });
            self.cqs.get_mut(&cqn).unwrap().ci = c.ci + 1;
        }
        if !out.is_empty() {
            let ci = self.cqs[&cqn].ci;
            self.nic.mmio_write(
                0,
                params::DB_CQ_BASE + ((cqn as u64) << 12) + params::DB_CQ_CI,
                ci as u64,
            );
        }
        out
    }

    pub fn counter(&self, i: u32) -> u64 {
        self.nic.counter(i)
    }

    /// Run until idle; returns the frames produced. DMA writes are checked against memory,
    /// MSI-X messages collected.
    pub fn run(&mut self) -> Vec<Vec<u8>> {
        self.nic.run_until_idle(&mut self.mem).unwrap();
        let mut frames = Vec::new();
        for o in self.nic.take_outputs() {
            match o {
                Output::Frame(f) => frames.push(f),
                Output::DmaWrite { func, addr, data } => {
                    assert_eq!(func, 0);
                    assert!(!data.is_empty() && data.len() <= 4096);
                    // Writes are applied in order, so later ones may overwrite: only check length.
                    let _ = addr;
                }
                Output::Msix { func, vector } => self.msix.push((func, vector)),
            }
        }
        frames
    }
}

pub const MAC_A: u64 = 0x0200_0000_000A;
pub const MAC_B: u64 = 0x0200_0000_000B;
pub const IP_A: u32 = 0x0A00_0001;
pub const IP_B: u32 = 0x0A00_0002;

/// Two hosts with one connected RC QP pair (A: qpn 2, B: qpn 3), CQs 1 (send) / 2 (recv)
/// on each side, MTU `mtu` and full access.
pub struct Pair {
    pub a: Host,
    pub b: Host,
    pub qa: u32,
    pub qb: u32,
}

pub const FULL_ACCESS: u32 =
    access::LOCAL_WRITE | access::REMOTE_WRITE | access::REMOTE_READ | access::REMOTE_ATOMIC;

/// Bring a QP from RESET to RTS.
#[allow(clippy::too_many_arguments)]
pub fn bring_up(
    h: &mut Host,
    qpn: u32,
    dest_qpn: u32,
    mac: u64,
    ip: u32,
    mtu: u8,
    qp_access: u32,
    psn_self: u32,
    psn_peer: u32,
    retry: u8,
    rnr: u8,
) {
    let s = h.modify(
        qpn,
        qp_state::INIT,
        attr::STATE | attr::PKEY_INDEX | attr::PORT | attr::ACCESS_FLAGS,
        |a| qa::ACCESS.set(a, qp_access as u64),
    );
    assert_eq!(s, cmd_status::OK);
    let s = h.modify(
        qpn,
        qp_state::RTR,
        attr::STATE
            | attr::AV
            | attr::PATH_MTU
            | attr::DEST_QPN
            | attr::RQ_PSN
            | attr::MAX_DEST_RD_ATOMIC
            | attr::MIN_RNR_TIMER,
        |a| {
            qa::DEST_MAC.set(a, mac);
            qa::DEST_IP.set(a, ip as u64);
            qa::PATH_MTU.set(a, mtu as u64);
            qa::DEST_QPN.set(a, dest_qpn as u64);
            qa::RQ_PSN.set(a, psn_peer as u64);
            qa::MAX_DEST_RD_ATOMIC.set(a, 4);
            qa::MIN_RNR_TIMER.set(a, 12);
        },
    );
    assert_eq!(s, cmd_status::OK);
    let s = h.modify(
        qpn,
        qp_state::RTS,
        attr::STATE
            | attr::SQ_PSN
            | attr::MAX_QP_RD_ATOMIC
            | attr::RETRY_CNT
            | attr::RNR_RETRY
            | attr::TIMEOUT,
        |a| {
            qa::SQ_PSN.set(a, psn_self as u64);
            qa::MAX_RD_ATOMIC.set(a, 4);
            qa::RETRY_CNT.set(a, retry as u64);
            qa::RNR_RETRY.set(a, rnr as u64);
            qa::TIMEOUT.set(a, 14);
        },
    );
    assert_eq!(s, cmd_status::OK);
}

impl Pair {
    pub fn new(mtu: u8) -> Pair {
        Pair::with(mtu, FULL_ACCESS, 100, 0xFF_FFF0, 3, 3)
    }

    /// `psn_a` / `psn_b`: initial send PSN of each side (near-wrap values exercise wrap).
    pub fn with(mtu: u8, b_access: u32, psn_a: u32, psn_b: u32, retry: u8, rnr: u8) -> Pair {
        let mut a = Host::new(MAC_A, IP_A, 0x1234);
        let mut b = Host::new(MAC_B, IP_B, 0x5678);
        for h in [&mut a, &mut b] {
            assert_eq!(h.create_cq(1, 6, 7), cmd_status::OK);
            assert_eq!(h.create_cq(2, 6, 8), cmd_status::OK);
        }
        assert_eq!(a.create_qp(2, 1, 2, 6, 6), cmd_status::OK);
        assert_eq!(b.create_qp(3, 1, 2, 6, 6), cmd_status::OK);
        bring_up(
            &mut a,
            2,
            3,
            MAC_B,
            IP_B,
            mtu,
            FULL_ACCESS,
            psn_a,
            psn_b,
            retry,
            rnr,
        );
        bring_up(
            &mut b, 3, 2, MAC_A, IP_A, mtu, b_access, psn_b, psn_a, retry, rnr,
        );
        Pair { a, b, qa: 2, qb: 3 }
    }

    /// Exchange frames until both NICs are idle and nothing is in flight. `filter` sees each
    /// frame (`true` = from A to B) and may modify it or return false to drop it.
    pub fn pump_with(&mut self, mut filter: impl FnMut(bool, &mut Vec<u8>) -> bool) -> usize {
        let mut moved = 0;
        for _ in 0..100_000 {
            let fa = self.a.run();
            let fb = self.b.run();
            if fa.is_empty() && fb.is_empty() && self.a.nic.is_idle() && self.b.nic.is_idle() {
                // Quiet: what still waits is a timer (section 10a); fire them, as the fabric does.
                let mut fired = false;
                for ep in [&mut self.a, &mut self.b] {
                    for qpn in ep.nic.pending_timers() {
                        ep.nic.run_task(Task::Timer { qpn }, &mut ep.mem).unwrap();
                        fired = true;
                    }
                }
                if !fired {
                    return moved;
                }
                continue;
            }
            for mut f in fa {
                moved += 1;
                if filter(true, &mut f) {
                    self.b.nic.rx_enqueue(f);
                }
            }
            for mut f in fb {
                moved += 1;
                if filter(false, &mut f) {
                    self.a.nic.rx_enqueue(f);
                }
            }
        }
        panic!("link did not go idle");
    }

    pub fn pump(&mut self) -> usize {
        self.pump_with(|_, _| true)
    }
}

/// Deterministic test pattern.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    (0..len).map(|_| r.next() as u8).collect()
}
