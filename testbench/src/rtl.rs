// SPDX-License-Identifier: Apache-2.0
//! One Verilated NIC (`rnic_top`) with everything around it at cycle level: its host memory, a
//! DMA model, an MMIO request queue, the MAC ports, MSI-X and the trace port.
//!
//! The RTL is driven one clock cycle per cxx call ([`ffi::RnicSim::tick`]): the inputs of a cycle
//! are applied with the clock low, the outputs read back are the values the rising edge samples,
//! so a handshake `valid && ready` seen in [`ffi::PortsOut`] happened in that cycle.
//!
//! Everything the lockstep checker needs is one ordered log of `(cycle, Observed)`
//! ([`RtlNic::drain_events`]). Within one cycle the order is: the MMIO read answered in that cycle
//! (its value was fixed before any task that starts in the same cycle), the task started (trace
//! port), the MMIO request accepted, the first beat of a received frame accepted, then the
//! outputs: a frame sent, a DMA write burst completed, an MSI-X message.
//!
//! Cycle numbers count from 0 at the end of the reset that [`RtlNic::new`] applies.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::hostmem::{HostMem, HostMemError};
use crate::lockstep::Observed;

/// The cxx bridge to `csrc/rnic_sim.{h,cc}`.
#[cxx::bridge(namespace = "rnic")]
pub mod ffi {
    /// Every input of `rnic_top` except the clock and reset (section 2 of the architecture).
    /// 512-bit buses are `[u64; 8]`, element `i` holding bits `[64i+63:64i]` (byte lanes
    /// `8i..8i+8`, little-endian).
    #[derive(Clone, Debug, Default)]
    pub struct PortsIn {
        /// `mmio_req_valid_i`.
        pub mmio_req_valid: bool,
        /// `mmio_req_write_i`: 1 write, 0 read.
        pub mmio_req_write: bool,
        /// `mmio_req_cfg_i`: 1 configuration request, 0 memory (BAR0) request.
        pub mmio_req_cfg: bool,
        /// `mmio_req_func_i`.
        pub mmio_req_func: u8,
        /// `mmio_req_addr_i`: BAR0 byte offset.
        pub mmio_req_addr: u32,
        /// `mmio_req_wdata_i`.
        pub mmio_req_wdata: u64,
        /// `dma_rd_req_ready_i`.
        pub dma_rd_req_ready: bool,
        /// `dma_rd_cpl_valid_i`.
        pub dma_rd_cpl_valid: bool,
        /// `dma_rd_cpl_tag_i`.
        pub dma_rd_cpl_tag: u8,
        /// `dma_rd_cpl_data_i`.
        pub dma_rd_cpl_data: [u64; 8],
        /// `dma_rd_cpl_last_i`.
        pub dma_rd_cpl_last: bool,
        /// `dma_wr_ready_i`.
        pub dma_wr_ready: bool,
        /// `tx_tready_i`.
        pub tx_tready: bool,
        /// `rx_tvalid_i`.
        pub rx_tvalid: bool,
        /// `rx_tdata_i`.
        pub rx_tdata: [u64; 8],
        /// `rx_tkeep_i`.
        pub rx_tkeep: u64,
        /// `rx_tlast_i`.
        pub rx_tlast: bool,
    }

    /// Every output of `rnic_top`, as sampled by the rising edge of the cycle.
    #[derive(Clone, Debug, Default)]
    pub struct PortsOut {
        /// `mmio_req_ready_o`.
        pub mmio_req_ready: bool,
        /// `mmio_rsp_valid_o`.
        pub mmio_rsp_valid: bool,
        /// `mmio_rsp_rdata_o`.
        pub mmio_rsp_rdata: u64,
        /// `dma_rd_req_valid_o`.
        pub dma_rd_req_valid: bool,
        /// `dma_rd_req_tag_o`.
        pub dma_rd_req_tag: u8,
        /// `dma_rd_req_func_o`.
        pub dma_rd_req_func: u8,
        /// `dma_rd_req_addr_o`.
        pub dma_rd_req_addr: u64,
        /// `dma_rd_req_len_o` (1..4096).
        pub dma_rd_req_len: u16,
        /// `dma_wr_valid_o`.
        pub dma_wr_valid: bool,
        /// `dma_wr_func_o`.
        pub dma_wr_func: u8,
        /// `dma_wr_addr_o`.
        pub dma_wr_addr: u64,
        /// `dma_wr_len_o` (1..4096).
        pub dma_wr_len: u16,
        /// `dma_wr_data_o`.
        pub dma_wr_data: [u64; 8],
        /// `dma_wr_last_o`.
        pub dma_wr_last: bool,
        /// `msix_valid_o`.
        pub msix_valid: bool,
        /// `msix_func_o`.
        pub msix_func: u8,
        /// `msix_vector_o`.
        pub msix_vector: u16,
        /// `tx_tvalid_o`.
        pub tx_tvalid: bool,
        /// `tx_tdata_o`.
        pub tx_tdata: [u64; 8],
        /// `tx_tkeep_o`.
        pub tx_tkeep: u64,
        /// `tx_tlast_o`.
        pub tx_tlast: bool,
        /// `rx_tready_o`.
        pub rx_tready: bool,
        /// `lb_valid_o`: a beat of a looped frame entered the receive framer.
        pub lb_valid: bool,
        /// `lb_tdata_o` (copied only when `lb_valid`).
        pub lb_tdata: [u64; 8],
        /// `lb_tkeep_o`.
        pub lb_tkeep: u64,
        /// `lb_tlast_o`.
        pub lb_tlast: bool,
        /// `esw_drop_o`.
        pub esw_drop: bool,
        /// `trace_valid_o`.
        pub trace_valid: bool,
        /// `trace_kind_o` (`rnic_regs::trace::*`).
        pub trace_kind: u8,
        /// `trace_qpn_o`.
        pub trace_qpn: u32,
        /// `trace_func_o`.
        pub trace_func: u8,
        /// `cycle_o`.
        pub cycle: u64,
    }

    extern "Rust" {
        /// Text the RTL printed (`$display`, `$error`, `$fatal`, Verilator messages).
        fn rnic_rtl_print(text: &str);
    }

