// SPDX-License-Identifier: Apache-2.0
//! A fabric of simulated NICs on one link, and the three driver backends over it.
//!
//! * [`Backend::Model`]: each NIC is the reference model alone (transaction level, no clock).
//! * [`Backend::Rtl`]: each NIC is the Verilated RTL with its host memory and DMA model.
//! * [`Backend::Lockstep`]: each NIC is the RTL with the model following it through a
//!   [`Checker`]; the first mismatch stops the fabric and is returned by every later call.
//!
//! [`Fabric::device`] hands out [`SimDevice`]s — one per (NIC, function) — that implement the
//! driver's [`Device`] trait, so the same driver code runs on every backend.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;

use rnic_driver::{Device, DeviceError};
use rnic_model::{Nic, NicConfig, Output, Task};

use crate::hostmem::HostMem;
use crate::link::{ExternalPort, FaultHook, Link, NoFaults};
use crate::lockstep::{Checker, Mismatch, Observed};
use crate::pcap::Capture;
use crate::rtl::RtlNic;

/// Which implementation of the NIC runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The reference model alone.
    Model,
    /// The Verilated RTL alone.
    Rtl,
    /// RTL and model in lockstep.
    Lockstep,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Backend, String> {
        match s {
            "model" => Ok(Backend::Model),
            "rtl" => Ok(Backend::Rtl),
            "lockstep" => Ok(Backend::Lockstep),
            _ => Err(format!("unknown backend `{s}`: use model, rtl or lockstep")),
        }
    }
}

impl Backend {
    /// The backend named by `RNIC_BACKEND` (model, rtl, lockstep), or `default`.
    pub fn from_env(default: Backend) -> Backend {
        std::env::var("RNIC_BACKEND").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
    }
}

/// Fabric parameters.
#[derive(Clone, Debug)]
pub struct FabricConfig {
    /// Implementation of every NIC.
    pub backend: Backend,
    /// Number of NICs (pairs are linked back to back: 0-1, 2-3, ...).
    pub nics: usize,
    /// One-way wire latency in cycles (default 25 = 100 ns at 250 MHz).
    pub link_delay: u64,
    /// RTL backends: cycles from a DMA read request to its first completion beat (default 50 =
    /// 200 ns at 250 MHz; [`crate::rtl::RtlConfig::dma_read_latency`]).
    pub dma_read_latency: u64,
    /// RTL backends: line rate of each NIC's uplink in Mb/s (default 100,000; 0 = no limit;
    /// [`crate::rtl::RtlConfig::link_mbps`]).
    pub link_mbps: u64,
    /// RTL backends: `Some(seed)` completes DMA reads of different tags out of order
    /// ([`crate::rtl::RtlConfig::dma_reorder_seed`]); `None` (default): in request order.
    pub dma_reorder_seed: Option<u64>,
    /// Host memory per NIC in bytes.
    pub host_mem_bytes: usize,
    /// Write every frame on the link to this pcap file.
    pub capture: Option<PathBuf>,
    /// Clock cycles one [`Device::progress`] call runs (RTL backends).
    pub progress_cycles: u64,
    /// Model sizes.
    pub model: NicConfig,
}

impl Default for FabricConfig {
    fn default() -> FabricConfig {
        FabricConfig {
            backend: Backend::Lockstep,
            nics: 2,
            link_delay: 25,
            dma_read_latency: crate::rtl::RtlConfig::default().dma_read_latency,
            link_mbps: crate::rtl::RtlConfig::default().link_mbps,
            dma_reorder_seed: None,
            host_mem_bytes: 64 << 20,
            capture: std::env::var_os("RNIC_PCAP").map(PathBuf::from),
            progress_cycles: 1000,
            model: NicConfig::default(),
        }
    }
}

/// Errors of the fabric.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// RTL and model diverged.
    #[error("{0}")]
    Mismatch(Box<Mismatch>),
    /// The RTL simulation failed (assertion, DMA fault, hang).
    #[error("RTL simulation of NIC {nic} failed: {msg}")]
    Rtl {
        /// NIC index.
        nic: usize,
        /// What happened.
        msg: String,
    },
    /// The model failed (a DMA outside host memory, a task it could not run).
    #[error("model of NIC {nic} failed: {msg}")]
    Model {
        /// NIC index.
        nic: usize,
        /// What happened.
        msg: String,
    },
    /// A resource could not be created.
    #[error("fabric setup failed: {0}")]
    Setup(String),
}

impl From<SimError> for DeviceError {
    fn from(e: SimError) -> DeviceError {
        DeviceError::Simulation(e.to_string())
    }
}

enum Slot {
    Model { nic: Box<Nic>, mem: HostMem },
    Rtl { rtl: Box<RtlNic> },
    Lockstep { rtl: Box<RtlNic>, chk: Box<Checker<HostMem>> },
}

/// NICs on links, the clock that drives them, and the observers (capture, lockstep).
pub struct Fabric {
    cfg: FabricConfig,
    slots: Vec<Slot>,
    link: Link,
    capture: Option<Capture>,
    irqs: HashMap<(usize, u8), VecDeque<u16>>,
    failed: Option<String>,
    cycle: u64,
    events: Vec<(u64, Observed)>,
    /// NIC 0's wire when it leaves the simulator (`with_external_port`).
    external: Option<Box<dyn ExternalPort>>,
    /// Last cycle the NICs did something observable (RTL backends; for the external port's wait).
    last_activity: u64,
    /// Model backend with an external port: consecutive quiet `run_model_until_idle` calls. The
    /// model has no clock, so with a slow outside peer its timers fire only after
    /// [`EXTERNAL_TIMER_QUIET`] quiet calls (each waited up to [`EXTERNAL_WAIT`] for the peer).
    quiet_calls: u32,
}

