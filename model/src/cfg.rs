// SPDX-License-Identifier: Apache-2.0
//! PCI configuration space of the PF and its VFs (docs/sriov.md, slice A), as `rtl/rnic_cfg.sv`,
//! with the Function Level Reset requests (docs/architecture.md section 4, Function Level Reset).

use rnic_regs::{cfg, params, sriov};

/// Writable address bits of a BAR of `BAR0_SIZE` bytes (low dword).
const BAR_MASK: u32 = !(params::BAR0_SIZE as u32 - 1);
const CTRL_WRITABLE: u16 = (sriov::CTRL_VFE | sriov::CTRL_VF_MSE | sriov::CTRL_ARI) as u16;
/// PCI Express capability header: version 2, endpoint, last capability.
const EXP_HDR: u32 = 0x0002_0000 | cfg::CAP_ID_EXP;
const STATUS_CMD_RO: u32 = cfg::STATUS_CAP_LIST << 16;
/// Device Status Transactions Pending, as it sits in the Device Control dword.
const DEVSTA_TP: u32 = cfg::DEVSTA_TP << 16;

/// Configuration registers of the PF and the VF command registers.
#[derive(Clone, Debug)]
pub(crate) struct ConfigSpace {
    num_vf: u16,
    cmd: u16,
    bar0: u32,
    bar1: u32,
    devctl: u16,
    ctrl: u16,
    num_vfs: u16,
    sys_page_size: u32,
    vf_bar0: u32,
    vf_bar1: u32,
    /// Bus Master Enable of VF n at index n (index 0 unused).
    vf_master: Vec<bool>,
    /// A teardown (FLR or VF disable) of VF n is pending, at index n (index 0 unused).
    in_reset: Vec<bool>,
}

impl ConfigSpace {
    pub(crate) fn new(num_vf: u16) -> ConfigSpace {
        ConfigSpace {
            num_vf,
            cmd: 0,
            bar0: 0,
            bar1: 0,
            devctl: 0,
            ctrl: 0,
            num_vfs: 0,
            sys_page_size: 1,
            vf_bar0: 0,
            vf_bar1: 0,
            vf_master: vec![false; num_vf as usize + 1],
            in_reset: vec![false; num_vf as usize + 1],
        }
    }

    /// Whether function `func` is in reset: its FLR or VF-disable teardown is pending.
    pub(crate) fn in_reset(&self, func: u8) -> bool {
        self.in_reset.get(func as usize).copied().unwrap_or(false)
    }

    /// The teardown of `func` ended (the FLR_DONE task).
    pub(crate) fn end_reset(&mut self, func: u8) {
        if let Some(r) = self.in_reset.get_mut(func as usize) {
            *r = false;
        }
    }

    /// VF Enable (SET_VF_RES needs it clear).
    pub(crate) fn vf_enabled(&self) -> bool {
        self.ctrl as u32 & sriov::CTRL_VFE != 0
    }

    /// VF MSE: memory requests to VFs are decoded.
    pub(crate) fn vf_mem_enabled(&self) -> bool {
        self.ctrl as u32 & sriov::CTRL_VF_MSE != 0
    }

    /// Whether VF `func` exists now (VF Enable set, 1 <= func <= NumVFs).
    pub(crate) fn is_vf(&self, func: u8) -> bool {
        self.vf_enabled() && func != 0 && u16::from(func) <= self.num_vfs && u16::from(func) <= self.num_vf
    }

