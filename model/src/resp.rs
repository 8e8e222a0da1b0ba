// SPDX-License-Identifier: Apache-2.0
//! Responder: request packets received on a QP (contract section 9).

use rnic_regs::{
    access, aeth, bth_opcode as op, counter, cqe_flag, mtu_bytes, params, qp_state, resp_in_msg,
    wc_opcode, wc_status,
};

use crate::cq::Cqe;
use crate::wire::{Aeth, Bth, Headers, ParsedFrame};
use crate::{psn_add, psn_diff, HostMemory, ModelError, Nic, Qpc, RespRes};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Send,
    Write,
    Read,
    Atomic,
}

/// Request opcode → (family, first packet of its message, last packet, carries ImmDt).
fn classify(opcode: u8) -> (Kind, bool, bool, bool) {
    match opcode {
        op::SEND_FIRST => (Kind::Send, true, false, false),
        op::SEND_MIDDLE => (Kind::Send, false, false, false),
        op::SEND_LAST => (Kind::Send, false, true, false),
        op::SEND_LAST_IMM => (Kind::Send, false, true, true),
        op::SEND_ONLY => (Kind::Send, true, true, false),
        op::SEND_ONLY_IMM => (Kind::Send, true, true, true),
        op::WRITE_FIRST => (Kind::Write, true, false, false),
        op::WRITE_MIDDLE => (Kind::Write, false, false, false),
        op::WRITE_LAST => (Kind::Write, false, true, false),
        op::WRITE_LAST_IMM => (Kind::Write, false, true, true),
        op::WRITE_ONLY => (Kind::Write, true, true, false),
        op::WRITE_ONLY_IMM => (Kind::Write, true, true, true),
        op::READ_REQUEST => (Kind::Read, true, true, false),
        // CMP_SWAP, FETCH_ADD (the only other request opcodes recv routes here).
        _ => (Kind::Atomic, true, true, false),
    }
}

impl Nic {
    /// Whether QP `q` has responses queued (section 9a); a TX task of the QP sends them.
    pub(crate) fn rsp_work(q: &Qpc) -> bool {
        q.valid
            && (q.state == qp_state::RTR || q.state == qp_state::RTS)
            && (q.rsp_cnt != 0 || q.ack_pend)
    }

    /// Send an ACK-opcode frame with `syndrome` (ACK or NAK), `psn` and the current MSN.
    fn send_ack(&mut self, qpn: u32, syndrome: u32, psn: u32) {
        let msn = self.qpc[qpn as usize].msn;
        let hdr = Headers {
            bth: Bth {
                opcode: op::ACK,
                psn,
                ..Bth::default()
            },
            aeth: Some(Aeth {
                syndrome: syndrome as u8,
                msn,
            }),
            ..Headers::default()
        };
        self.send_frame(qpn, hdr, &[]);
    }

    /// An ACK, sequence NAK or RNR NAK decided by an RX task: sent at once when no response is
    /// queued, else it becomes the QP's one pending ACK (the latest replaces an earlier one) and
    /// goes out after the queued responses (section 9a).
    fn emit_ack(&mut self, qpn: u32, syndrome: u32, psn: u32) {
        let q = &mut self.qpc[qpn as usize];
        if q.rsp_cnt == 0 && !q.ack_pend {
            self.send_ack(qpn, syndrome, psn);
        } else {
            // A pending NAK is not replaced by an ACK (it would never be sent).
            let nak = |s: u32| (s >> 5) & 3 != aeth::TYPE_ACK;
            if !(q.ack_pend && nak(q.ack_syn as u32) && !nak(syndrome)) {
                q.ack_pend = true;
                q.ack_syn = syndrome as u8;
                q.ack_psn = psn;
            }
            self.push_qp(qpn);
        }
    }

