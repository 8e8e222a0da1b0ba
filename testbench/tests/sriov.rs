// SPDX-License-Identifier: Apache-2.0
//! SR-IOV slice A (docs/sriov.md) in lockstep: the PF's configuration space enumerates like a PCIe
//! device with the SR-IOV capability, the driver enables and disables VFs the way Linux does, VFs
//! answer at their own function numbers, and every configuration read is predicted by the model.

use std::rc::Rc;

use rnic_driver::{pci_identity, Context, Device, Error, PCI_IDS};
use rnic_regs::{cfg, counter, params, reg, sriov};
use rnic_testbench::fabric::{Backend, Fabric, FabricConfig, FabricRef};
use rnic_testbench::faults::SplitMix64;

fn fabric() -> FabricRef {
    let cfg = FabricConfig { backend: Backend::Lockstep, nics: 2, ..FabricConfig::default() };
    Fabric::new(cfg).expect("fabric")
}

fn dev(f: &FabricRef, func: u8) -> Rc<dyn Device> {
    Fabric::device(f, 0, func)
}

/// Fail on a lockstep mismatch (configuration reads are compared as they are answered).
fn check(f: &FabricRef) {
    let mut fab = f.borrow_mut();
    fab.run_cycles(100).unwrap_or_else(|e| panic!("{e}"));
    fab.check_drained().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn pf_configuration_space_enumerates() {
    let f = fabric();
    let pf = dev(&f, 0);
    assert_eq!(pf.cfg_read(cfg::COMMAND) & 0xFFFF, 0, "memory and bus mastering off after reset");
    let ctx = Context::open(pf.clone()).expect("open");
    let id = pci_identity(&*pf).expect("the PF exists");
    assert_eq!((id.vendor, id.device, id.class), (PCI_IDS.0, PCI_IDS.1, params::PCI_CLASS as u32));
    // Context::open enabled memory decoding and bus mastering; the capability list bit is set.
    let cs = pf.cfg_read(cfg::COMMAND);
    assert_eq!(cs & 0xFFFF, cfg::CMD_MEM | cfg::CMD_MASTER);
    assert_ne!(cs >> 16 & cfg::STATUS_CAP_LIST, 0);
    assert_eq!(pf.cfg_read(cfg::HEADER_TYPE & !3) >> 16 & 0x7F, 0, "type-0 header");
    // BAR0: 64-bit memory BAR of BAR0_SIZE (size probing as an OS does).
    assert_eq!(pf.cfg_read(cfg::BAR0) & 0xF, cfg::BAR_MEM64);
    pf.cfg_write(cfg::BAR0, u32::MAX);
    pf.cfg_write(cfg::BAR1, u32::MAX);
    let mask = u64::from(pf.cfg_read(cfg::BAR0) & !0xF) | u64::from(pf.cfg_read(cfg::BAR1)) << 32;
    assert_eq!((!mask).wrapping_add(1), params::BAR0_SIZE);
    pf.cfg_write(cfg::BAR0, 0xE000_0000);
    pf.cfg_write(cfg::BAR1, 0x1);
    assert_eq!(pf.cfg_read(cfg::BAR0), 0xE000_0000 | cfg::BAR_MEM64);
    assert_eq!(pf.cfg_read(cfg::BAR1), 1);
    // Capability list: the PCI Express capability, last in the list.
    let cap = pf.cfg_read(cfg::CAP_PTR) & 0xFF;
    assert_eq!(cap, cfg::PCIE_CAP);
    let h = pf.cfg_read(cap);
    assert_eq!((h & 0xFF, h >> 8 & 0xFF), (cfg::CAP_ID_EXP, 0));
    // Extended capabilities: SR-IOV, version 1, last.
    let e = pf.cfg_read(cfg::EXT_CAP);
    assert_eq!((e & 0xFFFF, e >> 16 & 0xF, e >> 20), (cfg::EXT_CAP_ID_SRIOV, 1, 0));
    let info = ctx.sriov().expect("SR-IOV capability");
    assert_eq!(info.offset, cfg::EXT_CAP);
    assert_eq!((info.total_vfs, info.initial_vfs, info.num_vfs), (params::NUM_VF as u16, params::NUM_VF as u16, 0));
    assert!(!info.enabled);
    assert_eq!((info.first_vf_offset, info.vf_stride), (sriov::FIRST_VF_OFFSET as u16, sriov::STRIDE as u16));
    assert_eq!(info.vf_device_id, PCI_IDS.2);
    assert_eq!(info.vf_bar0_size, params::BAR0_SIZE);
    assert_eq!(pf.cfg_read(cfg::EXT_CAP + sriov::SUPP_PAGE_SIZES), sriov::PAGE_SIZES);
    check(&f);
}

#[test]
fn enable_and_disable_vfs_like_linux() {
    let f = fabric();
    let pf = dev(&f, 0);
    let ctx = Context::open(pf.clone()).expect("open");
    let total = params::NUM_VF as u16;
    // No VF exists before enabling.
    for func in 1..=total as u8 + 1 {
        assert!(pci_identity(&*dev(&f, func)).is_none(), "function {func} before enable");
    }
    assert!(matches!(ctx.enable_vfs(0), Err(Error::TooManyVfs { requested: 0, .. })));
    assert!(matches!(ctx.enable_vfs(total + 1), Err(Error::TooManyVfs { .. })));
    let info = ctx.enable_vfs(total).expect("enable");
    assert!(info.enabled);
    assert_eq!(info.num_vfs, total);
    let ctrl = pf.cfg_read(cfg::EXT_CAP + sriov::CTRL) & 0xFFFF;
    assert_eq!(ctrl & (sriov::CTRL_VFE | sriov::CTRL_VF_MSE), sriov::CTRL_VFE | sriov::CTRL_VF_MSE);
    for n in 1..=total {
        let func = info.vf_function(n) as u8;
        assert_eq!(func as u16, n, "VF n is function n (offset 1, stride 1)");
        let vf = dev(&f, func);
        let id = pci_identity(&*vf).unwrap_or_else(|| panic!("VF {n} answers"));
        assert_eq!((id.vendor, id.device, id.class), (0xFFFF, 0xFFFF, params::PCI_CLASS as u32));
        // A VF has the PCI Express capability but no SR-IOV capability, and no BARs of its own.
        assert_eq!(vf.cfg_read(cfg::CAP_PTR) & 0xFF, cfg::PCIE_CAP);
        assert_eq!(vf.cfg_read(cfg::EXT_CAP), 0);
        assert_eq!(vf.cfg_read(cfg::BAR0), 0);
        vf.cfg_write(cfg::BAR0, u32::MAX);
        assert_eq!(vf.cfg_read(cfg::BAR0), 0, "VF BARs are read-only zero");
        // Bus Master Enable is the one writable command bit of a VF.
        vf.cfg_write(cfg::COMMAND, 0xFFFF);
        assert_eq!(vf.cfg_read(cfg::COMMAND) & 0xFFFF, cfg::CMD_MASTER);
        assert!(Context::open(vf.clone()).and_then(|c| c.sriov()).is_err(), "VF {n}: no SR-IOV, and no BAR yet");
    }
    assert!(pci_identity(&*dev(&f, total as u8 + 1)).is_none(), "function past NumVFs");
    // NumVFs and the page size are frozen while VF Enable is set; a second enable is refused.
    pf.cfg_write(cfg::EXT_CAP + sriov::NUM_VFS, 1);
    assert_eq!(pf.cfg_read(cfg::EXT_CAP + sriov::NUM_VFS) & 0xFFFF, u32::from(total));
    assert!(matches!(ctx.enable_vfs(2), Err(Error::VfsEnabled { num_vfs }) if num_vfs == total));
    ctx.disable_vfs().expect("disable");
    for func in 1..=total as u8 {
        assert!(pci_identity(&*dev(&f, func)).is_none(), "function {func} after disable");
    }
    // Re-enable fewer: VF 3 exists, VF 4 does not, and VF command registers start cleared.
    ctx.enable_vfs(3).expect("enable 3");
    assert_eq!(dev(&f, 3).cfg_read(cfg::COMMAND) & 0xFFFF, 0);
    assert!(pci_identity(&*dev(&f, 4)).is_none());
    check(&f);
}

#[test]
fn vf_memory_requests_are_unsupported_until_vf_bars_exist() {
    // docs/sriov.md, slice A: an enabled VF's BAR is not implemented yet, so memory requests to
    // it are Unsupported Requests: reads all-ones, writes dropped, both counted in MMIO_BAD.
    let f = fabric();
    let pf = dev(&f, 0);
    let ctx = Context::open(pf.clone()).expect("open");
    ctx.enable_vfs(2).expect("enable");
    let bad0 = ctx.counter(counter::MMIO_BAD);
    let vf = dev(&f, 1);
    assert_eq!(vf.mmio_read(reg::DEV_ID), u64::MAX);
    vf.mmio_write(reg::CMD_ARG0, 5);
    assert_eq!(ctx.counter(counter::MMIO_BAD), bad0 + 2);
    assert_eq!(pf.mmio_read(reg::CMD_ARG0), 0, "the VF's write did not reach the PF's registers");
    check(&f);
}

#[test]
fn random_configuration_traffic_agrees_with_the_model() {
    // Random dword writes (any offset, any value, any function 0..=NumVf+1) interleaved with
    // reads: every read is compared with the model's as it is answered. Then every dword of the
    // header, the capability and the SR-IOV capability of every function is read once more.
    let seed = std::env::var("RNIC_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5121_0f);
    eprintln!("seed {seed} (RNIC_SEED={seed} replays)");
    let f = fabric();
    let mut rng = SplitMix64::new(seed);
    let max_func = params::NUM_VF as u64 + 1;
    // Offsets worth hitting: the registers, plus anything in 4 KiB.
    let hot: Vec<u32> = (0..0x50).step_by(4).chain((0x100..0x140).step_by(4)).collect();
    for i in 0..1500 {
        let func = rng.range(0, max_func) as u8;
        let off = if rng.range(0, 7) == 0 { rng.range(0, 1023) as u32 * 4 } else { hot[rng.range(0, hot.len() as u64 - 1) as usize] };
        let d = dev(&f, func);
        if rng.range(0, 2) == 0 {
            // Bias VF Enable on so VFs exist often.
            let v = if off == cfg::EXT_CAP + sriov::CTRL { rng.next_u64() as u32 | (rng.range(0, 1) as u32) } else { rng.next_u64() as u32 };
            d.cfg_write(off, v);
        } else {
            let _ = d.cfg_read(off);
        }
        if i % 100 == 0 {
            check(&f);
        }
    }
    for func in 0..=max_func as u8 {
        for &off in &hot {
            let _ = dev(&f, func).cfg_read(off);
        }
    }
    check(&f);
}
