// SPDX-License-Identifier: Apache-2.0
//! Simulated host memory: one anonymous mapping presented to the device at an IO virtual address
//! base ([`IOVA_BASE`]), a first-fit DMA allocator over it, and bounds-checked access by IOVA.
//!
//! Each NIC has its own [`HostMem`]; in lockstep the RTL and the model each get one, the driver
//! writes both, and [`HostMem::first_difference`] / [`HostMem::diff`] compare them.
//!
//! The mapping is anonymous and private, so untouched pages cost nothing: the default 256 MiB only
//! uses what the test writes. Fresh memory reads as zero; [`HostMem::alloc`] does not clear
//! memory that was freed and allocated again.
//!
//! **DMA windows** (docs/architecture.md section 4, Functions): every access on behalf of a VF
//! (function `f != 0`, i.e. every DMA request the NIC makes for a VF) must lie inside the window
//! the test bench gave that VF ([`HostMem::alloc_window`] / [`HostMem::set_window`]); a VF without
//! one may reach nothing, as on the NIC after reset. A violation means the NIC broke isolation,
//! so it panics with the function, the range and the window. A VF's window has its own allocator
//! ([`HostMem::alloc_func`]) so a VF's driver gets memory inside it.

use std::collections::BTreeMap;
use std::io;

use memmap2::MmapMut;

/// IOVA of the first byte of every [`HostMem`].
pub const IOVA_BASE: u64 = 0x10_0000_0000;
/// Default size of a [`HostMem`] in bytes (256 MiB).
pub const DEFAULT_SIZE: usize = 256 << 20;

/// Errors of host memory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostMemError {
    /// The anonymous mapping could not be created.
    #[error("cannot map {size} bytes of simulated host memory: {source} (use a smaller size)")]
    Map {
        /// Requested size in bytes.
        size: usize,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A size of zero or one that does not fit the IOVA space.
    #[error("invalid host memory size {size}: it must be between 4 KiB and 2^40 bytes")]
    BadSize {
        /// Requested size in bytes.
        size: usize,
    },
    /// An access outside the memory.
    #[error(
        "host memory access out of range: func {func}, iova {addr:#x}, {len} bytes; valid IOVAs \
         are [{base:#x}, {end:#x}) (was the address allocated from this HostMem?)"
    )]
    OutOfRange {
        /// PCIe function of the access (0 for host accesses).
        func: u8,
        /// First IOVA of the access.
        addr: u64,
        /// Length in bytes.
        len: u64,
        /// First valid IOVA.
        base: u64,
        /// One past the last valid IOVA.
        end: u64,
    },
    /// No free block is large enough.
    #[error(
        "cannot allocate {len} bytes aligned to {align}: {free} bytes free, largest free block \
         {largest} bytes (free buffers or create the HostMem larger)"
    )]
    OutOfMemory {
        /// Requested length.
        len: u64,
        /// Requested alignment.
        align: u64,
        /// Total free bytes.
        free: u64,
        /// Largest free block.
        largest: u64,
    },
    /// Zero length or an alignment that is not a power of two.
    #[error("invalid allocation of {len} bytes aligned to {align}: the length must be non-zero and the alignment a power of two")]
    BadAlloc {
        /// Requested length.
        len: u64,
        /// Requested alignment.
        align: u64,
    },
    /// `free` of something that is not a live allocation (or with the wrong length).
    #[error("free of iova {iova:#x} ({len} bytes): {why}")]
    BadFree {
        /// IOVA passed to free.
        iova: u64,
        /// Length passed to free.
        len: u64,
        /// What is wrong.
        why: String,
    },
}

/// Where two host memories first and last differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemDiff {
    /// IOVA of the first differing byte.
    pub first: u64,
    /// IOVA of the last differing byte.
    pub last: u64,
    /// Number of differing bytes.
    pub bytes: u64,
}

/// Simulated host memory with a DMA allocator.
pub struct HostMem {
    map: MmapMut,
    /// Free blocks: offset -> length, coalesced.
    free: BTreeMap<u64, u64>,
    /// Live allocations: offset -> length.
    used: BTreeMap<u64, u64>,
    /// DMA window `[base, end)` (IOVAs) of each VF that has one.
    windows: BTreeMap<u8, (u64, u64)>,
    /// Allocators inside the windows of [`HostMem::alloc_window`]: func -> (free, used).
    arenas: BTreeMap<u8, (BTreeMap<u64, u64>, BTreeMap<u64, u64>)>,
}