/// Quiet model calls (about as many milliseconds of wall time) before the model's timers fire
/// when the peer is outside the simulator.
const EXTERNAL_TIMER_QUIET: u32 = 200;

/// Cycles without any observable NIC activity (and no frame, MMIO or DMA read pending) after which
/// an RTL NIC counts as idle, so the external port may block instead of the clock running.
const EXTERNAL_IDLE_CYCLES: u64 = 2000;
/// How long one idle step may wait for a frame from the external port.
const EXTERNAL_WAIT: std::time::Duration = std::time::Duration::from_millis(1);

impl std::fmt::Debug for Fabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fabric").field("backend", &self.cfg.backend).field("cycle", &self.cycle).finish()
    }
}

/// A shared handle on a fabric.
pub type FabricRef = Rc<RefCell<Fabric>>;

impl Fabric {
    /// Build a fabric with a fault-free link.
    ///
    /// # Errors
    /// Host memory or the RTL could not be created.
    pub fn new(cfg: FabricConfig) -> Result<FabricRef, SimError> {
        Fabric::with_faults(cfg, Box::new(NoFaults))
    }

    /// Build a fabric whose link applies `hook` to every frame.
    ///
    /// # Errors
    /// Host memory or the RTL could not be created.
    pub fn with_faults(cfg: FabricConfig, hook: Box<dyn FaultHook>) -> Result<FabricRef, SimError> {
        let mut slots = Vec::new();
        for i in 0..cfg.nics {
            let mem = || HostMem::new(cfg.host_mem_bytes).map_err(|e| SimError::Setup(e.to_string()));
            let rtl_cfg = || crate::rtl::RtlConfig {
                dma_read_latency: cfg.dma_read_latency,
                link_mbps: cfg.link_mbps,
                // each NIC its own sequence
                dma_reorder_seed: cfg.dma_reorder_seed.map(|s| s.wrapping_add(i as u64)),
                ..Default::default()
            };
            let slot = match cfg.backend {
                Backend::Model => Slot::Model { nic: Box::new(Nic::new(cfg.model.clone())), mem: mem()? },
                Backend::Rtl => Slot::Rtl { rtl: Box::new(RtlNic::with_config(mem()?, rtl_cfg()).map_err(|e| SimError::Setup(format!("NIC {i}: {e}")))?) },
                Backend::Lockstep => Slot::Lockstep {
                    rtl: Box::new(RtlNic::with_config(mem()?, rtl_cfg()).map_err(|e| SimError::Setup(format!("NIC {i}: {e}")))?),
                    chk: Box::new(Checker::new(i, Nic::new(cfg.model.clone()), mem()?)),
                },
            };
            slots.push(slot);
        }
        let capture = match &cfg.capture {
            Some(p) => Some(Capture::create(p).map_err(|e| SimError::Setup(e.to_string()))?),
            None => None,
        };
        let link = Link::new(cfg.link_delay, hook);
        Ok(Rc::new(RefCell::new(Fabric {
            cfg,
            slots,
            link,
            capture,
            irqs: HashMap::new(),
            failed: None,
            cycle: 0,
            events: Vec::new(),
            external: None,
            quiet_calls: 0,
            last_activity: 0,
        })))
    }

    /// Build a fabric of one NIC whose wire is `port`, outside the simulator (the interop bridge):
    /// NIC 0's frames go to the port, the port's frames come into NIC 0. `cfg.nics` is ignored.
    ///
    /// # Errors
    /// Host memory or the RTL could not be created.
    pub fn with_external_port(cfg: FabricConfig, port: Box<dyn ExternalPort>) -> Result<FabricRef, SimError> {
        let fabric = Fabric::with_faults(FabricConfig { nics: 1, ..cfg }, Box::new(NoFaults))?;
        fabric.borrow_mut().external = Some(port);
        Ok(fabric)
    }

    /// A driver device for function `func` of NIC `nic`.
    pub fn device(fabric: &FabricRef, nic: usize, func: u8) -> Rc<dyn Device> {
        Rc::new(SimDevice { fabric: fabric.clone(), nic, func })
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.cfg.backend
    }

    /// Current cycle (0 for the model backend, which has no clock).
    pub fn cycle(&self) -> u64 {
        self.cycle
    }

    /// Frames that crossed the link.
    pub fn frames_sent(&self) -> u64 {
        self.link.sent
    }

    /// Lockstep comparison counts per NIC (empty for other backends).
    pub fn check_stats(&self) -> Vec<crate::lockstep::CheckStats> {
        self.slots
            .iter()
            .filter_map(|s| match s {
                Slot::Lockstep { chk, .. } => Some(chk.stats),
                _ => None,
            })
            .collect()
    }

    /// Read a model counter / RTL counter through MMIO of the PF (for tests).
    ///
    /// # Errors
    /// The fabric failed.
    pub fn counter(&mut self, nic: usize, index: u32) -> Result<u64, SimError> {
        self.mmio_read(nic, 0, rnic_regs::reg::COUNTERS + 8 * index as u64)
    }

    /// Deliver an arbitrary frame (built by the test) to NIC `to`'s rx port now, bypassing the
    /// link and its fault hook (written to the capture, if any). In lockstep the model sees it
    /// when the RTL accepts it, like any received frame. Empty frames cannot be represented on
    /// the port and are ignored.
    pub fn inject(&mut self, to: usize, frame: Vec<u8>) {
        if frame.is_empty() {
            return;
        }
        if let Some(cap) = &mut self.capture {
            let _ = cap.write(self.cycle, &frame);
        }
        match &mut self.slots[to] {
            Slot::Model { nic, .. } => nic.rx_enqueue(frame),
            Slot::Rtl { rtl } | Slot::Lockstep { rtl, .. } => rtl.push_rx(frame),
        }
    }

