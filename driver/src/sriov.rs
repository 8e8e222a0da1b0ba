// SPDX-License-Identifier: Apache-2.0
//! PCI configuration and SR-IOV enablement of the PF (docs/sriov.md), the way Linux's
//! `pci_enable_device`/`pci_set_master` and `sriov_init`/`sriov_enable` do it.

use rnic_regs::{cfg, params, sriov};

use crate::context::Context;
use crate::device::Device;
use crate::error::{Error, Result};

/// What the SR-IOV capability of a PF says (read by [`Context::sriov`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SriovInfo {
    /// Byte offset of the capability in configuration space.
    pub offset: u32,
    /// TotalVFs.
    pub total_vfs: u16,
    /// InitialVFs.
    pub initial_vfs: u16,
    /// NumVFs now.
    pub num_vfs: u16,
    /// VF Enable is set.
    pub enabled: bool,
    /// Function number of VF 1 relative to the PF (First VF Offset).
    pub first_vf_offset: u16,
    /// Distance between consecutive VFs' function numbers (VF Stride).
    pub vf_stride: u16,
    /// VF Device ID.
    pub vf_device_id: u16,
    /// Size of each VF's BAR0, found by probing the VF BAR0 register.
    pub vf_bar0_size: u64,
}

impl SriovInfo {
    /// Function number (routing ID relative to the PF's) of VF `n` (1-based).
    pub fn vf_function(&self, n: u16) -> u16 {
        self.first_vf_offset + (n - 1) * self.vf_stride
    }
}

/// Walk the extended capability list from `cfg::EXT_CAP` for capability `id`.
fn find_ext_cap(dev: &dyn Device, id: u32) -> Option<u32> {
    let mut at = cfg::EXT_CAP;
    // A well-formed list ends with next = 0; 4 KiB / 4 bytes bounds a malformed one.
    for _ in 0..1024 {
        let h = dev.cfg_read(at);
        if h == 0 || h == u32::MAX {
            return None;
        }
        if h & 0xFFFF == id {
            return Some(at);
        }
        let next = h >> 20;
        if next < cfg::EXT_CAP || next & 3 != 0 {
            return None;
        }
        at = next;
    }
    None
}

/// Size of a 64-bit memory BAR whose low dword is at `at`, by writing all-ones and reading back
/// (the original value is restored).
fn probe_bar64(dev: &dyn Device, at: u32) -> u64 {
    let (lo, hi) = (dev.cfg_read(at), dev.cfg_read(at + 4));
    dev.cfg_write(at, u32::MAX);
    dev.cfg_write(at + 4, u32::MAX);
    let mask = u64::from(dev.cfg_read(at) & !0xF) | u64::from(dev.cfg_read(at + 4)) << 32;
    dev.cfg_write(at, lo);
    dev.cfg_write(at + 4, hi);
    (!mask).wrapping_add(1)
}

/// Progress calls a Function Level Reset or a VF disable may take before
/// [`Error::ResetTimeout`] (the teardown flushes every outstanding WQE of the function).
pub const RESET_POLL_LIMIT: u32 = 100_000;

/// Poll Device Status Transactions Pending of the function behind `dev` until it clears.
fn wait_transactions_pending(dev: &dyn Device, what: &'static str, limit: u32) -> Result<()> {
    let at = cfg::PCIE_CAP + cfg::PCIE_DEVCTL;
    for polls in 0..=limit {
        let d = dev.cfg_read(at);
        // All-ones: the function does not exist (any more), nothing can be pending on it.
        if d == u32::MAX || (d >> 16) & cfg::DEVSTA_TP == 0 {
            return Ok(());
        }
        if polls < limit {
            dev.progress().map_err(Error::device("waiting for Transactions Pending to clear"))?;
        }
    }
    Err(Error::ResetTimeout { what, polls: limit })
}

