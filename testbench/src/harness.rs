// SPDX-License-Identifier: Apache-2.0
//! Ready-made setups for tests, the demo and examples: two NICs on a fabric, each with a driver
//! context, a PD, a CQ, a registered buffer and N connected RC queue pairs.

use std::net::Ipv4Addr;

use rnic_driver::{
    AccessFlags, Context, Cq, Mr, Mtu, Pd, QpInitAttr, QueuePair, RtrAttr, RtsAttr, VfProfile,
    WorkCompletion,
};

use crate::fabric::{Backend, Fabric, FabricConfig, FabricRef};

/// MAC address of NIC `i` (locally administered).
pub fn nic_mac(i: usize) -> [u8; 6] {
    [0x02, 0x00, 0x00, 0x00, 0x00, 0x10 + i as u8]
}

/// IPv4 address of NIC `i`.
pub fn nic_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 1 + i as u8)
}

/// MAC address of function `f` of NIC `i` (the PF's is [`nic_mac`]).
pub fn func_mac(i: usize, f: u8) -> [u8; 6] {
    [0x02, 0x00, 0x00, f, 0x00, 0x10 + i as u8]
}

/// IPv4 address of function `f` of NIC `i` (the PF's is [`nic_ip`]).
pub fn func_ip(i: usize, f: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, f, 0, 1 + i as u8)
}

/// Enable `vfs` VFs on NIC `nic` the way a PF driver does: an even VF resource profile, each VF's
/// MAC/IP ([`func_mac`], [`func_ip`]; untrusted, spoof-checked) and DMA window (an equal,
/// 64 KiB-aligned slice of the free host memory, [`Fabric::dma_window`]; the PF keeps one slice),
/// then VF Enable. Returns the PF's context.
///
/// # Errors
/// Any step failed; the message names it.
pub fn enable_vfs(fabric: &FabricRef, nic: usize, vfs: u16) -> HarnessResult<Context> {
    let pf = Context::open(Fabric::device(fabric, nic, 0)).map_err(|e| format!("NIC {nic}: open PF: {e}"))?;
    pf.set_port(nic_mac(nic), nic_ip(nic)).map_err(|e| format!("NIC {nic}: PF set_port: {e}"))?;
    let p = VfProfile::even(&pf.caps(), vfs);
    pf.set_vf_resources(vfs, p).map_err(|e| format!("NIC {nic}: set_vf_resources: {e}"))?;
    // Each VF gets an equal slice of the host memory that is still free (the PF keeps one
    // share) as its DMA window; its driver's allocations come from there.
    let slice = (fabric.borrow_mut().dma_free_bytes(nic) / (u64::from(vfs) + 1)) & !0xFFFF;
    for f in 1..=vfs as u8 {
        pf.set_vf_port(f, func_mac(nic, f), func_ip(nic, f), false, true)
            .map_err(|e| format!("NIC {nic}: set_vf_port {f}: {e}"))?;
        let (base, len) = fabric.borrow_mut().dma_window(nic, f, slice).map_err(|e| format!("NIC {nic}: VF {f} DMA window of {slice} bytes: {e}"))?;
        pf.set_vf_dma(f, base, len).map_err(|e| format!("NIC {nic}: set_vf_dma {f}: {e}"))?;
    }
    pf.enable_vfs(vfs).map_err(|e| format!("NIC {nic}: enable_vfs: {e}"))?;
    Ok(pf)
}

/// Options of a [`Pair`].
#[derive(Clone, Debug)]
pub struct PairOptions {
    /// Number of connected QP pairs.
    pub qps: usize,
    /// Path MTU of every QP.
    pub mtu: Mtu,
    /// Bytes of the registered buffer on each side.
    pub mr_len: u64,
    /// Register the buffer with its pages in a scrambled DMA order (exercises translation).
    pub scrambled: bool,
    /// Send/receive queue depth.
    pub depth: u32,
    /// CQ depth.
    pub cq_depth: u32,
    /// Access flags of the QPs and the buffer.
    pub access: AccessFlags,
    /// RNR retry count (7 = infinite).
    pub rnr_retry: u8,
    /// Retry count for PSN-sequence NAKs and local ACK timeouts.
    pub retry_cnt: u8,
    /// Local ACK timeout code: 4.096 us x 2^timeout (0 = none). The default, 14 (67 ms), never
    /// fires in a loss-free run; fault tests use 3..6.
    pub timeout: u8,
    /// RNR timer code the responder sends in its RNR NAKs (IBTA table 45; 1 = 10 us).
    pub min_rnr_timer: u8,
    /// Function each side's endpoint runs on (0 = PF; n = VF n, after enabling `vfs` VFs).
    pub funcs: [u8; 2],
    /// VFs enabled on a NIC whose endpoint runs on a VF.
    pub vfs: u16,
    /// NIC of each side's endpoint: `[0, 1]` (default) links two NICs; `[0, 0]` puts both on
    /// NIC 0, so their traffic goes through its embedded switch (then `funcs` must differ).
    pub nics: [usize; 2],
    /// Fabric configuration (backend, link delay, capture).
    pub fabric: FabricConfig,
}