    // SAFETY: these declarations are those of csrc/rnic_sim.h; cxx checks every signature against
    // the C++ ones when it compiles the bridge, and none of them takes raw pointers.
    unsafe extern "C++" {
        include!("rnic-testbench/csrc/rnic_sim.h");

        /// One Verilated `rnic_top` with its own `VerilatedContext` (and FST writer when open).
        type RnicSim;

        /// Creates a simulator; the model starts with `rst_ni` low.
        fn new_rnic_sim() -> Result<UniquePtr<RnicSim>>;
        /// Holds `rst_ni` low for `cycles` cycles with every other input at 0.
        fn reset(self: Pin<&mut RnicSim>, cycles: u32) -> Result<()>;
        /// One clock cycle; an RTL `$fatal`/`$stop`/`$finish` or failed assertion is an `Err`,
        /// after which every call fails.
        fn tick(self: Pin<&mut RnicSim>, inp: &PortsIn, out: &mut PortsOut) -> Result<()>;
        /// Dumps an FST for simulator cycles `[start_cycle, end_cycle)` (opened when the window
        /// starts, closed when it ends).
        fn open_trace(
            self: Pin<&mut RnicSim>,
            path: &str,
            start_cycle: u64,
            end_cycle: u64,
        ) -> Result<()>;
        /// Closes the waveform and cancels a pending window.
        fn close_trace(self: Pin<&mut RnicSim>) -> Result<()>;
        /// Simulator cycles so far, reset cycles included.
        fn cycles(self: &RnicSim) -> u64;
        /// Whether a waveform window is pending or open.
        fn trace_active(self: &RnicSim) -> bool;

        /// Speed measurement: a fresh simulator, reset, then `cycles` clock toggles with idle
        /// inputs and no harness work; returns the thread CPU time of the clock loop in ns.
        fn bare_idle_ticks(cycles: u64) -> Result<u64>;
        /// Speed measurement: time every `RnicSim::tick` (process-wide switch).
        fn set_tick_timing(on: bool);
        /// Nanoseconds spent in `RnicSim::tick` on this thread while timing was on.
        fn tick_time_ns() -> u64;
        /// Ticks timed on this thread while timing was on.
        fn tick_time_count() -> u64;
        /// CPU time of the calling thread in ns (speed figures independent of the machine's load).
        fn thread_cpu_ns() -> u64;
    }
}

/// Forwards the RTL's printed text to stdout through `print!`, so the test harness captures it
/// per test (Verilator's own printf would bypass the capture).
fn rnic_rtl_print(text: &str) {
    print!("{text}");
}

// SAFETY: an `RnicSim` owns its VerilatedContext, model and FST writer and shares no state with
// other instances (Verilator's only per-thread state, `Verilated::threadContextp()`, is set at
// the top of every shim entry point; a `--threads 1` model has no thread affinity). Moving it to
// another thread is therefore sound; `&mut` access keeps it single-threaded at any time.
unsafe impl Send for ffi::RnicSim {}

/// Bytes per data beat of the 512-bit buses.
pub const BEAT_BYTES: usize = 64;
/// Largest DMA request or burst (`dma_*_len` is 1..4096).
pub const DMA_MAX_LEN: usize = 4096;

/// Errors of the RTL NIC. Every variant but `Create` and `Waves` carries the cycle it happened in.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RtlError {
    /// The Verilated model could not be created.
    #[error("cannot create the Verilated NIC: {0}")]
    Create(String),
    /// The simulation stopped: RTL `$fatal`/`$stop`/`$finish`, a failed assertion or a Verilator
    /// runtime error. The NIC cannot run any more.
    #[error("RTL simulation stopped at cycle {cycle}: {msg} (open a waveform around this cycle: RNIC_WAVES=path RNIC_WAVES_START=..)")]
    Sim {
        /// Cycle of the failure.
        cycle: u64,
        /// Message from the simulator.
        msg: String,
    },
    /// The RTL issued a DMA access outside host memory.
    #[error("DMA {kind} fault at cycle {cycle}: {source} (the RTL used an address the driver never gave it)")]
    DmaFault {
        /// Cycle of the access.
        cycle: u64,
        /// `"read"` or `"write"`.
        kind: &'static str,
        /// The host memory error (function, address, length).
        #[source]
        source: HostMemError,
    },
    /// The RTL broke the protocol of one of its ports (section 2 of the architecture).
    #[error("RTL port protocol violation at cycle {cycle}: {msg}")]
    Protocol {
        /// Cycle of the violation.
        cycle: u64,
        /// What was wrong.
        msg: String,
    },
    /// A bad request from the testbench side (e.g. an MMIO offset outside BAR0).
    #[error("invalid request to the RTL NIC: {0}")]
    BadRequest(String),
    /// A blocking call did not complete in time.
    #[error("timeout at cycle {cycle}: {what} did not complete within {waited} cycles (engine hung or back-pressure stuck?)")]
    Timeout {
        /// Cycle when giving up.
        cycle: u64,
        /// What was waited for.
        what: String,
        /// Cycles waited.
        waited: u64,
    },
    /// The waveform could not be opened.
    #[error("waveform {path}: {msg}")]
    Waves {
        /// Requested path.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
}

/// A waveform window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaveConfig {
    /// FST file to write.
    pub path: PathBuf,
    /// First cycle dumped (0 also dumps the initial reset).
    pub start_cycle: u64,
    /// First cycle not dumped.
    pub end_cycle: u64,
}

/// Default length of a waveform window from the environment (about 2 MB of FST).
pub const DEFAULT_WAVE_WINDOW: u64 = 200_000;

impl WaveConfig {
    /// The window from the environment: `RNIC_WAVES` (path; when several NICs of the process use
    /// it, the second gets `name.1.ext`, and so on), `RNIC_WAVES_START` (default 0),
    /// `RNIC_WAVES_END` (default start + [`DEFAULT_WAVE_WINDOW`]). `None` without `RNIC_WAVES`.
    pub fn from_env() -> Option<WaveConfig> {
        let path = PathBuf::from(std::env::var_os("RNIC_WAVES")?);
        let num = |k: &str| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let start_cycle = num("RNIC_WAVES_START").unwrap_or(0);
        let end_cycle =
            num("RNIC_WAVES_END").unwrap_or(start_cycle.saturating_add(DEFAULT_WAVE_WINDOW));
        Some(WaveConfig {
            path,
            start_cycle,
            end_cycle,
        })
    }
}