    fn check_failed(&self) -> Result<(), SimError> {
        match &self.failed {
            Some(m) => Err(SimError::Setup(format!("the fabric stopped earlier: {m}"))),
            None => Ok(()),
        }
    }

    fn fail(&mut self, e: SimError) -> SimError {
        if let Some(c) = &mut self.capture {
            c.flush();
        }
        let mut e = e;
        if let SimError::Mismatch(m) = &mut e {
            if let Some(c) = &self.capture {
                m.artifacts.push(format!("capture: {}", c.path().display()));
            }
            for s in &self.slots {
                if let Slot::Lockstep { rtl, .. } | Slot::Rtl { rtl } = s {
                    if let Some(w) = rtl.waves_path() {
                        m.artifacts.push(format!("waveform: {}", w.display()));
                    }
                }
            }
        }
        // The command that re-runs this test (or binary) with a capture and a waveform window
        // around the failing cycle. Window cycles are NIC cycles (RtlNic::cycle), which are the
        // fabric's cycles: every NIC is created with the fabric and clocked with it.
        let at = match &e {
            SimError::Mismatch(m) => Some((m.nic, m.cycle)),
            // The failure happened within the step that started at `self.cycle`.
            SimError::Rtl { nic, .. } => Some((*nic, self.cycle + self.cfg.link_delay)),
            _ => None,
        };
        if let Some((nic, cycle)) = at {
            let r = ReplayContext::current().command(cycle.saturating_sub(5000), cycle + 200, nic);
            match &mut e {
                SimError::Mismatch(m) => m.artifacts.extend(r.lines()),
                SimError::Rtl { msg, .. } => {
                    for l in r.lines() {
                        msg.push_str("\n  ");
                        msg.push_str(&l);
                    }
                }
                _ => {}
            }
        }
        self.failed = Some(e.to_string());
        e
    }

    /// Write a 64-bit register of function `func` on NIC `nic`.
    ///
    /// # Errors
    /// The fabric failed.
    pub fn mmio_write(&mut self, nic: usize, func: u8, offset: u64, value: u64) -> Result<(), SimError> {
        self.check_failed()?;
        log::trace!("nic {nic}: fn {func}: mmio write {offset:#08x} <- {value:#018x}");
        self.last_activity = self.cycle;
        match &mut self.slots[nic] {
            Slot::Model { nic: m, .. } => m.mmio_write(func, offset, value),
            Slot::Rtl { rtl } | Slot::Lockstep { rtl, .. } => rtl.post_mmio_write(func, offset, value),
        }
        Ok(())
    }

    /// Read a 64-bit register; RTL backends run the clock until the answer comes.
    ///
    /// # Errors
    /// The fabric failed, or the RTL did not answer within a bound.
    pub fn mmio_read(&mut self, nic: usize, func: u8, offset: u64) -> Result<u64, SimError> {
        self.check_failed()?;
        if let Slot::Model { nic: m, mem } = &mut self.slots[nic] {
            // The model answers after doing all the work it has: a read is ordered after tasks.
            let _ = mem;
            return Ok(m.mmio_read(func, offset));
        }
        match &mut self.slots[nic] {
            Slot::Rtl { rtl } | Slot::Lockstep { rtl, .. } => rtl.post_mmio_read(func, offset),
            Slot::Model { .. } => unreachable!(),
        }
        self.last_activity = self.cycle;
        self.wait_read(nic, || format!("MMIO read of {offset:#x}"))
    }

    /// Run the clock until RTL NIC `nic` answers the read posted last (MMIO or configuration).
    fn wait_read(&mut self, nic: usize, what: impl Fn() -> String) -> Result<u64, SimError> {
        let limit = self.cycle + 1_000_000;
        loop {
            self.run_cycles(1)?;
            let got = match &mut self.slots[nic] {
                Slot::Rtl { rtl } | Slot::Lockstep { rtl, .. } => rtl.take_mmio_read(),
                Slot::Model { .. } => unreachable!("model reads are answered at once"),
            };
            if let Some(v) = got {
                return Ok(v);
            }
            if self.cycle > limit {
                let e = SimError::Rtl { nic, msg: format!("{} not answered within 1M cycles (engine hung?)", what()) };
                return Err(self.fail(e));
            }
        }
    }

    /// Write the configuration dword at byte `offset` of function `func` on NIC `nic`.
    ///
    /// # Errors
    /// The fabric failed.
    pub fn cfg_write(&mut self, nic: usize, func: u8, offset: u32, value: u32) -> Result<(), SimError> {
        self.check_failed()?;
        log::trace!("nic {nic}: fn {func}: config write {offset:#05x} <- {value:#010x}");
        match &mut self.slots[nic] {
            Slot::Model { nic: m, .. } => m.cfg_write(func, offset, value),
            Slot::Rtl { rtl } | Slot::Lockstep { rtl, .. } => rtl.post_cfg_write(func, offset, value),
        }
        Ok(())
    }

    /// Read the configuration dword at byte `offset` of function `func`; RTL backends run the
    /// clock until the answer comes.
    ///
    /// # Errors
    /// The fabric failed, or the RTL did not answer within a bound.
    pub fn cfg_read(&mut self, nic: usize, func: u8, offset: u32) -> Result<u32, SimError> {
        self.check_failed()?;
        match &mut self.slots[nic] {
            Slot::Model { nic: m, .. } => return Ok(m.cfg_read(func, offset)),
            Slot::Rtl { rtl } | Slot::Lockstep { rtl, .. } => rtl.post_cfg_read(func, offset),
        }
        self.wait_read(nic, || format!("config read of {offset:#x}")).map(|v| v as u32)
    }

