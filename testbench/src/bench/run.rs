// SPDX-License-Identifier: Apache-2.0
//! The perftest family on two linked NICs, timed in modelled cycles (`Fabric::cycle`).
//!
//! * BW tests (`write_bw`, `read_bw`, `send_bw`): each QP keeps `tx_depth` WQEs outstanding
//!   (perftest's tx-depth, 128), one doorbell per WQE, every `cq_mod`-th WQE and the last one
//!   signaled (perftest's CQ moderation, 100). The post cycle of every message and the cycle its
//!   completion was polled (an unsignaled message completes with the next signaled one) give the
//!   average and peak bandwidth ([`crate::bench::stats::bw_stats`]).
//! * Latency tests: one operation outstanding on QP 0. `send_lat`: A sends, B answers with a SEND
//!   as soon as its receive completes, A's sample ends when B's SEND is received. `write_lat`: A
//!   writes B's buffer, B polls the last byte of it and writes A's buffer back, A polls its last
//!   byte (perftest's `ib_write_lat`). Both report half the round trip. `read_lat`: one READ,
//!   from the post to its completion (the full round trip).
//!
//! The fabric is run `step_cycles` (default 1) cycles between two polls, so completions are seen
//! in the cycle they are written. Polling and posting take no modelled time (an infinitely fast
//! host CPU): the figures are the NIC's, its DMA latency and the wire's.

use std::time::{Duration, Instant};

use rnic_driver::{Mtu, RecvWr, SendWr, Sge, WcOpcode, WcStatus, WorkCompletion, WrOpcode};

use crate::fabric::{Backend, FabricConfig};
use crate::harness::{Pair, PairOptions};

/// One test of the perftest family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Test {
    /// `ib_write_bw`.
    WriteBw,
    /// `ib_read_bw`.
    ReadBw,
    /// `ib_send_bw`.
    SendBw,
    /// `ib_write_lat`.
    WriteLat,
    /// `ib_read_lat`.
    ReadLat,
    /// `ib_send_lat`.
    SendLat,
}

impl Test {
    /// Every test, in the order of a full run.
    pub const ALL: [Test; 6] = [Test::WriteBw, Test::ReadBw, Test::SendBw, Test::WriteLat, Test::ReadLat, Test::SendLat];

    /// perftest's name without the `ib_` prefix.
    pub fn name(self) -> &'static str {
        match self {
            Test::WriteBw => "write_bw",
            Test::ReadBw => "read_bw",
            Test::SendBw => "send_bw",
            Test::WriteLat => "write_lat",
            Test::ReadLat => "read_lat",
            Test::SendLat => "send_lat",
        }
    }

    /// A bandwidth test.
    pub fn is_bw(self) -> bool {
        matches!(self, Test::WriteBw | Test::ReadBw | Test::SendBw)
    }

    /// Bytes crossing the link per iteration, in units of the message size (a SEND / WRITE
    /// ping-pong moves the message both ways).
    pub fn size_factor(self) -> u64 {
        match self {
            Test::WriteLat | Test::SendLat => 2,
            _ => 1,
        }
    }

    /// Factor from the measured round trip to the reported latency: perftest reports half the
    /// round trip for SEND and WRITE, the full round trip for READ.
    pub fn lat_scale(self) -> f64 {
        match self {
            Test::WriteLat | Test::SendLat => 0.5,
            _ => 1.0,
        }
    }
}

impl std::str::FromStr for Test {
    type Err = String;
    fn from_str(s: &str) -> Result<Test, String> {
        let s = s.strip_prefix("ib_").unwrap_or(s);
        Test::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| format!("unknown test `{s}`: use write_bw, read_bw, send_bw, write_lat, read_lat or send_lat"))
    }
}

