// SPDX-License-Identifier: Apache-2.0
//! Device context: identification, limits, the admin command interface, index allocation.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::rc::Rc;

use rnic_regs::{cmd_index, cmd_set_port, cmd_status, params, reg};

use crate::alloc::{IndexAllocator, RangeAllocator};
use crate::cq::Cq;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::pd::Pd;
use crate::types::{Command, CommandStatus, LogObj, Object, Resource};

/// Size in bytes of a command argument image (`CMD_ARG0..CMD_ARG5`).
pub const CMD_IMAGE_SIZE: usize = 48;

/// A command argument image; build it with the `rnic_regs::cmd_*` field accessors.
pub type CmdImage = [u8; CMD_IMAGE_SIZE];

/// Default number of `progress()` calls an admin command may stay BUSY.
pub const DEFAULT_COMMAND_POLL_LIMIT: u32 = 100_000;

/// Resource limits read from DEV_CAPS / DEV_CAPS2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceCaps {
    /// Interface version from DEV_ID.
    pub interface_version: u16,
    /// Number of QPs (QPNs 0 and 1 are reserved).
    pub num_qp: u32,
    /// Number of CQs.
    pub num_cq: u32,
    /// Number of MRs.
    pub num_mr: u32,
    /// Number of PDs.
    pub num_pd: u32,
    /// Number of MTT entries.
    pub num_mtt: u32,
    /// Maximum SGEs per send WQE.
    pub max_send_sge: u32,
    /// Maximum SGEs per receive WQE.
    pub max_recv_sge: u32,
}

/// The part of the device's tables a function owns (`RES_*` registers; docs/architecture.md,
/// Functions): `(first, count)` per resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FunctionResources {
    /// This function's number (0 = PF, n = VF n).
    pub func: u8,
    /// QPNs.
    pub qp: (u32, u32),
    /// CQNs.
    pub cq: (u32, u32),
    /// MR indices.
    pub mr: (u32, u32),
    /// PDNs.
    pub pd: (u32, u32),
    /// MTT entries.
    pub mtt: (u32, u32),
}

impl FunctionResources {
    fn read(dev: &dyn Device) -> FunctionResources {
        let r = |off| {
            let v = dev.mmio_read(off);
            (v as u32, (v >> 32) as u32)
        };
        FunctionResources {
            func: dev.mmio_read(reg::FUNC_ID) as u8,
            qp: r(reg::RES_QP),
            cq: r(reg::RES_CQ),
            mr: r(reg::RES_MR),
            pd: r(reg::RES_PD),
            mtt: r(reg::RES_MTT),
        }
    }
}

impl DeviceCaps {
    /// Decode the DEV_ID, DEV_CAPS and DEV_CAPS2 register values (bit layout: register docs in
    /// spec/rnic.toml).
    pub fn decode(dev_id: u64, caps: u64, caps2: u64) -> Self {
        let f16 = |v: u64, lsb: u32| ((v >> lsb) & 0xFFFF) as u32;
        DeviceCaps {
            interface_version: f16(dev_id, 32) as u16,
            num_qp: f16(caps, 0),
            num_cq: f16(caps, 16),
            num_mr: f16(caps, 32),
            num_pd: f16(caps, 48),
            num_mtt: (caps2 & 0xFFFF_FFFF) as u32,
            max_send_sge: ((caps2 >> 32) & 0xFF) as u32,
            max_recv_sge: ((caps2 >> 40) & 0xFF) as u32,
        }
    }
}

/// An owned DMA allocation, returned to the device allocator on drop.
pub(crate) struct DmaBuf {
    dev: Rc<dyn Device>,
    iova: u64,
    len: u64,
}

impl DmaBuf {
    pub(crate) fn alloc(dev: &Rc<dyn Device>, len: u64, align: u64) -> Result<Self> {
        let iova = dev
            .dma_alloc(len, align)
            .map_err(Error::device("allocating DMA memory"))?;
        Ok(DmaBuf {
            dev: dev.clone(),
            iova,
            len,
        })
    }
    pub(crate) fn iova(&self) -> u64 {
        self.iova
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        self.dev.dma_free(self.iova, self.len);
    }
}

