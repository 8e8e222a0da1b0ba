// SPDX-License-Identifier: Apache-2.0
//! The lockstep checker: the reference model follows the RTL event by event and predicts every
//! externally visible effect; the first difference stops the run with a [`Mismatch`].
//!
//! Like Ibex's cosim `step()`, the RTL reports what the model cannot know — which task its engine
//! started (arbitration), when it accepted an MMIO write or a frame — and the model executes the
//! same task atomically. The model's outputs go into one expected queue per stream (egress frames,
//! DMA writes, MSI-X); each RTL output must equal the head of its stream's queue.

use std::collections::VecDeque;
use std::fmt;

use rnic_model::{HostMemory, Nic, Output, Task};

/// How many recent events a mismatch report shows.
const HISTORY: usize = 12;

/// One event observed at the RTL's boundary, in the order the RTL produced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// The RTL accepted an MMIO write.
    MmioWrite { func: u8, offset: u64, value: u64 },
    /// The RTL's MAC accepted the first beat of a received frame.
    RxAccepted { frame: Vec<u8> },
    /// The engine started a task (trace port).
    Task { kind: u8, qpn: u32, func: u8 },
    /// The RTL sent a frame: on the uplink, or (`local`) looped back by the embedded switch into
    /// its own receive framer (logged when its last beat entered; an `RxAccepted` follows).
    TxFrame { bytes: Vec<u8>, local: bool },
    /// The embedded switch dropped a looped frame for want of receive-buffer room (section 4b):
    /// the next predicted frame is consumed unseen and the model counts `ESW_DROP`.
    EswDrop,
    /// The RTL wrote host memory.
    DmaWrite { func: u8, addr: u64, data: Vec<u8> },
    /// The RTL sent an MSI-X message.
    Msix { func: u8, vector: u16 },
    /// The RTL answered an MMIO read.
    MmioRead { func: u8, offset: u64, value: u64 },
    /// The RTL accepted a configuration write (dword at byte `offset`).
    CfgWrite { func: u8, offset: u32, value: u32 },
    /// The RTL answered a configuration read.
    CfgRead { func: u8, offset: u32, value: u32 },
}

/// Which output stream an event belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Egress frames.
    Frame,
    /// DMA writes to host memory.
    DmaWrite,
    /// MSI-X messages.
    Msix,
    /// An MMIO read's value.
    MmioRead,
    /// A task the model could not run.
    Task,
    /// Expected output that never came.
    Missing,
}

