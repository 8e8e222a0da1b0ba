// SPDX-License-Identifier: Apache-2.0
//! Verbs-shaped driver for the RNIC. It runs unchanged on any [`Device`] backend: the reference
//! model, the Verilated RTL, or both in lockstep.
//!
//! Objects follow `libibverbs`: a [`Context`] opens the device, protection domains ([`Pd`])
//! own memory regions ([`Mr`]) and queue pairs ([`QueuePair`]), completion queues ([`Cq`])
//! report finished work. Everything is released on drop (or explicitly, with a `Result`).
//! Nothing here spins forever: every wait takes a budget of `Device::progress()` calls.
//! Handles are single-threaded (`Rc`), like the simulated devices they drive.
//!
//! Two peers can also be connected in one call each with [`QueuePair::endpoint`] and
//! [`QueuePair::connect`].
//!
//! ```no_run
//! # use std::rc::Rc;
//! # use std::net::Ipv4Addr;
//! # use rnic_driver::*;
//! # fn demo(dev: Rc<dyn Device>, peer_qpn: u32) -> Result<()> {
//! let ctx = Context::open(dev)?;
//! ctx.set_port([0x02, 0, 0, 0, 0, 1], Ipv4Addr::new(10, 0, 0, 1))?;
//! let pd = ctx.alloc_pd()?;
//! let cq = ctx.create_cq(64)?;
//! let mr = pd.reg_mr(4096, AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_WRITE)?;
//! let qp = pd.create_qp(&QpInitAttr { send_cq: &cq, recv_cq: &cq, max_send_wr: 16, max_recv_wr: 16 })?;
//! qp.to_init(AccessFlags::REMOTE_WRITE)?;
//! qp.to_rtr(&RtrAttr {
//!     dest_qpn: peer_qpn, rq_psn: 0x100, path_mtu: Mtu::Mtu1024,
//!     dest_mac: [0x02, 0, 0, 0, 0, 2], dest_ip: Ipv4Addr::new(10, 0, 0, 2),
//!     max_dest_rd_atomic: 4, min_rnr_timer: 12,
//! })?;
//! qp.to_rts(&RtsAttr { sq_psn: 0x200, timeout: 14, retry_cnt: 7, rnr_retry: 7, max_rd_atomic: 4 })?;
//! mr.write(0, b"hello")?;
//! qp.post_send(&SendWr::new(1, WrOpcode::Send, vec![mr.sge(0, 5)?]))?;
//! let wcs = cq.wait(1, 10_000)?;
//! assert_eq!(wcs[0].status, WcStatus::Success);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod alloc;
mod context;
mod cq;
pub mod device;
mod error;
mod pd;
mod qp;
mod sriov;
mod types;
mod wr;

#[cfg(test)]
mod tests;

pub use alloc::{IndexAllocator, RangeAllocator};
pub use context::{
    FunctionResources,
    mac_from_u64, mac_to_u64, CmdImage, Context, DeviceCaps, CMD_IMAGE_SIZE,
    DEFAULT_COMMAND_POLL_LIMIT,
};
pub use cq::{Cq, WorkCompletion, MAX_CQ_LOG_SIZE};
pub use device::{Device, DeviceError};
pub use sriov::{function_level_reset, pci_identity, PciIdentity, SriovInfo, VfProfile, PCI_IDS, RESET_POLL_LIMIT};
pub use error::{Error, Result};
pub use pd::{Mr, MrOptions, Pd, LOG_PAGE, PAGE_SIZE};
pub use qp::{
    check_modify, transition_rule, AddressVector, ConnectAttr, Endpoint, QpAttr, QpInfo,
    QpInitAttr, QueuePair, RtrAttr, RtsAttr, MAX_RD_ATOMIC, MAX_WQ_LOG_SIZE, PKEY_INDEX, PORT_NUM,
};
pub use types::{
    AccessFlags, Command, CommandStatus, Mtu, Object, QpAttrMask, QpState, QueueKind, Resource,
    WcOpcode, WcStatus,
};
pub use wr::{
    encode_recv_wqe, encode_send_wqe, RecvWr, SendWr, Sge, WrOpcode, RECV_SGE_FIELDS,
    SEND_SGE_FIELDS,
};
