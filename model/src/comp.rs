// SPDX-License-Identifier: Apache-2.0
//! Completer: response packets received on a QP (contract section 10).

use rnic_regs::{aeth, bth_opcode as op, counter, mtu_bytes, qp_state, wc_status, wqe_flag, wr_opcode};

use crate::cq::{wc_opcode_of, Cqe};
use crate::wire::ParsedFrame;
use crate::{psn_add, psn_diff, HostMemory, ModelError, Nic, SendWqe};

impl Nic {
    /// Complete the send WQE `w` at `comp_ci` whose last PSN is `last`.
    fn complete(
        &mut self,
        qpn: u32,
        w: &SendWqe,
        last: u32,
        mem: &mut dyn HostMemory,
    ) -> Result<(), ModelError> {
        let q = &self.qpc[qpn as usize];
        let idx = q.comp_ci;
        if w.flags as u32 & wqe_flag::SIGNALED != 0 {
            let cqn = q.send_cqn;
            let e = Cqe {
                wr_id: w.wr_id,
                byte_len: w.len() as u32,
                opcode: wc_opcode_of(w.opcode),
                status: wc_status::SUCCESS,
                wqe_idx: idx,
                ..Cqe::default()
            };
            self.post_cqe(mem, qpn, cqn, &e)?;
        }
        let q = &mut self.qpc[qpn as usize];
        q.comp_ci = q.comp_ci.wrapping_add(1);
        q.rd_resume = false;
        let next = psn_add(last, 1);
        q.comp_wqe_psn = next;
        if psn_diff(next, q.acked_psn) > 0 {
            q.acked_psn = next;
        }
        if w.is_read_or_atomic() {
            q.rd_outstanding = q.rd_outstanding.saturating_sub(1);
        }
        q.retry_left = q.retry_cnt;
        q.rnr_left = q.rnr_retry;
        self.push_qp(qpn);
        Ok(())
    }

    /// Go-back-N: restart the requester at PSN `p` inside the WQE `w` at `comp_ci` (section 10).
    fn rewind(&mut self, qpn: u32, w: &SendWqe, p: u32) {
        let q = &mut self.qpc[qpn as usize];
        let mtu = mtu_bytes(q.path_mtu);
        let wpsn = q.comp_wqe_psn;
        q.sq_ci = q.comp_ci;
        q.rd_outstanding = 0;
        q.rd_resume = false;
        if w.opcode == wr_opcode::RDMA_READ && p != wpsn {
            // Resume the READ at its first missing response (as rxe does): a new READ request
            // for the rest, from PSN p (section 10).
            q.sq_psn = p;
            q.sq_offset = (p.wrapping_sub(wpsn) & 0xFF_FFFF) * mtu;
            q.acked_psn = p;
            q.rd_resume = true;
            q.rd_resume_psn = p;
        } else if w.is_read_or_atomic() {
            q.sq_psn = wpsn;
            q.sq_offset = 0;
            q.acked_psn = wpsn;
        } else {
            q.sq_psn = p;
            q.sq_offset = (p.wrapping_sub(wpsn) & 0xFF_FFFF) * mtu;
            q.acked_psn = p;
        }
        self.push_qp(qpn);
    }

    /// TIMER task on QP `qpn` (section 10a): end an RNR wait, or retransmit after a local ACK
    /// timeout.
    pub(crate) fn run_timer(&mut self, qpn: u32, mem: &mut dyn HostMemory) -> Result<(), ModelError> {
        let q = &mut self.qpc[qpn as usize];
        if !q.valid || q.state != qp_state::RTS {
            return Ok(());
        }
        if q.rnr_wait {
            q.rnr_wait = false;
            self.count(counter::RNR_TIMER);
            self.push_qp(qpn);
            return Ok(());
        }
        if q.sq_psn == q.acked_psn {
            return Ok(());
        }
        self.count(counter::ACK_TIMEOUT);
        let q = &self.qpc[qpn as usize];
        let (ci, p) = (q.comp_ci, q.acked_psn);
        let w = self.fetch_send_wqe(mem, qpn, ci)?;
        let q = &mut self.qpc[qpn as usize];
        if q.retry_left == 0 {
            self.sq_error(qpn, ci, wc_status::RETRY_EXC_ERR);
            return Ok(());
        }
        q.retry_left -= 1;
        self.rewind(qpn, &w, p);
        Ok(())
    }