    /// Whether a queued response will already answer a duplicate READ (`read`) or atomic at
    /// `psn` (section 9a): a queued READ whose unsent packets cover `psn`, or a queued atomic
    /// with that PSN. Such a duplicate is not queued again, so the ring never holds two answers
    /// for one PSN and stays within the requester's outstanding READs and atomics.
    fn rsp_covers(&self, qpn: u32, psn: u32, read: bool) -> bool {
        let q = &self.qpc[qpn as usize];
        let mtu = mtu_bytes(q.path_mtu);
        (0..q.rsp_cnt as usize).any(|k| {
            let slot = (q.rsp_rp as usize + k) % params::ATOM_HIST as usize;
            let Some(e) = self.atom_hist[qpn as usize][slot] else { return false };
            if !read || !e.read {
                return !read && !e.read && e.psn == psn;
            }
            let sent = if k == 0 { q.rsp_off / mtu } else { 0 };
            let start = psn_add(e.psn, sent);
            let end = psn_add(e.psn, e.len.div_ceil(mtu).max(1));
            psn_diff(psn, start) >= 0 && psn_diff(psn, end) < 0
        })
    }

    /// Error NAK: send NAK `code` for `psn` at once, drop the queued responses, QP to ERR.
    fn error_nak(&mut self, qpn: u32, code: u32, psn: u32) {
        self.send_ack(qpn, code, psn);
        self.count(counter::RX_NAK_SENT);
        let q = &mut self.qpc[qpn as usize];
        q.state = qp_state::ERR;
        q.rsp_cnt = 0;
        q.rsp_rp = q.atom_wp;
        q.rsp_off = 0;
        q.ack_pend = false;
        self.push_qp(qpn);
    }

    /// Record a receive-queue error completion for the WQE at `rq_ci`.
    fn rq_error(&mut self, qpn: u32, status: u8) {
        let q = &mut self.qpc[qpn as usize];
        q.rq_err_valid = true;
        q.rq_err_idx = q.rq_ci;
        q.rq_err_status = status;
    }

    fn rnr_nak(&mut self, qpn: u32, psn: u32) {
        let timer = self.qpc[qpn as usize].min_rnr_timer as u32;
        self.emit_ack(qpn, aeth::RNR_NAK_BASE | timer, psn);
        self.count(counter::RX_NAK_SENT);
    }

    /// Append `e` to QP `qpn`'s resource ring as a response still to send (the caller checked
    /// that the ring has room: `rsp_cnt < ATOM_HIST`).
    fn rsp_push(&mut self, qpn: u32, e: RespRes) {
        let q = &mut self.qpc[qpn as usize];
        let slot = q.atom_wp as usize;
        q.atom_wp = ((slot + 1) % params::ATOM_HIST as usize) as u8;
        q.rsp_cnt += 1;
        self.atom_hist[qpn as usize][slot] = Some(e);
        self.push_qp(qpn);
    }

