// SPDX-License-Identifier: Apache-2.0
//! Protection domains and memory regions (MTT translation).

use std::cell::Cell;
use std::rc::Rc;

use rnic_regs::{cmd_reg_mr, cmd_write_mtt, params};

use crate::context::{CtxInner, DmaBuf, CMD_IMAGE_SIZE};
use crate::error::{Error, Result};
use crate::qp::{QpInitAttr, QueuePair};
use crate::types::{AccessFlags, Command, Object, Resource};
use crate::wr::Sge;

/// log2 of the MR page size the driver registers with (4 KiB).
pub const LOG_PAGE: u32 = rnic_regs::params::MIN_LOG_PAGE as u32;
/// MR page size in bytes.
pub const PAGE_SIZE: u64 = 1 << LOG_PAGE;

pub(crate) struct PdInner {
    pub(crate) ctx: Rc<CtxInner>,
    pub(crate) pdn: u32,
    destroyed: Cell<bool>,
}

impl PdInner {
    fn dealloc_now(&self) -> Result<()> {
        if self.destroyed.replace(true) {
            return Ok(());
        }
        self.ctx
            .index_command(Command::DeallocPd, Object::Pd(self.pdn), self.pdn)?;
        self.ctx.free_index(Resource::Pd, self.pdn);
        log::info!(target: &self.ctx.log_target, "pd {:#x}: deallocated", self.pdn);
        Ok(())
    }
}

impl Drop for PdInner {
    fn drop(&mut self) {
        if let Err(e) = self.dealloc_now() {
            log::error!(
                target: &self.ctx.log_target,
                "pd {:#x}: deallocating on drop failed (PDN leaked): {e}",
                self.pdn
            );
        }
    }
}

/// A protection domain (like `ibv_pd`). MRs and QPs created from it keep it alive; it is
/// deallocated when the last of them and this handle are dropped.
pub struct Pd {
    pub(crate) inner: Rc<PdInner>,
}

impl std::fmt::Debug for Pd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pd").field("pdn", &self.inner.pdn).finish()
    }
}

/// How the pages of a memory region are laid out in DMA memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MrOptions {
    /// `Some(seed)`: MR page `i` is backed by a pseudo-randomly chosen (seeded, reproducible)
    /// page of the allocation, so a device that ignores the MTT reads or writes the wrong
    /// bytes. `None`: pages in order (the MTT is the identity on the allocation).
    pub scramble: Option<u64>,
    /// Offset of the region's start inside its first page (0..4096), to exercise regions that
    /// do not start on a page boundary. Ignored when `iova` is given.
    pub first_page_offset: u32,
    /// `Some(va)`: register the region at this iova instead of its DMA address (the offset
    /// inside the first page is then `va % 4096`). Choosing an address outside the DMA region
    /// makes any untranslated device access fail loudly instead of hitting other memory.
    pub iova: Option<u64>,
}

impl Pd {
    pub(crate) fn alloc(ctx: &Rc<CtxInner>) -> Result<Pd> {
        let pdn = ctx.alloc_index(Resource::Pd)?;
        if let Err(e) = ctx.index_command(Command::AllocPd, Object::Pd(pdn), pdn) {
            ctx.free_index(Resource::Pd, pdn);
            return Err(e);
        }
        log::info!(target: &ctx.log_target, "pd {pdn:#x}: allocated");
        Ok(Pd {
            inner: Rc::new(PdInner {
                ctx: ctx.clone(),
                pdn,
                destroyed: Cell::new(false),
            }),
        })
    }

    /// The PD number.
    pub fn pdn(&self) -> u32 {
        self.inner.pdn
    }

    /// Allocate `len` bytes of zeroed DMA memory and register them with `access`; the region's
    /// address (iova) is its DMA address and its pages are contiguous.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for `len == 0`; [`Error::ResourceExhausted`] (MR indices, MTT
    /// entries); command and backend errors.
    pub fn reg_mr(&self, len: u64, access: AccessFlags) -> Result<Mr> {
        self.reg_mr_with(len, access, &MrOptions::default())
    }

    /// Like [`Pd::reg_mr`] with the page order scrambled (seeded by `seed`): the region's pages
    /// are NOT contiguous in DMA space, so every access really goes through the MTT.
    ///
    /// # Errors
    /// As [`Pd::reg_mr`].
    pub fn reg_mr_scrambled(&self, len: u64, access: AccessFlags, seed: u64) -> Result<Mr> {
        self.reg_mr_with(
            len,
            access,
            &MrOptions {
                scramble: Some(seed),
                ..MrOptions::default()
            },
        )
    }

