// SPDX-License-Identifier: Apache-2.0
//
// Thin C++ shim around the Verilated rnic_top for the cxx bridge in src/rtl.rs: one object owns
// its VerilatedContext, the model and (when opened) an FST writer; one call per clock cycle.
// Every entry point sets Verilated::threadContextp() to this object's context, so models on
// different threads (or several on one thread) stay independent. $stop/$fatal/$finish and
// Verilator runtime errors throw rnic::SimError, which cxx turns into a Rust Err.

#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

#include "rust/cxx.h"

class VerilatedContext;
class VerilatedFstC;
class Vrnic_top;

namespace rnic {

struct PortsIn;
struct PortsOut;

/// Error thrown by the shim and by the VL_USER_STOP/FATAL/FINISH hooks.
class SimError : public std::runtime_error {
 public:
  explicit SimError(const std::string& what) : std::runtime_error(what) {}
};

/// One Verilated NIC. Not thread-safe: use it from one thread at a time.
class RnicSim {
 public:
  RnicSim();
  ~RnicSim();
  RnicSim(const RnicSim&) = delete;
  RnicSim& operator=(const RnicSim&) = delete;

  /// Holds rst_ni low for `cycles` cycles with every other input at 0.
  void reset(uint32_t cycles);
  /// One clock cycle: applies `in` with clk low, evaluates, copies the outputs (the values the
  /// rising edge samples) into `out`, then evaluates the rising edge.
  void tick(const PortsIn& in, PortsOut& out);
  /// Dumps an FST to `path` for cycles [start_cycle, end_cycle). The file is opened when the
  /// window starts and closed when it ends (or by close_trace / destruction).
  void open_trace(rust::Str path, uint64_t start_cycle, uint64_t end_cycle);
  /// Closes the waveform (if open) and cancels a pending window.
  void close_trace();
  /// Number of clock cycles simulated so far (reset cycles included).
  uint64_t cycles() const { return cycles_; }
  /// Whether a trace window is pending or open.
  bool trace_active() const { return trace_end_ > trace_start_; }
  /// Toggles the clock `n` times with the current inputs (idle ready signals raised), without
  /// copying ports; returns the thread CPU time in nanoseconds. For bare_idle_ticks.
  uint64_t bare_clock(uint64_t n);

 private:
  void enter() const;
  void check_alive() const;
  void eval_half(bool clk);
  /// The rising half of tick() when no waveform is dumped. It skips the comb logic that the next
  /// eval() recomputes before anything can read it (see rnic_sim.cc and write_fast_edge in
  /// build.rs), so between rise() and the next eval_half(false) the model's comb signals and
  /// output ports are stale: nothing may read them there (tick() copies the outputs before it).
  void rise();
  void trace_edge();

  std::unique_ptr<VerilatedContext> ctx_;
  std::unique_ptr<Vrnic_top> top_;
  std::unique_ptr<VerilatedFstC> fst_;
  std::string trace_path_;
  uint64_t trace_start_ = 0;
  uint64_t trace_end_ = 0;
  uint64_t cycles_ = 0;
  bool dead_ = false;
  std::string dead_reason_;
};

/// Creates a new simulator (its own VerilatedContext).
std::unique_ptr<RnicSim> new_rnic_sim();

// ---- Simulation-speed measurement (rnic-bench --sim-speed) ----

/// The bare Verilated model's speed: creates a fresh simulator, resets it, then toggles the clock
/// `cycles` times with idle inputs (ready signals high, nothing valid) and no harness work at all
/// (no port copies, no Rust calls). Returns the CPU time of the clock loop in nanoseconds.
uint64_t bare_idle_ticks(uint64_t cycles);
/// Turns on/off (process-wide) the timing of RnicSim::tick: while on, every tick adds its wall
/// time (inputs applied, both evaluations, outputs copied) to a per-thread total.
void set_tick_timing(bool on);
/// Nanoseconds spent in RnicSim::tick on this thread while timing was on.
uint64_t tick_time_ns();
/// Ticks timed on this thread while timing was on.
uint64_t tick_time_count();
/// CPU time of the calling thread in nanoseconds (CLOCK_THREAD_CPUTIME_ID): speed figures that do
/// not depend on what else the machine runs.
uint64_t thread_cpu_ns();

}  // namespace rnic