impl std::fmt::Display for Test {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Parameters of a benchmark fabric.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// NIC implementation.
    pub backend: Backend,
    /// Connected QP pairs (BW tests use all of them, latency tests QP 0).
    pub qps: usize,
    /// Path MTU.
    pub mtu: Mtu,
    /// Cycles from a DMA read request to its first completion beat.
    pub dma_latency: u64,
    /// One-way wire latency in cycles.
    pub link_delay: u64,
    /// Line rate of the link in Mb/s at the RTL's 250 MHz clock (0: no limit).
    pub link_mbps: u64,
    /// Outstanding WQEs per QP in BW tests (perftest `-t`, 128).
    pub tx_depth: u64,
    /// Receive WQEs kept posted per QP (perftest `-r`, 512).
    pub rx_depth: u64,
    /// Signal every `cq_mod`-th send WQE (and the last of a run); perftest `-Q`, 100.
    pub cq_mod: u64,
    /// Messages up to this size are sent inline in the WQE (perftest `-I`); `None`: as perftest,
    /// `MAX_INLINE` for the latency tests and 0 for the bandwidth tests.
    pub inline_size: Option<u64>,
    /// Cycles the fabric runs between two polls (1: completions are timed to the cycle).
    pub step_cycles: u64,
    /// Largest message size the fabric is set up for (buffer sizes).
    pub max_size: u64,
    /// PCIe function both endpoints run on: 0 = PF, n = VF n (then `n` VFs are enabled on each
    /// NIC with an even resource profile, so VF n gets 1/(n+1) of every table).
    pub func: u8,
}

impl Default for BenchConfig {
    fn default() -> BenchConfig {
        BenchConfig {
            backend: Backend::Rtl,
            qps: 1,
            mtu: Mtu::Mtu4096,
            dma_latency: 50,
            link_delay: 25,
            link_mbps: 100_000,
            tx_depth: 128,
            rx_depth: 512,
            cq_mod: 100,
            inline_size: None,
            step_cycles: 1,
            max_size: 8 << 20,
            func: 0,
        }
    }
}

/// What one point (test, size, iterations) produced, before statistics.
#[derive(Clone, Debug, Default)]
pub struct Raw {
    /// BW: cycle each message was posted, in posting order.
    pub posted: Vec<u64>,
    /// BW: cycle each completion was polled, in completion order.
    pub completed: Vec<u64>,
    /// Latency: round trip of each iteration in cycles.
    pub rtt: Vec<u64>,
    /// Fabric cycles the point took (setup of the point included).
    pub cycles: u64,
    /// Wall time of the point.
    pub wall: Duration,
    /// CPU time of the simulating thread during the point.
    pub cpu: Duration,
    /// Messages moved (every operation of the point, both directions for ping-pongs).
    pub messages: u64,
}

/// Bound on polls (loop turns) without any event before a point is declared hung.
const HANG_POLLS: u64 = 5_000_000;

/// Two connected NICs set up for the benchmark (one fabric for a whole run).
pub struct Bench {
    /// The endpoints and the fabric.
    pub pair: Pair,
    cfg: BenchConfig,
    /// Offset of the receive area in each MR (the send area is at 0).
    rbase: u64,
    wcs: Vec<WorkCompletion>,
}

impl std::fmt::Debug for Bench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bench").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

fn de(what: &'static str) -> impl Fn(rnic_driver::Error) -> String {
    move |e| format!("{what}: {e}")
}

impl Bench {
    /// Build the fabric and connect `cfg.qps` QP pairs; each side registers one buffer of twice
    /// `cfg.max_size` (a send area and a receive area).
    ///
    /// # Errors
    /// A setup step failed.
    pub fn new(cfg: &BenchConfig) -> Result<Bench, String> {
        let rbase = cfg.max_size.max(4096).next_multiple_of(4096);
        let mut o = PairOptions::on(cfg.backend);
        o.qps = cfg.qps.max(1);
        o.mtu = cfg.mtu;
        o.mr_len = 2 * rbase;
        o.depth = (cfg.tx_depth.max(cfg.rx_depth).max(cfg.cq_mod + 1) as u32).next_power_of_two();
        o.cq_depth = (u64::from(o.depth) * 2 * o.qps as u64).next_power_of_two().min(1 << 16) as u32;
        o.fabric = FabricConfig {
            backend: cfg.backend,
            nics: 2,
            link_delay: cfg.link_delay,
            dma_read_latency: cfg.dma_latency,
            link_mbps: cfg.link_mbps,
            // A VF endpoint gets 1 / (VFs + 1) of the host memory as its DMA window.
            host_mem_bytes: ((4 * rbase + (32 << 20)).max(64 << 20) * (u64::from(cfg.func) + 1)) as usize,
            progress_cycles: cfg.step_cycles.max(1),
            ..FabricConfig::default()
        };
        o.funcs = [cfg.func, cfg.func];
        o.vfs = u16::from(cfg.func.max(1));
        let pair = Pair::new(&o)?;
        Ok(Bench { pair, cfg: cfg.clone(), rbase, wcs: vec![WorkCompletion::default(); 256] })
    }