    /// Register a region with explicit layout options (see [`MrOptions`]).
    ///
    /// Unless `opts.iova` is given, the iova is the DMA address of the allocation plus
    /// `first_page_offset`; with scrambling the bytes of iova page `i` live at
    /// [`Mr::page_addr`]`(i)` instead, so the iova is a valid DMA address holding the *wrong*
    /// data for an untranslated access.
    ///
    /// # Errors
    /// As [`Pd::reg_mr`]; [`Error::InvalidArgument`] for `first_page_offset >= 4096` or an
    /// `iova + len` that overflows 64 bits.
    pub fn reg_mr_with(&self, len: u64, access: AccessFlags, opts: &MrOptions) -> Result<Mr> {
        Mr::register(&self.inner, len, access, opts)
    }

    /// Create an RC queue pair in state RESET (rings in DMA memory, CREATE_QP).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for queue depths of 0 or above 2^15;
    /// [`Error::ResourceExhausted`] (QPNs); command and backend errors.
    pub fn create_qp(&self, attr: &QpInitAttr<'_>) -> Result<QueuePair> {
        QueuePair::create(&self.inner, attr)
    }

    /// Deallocate the PD now (dropping it does the same but can only log failures).
    ///
    /// # Errors
    /// [`Error::InUse`] while MRs or QPs still use it; command and backend errors.
    pub fn dealloc(self) -> Result<()> {
        let pdn = self.inner.pdn;
        match Rc::try_unwrap(self.inner) {
            Ok(inner) => inner.dealloc_now(),
            Err(rc) => Err(Error::InUse {
                object: Object::Pd(pdn),
                users: Rc::strong_count(&rc) - 1,
            }),
        }
    }
}

/// A registered memory region (like `ibv_mr`) with its own DMA memory. Deregistered and freed on
/// drop.
pub struct Mr {
    pd: Rc<PdInner>,
    index: u32,
    key: u8,
    iova: u64,
    len: u64,
    access: AccessFlags,
    /// DMA address of each MR page (`iova >> 12` relative), exactly what the MTT holds.
    pages: Vec<u64>,
    mtt_start: u32,
    _buf: DmaBuf,
    deregistered: bool,
}

impl std::fmt::Debug for Mr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mr")
            .field("lkey", &format_args!("{:#x}", self.lkey()))
            .field("iova", &format_args!("{:#x}", self.iova))
            .field("len", &self.len)
            .field("access", &self.access)
            .finish()
    }
}

/// Deterministic permutation of `0..n` (Fisher-Yates with xorshift64*), reproducible from the seed.
fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    let mut s = seed | 1;
    for i in (1..n).rev() {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        let r = s.wrapping_mul(0x2545_F491_4F6C_DD1D);
        p.swap(i, (r % (i as u64 + 1)) as usize);
    }
    // A permutation that happens to be the identity would not exercise translation.
    if n > 1 && p.iter().enumerate().all(|(i, v)| i == *v) {
        p.rotate_left(1);
    }
    p
}