impl Default for PairOptions {
    fn default() -> PairOptions {
        PairOptions {
            qps: 1,
            mtu: Mtu::Mtu1024,
            mr_len: 1 << 16,
            scrambled: false,
            depth: 64,
            cq_depth: 256,
            access: AccessFlags::LOCAL_WRITE
                | AccessFlags::REMOTE_WRITE
                | AccessFlags::REMOTE_READ
                | AccessFlags::REMOTE_ATOMIC,
            rnr_retry: 7,
            retry_cnt: 7,
            timeout: 14,
            min_rnr_timer: 1,
            funcs: [0, 0],
            vfs: rnic_regs::params::NUM_VF as u16,
            nics: [0, 1],
            fabric: FabricConfig::default(),
        }
    }
}

impl PairOptions {
    /// Default options on `backend`.
    pub fn on(backend: Backend) -> PairOptions {
        let mut o = PairOptions::default();
        o.fabric.backend = backend;
        o
    }
}

/// One side of a [`Pair`].
pub struct Endpoint {
    /// Driver context of the NIC's PF.
    pub ctx: Context,
    /// Protection domain.
    pub pd: Pd,
    /// CQ for sends and receives of every QP.
    pub cq: Cq,
    /// Registered buffer.
    pub mr: Mr,
    /// Connected QPs; `qps[i]` talks to the peer's `qps[i]`.
    pub qps: Vec<QueuePair>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").field("qps", &self.qps.len()).finish()
    }
}

/// Two NICs linked back to back with connected QPs.
#[derive(Debug)]
pub struct Pair {
    /// The fabric (for counters, captures, lockstep checks).
    pub fabric: FabricRef,
    /// NIC 0.
    pub a: Endpoint,
    /// NIC 1.
    pub b: Endpoint,
}

/// Errors of the harness: the driver's, with what was being set up.
pub type HarnessResult<T> = Result<T, String>;

/// Side `side`'s endpoint: function `o.funcs[side]` of NIC `o.nics[side]`. `pf` is the PF
/// context of that NIC if the other side already opened it (one context per function).
fn open(fabric: &FabricRef, side: usize, o: &PairOptions, pf: &mut Option<Context>) -> HarnessResult<(Context, Pd, Cq, Mr)> {
    let (i, f) = (o.nics[side], o.funcs[side]);
    let same_nic = o.nics[0] == o.nics[1];
    if pf.is_none() {
        *pf = Some(if f != 0 || (same_nic && o.funcs[1 - side] != 0) {
            enable_vfs(fabric, i, o.vfs)?
        } else {
            let ctx = Context::open(Fabric::device(fabric, i, 0)).map_err(|e| format!("NIC {i}: open: {e}"))?;
            ctx.set_port(nic_mac(i), nic_ip(i)).map_err(|e| format!("NIC {i}: set_port: {e}"))?;
            ctx
        });
    }
    let ctx = if f == 0 {
        pf.clone().expect("opened above")
    } else {
        Context::open(Fabric::device(fabric, i, f)).map_err(|e| format!("NIC {i}: open VF {f}: {e}"))?
    };
    let pd = ctx.alloc_pd().map_err(|e| format!("NIC {i}: alloc_pd: {e}"))?;
    let cq = ctx.create_cq(o.cq_depth).map_err(|e| format!("NIC {i}: create_cq: {e}"))?;
    let mr = if o.scrambled {
        pd.reg_mr_scrambled(o.mr_len, o.access, 0x5eed + i as u64)
    } else {
        pd.reg_mr(o.mr_len, o.access)
    }
    .map_err(|e| format!("NIC {i}: reg_mr: {e}"))?;
    Ok((ctx, pd, cq, mr))
}

