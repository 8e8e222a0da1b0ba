// SPDX-License-Identifier: Apache-2.0
//! The consumer-side device interface: everything the driver needs from one PCIe function.
//!
//! Backends (the reference model, the Verilated RTL, both in lockstep; one day real hardware)
//! implement it in the testbench crate. All methods take `&self`: a simulator backend shares one
//! simulated fabric between several devices and uses interior mutability.

/// Errors a device backend reports to the driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The DMA allocator has no room for the request.
    #[error("DMA allocation of {len} bytes (align {align}) failed: host memory exhausted; give the backend more host memory")]
    OutOfMemory {
        /// Requested length.
        len: u64,
        /// Requested alignment.
        align: u64,
    },
    /// A host-memory access outside any allocation.
    #[error("host memory access at {iova:#x}+{len} is outside the DMA region")]
    BadAddress {
        /// IO virtual address.
        iova: u64,
        /// Length of the access.
        len: u64,
    },
    /// The simulation stopped: a lockstep mismatch, an RTL assertion, a hang. The text says what and where.
    #[error("simulation failed: {0}")]
    Simulation(String),
}

/// One PCIe function of an RNIC as the driver sees it: BAR0, DMA memory, interrupts.
pub trait Device {
    /// Write the 64-bit register at byte `offset` of this function's BAR0.
    fn mmio_write(&self, offset: u64, value: u64);
    /// Read the 64-bit register at byte `offset` of this function's BAR0.
    fn mmio_read(&self, offset: u64) -> u64;
    /// Write the PCI configuration dword at byte `offset` (a multiple of 4 below 4096) of this
    /// function (a configuration write request to its routing ID).
    fn cfg_write(&self, offset: u32, value: u32);
    /// Read the PCI configuration dword at byte `offset` of this function; all-ones if the
    /// function does not exist.
    fn cfg_read(&self, offset: u32) -> u32;
    /// Allocate `len` bytes of DMA-able host memory aligned to `align` (a power of two, at least 8);
    /// returns the IO virtual address the device uses for it. The memory is zeroed.
    fn dma_alloc(&self, len: u64, align: u64) -> Result<u64, DeviceError>;
    /// Return an allocation made by [`Device::dma_alloc`].
    fn dma_free(&self, iova: u64, len: u64);
    /// Copy host memory at `iova` into `buf`.
    fn dma_read(&self, iova: u64, buf: &mut [u8]) -> Result<(), DeviceError>;
    /// Copy `data` into host memory at `iova`.
    fn dma_write(&self, iova: u64, data: &[u8]) -> Result<(), DeviceError>;
    /// Let the device make progress. A simulator runs a batch of clock cycles (of every NIC on its
    /// fabric); real hardware returns at once. Lockstep mismatches and simulator failures surface here.
    fn progress(&self) -> Result<(), DeviceError>;
    /// MSI-X vectors this function raised since the last call, oldest first.
    fn take_interrupts(&self) -> Vec<u16>;
    /// Short name of this device for log lines, e.g. `nic0.fn0`; empty when the backend has none.
    fn label(&self) -> String {
        String::new()
    }
}