/// Function Level Reset of the function behind `dev` (a VF), the way Linux's `pcie_flr` does it:
/// check the FLR capability, set Initiate FLR in Device Control, then wait (at most `limit`
/// progress calls) until Device Status Transactions Pending clears: the device has flushed the
/// function's outstanding work (WR_FLUSH_ERR completions) and freed its QPs, CQs, MRs and PDs.
/// Its Bus Master Enable is clear afterwards; [`Context::open`] it again to use it.
///
/// # Errors
/// [`Error::FlrNotSupported`] (the PF, or a function that does not exist);
/// [`Error::ResetTimeout`]; [`Error::Device`] from `progress()`.
pub fn function_level_reset(dev: &dyn Device, limit: u32) -> Result<()> {
    let exp = |x: u32| cfg::PCIE_CAP + x;
    let cap = dev.cfg_read(exp(cfg::PCIE_DEVCAP));
    if cap == u32::MAX || cap & cfg::DEVCAP_FLR == 0 {
        return Err(Error::FlrNotSupported);
    }
    let ctl = dev.cfg_read(exp(cfg::PCIE_DEVCTL)) & 0xFFFF;
    dev.cfg_write(exp(cfg::PCIE_DEVCTL), ctl | cfg::DEVCTL_FLR);
    wait_transactions_pending(dev, "Function Level Reset", limit)?;
    let label = dev.label();
    log::info!(target: "rnic_driver", "{label}: function level reset done");
    Ok(())
}

/// Enable memory decoding and bus mastering of a function (PCI command register).
pub(crate) fn enable_function(dev: &dyn Device) {
    let c = dev.cfg_read(cfg::COMMAND) & 0xFFFF;
    dev.cfg_write(cfg::COMMAND, c | cfg::CMD_MEM | cfg::CMD_MASTER);
}

impl Context {
    /// Function Level Reset of this function (a VF): [`function_level_reset`] with
    /// [`RESET_POLL_LIMIT`]. Every object of this context is gone afterwards (its verbs calls fail
    /// with [`Error::FunctionGone`] during the reset, or as objects that do not exist after it);
    /// open a new context on the same device to use the VF again.
    ///
    /// # Errors
    /// As [`function_level_reset`].
    pub fn function_level_reset(&self) -> Result<()> {
        function_level_reset(&*self.inner.dev, RESET_POLL_LIMIT)
    }

    /// Read this function's SR-IOV capability.
    ///
    /// # Errors
    /// [`Error::NoSriov`] when the function has none (a VF, or a device without SR-IOV).
    pub fn sriov(&self) -> Result<SriovInfo> {
        let dev = &*self.inner.dev;
        let at = find_ext_cap(dev, cfg::EXT_CAP_ID_SRIOV).ok_or(Error::NoSriov)?;
        let r16 = |o: u32| {
            let d = dev.cfg_read(at + (o & !3));
            (d >> (8 * (o & 2))) as u16
        };
        Ok(SriovInfo {
            offset: at,
            total_vfs: r16(sriov::TOTAL_VFS),
            initial_vfs: r16(sriov::INITIAL_VFS),
            num_vfs: r16(sriov::NUM_VFS),
            enabled: u32::from(r16(sriov::CTRL)) & sriov::CTRL_VFE != 0,
            first_vf_offset: r16(sriov::VF_OFFSET),
            vf_stride: r16(sriov::VF_STRIDE),
            vf_device_id: r16(sriov::VF_DEVICE_ID),
            vf_bar0_size: probe_bar64(dev, at + sriov::VF_BAR0),
        })
    }

    /// Enable `n` virtual functions (Linux `sriov_init` + `sriov_enable`): set the system page
    /// size, write NumVFs, check it took, then set VF Enable and VF MSE. VF `i` then answers at
    /// function [`SriovInfo::vf_function`]`(i)`.
    ///
    /// # Errors
    /// [`Error::NoSriov`]; [`Error::TooManyVfs`] when `n` is 0 or above TotalVFs;
    /// [`Error::VfsEnabled`] when VFs are already enabled (disable them first);
    /// [`Error::SriovRejected`] when the device did not take a value.
    pub fn enable_vfs(&self, n: u16) -> Result<SriovInfo> {
        let dev = &*self.inner.dev;
        let info = self.sriov()?;
        if info.enabled {
            return Err(Error::VfsEnabled { num_vfs: info.num_vfs });
        }
        if n == 0 || n > info.total_vfs {
            return Err(Error::TooManyVfs { requested: n, total: info.total_vfs });
        }
        if info.first_vf_offset == 0 || info.vf_stride == 0 {
            return Err(Error::SriovRejected { field: "First VF Offset / VF Stride", wrote: 0, read: 0 });
        }
        let at = info.offset;
        // 4 KiB system pages (bit 0), the only size the device supports.
        dev.cfg_write(at + sriov::SYS_PAGE_SIZE, 1);
        dev.cfg_write(at + sriov::NUM_VFS, u32::from(n));
        let got = dev.cfg_read(at + sriov::NUM_VFS) & 0xFFFF;
        if got != u32::from(n) {
            return Err(Error::SriovRejected { field: "NumVFs", wrote: u32::from(n), read: got });
        }
        let ctrl = dev.cfg_read(at + sriov::CTRL) & 0xFFFF;
        dev.cfg_write(at + sriov::CTRL, ctrl | sriov::CTRL_VFE | sriov::CTRL_VF_MSE);
        let info = self.sriov()?;
        if !info.enabled {
            return Err(Error::SriovRejected { field: "VF Enable", wrote: sriov::CTRL_VFE, read: 0 });
        }
        log::info!(target: &self.inner.log_target, "sriov: enabled {n} VFs (functions {}..={})",
            info.vf_function(1), info.vf_function(n));
        Ok(info)
    }

