// SPDX-License-Identifier: Apache-2.0
//! Completion queues: a ring of 32-byte CQEs in host memory, found by the owner bit.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};

use rnic_regs::{cmd_create_cq, cqe, cqe_flag, params};

use crate::context::{Context, CtxInner, DmaBuf, CMD_IMAGE_SIZE};
use crate::error::{Error, Result};
use crate::qp::QpShared;
use crate::types::{Command, Object, Resource, WcOpcode, WcStatus};

/// Largest CQ the device accepts (`log_size <= 16`, docs/architecture.md CREATE_CQ).
pub const MAX_CQ_LOG_SIZE: u32 = rnic_regs::params::MAX_CQ_LOG_SIZE as u32;

/// One decoded completion (like `ibv_wc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkCompletion {
    /// The work request's id.
    pub wr_id: u64,
    /// Completion status.
    pub status: WcStatus,
    /// What completed.
    pub opcode: WcOpcode,
    /// Bytes transferred (receives: bytes received; flushed WRs: 0).
    pub byte_len: u32,
    /// Immediate data, when the CQE carries `cqe_flag::WITH_IMM`.
    pub imm: Option<u32>,
    /// Local QP number.
    pub qpn: u32,
    /// Index (16-bit counter) of the WQE in its queue.
    pub wqe_idx: u16,
}

impl Default for WorkCompletion {
    fn default() -> Self {
        WorkCompletion {
            wr_id: 0,
            status: WcStatus::Success,
            opcode: WcOpcode::Send,
            byte_len: 0,
            imm: None,
            qpn: 0,
            wqe_idx: 0,
        }
    }
}

impl WorkCompletion {
    /// Decode a 32-byte CQE (the owner bit is not part of the completion).
    ///
    /// # Panics
    /// If `bytes` is shorter than `cqe::SIZE`.
    pub fn decode(bytes: &[u8]) -> Self {
        let with_imm = cqe::FLAGS.get(bytes) as u32 & cqe_flag::WITH_IMM != 0;
        WorkCompletion {
            wr_id: cqe::WR_ID.get(bytes),
            status: WcStatus::from_code(cqe::STATUS.get(bytes) as u8),
            opcode: WcOpcode::from_code(cqe::OPCODE.get(bytes) as u8),
            byte_len: cqe::BYTE_LEN.get(bytes) as u32,
            imm: with_imm.then(|| cqe::IMM.get(bytes) as u32),
            qpn: cqe::QPN.get(bytes) as u32,
            wqe_idx: cqe::WQE_IDX.get(bytes) as u16,
        }
    }

    /// Encode as a CQE with the given owner bit and function 0 (for fakes and tests).
    pub fn encode(&self, owner: bool) -> [u8; cqe::SIZE] {
        let mut b = [0u8; cqe::SIZE];
        cqe::WR_ID.set(&mut b, self.wr_id);
        cqe::STATUS.set(&mut b, u64::from(self.status.code()));
        cqe::OPCODE.set(&mut b, u64::from(self.opcode.code()));
        cqe::BYTE_LEN.set(&mut b, u64::from(self.byte_len));
        if let Some(imm) = self.imm {
            cqe::IMM.set(&mut b, u64::from(imm));
            cqe::FLAGS.set(&mut b, u64::from(cqe_flag::WITH_IMM));
        }
        cqe::QPN.set(&mut b, u64::from(self.qpn));
        cqe::WQE_IDX.set(&mut b, u64::from(self.wqe_idx));
        cqe::OWNER.set(&mut b, u64::from(owner));
        b
    }
}

pub(crate) struct CqInner {
    pub(crate) ctx: Rc<CtxInner>,
    pub(crate) cqn: u32,
    log_size: u32,
    vector: u16,
    ring: DmaBuf,
    /// Consumer index: completions consumed so far (32-bit counter, as the device's `ci`).
    ci: Cell<u32>,
    /// QPs whose queues this CQ completes, so polled CQEs free their ring slots.
    pub(crate) qps: RefCell<HashMap<u32, Weak<QpShared>>>,
    destroyed: Cell<bool>,
}

impl CqInner {
    fn destroy_now(&self) -> Result<()> {
        if self.destroyed.replace(true) {
            return Ok(());
        }
        self.ctx
            .index_command(Command::DestroyCq, Object::Cq(self.cqn), self.cqn)?;
        // Only a successful destroy makes the CQN reusable: otherwise the device may still hold it.
        self.ctx.free_index(Resource::Cq, self.cqn);
        log::info!(target: &self.ctx.log_target, "cq {:#x}: destroyed", self.cqn);
        Ok(())
    }
}

impl Drop for CqInner {
    fn drop(&mut self) {
        if let Err(e) = self.destroy_now() {
            log::error!(
                target: &self.ctx.log_target,
                "cq {:#x}: destroying on drop failed (CQN leaked): {e}",
                self.cqn
            );
        }
    }
}