    /// Run the fabric: RTL backends for `cycles` clock cycles, the model until every NIC and the
    /// link are idle.
    ///
    /// # Errors
    /// A mismatch or a simulation failure.
    pub fn run_cycles(&mut self, cycles: u64) -> Result<(), SimError> {
        self.check_failed()?;
        if self.cfg.backend == Backend::Model {
            return self.run_model_until_idle();
        }
        let mut left = cycles;
        while left > 0 {
            // Frames need at least `link_delay` cycles to cross, so NICs can run that long apart.
            let n = left.min(self.cfg.link_delay.max(1));
            self.step_rtl(n)?;
            left -= n;
        }
        Ok(())
    }

    fn step_rtl(&mut self, n: u64) -> Result<(), SimError> {
        let mut failure = None;
        for i in 0..self.slots.len() {
            let mut events = std::mem::take(&mut self.events);
            events.clear();
            let (rtl, mut chk) = match &mut self.slots[i] {
                Slot::Rtl { rtl } => (rtl, None),
                Slot::Lockstep { rtl, chk } => (rtl, Some(chk)),
                Slot::Model { .. } => unreachable!("model slots are not clocked"),
            };
            if let Err(msg) = rtl.step(n) {
                failure = Some(SimError::Rtl { nic: i, msg: msg.to_string() });
                break;
            }
            rtl.drain_events(&mut events);
            if let Some((c, _)) = events.last() {
                self.last_activity = self.last_activity.max(*c);
            }
            for (cycle, ev) in &events {
                if let Some(c) = chk.as_mut() {
                    if let Err(m) = c.step(*cycle, ev) {
                        failure = Some(SimError::Mismatch(m));
                        break;
                    }
                }
                match ev {
                    Observed::TxFrame { bytes, local } => {
                        log_frame(i, *cycle, bytes);
                        if let Some(cap) = &mut self.capture {
                            let _ = cap.write(*cycle, bytes);
                        }
                        // looped back by the embedded switch: it never reaches the link
                        if *local {
                            continue;
                        }
                        match &mut self.external {
                            Some(port) => {
                                self.link.sent += 1;
                                port.transmit(bytes.clone());
                            }
                            None => self.link.send(i, *cycle, bytes.clone()),
                        }
                    }
                    Observed::Msix { func, vector } => {
                        log::trace!("nic {i}: cycle {cycle}: fn {func}: msix vector {vector}");
                        self.irqs.entry((i, *func)).or_default().push_back(*vector)
                    }
                    Observed::DmaWrite { func, addr, data } => {
                        log::trace!("nic {i}: cycle {cycle}: fn {func}: dma write {addr:#x} len {}", data.len());
                    }
                    Observed::Task { kind, qpn, func } => {
                        log::trace!("nic {i}: cycle {cycle}: fn {func}: task kind {kind} qp {qpn:#x}");
                    }
                    _ => {}
                }
            }
            self.events = events;
            if failure.is_some() {
                break;
            }
        }
        if let Some(e) = failure {
            return Err(self.fail(e));
        }
        self.cycle += n;
        for (to, frame) in self.link.due(self.cycle) {
            match &mut self.slots[to] {
                Slot::Rtl { rtl } | Slot::Lockstep { rtl, .. } => rtl.push_rx(frame),
                Slot::Model { .. } => unreachable!(),
            }
        }
        if self.external.is_some() {
            self.poll_external_rtl();
        }
        Ok(())
    }

    /// Frames from the external port into NIC 0 (RTL backends). Blocks up to [`EXTERNAL_WAIT`]
    /// only when NIC 0 has been idle for [`EXTERNAL_IDLE_CYCLES`]: simulated time then stands
    /// still while the outside peer (a VM under TCG, say) takes its wall-clock time.
    fn poll_external_rtl(&mut self) {
        let (Some(port), Some(slot)) = (self.external.as_mut(), self.slots.first_mut()) else { return };
        let (Slot::Rtl { rtl } | Slot::Lockstep { rtl, .. }) = slot else { return };
        let idle = self.cycle.saturating_sub(self.last_activity) > EXTERNAL_IDLE_CYCLES
            && rtl.rx_queued() == 0
            && rtl.mmio_queued() == 0
            && rtl.dma_reads_in_flight() == 0;
        let frames = port.receive(idle.then_some(EXTERNAL_WAIT));
        if !frames.is_empty() {
            self.last_activity = self.cycle;
        }
        for f in frames {
            if let Some(cap) = &mut self.capture {
                let _ = cap.write(self.cycle, &f);
            }
            rtl.push_rx(f);
        }
    }

