// SPDX-License-Identifier: Apache-2.0
//
// Per-QP retransmission timers (contract section 10a): the local ACK timeout and the RNR timer.
//
// Each QP has {mode, deadline} against a free-running 48-bit cycle counter. The engine sets a
// timer at the end of every task on a QP (and turns it off on CREATE/MODIFY/DESTROY_QP). A
// scanner visits one QP per cycle and holds the first expired timer it finds on exp_*_o until the
// engine takes it (which turns that timer off) or a set of the same QP makes it stale. When a
// timer fires is the RTL's choice: the engine reports the TIMER task on the trace port and the
// model follows it.
module rnic_timer
  import rnic_reg_pkg::*;
  import rnic_pkg::*;
#(
  parameter int unsigned NumQp = 1024,
  localparam int unsigned QpW = $clog2(NumQp)
) (
  input  logic           clk_i,
  input  logic           rst_ni,
  // set a QP's timer (never in the same cycle as exp_take_i)
  input  logic           set_i,
  input  logic [QpW-1:0] set_qpn_i,
  input  logic [1:0]     set_mode_i,     // TmrOff / TmrAck / TmrRnr
  input  logic           set_restart_i,  // ACK: restart a running ACK timer
  input  logic [4:0]     set_code_i,     // ACK: qpc.timeout; RNR: the NAK's timer field
  // the first expired timer found by the scanner
  output logic           exp_valid_o,
  output logic [QpW-1:0] exp_qpn_o,
  input  logic           exp_take_i
);

  // RNR waits in cycles of the nominal clock (IBTA table 45, from spec/rnic.toml).
  function automatic logic [47:0] rnr_cycles(logic [4:0] code);
    return 48'(RnrTimerUs[code] * ClockMhz);
  endfunction

  logic [47:0]    now_q, now_d;
  logic [NumQp-1:0][1:0] mode_q;
  logic [47:0]    dl_q [NumQp];
  logic [QpW-1:0] scan_q, scan_d;
  logic           pend_q, pend_d;
  logic [QpW-1:0] pqpn_q, pqpn_d;

  // write port of the timer memory
  logic           wr_en;
  logic [QpW-1:0] wr_qpn;
  logic [1:0]     wr_mode;
  logic [47:0]    wr_dl;

  always_comb begin
    now_d   = now_q + 48'd1;
    scan_d  = scan_q;
    pend_d  = pend_q;
    pqpn_d  = pqpn_q;
    wr_en   = 1'b0;
    wr_qpn  = set_qpn_i;
    wr_mode = set_mode_i;
    wr_dl   = dl_q[set_qpn_i];

    if (set_i) begin
      wr_en = 1'b1;
      unique case (set_mode_i)
        TmrAck: begin
          if (mode_q[set_qpn_i] != TmrAck || set_restart_i) begin
            wr_dl = now_q + (48'(AckTimeoutUnitCycles) << set_code_i);
          end
        end
        TmrRnr:  wr_dl = now_q + rnr_cycles(set_code_i);
        default: wr_mode = TmrOff;
      endcase
      // the pending expiry of this QP is stale now
      if (pend_q && pqpn_q == set_qpn_i) pend_d = 1'b0;
    end else if (exp_take_i && pend_q) begin
      wr_en   = 1'b1;
      wr_qpn  = pqpn_q;
      wr_mode = TmrOff;
      pend_d  = 1'b0;
    end

    // Scanner: one QP per cycle while nothing is pending. An entry being set in this cycle is
    // skipped (the read sees the old value).
    if (!pend_q) begin
      if (mode_q[scan_q] != TmrOff && now_q >= dl_q[scan_q] &&
          !(set_i && set_qpn_i == scan_q)) begin
        pend_d = 1'b1;
        pqpn_d = scan_q;
      end
      scan_d = (scan_q == QpW'(NumQp - 1)) ? '0 : scan_q + 1'b1;
    end
  end

  assign exp_valid_o = pend_q;
  assign exp_qpn_o   = pqpn_q;

  always_ff @(posedge clk_i) begin
    if (!rst_ni) begin
      now_q  <= '0;
      scan_q <= '0;
      pend_q <= 1'b0;
      pqpn_q <= '0;
    end else begin
      now_q  <= now_d;
      scan_q <= scan_d;
      pend_q <= pend_d;
      pqpn_q <= pqpn_d;
    end
  end

  // Timer modes: at most one entry changes per cycle, so they are written in place (write-enable
  // form, like the deadlines below) rather than through a full next-state copy: a 2048-bit
  // mode_d = mode_q default cost a 256-byte copy on every evaluation of the comb logic.
  always_ff @(posedge clk_i) begin
    if (!rst_ni) begin
      mode_q <= '0;
    end else if (wr_en) begin
      mode_q[wr_qpn] <= wr_mode;
    end
  end

  // Deadline memory (don't-care while a timer is off). The write-enable form is the RAM
  // inference template, not a d/q register.
  always_ff @(posedge clk_i) begin
    if (wr_en) dl_q[wr_qpn] <= wr_dl;
  end

endmodule