/// Shared state behind a [`Context`]; every object keeps it alive.
pub(crate) struct CtxInner {
    pub(crate) dev: Rc<dyn Device>,
    pub(crate) caps: DeviceCaps,
    pub(crate) qpns: RefCell<IndexAllocator>,
    pub(crate) cqns: RefCell<IndexAllocator>,
    pub(crate) pdns: RefCell<IndexAllocator>,
    pub(crate) mrs: RefCell<IndexAllocator>,
    pub(crate) mtt: RefCell<RangeAllocator>,
    /// The function's resource ranges.
    pub(crate) res: FunctionResources,
    next_key: Cell<u8>,
    poll_limit: Cell<u32>,
    /// MSI-X vectors taken from the device but not yet consumed by a waiter.
    pending_irqs: RefCell<VecDeque<u16>>,
    /// Port address from the last successful SET_PORT.
    pub(crate) port: Cell<Option<([u8; 6], Ipv4Addr)>>,
    /// Log target of every driver log line for this device: `rnic_driver::<label>`, or
    /// `rnic_driver` when the device has no [`Device::label`].
    pub(crate) log_target: String,
}

impl CtxInner {
    pub(crate) fn write(&self, offset: u64, value: u64) {
        log::trace!(target: &self.log_target, "mmio: write {offset:#08x} <- {value:#018x}");
        self.dev.mmio_write(offset, value);
    }

    pub(crate) fn read(&self, offset: u64) -> u64 {
        let v = self.dev.mmio_read(offset);
        log::trace!(target: &self.log_target, "mmio: read  {offset:#08x} -> {v:#018x}");
        v
    }

    pub(crate) fn dma_write(&self, iova: u64, data: &[u8], during: &'static str) -> Result<()> {
        self.dev
            .dma_write(iova, data)
            .map_err(Error::device(during))
    }

    pub(crate) fn dma_read(&self, iova: u64, buf: &mut [u8], during: &'static str) -> Result<()> {
        self.dev.dma_read(iova, buf).map_err(Error::device(during))
    }

    pub(crate) fn progress(&self, during: &'static str) -> Result<()> {
        self.dev.progress().map_err(Error::device(during))
    }

    /// The next per-registration key byte (rotates so a stale lkey/rkey of a previous
    /// registration of the same MR index is rejected by the device).
    pub(crate) fn next_key(&self) -> u8 {
        let k = self.next_key.get();
        self.next_key.set(k.wrapping_add(1));
        k
    }

    pub(crate) fn alloc_index(&self, resource: Resource) -> Result<u32> {
        let a = self.allocator(resource);
        let mut a = a.borrow_mut();
        a.alloc().ok_or(Error::ResourceExhausted {
            resource,
            limit: a.capacity(),
        })
    }

    pub(crate) fn free_index(&self, resource: Resource, index: u32) {
        if !self.allocator(resource).borrow_mut().free(index) {
            log::error!(target: &self.log_target, "alloc: driver bug: freeing {resource} index {index} that is not allocated");
        }
    }

    fn allocator(&self, resource: Resource) -> &RefCell<IndexAllocator> {
        match resource {
            Resource::Qp => &self.qpns,
            Resource::Cq => &self.cqns,
            Resource::Pd => &self.pdns,
            Resource::Mr => &self.mrs,
            // MTT entries are handed out as ranges by `self.mtt`, never one by one.
            Resource::Mtt => unreachable!("MTT entries are allocated as ranges"),
        }
    }