/// Configuration of an [`RtlNic`].
#[derive(Clone, Debug)]
pub struct RtlConfig {
    /// Cycles from accepting a DMA read request to its first completion beat (default 50 =
    /// 200 ns at 250 MHz).
    pub dma_read_latency: u64,
    /// `None`: completions in request order (deterministic). `Some(seed)`: when several requests
    /// are due, the next one is chosen by a PRNG with this seed, so different tags complete out
    /// of order (reproducibly for a given seed). Beats of one tag are always contiguous.
    pub dma_reorder_seed: Option<u64>,
    /// Line rate of the uplink MAC in Mb/s (default 100,000 = 100 Gb/s); 0: no limit (64 bytes
    /// per cycle, the MAC interface's width). The transmit port's ready follows a byte-credit
    /// counter that earns `link_mbps / (8 clock_mhz)` bytes per cycle and pays every frame's
    /// bytes, padded to the 60-byte minimum, plus 24 (FCS 4, preamble and SFD 8, inter-frame
    /// gap 12), so frames leave at the line rate (docs/bench.md, The model of the hardware).
    pub link_mbps: u64,
    /// Nominal clock in MHz, for `link_mbps` (default 250).
    pub clock_mhz: u64,
    /// Cycles of reset applied by [`RtlNic::new`].
    pub reset_cycles: u32,
    /// Cycles a blocking [`RtlNic::mmio_read`] / [`RtlNic::mmio_write`] waits at most.
    pub mmio_timeout: u64,
    /// Waveform window, opened at creation.
    pub waves: Option<WaveConfig>,
}

impl Default for RtlConfig {
    /// Defaults as documented on the fields; `waves` from [`WaveConfig::from_env`].
    fn default() -> RtlConfig {
        RtlConfig {
            dma_read_latency: 50,
            dma_reorder_seed: None,
            link_mbps: 100_000,
            clock_mhz: 250,
            reset_cycles: 16,
            mmio_timeout: 1_000_000,
            waves: WaveConfig::from_env(),
        }
    }
}

/// Counts of what crossed the NIC's ports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtlStats {
    /// Clock cycles run since reset.
    pub cycles: u64,
    /// MMIO writes accepted.
    pub mmio_writes: u64,
    /// MMIO reads answered.
    pub mmio_reads: u64,
    /// Trace events (tasks started).
    pub tasks: u64,
    /// Frames received (first beat accepted).
    pub rx_frames: u64,
    /// Frames sent.
    pub tx_frames: u64,
    /// DMA read requests accepted.
    pub dma_reads: u64,
    /// DMA write bursts completed.
    pub dma_writes: u64,
    /// MSI-X messages.
    pub msix: u64,
}

#[derive(Clone, Copy, Debug)]
struct MmioReq {
    write: bool,
    /// Configuration request (dword at `addr`, data in bits 31:0).
    cfg: bool,
    /// Read sequence number (reads only).
    seq: u64,
    func: u8,
    addr: u32,
    value: u64,
}

#[derive(Clone, Debug)]
struct RdReq {
    tag: u8,
    len: usize,
    due: u64,
    /// Arrival order (requests of one tag complete in this order).
    seq: u64,
    /// Bytes already returned.
    sent: usize,
    /// Host memory as it was when the request was accepted: a read is served on arrival (it
    /// sees every write accepted before it and none after); the latency is transport only.
    data: Vec<u8>,
}

/// Beats the host returns for one read before it may switch to another due read: 256 bytes, a
/// common PCIe Max Payload Size, so a short read (a WQE) is not stuck behind long ones.
const DMA_CPL_BEATS: usize = 4;

#[derive(Clone, Copy, Debug)]
struct WrBurst {
    func: u8,
    addr: u64,
    len: usize,
}

/// Host side of the DMA ports: read requests answered after a latency, write bursts applied.
#[derive(Debug)]
struct DmaModel {
    latency: u64,
    rng: Option<u64>,
    pending: VecDeque<RdReq>,
    /// The read being answered, and the beats of its current completion.
    active: Option<RdReq>,
    burst: usize,
    seq: u64,
    wr: Option<WrBurst>,
    wr_buf: Vec<u8>,
}

impl DmaModel {
    fn new(latency: u64, seed: Option<u64>) -> DmaModel {
        DmaModel {
            latency,
            // xorshift must not start at 0.
            rng: seed.map(|s| s ^ 0x9E37_79B9_7F4A_7C15 | 1),
            pending: VecDeque::with_capacity(256),
            active: None,
            burst: 0,
            seq: 0,
            wr: None,
            wr_buf: Vec::with_capacity(DMA_MAX_LEN),
        }
    }

    fn clear(&mut self) {
        self.pending.clear();
        self.active = None;
        self.wr = None;
        self.wr_buf.clear();
    }