    /// Model backend: run every NIC until the fabric is quiet; then fire the pending timers
    /// (section 10a: RNR waits and ACK timeouts, one TIMER task per waiting QP) once, and run
    /// until quiet again. Once per call, so an endless RNR loop still returns to the caller.
    fn run_model_until_idle(&mut self) -> Result<(), SimError> {
        let mut timers_fired = false;
        loop {
            let mut moved = false;
            for i in 0..self.slots.len() {
                let Slot::Model { nic, mem } = &mut self.slots[i] else { unreachable!() };
                let ran = nic.run_until_idle(mem).map_err(|e| SimError::Model { nic: i, msg: e.to_string() });
                let ran = match ran {
                    Ok(r) => r,
                    Err(e) => return Err(self.fail(e)),
                };
                moved |= ran > 0;
                let Slot::Model { nic, .. } = &mut self.slots[i] else { unreachable!() };
                for o in nic.take_outputs() {
                    match o {
                        Output::Frame(f) => {
                            log_frame(i, 0, &f);
                            if let Some(cap) = &mut self.capture {
                                let _ = cap.write(self.link.sent, &f);
                            }
                            // The embedded switch: a frame for a function of the same NIC loops
                            // back (section 4b; the model has no buffer limit, so never drops).
                            let Slot::Model { nic, .. } = &mut self.slots[i] else { unreachable!() };
                            if nic.is_local_dest(&f) {
                                nic.rx_enqueue(f);
                                moved = true;
                                continue;
                            }
                            match &mut self.external {
                                Some(port) => {
                                    // frames_sent() counts them; the model's capture uses it as time
                                    self.link.sent += 1;
                                    port.transmit(f);
                                }
                                None => self.link.send(i, 0, f),
                            }
                        }
                        Output::Msix { func, vector } => {
                            log::trace!("nic {i}: fn {func}: msix vector {vector}");
                            self.irqs.entry((i, func)).or_default().push_back(vector)
                        }
                        Output::DmaWrite { func, addr, data } => {
                            log::trace!("nic {i}: fn {func}: dma write {addr:#x} len {}", data.len());
                        }
                    }
                }
            }
            for (to, frame) in self.link.drain_all() {
                let Slot::Model { nic, .. } = &mut self.slots[to] else { unreachable!() };
                nic.rx_enqueue(frame);
                moved = true;
            }
            if let Some(port) = &mut self.external {
                // The model has no clock: when it has nothing to do, wait a little for the outside.
                let frames = port.receive((!moved).then_some(EXTERNAL_WAIT));
                if let Some(Slot::Model { nic, .. }) = self.slots.first_mut() {
                    for f in frames {
                        if let Some(cap) = &mut self.capture {
                            let _ = cap.write(self.link.sent, &f);
                        }
                        nic.rx_enqueue(f);
                        moved = true;
                    }
                }
            }
            if moved {
                self.quiet_calls = 0;
            }
            if !moved {
                if timers_fired {
                    return Ok(());
                }
                timers_fired = true;
                if self.external.is_some() {
                    self.quiet_calls += 1;
                    if self.quiet_calls < EXTERNAL_TIMER_QUIET {
                        return Ok(());
                    }
                    self.quiet_calls = 0;
                }
                for i in 0..self.slots.len() {
                    let Slot::Model { nic, mem } = &mut self.slots[i] else { unreachable!() };
                    for qpn in nic.pending_timers() {
                        log::debug!("nic {i}: qp {qpn}: timer fires (model backend, fabric quiet)");
                        if let Err(e) = nic.run_task(Task::Timer { qpn }, mem) {
                            let e = SimError::Model { nic: i, msg: e.to_string() };
                            return Err(self.fail(e));
                        }
                    }
                }
            }
        }
    }

    /// Lockstep only: fail if a model prediction is still waiting for the RTL. Call when the
    /// fabric has been quiet for a while (the end of a test).
    ///
    /// # Errors
    /// Outputs the RTL never produced.
    pub fn check_drained(&mut self) -> Result<(), SimError> {
        self.check_failed()?;
        if self.cfg.backend == Backend::Model {
            return Ok(());
        }
        // Let everything in flight land first.
        self.run_cycles(2000)?;
        for i in 0..self.slots.len() {
            if let Slot::Lockstep { chk, .. } = &self.slots[i] {
                if let Err(m) = chk.check_drained(self.cycle) {
                    return Err(self.fail(SimError::Mismatch(m)));
                }
            }
        }
        Ok(())
    }

    /// Lockstep only: compare the RTL's and the model's host memories of every NIC byte for byte.
    ///
    /// # Errors
    /// The memories differ (the report names the first differing address).
    pub fn check_memories(&mut self) -> Result<(), SimError> {
        for i in 0..self.slots.len() {
            if let Slot::Lockstep { rtl, chk } = &self.slots[i] {
                if let Some(addr) = rtl.mem().first_difference(&chk.mem) {
                    let e = SimError::Rtl { nic: i, msg: format!("host memory of RTL and model differ at {addr:#x}") };
                    return Err(self.fail(e));
                }
            }
        }
        Ok(())
    }

    /// Flush the capture file.
    pub fn flush_capture(&mut self) {
        if let Some(c) = &mut self.capture {
            c.flush();
        }
    }

    fn primary_mem(&mut self, nic: usize) -> &mut HostMem {
        match &mut self.slots[nic] {
            Slot::Model { mem, .. } => mem,
            Slot::Rtl { rtl } | Slot::Lockstep { rtl, .. } => rtl.mem_mut(),
        }
    }

    /// Allocate DMA memory on NIC `nic`'s host (for the PF).
    ///
    /// # Errors
    /// Out of host memory.
    pub fn dma_alloc(&mut self, nic: usize, len: u64, align: u64) -> Result<u64, DeviceError> {
        self.dma_alloc_func(nic, 0, len, align)
    }

    /// Allocate DMA memory for function `func` of NIC `nic`: inside the function's DMA window
    /// when it has one ([`Fabric::dma_window`]), else from the host's memory.
    ///
    /// # Errors
    /// Out of host memory (or out of the window).
    pub fn dma_alloc_func(&mut self, nic: usize, func: u8, len: u64, align: u64) -> Result<u64, DeviceError> {
        let iova = self.primary_mem(nic).alloc_func(func, len, align).map_err(|_| DeviceError::OutOfMemory { len, align })?;
        // The Device contract says allocations are zeroed (a reused block must not show old CQEs
        // to a new CQ, found by the interop suite); both memories of a lockstep NIC get the zeros.
        self.dma_write(nic, iova, &vec![0; len as usize])?;
        Ok(iova)
    }

    /// Free DMA memory.
    pub fn dma_free(&mut self, nic: usize, iova: u64, len: u64) {
        self.dma_free_func(nic, 0, iova, len)
    }