    /// Current fabric cycle.
    pub fn now(&self) -> u64 {
        self.pair.fabric.borrow().cycle()
    }

    /// The send WR of `sge` on side A (or B): inline when the message fits the test's inline
    /// size (the bytes are copied from the buffer at post time, as a verbs provider does).
    fn send_wr(&self, on_b: bool, id: u64, op: WrOpcode, sge: Sge, lat: bool) -> Result<SendWr, String> {
        let limit = self.cfg.inline_size.unwrap_or(if lat { rnic_regs::params::MAX_INLINE } else { 0 });
        let payload = matches!(op, WrOpcode::Send | WrOpcode::SendWithImm(_) | WrOpcode::Write { .. } | WrOpcode::WriteWithImm { .. });
        if !payload || u64::from(sge.len) > limit {
            return Ok(SendWr::new(id, op, vec![sge]));
        }
        let mr = if on_b { &self.pair.b.mr } else { &self.pair.a.mr };
        let data = mr.read_vec(sge.addr - mr.addr(), sge.len as usize).map_err(de("read inline data"))?;
        Ok(SendWr::inline(id, op, &data))
    }

    fn step(&self) -> Result<(), String> {
        self.pair.fabric.borrow_mut().run_cycles(self.cfg.step_cycles.max(1)).map_err(|e| e.to_string())
    }

    /// Lockstep: run until nothing is in flight and compare the host memories.
    ///
    /// # Errors
    /// A mismatch.
    pub fn settle(&self) -> Result<(), String> {
        self.pair.settle()
    }

    /// Poll side `b` (false: A, true: B) and return the completions (all successful).
    fn poll(&mut self, b: bool) -> Result<Vec<WorkCompletion>, String> {
        let ep = if b { &self.pair.b } else { &self.pair.a };
        let n = ep.cq.poll(&mut self.wcs).map_err(de("poll_cq"))?;
        let got = self.wcs[..n].to_vec();
        for wc in &got {
            if wc.status != WcStatus::Success {
                return Err(format!("NIC {}: completion failed: {wc:?}", u8::from(b)));
            }
        }
        Ok(got)
    }

    fn check_size(&self, size: u64) -> Result<u32, String> {
        if size == 0 || size > self.cfg.max_size {
            return Err(format!("message size {size} outside 1..={} (the buffers' size)", self.cfg.max_size));
        }
        u32::try_from(size).map_err(|_| format!("message size {size} too large"))
    }

    /// Run one point of `test` with messages of `size` bytes, `iters` iterations (per QP for
    /// BW tests).
    ///
    /// # Errors
    /// A completion with an error, a hang, or a simulation failure.
    pub fn run(&mut self, test: Test, size: u64, iters: u64) -> Result<Raw, String> {
        let len = self.check_size(size)?;
        let iters = iters.max(1);
        let (c0, t0, cpu0) = (self.now(), Instant::now(), crate::rtl::ffi::thread_cpu_ns());
        let mut raw = match test {
            Test::WriteBw | Test::ReadBw | Test::SendBw => self.run_bw(test, len, iters)?,
            Test::ReadLat => self.run_read_lat(len, iters)?,
            Test::SendLat => self.run_send_lat(len, iters)?,
            Test::WriteLat => self.run_write_lat(len, iters)?,
        };
        raw.cycles = self.now() - c0;
        raw.wall = t0.elapsed();
        raw.cpu = Duration::from_nanos(crate::rtl::ffi::thread_cpu_ns().saturating_sub(cpu0));
        Ok(raw)
    }