    fn next_random(&mut self) -> u64 {
        let x = self.rng.as_mut().expect("reorder mode");
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    /// Picks the read to answer next when no completion is streaming: a due request that is the
    /// oldest of its tag; the first such in the queue in deterministic mode (a read interrupted
    /// after `DMA_CPL_BEATS` beats goes to the back, so due reads share the completion channel
    /// round-robin, as PCIe completions of different requests interleave), a random one in
    /// reorder mode.
    fn pick(&mut self, cycle: u64) -> Option<RdReq> {
        let eligible = |pending: &VecDeque<RdReq>, i: usize| {
            let r = &pending[i];
            r.due <= cycle && !pending.iter().any(|o| o.tag == r.tag && o.seq < r.seq)
        };
        let n = (0..self.pending.len())
            .filter(|&i| eligible(&self.pending, i))
            .count();
        if n == 0 {
            return None;
        }
        let k = if self.rng.is_some() {
            (self.next_random() % n as u64) as usize
        } else {
            0
        };
        let idx = (0..self.pending.len())
            .filter(|&i| eligible(&self.pending, i))
            .nth(k)?;
        self.pending.remove(idx)
    }
}

/// Waveform files being written by live NICs of this process (two NICs never share a file).
static WAVE_FILES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Reserves `path` for one NIC's waveform; if another NIC of this process uses it, the first free
/// `name.k.ext` (k = 1, 2, ...) instead.
fn claim_wave_path(path: &Path) -> PathBuf {
    let mut used = WAVE_FILES.lock().unwrap_or_else(|e| e.into_inner());
    let mut candidate = path.to_path_buf();
    let mut k = 0;
    while used.contains(&candidate) {
        k += 1;
        candidate = numbered(path, k);
    }
    used.push(candidate.clone());
    candidate
}

fn release_wave_path(path: &Path) {
    let mut used = WAVE_FILES.lock().unwrap_or_else(|e| e.into_inner());
    used.retain(|p| p != path);
}

/// One Verilated NIC with its host memory and port models. See the module documentation.
pub struct RtlNic {
    sim: cxx::UniquePtr<ffi::RnicSim>,
    mem: HostMem,
    cfg: RtlConfig,
    inp: ffi::PortsIn,
    out: ffi::PortsOut,
    /// Simulator cycle that is cycle 0 of this NIC.
    base: u64,
    cycle: u64,
    events: Vec<(u64, Observed)>,
    mmio_q: VecDeque<MmioReq>,
    mmio_posted: u64,
    mmio_accepted: u64,
    /// Reads accepted and not answered: (sequence, function, offset, configuration request).
    reads_pending: VecDeque<(u64, u8, u64, bool)>,
    reads_posted: u64,
    reads_answered: u64,
    read_results: VecDeque<(u64, u64)>,
    rx_q: VecDeque<Vec<u8>>,
    rx_off: usize,
    tx_buf: Vec<u8>,
    /// Beats of the looped frame entering the receive framer (embedded switch).
    lb_buf: Vec<u8>,
    dma: DmaModel,
    /// Uplink byte credit in units of 1/(8 clock_mhz) byte: + link_mbps per cycle; the MAC is
    /// ready while it is not negative.
    link_credit: i64,
    fault: Option<RtlError>,
    dead: bool,
    waves: Option<PathBuf>,
    stats: RtlStats,
}

impl std::fmt::Debug for RtlNic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtlNic")
            .field("cycle", &self.cycle)
            .field("stats", &self.stats)
            .field("mem", &self.mem)
            .finish_non_exhaustive()
    }
}

fn words_to_bytes(words: &[u64; 8], dst: &mut [u8]) {
    for (i, w) in words.iter().enumerate() {
        let b = w.to_le_bytes();
        let lo = i * 8;
        if lo >= dst.len() {
            break;
        }
        let n = (dst.len() - lo).min(8);
        dst[lo..lo + n].copy_from_slice(&b[..n]);
    }
}

fn bytes_to_words(src: &[u8], words: &mut [u64; 8]) {
    for (i, w) in words.iter_mut().enumerate() {
        let lo = i * 8;
        let mut b = [0u8; 8];
        if lo < src.len() {
            let n = (src.len() - lo).min(8);
            b[..n].copy_from_slice(&src[lo..lo + n]);
        }
        *w = u64::from_le_bytes(b);
    }
}

fn keep_mask(n: usize) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

impl RtlNic {
    /// Creates the NIC with [`RtlConfig::default`] and resets it.
    ///
    /// # Errors
    /// [`RtlError::Create`], [`RtlError::Waves`] or [`RtlError::Sim`] (an RTL failure in reset).
    pub fn new(mem: HostMem) -> Result<RtlNic, RtlError> {
        RtlNic::with_config(mem, RtlConfig::default())
    }

    /// Creates the NIC with `cfg`, opens the configured waveform window and resets it.
    ///
    /// # Errors
    /// As [`RtlNic::new`].
    pub fn with_config(mem: HostMem, cfg: RtlConfig) -> Result<RtlNic, RtlError> {
        let sim = ffi::new_rnic_sim().map_err(|e| RtlError::Create(e.what().to_string()))?;
        let dma = DmaModel::new(cfg.dma_read_latency, cfg.dma_reorder_seed);
        let mut nic = RtlNic {
            sim,
            mem,
            inp: ffi::PortsIn::default(),
            out: ffi::PortsOut::default(),
            base: 0,
            cycle: 0,
            events: Vec::with_capacity(1024),
            mmio_q: VecDeque::with_capacity(64),
            mmio_posted: 0,
            mmio_accepted: 0,
            reads_pending: VecDeque::with_capacity(16),
            reads_posted: 0,
            reads_answered: 0,
            read_results: VecDeque::with_capacity(16),
            rx_q: VecDeque::with_capacity(64),
            rx_off: 0,
            tx_buf: Vec::with_capacity(16 * 1024),
            lb_buf: Vec::new(),
            dma,
            link_credit: 0,
            fault: None,
            dead: false,
            waves: None,
            stats: RtlStats::default(),
            cfg,
        };
        if let Some(w) = nic.cfg.waves.clone() {
            // Window 0.. includes the reset; otherwise it is in post-reset cycles.
            let (s, e) = if w.start_cycle == 0 {
                (
                    0,
                    w.end_cycle.saturating_add(u64::from(nic.cfg.reset_cycles)),
                )
            } else {
                let r = u64::from(nic.cfg.reset_cycles);
                (
                    w.start_cycle.saturating_add(r),
                    w.end_cycle.saturating_add(r),
                )
            };
            nic.open_sim_trace(&w.path, s, e)?;
        }
        let cycles = nic.cfg.reset_cycles;
        nic.sim.pin_mut().reset(cycles).map_err(|e| RtlError::Sim {
            cycle: 0,
            msg: format!("during reset: {}", e.what()),
        })?;
        nic.base = nic.sim.cycles();
        Ok(nic)
    }