    /// Free DMA memory of [`Fabric::dma_alloc_func`].
    pub fn dma_free_func(&mut self, nic: usize, func: u8, iova: u64, len: u64) {
        if let Err(e) = self.primary_mem(nic).free_func(func, iova, len) {
            log::warn!("NIC {nic}: fn {func}: dma_free({iova:#x}, {len}): {e}");
        }
    }

    /// Free bytes of NIC `nic`'s host memory (outside the VF windows).
    pub fn dma_free_bytes(&mut self, nic: usize) -> u64 {
        self.primary_mem(nic).free_bytes()
    }

    /// VF `func`'s DMA window `(base, end)` on NIC `nic`'s host, if [`Fabric::dma_window`] gave it one.
    pub fn vf_window(&mut self, nic: usize, func: u8) -> Option<(u64, u64)> {
        self.primary_mem(nic).window(func)
    }

    /// Tell the host memories of NIC `nic` that VF `func`'s DMA window is `[base, base + len)`
    /// (for tests that issue SET_VF_DMA themselves); every later DMA for `func` is checked
    /// against it. Allocation is unchanged.
    pub fn set_vf_window(&mut self, nic: usize, func: u8, base: u64, len: u64) {
        if let Slot::Lockstep { chk, .. } = &mut self.slots[nic] {
            chk.mem.set_window(func, base, len);
        }
        self.primary_mem(nic).set_window(func, base, len);
    }

    /// Give VF `func` of NIC `nic` a DMA window of `len` bytes of host memory (64 KiB aligned),
    /// like a hypervisor giving a VM memory: `func`'s [`Device::dma_alloc`] allocates inside it
    /// from now on, and every DMA the NIC makes for `func` (RTL and model) is checked against it
    /// — outside it the test panics. Returns `(base, len)` of the window; the caller tells the
    /// NIC with `Context::set_vf_dma`. A VF that already has a window keeps it (and gets it back).
    ///
    /// # Errors
    /// Out of host memory.
    pub fn dma_window(&mut self, nic: usize, func: u8, len: u64) -> Result<(u64, u64), DeviceError> {
        let align = 64 << 10;
        let mem = self.primary_mem(nic);
        mem.alloc_window(func, len, align).map_err(|_| DeviceError::OutOfMemory { len, align })?;
        let (base, end) = mem.window(func).expect("the window just given");
        if let Slot::Lockstep { chk, .. } = &mut self.slots[nic] {
            chk.mem.set_window(func, base, end - base);
        }
        Ok((base, end - base))
    }

    /// Host (driver) read of DMA memory.
    ///
    /// # Errors
    /// Outside host memory.
    pub fn dma_read(&mut self, nic: usize, iova: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        let len = buf.len() as u64;
        self.primary_mem(nic).read_bytes(iova, buf).map_err(|_| DeviceError::BadAddress { iova, len })
    }

    /// Host (driver) write of DMA memory; in lockstep both host memories get it.
    ///
    /// # Errors
    /// Outside host memory.
    pub fn dma_write(&mut self, nic: usize, iova: u64, data: &[u8]) -> Result<(), DeviceError> {
        let len = data.len() as u64;
        let bad = |_| DeviceError::BadAddress { iova, len };
        if let Slot::Lockstep { chk, .. } = &mut self.slots[nic] {
            chk.mem.write_bytes(iova, data).map_err(bad)?;
        }
        self.primary_mem(nic).write_bytes(iova, data).map_err(bad)
    }

    fn take_irqs(&mut self, nic: usize, func: u8) -> Vec<u16> {
        self.irqs.get_mut(&(nic, func)).map(|q| q.drain(..).collect()).unwrap_or_default()
    }

    fn progress(&mut self) -> Result<(), SimError> {
        let n = self.cfg.progress_cycles;
        self.run_cycles(n)
    }
}

/// Debug log of a frame leaving NIC `from` (cycle 0 on the model backend, which has no clock).
/// The BTH is decoded only when debug logging is on: this runs for every frame.
fn log_frame(from: usize, cycle: u64, bytes: &[u8]) {
    if log::log_enabled!(log::Level::Debug) {
        let to = Link::peer(from);
        match crate::lockstep::bth_summary(bytes) {
            Some((op, qpn, psn)) => log::debug!(
                "nic {from} -> nic {to}: cycle {cycle}: frame opcode {op:#04x} dest qp {qpn:#x} psn {psn:#x} len {}",
                bytes.len()
            ),
            None => log::debug!("nic {from} -> nic {to}: cycle {cycle}: frame len {} (no BTH)", bytes.len()),
        }
    }
}

/// One PCIe function of one NIC on a fabric, as a driver [`Device`].
pub struct SimDevice {
    fabric: FabricRef,
    nic: usize,
    func: u8,
}

impl std::fmt::Debug for SimDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimDevice(nic {}, fn {})", self.nic, self.func)
    }
}

impl Device for SimDevice {
    fn label(&self) -> String {
        format!("nic{}.fn{}", self.nic, self.func)
    }

    fn mmio_write(&self, offset: u64, value: u64) {
        // A failed fabric reports its error on the next progress/read call.
        let _ = self.fabric.borrow_mut().mmio_write(self.nic, self.func, offset, value);
    }

    fn mmio_read(&self, offset: u64) -> u64 {
        self.fabric.borrow_mut().mmio_read(self.nic, self.func, offset).unwrap_or(u64::MAX)
    }

    fn cfg_write(&self, offset: u32, value: u32) {
        let _ = self.fabric.borrow_mut().cfg_write(self.nic, self.func, offset, value);
    }

    fn cfg_read(&self, offset: u32) -> u32 {
        self.fabric.borrow_mut().cfg_read(self.nic, self.func, offset).unwrap_or(u32::MAX)
    }