    /// One step of a TX task on a QP with queued responses (section 9a): one READ response
    /// packet, one ATOMIC_ACK, or the pending ACK.
    pub(crate) fn rsp_step(&mut self, qpn: u32, mem: &mut dyn HostMemory) -> Result<(), ModelError> {
        let q = &self.qpc[qpn as usize];
        if q.rsp_cnt == 0 {
            let (syn, psn) = (q.ack_syn as u32, q.ack_psn);
            self.qpc[qpn as usize].ack_pend = false;
            self.send_ack(qpn, syn, psn);
            return Ok(());
        }
        let rp = q.rsp_rp as usize;
        let e = self.atom_hist[qpn as usize][rp].unwrap_or_default();
        if !e.read {
            let q = &mut self.qpc[qpn as usize];
            q.rsp_rp = ((rp + 1) % params::ATOM_HIST as usize) as u8;
            q.rsp_cnt -= 1;
            self.send_atomic_ack(qpn, e.psn, e.va);
            return Ok(());
        }
        let mtu = mtu_bytes(q.path_mtu);
        let off = q.rsp_off;
        let n = mtu.min(e.len - off);
        let (first, last) = (off == 0, off + n >= e.len);
        let psn = psn_add(e.psn, off / mtu);
        let va = e.va.wrapping_add(off as u64);
        let (pdn, func, msn) = (q.pdn, q.func, q.msn);
        // The MR may have gone away since the request was accepted: a remote access error.
        let Some(mr) = self.check_rkey(e.rkey, pdn, va, n as u64, access::REMOTE_READ) else {
            self.error_nak(qpn, aeth::NAK_REM_ACCESS, psn);
            return Ok(());
        };
        let opcode = match (first, last) {
            (true, true) => op::READ_RESP_ONLY,
            (true, false) => op::READ_RESP_FIRST,
            (false, true) => op::READ_RESP_LAST,
            (false, false) => op::READ_RESP_MIDDLE,
        };
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        buf.resize(n as usize, 0);
        if let Err(err) = self.mr_read(mem, func, mr, va, &mut buf) {
            self.scratch = buf;
            return Err(err);
        }
        let hdr = Headers {
            bth: Bth {
                opcode,
                psn,
                ..Bth::default()
            },
            aeth: (opcode != op::READ_RESP_MIDDLE).then_some(Aeth {
                syndrome: aeth::ACK_UNLIMITED as u8,
                msn,
            }),
            ..Headers::default()
        };
        self.send_frame(qpn, hdr, &buf);
        self.scratch = buf;
        let q = &mut self.qpc[qpn as usize];
        if last {
            q.rsp_off = 0;
            q.rsp_rp = ((rp + 1) % params::ATOM_HIST as usize) as u8;
            q.rsp_cnt -= 1;
        } else {
            q.rsp_off = off + n;
        }
        Ok(())
    }

    /// Handle a request packet on QP `qpn` (already past the receive checks).
    pub(crate) fn responder(
        &mut self,
        qpn: u32,
        p: &ParsedFrame<'_>,
        mem: &mut dyn HostMemory,
    ) -> Result<(), ModelError> {
        let opcode = p.hdr.bth.opcode;
        let psn = p.hdr.bth.psn;
        let (kind, first, last, imm) = classify(opcode);
        let q = &self.qpc[qpn as usize];
        let d = psn_diff(psn, q.rq_psn);
        if d > 0 {
            if !q.nak_latch {
                let expected = q.rq_psn;
                self.emit_ack(qpn, aeth::NAK_PSN_SEQ, expected);
                self.qpc[qpn as usize].nak_latch = true;
                self.count(counter::RX_NAK_SENT);
            }
            return Ok(());
        }
        if d < 0 {
            self.count(counter::RX_DUP);
            return self.duplicate(qpn, kind, p);
        }
        let q = &mut self.qpc[qpn as usize];
        q.nak_latch = false;
        // 1. sequence
        let need_msg = match (kind, first) {
            (Kind::Send, false) => resp_in_msg::SEND,
            (Kind::Write, false) => resp_in_msg::WRITE,
            _ => resp_in_msg::NONE,
        };
        if q.resp_in_msg as u32 != need_msg {
            self.error_nak(qpn, aeth::NAK_INV_REQ, psn);
            return Ok(());
        }
        // 2. QP access
        let need_acc = match kind {
            Kind::Send => 0,
            Kind::Write => access::REMOTE_WRITE,
            Kind::Read => access::REMOTE_READ,
            Kind::Atomic => access::REMOTE_ATOMIC,
        };
        if q.access as u32 & need_acc != need_acc {
            self.error_nak(qpn, aeth::NAK_INV_REQ, psn);
            return Ok(());
        }
        // 3. length
        let mtu = mtu_bytes(q.path_mtu) as usize;
        let plen = p.payload.len();
        let len_ok = match (kind, first, last) {
            (Kind::Read | Kind::Atomic, _, _) => plen == 0,
            (_, true, true) => plen <= mtu,
            (_, false, true) => (1..=mtu).contains(&plen),
            _ => plen == mtu,
        };
        if !len_ok {
            self.error_nak(qpn, aeth::NAK_INV_REQ, psn);
            return Ok(());
        }
        // More READ/atomic requests waiting for responses than the resource ring holds: the
        // requester broke max_dest_rd_atomic.
        if matches!(kind, Kind::Read | Kind::Atomic) && self.qpc[qpn as usize].rsp_cnt as u64 >= params::ATOM_HIST {
            self.error_nak(qpn, aeth::NAK_INV_REQ, psn);
            return Ok(());
        }
        match kind {
            Kind::Send => self.resp_send(qpn, p, first, last, imm, mem),
            Kind::Write => self.resp_write(qpn, p, first, last, imm, mem),
            Kind::Read => {
                let r = p.hdr.reth.unwrap_or_default();
                let pdn = self.qpc[qpn as usize].pdn;
                if self
                    .check_rkey(r.rkey, pdn, r.va, r.dma_len as u64, access::REMOTE_READ)
                    .is_none()
                {
                    self.error_nak(qpn, aeth::NAK_REM_ACCESS, psn);
                    return Ok(());
                }
                let q = &mut self.qpc[qpn as usize];
                let mtu = mtu_bytes(q.path_mtu);
                q.msn = psn_add(q.msn, 1);
                q.rq_psn = psn_add(q.rq_psn, r.dma_len.div_ceil(mtu).max(1));
                q.ack_pend = false;
                self.rsp_push(qpn, RespRes { read: true, psn, va: r.va, rkey: r.rkey, len: r.dma_len });
                Ok(())
            }
            Kind::Atomic => self.resp_atomic(qpn, p, mem),
        }
    }