    /// Run one admin command: argument image into CMD_ARG0..5, opcode into CMD_OP, then poll
    /// CMD_STATUS (calling `progress()` between polls) until it is not BUSY.
    pub(crate) fn command(
        &self,
        command: Command,
        object: Object,
        image: &CmdImage,
    ) -> Result<(u64, u64)> {
        log::debug!(target: &self.log_target, "{}: cmd {command}", LogObj(object));
        let args = [
            reg::CMD_ARG0,
            reg::CMD_ARG1,
            reg::CMD_ARG2,
            reg::CMD_ARG3,
            reg::CMD_ARG4,
            reg::CMD_ARG5,
        ];
        for (off, chunk) in args.iter().zip(image.chunks_exact(8)) {
            self.write(
                *off,
                u64::from_le_bytes(chunk.try_into().expect("8-byte chunk")),
            );
        }
        self.write(reg::CMD_OP, u64::from(command.code()));
        let limit = self.poll_limit.get();
        let mut polls = 0u32;
        let status = loop {
            let raw = self.read(reg::CMD_STATUS);
            // An Unsupported Request reads all-ones: the function is gone (VFs disabled, FLR,
            // surprise removal), not busy. Polling would only run into the timeout.
            if raw == u64::MAX {
                return Err(Error::FunctionGone { command, object });
            }
            let s = (raw & 0xFF) as u8;
            if s != cmd_status::BUSY {
                break s;
            }
            if polls >= limit {
                return Err(Error::CommandTimeout {
                    command,
                    object,
                    polls,
                });
            }
            self.progress("waiting for an admin command")?;
            polls += 1;
        };
        if status != cmd_status::OK {
            let status = CommandStatus::from_code(status);
            log::debug!(target: &self.log_target, "{}: cmd {command} failed: {status}", LogObj(object));
            return Err(Error::CommandFailed {
                command,
                object,
                status,
            });
        }
        Ok((self.read(reg::CMD_OUT0), self.read(reg::CMD_OUT1)))
    }

    /// Single-index command (`cmd_index` layout).
    pub(crate) fn index_command(
        &self,
        command: Command,
        object: Object,
        index: u32,
    ) -> Result<(u64, u64)> {
        let mut img = [0u8; CMD_IMAGE_SIZE];
        cmd_index::INDEX.set(&mut img, u64::from(index));
        self.command(command, object, &img)
    }

    /// Move interrupts from the device into the pending queue.
    pub(crate) fn collect_interrupts(&self) {
        let new = self.dev.take_interrupts();
        if !new.is_empty() {
            log::debug!(target: &self.log_target, "irq: vectors {new:?}");
            self.pending_irqs.borrow_mut().extend(new);
        }
    }

    /// Remove one pending interrupt on `vector`; whether there was one.
    pub(crate) fn take_interrupt(&self, vector: u16) -> bool {
        self.collect_interrupts();
        let mut q = self.pending_irqs.borrow_mut();
        match q.iter().position(|v| *v == vector) {
            Some(i) => {
                q.remove(i);
                true
            }
            None => false,
        }
    }
}

/// An open device: the root of every verbs object (like `ibv_context`).
///
/// Cloning is cheap and yields another handle to the same device. Objects created from it
/// (PDs, CQs, QPs, MRs) keep the device state alive on their own.
#[derive(Clone)]
pub struct Context {
    pub(crate) inner: Rc<CtxInner>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("caps", &self.inner.caps)
            .finish()
    }
}