impl Pair {
    /// Build the fabric, open both NICs and connect `o.qps` QP pairs (RESET→INIT→RTR→RTS).
    ///
    /// # Errors
    /// Any setup step failed; the message names it.
    pub fn new(o: &PairOptions) -> HarnessResult<Pair> {
        let fabric = Fabric::new(o.fabric.clone()).map_err(|e| e.to_string())?;
        if o.nics == [o.nics[0]; 2] && o.funcs[0] == o.funcs[1] {
            return Err(format!("both endpoints on function {} of NIC {}: give them different functions", o.funcs[0], o.nics[0]));
        }
        let mut pf = None;
        let (actx, apd, acq, amr) = open(&fabric, 0, o, &mut pf)?;
        if o.nics[0] != o.nics[1] {
            pf = None;
        }
        let (bctx, bpd, bcq, bmr) = open(&fabric, 1, o, &mut pf)?;
        let mut aq = Vec::new();
        let mut bq = Vec::new();
        for _ in 0..o.qps {
            let attr = |cq| QpInitAttr { send_cq: cq, recv_cq: cq, max_send_wr: o.depth, max_recv_wr: o.depth };
            aq.push(apd.create_qp(&attr(&acq)).map_err(|e| format!("NIC 0: create_qp: {e}"))?);
            bq.push(bpd.create_qp(&attr(&bcq)).map_err(|e| format!("NIC 1: create_qp: {e}"))?);
        }
        for (k, (qa, qb)) in aq.iter().zip(&bq).enumerate() {
            // Distinct, non-trivial PSNs per QP so PSN handling is really exercised.
            let psn_a = (0x10_0000 + 0x1357 * k as u32) & 0xFF_FFFF;
            let psn_b = (0xFF_FF00 + 0x2468 * k as u32) & 0xFF_FFFF;
            connect(qa, qb.qpn(), o.nics[1], o.funcs[1], psn_b, psn_a, o)?;
            connect(qb, qa.qpn(), o.nics[0], o.funcs[0], psn_a, psn_b, o)?;
        }
        Ok(Pair {
            fabric,
            a: Endpoint { ctx: actx, pd: apd, cq: acq, mr: amr, qps: aq },
            b: Endpoint { ctx: bctx, pd: bpd, cq: bcq, mr: bmr, qps: bq },
        })
    }

    /// Wait for `n` completions on `ep`'s CQ.
    ///
    /// # Errors
    /// Timeout or simulation failure.
    pub fn wait(ep: &Endpoint, n: usize) -> HarnessResult<Vec<WorkCompletion>> {
        ep.cq.wait(n, 200_000).map_err(|e| format!("waiting for {n} completions: {e}"))
    }

    /// Run the fabric until nothing is in flight, then (lockstep) check that the model has no
    /// prediction left and that both host memories are identical.
    ///
    /// # Errors
    /// A mismatch.
    pub fn settle(&self) -> HarnessResult<()> {
        let mut f = self.fabric.borrow_mut();
        f.check_drained().map_err(|e| e.to_string())?;
        f.check_memories().map_err(|e| e.to_string())
    }
}

#[allow(clippy::too_many_arguments)]
fn connect(qp: &QueuePair, dest_qpn: u32, peer: usize, peer_func: u8, rq_psn: u32, sq_psn: u32, o: &PairOptions) -> HarnessResult<()> {
    let err = |what: &str, e: rnic_driver::Error| format!("QP {:#x}: {what}: {e}", qp.qpn());
    qp.to_init(o.access).map_err(|e| err("to_init", e))?;
    qp.to_rtr(&RtrAttr {
        dest_qpn,
        rq_psn,
        path_mtu: o.mtu,
        dest_mac: func_mac(peer, peer_func),
        dest_ip: func_ip(peer, peer_func),
        max_dest_rd_atomic: 16,
        min_rnr_timer: o.min_rnr_timer,
    })
    .map_err(|e| err("to_rtr", e))?;
    qp.to_rts(&RtsAttr {
        sq_psn,
        timeout: o.timeout,
        retry_cnt: o.retry_cnt,
        rnr_retry: o.rnr_retry,
        max_rd_atomic: 16,
    })
        .map_err(|e| err("to_rts", e))
}