    /// Duplicate request (PSN behind `rq_psn`).
    fn duplicate(
        &mut self,
        qpn: u32,
        kind: Kind,
        p: &ParsedFrame<'_>,
    ) -> Result<(), ModelError> {
        let psn = p.hdr.bth.psn;
        let q = &self.qpc[qpn as usize];
        match kind {
            Kind::Send | Kind::Write => {
                let ack_psn = psn_add(q.rq_psn, 0xFF_FFFF);
                self.emit_ack(qpn, aeth::ACK_UNLIMITED, ack_psn);
            }
            Kind::Read => {
                // Replayed from its own RETH range, queued like a new READ; ignored when the
                // rkey fails or the resource ring is full.
                let r = p.hdr.reth.unwrap_or_default();
                let ok = self
                    .check_rkey(r.rkey, q.pdn, r.va, r.dma_len as u64, access::REMOTE_READ)
                    .is_some();
                if ok && (q.rsp_cnt as u64) < params::ATOM_HIST && !self.rsp_covers(qpn, psn, true) {
                    self.rsp_push(qpn, RespRes { read: true, psn, va: r.va, rkey: r.rkey, len: r.dma_len });
                }
            }
            Kind::Atomic => {
                let saved = self.atom_hist[qpn as usize]
                    .iter()
                    .find(|e| e.is_some_and(|e| !e.read && e.psn == psn))
                    .copied()
                    .flatten();
                if let Some(e) = saved {
                    if q.rsp_cnt == 0 && !q.ack_pend {
                        self.send_atomic_ack(qpn, psn, e.va);
                    } else if (q.rsp_cnt as u64) < params::ATOM_HIST && !self.rsp_covers(qpn, psn, false) {
                        self.rsp_push(qpn, e);
                    }
                }
            }
        }
        Ok(())
    }

    fn send_atomic_ack(&mut self, qpn: u32, psn: u32, orig: u64) {
        let msn = self.qpc[qpn as usize].msn;
        let hdr = Headers {
            bth: Bth {
                opcode: op::ATOMIC_ACK,
                psn,
                ..Bth::default()
            },
            aeth: Some(Aeth {
                syndrome: aeth::ACK_UNLIMITED as u8,
                msn,
            }),
            atomic_ack: Some(orig),
            ..Headers::default()
        };
        self.send_frame(qpn, hdr, &[]);
    }

    /// Common tail of SEND*/WRITE* packets: advance `rq_psn`, ACK if requested.
    fn resp_ack_tail(&mut self, qpn: u32, p: &ParsedFrame<'_>) {
        let q = &mut self.qpc[qpn as usize];
        q.rq_psn = psn_add(q.rq_psn, 1);
        if p.hdr.bth.ackreq {
            self.emit_ack(qpn, aeth::ACK_UNLIMITED, p.hdr.bth.psn);
        }
    }

