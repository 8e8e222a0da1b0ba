// SPDX-License-Identifier: Apache-2.0
//! Admin commands and doorbells (contract section 4).

use rnic_regs::{
    cmd, cmd_create_cq as ccq, cmd_create_qp as cqp, cmd_index, cmd_qp_args as qa,
    cmd_reg_mr as crm, cmd_set_port, cmd_set_vf_dma as cvd, cmd_set_vf_rate as cvt, cmd_set_vf_port as cvp, cmd_set_vf_res as cvr,
    cmd_status as st, cmd_write_mtt as cwm, counter, params, qp_attr as attr, qp_state, Cqc, Mrc,
    Qpc,
};

use crate::{Doorbell, HostMemory, MemError, ModelError, Nic, Res};

/// Result of the checks of one command: `Err(status)` stops it before any change.
type Check = Result<(), u8>;

impl Nic {
    /// Execute function `f`'s latched command `opcode` (CMD task).
    pub(crate) fn run_cmd(
        &mut self,
        f: u8,
        opcode: u8,
        mem: &mut dyn HostMemory,
    ) -> Result<(), ModelError> {
        // Latch the argument registers as one 48-byte image.
        let mut a = [0u8; 48];
        for (i, w) in self.funcs[f as usize].cmd_args.iter().enumerate() {
            a[8 * i..8 * i + 8].copy_from_slice(&w.to_le_bytes());
        }
        self.funcs[f as usize].cmd_out = [0; 2];
        self.cur_func = f;
        let r = match opcode {
            cmd::NOP => Ok(()),
            cmd::SET_PORT => {
                if f != 0 && !self.funcs[f as usize].trust {
                    Err(st::DENIED)
                } else {
                    self.funcs[f as usize].mac = cmd_set_port::MAC.get(&a);
                    self.funcs[f as usize].ip = cmd_set_port::IP.get(&a) as u32;
                    Ok(())
                }
            }
            cmd::SET_VF_RES => self.cmd_set_vf_res(f, &a),
            cmd::SET_VF_PORT => {
                let vf = cvp::VF.get(&a);
                if f != 0 {
                    Err(st::DENIED)
                } else if vf == 0 || vf > u64::from(self.cfg.num_vf) {
                    Err(st::BAD_INDEX)
                } else {
                    let fs = &mut self.funcs[vf as usize];
                    fs.mac = cvp::MAC.get(&a);
                    fs.ip = cvp::IP.get(&a) as u32;
                    fs.admin_mac = fs.mac;
                    fs.admin_ip = fs.ip;
                    fs.trust = cvp::TRUST.get(&a) != 0;
                    fs.spoofchk = cvp::SPOOFCHK.get(&a) != 0;
                    Ok(())
                }
            }
            cmd::SET_VF_RATE => {
                let vf = cvt::VF.get(&a);
                if f != 0 {
                    Err(st::DENIED)
                } else if vf == 0 || vf > u64::from(self.cfg.num_vf) {
                    Err(st::BAD_INDEX)
                } else {
                    self.funcs[vf as usize].rate_mbps = cvt::MBPS.get(&a) as u32;
                    Ok(())
                }
            }
            cmd::SET_VF_DMA => {
                let vf = cvd::VF.get(&a);
                let base = cvd::BASE.get(&a);
                if f != 0 {
                    Err(st::DENIED)
                } else if vf == 0 || vf > u64::from(self.cfg.num_vf) {
                    Err(st::BAD_PARAM)
                } else if let Some(end) = base.checked_add(cvd::LEN.get(&a)) {
                    let fs = &mut self.funcs[vf as usize];
                    fs.dma_base = base;
                    fs.dma_end = end;
                    Ok(())
                } else {
                    Err(st::BAD_PARAM)
                }
            }
            cmd::CREATE_CQ => self.cmd_create_cq(&a),
            cmd::DESTROY_CQ => {
                let i = cmd_index::INDEX.get(&a);
                self.cq_index(i).and_then(|i| {
                    if !self.cqc[i].valid {
                        return Err(st::BAD_STATE);
                    }
                    self.cqc[i].valid = false;
                    Ok(())
                })
            }
            cmd::ALLOC_PD | cmd::DEALLOC_PD => {
                let i = cmd_index::INDEX.get(&a);
                let alloc = opcode == cmd::ALLOC_PD;
                if i >= self.cfg.num_pd as u64 {
                    Err(st::BAD_INDEX)
                } else if !self.owns(f, Res::Pd, i) {
                    Err(if alloc { st::NO_QUOTA } else { st::BAD_INDEX })
                } else {
                    let pd = &mut self.pdc[i as usize];
                    if pd.valid == alloc {
                        Err(st::BAD_STATE)
                    } else {
                        pd.valid = alloc;
                        pd.func = f;
                        Ok(())
                    }
                }
            }
            cmd::WRITE_MTT => self.cmd_write_mtt(&a, mem)?,
            cmd::REG_MR => self.cmd_reg_mr(&a),
            cmd::DEREG_MR => {
                let i = cmd_index::INDEX.get(&a);
                if i >= self.cfg.num_mr as u64 || !self.owns(f, Res::Mr, i) {
                    Err(st::BAD_INDEX)
                } else if !self.mrc[i as usize].valid {
                    Err(st::BAD_STATE)
                } else {
                    self.mrc[i as usize].valid = false;
                    Ok(())
                }
            }
            cmd::CREATE_QP => self.cmd_create_qp(&a),
            cmd::MODIFY_QP => self.cmd_modify_qp(&a),
            cmd::QUERY_QP => {
                let i = cmd_index::INDEX.get(&a);
                self.valid_qp(i).map(|i| {
                    let q = &self.qpc[i];
                    use rnic_regs::query_qp_out as qo;
                    let mut out = [0u8; qo::SIZE];
                    qo::STATE.set(&mut out, q.state as u64);
                    qo::SQ_PSN.set(&mut out, q.sq_psn as u64);
                    qo::RQ_PSN.set(&mut out, q.rq_psn as u64);
                    qo::SQ_CI.set(&mut out, q.sq_ci as u64);
                    qo::COMP_CI.set(&mut out, q.comp_ci as u64);
                    qo::RQ_CI.set(&mut out, q.rq_ci as u64);
                    qo::SQ_PI.set(&mut out, q.sq_pi as u64);
                    self.funcs[f as usize].cmd_out = [
                        u64::from_le_bytes(out[0..8].try_into().expect("8 bytes")),
                        u64::from_le_bytes(out[8..16].try_into().expect("8 bytes")),
                    ];
                })
            }
            cmd::DESTROY_QP => {
                let i = cmd_index::INDEX.get(&a);
                self.valid_qp(i).map(|i| self.qpc[i].valid = false)
            }
            _ => Err(st::BAD_OPCODE),
        };
        self.funcs[f as usize].cmd_status = match r {
            Ok(()) => st::OK,
            Err(s) => s,
        };
        Ok(())
    }

