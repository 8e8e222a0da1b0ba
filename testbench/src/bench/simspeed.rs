// SPDX-License-Identifier: Apache-2.0
//! How fast the simulation runs (`rnic-bench --sim-speed`, `make bench-sim`): the bare Verilated
//! model, the RTL NIC with its Rust port models, two NICs on the fabric idle and under traffic,
//! the share of wall time spent inside the Verilated `tick` versus the Rust harness, the lockstep
//! checker's cost, the model's speed on the same workload, and the wall time of a 2 MiB WRITE in
//! lockstep.

use std::time::Instant;

use serde::Serialize;

use super::run::{Bench, BenchConfig, Raw, Test};
use crate::fabric::{Backend, Fabric, FabricConfig};
use crate::hostmem::HostMem;
use crate::rtl::{ffi, RtlNic};

/// One line of the speed table.
#[derive(Clone, Debug, Serialize)]
pub struct SpeedRow {
    /// What was measured.
    pub what: String,
    /// Backend (`bare`, `rtl`, `lockstep`, `model`).
    pub backend: String,
    /// NICs simulated.
    pub nics: usize,
    /// Cycles each NIC ran (0 on the model backend).
    pub cycles: u64,
    /// Operations completed (0 when idle).
    pub messages: u64,
    /// Wall seconds.
    pub wall_s: f64,
    /// CPU seconds of the simulating thread (the rates below are per CPU second, so that other
    /// work on the machine does not distort them).
    pub cpu_s: f64,
    /// Cycles per CPU second of each NIC (fabric cycles/s when two NICs share the core).
    pub cycles_per_s: Option<f64>,
    /// NIC-cycles per CPU second: `cycles_per_s * nics`.
    pub nic_cycles_per_s: Option<f64>,
    /// Operations per CPU second.
    pub messages_per_s: Option<f64>,
    /// Wall time inside the C++ `RnicSim::tick` (Verilated evaluation and port copies), when
    /// timed.
    pub tick_s: Option<f64>,
    /// Remarks.
    pub note: String,
}

/// Summary figures derived from the rows.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SpeedSummary {
    /// Bare Verilated model, idle inputs, no harness: cycles/s.
    pub bare_idle_cycles_per_s: f64,
    /// `RtlNic::step` of one idle NIC (port models, event log): cycles/s.
    pub rtlnic_idle_cycles_per_s: f64,
    /// Two idle NICs on the fabric (RTL backend): fabric cycles/s.
    pub fabric_idle_cycles_per_s: f64,
    /// Two NICs under the WRITE workload, RTL backend: fabric cycles/s.
    pub traffic_rtl_cycles_per_s: f64,
    /// Same, NIC-cycles/s.
    pub traffic_rtl_nic_cycles_per_s: f64,
    /// The Verilated evaluation alone under that traffic (timed inside `tick`): NIC-cycles/s.
    pub traffic_bare_nic_cycles_per_s: f64,
    /// Share of the time outside `tick` (Rust harness, link, driver, polling) under traffic.
    pub harness_share: f64,
    /// Lockstep CPU time / RTL CPU time - 1, same workload.
    pub lockstep_overhead: f64,
    /// Model backend, same workload: operations per wall second.
    pub model_messages_per_s: f64,
    /// Model backend: the RTL's cycles of the workload divided by the model's CPU time.
    pub model_equiv_cycles_per_s: f64,
    /// One 2 MiB RDMA WRITE in lockstep: wall seconds.
    pub write_2mib_lockstep_wall_s: f64,
    /// Its CPU seconds.
    pub write_2mib_lockstep_cpu_s: f64,
    /// Its modelled cycles.
    pub write_2mib_cycles: u64,
}

/// The speed report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SpeedReport {
    /// Every measurement.
    pub rows: Vec<SpeedRow>,
    /// Derived figures.
    pub summary: SpeedSummary,
}