    /// Disable the virtual functions (clear VF Enable and VF MSE, then NumVFs = 0), and wait
    /// until the device has torn every VF down: their work flushed, their objects freed (the PF's
    /// Device Status Transactions Pending clears, at most [`RESET_POLL_LIMIT`] progress calls).
    ///
    /// # Errors
    /// [`Error::NoSriov`]; [`Error::ResetTimeout`].
    pub fn disable_vfs(&self) -> Result<()> {
        let dev = &*self.inner.dev;
        let info = self.sriov()?;
        let ctrl = dev.cfg_read(info.offset + sriov::CTRL) & 0xFFFF;
        dev.cfg_write(info.offset + sriov::CTRL, ctrl & !(sriov::CTRL_VFE | sriov::CTRL_VF_MSE));
        dev.cfg_write(info.offset + sriov::NUM_VFS, 0);
        wait_transactions_pending(dev, "VF disable", RESET_POLL_LIMIT)?;
        log::info!(target: &self.inner.log_target, "sriov: VFs disabled");
        Ok(())
    }
}

/// PCI identity of a function as its configuration space reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciIdentity {
    /// Vendor ID (0xFFFF on a VF: software uses the PF's).
    pub vendor: u16,
    /// Device ID (0xFFFF on a VF: software uses the VF Device ID of the PF's SR-IOV capability).
    pub device: u16,
    /// Class code (24 bits).
    pub class: u32,
}

/// Read the identity of the function behind `dev`; `None` if it does not exist (all-ones).
pub fn pci_identity(dev: &dyn Device) -> Option<PciIdentity> {
    let id = dev.cfg_read(cfg::VENDOR_ID);
    let class = dev.cfg_read(cfg::REVISION) >> 8;
    if id == u32::MAX && class == 0xFF_FFFF {
        return None;
    }
    Some(PciIdentity { vendor: id as u16, device: (id >> 16) as u16, class })
}

/// The vendor and device ID this driver supports.
pub const PCI_IDS: (u16, u16, u16) =
    (params::PCI_VENDOR_ID as u16, params::PF_DEVICE_ID as u16, params::VF_DEVICE_ID as u16);

/// Per-VF share of the device's tables (SET_VF_RES); every VF gets the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VfProfile {
    /// QPs per VF.
    pub qps: u32,
    /// CQs per VF.
    pub cqs: u32,
    /// MRs per VF.
    pub mrs: u32,
    /// PDs per VF.
    pub pds: u32,
    /// MTT entries per VF.
    pub mtts: u32,
}

impl VfProfile {
    /// An even split of the device's tables between the PF and `vfs` VFs (each gets
    /// `1 / (vfs + 1)` of every table, the PF keeps the rest).
    pub fn even(caps: &crate::DeviceCaps, vfs: u16) -> VfProfile {
        let share = |n: u32| n / (u32::from(vfs) + 1);
        VfProfile {
            qps: share(caps.num_qp),
            cqs: share(caps.num_cq),
            mrs: share(caps.num_mr),
            pds: share(caps.num_pd),
            mtts: share(caps.num_mtt),
        }
    }
}

impl Context {
    /// PF admin: give each of `vfs` VFs the share `p` of the device's tables (SET_VF_RES). Must
    /// run while VFs are disabled and before the PF created objects in the part it gives away.
    ///
    /// # Errors
    /// [`Error::CommandFailed`] with `DENIED` on a VF, `BAD_STATE` while VFs are enabled or an
    /// object is in the way, `BAD_PARAM` if the shares do not fit.
    pub fn set_vf_resources(&self, vfs: u16, p: VfProfile) -> Result<()> {
        use rnic_regs::cmd_set_vf_res as c;
        let mut img = [0u8; crate::CMD_IMAGE_SIZE];
        c::VFS.set(&mut img, u64::from(vfs));
        c::QPS.set(&mut img, u64::from(p.qps));
        c::CQS.set(&mut img, u64::from(p.cqs));
        c::MRS.set(&mut img, u64::from(p.mrs));
        c::PDS.set(&mut img, u64::from(p.pds));
        c::MTTS.set(&mut img, u64::from(p.mtts));
        self.inner.command(crate::Command::SetVfRes, crate::Object::Device, &img)?;
        log::info!(target: &self.inner.log_target, "sriov: VF profile {vfs} x {p:?}");
        Ok(())
    }

