// SPDX-License-Identifier: Apache-2.0
//! Requester: one TX task sends at most one request packet (contract section 8).

use rnic_regs::{bth_opcode as op, mtu_bytes, params, qp_state, wc_status, wqe_flag, wr_opcode};

use crate::wire::{AtomicEth, Bth, Headers, Reth};
use crate::{psn_add, HostMemory, ModelError, Nic, SendWqe};

/// True for a defined send WR opcode.
fn wr_opcode_valid(opcode: u8) -> bool {
    wr_opcode::ALL.iter().any(|&(_, v)| v == opcode)
}

impl Nic {
    /// WQE validation on its first packet; `Some(status)` is a local error.
    fn validate_send_wqe(&self, qpn: u32, w: &SendWqe) -> Option<u8> {
        let q = &self.qpc[qpn as usize];
        if !wr_opcode_valid(w.opcode) {
            return Some(wc_status::LOC_QP_OP_ERR);
        }
        if w.is_inline() {
            // SEND/WRITE only; the payload is in the WQE: no SGEs, no lkeys.
            if w.is_read_or_atomic() {
                return Some(wc_status::LOC_QP_OP_ERR);
            }
            if u64::from(w.inline_len) > params::MAX_INLINE {
                return Some(wc_status::LOC_LEN_ERR);
            }
            return None;
        }
        if w.num_sge as u64 > params::MAX_SEND_SGE {
            return Some(wc_status::LOC_LEN_ERR);
        }
        let len = w.len();
        if len > params::MAX_MSG_LEN {
            return Some(wc_status::LOC_LEN_ERR);
        }
        if w.is_atomic() && (w.num_sge != 1 || len != 8) {
            return Some(wc_status::LOC_LEN_ERR);
        }
        if w.is_read_or_atomic() && q.max_rd_atomic == 0 {
            return Some(wc_status::LOC_QP_OP_ERR);
        }
        // READ and atomic results are written into the SGEs.
        let write = w.is_read_or_atomic();
        for s in w.sges().iter().filter(|s| s.len > 0) {
            if self
                .check_lkey(s.lkey, q.pdn, s.addr, s.len as u64, write)
                .is_none()
            {
                return Some(wc_status::LOC_PROT_ERR);
            }
        }
        None
    }