    /// Handle a response packet on QP `qpn` (state RTS checked by recv).
    pub(crate) fn completer(
        &mut self,
        qpn: u32,
        p: &ParsedFrame<'_>,
        mem: &mut dyn HostMemory,
    ) -> Result<(), ModelError> {
        let pp = p.hdr.bth.psn;
        let opcode = p.hdr.bth.opcode;
        let q = &self.qpc[qpn as usize];
        let mtu = mtu_bytes(q.path_mtu);
        let outstanding = |q: &rnic_regs::Qpc| !(q.comp_ci == q.sq_ci && q.sq_offset == 0);
        if !outstanding(q) || psn_diff(pp, q.comp_wqe_psn) < 0 || psn_diff(pp, q.sq_psn) >= 0 {
            self.count(counter::RX_GHOST_ACK);
            return Ok(());
        }
        // Walk from comp_ci to the WQE that covers P, completing SEND/WRITEs acked implicitly.
        let (w, last) = loop {
            let q = &self.qpc[qpn as usize];
            if !outstanding(q) {
                // Only reachable if the host rewrote WQEs in flight: nothing covers P.
                self.count(counter::RX_GHOST_ACK);
                return Ok(());
            }
            let (ci, wpsn) = (q.comp_ci, q.comp_wqe_psn);
            let w = self.send_wqe_copy(mem, qpn, ci, true)?;
            let last = psn_add(wpsn, w.npkts(mtu) - 1);
            if psn_diff(last, pp) < 0 {
                if w.is_read_or_atomic() {
                    self.count(counter::RX_DROP_RESP);
                    return Ok(());
                }
                self.complete(qpn, &w, last, mem)?;
                continue;
            }
            break (w, last);
        };
        let q = &self.qpc[qpn as usize];
        let (ci, wpsn) = (q.comp_ci, q.comp_wqe_psn);
        match opcode {
            op::ACK => {
                let syn = p.hdr.aeth.unwrap_or_default().syndrome as u32;
                match (syn >> 5) & 3 {
                    t if t == aeth::TYPE_ACK => {
                        if w.is_read_or_atomic() {
                            self.count(counter::RX_DROP_RESP);
                        } else if pp == last {
                            self.complete(qpn, &w, last, mem)?;
                        } else {
                            // forward progress: the retry counters start over (as in rxe)
                            let q = &mut self.qpc[qpn as usize];
                            q.acked_psn = psn_add(pp, 1);
                            q.retry_left = q.retry_cnt;
                            q.rnr_left = q.rnr_retry;
                            self.push_qp(qpn);
                        }
                    }
                    t if t == aeth::TYPE_RNR || syn == aeth::NAK_PSN_SEQ => {
                        let rnr = t == aeth::TYPE_RNR;
                        let q = &mut self.qpc[qpn as usize];
                        // A NAK for a PSN past acked_psn acknowledges the packets before it:
                        // forward progress, so the retry counters start over first.
                        if pp != q.acked_psn && psn_diff(pp, q.acked_psn) > 0 {
                            q.retry_left = q.retry_cnt;
                            q.rnr_left = q.rnr_retry;
                        }
                        if rnr {
                            if q.rnr_left == 0 && q.rnr_retry != 7 {
                                self.sq_error(qpn, ci, wc_status::RNR_RETRY_EXC_ERR);
                                return Ok(());
                            }
                            if q.rnr_retry != 7 {
                                q.rnr_left -= 1;
                            }
                        } else {
                            if q.retry_left == 0 {
                                self.sq_error(qpn, ci, wc_status::RETRY_EXC_ERR);
                                return Ok(());
                            }
                            q.retry_left -= 1;
                        }
                        self.rewind(qpn, &w, pp);
                        if rnr {
                            self.qpc[qpn as usize].rnr_wait = true;
                        }
                    }
                    _ => {
                        let status = match syn {
                            aeth::NAK_INV_REQ => wc_status::REM_INV_REQ_ERR,
                            aeth::NAK_REM_ACCESS => wc_status::REM_ACCESS_ERR,
                            _ => wc_status::REM_OP_ERR,
                        };
                        self.sq_error(qpn, ci, status);
                    }
                }
            }
            op::READ_RESP_FIRST
            | op::READ_RESP_MIDDLE
            | op::READ_RESP_LAST
            | op::READ_RESP_ONLY => {
                let i = pp.wrapping_sub(wpsn) & 0xFF_FFFF;
                let len = w.len();
                // The opcodes follow the READ request being answered: the whole WQE, or since a
                // resume the rest of it from rd_resume_psn.
                let base = if q.rd_resume { q.rd_resume_psn } else { wpsn };
                let npkts = (last.wrapping_sub(base) & 0xFF_FFFF) + 1;
                let k = pp.wrapping_sub(base) & 0xFF_FFFF;
                let want_op = if npkts == 1 {
                    op::READ_RESP_ONLY
                } else if k == 0 {
                    op::READ_RESP_FIRST
                } else if k == npkts - 1 {
                    op::READ_RESP_LAST
                } else {
                    op::READ_RESP_MIDDLE
                };
                let off = i as u64 * mtu as u64;
                let want_len = (mtu as u64).min(len.saturating_sub(off));
                if w.opcode != wr_opcode::RDMA_READ
                    || pp != q.acked_psn
                    || opcode != want_op
                    || p.payload.len() as u64 != want_len
                {
                    self.count(counter::RX_DROP_RESP);
                    return Ok(());
                }
                let (pdn, func) = (q.pdn, q.func);
                if !self.scatter(mem, func, pdn, w.sges(), off, p.payload)? {
                    self.sq_error(qpn, ci, wc_status::LOC_PROT_ERR);
                    return Ok(());
                }
                let q = &mut self.qpc[qpn as usize];
                q.acked_psn = psn_add(pp, 1);
                q.retry_left = q.retry_cnt;
                q.rnr_left = q.rnr_retry;
                if want_op == op::READ_RESP_LAST || want_op == op::READ_RESP_ONLY {
                    self.complete(qpn, &w, last, mem)?;
                }
            }
            op::ATOMIC_ACK => {
                if !w.is_atomic() || pp != wpsn {
                    self.count(counter::RX_DROP_RESP);
                    return Ok(());
                }
                let (pdn, func) = (q.pdn, q.func);
                let orig = p.hdr.atomic_ack.unwrap_or_default().to_le_bytes();
                if !self.scatter(mem, func, pdn, &w.sges()[..1], 0, &orig)? {
                    self.sq_error(qpn, ci, wc_status::LOC_PROT_ERR);
                    return Ok(());
                }
                self.complete(qpn, &w, last, mem)?;
            }
            _ => unreachable!("recv routes only response opcodes here"),
        }
        Ok(())
    }
}