/// A completion queue (like `ibv_cq`). Destroyed on drop.
///
/// Poll it with [`Cq::poll`], [`Cq::poll_one`] or [`Cq::wait`]; polling is what frees the
/// send/receive queue slots of the QPs completing to it. Sizing it so it cannot overflow (at
/// least the sum of the depths of the queues completing to it) is the caller's job, as in verbs:
/// an overflowing CQE is dropped by the device (`counter::CQ_OVERFLOW`).
pub struct Cq {
    pub(crate) inner: Rc<CqInner>,
}

impl std::fmt::Debug for Cq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cq")
            .field("cqn", &self.inner.cqn)
            .field("depth", &self.depth())
            .finish()
    }
}

impl Cq {
    pub(crate) fn create(ctx: &Rc<CtxInner>, depth: u32, vector: u16) -> Result<Cq> {
        let log_size = depth.max(2).next_power_of_two().trailing_zeros();
        if depth == 0 || log_size > MAX_CQ_LOG_SIZE {
            return Err(Error::InvalidArgument {
                what: "CQ depth",
                value: u64::from(depth),
                reason: "must be 1..=65536",
            });
        }
        let size = 1u64 << log_size;
        let ring = DmaBuf::alloc(&ctx.dev, size * cqe::SIZE as u64, 4096)?;
        let cqn = ctx.alloc_index(Resource::Cq)?;
        let mut img = [0u8; CMD_IMAGE_SIZE];
        cmd_create_cq::CQN.set(&mut img, u64::from(cqn));
        cmd_create_cq::BASE.set(&mut img, ring.iova());
        cmd_create_cq::LOG_SIZE.set(&mut img, u64::from(log_size));
        cmd_create_cq::VECTOR.set(&mut img, u64::from(vector));
        if let Err(e) = ctx.command(Command::CreateCq, Object::Cq(cqn), &img) {
            ctx.free_index(Resource::Cq, cqn);
            return Err(e);
        }
        log::info!(
            target: &ctx.log_target,
            "cq {cqn:#x}: created: {size} entries at {:#x}, vector {vector}",
            ring.iova()
        );
        let inner = CqInner {
            ctx: ctx.clone(),
            cqn,
            log_size,
            vector,
            ring,
            ci: Cell::new(0),
            qps: RefCell::new(HashMap::new()),
            destroyed: Cell::new(false),
        };
        Ok(Cq {
            inner: Rc::new(inner),
        })
    }

    /// The CQ number.
    pub fn cqn(&self) -> u32 {
        self.inner.cqn
    }

    /// Number of CQEs the ring holds.
    pub fn depth(&self) -> u32 {
        1 << self.inner.log_size
    }

    /// The MSI-X vector of this CQ.
    pub fn vector(&self) -> u16 {
        self.inner.vector
    }

    /// Host address of the CQE ring.
    pub fn ring_addr(&self) -> u64 {
        self.inner.ring.iova()
    }

    /// Completions consumed so far (the value last written to the CI doorbell).
    pub fn consumer_index(&self) -> u32 {
        self.inner.ci.get()
    }

    /// Read the next CQE if the device has written it.
    fn next_cqe(&self) -> Result<Option<WorkCompletion>> {
        let inner = &self.inner;
        let ci = inner.ci.get();
        let slot = u64::from(ci & ((1 << inner.log_size) - 1));
        let mut b = [0u8; cqe::SIZE];
        inner.ctx.dma_read(
            inner.ring.iova() + slot * cqe::SIZE as u64,
            &mut b,
            "reading a CQE",
        )?;
        // The device writes owner = 1 on the first pass, 0 on the second, ... (contract §11).
        let expected = ((ci >> inner.log_size) & 1) ^ 1;
        if cqe::OWNER.get(&b) as u32 != expected {
            return Ok(None);
        }
        inner.ci.set(ci.wrapping_add(1));
        Ok(Some(WorkCompletion::decode(&b)))
    }

    /// Return the queue slots of the completed WQE (and of unsignaled WQEs before it) to its QP.
    fn retire(&self, wc: &WorkCompletion) {
        let qp = self.inner.qps.borrow().get(&wc.qpn).and_then(Weak::upgrade);
        match qp {
            Some(qp) => qp.on_completion(&self.inner.ctx.log_target, wc),
            None => log::warn!(
                target: &self.inner.ctx.log_target,
                "cq {:#x}: completion for qp {:#x} which does not use this CQ",
                self.inner.cqn,
                wc.qpn
            ),
        }
    }

    fn ring_ci(&self) {
        let ci = self.inner.ci.get();
        self.inner.ctx.write(
            Context::cq_doorbell(self.inner.cqn) + params::DB_CQ_CI,
            u64::from(ci),
        );
    }

