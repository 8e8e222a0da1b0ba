// SPDX-License-Identifier: Apache-2.0
//! The RNIC testbench: the Verilated RTL bound with cxx, host memory, the link between NICs,
//! the lockstep checker, and the three driver backends (model, RTL, lockstep) over one fabric.
//!
//! ```no_run
//! use rnic_testbench::fabric::{Backend, Fabric, FabricConfig};
//! let fabric = Fabric::new(FabricConfig { backend: Backend::Lockstep, ..Default::default() }).unwrap();
//! let dev_a = Fabric::device(&fabric, 0, 0); // PF of NIC 0, a `rnic_driver::Device`
//! let dev_b = Fabric::device(&fabric, 1, 0);
//! ```

pub mod bench;
pub mod craft;
pub mod fabric;
pub mod faults;
pub mod harness;
pub mod hostmem;
pub mod interop;
pub mod link;
pub mod lockstep;
pub mod oracle;
pub mod pcap;
pub mod rtl;
pub mod scenarios;