    /// PF admin: VF `vf`'s MAC and IPv4 address, whether it is trusted (may change them itself
    /// with SET_PORT) and whether its frames must carry exactly this address (spoof-check; frames
    /// that do not are dropped and counted in TX_SPOOF) — like `ip link set <pf> vf N mac ..
    /// trust on|off spoofchk on|off`.
    ///
    /// # Errors
    /// [`Error::CommandFailed`] with `DENIED` on a VF, `BAD_INDEX` for a VF number out of range.
    pub fn set_vf_port(&self, vf: u8, mac: [u8; 6], ip: std::net::Ipv4Addr, trust: bool, spoofchk: bool) -> Result<()> {
        use rnic_regs::cmd_set_vf_port as c;
        let mut img = [0u8; crate::CMD_IMAGE_SIZE];
        c::VF.set(&mut img, u64::from(vf));
        c::TRUST.set(&mut img, u64::from(trust));
        c::SPOOFCHK.set(&mut img, u64::from(spoofchk));
        c::MAC.set(&mut img, mac.iter().fold(0u64, |a, &b| a << 8 | u64::from(b)));
        c::IP.set(&mut img, u64::from(u32::from(ip)));
        self.inner.command(crate::Command::SetVfPort, crate::Object::Vf(vf), &img)?;
        log::info!(target: &self.inner.log_target, "sriov: vf {vf} port {mac:02x?} / {ip}, trust {trust}, spoofchk {spoofchk}");
        Ok(())
    }

    /// PF admin: VF `vf` may DMA only to `[base, base + len)` (SET_VF_DMA), like an IOMMU domain
    /// the hypervisor gives a VF. Every address the VF later hands the NIC (queue and CQ rings,
    /// the WRITE_MTT source and each MTT page) must lie inside it, else the VF's command fails
    /// with [`CommandStatus::BadAddr`](crate::CommandStatus::BadAddr). The window applies to
    /// addresses learned after this call; after reset a VF's window is empty.
    ///
    /// # Errors
    /// [`Error::CommandFailed`] with `DENIED` on a VF, `BAD_PARAM` for VF 0, a VF number past
    /// TotalVFs, or a window that wraps past 2^64 - 1.
    pub fn set_vf_dma(&self, vf: u8, base: u64, len: u64) -> Result<()> {
        use rnic_regs::cmd_set_vf_dma as c;
        let mut img = [0u8; crate::CMD_IMAGE_SIZE];
        c::VF.set(&mut img, u64::from(vf));
        c::BASE.set(&mut img, base);
        c::LEN.set(&mut img, len);
        self.inner.command(crate::Command::SetVfDma, crate::Object::Vf(vf), &img)?;
        log::info!(target: &self.inner.log_target, "sriov: vf {vf} DMA window [{base:#x}, +{len:#x})");
        Ok(())
    }

    /// PF admin: VF `vf` transmits at most `mbps` Mb/s (SET_VF_RATE; 0 = no limit), counting
    /// every frame as its payload plus `RATE_FRAME_OVERHEAD` bytes, with bursts of up to
    /// `RATE_BURST` bytes. The NIC's scheduler skips a function over its rate (section 5); the
    /// reference model has no clock and does not rate-limit on its own backend.
    ///
    /// # Errors
    /// [`Error::CommandFailed`] with `DENIED` on a VF, `BAD_INDEX` for VF 0 or a VF number past
    /// TotalVFs.
    pub fn set_vf_rate(&self, vf: u8, mbps: u32) -> Result<()> {
        use rnic_regs::cmd_set_vf_rate as c;
        let mut img = [0u8; crate::CMD_IMAGE_SIZE];
        c::VF.set(&mut img, u64::from(vf));
        c::MBPS.set(&mut img, u64::from(mbps));
        self.inner.command(crate::Command::SetVfRate, crate::Object::Vf(vf), &img)?;
        log::info!(target: &self.inner.log_target, "sriov: vf {vf} rate limit {mbps} Mb/s (0 = none)");
        Ok(())
    }
}
