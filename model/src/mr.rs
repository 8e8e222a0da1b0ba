// SPDX-License-Identifier: Apache-2.0
//! Memory regions: lkey / rkey checks, translation through the MTT and the splitting of
//! gather / scatter lists into DMA pieces (contract section 8, "Gather / scatter").

use rnic_regs::{access, Mrc};

use crate::{HostMemory, ModelError, Nic, Sge};

/// Splits `[va, va + len)` at page boundaries of `1 << log_page`; yields `(va, len)` pieces.
pub(crate) struct PageSplit {
    va: u64,
    remaining: u64,
    page_mask: u64,
}

impl PageSplit {
    pub(crate) fn new(va: u64, len: u64, log_page: u8) -> PageSplit {
        PageSplit {
            va,
            remaining: len,
            page_mask: (1u64 << log_page) - 1,
        }
    }
}

impl Iterator for PageSplit {
    type Item = (u64, u64);
    fn next(&mut self) -> Option<(u64, u64)> {
        if self.remaining == 0 {
            return None;
        }
        let to_page_end = self.page_mask - (self.va & self.page_mask) + 1;
        let n = to_page_end.min(self.remaining);
        let piece = (self.va, n);
        self.va = self.va.wrapping_add(n);
        self.remaining -= n;
        Some(piece)
    }
}

/// `[addr, addr + len)` lies inside the MR.
fn in_range(mr: &Mrc, addr: u64, len: u64) -> bool {
    let (a, l, b, m) = (
        addr as u128,
        len as u128,
        mr.iova as u128,
        mr.length as u128,
    );
    a >= b && a + l <= b + m
}

impl Nic {
    /// lkey check (section 8): returns the MR index when `lkey` may access
    /// `[addr, addr + len)` for protection domain `pdn` (`write`: needs LOCAL_WRITE).
    pub(crate) fn check_lkey(
        &self,
        lkey: u32,
        pdn: u32,
        addr: u64,
        len: u64,
        write: bool,
    ) -> Option<usize> {
        let i = (lkey >> 8) as usize;
        let mr = self.mrc.get(i)?;
        let ok = mr.valid
            && mr.key == (lkey & 0xFF) as u8
            && mr.pdn == pdn
            && in_range(mr, addr, len)
            && (!write || mr.access as u32 & access::LOCAL_WRITE != 0);
        ok.then_some(i)
    }

    /// rkey check (section 9): index, valid, key, PD, `need` access bit, and the range unless
    /// `len == 0`. Returns the MR index.
    pub(crate) fn check_rkey(
        &self,
        rkey: u32,
        pdn: u32,
        va: u64,
        len: u64,
        need: u32,
    ) -> Option<usize> {
        let i = (rkey >> 8) as usize;
        let mr = self.mrc.get(i)?;
        let ok = mr.valid
            && mr.key == (rkey & 0xFF) as u8
            && mr.pdn == pdn
            && mr.access as u32 & need != 0
            && (len == 0 || in_range(mr, va, len));
        ok.then_some(i)
    }

    /// Host address of `va` inside MR `mr` (which must contain it).
    pub(crate) fn translate(&self, mr: usize, va: u64) -> u64 {
        let m = &self.mrc[mr];
        let lp = m.log_page;
        let idx = m.mtt_base as u64 + (va >> lp) - (m.iova >> lp);
        // The MTT index is inside the table: REG_MR checked mtt_base + npages <= NUM_MTT.
        self.mtt[idx as usize] + (va & ((1u64 << lp) - 1))
    }

    /// Read `buf.len()` bytes at `va` of MR `mr`, one DMA read per page piece.
    pub(crate) fn mr_read(
        &self,
        mem: &mut dyn HostMemory,
        func: u8,
        mr: usize,
        va: u64,
        buf: &mut [u8],
    ) -> Result<(), ModelError> {
        let mut off = 0usize;
        for (pva, plen) in PageSplit::new(va, buf.len() as u64, self.mrc[mr].log_page) {
            let phys = self.translate(mr, pva);
            mem.read(func, phys, &mut buf[off..off + plen as usize])?;
            off += plen as usize;
        }
        Ok(())
    }