    /// SET_VF_RES (PF only): the VF resource profile.
    fn cmd_set_vf_res(&mut self, f: u8, a: &[u8]) -> Check {
        if f != 0 {
            return Err(st::DENIED);
        }
        if self.cfgspace.vf_enabled() {
            return Err(st::BAD_STATE);
        }
        let vfs = cvr::VFS.get(a);
        let q = [cvr::QPS.get(a), cvr::CQS.get(a), cvr::MRS.get(a), cvr::PDS.get(a), cvr::MTTS.get(a)];
        let c = &self.cfg;
        let total = [c.num_qp, c.num_cq, c.num_mr, c.num_pd, c.num_mtt].map(u64::from);
        let min = [params::PF_MIN_QP, params::PF_MIN_CQ, params::PF_MIN_MR, params::PF_MIN_PD, params::PF_MIN_MTT];
        if vfs > u64::from(c.num_vf) || (0..5).any(|t| vfs * q[t] > total[t] - min[t]) {
            return Err(st::BAD_PARAM);
        }
        let pool: Vec<u64> = (0..5).map(|t| total[t] - vfs * q[t]).collect();
        let busy = self.qpc.iter().enumerate().any(|(i, o)| o.valid && (o.func != 0 || i as u64 >= pool[0]))
            || self.cqc.iter().enumerate().any(|(i, o)| o.valid && (o.func != 0 || i as u64 >= pool[1]))
            || self.mrc.iter().enumerate().any(|(i, o)| {
                o.valid && (o.func != 0 || i as u64 >= pool[2] || u64::from(o.mtt_end) > pool[4])
            })
            || self.pdc.iter().enumerate().any(|(i, o)| o.valid && (o.func != 0 || i as u64 >= pool[3]));
        if busy {
            return Err(st::BAD_STATE);
        }
        self.vf_res = (vfs, q);
        Ok(())
    }