    /// TX task on QP `qpn`. Returns whether it did anything (sent a packet or raised a local
    /// error); a TX task that finds no work, a full PSN window or the read/atomic limit does
    /// nothing.
    pub(crate) fn run_tx(
        &mut self,
        qpn: u32,
        mem: &mut dyn HostMemory,
    ) -> Result<bool, ModelError> {
        let q = &self.qpc[qpn as usize];
        // Queued responses first (section 9a): one per task.
        if Self::rsp_work(q) {
            self.rsp_step(qpn, mem)?;
            return Ok(true);
        }
        if !q.valid || q.state != qp_state::RTS || q.rnr_wait || q.sq_ci == q.sq_pi {
            return Ok(false);
        }
        if (q.sq_psn.wrapping_sub(q.acked_psn) & 0xFF_FFFF) as u64 >= params::PSN_WINDOW {
            return Ok(false);
        }
        let idx = q.sq_ci;
        // From the QP's WQE copies, or read with its line (section 8).
        let w = self.send_wqe_copy(mem, qpn, idx, false)?;
        let q = &self.qpc[qpn as usize];
        if w.is_read_or_atomic() && q.rd_outstanding >= q.max_rd_atomic && q.max_rd_atomic > 0 {
            return Ok(false);
        }
        if q.sq_offset == 0 && w.flags & wqe_flag::FENCE as u8 != 0 && q.rd_outstanding > 0 {
            return Ok(false); // fenced: waits for a completion to push it again
        }
        if q.sq_offset == 0 {
            if let Some(status) = self.validate_send_wqe(qpn, &w) {
                self.sq_error(qpn, idx, status);
                return Ok(true);
            }
        } else if !wr_opcode_valid(w.opcode) {
            // The host rewrote a WQE in the middle of its message.
            self.sq_error(qpn, idx, wc_status::LOC_QP_OP_ERR);
            return Ok(true);
        }
        let q = &self.qpc[qpn as usize];
        let mtu = mtu_bytes(q.path_mtu);
        let psn = q.sq_psn;
        let len = w.len();
        let mut hdr = Headers::default();
        match w.opcode {
            wr_opcode::RDMA_READ => {
                hdr.bth = Bth {
                    opcode: op::READ_REQUEST,
                    ackreq: true,
                    psn,
                    ..Bth::default()
                };
                // sq_offset != 0: a resumed READ (section 10) asks for the rest only
                let off = q.sq_offset;
                hdr.reth = Some(Reth {
                    va: w.remote_addr.wrapping_add(u64::from(off)),
                    rkey: w.rkey,
                    dma_len: (len - u64::from(off)) as u32,
                });
                self.send_frame(qpn, hdr, &[]);
                let q = &mut self.qpc[qpn as usize];
                q.sq_psn = psn_add(psn, w.npkts(mtu) - off / mtu);
                q.sq_offset = 0;
                q.sq_ci = q.sq_ci.wrapping_add(1);
                q.rd_outstanding = q.rd_outstanding.wrapping_add(1);
            }
            wr_opcode::ATOMIC_CMP_AND_SWP | wr_opcode::ATOMIC_FETCH_AND_ADD => {
                let cas = w.opcode == wr_opcode::ATOMIC_CMP_AND_SWP;
                hdr.bth = Bth {
                    opcode: if cas { op::CMP_SWAP } else { op::FETCH_ADD },
                    ackreq: true,
                    psn,
                    ..Bth::default()
                };
                hdr.atomic_eth = Some(AtomicEth {
                    va: w.remote_addr,
                    rkey: w.rkey,
                    swap_add: if cas { w.swap } else { w.compare_add },
                    compare: if cas { w.compare_add } else { 0 },
                });
                self.send_frame(qpn, hdr, &[]);
                let q = &mut self.qpc[qpn as usize];
                q.sq_psn = psn_add(psn, 1);
                q.sq_ci = q.sq_ci.wrapping_add(1);
                q.rd_outstanding = q.rd_outstanding.wrapping_add(1);
            }
            _ => {
                let off = q.sq_offset as u64;
                let (pdn, func) = (q.pdn, q.func);
                let n = (mtu as u64).min(len.saturating_sub(off));
                let first = off == 0;
                let last = off + n >= len;
                let send = matches!(w.opcode, wr_opcode::SEND | wr_opcode::SEND_WITH_IMM);
                let with_imm = matches!(
                    w.opcode,
                    wr_opcode::SEND_WITH_IMM | wr_opcode::RDMA_WRITE_WITH_IMM
                );
                // Opcode table: [FIRST, MIDDLE, LAST, LAST_IMM, ONLY, ONLY_IMM] per family.
                let base = if send {
                    op::SEND_FIRST
                } else {
                    op::WRITE_FIRST
                };
                let step = match (first, last) {
                    (true, true) if with_imm => 5,
                    (true, true) => 4,
                    (true, false) => 0,
                    (false, false) => 1,
                    (false, true) if with_imm => 3,
                    (false, true) => 2,
                };
                let opcode = base + step;
                let mut buf = std::mem::take(&mut self.scratch);
                buf.clear();
                buf.resize(n as usize, 0);
                let ok = if w.is_inline() {
                    // (n == 0 when a WQE rewritten in mid-message leaves nothing past `off`)
                    if n > 0 {
                        buf.copy_from_slice(&w.inline[off as usize..(off + n) as usize]);
                    }
                    Ok(true)
                } else {
                    self.gather(mem, func, pdn, w.sges(), off, &mut buf)
                };
                let ok = match ok {
                    Ok(ok) => ok,
                    Err(e) => {
                        self.scratch = buf;
                        return Err(e);
                    }
                };
                if !ok {
                    self.scratch = buf;
                    self.sq_error(qpn, idx, wc_status::LOC_PROT_ERR);
                    return Ok(true);
                }
                hdr.bth = Bth {
                    opcode,
                    se: last && w.flags as u32 & wqe_flag::SOLICITED != 0 && (send || with_imm),
                    ackreq: last || (psn as u64 & params::ACK_EVERY_MASK) == params::ACK_EVERY_MASK,
                    psn,
                    ..Bth::default()
                };
                if !send && first {
                    hdr.reth = Some(Reth {
                        va: w.remote_addr,
                        rkey: w.rkey,
                        dma_len: len as u32,
                    });
                }
                if with_imm && last {
                    hdr.imm = Some(w.imm);
                }
                self.send_frame(qpn, hdr, &buf);
                self.scratch = buf;
                let q = &mut self.qpc[qpn as usize];
                q.sq_psn = psn_add(psn, 1);
                if last {
                    q.sq_ci = q.sq_ci.wrapping_add(1);
                    q.sq_offset = 0;
                } else {
                    q.sq_offset += n as u32;
                }
            }
        }
        Ok(true)
    }
}