    /// Poll up to `wcs.len()` completions into `wcs`; returns how many were written. Writes
    /// the CI doorbell once when any were consumed, so the device can reuse the slots.
    ///
    /// # Errors
    /// Backend errors reading the ring (only when no completion was read before the failure;
    /// otherwise those completions are returned and the next call reports the error).
    pub fn poll(&self, wcs: &mut [WorkCompletion]) -> Result<usize> {
        let mut n = 0;
        while n < wcs.len() {
            let wc = match self.next_cqe() {
                Ok(Some(wc)) => wc,
                Ok(None) => break,
                // Completions already consumed must reach the caller; the failing read did not
                // advance the consumer index, so the next poll reports the error.
                Err(e) if n > 0 => {
                    log::warn!(
                        target: &self.inner.ctx.log_target,
                        "cq {:#x}: {e}; returning the {n} completions read before it",
                        self.inner.cqn
                    );
                    break;
                }
                Err(e) => return Err(e),
            };
            if wc.status.is_success() {
                log::info!(
                    target: &self.inner.ctx.log_target,
                    "qp {:#x}: completion on cq {:#x}: wr_id {:#x} {:?} {} bytes{}",
                    wc.qpn,
                    self.inner.cqn,
                    wc.wr_id,
                    wc.opcode,
                    wc.byte_len,
                    wc.imm.map(|i| format!(" imm {i:#x}")).unwrap_or_default()
                );
            } else {
                log::info!(
                    target: &self.inner.ctx.log_target,
                    "qp {:#x}: completion on cq {:#x}: wr_id {:#x} {:?} failed: {:?}",
                    wc.qpn,
                    self.inner.cqn,
                    wc.wr_id,
                    wc.opcode,
                    wc.status
                );
            }
            self.retire(&wc);
            wcs[n] = wc;
            n += 1;
        }
        if n > 0 {
            self.ring_ci();
        }
        Ok(n)
    }

    /// Poll one completion.
    ///
    /// # Errors
    /// Backend errors reading the ring.
    pub fn poll_one(&self) -> Result<Option<WorkCompletion>> {
        let mut wc = [WorkCompletion::default()];
        Ok((self.poll(&mut wc)? == 1).then_some(wc[0]))
    }

    /// Poll until `n` completions arrived, calling the backend's `progress()` between polls at
    /// most `max_progress_calls` times.
    ///
    /// # Errors
    /// [`Error::CqTimeout`] (carrying the completions that did arrive) when the budget runs
    /// out; backend errors from `progress()`.
    pub fn wait(&self, n: usize, max_progress_calls: u32) -> Result<Vec<WorkCompletion>> {
        let mut got = Vec::with_capacity(n);
        let mut buf = vec![WorkCompletion::default(); n];
        let mut calls = 0u32;
        loop {
            let k = self.poll(&mut buf[..n - got.len()])?;
            got.extend_from_slice(&buf[..k]);
            if got.len() >= n {
                return Ok(got);
            }
            if calls >= max_progress_calls {
                return Err(Error::CqTimeout {
                    cqn: self.inner.cqn,
                    wanted: n,
                    completions: got,
                    progress_calls: calls,
                });
            }
            self.inner.ctx.progress("waiting for completions")?;
            calls += 1;
        }
    }

    /// Request an interrupt for the next CQE written (one-shot, like `ibv_req_notify_cq`).
    ///
    /// A CQE written before the arm raises nothing, so the usual pattern is: arm, poll once
    /// more (to catch a completion that raced the arm), then [`Cq::wait_event`].
    pub fn arm(&self) {
        log::debug!(target: &self.inner.ctx.log_target, "cq {:#x}: arm", self.inner.cqn);
        self.inner
            .ctx
            .write(Context::cq_doorbell(self.inner.cqn) + params::DB_CQ_ARM, 1);
    }

    /// Wait for this CQ's interrupt (after [`Cq::arm`]), calling `progress()` at most
    /// `max_progress_calls` times. Interrupts of other vectors seen meanwhile are kept for their
    /// own waiters. CQs sharing a vector share its interrupts.
    ///
    /// # Errors
    /// [`Error::InterruptTimeout`]; backend errors from `progress()`.
    pub fn wait_event(&self, max_progress_calls: u32) -> Result<()> {
        let mut calls = 0u32;
        loop {
            if self.inner.ctx.take_interrupt(self.inner.vector) {
                log::debug!(
                    target: &self.inner.ctx.log_target,
                    "cq {:#x}: interrupt on vector {}",
                    self.inner.cqn,
                    self.inner.vector
                );
                return Ok(());
            }
            if calls >= max_progress_calls {
                return Err(Error::InterruptTimeout {
                    cqn: self.inner.cqn,
                    vector: self.inner.vector,
                    progress_calls: calls,
                });
            }
            self.inner.ctx.progress("waiting for an interrupt")?;
            calls += 1;
        }
    }

    /// Destroy the CQ now (dropping it does the same but can only log failures).
    ///
    /// # Errors
    /// [`Error::InUse`] while QPs still use it; command and backend errors.
    pub fn destroy(self) -> Result<()> {
        let cqn = self.inner.cqn;
        match Rc::try_unwrap(self.inner) {
            Ok(inner) => inner.destroy_now(),
            Err(rc) => Err(Error::InUse {
                object: Object::Cq(cqn),
                users: Rc::strong_count(&rc) - 1,
            }),
        }
    }
}