    /// Whether `[addr, addr + len)` lies inside the calling function's DMA window (the PF's is
    /// all of memory). `len` is at least 1 at every caller.
    pub(crate) fn in_window(&self, addr: u64, len: u64) -> bool {
        let f = &self.funcs[self.cur_func as usize];
        self.cur_func == 0
            || (addr >= f.dma_base && u128::from(addr) + u128::from(len) <= u128::from(f.dma_end))
    }

    /// A CQ index of the calling function (other indices do not exist for it).
    fn cq_index(&self, i: u64) -> Result<usize, u8> {
        if i < self.cfg.num_cq as u64 && self.owns(self.cur_func, Res::Cq, i) {
            Ok(i as usize)
        } else {
            Err(st::BAD_INDEX)
        }
    }

    /// QPs 0 and 1 are reserved (special QPs), so the valid range is `2..NUM_QP`, within the
    /// calling function's range.
    fn qp_index(&self, i: u64) -> Result<usize, u8> {
        if (2..self.cfg.num_qp as u64).contains(&i) && self.owns(self.cur_func, Res::Qp, i) {
            Ok(i as usize)
        } else {
            Err(st::BAD_INDEX)
        }
    }

    fn valid_qp(&self, i: u64) -> Result<usize, u8> {
        let i = self.qp_index(i)?;
        if self.qpc[i].valid {
            Ok(i)
        } else {
            Err(st::BAD_STATE)
        }
    }

    fn pd_ok(&self, pdn: u64) -> bool {
        pdn < self.cfg.num_pd as u64 && self.pdc[pdn as usize].valid && self.pdc[pdn as usize].func == self.cur_func
    }

    fn cq_ok(&self, cqn: u64) -> bool {
        cqn < self.cfg.num_cq as u64 && self.cqc[cqn as usize].valid && self.cqc[cqn as usize].func == self.cur_func
    }

    /// Index check of a creating command: outside the table BAD_INDEX, outside the caller's
    /// range NO_QUOTA.
    fn create_index(&self, t: Res, i: u64, lo: u64) -> Result<usize, u8> {
        let c = &self.cfg;
        let total = [c.num_qp, c.num_cq, c.num_mr, c.num_pd, c.num_mtt][t as usize] as u64;
        if i < lo || i >= total {
            Err(st::BAD_INDEX)
        } else if !self.owns(self.cur_func, t, i) {
            Err(st::NO_QUOTA)
        } else {
            Ok(i as usize)
        }
    }

    fn cmd_create_cq(&mut self, a: &[u8]) -> Check {
        let i = self.create_index(Res::Cq, ccq::CQN.get(a), 0)?;
        if self.cqc[i].valid {
            return Err(st::BAD_STATE);
        }
        let base = ccq::BASE.get(a);
        let log_size = ccq::LOG_SIZE.get(a);
        if !(1..=rnic_regs::params::MAX_CQ_LOG_SIZE).contains(&(log_size as u64)) || !base.is_multiple_of(32) {
            return Err(st::BAD_PARAM);
        }
        if !self.in_window(base, (rnic_regs::cqe::SIZE as u64) << log_size) {
            return Err(st::BAD_ADDR);
        }
        self.cqc[i] = Cqc {
            valid: true,
            func: self.cur_func,
            base,
            log_size: log_size as u8,
            pi: 0,
            ci: 0,
            armed: false,
            vector: ccq::VECTOR.get(a) as u16,
        };
        Ok(())
    }

    fn cmd_write_mtt(&mut self, a: &[u8], mem: &mut dyn HostMemory) -> Result<Check, ModelError> {
        let start = cwm::START.get(a);
        let count = cwm::COUNT.get(a);
        if !(1..=params::MTT_WRITE_MAX).contains(&count) {
            return Ok(Err(st::BAD_PARAM));
        }
        if start + count > self.cfg.num_mtt as u64 {
            return Ok(Err(st::BAD_INDEX));
        }
        let (first, n) = self.range(self.cur_func, Res::Mtt);
        if start < first || start + count > first + n {
            return Ok(Err(st::NO_QUOTA));
        }
        let src = cwm::SRC.get(a);
        if !self.in_window(src, 8 * count) {
            return Ok(Err(st::BAD_ADDR));
        }
        let mut buf = [0u8; 8 * params::MTT_WRITE_MAX as usize];
        let buf = &mut buf[..8 * count as usize];
        mem.read(self.cur_func, src, buf)?;
        // Each entry is a page of 2^MIN_LOG_PAGE bytes that must lie inside the window; the
        // entries before a bad one stay written.
        for (k, c) in buf.chunks_exact(8).enumerate() {
            let e = u64::from_le_bytes(c.try_into().unwrap());
            if !self.in_window(e, 1 << params::MIN_LOG_PAGE) {
                return Ok(Err(st::BAD_ADDR));
            }
            self.mtt[start as usize + k] = e;
        }
        Ok(Ok(()))
    }