#[allow(clippy::too_many_arguments)]
fn row(what: &str, backend: &str, nics: usize, cycles: u64, messages: u64, wall_s: f64, cpu_s: f64, tick_s: Option<f64>, note: &str) -> SpeedRow {
    let cps = (cycles > 0 && cpu_s > 0.0).then(|| cycles as f64 / cpu_s);
    SpeedRow {
        what: what.into(),
        backend: backend.into(),
        nics,
        cycles,
        messages,
        wall_s,
        cpu_s,
        cycles_per_s: cps,
        nic_cycles_per_s: cps.map(|c| c * nics as f64),
        messages_per_s: (messages > 0 && cpu_s > 0.0).then(|| messages as f64 / cpu_s),
        tick_s,
        note: note.into(),
    }
}

/// One workload on one backend, run `reps` times on one fabric after a warm-up: the run with the
/// least CPU time (the machine is shared, so the fastest run is the least disturbed), and the
/// wall seconds spent inside `RnicSim::tick` during it when `timed`.
fn workload(cfg: &BenchConfig, backend: Backend, test: Test, size: u64, iters: u64, timed: bool, reps: u32) -> Result<(Raw, Option<f64>), String> {
    let mut c = cfg.clone();
    c.backend = backend;
    c.max_size = c.max_size.max(size);
    let mut b = Bench::new(&c)?;
    // A warm-up point so that the measured run does not include first-touch effects.
    b.run(test, size, iters.min(4))?;
    let mut best: Option<(Raw, Option<f64>)> = None;
    for _ in 0..reps.max(1) {
        let ns0 = ffi::tick_time_ns();
        ffi::set_tick_timing(timed);
        let raw = b.run(test, size, iters);
        ffi::set_tick_timing(false);
        let raw = raw?;
        let tick = timed.then(|| (ffi::tick_time_ns() - ns0) as f64 / 1e9);
        if best.as_ref().is_none_or(|(r, _)| raw.cpu < r.cpu) {
            best = Some((raw, tick));
        }
    }
    b.settle()?;
    best.ok_or_else(|| "no run".to_string())
}

/// The smallest of `reps` results of `f`.
fn best_of(reps: u32, mut f: impl FnMut() -> Result<f64, String>) -> Result<f64, String> {
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        best = best.min(f()?);
    }
    Ok(best)
}