    fn open_sim_trace(&mut self, requested: &Path, start: u64, end: u64) -> Result<(), RtlError> {
        if let Some(old) = self.waves.take() {
            release_wave_path(&old);
        }
        let path = &claim_wave_path(requested);
        let s = path.to_str().ok_or_else(|| RtlError::Waves {
            path: path.to_path_buf(),
            msg: "the path is not valid UTF-8".into(),
        })?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| RtlError::Waves {
                path: path.to_path_buf(),
                msg: format!("cannot create its directory: {e}"),
            })?;
        }
        self.sim
            .pin_mut()
            .open_trace(s, start, end)
            .map_err(|e| RtlError::Waves {
                path: path.to_path_buf(),
                msg: e.what().to_string(),
            })?;
        self.waves = Some(path.to_path_buf());
        Ok(())
    }

    /// Dumps an FST waveform of cycles `[start_cycle, end_cycle)` (NIC cycles) to `path` (or
    /// `name.k.ext` if another NIC of this process writes `path`; see [`RtlNic::waves_path`]);
    /// the file is created when the window starts. Replaces any previous window.
    ///
    /// # Errors
    /// [`RtlError::Waves`] for an empty window or a path that cannot be used.
    pub fn open_waves(
        &mut self,
        path: &Path,
        start_cycle: u64,
        end_cycle: u64,
    ) -> Result<(), RtlError> {
        let start = self.base + start_cycle.max(self.cycle);
        let end = self.base.saturating_add(end_cycle);
        self.open_sim_trace(path, start, end)
    }

    /// Closes the waveform (flushing it) and cancels a pending window.
    ///
    /// # Errors
    /// [`RtlError::Waves`] if the writer failed while closing.
    pub fn close_waves(&mut self) -> Result<(), RtlError> {
        let path = self.waves.clone().unwrap_or_default();
        self.sim
            .pin_mut()
            .close_trace()
            .map_err(|e| RtlError::Waves {
                path,
                msg: e.what().to_string(),
            })
    }

    /// Path of the waveform of the last window opened, if any.
    pub fn waves_path(&self) -> Option<&Path> {
        self.waves.as_deref()
    }

    /// The NIC's host memory.
    pub fn mem(&self) -> &HostMem {
        &self.mem
    }

    /// The NIC's host memory, writable (host/driver accesses).
    pub fn mem_mut(&mut self) -> &mut HostMem {
        &mut self.mem
    }

    /// Current cycle (0 = first cycle after the initial reset).
    pub fn cycle(&self) -> u64 {
        self.cycle
    }

    /// Counters of port activity.
    pub fn stats(&self) -> RtlStats {
        self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &RtlConfig {
        &self.cfg
    }

    /// Resets the RTL again for `cycles` cycles. In-flight port state (queued MMIO requests,
    /// unanswered reads, partial frames, DMA requests) is discarded; host memory and the event
    /// log are kept; the cycle count continues.
    ///
    /// # Errors
    /// [`RtlError::Sim`] if the RTL fails during reset.
    pub fn reset(&mut self, cycles: u32) -> Result<(), RtlError> {
        self.check_dead()?;
        self.mmio_q.clear();
        self.mmio_accepted = self.mmio_posted;
        self.reads_pending.clear();
        self.reads_answered = self.reads_posted;
        self.rx_q.clear();
        self.rx_off = 0;
        self.tx_buf.clear();
        self.lb_buf.clear();
        self.dma.clear();
        let cycle = self.cycle;
        self.sim.pin_mut().reset(cycles).map_err(|e| {
            self.dead = true;
            RtlError::Sim {
                cycle,
                msg: e.what().to_string(),
            }
        })?;
        self.cycle += u64::from(cycles);
        Ok(())
    }

    fn check_dead(&self) -> Result<(), RtlError> {
        if self.dead {
            return Err(RtlError::Sim {
                cycle: self.cycle,
                msg: "the simulation stopped earlier; create a new RtlNic".into(),
            });
        }
        Ok(())
    }

    fn bar_offset(&mut self, offset: u64) -> u32 {
        match u32::try_from(offset) {
            Ok(a) => a,
            Err(_) => {
                self.fault.get_or_insert(RtlError::BadRequest(format!(
                    "MMIO offset {offset:#x} does not fit the 32-bit BAR0 offset port"
                )));
                0
            }
        }
    }

    /// Queues an MMIO write; it is issued when earlier requests were accepted. The accepted write
    /// appears in the event log as [`Observed::MmioWrite`]. An offset above 32 bits makes the next
    /// [`RtlNic::step`] fail with [`RtlError::BadRequest`].
    pub fn post_mmio_write(&mut self, func: u8, offset: u64, value: u64) {
        let addr = self.bar_offset(offset);
        self.mmio_q.push_back(MmioReq {
            write: true,
            cfg: false,
            seq: 0,
            func,
            addr,
            value,
        });
        self.mmio_posted += 1;
    }

    /// Queues an MMIO read; its value comes back through [`RtlNic::take_mmio_read`] (in order)
    /// and in the event log as [`Observed::MmioRead`].
    pub fn post_mmio_read(&mut self, func: u8, offset: u64) {
        let addr = self.bar_offset(offset);
        let seq = self.reads_posted;
        self.mmio_q.push_back(MmioReq {
            write: false,
            cfg: false,
            seq,
            func,
            addr,
            value: 0,
        });
        self.mmio_posted += 1;
        self.reads_posted += 1;
    }

    /// Queues a configuration write of the dword at byte `offset` of function `func`; the accepted
    /// write appears in the event log as [`Observed::CfgWrite`].
    pub fn post_cfg_write(&mut self, func: u8, offset: u32, value: u32) {
        self.mmio_q.push_back(MmioReq { write: true, cfg: true, seq: 0, func, addr: offset, value: value.into() });
        self.mmio_posted += 1;
    }

    /// Queues a configuration read; its value (in the low 32 bits) comes back through
    /// [`RtlNic::take_mmio_read`], in order with MMIO reads, and in the event log as
    /// [`Observed::CfgRead`].
    pub fn post_cfg_read(&mut self, func: u8, offset: u32) {
        let seq = self.reads_posted;
        self.mmio_q.push_back(MmioReq { write: false, cfg: true, seq, func, addr: offset, value: 0 });
        self.mmio_posted += 1;
        self.reads_posted += 1;
    }

    /// The oldest answered MMIO read value not taken yet.
    pub fn take_mmio_read(&mut self) -> Option<u64> {
        self.read_results.pop_front().map(|(_, v)| v)
    }

    /// Writes a register, running the clock until the RTL accepted the write (and every request
    /// queued before it). Returns the cycle it was accepted in.
    ///
    /// # Errors
    /// Any [`RtlNic::step`] error, or [`RtlError::Timeout`] after `mmio_timeout` cycles.
    pub fn mmio_write(&mut self, func: u8, offset: u64, value: u64) -> Result<u64, RtlError> {
        let seq = self.mmio_posted;
        self.post_mmio_write(func, offset, value);
        let start = self.cycle;
        while self.mmio_accepted <= seq {
            self.wait_tick(start, || {
                format!("MMIO write of {value:#x} to {offset:#x} (func {func})")
            })?;
        }
        Ok(self.cycle - 1)
    }

    /// Reads a register, running the clock until the RTL answered it. Answers to reads posted
    /// earlier with [`RtlNic::post_mmio_read`] stay queued for [`RtlNic::take_mmio_read`].
    ///
    /// # Errors
    /// Any [`RtlNic::step`] error, or [`RtlError::Timeout`] after `mmio_timeout` cycles.
    pub fn mmio_read(&mut self, func: u8, offset: u64) -> Result<u64, RtlError> {
        let seq = self.reads_posted;
        self.post_mmio_read(func, offset);
        let start = self.cycle;
        while self.reads_answered <= seq {
            self.wait_tick(start, || format!("MMIO read of {offset:#x} (func {func})"))?;
        }
        let idx = self
            .read_results
            .iter()
            .position(|&(s, _)| s == seq)
            .expect("an answered read's value is queued until taken");
        Ok(self
            .read_results
            .remove(idx)
            .expect("index from position")
            .1)
    }

    fn wait_tick(&mut self, start: u64, what: impl FnOnce() -> String) -> Result<(), RtlError> {
        if self.cycle - start >= self.cfg.mmio_timeout {
            return Err(RtlError::Timeout {
                cycle: self.cycle,
                what: what(),
                waited: self.cycle - start,
            });
        }
        self.tick()
    }

    /// Queues a frame (no FCS) for the rx port; frames enter in order, as fast as `rx_tready`
    /// allows. The first beat's acceptance is logged as [`Observed::RxAccepted`]. An empty frame
    /// cannot be represented on the port and is dropped with a warning.
    pub fn push_rx(&mut self, frame: Vec<u8>) {
        if frame.is_empty() {
            log::warn!("RtlNic::push_rx: empty frame dropped (a frame has at least one byte)");
            return;
        }
        self.rx_q.push_back(frame);
    }

    /// Frames queued for the rx port and not completely accepted yet.
    pub fn rx_queued(&self) -> usize {
        self.rx_q.len()
    }

    /// MMIO requests queued and not accepted yet.
    pub fn mmio_queued(&self) -> usize {
        self.mmio_q.len()
    }

    /// DMA read requests accepted and not completely answered.
    pub fn dma_reads_in_flight(&self) -> usize {
        self.dma.pending.len() + usize::from(self.dma.active.is_some())
    }

    /// Runs `n` clock cycles.
    ///
    /// # Errors
    /// [`RtlError::Sim`] (the RTL stopped; the NIC is dead), [`RtlError::DmaFault`],
    /// [`RtlError::Protocol`], [`RtlError::BadRequest`]. Events up to the failing cycle stay in
    /// the log.
    pub fn step(&mut self, n: u64) -> Result<(), RtlError> {
        for _ in 0..n {
            self.tick()?;
        }
        Ok(())
    }

    /// Moves the event log into `out` (appending), oldest first.
    pub fn drain_events(&mut self, out: &mut Vec<(u64, Observed)>) {
        out.append(&mut self.events);
    }

    /// The events logged and not drained yet.
    pub fn events(&self) -> &[(u64, Observed)] {
        &self.events
    }

    /// Drives the inputs of the current cycle from the queues and the DMA model.
    fn drive(&mut self) {
        let inp = &mut self.inp;
        // MMIO.
        match self.mmio_q.front() {
            Some(r) => {
                inp.mmio_req_valid = true;
                inp.mmio_req_write = r.write;
                inp.mmio_req_cfg = r.cfg;
                inp.mmio_req_func = r.func;
                inp.mmio_req_addr = r.addr;
                inp.mmio_req_wdata = r.value;
            }
            None => {
                inp.mmio_req_valid = false;
                inp.mmio_req_write = false;
                inp.mmio_req_cfg = false;
                inp.mmio_req_func = 0;
                inp.mmio_req_addr = 0;
                inp.mmio_req_wdata = 0;
            }
        }
        // Host side of DMA and the MAC is always ready.
        inp.dma_rd_req_ready = true;
        inp.dma_wr_ready = true;
        inp.tx_tready = self.cfg.link_mbps == 0 || self.link_credit >= 0;
        // rx.
        match self.rx_q.front() {
            Some(f) => {
                let end = (self.rx_off + BEAT_BYTES).min(f.len());
                let beat = &f[self.rx_off..end];
                inp.rx_tvalid = true;
                bytes_to_words(beat, &mut inp.rx_tdata);
                inp.rx_tkeep = keep_mask(beat.len());
                inp.rx_tlast = end == f.len();
            }
            None => {
                inp.rx_tvalid = false;
                inp.rx_tdata = [0; 8];
                inp.rx_tkeep = 0;
                inp.rx_tlast = false;
            }
        }
        // DMA read completions.
        if self.dma.active.is_none() {
            self.dma.active = self.dma.pick(self.cycle);
            self.dma.burst = 0;
        }
        let inp = &mut self.inp;
        match &self.dma.active {
            Some(a) => {
                let lo = a.sent;
                let hi = (lo + BEAT_BYTES).min(a.len);
                inp.dma_rd_cpl_valid = true;
                inp.dma_rd_cpl_tag = a.tag;
                bytes_to_words(&a.data[lo..hi], &mut inp.dma_rd_cpl_data);
                inp.dma_rd_cpl_last = hi == a.len;
            }
            None => {
                inp.dma_rd_cpl_valid = false;
                inp.dma_rd_cpl_tag = 0;
                inp.dma_rd_cpl_data = [0; 8];
                inp.dma_rd_cpl_last = false;
            }
        }
    }

    /// One clock cycle: drive, tick, then observe the handshakes in the documented order.
    fn tick(&mut self) -> Result<(), RtlError> {
        if let Some(f) = self.fault.take() {
            return Err(f);
        }
        // line-rate credit earned this cycle (an idle link keeps at most one cycle's worth)
        self.link_credit = (self.link_credit + self.cfg.link_mbps as i64).min(self.cfg.link_mbps as i64);
        self.check_dead()?;
        self.drive();
        if let Err(e) = self.sim.pin_mut().tick(&self.inp, &mut self.out) {
            self.dead = true;
            return Err(RtlError::Sim {
                cycle: self.cycle,
                msg: e.what().to_string(),
            });
        }
        let c = self.cycle;
        let out = &self.out;

        // 1. MMIO read answered (value fixed before any task starting this cycle).
        if out.mmio_rsp_valid {
            match self.reads_pending.pop_front() {
                Some((seq, func, offset, cfg)) => {
                    let value = out.mmio_rsp_rdata;
                    self.read_results.push_back((seq, value));
                    self.reads_answered += 1;
                    self.stats.mmio_reads += 1;
                    let ev = if cfg {
                        Observed::CfgRead { func, offset: offset as u32, value: value as u32 }
                    } else {
                        Observed::MmioRead { func, offset, value }
                    };
                    self.events.push((c, ev));
                }
                None => protocol(
                    &mut self.fault,
                    c,
                    "mmio_rsp_valid_o without an outstanding read".into(),
                ),
            }
        }
        let out = &self.out;
        // 2. Task started.
        if out.trace_valid {
            self.stats.tasks += 1;
            self.events.push((
                c,
                Observed::Task {
                    kind: out.trace_kind,
                    qpn: out.trace_qpn,
                    func: out.trace_func,
                },
            ));
        }
        // 3. MMIO request accepted.
        if self.inp.mmio_req_valid && out.mmio_req_ready {
            let r = self
                .mmio_q
                .pop_front()
                .expect("valid only with a queued request");
            self.mmio_accepted += 1;
            if r.write && r.cfg {
                self.stats.mmio_writes += 1;
                self.events.push((c, Observed::CfgWrite { func: r.func, offset: r.addr, value: r.value as u32 }));
            } else if r.write {
                self.stats.mmio_writes += 1;
                self.events.push((
                    c,
                    Observed::MmioWrite {
                        func: r.func,
                        offset: u64::from(r.addr),
                        value: r.value,
                    },
                ));
            } else {
                self.reads_pending
                    .push_back((r.seq, r.func, u64::from(r.addr), r.cfg));
            }
        }
        // 4. rx beat accepted.
        if self.inp.rx_tvalid && out.rx_tready {
            let len = self.rx_q.front().map_or(0, Vec::len);
            if self.rx_off == 0 {
                self.stats.rx_frames += 1;
                let frame = self
                    .rx_q
                    .front()
                    .expect("valid only with a queued frame")
                    .clone();
                self.events.push((c, Observed::RxAccepted { frame }));
            }
            self.rx_off += BEAT_BYTES;
            if self.rx_off >= len {
                self.rx_q.pop_front();
                self.rx_off = 0;
            }
        }
        // 5. Outputs: tx beat.
        if out.tx_tvalid && self.inp.tx_tready {
            let keep = out.tx_tkeep;
            let n = keep.trailing_ones() as usize;
            if keep != keep_mask(n) || n == 0 || (!out.tx_tlast && n != BEAT_BYTES) {
                let last = out.tx_tlast;
                protocol(&mut self.fault, c, format!(
                    "tx_tkeep_o {keep:#018x} (tlast {last}) is not a contiguous run of ones from lane 0 \
                     (all ones except on the last beat)"
                ));
            }
            let start = self.tx_buf.len();
            self.tx_buf.resize(start + n.min(BEAT_BYTES), 0);
            words_to_bytes(&out.tx_tdata, &mut self.tx_buf[start..]);
            if self.cfg.link_mbps != 0 {
                // line rate: the beat's bytes, and at the end of the frame the padding to the
                // minimum frame, FCS, preamble and inter-frame gap
                let mut wire = n.min(BEAT_BYTES) as i64;
                if out.tx_tlast {
                    wire += 60i64.saturating_sub(self.tx_buf.len() as i64).max(0) + 24;
                }
                self.link_credit -= wire * 8 * self.cfg.clock_mhz as i64;
            }
            if out.tx_tlast {
                self.stats.tx_frames += 1;
                let bytes = std::mem::replace(&mut self.tx_buf, Vec::with_capacity(16 * 1024));
                self.events.push((c, Observed::TxFrame { bytes, local: false }));
            }
        }
        // 5b. Embedded switch: a looped frame's beats into the receive framer, and drops.
        let out = &self.out;
        if out.esw_drop {
            self.events.push((c, Observed::EswDrop));
        }
        if out.lb_valid {
            let n = out.lb_tkeep.trailing_ones() as usize;
            let start = self.lb_buf.len();
            self.lb_buf.resize(start + n.min(BEAT_BYTES), 0);
            words_to_bytes(&out.lb_tdata, &mut self.lb_buf[start..]);
            if out.lb_tlast {
                self.stats.tx_frames += 1;
                self.stats.rx_frames += 1;
                let bytes = std::mem::take(&mut self.lb_buf);
                self.events.push((c, Observed::TxFrame { bytes: bytes.clone(), local: true }));
                self.events.push((c, Observed::RxAccepted { frame: bytes }));
            }
        }
        let out = &self.out;
        // 6. DMA write beat.
        if out.dma_wr_valid && self.inp.dma_wr_ready {
            let (func, addr, len) = (
                out.dma_wr_func,
                out.dma_wr_addr,
                usize::from(out.dma_wr_len),
            );
            match self.dma.wr {
                None => {
                    if !(1..=DMA_MAX_LEN).contains(&len) {
                        protocol(
                            &mut self.fault,
                            c,
                            format!("dma_wr_len_o {len} outside 1..4096 (addr {addr:#x})"),
                        );
                    }
                    self.dma.wr = Some(WrBurst {
                        func,
                        addr,
                        len: len.clamp(1, DMA_MAX_LEN),
                    });
                    self.dma.wr_buf.clear();
                }
                Some(b) if (b.func, b.addr, b.len) != (func, addr, len) => {
                    protocol(&mut self.fault, c, format!(
                        "dma_wr func/addr/len changed within a burst: {}/{:#x}/{} then {func}/{addr:#x}/{len}",
                        b.func, b.addr, b.len
                    ));
                }
                Some(_) => {}
            }
            let b = self.dma.wr.expect("set above");
            let have = self.dma.wr_buf.len();
            let take = (b.len.saturating_sub(have)).min(BEAT_BYTES);
            self.dma.wr_buf.resize(have + take, 0);
            words_to_bytes(&self.out.dma_wr_data, &mut self.dma.wr_buf[have..]);
            let full = self.dma.wr_buf.len() >= b.len;
            let last = self.out.dma_wr_last;
            if last != full {
                protocol(
                    &mut self.fault,
                    c,
                    format!(
                        "dma_wr_last_o is {last} on beat {} of a {}-byte burst to {:#x}",
                        have / BEAT_BYTES,
                        b.len,
                        b.addr
                    ),
                );
            }
            if last {
                self.dma.wr = None;
                self.stats.dma_writes += 1;
                if let Err(source) = self.mem.write_func(b.func, b.addr, &self.dma.wr_buf) {
                    self.fault.get_or_insert(RtlError::DmaFault {
                        cycle: c,
                        kind: "write",
                        source,
                    });
                }
                let data = self.dma.wr_buf.clone();
                self.events.push((
                    c,
                    Observed::DmaWrite {
                        func: b.func,
                        addr: b.addr,
                        data,
                    },
                ));
            }
        }
        let out = &self.out;
        // 7. MSI-X.
        if out.msix_valid {
            self.stats.msix += 1;
            self.events.push((
                c,
                Observed::Msix {
                    func: out.msix_func,
                    vector: out.msix_vector,
                },
            ));
        }
        // DMA read request accepted; completion beat consumed (completions are always accepted).
        if out.dma_rd_req_valid && self.inp.dma_rd_req_ready {
            let len = usize::from(out.dma_rd_req_len);
            let (tag, func, addr) = (out.dma_rd_req_tag, out.dma_rd_req_func, out.dma_rd_req_addr);
            if !(1..=DMA_MAX_LEN).contains(&len) {
                protocol(
                    &mut self.fault,
                    c,
                    format!("dma_rd_req_len_o {len} outside 1..4096 (tag {tag}, addr {addr:#x})"),
                );
            } else {
                self.stats.dma_reads += 1;
                let due = c + self.dma.latency;
                let mut data = vec![0; len];
                if let Err(source) = self.mem.read_func(func, addr, &mut data) {
                    data.fill(0);
                    self.fault.get_or_insert(RtlError::DmaFault {
                        cycle: c,
                        kind: "read",
                        source,
                    });
                }
                let seq = self.dma.seq;
                self.dma.seq += 1;
                self.dma.pending.push_back(RdReq { tag, len, due, seq, sent: 0, data });
            }
        }
        if let Some(a) = self.dma.active.as_mut() {
            a.sent += BEAT_BYTES;
            self.dma.burst += 1;
            if a.sent >= a.len {
                self.dma.active = None;
            } else if self.dma.burst == DMA_CPL_BEATS {
                let a = self.dma.active.take().expect("checked");
                self.dma.pending.push_back(a);
            }
        }
        self.cycle += 1;
        self.stats.cycles = self.cycle;
        match self.fault.take() {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }
}

impl Drop for RtlNic {
    fn drop(&mut self) {
        if let Some(p) = self.waves.take() {
            release_wave_path(&p);
        }
    }
}

/// Records a port protocol violation (the first fault of a cycle wins).
fn protocol(fault: &mut Option<RtlError>, cycle: u64, msg: String) {
    fault.get_or_insert(RtlError::Protocol { cycle, msg });
}

/// `dir/name.ext` -> `dir/name.k.ext`.
fn numbered(path: &Path, k: usize) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{k}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{k}"),
    };
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dma_pick_in_order_and_reordered() {
        let mut d = DmaModel::new(10, None);
        for (i, tag) in [1u8, 2, 1, 3].into_iter().enumerate() {
            d.pending.push_back(RdReq {
                tag,
                len: 64,
                due: 10 + i as u64,
                seq: i as u64,
                sent: 0,
                data: vec![0; 64],
            });
        }
        assert!(d.pick(9).is_none(), "nothing is due before the latency");
        let order: Vec<u8> = std::iter::from_fn(|| d.pick(100).map(|r| r.tag)).collect();
        assert_eq!(order, vec![1, 2, 1, 3]);

        let mut seen_reorder = false;
        for seed in 0..20 {
            let mut d = DmaModel::new(0, Some(seed));
            for (i, tag) in [1u8, 2, 1, 3].into_iter().enumerate() {
                d.pending.push_back(RdReq {
                    tag,
                    len: 64,
                    due: 0,
                    seq: i as u64,
                    sent: 0,
                    data: vec![i as u8; 64],
                });
            }
            let got: Vec<(u8, u64)> =
                std::iter::from_fn(|| d.pick(0).map(|r| (r.tag, u64::from(r.data[0])))).collect();
            // Same tag keeps its order.
            let ones: Vec<u64> = got.iter().filter(|g| g.0 == 1).map(|g| g.1).collect();
            assert_eq!(ones, vec![0, 2]);
            seen_reorder |= got.iter().map(|g| g.0).collect::<Vec<_>>() != vec![1, 2, 1, 3];
        }
        assert!(seen_reorder, "some seed must reorder different tags");
    }

    #[test]
    fn beat_packing() {
        let src: Vec<u8> = (0..70u8).collect();
        let mut w = [0u64; 8];
        bytes_to_words(&src[64..], &mut w);
        assert_eq!(w[0], u64::from_le_bytes([64, 65, 66, 67, 68, 69, 0, 0]));
        assert_eq!(&w[1..], &[0; 7]);
        bytes_to_words(&src[..64], &mut w);
        let mut back = [0u8; 64];
        words_to_bytes(&w, &mut back);
        assert_eq!(&back[..], &src[..64]);
        let mut short = [0u8; 3];
        words_to_bytes(&w, &mut short);
        assert_eq!(short, [0, 1, 2]);
        assert_eq!(keep_mask(64), u64::MAX);
        assert_eq!(keep_mask(6), 0x3F);
    }

    #[test]
    fn nic_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<RtlNic>();
    }

    #[test]
    fn numbered_paths() {
        assert_eq!(
            numbered(Path::new("/tmp/w.fst"), 2),
            PathBuf::from("/tmp/w.2.fst")
        );
        assert_eq!(numbered(Path::new("w"), 1), PathBuf::from("w.1"));
    }
}