/// First-fit allocation of `len` bytes aligned to `align` from the free blocks `free` (offsets
/// into the mapping); records it in `used` and returns the offset.
fn alloc_in(free: &mut BTreeMap<u64, u64>, used: &mut BTreeMap<u64, u64>, len: u64, align: u64) -> Result<u64, HostMemError> {
    let align = align.max(1);
    if len == 0 || !align.is_power_of_two() {
        return Err(HostMemError::BadAlloc { len, align });
    }
    // IOVA_BASE is 2^36-aligned, so offset alignment equals IOVA alignment up to 2^36.
    let mut found = None;
    for (&start, &blen) in free.iter() {
        let aligned = (IOVA_BASE + start).checked_next_multiple_of(align);
        let Some(off) = aligned.map(|a| a - IOVA_BASE) else {
            continue;
        };
        if off.checked_add(len).is_some_and(|e| e <= start + blen) {
            found = Some((start, blen, off));
            break;
        }
    }
    let Some((start, blen, off)) = found else {
        return Err(HostMemError::OutOfMemory {
            len,
            align,
            free: free.values().sum(),
            largest: free.values().copied().max().unwrap_or(0),
        });
    };
    free.remove(&start);
    if off > start {
        free.insert(start, off - start);
    }
    let end = off + len;
    if end < start + blen {
        free.insert(end, start + blen - end);
    }
    used.insert(off, len);
    Ok(off)
}

/// Frees the allocation at `iova` of `len` bytes from `free`/`used`, coalescing.
fn free_in(free: &mut BTreeMap<u64, u64>, used: &mut BTreeMap<u64, u64>, iova: u64, len: u64) -> Result<(), HostMemError> {
    let bad = |why: String| HostMemError::BadFree { iova, len, why };
    let off = iova
        .checked_sub(IOVA_BASE)
        .ok_or_else(|| bad("below the IOVA base".into()))?;
    let Some(&alen) = used.get(&off) else {
        return Err(bad(
            "not the start of a live allocation (double free?)".into()
        ));
    };
    if alen != len {
        return Err(bad(format!("the allocation is {alen} bytes long")));
    }
    used.remove(&off);
    let mut start = off;
    let mut flen = len;
    // Coalesce with the previous and the next free block.
    if let Some((&ps, &pl)) = free.range(..off).next_back() {
        if ps + pl == off {
            free.remove(&ps);
            start = ps;
            flen += pl;
        }
    }
    if let Some(&nl) = free.get(&(off + len)) {
        free.remove(&(off + len));
        flen += nl;
    }
    free.insert(start, flen);
    Ok(())
}

impl std::fmt::Debug for HostMem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostMem")
            .field("base", &format_args!("{IOVA_BASE:#x}"))
            .field("size", &self.map.len())
            .field("allocations", &self.used.len())
            .field("free_bytes", &self.free_bytes())
            .finish()
    }
}

impl HostMem {
    /// Maps `size` bytes of zeroed anonymous memory at [`IOVA_BASE`].
    ///
    /// # Errors
    /// [`HostMemError::BadSize`] for a size below 4 KiB or above 2^40 bytes,
    /// [`HostMemError::Map`] if the OS refuses the mapping.
    pub fn new(size: usize) -> Result<HostMem, HostMemError> {
        if !(4096..=(1usize << 40)).contains(&size) {
            return Err(HostMemError::BadSize { size });
        }
        let map = MmapMut::map_anon(size).map_err(|source| HostMemError::Map { size, source })?;
        let mut free = BTreeMap::new();
        free.insert(0, size as u64);
        Ok(HostMem {
            map,
            free,
            used: BTreeMap::new(),
            windows: BTreeMap::new(),
            arenas: BTreeMap::new(),
        })
    }

    /// [`HostMem::new`] with [`DEFAULT_SIZE`].
    ///
    /// # Errors
    /// As [`HostMem::new`].
    pub fn with_default_size() -> Result<HostMem, HostMemError> {
        HostMem::new(DEFAULT_SIZE)
    }

    /// First valid IOVA.
    pub fn base(&self) -> u64 {
        IOVA_BASE
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.map.len() as u64
    }

