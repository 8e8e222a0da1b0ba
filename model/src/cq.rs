// SPDX-License-Identifier: Apache-2.0
//! CQE writer and the flush tasks (contract section 11).

use rnic_regs::{counter, cqe, wc_opcode, wc_status, wr_opcode};

use crate::{HostMemory, ModelError, Nic, Output};

/// The fields of a CQE the engine chooses (qpn, func and owner are filled in by the writer).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Cqe {
    pub wr_id: u64,
    pub byte_len: u32,
    pub imm: u32,
    pub opcode: u8,
    pub status: u8,
    pub flags: u8,
    pub wqe_idx: u16,
}

/// The wc opcode of a send WR opcode (0 for an invalid one).
pub(crate) fn wc_opcode_of(wr: u8) -> u8 {
    match wr {
        wr_opcode::SEND | wr_opcode::SEND_WITH_IMM => wc_opcode::SEND,
        wr_opcode::RDMA_WRITE | wr_opcode::RDMA_WRITE_WITH_IMM => wc_opcode::RDMA_WRITE,
        wr_opcode::RDMA_READ => wc_opcode::RDMA_READ,
        wr_opcode::ATOMIC_CMP_AND_SWP => wc_opcode::COMP_SWAP,
        wr_opcode::ATOMIC_FETCH_AND_ADD => wc_opcode::FETCH_ADD,
        _ => 0,
    }
}

impl Nic {
    /// Write a CQE for QP `qpn` on CQ `cqn` (overflow and invalid CQ: dropped, `CQ_OVERFLOW`),
    /// then the MSI-X message if the CQ is armed.
    pub(crate) fn post_cqe(
        &mut self,
        mem: &mut dyn HostMemory,
        qpn: u32,
        cqn: u32,
        e: &Cqe,
    ) -> Result<(), ModelError> {
        let qp_func = self.qpc[qpn as usize].func;
        let Some(c) = self.cqc.get(cqn as usize).filter(|c| c.valid) else {
            self.count(counter::CQ_OVERFLOW);
            return Ok(());
        };
        let size = 1u32 << c.log_size;
        if c.pi.wrapping_sub(c.ci) >= size {
            self.count(counter::CQ_OVERFLOW);
            return Ok(());
        }
        let mut b = [0u8; cqe::SIZE];
        cqe::WR_ID.set(&mut b, e.wr_id);
        cqe::BYTE_LEN.set(&mut b, e.byte_len as u64);
        cqe::IMM.set(&mut b, e.imm as u64);
        cqe::QPN.set(&mut b, qpn as u64);
        cqe::OPCODE.set(&mut b, e.opcode as u64);
        cqe::STATUS.set(&mut b, e.status as u64);
        cqe::FLAGS.set(&mut b, e.flags as u64);
        cqe::OWNER.set(&mut b, (((c.pi >> c.log_size) & 1) ^ 1) as u64);
        cqe::FUNC.set(&mut b, qp_func as u64);
        cqe::WQE_IDX.set(&mut b, e.wqe_idx as u64);
        let addr = c.base + (c.pi & (size - 1)) as u64 * cqe::SIZE as u64;
        let (func, armed, vector) = (c.func, c.armed, c.vector);
        self.dma_write(mem, func, addr, &b)?;
        let c = &mut self.cqc[cqn as usize];
        c.pi = c.pi.wrapping_add(1);
        if armed {
            c.armed = false;
            self.outputs.push(Output::Msix { func, vector });
        }
        Ok(())
    }

    /// FLUSH_SQ: complete the send WQE at `comp_ci` with its error status or WR_FLUSH_ERR.
    pub(crate) fn flush_sq(
        &mut self,
        qpn: u32,
        mem: &mut dyn HostMemory,
    ) -> Result<(), ModelError> {
        let (idx, cqn) = {
            let q = &self.qpc[qpn as usize];
            (q.comp_ci, q.send_cqn)
        };
        let w = self.fetch_send_wqe(mem, qpn, idx)?;
        let q = &self.qpc[qpn as usize];
        let status = if q.sq_err_valid && q.sq_err_idx == idx {
            q.sq_err_status
        } else {
            wc_status::WR_FLUSH_ERR
        };
        let e = Cqe {
            wr_id: w.wr_id,
            opcode: wc_opcode_of(w.opcode),
            status,
            wqe_idx: idx,
            ..Cqe::default()
        };
        self.post_cqe(mem, qpn, cqn, &e)?;
        let q = &mut self.qpc[qpn as usize];
        q.comp_ci = q.comp_ci.wrapping_add(1);
        q.sq_ci = q.comp_ci;
        Ok(())
    }

    /// FLUSH_RQ: complete the receive WQE at `rq_ci` with its error status or WR_FLUSH_ERR.
    pub(crate) fn flush_rq(
        &mut self,
        qpn: u32,
        mem: &mut dyn HostMemory,
    ) -> Result<(), ModelError> {
        let (idx, cqn) = {
            let q = &self.qpc[qpn as usize];
            (q.rq_ci, q.recv_cqn)
        };
        let w = self.fetch_recv_wqe(mem, qpn, idx)?;
        let q = &self.qpc[qpn as usize];
        let status = if q.rq_err_valid && q.rq_err_idx == idx {
            q.rq_err_status
        } else {
            wc_status::WR_FLUSH_ERR
        };
        let e = Cqe {
            wr_id: w.wr_id,
            opcode: wc_opcode::RECV,
            status,
            wqe_idx: idx,
            ..Cqe::default()
        };
        self.post_cqe(mem, qpn, cqn, &e)?;
        let q = &mut self.qpc[qpn as usize];
        q.rq_ci = q.rq_ci.wrapping_add(1);
        Ok(())
    }
}