    fn cmd_reg_mr(&mut self, a: &[u8]) -> Check {
        let i = self.create_index(Res::Mr, crm::INDEX.get(a), 0)? as u64;
        if self.mrc[i as usize].valid {
            return Err(st::BAD_STATE);
        }
        let pdn = crm::PDN.get(a);
        let log_page = crm::LOG_PAGE.get(a);
        let iova = crm::IOVA.get(a);
        let length = crm::LENGTH.get(a);
        let mtt_base = crm::MTT_BASE.get(a);
        // A VF's pages are the 2^MIN_LOG_PAGE pages WRITE_MTT checked against its window.
        let max_log_page = if self.cur_func == 0 { params::MAX_LOG_PAGE } else { params::MIN_LOG_PAGE };
        if !self.pd_ok(pdn) || !(params::MIN_LOG_PAGE..=max_log_page).contains(&(log_page as u64)) || length == 0 {
            return Err(st::BAD_PARAM);
        }
        // An MR whose end wraps the 64-bit space is a bad parameter too.
        let last = iova.checked_add(length - 1).ok_or(st::BAD_PARAM)?;
        let npages = (last >> log_page) - (iova >> log_page) + 1;
        let (first, n) = self.range(self.cur_func, Res::Mtt);
        if mtt_base < first || mtt_base + npages > first + n {
            return Err(st::BAD_PARAM);
        }
        // Every page the MR translates through must lie in the caller's window (an entry may
        // be stale: never written by this function, or written under an older window).
        let pages = &self.mtt[mtt_base as usize..(mtt_base + npages) as usize];
        if pages.iter().any(|&e| !self.in_window(e, 1 << params::MIN_LOG_PAGE)) {
            return Err(st::BAD_ADDR);
        }
        self.mrc[i as usize] = Mrc {
            valid: true,
            func: self.cur_func,
            mtt_end: (mtt_base + npages) as u32,
            pdn: pdn as u32,
            key: crm::KEY.get(a) as u8,
            access: crm::ACCESS.get(a) as u8,
            iova,
            length,
            mtt_base: mtt_base as u32,
            log_page: log_page as u8,
        };
        Ok(())
    }

    fn cmd_create_qp(&mut self, a: &[u8]) -> Check {
        let i = self.create_index(Res::Qp, cqp::QPN.get(a), 2)?;
        if self.qpc[i].valid {
            return Err(st::BAD_STATE);
        }
        let pdn = cqp::PDN.get(a);
        let scq = cqp::SEND_CQN.get(a);
        let rcq = cqp::RECV_CQN.get(a);
        let lsq = cqp::LOG_SQ_SIZE.get(a);
        let lrq = cqp::LOG_RQ_SIZE.get(a);
        let sq_base = cqp::SQ_BASE.get(a);
        let rq_base = cqp::RQ_BASE.get(a);
        if !self.pd_ok(pdn)
            || !self.cq_ok(scq)
            || !self.cq_ok(rcq)
            || !(1..=rnic_regs::params::MAX_WQ_LOG_SIZE).contains(&(lsq as u64))
            || !(1..=rnic_regs::params::MAX_WQ_LOG_SIZE).contains(&(lrq as u64))
            || !sq_base.is_multiple_of(128)
            || !rq_base.is_multiple_of(64)
        {
            return Err(st::BAD_PARAM);
        }
        if !self.in_window(sq_base, (rnic_regs::send_wqe::SIZE as u64) << lsq)
            || !self.in_window(rq_base, (rnic_regs::recv_wqe::SIZE as u64) << lrq)
        {
            return Err(st::BAD_ADDR);
        }
        self.atom_hist[i] = Default::default();
        self.rq_copies[i] = Default::default();
        self.wqe_copies[i] = Default::default();
        self.comp_copies[i] = Default::default();
        self.qpc[i] = Qpc {
            valid: true,
            state: qp_state::RESET,
            func: self.cur_func,
            pdn: pdn as u32,
            send_cqn: scq as u32,
            recv_cqn: rcq as u32,
            sq_base,
            rq_base,
            log_sq_size: lsq as u8,
            log_rq_size: lrq as u8,
            ..Qpc::default()
        };
        Ok(())
    }