/// Run every measurement; `progress` gets a line before each.
///
/// # Errors
/// A simulation failure.
/// Every wall time is the best of `reps` runs.
pub fn measure(cfg: &BenchConfig, idle_cycles: u64, reps: u32, progress: &mut dyn FnMut(&str)) -> Result<SpeedReport, String> {
    let mut rep = SpeedReport::default();
    let mut s = SpeedSummary::default();

    progress("bare Verilated model, idle");
    let cpu = best_of(reps, || Ok(ffi::bare_idle_ticks(idle_cycles).map_err(|e| e.what().to_string())? as f64 / 1e9))?;
    rep.rows.push(row("bare Verilated eval, idle inputs", "bare", 1, idle_cycles, 0, cpu, cpu, None, "clock toggled in a C++ loop, no port copies, no Rust"));
    s.bare_idle_cycles_per_s = idle_cycles as f64 / cpu;

    progress("RtlNic, idle");
    let mem = HostMem::new(16 << 20).map_err(|e| e.to_string())?;
    let mut nic = RtlNic::new(mem).map_err(|e| e.to_string())?;
    let (mut wall, mut cpu) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..reps.max(1) {
        let (t, c) = (Instant::now(), ffi::thread_cpu_ns());
        nic.step(idle_cycles).map_err(|e| e.to_string())?;
        cpu = cpu.min((ffi::thread_cpu_ns() - c) as f64 / 1e9);
        wall = wall.min(t.elapsed().as_secs_f64());
    }
    rep.rows.push(row("RtlNic::step, one idle NIC", "rtl", 1, idle_cycles, 0, wall, cpu, None, "one Rust->C++ tick per cycle, DMA/MAC/MMIO port models"));
    s.rtlnic_idle_cycles_per_s = idle_cycles as f64 / cpu;
    drop(nic);

    progress("fabric, idle");
    let fab = Fabric::new(FabricConfig { backend: Backend::Rtl, link_delay: cfg.link_delay, dma_read_latency: cfg.dma_latency, capture: None, ..FabricConfig::default() })
        .map_err(|e| e.to_string())?;
    let (mut wall, mut cpu) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..reps.max(1) {
        let (t, c) = (Instant::now(), ffi::thread_cpu_ns());
        fab.borrow_mut().run_cycles(idle_cycles).map_err(|e| e.to_string())?;
        cpu = cpu.min((ffi::thread_cpu_ns() - c) as f64 / 1e9);
        wall = wall.min(t.elapsed().as_secs_f64());
    }
    rep.rows.push(row("fabric: two idle NICs", "rtl", 2, idle_cycles, 0, wall, cpu, None, "run_cycles in link-delay chunks"));
    s.fabric_idle_cycles_per_s = idle_cycles as f64 / cpu;
    drop(fab);

    let workloads: [(Test, u64, u64); 2] = [(Test::WriteBw, 65536, 32), (Test::SendBw, 64, 2000)];
    for (k, &(test, size, iters)) in workloads.iter().enumerate() {
        let name = format!("{test} {size} B x {iters}");
        progress(&format!("{name}: rtl"));
        let (rtl, _) = workload(cfg, Backend::Rtl, test, size, iters, false, reps)?;
        let (rtl_wall, rtl_cpu) = (rtl.wall.as_secs_f64(), rtl.cpu.as_secs_f64());
        rep.rows.push(row(&format!("{name}, two NICs"), "rtl", 2, rtl.cycles, rtl.messages, rtl_wall, rtl_cpu, None, "driver posting/polling every cycle"));
        progress(&format!("{name}: rtl, tick timed"));
        let (timed, tick) = workload(cfg, Backend::Rtl, test, size, iters, true, reps)?;
        let tick = tick.unwrap_or(0.0);
        let (t_wall, t_cpu) = (timed.wall.as_secs_f64(), timed.cpu.as_secs_f64());
        rep.rows.push(row(&format!("{name}, two NICs, tick timed"), "rtl", 2, timed.cycles, timed.messages, t_wall, t_cpu, Some(tick), "tick[s] = wall time inside RnicSim::tick, both NICs"));
        progress(&format!("{name}: lockstep"));
        let (ls, _) = workload(cfg, Backend::Lockstep, test, size, iters, false, reps)?;
        let ls_cpu = ls.cpu.as_secs_f64();
        rep.rows.push(row(&format!("{name}, two NICs"), "lockstep", 2, ls.cycles, ls.messages, ls.wall.as_secs_f64(), ls_cpu, None, "RTL + model + checker"));
        progress(&format!("{name}: model"));
        let (m, _) = workload(cfg, Backend::Model, test, size, iters, false, reps)?;
        let m_cpu = m.cpu.as_secs_f64().max(1e-9);
        let mut mr = row(&format!("{name}, two NICs"), "model", 2, 0, m.messages, m.wall.as_secs_f64(), m_cpu, None, "");
        mr.note = format!("equivalent {:.0} cycles/s (RTL cycles of the workload / model CPU time)", rtl.cycles as f64 / m_cpu);
        rep.rows.push(mr);
        if k == 0 {
            s.traffic_rtl_cycles_per_s = rtl.cycles as f64 / rtl_cpu;
            s.traffic_rtl_nic_cycles_per_s = 2.0 * s.traffic_rtl_cycles_per_s;
            // Share of the timed run's wall time inside tick, applied to its CPU time.
            let share = if t_wall > 0.0 { (tick / t_wall).min(1.0) } else { 0.0 };
            s.traffic_bare_nic_cycles_per_s = if share > 0.0 { 2.0 * timed.cycles as f64 / (t_cpu * share) } else { 0.0 };
            s.harness_share = 1.0 - share;
            s.lockstep_overhead = ls_cpu / rtl_cpu - 1.0;
            s.model_messages_per_s = m.messages as f64 / m_cpu;
            s.model_equiv_cycles_per_s = rtl.cycles as f64 / m_cpu;
        }
    }

    for backend in [Backend::Rtl, Backend::Lockstep] {
        let bname = if backend == Backend::Rtl { "rtl" } else { "lockstep" };
        progress(&format!("one 2 MiB RDMA WRITE: {bname}"));
        let mut c = cfg.clone();
        c.backend = backend;
        c.max_size = c.max_size.max(2 << 20);
        let mut b = Bench::new(&c)?;
        let mut raw = b.run(Test::WriteBw, 2 << 20, 1)?;
        for _ in 1..reps.max(1) {
            let r = b.run(Test::WriteBw, 2 << 20, 1)?;
            if r.cpu < raw.cpu {
                raw = r;
            }
        }
        b.settle()?;
        let wall = raw.wall.as_secs_f64();
        rep.rows.push(row("one 2 MiB RDMA WRITE, two NICs", bname, 2, raw.cycles, 1, wall, raw.cpu.as_secs_f64(), None, "post to completion"));
        if backend == Backend::Lockstep {
            s.write_2mib_lockstep_wall_s = wall;
            s.write_2mib_lockstep_cpu_s = raw.cpu.as_secs_f64();
            s.write_2mib_cycles = raw.cycles;
        }
    }
    rep.summary = s;
    Ok(rep)
}