    #[allow(clippy::needless_range_loop)] // per-QP counters indexed alongside the QPs
    fn run_bw(&mut self, test: Test, len: u32, iters: u64) -> Result<Raw, String> {
        let nq = self.pair.a.qps.len();
        let (a_mr, b_mr) = (&self.pair.a.mr, &self.pair.b.mr);
        let op = match test {
            Test::WriteBw => WrOpcode::Write { remote_addr: b_mr.addr() + self.rbase, rkey: b_mr.rkey() },
            Test::ReadBw => WrOpcode::Read { remote_addr: b_mr.addr(), rkey: b_mr.rkey() },
            _ => WrOpcode::Send,
        };
        // READ lands in the receive area; WRITE and SEND read the send area.
        let local = if test == Test::ReadBw { a_mr.sge(self.rbase, len) } else { a_mr.sge(0, len) }.map_err(de("sge"))?;
        let recv_sge = b_mr.sge(self.rbase, len).map_err(de("recv sge"))?;
        let mut posted = vec![0u64; nq];
        let mut done = vec![0u64; nq];
        let mut rx_posted = vec![0u64; nq];
        let mut received = 0u64;
        let mut raw = Raw { posted: Vec::with_capacity((iters as usize) * nq), completed: Vec::with_capacity((iters as usize) * nq), ..Raw::default() };
        if test == Test::SendBw {
            for q in 0..nq {
                while rx_posted[q] < iters.min(self.cfg.rx_depth) {
                    self.pair.b.qps[q].post_recv(&RecvWr { wr_id: rx_posted[q], sgl: vec![recv_sge] }).map_err(de("post_recv"))?;
                    rx_posted[q] += 1;
                }
            }
        }
        let mut idle = 0u64;
        loop {
            let now = self.now();
            for q in 0..nq {
                while posted[q] < iters && posted[q] - done[q] < self.cfg.tx_depth {
                    let k = posted[q];
                    let signaled = (k + 1).is_multiple_of(self.cfg.cq_mod.max(1)) || k + 1 == iters;
                    let wr = self.send_wr(false, ((q as u64) << 32) | k, op, local, false)?.with_signaled(signaled);
                    self.pair.a.qps[q].post_send(&wr).map_err(de("post_send"))?;
                    raw.posted.push(now);
                    posted[q] += 1;
                }
            }
            self.step()?;
            let now = self.now();
            let mut moved = false;
            for wc in self.poll(false)? {
                let (q, k) = ((wc.wr_id >> 32) as usize, wc.wr_id & 0xFFFF_FFFF);
                if q >= nq || k < done[q] || k >= posted[q] {
                    return Err(format!("unexpected completion {wc:?}"));
                }
                for _ in done[q]..=k {
                    raw.completed.push(now);
                }
                done[q] = k + 1;
                moved = true;
            }
            if test == Test::SendBw {
                for wc in self.poll(true)? {
                    if wc.opcode != WcOpcode::Recv || wc.byte_len != len {
                        return Err(format!("receiver: unexpected completion {wc:?}"));
                    }
                    let q = self.pair.b.qps.iter().position(|qp| qp.qpn() == wc.qpn).ok_or("receive on an unknown QP")?;
                    received += 1;
                    if rx_posted[q] < iters {
                        self.pair.b.qps[q].post_recv(&RecvWr { wr_id: rx_posted[q], sgl: vec![recv_sge] }).map_err(de("post_recv"))?;
                        rx_posted[q] += 1;
                    }
                    moved = true;
                }
            }
            // (SEND: the receiver's completions too, so the next point starts with an empty RQ)
            if done.iter().all(|&d| d == iters) && (test != Test::SendBw || received == iters * nq as u64) {
                break;
            }
            idle = if moved { 0 } else { idle + 1 };
            if idle > HANG_POLLS {
                return Err(format!("{test}: no completion for {HANG_POLLS} polls (posted {posted:?}, completed {done:?})"));
            }
        }
        raw.messages = iters * nq as u64;
        Ok(raw)
    }

    fn run_read_lat(&mut self, len: u32, iters: u64) -> Result<Raw, String> {
        let b_mr = &self.pair.b.mr;
        let op = WrOpcode::Read { remote_addr: b_mr.addr(), rkey: b_mr.rkey() };
        let local = self.pair.a.mr.sge(self.rbase, len).map_err(de("sge"))?;
        let mut raw = Raw { rtt: Vec::with_capacity(iters as usize), ..Raw::default() };
        for i in 0..iters {
            let t0 = self.now();
            self.pair.a.qps[0].post_send(&SendWr::new(i, op, vec![local])).map_err(de("post_send"))?;
            let mut polls = 0u64;
            loop {
                self.step()?;
                let wcs = self.poll(false)?;
                if wcs.iter().any(|wc| wc.wr_id == i && wc.opcode == WcOpcode::RdmaRead) {
                    break;
                }
                polls += 1;
                if polls > HANG_POLLS {
                    return Err(format!("read_lat: iteration {i} did not complete"));
                }
            }
            raw.rtt.push(self.now() - t0);
        }
        raw.messages = iters;
        Ok(raw)
    }