impl Mr {
    fn register(pd: &Rc<PdInner>, len: u64, access: AccessFlags, opts: &MrOptions) -> Result<Mr> {
        let ctx = &pd.ctx;
        if len == 0 {
            return Err(Error::InvalidArgument {
                what: "MR length",
                value: 0,
                reason: "must be at least 1 byte",
            });
        }
        let off = opts
            .iova
            .map_or(u64::from(opts.first_page_offset), |va| va & (PAGE_SIZE - 1));
        if let Some(va) = opts.iova.filter(|va| va.checked_add(len).is_none()) {
            return Err(Error::InvalidArgument {
                what: "MR iova",
                value: va,
                reason: "iova + length overflows",
            });
        }
        if off >= PAGE_SIZE {
            return Err(Error::InvalidArgument {
                what: "MR first_page_offset",
                value: off,
                reason: "must be below the page size 4096",
            });
        }
        let npages = (off + len).div_ceil(PAGE_SIZE);
        if npages > u64::from(ctx.caps.num_mtt) {
            return Err(Error::ResourceExhausted {
                resource: Resource::Mtt,
                limit: ctx.caps.num_mtt,
            });
        }
        let npages = npages as usize;
        let buf = DmaBuf::alloc(&ctx.dev, npages as u64 * PAGE_SIZE, PAGE_SIZE)?;
        let base = buf.iova();
        let pages: Vec<u64> = match opts.scramble {
            None => (0..npages as u64).map(|i| base + i * PAGE_SIZE).collect(),
            Some(seed) => permutation(npages, seed)
                .into_iter()
                .map(|i| base + i as u64 * PAGE_SIZE)
                .collect(),
        };
        let iova = opts.iova.unwrap_or(base + off);

        let mtt_start =
            ctx.mtt
                .borrow_mut()
                .alloc(npages as u32)
                .ok_or(Error::ResourceExhausted {
                    resource: Resource::Mtt,
                    limit: ctx.caps.num_mtt,
                })?;
        let index = match ctx.alloc_index(Resource::Mr) {
            Ok(i) => i,
            Err(e) => {
                ctx.mtt.borrow_mut().free(mtt_start, npages as u32);
                return Err(e);
            }
        };
        let key = ctx.next_key();
        let undo = |e: Error| {
            ctx.free_index(Resource::Mr, index);
            ctx.mtt.borrow_mut().free(mtt_start, npages as u32);
            e
        };
        write_mtt(ctx, mtt_start, &pages).map_err(undo)?;

        let mut img = [0u8; CMD_IMAGE_SIZE];
        cmd_reg_mr::INDEX.set(&mut img, u64::from(index));
        cmd_reg_mr::KEY.set(&mut img, u64::from(key));
        cmd_reg_mr::PDN.set(&mut img, u64::from(pd.pdn));
        cmd_reg_mr::ACCESS.set(&mut img, u64::from(access.bits()));
        cmd_reg_mr::IOVA.set(&mut img, iova);
        cmd_reg_mr::LENGTH.set(&mut img, len);
        cmd_reg_mr::MTT_BASE.set(&mut img, u64::from(mtt_start));
        cmd_reg_mr::LOG_PAGE.set(&mut img, u64::from(LOG_PAGE));
        ctx.command(Command::RegMr, Object::Mr(index), &img)
            .map_err(undo)?;
        let mr = Mr {
            pd: pd.clone(),
            index,
            key,
            iova,
            len,
            access,
            pages,
            mtt_start,
            _buf: buf,
            deregistered: false,
        };
        log::info!(
            target: &pd.ctx.log_target,
            "mr {index:#x}: registered in pd {:#x}: lkey {:#x}, iova {iova:#x}, {len} bytes, {npages} pages{}, {access:?}",
            pd.pdn,
            mr.lkey(),
            if opts.scramble.is_some() { " (scrambled)" } else { "" }
        );
        Ok(mr)
    }

    /// Local key (`index << 8 | key`).
    pub fn lkey(&self) -> u32 {
        (self.index << 8) | u32::from(self.key)
    }

    /// Remote key (same value as the lkey on this device).
    pub fn rkey(&self) -> u32 {
        self.lkey()
    }