    fn resp_send(
        &mut self,
        qpn: u32,
        p: &ParsedFrame<'_>,
        first: bool,
        last: bool,
        imm: bool,
        mem: &mut dyn HostMemory,
    ) -> Result<(), ModelError> {
        let psn = p.hdr.bth.psn;
        let q = &self.qpc[qpn as usize];
        if q.rq_ci == q.rq_pi {
            self.rnr_nak(qpn, psn);
            return Ok(());
        }
        let idx = q.rq_ci;
        let rw = self.recv_wqe_at_ci(mem, qpn)?;
        let q = &mut self.qpc[qpn as usize];
        if first {
            q.resp_offset = 0;
        }
        let (pdn, func, off) = (q.pdn, q.func, q.resp_offset as u64);
        if rw.num_sge as u64 > params::MAX_RECV_SGE {
            self.rq_error(qpn, wc_status::LOC_QP_OP_ERR);
            self.error_nak(qpn, aeth::NAK_REM_OP, psn);
            return Ok(());
        }
        let total: u64 = rw.sges().iter().map(|s| s.len as u64).sum();
        if off + p.payload.len() as u64 > total {
            self.rq_error(qpn, wc_status::LOC_LEN_ERR);
            self.error_nak(qpn, aeth::NAK_INV_REQ, psn);
            return Ok(());
        }
        if !self.scatter(mem, func, pdn, rw.sges(), off, p.payload)? {
            self.rq_error(qpn, wc_status::LOC_PROT_ERR);
            self.error_nak(qpn, aeth::NAK_REM_OP, psn);
            return Ok(());
        }
        let q = &mut self.qpc[qpn as usize];
        q.resp_offset += p.payload.len() as u32;
        if last {
            q.resp_in_msg = resp_in_msg::NONE as u8;
            let (cqn, byte_len) = (q.recv_cqn, q.resp_offset);
            let e = Cqe {
                wr_id: rw.wr_id,
                byte_len,
                imm: if imm {
                    p.hdr.imm.unwrap_or_default()
                } else {
                    0
                },
                opcode: wc_opcode::RECV,
                status: wc_status::SUCCESS,
                flags: if imm { cqe_flag::WITH_IMM as u8 } else { 0 },
                wqe_idx: idx,
            };
            self.post_cqe(mem, qpn, cqn, &e)?;
            let q = &mut self.qpc[qpn as usize];
            q.rq_ci = q.rq_ci.wrapping_add(1);
            q.msn = psn_add(q.msn, 1);
            q.resp_offset = 0;
        } else {
            q.resp_in_msg = resp_in_msg::SEND as u8;
        }
        self.resp_ack_tail(qpn, p);
        Ok(())
    }