impl Context {
    /// Open the device: check DEV_ID and read the resource limits.
    ///
    /// # Errors
    /// [`Error::UnsupportedDevice`] when DEV_ID's vendor, device id or interface version differ
    /// from the spec this driver was generated from; [`Error::InvalidArgument`] when DEV_CAPS
    /// reports limits too small to be usable (fewer than 3 QPs, no CQ/PD/MR/MTT entries).
    pub fn open(dev: Rc<dyn Device>) -> Result<Context> {
        // Like pci_enable_device + pci_set_master: memory decoding and DMA on.
        crate::sriov::enable_function(&*dev);
        let dev_id = dev.mmio_read(reg::DEV_ID);
        if dev_id != reg::DEV_ID_RESET {
            return Err(Error::UnsupportedDevice {
                found: dev_id,
                expected: reg::DEV_ID_RESET,
            });
        }
        let caps = DeviceCaps::decode(
            dev_id,
            dev.mmio_read(reg::DEV_CAPS),
            dev.mmio_read(reg::DEV_CAPS2),
        );
        for (what, v, min) in [
            ("DEV_CAPS number of QPs", caps.num_qp, 3),
            ("DEV_CAPS number of CQs", caps.num_cq, 1),
            ("DEV_CAPS number of MRs", caps.num_mr, 1),
            ("DEV_CAPS number of PDs", caps.num_pd, 1),
            ("DEV_CAPS2 number of MTT entries", caps.num_mtt, 1),
            ("DEV_CAPS2 max send SGEs", caps.max_send_sge, 1),
            ("DEV_CAPS2 max recv SGEs", caps.max_recv_sge, 1),
        ] {
            if v < min {
                return Err(Error::InvalidArgument {
                    what,
                    value: u64::from(v),
                    reason: "device limit too small to use",
                });
            }
        }
        let res = FunctionResources::read(&*dev);
        let label = dev.label();
        let log_target = if label.is_empty() {
            "rnic_driver".to_owned()
        } else {
            format!("rnic_driver::{label}")
        };
        log::info!(
            target: &log_target,
            "device: opened RNIC interface v{}: {} QPs, {} CQs, {} MRs, {} PDs, {} MTT entries, {}/{} SGEs",
            caps.interface_version,
            caps.num_qp,
            caps.num_cq,
            caps.num_mr,
            caps.num_pd,
            caps.num_mtt,
            caps.max_send_sge,
            caps.max_recv_sge
        );
        let inner = CtxInner {
            dev,
            caps,
            // QPNs 0 and 1 are special in IBTA (SMI/GSI); the device refuses them.
            qpns: RefCell::new(IndexAllocator::new(res.qp.0.max(2), res.qp.0 + res.qp.1)),
            cqns: RefCell::new(IndexAllocator::new(res.cq.0, res.cq.0 + res.cq.1)),
            pdns: RefCell::new(IndexAllocator::new(res.pd.0, res.pd.0 + res.pd.1)),
            mrs: RefCell::new(IndexAllocator::new(res.mr.0, res.mr.0 + res.mr.1)),
            mtt: RefCell::new(RangeAllocator::with_base(res.mtt.0, res.mtt.1)),
            res,
            next_key: Cell::new(1),
            poll_limit: Cell::new(DEFAULT_COMMAND_POLL_LIMIT),
            pending_irqs: RefCell::new(VecDeque::new()),
            port: Cell::new(None),
            log_target,
        };
        Ok(Context {
            inner: Rc::new(inner),
        })
    }

    /// The device's resource limits.
    pub fn caps(&self) -> DeviceCaps {
        self.inner.caps
    }

    /// This function's number and resource ranges, as read when the context was opened.
    pub fn resources(&self) -> FunctionResources {
        self.inner.res
    }

    /// The backend this context drives.
    pub fn device(&self) -> &Rc<dyn Device> {
        &self.inner.dev
    }

    /// Set how many `progress()` calls an admin command may stay BUSY before
    /// [`Error::CommandTimeout`].
    pub fn set_command_poll_limit(&self, polls: u32) {
        self.inner.poll_limit.set(polls);
    }

    /// Program the port's MAC and IPv4 address (SET_PORT). The MAC's first byte (as written,
    /// and first on the wire) is bits 47:40 of the 48-bit field.
    ///
    /// # Errors
    /// Command errors ([`Error::CommandFailed`], [`Error::CommandTimeout`]) and backend errors.
    pub fn set_port(&self, mac: [u8; 6], ip: Ipv4Addr) -> Result<()> {
        let mut img = [0u8; CMD_IMAGE_SIZE];
        cmd_set_port::MAC.set(&mut img, mac_to_u64(mac));
        cmd_set_port::IP.set(&mut img, u64::from(u32::from(ip)));
        self.inner.command(Command::SetPort, Object::Port, &img)?;
        self.inner.port.set(Some((mac, ip)));
        log::info!(target: &self.inner.log_target, "port: set to {} / {ip}", fmt_mac(mac));
        Ok(())
    }