    /// The region's start address (iova) as used in SGEs and remote addresses.
    pub fn addr(&self) -> u64 {
        self.iova
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the region is empty (never: registration needs at least one byte).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Access rights.
    pub fn access(&self) -> AccessFlags {
        self.access
    }

    /// PD number of the region.
    pub fn pdn(&self) -> u32 {
        self.pd.pdn
    }

    /// First MTT entry of the region.
    pub fn mtt_base(&self) -> u32 {
        self.mtt_start
    }

    /// Number of pages (MTT entries) of the region.
    pub fn num_pages(&self) -> usize {
        self.pages.len()
    }

    /// DMA address of MR page `i` (page `i` covers iova page `(iova >> 12) + i`).
    ///
    /// # Panics
    /// If `i >= num_pages()`.
    pub fn page_addr(&self, i: usize) -> u64 {
        self.pages[i]
    }

    /// An SGE covering `len` bytes at `offset` of the region.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] if the range is not inside the region.
    pub fn sge(&self, offset: u64, len: u32) -> Result<Sge> {
        self.check(offset, u64::from(len))?;
        Ok(Sge {
            addr: self.iova + offset,
            len,
            lkey: self.lkey(),
        })
    }

    /// An SGE covering the whole region (lengths above 4 GiB are truncated to the SGE field).
    pub fn sge_all(&self) -> Sge {
        Sge {
            addr: self.iova,
            len: self.len.min(u64::from(u32::MAX)) as u32,
            lkey: self.lkey(),
        }
    }

    fn check(&self, offset: u64, len: u64) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(Error::OutOfBounds {
                lkey: self.lkey(),
                offset,
                len,
                mr_len: self.len,
            }),
        }
    }

    /// Pieces `(dma address, range in the caller's buffer)` of `[offset, offset + len)`, split at
    /// page ends and translated like the device's MTT.
    fn pieces(&self, offset: u64, len: usize) -> Vec<(u64, std::ops::Range<usize>)> {
        let page_base = self.iova & !(PAGE_SIZE - 1);
        let mut out = Vec::new();
        let mut done = 0usize;
        while done < len {
            let va = self.iova + offset + done as u64;
            let in_page = va & (PAGE_SIZE - 1);
            let n = ((PAGE_SIZE - in_page) as usize).min(len - done);
            let page = ((va - page_base) >> LOG_PAGE) as usize;
            out.push((self.pages[page] + in_page, done..done + n));
            done += n;
        }
        out
    }

    /// Copy `data` into the region at `offset` (host-side access through the page list).
    ///
    /// # Errors
    /// [`Error::OutOfBounds`]; backend errors.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.check(offset, data.len() as u64)?;
        for (addr, r) in self.pieces(offset, data.len()) {
            self.pd.ctx.dma_write(addr, &data[r], "writing MR memory")?;
        }
        Ok(())
    }

    /// Copy region bytes at `offset` into `buf`.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`]; backend errors.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check(offset, buf.len() as u64)?;
        for (addr, r) in self.pieces(offset, buf.len()) {
            self.pd
                .ctx
                .dma_read(addr, &mut buf[r], "reading MR memory")?;
        }
        Ok(())
    }

    /// Read `len` bytes at `offset` into a new vector.
    ///
    /// # Errors
    /// As [`Mr::read`].
    pub fn read_vec(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0; len];
        self.read(offset, &mut v)?;
        Ok(v)
    }

    fn dereg_now(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.deregistered, true) {
            return Ok(());
        }
        let ctx = &self.pd.ctx;
        ctx.index_command(Command::DeregMr, Object::Mr(self.index), self.index)?;
        ctx.free_index(Resource::Mr, self.index);
        ctx.mtt
            .borrow_mut()
            .free(self.mtt_start, self.pages.len() as u32);
        log::info!(target: &self.pd.ctx.log_target, "mr {:#x}: deregistered (lkey {:#x})", self.index, self.lkey());
        Ok(())
    }

    /// Deregister now (dropping does the same but can only log failures).
    ///
    /// # Errors
    /// Command and backend errors; the index and MTT range are then leaked, not reused.
    pub fn deregister(mut self) -> Result<()> {
        self.dereg_now()
    }
}

impl Drop for Mr {
    fn drop(&mut self) {
        if let Err(e) = self.dereg_now() {
            log::error!(
                target: &self.pd.ctx.log_target,
                "mr {:#x}: deregistering on drop failed (index and MTT leaked): {e}",
                self.index
            );
        }
    }
}

/// Load `pages` into `MTT[start..]` through a DMA staging buffer, in chunks of MTT_WRITE_MAX.
fn write_mtt(ctx: &CtxInner, start: u32, pages: &[u64]) -> Result<()> {
    let max = params::MTT_WRITE_MAX as usize;
    let staging = DmaBuf::alloc(&ctx.dev, (pages.len().min(max) * 8) as u64, 8)?;
    for (i, chunk) in pages.chunks(max).enumerate() {
        let bytes: Vec<u8> = chunk.iter().flat_map(|p| p.to_le_bytes()).collect();
        ctx.dma_write(staging.iova(), &bytes, "writing the MTT staging buffer")?;
        let first = start + (i * max) as u32;
        let mut img = [0u8; CMD_IMAGE_SIZE];
        cmd_write_mtt::START.set(&mut img, u64::from(first));
        cmd_write_mtt::COUNT.set(&mut img, chunk.len() as u64);
        cmd_write_mtt::SRC.set(&mut img, staging.iova());
        ctx.command(
            Command::WriteMtt,
            Object::Mtt {
                start: first,
                count: chunk.len() as u32,
            },
            &img,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::permutation;

    #[test]
    fn permutation_is_a_non_identity_permutation() {
        for n in [2usize, 3, 5, 64, 600] {
            for seed in 0..4 {
                let mut p = permutation(n, seed);
                assert!(
                    p.iter().enumerate().any(|(i, v)| i != *v),
                    "n {n} seed {seed} identity"
                );
                p.sort_unstable();
                assert_eq!(p, (0..n).collect::<Vec<_>>());
            }
        }
        assert_eq!(permutation(1, 7), vec![0]);
        assert_eq!(permutation(40, 9), permutation(40, 9), "reproducible");
    }
}
