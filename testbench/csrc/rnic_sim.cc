// SPDX-License-Identifier: Apache-2.0
//
// Implementation of the rnic_top shim (see rnic_sim.h) and of Verilator's user hooks
// vl_stop / vl_fatal / vl_finish, which throw instead of aborting the process.

#include "rnic-testbench/csrc/rnic_sim.h"

#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <ctime>

#include "Vrnic_top.h"
#include "rnic-testbench/src/rtl.rs.h"
#include "verilated.h"
#include "verilated_config.h"

// The rising edge without Verilator's input-combinational ("ico") pass, see RnicSim::rise().
// It drives the scheduler functions Verilator 5.006 generates, so it is compiled only for that
// version; any other version uses the plain eval() (same results, about 20 % slower).
#if VERILATOR_VERSION_INTEGER == 5006000 && !defined(RNIC_NO_FAST_EDGE)
#define RNIC_FAST_EDGE 1
#include "Vrnic_top__Syms.h"
#include "Vrnic_top___024root.h"
void Vrnic_top___024root___eval_triggers__act(Vrnic_top___024root* vlSelf);
void Vrnic_top___024root___eval_act(Vrnic_top___024root* vlSelf);
void Vrnic_top___024root___eval_nba(Vrnic_top___024root* vlSelf);
#else
#define RNIC_FAST_EDGE 0
#endif
#if VM_TRACE
#include "verilated_fst_c.h"
#else
// Built with RNIC_TRACE=0: no trace runtime; open_trace fails, nothing else refers to it.
class VerilatedFstC {
 public:
  void close() {}
  void dump(uint64_t) {}
};
#endif

namespace {

/// Picoseconds per clock cycle (250 MHz); the waveform shows real time.
constexpr uint64_t kCyclePs = 4000;

/// Tick timing for the speed measurement (see set_tick_timing).
std::atomic<bool> g_tick_timing{false};
thread_local uint64_t t_tick_ns = 0;
thread_local uint64_t t_tick_count = 0;

inline uint64_t now_ns() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

/// The last text the RTL printed on this thread (for error messages), bounded.
thread_local std::string t_printed;
constexpr size_t kPrintedKeep = 2048;

/// The last non-empty line the RTL printed on this thread, or "".
std::string last_printed_line() {
  size_t end = t_printed.find_last_not_of("\r\n");
  if (end == std::string::npos) return "";
  size_t start = t_printed.find_last_of('\n', end);
  start = (start == std::string::npos) ? 0 : start + 1;
  return t_printed.substr(start, end + 1 - start);
}

std::string where(const char* filename, int linenum, const char* hier) {
  std::string s;
  if (filename && filename[0]) {
    s += filename;
    s += ":" + std::to_string(linenum);
  }
  if (hier && hier[0]) {
    s += s.empty() ? "" : " ";
    s += "(";
    s += hier;
    s += ")";
  }
  return s;
}

}  // namespace

// ---- VL_PRINTF target: forward to Rust's print! and keep the tail for error messages.

void rnic_vl_printf(const char* fmt, ...) {
  char small[512];
  va_list ap;
  va_start(ap, fmt);
  int n = std::vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  std::string text;
  if (static_cast<size_t>(n) < sizeof small) {
    text.assign(small, static_cast<size_t>(n));
  } else {
    text.resize(static_cast<size_t>(n) + 1);
    va_start(ap, fmt);
    std::vsnprintf(&text[0], text.size(), fmt, ap);
    va_end(ap);
    text.resize(static_cast<size_t>(n));
  }
  // rust::Str must be UTF-8: replace anything outside printable ASCII and whitespace.
  for (char& c : text) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u >= 0x80 || (u < 0x20 && c != '\n' && c != '\t' && c != '\r')) c = '?';
  }
  t_printed += text;
  if (t_printed.size() > 2 * kPrintedKeep) t_printed.erase(0, t_printed.size() - kPrintedKeep);
  rnic::rnic_rtl_print(rust::Str(text.data(), text.size()));
}

// ---- Verilator user hooks (VL_USER_STOP / VL_USER_FATAL / VL_USER_FINISH are defined for every
// translation unit of the model and the runtime).