    /// The port address set by the last successful [`Context::set_port`], if any.
    pub fn port(&self) -> Option<([u8; 6], Ipv4Addr)> {
        self.inner.port.get()
    }

    /// Run a NOP command (a cheap liveness check of the command interface).
    ///
    /// # Errors
    /// Command errors and backend errors.
    pub fn nop(&self) -> Result<()> {
        self.inner
            .command(Command::Nop, Object::Device, &[0; CMD_IMAGE_SIZE])
            .map(|_| ())
    }

    /// Allocate a protection domain.
    ///
    /// # Errors
    /// [`Error::ResourceExhausted`] when all PDNs are in use; command and backend errors.
    pub fn alloc_pd(&self) -> Result<Pd> {
        Pd::alloc(&self.inner)
    }

    /// Create a completion queue with room for at least `depth` completions (rounded up to a
    /// power of two, at least 2), reporting interrupts on MSI-X vector 0.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `depth` exceeds the device's maximum (2^16);
    /// [`Error::ResourceExhausted`]; command and backend errors.
    pub fn create_cq(&self, depth: u32) -> Result<Cq> {
        Cq::create(&self.inner, depth, 0)
    }

    /// Like [`Context::create_cq`], with interrupts on MSI-X `vector`.
    ///
    /// # Errors
    /// As [`Context::create_cq`].
    pub fn create_cq_with_vector(&self, depth: u32, vector: u16) -> Result<Cq> {
        Cq::create(&self.inner, depth, vector)
    }

    /// Read counter `index` (`rnic_regs::counter::*`).
    pub fn counter(&self, index: u32) -> u64 {
        self.inner.read(reg::COUNTERS + 8 * u64::from(index))
    }

    /// Call the backend's `progress()` once.
    ///
    /// # Errors
    /// Backend errors (lockstep mismatch, simulation failure).
    pub fn progress(&self) -> Result<()> {
        self.inner.progress("progress")
    }

    /// **For tests of malformed input only.** Write any BAR0 register, bypassing every driver
    /// check and all driver bookkeeping (a doorbell written this way is not tracked, so the
    /// driver's queue accounting may disagree with the device afterwards).
    pub fn raw_mmio_write(&self, offset: u64, value: u64) {
        self.inner.write(offset, value);
    }

    /// **For tests.** Read any BAR0 register.
    pub fn raw_mmio_read(&self, offset: u64) -> u64 {
        self.inner.read(offset)
    }

    /// **For tests of malformed input only.** Run an admin command with an arbitrary argument
    /// image, bypassing driver checks and bookkeeping; returns `(CMD_OUT0, CMD_OUT1)`.
    ///
    /// # Errors
    /// Command errors (with [`Object::Device`]) and backend errors.
    pub fn raw_command(&self, opcode: u8, image: &CmdImage) -> Result<(u64, u64)> {
        self.inner
            .command(Command::from_code(opcode), Object::Device, image)
    }

    /// Doorbell page of QP `qpn` (BAR0 offset).
    pub fn qp_doorbell(qpn: u32) -> u64 {
        params::DB_QP_BASE + (u64::from(qpn) << params::DB_PAGE_SHIFT)
    }

    /// Doorbell page of CQ `cqn` (BAR0 offset).
    pub fn cq_doorbell(cqn: u32) -> u64 {
        params::DB_CQ_BASE + (u64::from(cqn) << params::DB_PAGE_SHIFT)
    }
}

/// A MAC address as the 48-bit value of the command images (first byte most significant).
pub fn mac_to_u64(mac: [u8; 6]) -> u64 {
    mac.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

/// Inverse of [`mac_to_u64`].
pub fn mac_from_u64(v: u64) -> [u8; 6] {
    let b = v.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

pub(crate) fn fmt_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