    fn resp_write(
        &mut self,
        qpn: u32,
        p: &ParsedFrame<'_>,
        first: bool,
        last: bool,
        imm: bool,
        mem: &mut dyn HostMemory,
    ) -> Result<(), ModelError> {
        let psn = p.hdr.bth.psn;
        let pdn = self.qpc[qpn as usize].pdn;
        if first {
            let r = p.hdr.reth.unwrap_or_default();
            if self
                .check_rkey(r.rkey, pdn, r.va, r.dma_len as u64, access::REMOTE_WRITE)
                .is_none()
            {
                self.error_nak(qpn, aeth::NAK_REM_ACCESS, psn);
                return Ok(());
            }
            let q = &mut self.qpc[qpn as usize];
            q.resp_va = r.va;
            q.resp_rkey = r.rkey;
            q.resp_len = r.dma_len;
            q.resp_offset = 0;
        }
        let q = &self.qpc[qpn as usize];
        let plen = p.payload.len() as u64;
        let end = q.resp_offset as u64 + plen;
        if end > q.resp_len as u64 || (last && end != q.resp_len as u64) {
            self.error_nak(qpn, aeth::NAK_INV_REQ, psn);
            return Ok(());
        }
        if imm && q.rq_ci == q.rq_pi {
            self.rnr_nak(qpn, psn);
            return Ok(());
        }
        if plen > 0 {
            let va = q.resp_va.wrapping_add(q.resp_offset as u64);
            // Re-check the rkey for this piece: the MR may have been deregistered since the
            // first packet of the message.
            let Some(mr) = self.check_rkey(q.resp_rkey, pdn, va, plen, access::REMOTE_WRITE) else {
                self.error_nak(qpn, aeth::NAK_REM_ACCESS, psn);
                return Ok(());
            };
            let func = q.func;
            self.mr_write(mem, func, mr, va, p.payload)?;
        }
        let q = &mut self.qpc[qpn as usize];
        q.resp_offset += plen as u32;
        if last {
            q.resp_in_msg = resp_in_msg::NONE as u8;
            q.msn = psn_add(q.msn, 1);
            if imm {
                let (idx, cqn, byte_len) = (q.rq_ci, q.recv_cqn, q.resp_len);
                let rw = self.recv_wqe_at_ci(mem, qpn)?;
                let e = Cqe {
                    wr_id: rw.wr_id,
                    byte_len,
                    imm: p.hdr.imm.unwrap_or_default(),
                    opcode: wc_opcode::RECV_RDMA_WITH_IMM,
                    status: wc_status::SUCCESS,
                    flags: cqe_flag::WITH_IMM as u8,
                    wqe_idx: idx,
                };
                self.post_cqe(mem, qpn, cqn, &e)?;
                let q = &mut self.qpc[qpn as usize];
                q.rq_ci = q.rq_ci.wrapping_add(1);
            }
        } else {
            q.resp_in_msg = resp_in_msg::WRITE as u8;
        }
        self.resp_ack_tail(qpn, p);
        Ok(())
    }

    fn resp_atomic(
        &mut self,
        qpn: u32,
        p: &ParsedFrame<'_>,
        mem: &mut dyn HostMemory,
    ) -> Result<(), ModelError> {
        let psn = p.hdr.bth.psn;
        let a = p.hdr.atomic_eth.unwrap_or_default();
        let (pdn, func) = {
            let q = &self.qpc[qpn as usize];
            (q.pdn, q.func)
        };
        if !a.va.is_multiple_of(8) {
            self.error_nak(qpn, aeth::NAK_INV_REQ, psn);
            return Ok(());
        }
        let Some(mr) = self.check_rkey(a.rkey, pdn, a.va, 8, access::REMOTE_ATOMIC) else {
            self.error_nak(qpn, aeth::NAK_REM_ACCESS, psn);
            return Ok(());
        };
        let mut b = [0u8; 8];
        self.mr_read(mem, func, mr, a.va, &mut b)?;
        let orig = u64::from_le_bytes(b);
        let new = if p.hdr.bth.opcode == op::CMP_SWAP {
            (orig == a.compare).then_some(a.swap_add)
        } else {
            Some(orig.wrapping_add(a.swap_add))
        };
        if let Some(v) = new {
            self.mr_write(mem, func, mr, a.va, &v.to_le_bytes())?;
        }
        let q = &mut self.qpc[qpn as usize];
        q.msn = psn_add(q.msn, 1);
        q.rq_psn = psn_add(q.rq_psn, 1);
        let e = RespRes { read: false, psn, va: orig, rkey: 0, len: 0 };
        if q.rsp_cnt == 0 && !q.ack_pend {
            // Nothing queued: answered at once (the entry stays as history).
            let slot = q.atom_wp as usize;
            q.atom_wp = ((slot + 1) % params::ATOM_HIST as usize) as u8;
            q.rsp_rp = q.atom_wp;
            self.atom_hist[qpn as usize][slot] = Some(e);
            self.send_atomic_ack(qpn, psn, orig);
        } else {
            q.ack_pend = false;
            self.rsp_push(qpn, e);
        }
        Ok(())
    }
}