    fn cmd_modify_qp(&mut self, a: &[u8]) -> Check {
        let i = self.valid_qp(qa::QPN.get(a))?;
        let mask = qa::ATTR_MASK.get(a) as u32;
        if mask & attr::STATE == 0 {
            return Err(st::BAD_PARAM);
        }
        let cur = self.qpc[i].state;
        let new = qa::STATE.get(a) as u8;
        use qp_state::*;
        // (required, optional) attribute bits besides STATE for each legal transition.
        let (req, opt) = match (cur, new) {
            (_, RESET) | (_, ERR) => (0, 0),
            (RESET, INIT) => (attr::PKEY_INDEX | attr::PORT | attr::ACCESS_FLAGS, 0),
            (INIT, INIT) => (0, attr::ACCESS_FLAGS | attr::PKEY_INDEX | attr::PORT),
            (INIT, RTR) => (
                attr::AV
                    | attr::PATH_MTU
                    | attr::DEST_QPN
                    | attr::RQ_PSN
                    | attr::MAX_DEST_RD_ATOMIC
                    | attr::MIN_RNR_TIMER,
                attr::ACCESS_FLAGS | attr::PKEY_INDEX,
            ),
            (RTR, RTS) => (
                attr::SQ_PSN
                    | attr::MAX_QP_RD_ATOMIC
                    | attr::RETRY_CNT
                    | attr::RNR_RETRY
                    | attr::TIMEOUT,
                attr::ACCESS_FLAGS | attr::MIN_RNR_TIMER,
            ),
            (RTS, RTS) => (0, attr::ACCESS_FLAGS | attr::MIN_RNR_TIMER),
            _ => return Err(st::BAD_STATE),
        };
        let rest = mask & !attr::STATE;
        if rest & req != req || rest & !(req | opt) != 0 {
            return Err(st::BAD_PARAM);
        }
        let path_mtu = qa::PATH_MTU.get(a) as u8;
        let max_rd = qa::MAX_RD_ATOMIC.get(a) as u8;
        let max_dest_rd = qa::MAX_DEST_RD_ATOMIC.get(a) as u8;
        if (mask & attr::PATH_MTU != 0 && !(1..=5).contains(&path_mtu))
            || (mask & attr::MAX_QP_RD_ATOMIC != 0 && max_rd > rnic_regs::params::MAX_RD_ATOMIC as u8)
            || (mask & attr::MAX_DEST_RD_ATOMIC != 0 && max_dest_rd > rnic_regs::params::MAX_RD_ATOMIC as u8)
        {
            return Err(st::BAD_PARAM);
        }
        let q = &mut self.qpc[i];
        match new {
            RESET => {
                let keep = Qpc {
                    valid: q.valid,
                    func: q.func,
                    pdn: q.pdn,
                    send_cqn: q.send_cqn,
                    recv_cqn: q.recv_cqn,
                    sq_base: q.sq_base,
                    rq_base: q.rq_base,
                    log_sq_size: q.log_sq_size,
                    log_rq_size: q.log_rq_size,
                    access: q.access,
                    ..Qpc::default()
                };
                *q = keep;
                q.state = RESET;
                self.atom_hist[i] = Default::default();
                self.rq_copies[i] = Default::default();
                self.wqe_copies[i] = Default::default();
        self.comp_copies[i] = Default::default();
            }
            ERR => q.state = ERR,
            _ => {
                q.state = new;
                if mask & attr::ACCESS_FLAGS != 0 {
                    q.access = qa::ACCESS.get(a) as u8;
                }
                if mask & attr::AV != 0 {
                    q.dest_mac = qa::DEST_MAC.get(a);
                    q.dest_ip = qa::DEST_IP.get(a) as u32;
                }
                if mask & attr::PATH_MTU != 0 {
                    q.path_mtu = path_mtu;
                }
                if mask & attr::DEST_QPN != 0 {
                    q.dest_qpn = qa::DEST_QPN.get(a) as u32;
                }
                if mask & attr::RQ_PSN != 0 {
                    q.rq_psn = qa::RQ_PSN.get(a) as u32;
                }
                if mask & attr::MAX_DEST_RD_ATOMIC != 0 {
                    q.max_dest_rd_atomic = max_dest_rd;
                }
                if mask & attr::MIN_RNR_TIMER != 0 {
                    q.min_rnr_timer = qa::MIN_RNR_TIMER.get(a) as u8;
                }
                if mask & attr::SQ_PSN != 0 {
                    q.sq_psn = qa::SQ_PSN.get(a) as u32;
                    q.comp_wqe_psn = q.sq_psn;
                    q.acked_psn = q.sq_psn;
                }
                if mask & attr::MAX_QP_RD_ATOMIC != 0 {
                    q.max_rd_atomic = max_rd;
                }
                if mask & attr::RETRY_CNT != 0 {
                    q.retry_cnt = qa::RETRY_CNT.get(a) as u8;
                    q.retry_left = q.retry_cnt;
                }
                if mask & attr::RNR_RETRY != 0 {
                    q.rnr_retry = qa::RNR_RETRY.get(a) as u8;
                    q.rnr_left = q.rnr_retry;
                }
                if mask & attr::TIMEOUT != 0 {
                    q.timeout = qa::TIMEOUT.get(a) as u8;
                }
            }
        }
        self.push_qp(i as u32);
        Ok(())
    }