    fn dma_alloc(&self, len: u64, align: u64) -> Result<u64, DeviceError> {
        self.fabric.borrow_mut().dma_alloc_func(self.nic, self.func, len, align)
    }

    fn dma_free(&self, iova: u64, len: u64) {
        self.fabric.borrow_mut().dma_free_func(self.nic, self.func, iova, len)
    }

    fn dma_read(&self, iova: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        self.fabric.borrow_mut().dma_read(self.nic, iova, buf)
    }

    fn dma_write(&self, iova: u64, data: &[u8]) -> Result<(), DeviceError> {
        self.fabric.borrow_mut().dma_write(self.nic, iova, data)
    }

    fn progress(&self) -> Result<(), DeviceError> {
        self.fabric.borrow_mut().progress().map_err(Into::into)
    }

    fn take_interrupts(&self) -> Vec<u16> {
        self.fabric.borrow_mut().take_irqs(self.nic, self.func)
    }
}

// ------------------------------------------------------------------------------------------------
// Replay command printed by `Fabric::fail`
// ------------------------------------------------------------------------------------------------

use std::path::Path;

/// What a replay command is built from: the running test (libtest names its thread after the
/// test) or binary, and the environment that selects the case.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayContext {
    /// Name of the current thread: the test's full name under libtest (`main` in a binary).
    pub thread: Option<String>,
    /// The running executable (`<target>/<profile>/deps/<file>-<hash>` for a test binary).
    pub exe: PathBuf,
    /// `RNIC_TEST_FILE`: the integration-test file, when the executable's name does not tell.
    pub test_file: Option<String>,
    /// `CARGO_PKG_NAME` at run time (cargo and nextest set it), default `rnic-testbench`.
    pub package: Option<String>,
    /// Command-line arguments after the program name (binaries only).
    pub args: Vec<String>,
    /// Variables carried over to the replay (`RNIC_BACKEND`, `RNIC_SEED`, `RNIC_CASES`, ...).
    pub env: Vec<(String, String)>,
    /// `RNIC_REPLAY_DIR`: where the replay writes its files (default `<target dir>/replay`).
    pub dir: Option<PathBuf>,
}

/// A replay command and where its artifacts land.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    /// Shell command line.
    pub command: String,
    /// Capture file the command writes.
    pub pcap: PathBuf,
    /// Waveform of the failing NIC (NIC k > 0 of a fabric writes `name.k.fst`).
    pub waves: PathBuf,
}

impl Replay {
    /// Report lines: `replay: <command>` and where the capture and waveform will be.
    pub fn lines(&self) -> Vec<String> {
        vec![
            format!("replay: {}", self.command),
            format!("  (writes {} and, for the failing NIC, {})", self.pcap.display(), self.waves.display()),
        ]
    }
}

/// Variables that select the case being run (or the RTL it runs), copied into the replay
/// command when set.
const REPLAY_ENV: &[&str] = &[
    "RNIC_BACKEND",
    "RNIC_SEED",
    "RNIC_CASES",
    "PROPTEST_CASES",
    "PROPTEST_RNG_SEED",
    "PROPTEST_MAX_SHRINK_ITERS",
    "RNIC_RTL_DIR",
    "RNIC_VERILATOR",
];

/// Options of the binaries that the replay's own `--pcap` (and environment) replace.
const REPLAY_STRIP_ARGS: &[&str] = &["--pcap", "--out", "--start", "--end"];

fn sh_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-./:=,+@%".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

impl ReplayContext {
    /// The context of the calling thread and process.
    pub fn current() -> ReplayContext {
        let env = REPLAY_ENV
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .collect();
        ReplayContext {
            thread: std::thread::current().name().map(str::to_string),
            exe: std::env::current_exe().unwrap_or_default(),
            test_file: std::env::var("RNIC_TEST_FILE").ok().filter(|s| !s.is_empty()),
            package: std::env::var("CARGO_PKG_NAME").ok().filter(|s| !s.is_empty()),
            args: std::env::args().skip(1).collect(),
            env,
            dir: std::env::var_os("RNIC_REPLAY_DIR").filter(|d| !d.is_empty()).map(PathBuf::from),
        }
    }

    /// The test being run: `Some` when the thread is not the main thread.
    fn test(&self) -> Option<&str> {
        self.thread.as_deref().filter(|t| *t != "main")
    }

    /// Directory for the replay's artifacts: `RNIC_REPLAY_DIR`, else `<target dir>/replay`
    /// (absolute, so it does not depend on the directory cargo runs the test in), found from the
    /// executable's location.
    fn out_dir(&self) -> PathBuf {
        if let Some(d) = &self.dir {
            return std::path::absolute(d).unwrap_or_else(|_| d.clone());
        }
        let mut dir = self.exe.parent();
        if dir.and_then(Path::file_name).is_some_and(|n| n == "deps" || n == "examples") {
            dir = dir.and_then(Path::parent);
        }
        match dir.and_then(Path::parent) {
            Some(t) if !t.as_os_str().is_empty() => t.join("replay"),
            _ => PathBuf::from("target/replay"),
        }
    }