void vl_stop(const char* filename, int linenum, const char* hier) VL_MT_UNSAFE {
  Verilated::threadContextp()->gotError(true);
  Verilated::threadContextp()->gotFinish(true);
  Verilated::runFlushCallbacks();
  std::string said = last_printed_line();
  throw rnic::SimError("RTL $stop/$fatal or failed assertion at " +
                       where(filename, linenum, hier) +
                       (said.empty() ? std::string() : ": " + said));
}

void vl_fatal(const char* filename, int linenum, const char* hier, const char* msg) VL_MT_UNSAFE {
  Verilated::threadContextp()->gotError(true);
  Verilated::threadContextp()->gotFinish(true);
  Verilated::runFlushCallbacks();
  throw rnic::SimError(std::string("Verilator fatal error at ") + where(filename, linenum, hier) +
                       ": " + (msg ? msg : "(no message)"));
}

void vl_finish(const char* filename, int linenum, const char* hier) VL_MT_UNSAFE {
  (void)filename;
  (void)linenum;
  (void)hier;
  // Recorded; RnicSim::tick reports it as an error after the edge completes.
  Verilated::threadContextp()->gotFinish(true);
}

namespace rnic {

namespace {

inline void put_wide(VlWide<16>& dst, const std::array<uint64_t, 8>& src) {
  for (size_t i = 0; i < 8; ++i) {
    dst[2 * i] = static_cast<EData>(src[i]);
    dst[2 * i + 1] = static_cast<EData>(src[i] >> 32);
  }
}

inline void get_wide(std::array<uint64_t, 8>& dst, const VlWide<16>& src) {
  for (size_t i = 0; i < 8; ++i) {
    dst[i] = static_cast<uint64_t>(src[2 * i]) | (static_cast<uint64_t>(src[2 * i + 1]) << 32);
  }
}

}  // namespace

RnicSim::RnicSim() : ctx_(new VerilatedContext) {
  enter();
#ifdef RNIC_NO_RTL
  throw SimError(
      "rtl/rnic_top.sv did not exist when rnic-testbench was built, so there is no RTL to "
      "simulate: add the RTL top level and rebuild (cargo rebuilds automatically)");
#endif
#if VM_TRACE
  ctx_->traceEverOn(true);
#endif
  ctx_->fatalOnError(true);
  top_.reset(new Vrnic_top(ctx_.get(), "TOP"));
  top_->clk_i = 0;
  top_->rst_ni = 0;
}

RnicSim::~RnicSim() {
  enter();
  try {
    if (fst_) fst_->close();
    fst_.reset();
    if (!dead_) top_->final();
  } catch (...) {
    // Destructors must not throw; a failing final block has nothing left to report to.
  }
  top_.reset();
}

void RnicSim::enter() const { Verilated::threadContextp(ctx_.get()); }

void RnicSim::check_alive() const {
  if (dead_) {
    throw SimError("the simulation stopped earlier (" + dead_reason_ +
                   "); create a new RtlNic to continue");
  }
}

void RnicSim::trace_edge() {
  if (trace_end_ <= trace_start_) return;
#if VM_TRACE
  if (!fst_ && cycles_ >= trace_start_ && cycles_ < trace_end_) {
    fst_.reset(new VerilatedFstC);
    top_->trace(fst_.get(), 99);
    fst_->open(trace_path_.c_str());
    if (!fst_->isOpen()) {
      fst_.reset();
      trace_start_ = trace_end_ = 0;
      throw SimError("cannot open the waveform file " + trace_path_ +
                     " (check that its directory exists and is writable)");
    }
  }
#endif
  if (fst_) fst_->dump(ctx_->time());
}

void RnicSim::eval_half(bool clk) {
  top_->clk_i = clk;
  try {
    top_->eval();
  } catch (const std::exception& e) {
    dead_ = true;
    dead_reason_ = e.what();
    if (fst_) fst_->close();
    throw;
  }
  trace_edge();
  ctx_->timeInc(kCyclePs / 2);
  if (ctx_->gotFinish()) {
    dead_ = true;
    dead_reason_ = "the RTL executed $finish";
    if (fst_) fst_->close();
    throw SimError("the RTL executed $finish at cycle " + std::to_string(cycles_));
  }
}

void RnicSim::rise() {
#if RNIC_FAST_EDGE
  // eval() starts with the "ico" pass, which re-evaluates every combinational block that reads a
  // top-level input (in this design most of the framers, the MMIO block and much of the engine)
  // whether or not an input changed. tick() has just evaluated the same inputs with the clock
  // low, and no logic reads clk_i except the edge trigger, so that pass would recompute the same
  // values: about a fifth of the simulation time. This is the rest of Verilator 5.006's _eval
  // (Vrnic_top___024root___eval): the active/NBA loop, which sees the posedge and runs the
  // flops and the logic behind them, with the same iteration limits.
  Vrnic_top___024root* r = top_->rootp;
  try {
    top_->clk_i = 1;
    decltype(r->__VactTriggered) pre;
    uint32_t nba_iter = 0;
    bool nba_continue = true;
    while (nba_continue) {
      nba_continue = false;
      r->__VnbaTriggered.clear();
      r->__VactIterCount = 0;
      r->__VactContinue = 1;
      while (r->__VactContinue) {
        r->__VactContinue = 0;
        Vrnic_top___024root___eval_triggers__act(r);
        if (r->__VactTriggered.any()) {
          r->__VactContinue = 1;
          if (VL_UNLIKELY(r->__VactIterCount > 100)) {
            throw SimError("Verilator: active region did not converge at cycle " +
                           std::to_string(cycles_));
          }
          ++r->__VactIterCount;
          pre.andNot(r->__VactTriggered, r->__VnbaTriggered);
          r->__VnbaTriggered.set(r->__VactTriggered);
          Vrnic_top___024root___eval_act(r);
        }
      }
      if (r->__VnbaTriggered.any()) {
        nba_continue = true;
        if (VL_UNLIKELY(nba_iter > 100)) {
          throw SimError("Verilator: NBA region did not converge at cycle " +
                         std::to_string(cycles_));
        }
        ++nba_iter;
        Vrnic_top___024root___eval_nba(r);
      }
    }
    Verilated::endOfThreadMTask(r->vlSymsp->__Vm_evalMsgQp);
    Verilated::endOfEval(r->vlSymsp->__Vm_evalMsgQp);
  } catch (const std::exception& e) {
    dead_ = true;
    dead_reason_ = e.what();
    if (fst_) fst_->close();
    throw;
  }
  ctx_->timeInc(kCyclePs / 2);
  if (ctx_->gotFinish()) {
    dead_ = true;
    dead_reason_ = "the RTL executed $finish";
    throw SimError("the RTL executed $finish at cycle " + std::to_string(cycles_));
  }
#else
  eval_half(true);
#endif
}

void RnicSim::reset(uint32_t cycles) {
  enter();
  check_alive();
  PortsIn zero{};
  PortsOut ignored{};
  for (uint32_t i = 0; i < cycles; ++i) {
    top_->rst_ni = 0;
    tick(zero, ignored);
  }
}

void RnicSim::tick(const PortsIn& in, PortsOut& out) {
  enter();
  check_alive();
  const bool timed = g_tick_timing.load(std::memory_order_relaxed);
  const uint64_t t0 = timed ? now_ns() : 0;
  Vrnic_top& t = *top_;
  // rst_ni is low only inside reset(), which clears it before each of its ticks.
  t.mmio_req_valid_i = in.mmio_req_valid;
  t.mmio_req_write_i = in.mmio_req_write;
  t.mmio_req_cfg_i = in.mmio_req_cfg;
  t.mmio_req_func_i = in.mmio_req_func;
  t.mmio_req_addr_i = in.mmio_req_addr;
  t.mmio_req_wdata_i = in.mmio_req_wdata;
  t.dma_rd_req_ready_i = in.dma_rd_req_ready;
  t.dma_rd_cpl_valid_i = in.dma_rd_cpl_valid;
  t.dma_rd_cpl_tag_i = in.dma_rd_cpl_tag;
  put_wide(t.dma_rd_cpl_data_i, in.dma_rd_cpl_data);
  t.dma_rd_cpl_last_i = in.dma_rd_cpl_last;
  t.dma_wr_ready_i = in.dma_wr_ready;
  t.tx_tready_i = in.tx_tready;
  t.rx_tvalid_i = in.rx_tvalid;
  put_wide(t.rx_tdata_i, in.rx_tdata);
  t.rx_tkeep_i = in.rx_tkeep;
  t.rx_tlast_i = in.rx_tlast;

  eval_half(false);

  out.mmio_req_ready = t.mmio_req_ready_o;
  out.mmio_rsp_valid = t.mmio_rsp_valid_o;
  out.mmio_rsp_rdata = t.mmio_rsp_rdata_o;
  out.dma_rd_req_valid = t.dma_rd_req_valid_o;
  out.dma_rd_req_tag = t.dma_rd_req_tag_o;
  out.dma_rd_req_func = t.dma_rd_req_func_o;
  out.dma_rd_req_addr = t.dma_rd_req_addr_o;
  out.dma_rd_req_len = t.dma_rd_req_len_o;
  out.dma_wr_valid = t.dma_wr_valid_o;
  out.dma_wr_func = t.dma_wr_func_o;
  out.dma_wr_addr = t.dma_wr_addr_o;
  out.dma_wr_len = t.dma_wr_len_o;
  get_wide(out.dma_wr_data, t.dma_wr_data_o);
  out.dma_wr_last = t.dma_wr_last_o;
  out.msix_valid = t.msix_valid_o;
  out.msix_func = t.msix_func_o;
  out.msix_vector = t.msix_vector_o;
  out.tx_tvalid = t.tx_tvalid_o;
  get_wide(out.tx_tdata, t.tx_tdata_o);
  out.tx_tkeep = t.tx_tkeep_o;
  out.tx_tlast = t.tx_tlast_o;
  out.rx_tready = t.rx_tready_o;
  out.lb_valid = t.lb_valid_o;
  if (out.lb_valid) get_wide(out.lb_tdata, t.lb_tdata_o);
  out.lb_tkeep = t.lb_tkeep_o;
  out.lb_tlast = t.lb_tlast_o;
  out.esw_drop = t.esw_drop_o;
  out.trace_valid = t.trace_valid_o;
  out.trace_kind = t.trace_kind_o;
  out.trace_qpn = t.trace_qpn_o;
  out.trace_func = t.trace_func_o;
  out.cycle = t.cycle_o;

  // While a waveform window is pending or open, both halves go through eval() so that the dump
  // sees every evaluation exactly as before.
  if (trace_end_ > trace_start_) {
    eval_half(true);
  } else {
    rise();
  }
  ++cycles_;
  if (fst_ && cycles_ >= trace_end_) {
    fst_->close();
    fst_.reset();
    trace_start_ = trace_end_ = 0;
  }
  t.rst_ni = 1;
  if (timed) {
    t_tick_ns += now_ns() - t0;
    ++t_tick_count;
  }
}

void RnicSim::open_trace(rust::Str path, uint64_t start_cycle, uint64_t end_cycle) {
  enter();
  check_alive();
  if (end_cycle <= start_cycle) {
    throw SimError("empty waveform window [" + std::to_string(start_cycle) + ", " +
                   std::to_string(end_cycle) + "): end_cycle must be after start_cycle");
  }
#if !VM_TRACE
  throw SimError("this testbench was built with RNIC_TRACE=0 (no waveform support): rebuild "
                 "without it to dump " + std::string(path));
#endif
  close_trace();
  trace_path_ = std::string(path);
  trace_start_ = start_cycle;
  trace_end_ = end_cycle;
}

void RnicSim::close_trace() {
  enter();
  if (fst_) {
    fst_->close();
    fst_.reset();
  }
  trace_start_ = trace_end_ = 0;
}

std::unique_ptr<RnicSim> new_rnic_sim() { return std::make_unique<RnicSim>(); }

uint64_t RnicSim::bare_clock(uint64_t n) {
  enter();
  check_alive();
  Vrnic_top& t = *top_;
  t.dma_rd_req_ready_i = 1;
  t.dma_wr_ready_i = 1;
  t.tx_tready_i = 1;
  const uint64_t t0 = thread_cpu_ns();
  // The same two halves as tick(), without the port copies.
  for (uint64_t i = 0; i < n; ++i) {
    eval_half(false);
    rise();
  }
  cycles_ += n;
  return thread_cpu_ns() - t0;
}

uint64_t bare_idle_ticks(uint64_t cycles) {
  RnicSim sim;
  sim.reset(16);
  return sim.bare_clock(cycles);
}

void set_tick_timing(bool on) { g_tick_timing.store(on, std::memory_order_relaxed); }
uint64_t tick_time_ns() { return t_tick_ns; }
uint64_t tick_time_count() { return t_tick_count; }

uint64_t thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace rnic