    /// Total free bytes of the allocator.
    pub fn free_bytes(&self) -> u64 {
        self.free.values().sum()
    }

    /// Allocates `len` bytes aligned to `align` (a power of two; IOVA alignment) first-fit and
    /// returns the IOVA. The memory is not cleared.
    ///
    /// # Errors
    /// [`HostMemError::BadAlloc`] for `len == 0` or a bad alignment, [`HostMemError::OutOfMemory`]
    /// when no free block fits.
    pub fn alloc(&mut self, len: u64, align: u64) -> Result<u64, HostMemError> {
        alloc_in(&mut self.free, &mut self.used, len, align).map(|off| IOVA_BASE + off)
    }

    /// Frees the allocation at `iova` of `len` bytes (the length given to [`HostMem::alloc`]).
    ///
    /// # Errors
    /// [`HostMemError::BadFree`] if `iova` is not the start of a live allocation or `len` differs
    /// from its length; nothing is freed then.
    pub fn free(&mut self, iova: u64, len: u64) -> Result<(), HostMemError> {
        free_in(&mut self.free, &mut self.used, iova, len)
    }

    /// Gives VF `func` a DMA window of `len` bytes allocated (aligned to `align`) from the main
    /// allocator, with its own allocator for [`HostMem::alloc_func`]; returns its base. A VF
    /// that already has a window keeps it (its base is returned).
    ///
    /// # Errors
    /// As [`HostMem::alloc`].
    pub fn alloc_window(&mut self, func: u8, len: u64, align: u64) -> Result<u64, HostMemError> {
        if let Some(&(base, _)) = self.windows.get(&func) {
            return Ok(base);
        }
        let base = self.alloc(len, align)?;
        let mut free = BTreeMap::new();
        free.insert(base - IOVA_BASE, len);
        self.arenas.insert(func, (free, BTreeMap::new()));
        self.set_window(func, base, len);
        Ok(base)
    }

    /// Records VF `func`'s DMA window `[base, base + len)` (what the PF set with SET_VF_DMA), to
    /// check the NIC's accesses for it against.
    pub fn set_window(&mut self, func: u8, base: u64, len: u64) {
        self.windows.insert(func, (base, base.saturating_add(len)));
    }

    /// VF `func`'s DMA window `(base, end)`, if it has one.
    pub fn window(&self, func: u8) -> Option<(u64, u64)> {
        self.windows.get(&func).copied()
    }

    /// Allocates for function `func`: inside its window when it has one from
    /// [`HostMem::alloc_window`], else from the main allocator.
    ///
    /// # Errors
    /// As [`HostMem::alloc`] (out of memory means the window is full).
    pub fn alloc_func(&mut self, func: u8, len: u64, align: u64) -> Result<u64, HostMemError> {
        match self.arenas.get_mut(&func) {
            Some((free, used)) => alloc_in(free, used, len, align).map(|off| IOVA_BASE + off),
            None => self.alloc(len, align),
        }
    }

    /// Frees an allocation of [`HostMem::alloc_func`] for `func`.
    ///
    /// # Errors
    /// As [`HostMem::free`].
    pub fn free_func(&mut self, func: u8, iova: u64, len: u64) -> Result<(), HostMemError> {
        match self.arenas.get_mut(&func) {
            Some((free, used)) => free_in(free, used, iova, len),
            None => self.free(iova, len),
        }
    }

    /// Panics when `[addr, addr + len)`, accessed on behalf of VF `func`, is not inside its DMA
    /// window: the NIC reached memory of another function.
    fn check_window(&self, func: u8, addr: u64, len: u64, what: &str) {
        if func == 0 || len == 0 {
            return;
        }
        let inside = self
            .windows
            .get(&func)
            .is_some_and(|&(b, e)| addr >= b && u128::from(addr) + u128::from(len) <= u128::from(e));
        if !inside {
            let w = match self.windows.get(&func) {
                Some((b, e)) => format!("[{b:#x}, {e:#x})"),
                None => "empty (the PF gave it none)".into(),
            };
            panic!(
                "DMA isolation broken: the NIC's DMA {what} for function {func} at [{addr:#x}, {:#x}) ({len} bytes) \
                 is outside the function's window {w}",
                u128::from(addr) + u128::from(len)
            );
        }
    }