    /// The replay command for a waveform window `[start, end)` (NIC cycles) around a failure of
    /// NIC `nic`.
    pub fn command(&self, start: u64, end: u64, nic: usize) -> Replay {
        let exe_name = self.exe.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let pkg = self.package.as_deref().unwrap_or("rnic-testbench");
        let test = self.test();
        let base = match test {
            Some(t) => t.replace("::", "__"),
            None if exe_name.is_empty() => "rnic-demo".to_string(),
            None => exe_name.clone(),
        };
        let base: String =
            base.chars().map(|c| if c.is_ascii_alphanumeric() || "_-.".contains(c) { c } else { '_' }).collect();
        let dir = self.out_dir();
        let pcap = dir.join(format!("{base}.pcap"));
        let fst = dir.join(format!("{base}.fst"));
        let waves = if nic == 0 { fst.clone() } else { dir.join(format!("{base}.{nic}.fst")) };
        let q = |p: &Path| sh_quote(&p.to_string_lossy());
        let mut cmd: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={}", sh_quote(v))).collect();
        cmd.push(format!("RNIC_PCAP={}", q(&pcap)));
        cmd.push(format!("RNIC_WAVES={}", q(&fst)));
        cmd.push(format!("RNIC_WAVES_START={start}"));
        cmd.push(format!("RNIC_WAVES_END={end}"));
        match test {
            Some(t) => {
                // libtest executables are named `<file>-<16 hex digits>`.
                let file = self.test_file.clone().unwrap_or_else(|| match exe_name.rsplit_once('-') {
                    Some((f, h)) if h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()) => f.to_string(),
                    _ => exe_name.clone(),
                });
                let target = if file == env!("CARGO_CRATE_NAME") { "--lib".to_string() } else { format!("--test {}", sh_quote(&file)) };
                cmd.push(format!("cargo test --release -p {pkg} {target} {} -- --exact --nocapture", sh_quote(t)));
            }
            None => {
                let bin = if exe_name.is_empty() { "rnic-demo".to_string() } else { exe_name };
                cmd.push(format!("cargo run --release -p {pkg} --bin {} --", sh_quote(&bin)));
                let mut args = self.args.iter();
                while let Some(a) = args.next() {
                    if REPLAY_STRIP_ARGS.contains(&a.as_str()) {
                        args.next();
                    } else if !REPLAY_STRIP_ARGS.iter().any(|o| a.starts_with(&format!("{o}="))) {
                        cmd.push(sh_quote(a));
                    }
                }
                cmd.push(format!("--pcap {}", q(&pcap)));
            }
        }
        Replay { command: cmd.join(" "), pcap, waves }
    }
}

#[cfg(test)]
mod replay_tests {
    use super::*;

    fn ctx(thread: &str, exe: &str) -> ReplayContext {
        ReplayContext { thread: Some(thread.into()), exe: PathBuf::from(exe), ..ReplayContext::default() }
    }

    #[test]
    fn test_replay_command() {
        let mut c = ctx("bad_icrc_is_reported", "/w/target/release/deps/lockstep_errors-0123456789abcdef");
        c.env = vec![("RNIC_SEED".into(), "0x12".into()), ("RNIC_CASES".into(), "3".into())];
        let r = c.command(118, 5318, 1);
        assert_eq!(
            r.command,
            "RNIC_SEED=0x12 RNIC_CASES=3 RNIC_PCAP=/w/target/replay/bad_icrc_is_reported.pcap \
             RNIC_WAVES=/w/target/replay/bad_icrc_is_reported.fst RNIC_WAVES_START=118 RNIC_WAVES_END=5318 \
             cargo test --release -p rnic-testbench --test lockstep_errors bad_icrc_is_reported -- --exact --nocapture"
        );
        assert_eq!(r.waves, PathBuf::from("/w/target/replay/bad_icrc_is_reported.1.fst"));
        assert_eq!(r.lines()[0], format!("replay: {}", r.command));
    }

    #[test]
    fn test_file_from_env_and_module_path() {
        let mut c = ctx("tests::one", "/w/target/release/deps/odd name");
        c.test_file = Some("verbs".into());
        c.package = Some("other".into());
        let r = c.command(0, 200, 0);
        assert!(r.command.ends_with("cargo test --release -p other --test verbs tests::one -- --exact --nocapture"), "{}", r.command);
        assert_eq!(r.waves, PathBuf::from("/w/target/replay/tests__one.fst"));
        c.dir = Some(PathBuf::from("/r"));
        assert_eq!(c.command(0, 1, 2).waves, PathBuf::from("/r/tests__one.2.fst"));
        let lib = ctx("fabric::t", &format!("/w/target/release/deps/{}-00112233445566ff", env!("CARGO_CRATE_NAME")));
        assert!(lib.command(0, 1, 0).command.contains(" --lib fabric::t -- --exact"));
    }

    #[test]
    fn dma_alloc_is_zeroed_even_when_memory_is_reused() {
        let cfg = FabricConfig { backend: Backend::Model, ..FabricConfig::default() };
        let f = Fabric::new(cfg).unwrap();
        let mut fab = f.borrow_mut();
        let a = fab.dma_alloc(0, 4096, 64).unwrap();
        fab.dma_write(0, a, &[0x7b; 4096]).unwrap();
        fab.dma_free(0, a, 4096);
        let b = fab.dma_alloc(0, 4096, 64).unwrap();
        assert_eq!(a, b, "first fit reuses the block");
        let mut buf = vec![1u8; 4096];
        fab.dma_read(0, b, &mut buf).unwrap();
        assert!(buf.iter().all(|&x| x == 0), "old bytes leaked into a new allocation");
    }

    #[test]
    fn binary_replay_command() {
        let mut c = ctx("main", "/w/target/release/rnic-demo");
        c.args = vec!["--len".into(), "100".into(), "--pcap".into(), "/tmp/a b.pcap".into(), "--out=x.fst".into()];
        let r = c.command(5, 205, 0);
        assert_eq!(
            r.command,
            "RNIC_PCAP=/w/target/replay/rnic-demo.pcap RNIC_WAVES=/w/target/replay/rnic-demo.fst \
             RNIC_WAVES_START=5 RNIC_WAVES_END=205 cargo run --release -p rnic-testbench --bin rnic-demo -- \
             --len 100 --pcap /w/target/replay/rnic-demo.pcap"
        );
        assert_eq!(sh_quote("a'b"), "'a'\\''b'");
    }
}