    fn run_send_lat(&mut self, len: u32, iters: u64) -> Result<Raw, String> {
        let qa = self.pair.a.qps[0].qpn();
        let a_send = self.pair.a.mr.sge(0, len).map_err(de("sge"))?;
        let a_recv = self.pair.a.mr.sge(self.rbase, len).map_err(de("sge"))?;
        let b_send = self.pair.b.mr.sge(0, len).map_err(de("sge"))?;
        let b_recv = self.pair.b.mr.sge(self.rbase, len).map_err(de("sge"))?;
        let prepost = iters.min(self.cfg.rx_depth);
        let (mut a_rx, mut b_rx) = (0u64, 0u64);
        while a_rx < prepost {
            self.pair.a.qps[0].post_recv(&RecvWr { wr_id: a_rx, sgl: vec![a_recv] }).map_err(de("post_recv"))?;
            self.pair.b.qps[0].post_recv(&RecvWr { wr_id: b_rx, sgl: vec![b_recv] }).map_err(de("post_recv"))?;
            a_rx += 1;
            b_rx += 1;
        }
        let cq_mod = self.cfg.cq_mod.max(1);
        let signaled = move |i: u64| (i + 1).is_multiple_of(cq_mod) || i + 1 == iters;
        let mut raw = Raw { rtt: Vec::with_capacity(iters as usize), ..Raw::default() };
        // Signaled SEND completions still to come on each side (drained before returning).
        let (mut a_sig, mut b_sig) = (0u64, 0u64);
        for i in 0..iters {
            let t0 = self.now();
            let wr = self.send_wr(false, i, WrOpcode::Send, a_send, true)?.with_signaled(signaled(i));
            self.pair.a.qps[0].post_send(&wr).map_err(de("post_send"))?;
            a_sig += u64::from(signaled(i));
            let mut polls = 0u64;
            'iter: loop {
                self.step()?;
                for wc in self.poll(true)? {
                    match wc.opcode {
                        WcOpcode::Recv => {
                            let wr = self.send_wr(true, i, WrOpcode::Send, b_send, true)?.with_signaled(signaled(i));
                            self.pair.b.qps[0].post_send(&wr).map_err(de("post_send"))?;
                            b_sig += u64::from(signaled(i));
                            if b_rx < iters {
                                self.pair.b.qps[0].post_recv(&RecvWr { wr_id: b_rx, sgl: vec![b_recv] }).map_err(de("post_recv"))?;
                                b_rx += 1;
                            }
                        }
                        _ => b_sig = b_sig.saturating_sub(1),
                    }
                }
                let mut pong = false;
                for wc in self.poll(false)? {
                    match wc.opcode {
                        WcOpcode::Recv if wc.qpn == qa => pong = true,
                        _ => a_sig = a_sig.saturating_sub(1),
                    }
                }
                if pong {
                    break 'iter;
                }
                polls += 1;
                if polls > HANG_POLLS {
                    return Err(format!("send_lat: iteration {i} did not complete"));
                }
            }
            raw.rtt.push(self.now() - t0);
            if a_rx < iters {
                self.pair.a.qps[0].post_recv(&RecvWr { wr_id: a_rx, sgl: vec![a_recv] }).map_err(de("post_recv"))?;
                a_rx += 1;
            }
        }
        self.drain(a_sig, b_sig)?;
        raw.messages = 2 * iters;
        Ok(raw)
    }

    fn run_write_lat(&mut self, len: u32, iters: u64) -> Result<Raw, String> {
        let size = u64::from(len);
        let (a_mr, b_mr) = (&self.pair.a.mr, &self.pair.b.mr);
        let to_b = WrOpcode::Write { remote_addr: b_mr.addr() + self.rbase, rkey: b_mr.rkey() };
        let to_a = WrOpcode::Write { remote_addr: a_mr.addr() + self.rbase, rkey: a_mr.rkey() };
        let a_send = a_mr.sge(0, len).map_err(de("sge"))?;
        let b_send = b_mr.sge(0, len).map_err(de("sge"))?;
        let last = self.rbase + size - 1;
        // The receive areas' last bytes start at 0; every iteration writes a non-zero marker that
        // differs from the previous iteration's.
        a_mr.write(last, &[0]).map_err(de("mr write"))?;
        b_mr.write(last, &[0]).map_err(de("mr write"))?;
        let cq_mod = self.cfg.cq_mod.max(1);
        let signaled = move |i: u64| (i + 1).is_multiple_of(cq_mod) || i + 1 == iters;
        let mut raw = Raw { rtt: Vec::with_capacity(iters as usize), ..Raw::default() };
        let (mut a_sig, mut b_sig) = (0u64, 0u64);
        let mut byte = [0u8];
        for i in 0..iters {
            let marker = (i % 255 + 1) as u8;
            self.pair.a.mr.write(size - 1, &[marker]).map_err(de("mr write"))?;
            let t0 = self.now();
            let wr = self.send_wr(false, i, to_b, a_send, true)?.with_signaled(signaled(i));
            self.pair.a.qps[0].post_send(&wr).map_err(de("post_send"))?;
            a_sig += u64::from(signaled(i));
            let (mut b_seen, mut polls) = (false, 0u64);
            loop {
                self.step()?;
                a_sig = a_sig.saturating_sub(self.poll(false)?.len() as u64);
                b_sig = b_sig.saturating_sub(self.poll(true)?.len() as u64);
                if !b_seen {
                    self.pair.b.mr.read(last, &mut byte).map_err(de("mr read"))?;
                    if byte[0] == marker {
                        b_seen = true;
                        self.pair.b.mr.write(size - 1, &[marker]).map_err(de("mr write"))?;
                        let wr = self.send_wr(true, i, to_a, b_send, true)?.with_signaled(signaled(i));
                        self.pair.b.qps[0].post_send(&wr).map_err(de("post_send"))?;
                        b_sig += u64::from(signaled(i));
                    }
                } else {
                    self.pair.a.mr.read(last, &mut byte).map_err(de("mr read"))?;
                    if byte[0] == marker {
                        break;
                    }
                }
                polls += 1;
                if polls > HANG_POLLS {
                    return Err(format!("write_lat: iteration {i} did not complete (B saw it: {b_seen})"));
                }
            }
            raw.rtt.push(self.now() - t0);
        }
        self.drain(a_sig, b_sig)?;
        raw.messages = 2 * iters;
        Ok(raw)
    }

    /// Poll until `a` more completions arrived on A and `b` on B.
    fn drain(&mut self, mut a: u64, mut b: u64) -> Result<(), String> {
        let mut polls = 0u64;
        while a > 0 || b > 0 {
            self.step()?;
            a = a.saturating_sub(self.poll(false)?.len() as u64);
            b = b.saturating_sub(self.poll(true)?.len() as u64);
            polls += 1;
            if polls > HANG_POLLS {
                return Err(format!("{a} / {b} signaled completions never arrived"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_names_parse() {
        for t in Test::ALL {
            assert_eq!(t.name().parse::<Test>(), Ok(t));
            assert_eq!(format!("ib_{t}").parse::<Test>(), Ok(t));
        }
        assert!("write".parse::<Test>().is_err());
        assert_eq!(Test::ALL.iter().filter(|t| t.is_bw()).count(), 3);
        assert_eq!((Test::WriteLat.lat_scale(), Test::ReadLat.lat_scale()), (0.5, 1.0));
        assert_eq!((Test::SendLat.size_factor(), Test::ReadLat.size_factor()), (2, 1));
    }

    /// Every test's loop on the model backend (no clock, so no timing is checked): the right
    /// number of samples, messages and completions, with two QPs and a CQ moderation that does
    /// not divide the iteration count.
    #[test]
    fn every_test_runs_on_the_model() {
        let cfg = BenchConfig { backend: Backend::Model, qps: 2, max_size: 8192, cq_mod: 3, tx_depth: 4, rx_depth: 4, ..BenchConfig::default() };
        let mut b = Bench::new(&cfg).unwrap();
        for t in Test::ALL {
            for size in [2, 5000] {
                let raw = b.run(t, size, 7).unwrap_or_else(|e| panic!("{t} {size}: {e}"));
                if t.is_bw() {
                    assert_eq!((raw.posted.len(), raw.completed.len(), raw.messages), (14, 14, 14), "{t}");
                    assert!(raw.rtt.is_empty());
                } else {
                    assert_eq!(raw.rtt.len(), 7, "{t}");
                    assert_eq!(raw.messages, 7 * t.size_factor(), "{t}");
                }
            }
        }
        assert!(b.run(Test::WriteBw, 8193, 1).is_err(), "larger than the buffers");
        b.settle().unwrap();
    }
}