    /// Write `data` at `va` of MR `mr`, one DMA write per page piece.
    pub(crate) fn mr_write(
        &mut self,
        mem: &mut dyn HostMemory,
        func: u8,
        mr: usize,
        va: u64,
        data: &[u8],
    ) -> Result<(), ModelError> {
        let mut off = 0usize;
        for (pva, plen) in PageSplit::new(va, data.len() as u64, self.mrc[mr].log_page) {
            let phys = self.translate(mr, pva);
            self.dma_write(mem, func, phys, &data[off..off + plen as usize])?;
            off += plen as usize;
        }
        Ok(())
    }

    /// Gather bytes `[offset, offset + buf.len())` of the message described by `sges` into `buf`.
    /// Every SGE touched is lkey-checked (read access) before its data is read. Returns `false`
    /// when a check fails (the caller turns that into `LOC_PROT_ERR`).
    pub(crate) fn gather(
        &self,
        mem: &mut dyn HostMemory,
        func: u8,
        pdn: u32,
        sges: &[Sge],
        offset: u64,
        buf: &mut [u8],
    ) -> Result<bool, ModelError> {
        let want_end = offset + buf.len() as u64;
        let mut pos = 0u64;
        for s in sges.iter().filter(|s| s.len > 0) {
            let (s_start, s_end) = (pos, pos + s.len as u64);
            pos = s_end;
            let a = s_start.max(offset);
            let b = s_end.min(want_end);
            if a >= b {
                continue;
            }
            let Some(mr) = self.check_lkey(s.lkey, pdn, s.addr, s.len as u64, false) else {
                return Ok(false);
            };
            let dst = &mut buf[(a - offset) as usize..(b - offset) as usize];
            self.mr_read(mem, func, mr, s.addr + (a - s_start), dst)?;
        }
        Ok(true)
    }

    /// Scatter `data` into the message described by `sges` starting at message offset
    /// `offset`. All SGEs touched are lkey-checked with LOCAL_WRITE before anything is written;
    /// returns `false` (nothing written) when one fails. The caller checked the total length.
    pub(crate) fn scatter(
        &mut self,
        mem: &mut dyn HostMemory,
        func: u8,
        pdn: u32,
        sges: &[Sge],
        offset: u64,
        data: &[u8],
    ) -> Result<bool, ModelError> {
        let want_end = offset + data.len() as u64;
        // Pass 1: checks. At most MAX_SEND_SGE SGEs, so a fixed array holds the MR indices.
        let mut mrs = [usize::MAX; rnic_regs::params::MAX_SEND_SGE as usize];
        let mut pos = 0u64;
        for (k, s) in sges.iter().enumerate() {
            if s.len == 0 {
                continue;
            }
            let (s_start, s_end) = (pos, pos + s.len as u64);
            pos = s_end;
            if s_start.max(offset) >= s_end.min(want_end) {
                continue;
            }
            match self.check_lkey(s.lkey, pdn, s.addr, s.len as u64, true) {
                Some(mr) => mrs[k] = mr,
                None => return Ok(false),
            }
        }
        // Pass 2: writes, in payload order.
        let mut pos = 0u64;
        for (k, s) in sges.iter().enumerate() {
            if s.len == 0 {
                continue;
            }
            let (s_start, s_end) = (pos, pos + s.len as u64);
            pos = s_end;
            let a = s_start.max(offset);
            let b = s_end.min(want_end);
            if a >= b {
                continue;
            }
            let src = &data[(a - offset) as usize..(b - offset) as usize];
            self.mr_write(mem, func, mrs[k], s.addr + (a - s_start), src)?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_split() {
        let v: Vec<_> = PageSplit::new(0x1FF0, 0x30, 12).collect();
        assert_eq!(v, vec![(0x1FF0, 0x10), (0x2000, 0x20)]);
        let v: Vec<_> = PageSplit::new(0x1000, 0x2000, 12).collect();
        assert_eq!(v, vec![(0x1000, 0x1000), (0x2000, 0x1000)]);
        assert_eq!(PageSplit::new(5, 0, 12).count(), 0);
        let v: Vec<_> = PageSplit::new(u64::MAX - 0xF, 0x10, 12).collect();
        assert_eq!(v, vec![(u64::MAX - 0xF, 0x10)]);
    }
}