    /// A dword read at byte `offset` (bits 11:2 used) of function `func`.
    pub(crate) fn read(&self, func: u8, offset: u32) -> u32 {
        let o = offset & 0xFFC;
        let ext = |x: u32| cfg::EXT_CAP + x;
        let exp = |x: u32| cfg::PCIE_CAP + x;
        if func == 0 {
            match o {
                x if x == cfg::VENDOR_ID => (params::PF_DEVICE_ID as u32) << 16 | params::PCI_VENDOR_ID as u32,
                x if x == cfg::COMMAND => STATUS_CMD_RO | self.cmd as u32,
                x if x == cfg::REVISION => (params::PCI_CLASS as u32) << 8,
                x if x == cfg::BAR0 => (self.bar0 & BAR_MASK) | cfg::BAR_MEM64,
                x if x == cfg::BAR1 => self.bar1,
                x if x == cfg::CAP_PTR => cfg::PCIE_CAP,
                x if x == cfg::PCIE_CAP => EXP_HDR,
                x if x == exp(cfg::PCIE_DEVCAP) => 0,
                x if x == exp(cfg::PCIE_DEVCTL) => {
                    self.devctl as u32 | if self.in_reset.iter().any(|&r| r) { DEVSTA_TP } else { 0 }
                }
                x if x == cfg::EXT_CAP => 1 << 16 | cfg::EXT_CAP_ID_SRIOV,
                x if x == ext(sriov::CTRL) => self.ctrl as u32,
                x if x == ext(sriov::INITIAL_VFS) => (self.num_vf as u32) << 16 | self.num_vf as u32,
                x if x == ext(sriov::NUM_VFS) => self.num_vfs as u32,
                x if x == ext(sriov::VF_OFFSET) => sriov::STRIDE << 16 | sriov::FIRST_VF_OFFSET,
                x if x == ext(sriov::VF_DEVICE_ID - 2) => (params::VF_DEVICE_ID as u32) << 16,
                x if x == ext(sriov::SUPP_PAGE_SIZES) => sriov::PAGE_SIZES,
                x if x == ext(sriov::SYS_PAGE_SIZE) => self.sys_page_size,
                x if x == ext(sriov::VF_BAR0) => (self.vf_bar0 & BAR_MASK) | cfg::BAR_MEM64,
                x if x == ext(sriov::VF_BAR1) => self.vf_bar1,
                _ => 0,
            }
        } else if self.is_vf(func) {
            match o {
                x if x == cfg::VENDOR_ID => u32::MAX,
                x if x == cfg::COMMAND => {
                    STATUS_CMD_RO | if self.vf_master[func as usize] { cfg::CMD_MASTER } else { 0 }
                }
                x if x == cfg::REVISION => (params::PCI_CLASS as u32) << 8,
                x if x == cfg::CAP_PTR => cfg::PCIE_CAP,
                x if x == cfg::PCIE_CAP => EXP_HDR,
                x if x == exp(cfg::PCIE_DEVCAP) => cfg::DEVCAP_FLR,
                x if x == exp(cfg::PCIE_DEVCTL) && self.in_reset(func) => DEVSTA_TP,
                _ => 0,
            }
        } else {
            u32::MAX
        }
    }

    /// A dword write at byte `offset` (bits 11:2 used) of function `func`.
    pub(crate) fn write(&mut self, func: u8, offset: u32, value: u32) {
        let o = offset & 0xFFC;
        let ext = |x: u32| cfg::EXT_CAP + x;
        if func == 0 {
            match o {
                x if x == cfg::COMMAND => self.cmd = (value & (cfg::CMD_MEM | cfg::CMD_MASTER)) as u16,
                x if x == cfg::BAR0 => self.bar0 = value & BAR_MASK,
                x if x == cfg::BAR1 => self.bar1 = value,
                x if x == cfg::PCIE_CAP + cfg::PCIE_DEVCTL => self.devctl = (value & 0x7FFF) as u16,
                x if x == ext(sriov::CTRL) => {
                    let was = self.vf_enabled();
                    self.ctrl = value as u16 & CTRL_WRITABLE;
                    if !self.vf_enabled() {
                        self.vf_master.fill(false);
                    }
                    // Clearing VF Enable starts the teardown of every VF.
                    if was && !self.vf_enabled() {
                        for f in 1..=self.num_vfs.min(self.num_vf) as usize {
                            self.in_reset[f] = true;
                        }
                    }
                }
                x if x == ext(sriov::NUM_VFS) => {
                    if !self.vf_enabled() && value as u16 <= self.num_vf {
                        self.num_vfs = value as u16;
                    }
                }
                x if x == ext(sriov::SYS_PAGE_SIZE) => {
                    if !self.vf_enabled() {
                        self.sys_page_size = value;
                    }
                }
                x if x == ext(sriov::VF_BAR0) => self.vf_bar0 = value & BAR_MASK,
                x if x == ext(sriov::VF_BAR1) => self.vf_bar1 = value,
                _ => {}
            }
        } else if self.is_vf(func) && o == cfg::COMMAND {
            self.vf_master[func as usize] = value & cfg::CMD_MASTER != 0;
        } else if self.is_vf(func) && o == cfg::PCIE_CAP + cfg::PCIE_DEVCTL && value & cfg::DEVCTL_FLR != 0 {
            // Initiate FLR: the VF's configuration state resets and its teardown starts.
            self.vf_master[func as usize] = false;
            self.in_reset[func as usize] = true;
        }
    }
}