/// The first divergence between RTL and model, with everything needed to find the cause.
#[derive(Clone, Debug)]
pub struct Mismatch {
    /// RTL cycle of the event.
    pub cycle: u64,
    /// NIC index in the fabric.
    pub nic: usize,
    /// PCIe function.
    pub func: u8,
    /// Local or destination QP number, when known.
    pub qpn: Option<u32>,
    /// PSN, when the event is a frame.
    pub psn: Option<u32>,
    /// Kind of event.
    pub stream: Stream,
    /// What the model predicted.
    pub expected: String,
    /// What the RTL did.
    pub actual: String,
    /// Byte-level difference, for payloads.
    pub diff: Option<String>,
    /// The last events before the mismatch, oldest first.
    pub history: Vec<String>,
    /// Where the waveform and capture were written, if they were enabled.
    pub artifacts: Vec<String>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "LOCKSTEP MISMATCH at cycle {} on NIC {} function {}", self.cycle, self.nic, self.func)?;
        writeln!(
            f,
            "  event: {:?}   QP: {}   PSN: {}",
            self.stream,
            self.qpn.map_or("-".into(), |q| format!("{q:#x}")),
            self.psn.map_or("-".into(), |p| p.to_string())
        )?;
        writeln!(f, "  expected (model): {}", self.expected)?;
        writeln!(f, "  actual   (RTL)  : {}", self.actual)?;
        if let Some(d) = &self.diff {
            writeln!(f, "  diff:\n{d}")?;
        }
        writeln!(f, "  last events before it (oldest first):")?;
        for h in &self.history {
            writeln!(f, "    {h}")?;
        }
        for a in &self.artifacts {
            writeln!(f, "  {a}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Mismatch {}

/// BTH fields of a RoCEv2 frame for reports: (opcode, dest QP, PSN). Offsets: Ethernet 14 +
/// IPv4 20 + UDP 8 = 42 bytes before the BTH.
pub fn bth_summary(frame: &[u8]) -> Option<(u8, u32, u32)> {
    let b = frame.get(42..54)?;
    let qpn = u32::from_be_bytes([0, b[5], b[6], b[7]]);
    let psn = u32::from_be_bytes([0, b[9], b[10], b[11]]);
    Some((b[0], qpn, psn))
}

fn describe_frame(frame: &[u8]) -> String {
    match bth_summary(frame) {
        Some((op, qpn, psn)) => format!("frame {} bytes, opcode {op:#04x}, dest QP {qpn:#x}, PSN {psn}", frame.len()),
        None => format!("frame {} bytes (too short for a BTH)", frame.len()),
    }
}

/// A hex diff around the first differing byte.
pub fn byte_diff(expected: &[u8], actual: &[u8]) -> Option<String> {
    let first = expected.iter().zip(actual).position(|(a, b)| a != b).or_else(|| {
        (expected.len() != actual.len()).then(|| expected.len().min(actual.len()))
    })?;
    let lo = first.saturating_sub(16) & !15;
    let hi = (first + 32).min(expected.len().max(actual.len()));
    let hex = |d: &[u8]| -> String {
        let end = hi.min(d.len());
        if lo >= end {
            return "(ends before)".into();
        }
        d[lo..end].iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
    };
    Some(format!(
        "    first difference at byte {first} (expected {} bytes, actual {} bytes)\n    expected @{lo}: {}\n    actual   @{lo}: {}",
        expected.len(),
        actual.len(),
        hex(expected),
        hex(actual)
    ))
}

/// Counts of what the checker compared.
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckStats {
    /// Tasks the model followed.
    pub tasks: u64,
    /// Frames compared.
    pub frames: u64,
    /// DMA writes compared.
    pub dma_writes: u64,
    /// MSI-X messages compared.
    pub msix: u64,
    /// MMIO reads compared.
    pub mmio_reads: u64,
}

/// The model of one NIC, following its RTL twin.
pub struct Checker<M: HostMemory> {
    nic_index: usize,
    /// The model.
    pub model: Nic,
    /// The model's own copy of host memory (the RTL writes its copy; they stay identical).
    pub mem: M,
    exp_frames: VecDeque<Vec<u8>>,
    exp_dma: VecDeque<(u8, u64, Vec<u8>)>,
    exp_msix: VecDeque<(u8, u16)>,
    history: VecDeque<String>,
    /// Comparison counts.
    pub stats: CheckStats,
}

impl<M: HostMemory> Checker<M> {
    /// A checker for NIC `nic_index` with the model and its host memory.
    pub fn new(nic_index: usize, model: Nic, mem: M) -> Checker<M> {
        Checker {
            nic_index,
            model,
            mem,
            exp_frames: VecDeque::new(),
            exp_dma: VecDeque::new(),
            exp_msix: VecDeque::new(),
            history: VecDeque::new(),
            stats: CheckStats::default(),
        }
    }

    fn remember(&mut self, cycle: u64, what: String) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(format!("cycle {cycle}: {what}"));
    }

    fn mismatch(&self, cycle: u64, func: u8, stream: Stream, expected: String, actual: String) -> Box<Mismatch> {
        Box::new(Mismatch {
            cycle,
            nic: self.nic_index,
            func,
            qpn: None,
            psn: None,
            stream,
            expected,
            actual,
            diff: None,
            history: self.history.iter().cloned().collect(),
            artifacts: Vec::new(),
        })
    }

    fn collect_outputs(&mut self) {
        for o in self.model.take_outputs() {
            match o {
                Output::Frame(f) => self.exp_frames.push_back(f),
                Output::DmaWrite { func, addr, data } => self.exp_dma.push_back((func, addr, data)),
                Output::Msix { func, vector } => self.exp_msix.push_back((func, vector)),
            }
        }
    }

    /// Feed one RTL event; compare it if it is an output.
    ///
    /// # Errors
    /// The first mismatch.
    pub fn step(&mut self, cycle: u64, ev: &Observed) -> Result<(), Box<Mismatch>> {
        match ev {
            Observed::MmioWrite { func, offset, value } => {
                self.remember(cycle, format!("MMIO write fn {func} [{offset:#x}] = {value:#x}"));
                self.model.mmio_write(*func, *offset, *value);
            }
            Observed::RxAccepted { frame } => {
                self.remember(cycle, format!("rx {}", describe_frame(frame)));
                self.model.rx_enqueue(frame.clone());
            }
            Observed::Task { kind, qpn, func } => {
                self.remember(cycle, format!("task kind {kind} QP {qpn:#x} fn {func}"));
                let task = Task::from_trace(*kind, *qpn, *func).ok_or_else(|| {
                    self.mismatch(cycle, *func, Stream::Task, "a known task kind".into(), format!("trace kind {kind}"))
                })?;
                self.model.run_task(task, &mut self.mem).map_err(|e| {
                    let mut m = self.mismatch(cycle, *func, Stream::Task, format!("model able to run {task:?}"), format!("model error: {e}"));
                    m.qpn = Some(*qpn);
                    m
                })?;
                self.stats.tasks += 1;
                self.collect_outputs();
            }
            Observed::EswDrop => {
                self.remember(cycle, "embedded switch dropped a looped frame".into());
                if self.exp_frames.pop_front().is_none() {
                    return Err(self.mismatch(cycle, 0, Stream::Frame, "no frame".into(), "a looped frame dropped by the switch".into()));
                }
                self.model.esw_drop();
            }
            Observed::TxFrame { bytes, local } => {
                let to = if *local { "looped" } else { "tx" };
                self.remember(cycle, format!("{to} {}", describe_frame(bytes)));
                self.stats.frames += 1;
                let Some(exp) = self.exp_frames.pop_front() else {
                    let mut m = self.mismatch(cycle, 0, Stream::Frame, "no frame".into(), describe_frame(bytes));
                    if let Some((_, q, p)) = bth_summary(bytes) {
                        m.qpn = Some(q);
                        m.psn = Some(p);
                    }
                    return Err(m);
                };
                if &exp != bytes {
                    let mut m = self.mismatch(cycle, 0, Stream::Frame, describe_frame(&exp), describe_frame(bytes));
                    if let Some((_, q, p)) = bth_summary(&exp) {
                        m.qpn = Some(q);
                        m.psn = Some(p);
                    }
                    m.diff = byte_diff(&exp, bytes);
                    return Err(m);
                }
                // The embedded switch's decision (section 4b): looped back or to the uplink.
                if self.model.is_local_dest(&exp) != *local {
                    let to = |l: bool| if l { "looped back by the embedded switch" } else { "sent to the uplink" };
                    let mut m = self.mismatch(cycle, 0, Stream::Frame, format!("{}, {}", describe_frame(&exp), to(!*local)), format!("{}, {}", describe_frame(bytes), to(*local)));
                    if let Some((_, q, p)) = bth_summary(&exp) {
                        m.qpn = Some(q);
                        m.psn = Some(p);
                    }
                    return Err(m);
                }
            }
            Observed::DmaWrite { func, addr, data } => {
                self.remember(cycle, format!("DMA write fn {func} {addr:#x}+{}", data.len()));
                self.stats.dma_writes += 1;
                let act = format!("DMA write fn {func} at {addr:#x}, {} bytes", data.len());
                let Some((ef, ea, ed)) = self.exp_dma.pop_front() else {
                    return Err(self.mismatch(cycle, *func, Stream::DmaWrite, "no DMA write".into(), act));
                };
                if (ef, ea) != (*func, *addr) || &ed != data {
                    let exp = format!("DMA write fn {ef} at {ea:#x}, {} bytes", ed.len());
                    let mut m = self.mismatch(cycle, *func, Stream::DmaWrite, exp, act);
                    m.diff = byte_diff(&ed, data);
                    return Err(m);
                }
            }
            Observed::Msix { func, vector } => {
                self.remember(cycle, format!("MSI-X fn {func} vector {vector}"));
                self.stats.msix += 1;
                let act = format!("MSI-X fn {func} vector {vector}");
                match self.exp_msix.pop_front() {
                    Some(e) if e == (*func, *vector) => {}
                    Some((f, v)) => {
                        return Err(self.mismatch(cycle, *func, Stream::Msix, format!("MSI-X fn {f} vector {v}"), act))
                    }
                    None => return Err(self.mismatch(cycle, *func, Stream::Msix, "no MSI-X".into(), act)),
                }
            }
            Observed::MmioRead { func, offset, value } => self.mmio_read(cycle, *func, *offset, *value)?,
            Observed::CfgWrite { func, offset, value } => {
                self.remember(cycle, format!("config write fn {func} [{offset:#x}] = {value:#x}"));
                self.model.cfg_write(*func, *offset, *value);
            }
            Observed::CfgRead { func, offset, value } => {
                let exp = self.model.cfg_read(*func, *offset);
                self.stats.mmio_reads += 1;
                self.remember(cycle, format!("config read fn {func} [{offset:#x}] = {value:#x}"));
                if exp != *value {
                    return Err(self.mismatch(
                        cycle,
                        *func,
                        Stream::MmioRead,
                        format!("config [{offset:#x}] = {exp:#x}"),
                        format!("config [{offset:#x}] = {value:#x}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Compare the value the RTL returned for an MMIO read with the model's.
    ///
    /// # Errors
    /// The values differ.
    pub fn mmio_read(&mut self, cycle: u64, func: u8, offset: u64, rtl_value: u64) -> Result<(), Box<Mismatch>> {
        let exp = self.model.mmio_read(func, offset);
        self.stats.mmio_reads += 1;
        self.remember(cycle, format!("MMIO read fn {func} [{offset:#x}] = {rtl_value:#x}"));
        if exp != rtl_value {
            return Err(self.mismatch(
                cycle,
                func,
                Stream::MmioRead,
                format!("[{offset:#x}] = {exp:#x}"),
                format!("[{offset:#x}] = {rtl_value:#x}"),
            ));
        }
        Ok(())
    }

    /// Expected outputs the RTL has not produced yet.
    pub fn pending(&self) -> usize {
        self.exp_frames.len() + self.exp_dma.len() + self.exp_msix.len()
    }

    /// Fail if the model predicted outputs the RTL never produced (call when the RTL is quiet).
    ///
    /// # Errors
    /// Outputs are missing.
    pub fn check_drained(&self, cycle: u64) -> Result<(), Box<Mismatch>> {
        if let Some(f) = self.exp_frames.front() {
            return Err(self.mismatch(cycle, 0, Stream::Missing, describe_frame(f), "RTL went quiet without sending it".into()));
        }
        if let Some((func, addr, d)) = self.exp_dma.front() {
            return Err(self.mismatch(
                cycle,
                *func,
                Stream::Missing,
                format!("DMA write fn {func} at {addr:#x}, {} bytes", d.len()),
                "RTL went quiet without writing it".into(),
            ));
        }
        if let Some((func, v)) = self.exp_msix.front() {
            return Err(self.mismatch(cycle, *func, Stream::Missing, format!("MSI-X vector {v}"), "none".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_finds_first_difference_and_length_change() {
        let a = vec![0u8; 40];
        let mut b = a.clone();
        b[33] = 1;
        let d = byte_diff(&a, &b).unwrap();
        assert!(d.contains("first difference at byte 33"), "{d}");
        assert!(byte_diff(&a, &a).is_none());
        let d = byte_diff(&a, &a[..39]).unwrap();
        assert!(d.contains("byte 39"), "{d}");
    }

    #[test]
    fn bth_fields_for_reports() {
        let mut f = vec![0u8; 60];
        f[42] = 0x0a;
        f[47..50].copy_from_slice(&[0, 0x12, 0x34]);
        f[51..54].copy_from_slice(&[0x01, 0x00, 0x02]);
        assert_eq!(bth_summary(&f), Some((0x0a, 0x1234, 0x010002)));
        assert_eq!(bth_summary(&f[..50]), None);
    }
}