    /// Execute one doorbell (DB task).
    pub(crate) fn run_doorbell(&mut self, db: Doorbell, mem: &mut dyn HostMemory) -> Result<(), MemError> {
        match db {
            Doorbell::SqPi { func, qpn, value } | Doorbell::RqPi { func, qpn, value } => {
                let sq = matches!(db, Doorbell::SqPi { .. });
                let q = &mut self.qpc[qpn as usize];
                if !q.valid || q.state == qp_state::RESET || q.func != func {
                    self.count(counter::DB_BAD);
                    return Ok(());
                }
                let new = value as u16;
                let (ci, log) = if sq {
                    (q.comp_ci, q.log_sq_size)
                } else {
                    (q.rq_ci, q.log_rq_size)
                };
                if new.wrapping_sub(ci) as u32 > 1u32 << log {
                    self.count(counter::DB_BAD);
                    return Ok(());
                }
                if sq {
                    q.sq_pi = new;
                } else {
                    q.rq_pi = new;
                    // Read ahead the receive WQEs from rq_ci (section 9), unless the copy of
                    // rq_ci is there: a SEND arriving next finds its WQE without a DMA read.
                    if new != ci && !self.has_recv_copy(qpn, ci) {
                        self.recv_wqe_copy(mem, qpn, ci)?;
                    }
                }
                self.push_qp(qpn);
            }
            Doorbell::CqCi { func, cqn, value } => {
                let c = &mut self.cqc[cqn as usize];
                if !c.valid || c.func != func {
                    self.count(counter::DB_BAD);
                    return Ok(());
                }
                c.ci = value as u32;
            }
            Doorbell::CqArm { func, cqn } => {
                let c = &mut self.cqc[cqn as usize];
                if !c.valid || c.func != func {
                    self.count(counter::DB_BAD);
                    return Ok(());
                }
                c.armed = true;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rnic_regs::{
        cfg, cmd, cmd_create_cq as ccq, cmd_create_qp as cqp, cmd_index, cmd_reg_mr as crm,
        cmd_set_vf_dma as cvd, cmd_set_vf_res as cvr, cmd_status as st, cmd_write_mtt as cwm,
        reg, sriov,
    };

    use crate::{HostMemory, MemError, Nic, NicConfig, Task};

    /// Flat memory at `BASE` that accepts any function (the window check under test is the NIC's).
    struct Mem(Vec<u8>);
    const BASE: u64 = 0x10_0000;

    impl HostMemory for Mem {
        fn read(&mut self, func: u8, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
            let s = (addr - BASE) as usize;
            buf.copy_from_slice(self.0.get(s..s + buf.len()).ok_or(MemError { func, addr, len: buf.len() as u64 })?);
            Ok(())
        }
        fn write(&mut self, func: u8, addr: u64, data: &[u8]) -> Result<(), MemError> {
            let s = (addr - BASE) as usize;
            self.0.get_mut(s..s + data.len()).ok_or(MemError { func, addr, len: data.len() as u64 })?.copy_from_slice(data);
            Ok(())
        }
    }

    fn run(nic: &mut Nic, mem: &mut Mem, f: u8, op: u8, a: &[u8; 48]) -> u8 {
        for i in 0..6 {
            nic.mmio_write(f, reg::CMD_ARG0 + 8 * i as u64, u64::from_le_bytes(a[8 * i..8 * i + 8].try_into().unwrap()));
        }
        nic.mmio_write(f, reg::CMD_OP, u64::from(op));
        nic.run_task(Task::Cmd { func: f }, mem).unwrap();
        nic.mmio_read(f, reg::CMD_STATUS) as u8
    }

    fn window(vf: u64, base: u64, len: u64) -> [u8; 48] {
        let mut a = [0u8; 48];
        cvd::VF.set(&mut a, vf);
        cvd::BASE.set(&mut a, base);
        cvd::LEN.set(&mut a, len);
        a
    }

    #[test]
    fn vf_dma_window_checks_every_address_the_vf_hands_the_nic() {
        let c = NicConfig { num_qp: 16, num_cq: 16, num_mr: 16, num_pd: 4, num_mtt: 2048, num_vf: 2 };
        let mut nic = Nic::new(c);
        let mut mem = Mem(vec![0; 1 << 20]);
        let mut vr = [0u8; 48];
        for (fld, v) in [(cvr::VFS, 2), (cvr::QPS, 4), (cvr::CQS, 4), (cvr::MRS, 4), (cvr::PDS, 1), (cvr::MTTS, 256)] {
            fld.set(&mut vr, v);
        }
        assert_eq!(run(&mut nic, &mut mem, 0, cmd::SET_VF_RES, &vr), st::OK);
        nic.cfg_write(0, cfg::EXT_CAP + sriov::NUM_VFS, 2);
        nic.cfg_write(0, cfg::EXT_CAP + sriov::CTRL, sriov::CTRL_VFE | sriov::CTRL_VF_MSE);
        // VF 1 owns CQ/QP/MR 8..12, PD 2, MTT 1536..1792.
        let cq = |cqn: u64, base: u64, log: u64| {
            let mut a = [0u8; 48];
            ccq::CQN.set(&mut a, cqn);
            ccq::BASE.set(&mut a, base);
            ccq::LOG_SIZE.set(&mut a, log);
            a
        };
        let w = BASE + 0x4_0000; // VF 1's window: [w, w + 64 KiB)
        // SET_VF_DMA: PF only, VF 1..=NumVf, no wrap.
        assert_eq!(run(&mut nic, &mut mem, 1, cmd::SET_VF_DMA, &window(1, w, 0x1_0000)), st::DENIED);
        assert_eq!(run(&mut nic, &mut mem, 0, cmd::SET_VF_DMA, &window(0, w, 0x1_0000)), st::BAD_PARAM);
        assert_eq!(run(&mut nic, &mut mem, 0, cmd::SET_VF_DMA, &window(3, w, 0x1_0000)), st::BAD_PARAM);
        assert_eq!(run(&mut nic, &mut mem, 0, cmd::SET_VF_DMA, &window(1, u64::MAX - 9, 10)), st::BAD_PARAM);
        // Default window: empty.
        assert_eq!(run(&mut nic, &mut mem, 1, cmd::CREATE_CQ, &cq(8, w, 4)), st::BAD_ADDR);
        assert_eq!(run(&mut nic, &mut mem, 0, cmd::SET_VF_DMA, &window(1, u64::MAX - 10, 10)), st::OK, "ends at 2^64 - 1");
        assert_eq!(run(&mut nic, &mut mem, 0, cmd::SET_VF_DMA, &window(1, w, 0x1_0000)), st::OK);
        // CQ ring: 16 CQEs of 32 bytes must fit.
        assert_eq!(run(&mut nic, &mut mem, 1, cmd::CREATE_CQ, &cq(8, w - 32, 4)), st::BAD_ADDR);
        assert_eq!(run(&mut nic, &mut mem, 1, cmd::CREATE_CQ, &cq(8, w + 0x1_0000 - 256, 4)), st::BAD_ADDR);
        assert_eq!(run(&mut nic, &mut mem, 1, cmd::CREATE_CQ, &cq(8, w + 0x1_0000 - 512, 4)), st::OK);
        // The PF's window is everything; the checks before BAD_ADDR keep their order.
        assert_eq!(run(&mut nic, &mut mem, 0, cmd::CREATE_CQ, &cq(1, BASE, 4)), st::OK);
        assert_eq!(run(&mut nic, &mut mem, 1, cmd::CREATE_CQ, &cq(9, w + 16, 4)), st::BAD_PARAM);
        // QP rings: SQ 2^log * 128 bytes, RQ 2^log * 64 bytes.
        let mut pd = [0u8; 48];
        cmd_index::INDEX.set(&mut pd, 2);
        assert_eq!(run(&mut nic, &mut mem, 1, cmd::ALLOC_PD, &pd), st::OK);
        let qp = |sq: u64, rq: u64| {
            let mut a = [0u8; 48];
            cqp::QPN.set(&mut a, 8);
            cqp::PDN.set(&mut a, 2);
            cqp::SEND_CQN.set(&mut a, 8);
            cqp::RECV_CQN.set(&mut a, 8);
            cqp::LOG_SQ_SIZE.set(&mut a, 2);
            cqp::LOG_RQ_SIZE.set(&mut a, 2);
            cqp::SQ_BASE.set(&mut a, sq);
            cqp::RQ_BASE.set(&mut a, rq);
            a
        };
        assert_eq!(run(&mut nic, &mut mem, 1, cmd::CREATE_QP, &qp(w, BASE)), st::BAD_ADDR, "RQ in the PF's memory");
        assert_eq!(run(&mut nic, &mut mem, 1, cmd::CREATE_QP, &qp(w + 0x1_0000 - 256, w)), st::BAD_ADDR, "SQ past the end");
        assert_eq!(run(&mut nic, &mut mem, 1, cmd::CREATE_QP, &qp(w, w + 0x1000)), st::OK);
        // WRITE_MTT: the source and every entry's 4 KiB page; entries before a bad one stay.
        let entries = [w, w + 0x1000, w + 0x1_0000 - 0x800, w + 0x2000];
        for (k, e) in entries.iter().enumerate() {
            mem.write(0, w + 0x8000 + 8 * k as u64, &e.to_le_bytes()).unwrap();
        }
        let mtt = |src: u64, count: u64| {
            let mut a = [0u8; 48];
            cwm::START.set(&mut a, 1536);
            cwm::COUNT.set(&mut a, count);
            cwm::SRC.set(&mut a, src);
            a
        };
        assert_eq!(run(&mut nic, &mut mem, 1, cmd::WRITE_MTT, &mtt(BASE, 2)), st::BAD_ADDR, "source outside");
        assert_eq!(nic.mtt[1536], 0);
        assert_eq!(run(&mut nic, &mut mem, 1, cmd::WRITE_MTT, &mtt(w + 0x8000, 4)), st::BAD_ADDR, "third page crosses the end");
        assert_eq!(nic.mtt[1536..1540], [w, w + 0x1000, 0, 0]);
        assert_eq!(run(&mut nic, &mut mem, 1, cmd::WRITE_MTT, &mtt(w + 0x8000, 2)), st::OK);
        // A VF's MR uses the 4 KiB pages its MTT entries were checked as.
        let mr = |log_page: u64| {
            let mut a = [0u8; 48];
            crm::INDEX.set(&mut a, 8);
            crm::PDN.set(&mut a, 2);
            crm::LOG_PAGE.set(&mut a, log_page);
            crm::LENGTH.set(&mut a, 0x2000);
            crm::MTT_BASE.set(&mut a, 1536);
            a
        };
        assert_eq!(run(&mut nic, &mut mem, 1, cmd::REG_MR, &mr(13)), st::BAD_PARAM);
        // REG_MR checks the entries it translates through: 1538 was never written (0).
        let mut three = mr(12);
        crm::LENGTH.set(&mut three, 0x3000);
        assert_eq!(run(&mut nic, &mut mem, 1, cmd::REG_MR, &three), st::BAD_ADDR, "stale MTT entry");
        assert_eq!(run(&mut nic, &mut mem, 1, cmd::REG_MR, &mr(12)), st::OK);
        // A new window applies to addresses learned afterwards; VF 2 has none yet.
        assert_eq!(run(&mut nic, &mut mem, 2, cmd::CREATE_CQ, &cq(12, w, 4)), st::BAD_ADDR);
        assert_eq!(run(&mut nic, &mut mem, 0, cmd::SET_VF_DMA, &window(2, w, 0x1000)), st::OK);
        assert_eq!(run(&mut nic, &mut mem, 2, cmd::CREATE_CQ, &cq(12, w, 4)), st::OK);
    }
}