    /// Offset of `[addr, addr + len)` in the mapping, or the out-of-range error for `func`.
    fn offset(&self, func: u8, addr: u64, len: u64) -> Result<usize, HostMemError> {
        let size = self.map.len() as u64;
        match addr.checked_sub(IOVA_BASE) {
            Some(off) if off.checked_add(len).is_some_and(|e| e <= size) => Ok(off as usize),
            _ => Err(HostMemError::OutOfRange {
                func,
                addr,
                len,
                base: IOVA_BASE,
                end: IOVA_BASE + size,
            }),
        }
    }

    /// The bytes `[iova, iova + len)`.
    ///
    /// # Errors
    /// [`HostMemError::OutOfRange`] if any byte is outside the memory.
    pub fn slice(&self, iova: u64, len: u64) -> Result<&[u8], HostMemError> {
        let off = self.offset(0, iova, len)?;
        Ok(&self.map[off..off + len as usize])
    }

    /// The bytes `[iova, iova + len)`, writable.
    ///
    /// # Errors
    /// [`HostMemError::OutOfRange`] if any byte is outside the memory.
    pub fn slice_mut(&mut self, iova: u64, len: u64) -> Result<&mut [u8], HostMemError> {
        let off = self.offset(0, iova, len)?;
        Ok(&mut self.map[off..off + len as usize])
    }

    /// Reads `buf.len()` bytes at `iova` on behalf of function `func` (reported in errors).
    ///
    /// # Panics
    /// A VF's access outside its DMA window (module documentation).
    ///
    /// # Errors
    /// [`HostMemError::OutOfRange`] if any byte is outside the memory; `buf` is untouched then.
    pub fn read_func(&self, func: u8, iova: u64, buf: &mut [u8]) -> Result<(), HostMemError> {
        let off = self.offset(func, iova, buf.len() as u64)?;
        self.check_window(func, iova, buf.len() as u64, "read");
        buf.copy_from_slice(&self.map[off..off + buf.len()]);
        Ok(())
    }

    /// Writes `data` at `iova` on behalf of function `func` (reported in errors).
    ///
    /// # Panics
    /// A VF's access outside its DMA window (module documentation).
    ///
    /// # Errors
    /// [`HostMemError::OutOfRange`] if any byte is outside the memory; nothing is written then.
    pub fn write_func(&mut self, func: u8, iova: u64, data: &[u8]) -> Result<(), HostMemError> {
        let off = self.offset(func, iova, data.len() as u64)?;
        self.check_window(func, iova, data.len() as u64, "write");
        self.map[off..off + data.len()].copy_from_slice(data);
        Ok(())
    }

    /// Host read of `buf.len()` bytes at `iova`.
    ///
    /// # Errors
    /// [`HostMemError::OutOfRange`] if any byte is outside the memory.
    pub fn read_bytes(&self, iova: u64, buf: &mut [u8]) -> Result<(), HostMemError> {
        self.read_func(0, iova, buf)
    }

    /// Host write of `data` at `iova`.
    ///
    /// # Errors
    /// [`HostMemError::OutOfRange`] if any byte is outside the memory.
    pub fn write_bytes(&mut self, iova: u64, data: &[u8]) -> Result<(), HostMemError> {
        self.write_func(0, iova, data)
    }