/// The speed table as text.
pub fn table(rep: &SpeedReport) -> String {
    let mut out = format!(
        "{:<50} {:<9} {:>4} {:>11} {:>7} {:>8} {:>8} {:>13} {:>13} {:>10} {:>8}\n",
        "what", "backend", "NICs", "cycles/NIC", "ops", "wall[s]", "cpu[s]", "cycles/s/NIC", "NIC-cycles/s", "ops/s", "tick[s]"
    );
    let o = |v: Option<f64>, p: usize| v.map_or_else(|| "-".to_string(), |x| format!("{x:.p$}"));
    for r in &rep.rows {
        out += &format!(
            "{:<50} {:<9} {:>4} {:>11} {:>7} {:>8.3} {:>8.3} {:>13} {:>13} {:>10} {:>8}\n",
            r.what,
            r.backend,
            r.nics,
            r.cycles,
            r.messages,
            r.wall_s,
            r.cpu_s,
            o(r.cycles_per_s, 0),
            o(r.nic_cycles_per_s, 0),
            o(r.messages_per_s, 0),
            o(r.tick_s, 3)
        );
        if !r.note.is_empty() {
            out += &format!("    ({})\n", r.note);
        }
    }
    let s = &rep.summary;
    out += &format!(
        "\nsummary (rates per CPU second of the simulating thread):\n  bare Verilated eval, idle:            {:>10.0} cycles/s\n  RtlNic (Rust port models), idle:      {:>10.0} cycles/s\n  two NICs on the fabric, idle:         {:>10.0} fabric cycles/s\n  two NICs, WRITE 64 KiB traffic (rtl): {:>10.0} fabric cycles/s = {:.0} NIC-cycles/s\n  Verilated eval alone in that traffic: {:>10.0} NIC-cycles/s; Rust harness share of wall time {:.1} %\n  lockstep checker overhead vs rtl:     {:>+9.1} %\n  model backend, same workload:         {:>10.0} ops/s, equivalent {:.0} cycles/s\n  one 2 MiB WRITE in lockstep:          {:>10} cycles, {:.2} s wall, {:.2} s CPU\n",
        s.bare_idle_cycles_per_s,
        s.rtlnic_idle_cycles_per_s,
        s.fabric_idle_cycles_per_s,
        s.traffic_rtl_cycles_per_s,
        s.traffic_rtl_nic_cycles_per_s,
        s.traffic_bare_nic_cycles_per_s,
        100.0 * s.harness_share,
        100.0 * s.lockstep_overhead,
        s.model_messages_per_s,
        s.model_equiv_cycles_per_s,
        s.write_2mib_cycles,
        s.write_2mib_lockstep_wall_s,
        s.write_2mib_lockstep_cpu_s
    );
    out
}