    /// Little-endian u64 at `iova`.
    ///
    /// # Errors
    /// [`HostMemError::OutOfRange`] if any byte is outside the memory.
    pub fn read_u64(&self, iova: u64) -> Result<u64, HostMemError> {
        let mut b = [0u8; 8];
        self.read_bytes(iova, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes `value` little-endian at `iova`.
    ///
    /// # Errors
    /// [`HostMemError::OutOfRange`] if any byte is outside the memory.
    pub fn write_u64(&mut self, iova: u64, value: u64) -> Result<(), HostMemError> {
        self.write_bytes(iova, &value.to_le_bytes())
    }

    /// IOVA of the first byte where `self` and `other` differ (over the common size; a size
    /// difference counts as a difference at the end of the smaller one).
    pub fn first_difference(&self, other: &HostMem) -> Option<u64> {
        self.diff(other).map(|d| d.first)
    }

    /// Compares the whole contents of `self` and `other`; `None` when equal.
    /// Bytes past the end of the smaller memory count as different.
    pub fn diff(&self, other: &HostMem) -> Option<MemDiff> {
        const CHUNK: usize = 4096;
        let (a, b): (&[u8], &[u8]) = (&self.map, &other.map);
        let common = a.len().min(b.len());
        let mut first = None;
        let mut last = 0u64;
        let mut bytes = 0u64;
        let mut pos = 0;
        while pos < common {
            let end = (pos + CHUNK).min(common);
            // Whole-chunk comparison is a memcmp; only differing chunks are scanned bytewise.
            if a[pos..end] != b[pos..end] {
                for i in pos..end {
                    if a[i] != b[i] {
                        first.get_or_insert(i as u64);
                        last = i as u64;
                        bytes += 1;
                    }
                }
            }
            pos = end;
        }
        let longer = a.len().max(b.len());
        if longer > common {
            first.get_or_insert(common as u64);
            last = longer as u64 - 1;
            bytes += (longer - common) as u64;
        }
        first.map(|f| MemDiff {
            first: IOVA_BASE + f,
            last: IOVA_BASE + last,
            bytes,
        })
    }

    /// Whether `[iova, iova + len)` holds the same bytes in `self` and `other`.
    ///
    /// # Errors
    /// [`HostMemError::OutOfRange`] if the range is outside either memory.
    pub fn range_equal(&self, other: &HostMem, iova: u64, len: u64) -> Result<bool, HostMemError> {
        Ok(self.slice(iova, len)? == other.slice(iova, len)?)
    }
}

/// The model's view: every access is bounds-checked; an out-of-range access becomes the model's
/// [`rnic_model::MemError`] with the function, address and length of the access.
impl rnic_model::HostMemory for HostMem {
    fn read(&mut self, func: u8, addr: u64, buf: &mut [u8]) -> Result<(), rnic_model::MemError> {
        let len = buf.len() as u64;
        self.read_func(func, addr, buf)
            .map_err(|_| rnic_model::MemError { func, addr, len })
    }

    fn write(&mut self, func: u8, addr: u64, data: &[u8]) -> Result<(), rnic_model::MemError> {
        let len = data.len() as u64;
        self.write_func(func, addr, data)
            .map_err(|_| rnic_model::MemError { func, addr, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_first_fit_alignment_and_coalescing() {
        let mut m = HostMem::new(1 << 20).unwrap();
        let a = m.alloc(100, 64).unwrap();
        assert_eq!(a, IOVA_BASE);
        let b = m.alloc(4096, 4096).unwrap();
        assert_eq!(b, IOVA_BASE + 4096);
        let c = m.alloc(8, 8).unwrap();
        // First fit: the hole between a and b takes the small block.
        assert_eq!(c, IOVA_BASE + 104);
        m.free(a, 100).unwrap();
        let d = m.alloc(64, 32).unwrap();
        assert_eq!(d, IOVA_BASE);
        m.free(d, 64).unwrap();
        m.free(c, 8).unwrap();
        m.free(b, 4096).unwrap();
        assert_eq!(m.free_bytes(), 1 << 20);
        assert_eq!(m.free.len(), 1, "free blocks must coalesce back into one");
        // Everything in one piece again.
        assert_eq!(m.alloc(1 << 20, 1).unwrap(), IOVA_BASE);
    }

    #[test]
    fn alloc_errors() {
        let mut m = HostMem::new(64 << 10).unwrap();
        assert!(matches!(m.alloc(0, 8), Err(HostMemError::BadAlloc { .. })));
        assert!(matches!(m.alloc(8, 3), Err(HostMemError::BadAlloc { .. })));
        assert!(matches!(
            m.alloc(128 << 10, 8),
            Err(HostMemError::OutOfMemory { .. })
        ));
        let a = m.alloc(16, 16).unwrap();
        assert!(matches!(m.free(a, 8), Err(HostMemError::BadFree { .. })));
        m.free(a, 16).unwrap();
        assert!(matches!(m.free(a, 16), Err(HostMemError::BadFree { .. })));
        assert!(matches!(m.free(5, 16), Err(HostMemError::BadFree { .. })));
        assert!(HostMem::new(0).is_err());
    }

    #[test]
    fn bounds_checked_access() {
        let mut m = HostMem::new(8192).unwrap();
        m.write_u64(IOVA_BASE + 8184, 0x1122_3344_5566_7788)
            .unwrap();
        assert_eq!(m.read_u64(IOVA_BASE + 8184).unwrap(), 0x1122_3344_5566_7788);
        assert_eq!(m.slice(IOVA_BASE + 8184, 1).unwrap(), &[0x88]);
        let e = m.write_bytes(IOVA_BASE + 8185, &[0; 8]).unwrap_err();
        match e {
            HostMemError::OutOfRange { addr, len, end, .. } => {
                assert_eq!((addr, len, end), (IOVA_BASE + 8185, 8, IOVA_BASE + 8192));
            }
            other => panic!("unexpected {other}"),
        }
        let mut buf = [0u8; 4];
        assert!(m.read_bytes(IOVA_BASE - 1, &mut buf).is_err());
        assert!(m.read_bytes(u64::MAX - 1, &mut buf).is_err());
        assert!(m.read_func(3, 0, &mut buf).is_err());
        // The model's trait reports function and range.
        use rnic_model::HostMemory;
        let err = HostMemory::read(&mut m, 7, IOVA_BASE + 8190, &mut buf).unwrap_err();
        assert_eq!((err.func, err.addr, err.len), (7, IOVA_BASE + 8190, 4));
        assert!(HostMemory::write(&mut m, 0, IOVA_BASE, &[1, 2, 3]).is_ok());
        assert!(HostMemory::read(&mut m, 0, IOVA_BASE, &mut buf[..3]).is_ok());
        assert_eq!(&buf[..3], &[1, 2, 3]);
    }

    #[test]
    fn vf_windows_allocate_inside_and_catch_accesses_outside() {
        let mut m = HostMem::new(1 << 20).unwrap();
        let pf = m.alloc(4096, 4096).unwrap();
        let w = m.alloc_window(2, 64 << 10, 4096).unwrap();
        assert_eq!(m.alloc_window(2, 4096, 1).unwrap(), w, "a window is given once");
        let a = m.alloc_func(2, 60 << 10, 4096).unwrap();
        assert!((w..w + (64 << 10)).contains(&a));
        assert!(matches!(m.alloc_func(2, 8 << 10, 1), Err(HostMemError::OutOfMemory { .. })), "the window is full");
        m.free_func(2, a, 60 << 10).unwrap();
        let mut buf = [0u8; 8];
        m.read_func(2, w + (64 << 10) - 8, &mut buf).unwrap();
        m.read_func(0, pf, &mut buf).unwrap();
        let outside = |f: u8, addr: u64| {
            std::panic::catch_unwind(|| {
                let mut b = [0u8; 8];
                m.read_func(f, addr, &mut b).unwrap();
            })
            .is_err()
        };
        assert!(outside(2, pf), "VF 2 reading the PF's memory");
        assert!(outside(2, w + (64 << 10) - 4), "crossing the window's end");
        assert!(outside(3, w), "VF 3 has no window");
    }

    #[test]
    fn compare() {
        let mut a = HostMem::new(1 << 20).unwrap();
        let mut b = HostMem::new(1 << 20).unwrap();
        assert_eq!(a.diff(&b), None);
        a.write_bytes(IOVA_BASE + 5000, &[1]).unwrap();
        a.write_bytes(IOVA_BASE + 900_000, &[2, 2]).unwrap();
        let d = a.diff(&b).unwrap();
        assert_eq!(
            d,
            MemDiff {
                first: IOVA_BASE + 5000,
                last: IOVA_BASE + 900_001,
                bytes: 3
            }
        );
        assert_eq!(b.first_difference(&a), Some(IOVA_BASE + 5000));
        assert!(a.range_equal(&b, IOVA_BASE, 5000).unwrap());
        assert!(!a.range_equal(&b, IOVA_BASE, 5001).unwrap());
        b.write_bytes(IOVA_BASE + 5000, &[1]).unwrap();
        b.write_bytes(IOVA_BASE + 900_000, &[2, 2]).unwrap();
        assert_eq!(a.first_difference(&b), None);
        let c = HostMem::new(1 << 19).unwrap();
        let mut a2 = HostMem::new(1 << 20).unwrap();
        a2.write_bytes(IOVA_BASE, &[0]).unwrap();
        assert_eq!(a2.first_difference(&c), Some(IOVA_BASE + (1 << 19)));
    }
}
