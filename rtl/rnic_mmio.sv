// SPDX-License-Identifier: Apache-2.0
//
// BAR0 decode (docs/architecture.md section 4): identification and capability registers, the
// command argument/opcode/status/output registers, the counter block and the doorbell window, for
// the PF and every VF (section 4, Functions: each function has its own command interface; the
// engine takes pending commands round-robin over the functions).
//
// * Writes are accepted in the cycle of the handshake. A CMD_OP write marks the command pending and
//   BUSY; the engine takes it (cmd_start_i, latching the argument registers' current values) and
//   ends it (cmd_done_i with status and outputs).
// * Doorbell writes go into a 16-entry FIFO that the engine pops with DB tasks; a doorbell write to
//   a full FIFO is back-pressured (mmio_req_ready_o low).
// * Reads are ordered after tasks: an accepted read is held pending (rd_pend_o, which stops the
//   engine from starting a new task) and answered only in a cycle where the engine is between tasks
//   (eng_idle_i). No request is accepted while a read is pending, so responses stay in request
//   order and a read sees every write accepted before it.
// * Configuration requests (mmio_req_cfg_i) go to rnic_cfg and are answered in the next cycle:
//   they touch no engine state, so they need no ordering after tasks.
// * Counters: increments come from the engine (cnt_inc_i, one pulse = +1) and MMIO_BAD from here.
// * Function Level Reset (docs/architecture.md section 4): a function in reset (func_rst_o, from
//   rnic_cfg) does not decode memory requests; the engine's FLR task resets its command interface
//   (flr_start_i) and its FLR_DONE task ends the reset (flr_done_i), both in their trace cycle.
module rnic_mmio
  import rnic_pkg::*;
  import rnic_reg_pkg::*;
#(
  parameter int unsigned NumVf  = 8,
  parameter int unsigned NumQp  = 1024,
  parameter int unsigned NumCq  = 1024,
  parameter int unsigned NumMr  = 1024,
  parameter int unsigned NumPd  = 1024,
  parameter int unsigned NumMtt = 16384
) (
  input  logic         clk_i,
  input  logic         rst_ni,

  input  logic         mmio_req_valid_i,
  output logic         mmio_req_ready_o,
  input  logic         mmio_req_write_i,
  input  logic         mmio_req_cfg_i,
  input  logic [7:0]   mmio_req_func_i,
  input  logic [31:0]  mmio_req_addr_i,
  input  logic [63:0]  mmio_req_wdata_i,
  output logic         mmio_rsp_valid_o,
  output logic [63:0]  mmio_rsp_rdata_o,

  // command interface to the engine (the selected function's command)
  output logic         cmd_valid_o,
  output logic [7:0]   cmd_func_o,
  output logic [7:0]   cmd_op_o,
  output logic [383:0] cmd_args_o,
  input  logic         cmd_start_i,
  input  logic         cmd_done_i,
  input  logic [7:0]   cmd_status_i,
  input  logic [63:0]  cmd_out0_i,
  input  logic [63:0]  cmd_out1_i,

  // doorbell FIFO head: kind 0 SQ_PI, 1 RQ_PI, 2 CQ_CI, 3 CQ_ARM
  output logic         db_valid_o,
  output logic [1:0]   db_kind_o,
  output logic [23:0]  db_idx_o,
  output logic [63:0]  db_val_o,
  output logic [7:0]   db_func_o,
  input  logic         db_pop_i,

  // functions: the VF resource profile (from the engine) and which functions exist (to it)
  input  logic [15:0]       vfres_vfs_i,
  input  logic [4:0][23:0]  vfres_q_i,
  output logic              vf_en_o,
  output logic [NumVf:0]    func_on_o,
  output logic [NumVf:0]    func_rst_o,     // teardown pending (FLR or VF disable), registered
  input  logic              flr_start_i,    // the FLR task of flr_func_i starts
  input  logic              flr_done_i,     // the FLR_DONE task of flr_func_i starts
  input  logic [7:0]        flr_func_i,

  // read ordering
  output logic         rd_pend_o,
  input  logic         eng_idle_i,

  input  logic [CounterNum-1:0] cnt_inc_i
);

  localparam int unsigned DbDepth = 16;
  localparam int unsigned DbEntW  = 8 + 2 + 24 + 64;
  localparam int unsigned NumFunc = NumVf + 1;
  localparam int unsigned FuncW   = $clog2(NumFunc + 1);

  localparam logic [63:0] DevCaps  = {NumPd[15:0], NumMr[15:0], NumCq[15:0], NumQp[15:0]};
  localparam logic [63:0] DevCaps2 = {16'd0, MaxRecvSge[7:0], MaxSendSge[7:0], NumMtt[31:0]};

  ////////////////
  // Registers  //
  ////////////////

  // Per-function command interface.
  logic [NumFunc-1:0][5:0][63:0] args_q;
  // Write ports of args_q (see the always_ff that writes it).
  logic                          args_clr;   // FLR: clear the arguments of flr_func_i
  logic                          args_we;    // CMD_ARG write: args_q[req_f][args_idx]
  logic [2:0]                    args_idx;
  logic [NumFunc-1:0][7:0]    op_q, op_d;
  logic [NumFunc-1:0]         pend_q, pend_d;     // command queued, not yet taken by the engine
  logic [NumFunc-1:0]         busy_q, busy_d;     // CMD_OP write .. end of the CMD task
  logic [NumFunc-1:0][7:0]    status_q, status_d;
  logic [NumFunc-1:0][63:0]   out0_q, out0_d, out1_q, out1_d;
  logic [FuncW-1:0]           last_q, last_d;     // function of the last command taken
  logic [FuncW-1:0]           run_f_q, run_f_d;   // function of the running command
  logic [FuncW-1:0]           sel;                // function whose command is offered
  logic                       sel_valid;
  logic [CounterNum-1:0][63:0] cnt_q, cnt_d;
  logic unused_cnt_off;
  logic                       rd_pend_q, rd_pend_d;
  logic [7:0]                 rd_func_q, rd_func_d;
  logic [31:0]                rd_addr_q, rd_addr_d;
  logic                       rsp_valid_q, rsp_valid_d;
  logic [63:0]                rsp_data_q, rsp_data_d;

  logic [DbEntW-1:0]          db_mem_q [DbDepth];
  logic [DbEntW-1:0]          db_wdata;
  logic                       db_push;
  logic [4:0]                 db_cnt_q, db_cnt_d;
  logic [3:0]                 db_rp_q, db_rp_d, db_wp_q, db_wp_d;

  ////////////////
  // Decode     //
  ////////////////

  logic        acc;          // memory request accepted this cycle
  logic        cfg_acc;      // configuration request accepted this cycle
  logic        wr_db_ok;     // accepted write that is a valid doorbell
  logic [1:0]  wr_db_kind;
  logic [23:0] wr_db_idx;
  logic        addr_in_qp_win, addr_in_cq_win;
  logic [11:0] page_off;
  logic [FuncW-1:0] req_f;   // the request's function, if it is one of ours

  assign addr_in_qp_win = mmio_req_addr_i >= DbQpBase[31:0] && mmio_req_addr_i < DbCqBase[31:0];
  assign addr_in_cq_win = mmio_req_addr_i >= DbCqBase[31:0] &&
                          mmio_req_addr_i < (DbCqBase[31:0] + (DbCqBase[31:0] - DbQpBase[31:0]));
  assign page_off = mmio_req_addr_i[11:0];
  assign req_f    = FuncW'(mmio_req_func_i);

  always_comb begin
    wr_db_ok   = 1'b0;
    wr_db_kind = 2'd0;
    wr_db_idx  = '0;
    if (addr_in_qp_win) begin
      wr_db_idx  = 24'(((mmio_req_addr_i - DbQpBase[31:0]) >> DbPageShift));
      wr_db_kind = (page_off == DbRqPi[11:0]) ? 2'd1 : 2'd0;
      wr_db_ok   = (page_off == DbSqPi[11:0] || page_off == DbRqPi[11:0]) && 32'(wr_db_idx) < NumQp;
    end else if (addr_in_cq_win) begin
      wr_db_idx  = 24'(((mmio_req_addr_i - DbCqBase[31:0]) >> DbPageShift));
      wr_db_kind = (page_off == DbCqArm[11:0]) ? 2'd3 : 2'd2;
      wr_db_ok   = (page_off == DbCqCi[11:0] || page_off == DbCqArm[11:0]) &&
                   32'(wr_db_idx) < NumCq;
    end
  end

  // Configuration space (docs/sriov.md).
  logic [31:0] cfg_rdata;
  logic        pf_mem_en, pf_master, vf_en, vf_mem_en;
  logic [15:0] num_vfs;
  logic [NumVf:0] func_rst;  // in reset, already cleared in the cycle FLR_DONE starts
  logic        unused_cfg;
  assign unused_cfg = ^{pf_mem_en, pf_master, mmio_req_addr_i[1:0], mmio_req_wdata_i[63:32]};

  rnic_cfg #(.NumVf(NumVf)) u_cfg (
    .clk_i,
    .rst_ni,
    .req_i       (cfg_acc),
    .we_i        (mmio_req_write_i),
    .func_i      (mmio_req_func_i),
    .dw_i        (mmio_req_addr_i[11:2]),
    .wdata_i     (mmio_req_wdata_i[31:0]),
    .rdata_o     (cfg_rdata),
    .pf_mem_en_o (pf_mem_en),
    .pf_master_o (pf_master),
    .vf_en_o     (vf_en),
    .vf_mem_en_o (vf_mem_en),
    .num_vfs_o   (num_vfs),
    .done_i      (flr_done_i),
    .done_func_i (flr_func_i),
    .rst_o       (func_rst),
    .pend_o      (func_rst_o)
  );

  // Which functions exist (for receive steering) and which decode memory requests.
  logic [NumFunc-1:0] decodes;
  always_comb begin
    for (int unsigned f = 0; f < NumFunc; f++) begin
      func_on_o[f] = (f == 0) || (vf_en && 16'(f) <= num_vfs);
      decodes[f]   = (f == 0) || (func_on_o[f] && vf_mem_en && !func_rst[f]);
    end
  end
  assign vf_en_o = vf_en;

  // A function number past the last VF never decodes.
  function automatic logic dec(logic [7:0] f, logic [NumFunc-1:0] d);
    return 32'(f) < NumFunc && d[FuncW'(f)];
  endfunction

  // A CMD task runs from cmd_start_i to cmd_done_i. A CMD_OP write in that window (on any
  // function) is held back until the task ends: the model executes a command atomically at its
  // trace event, so it can only agree with us if no CMD_OP write is accepted while one runs.
  logic run_q, run_d;
  assign run_d = (run_q || cmd_start_i) && !cmd_done_i;
  always_ff @(posedge clk_i) begin
    if (!rst_ni) run_q <= 1'b0;
    else         run_q <= run_d;
  end

  // Back-pressure: nothing while a read is pending (ordering), doorbells while the FIFO is full,
  // CMD_OP while a CMD task runs.
  logic is_mem_wr;
  assign is_mem_wr = !mmio_req_cfg_i && mmio_req_write_i && dec(mmio_req_func_i, decodes);
  assign mmio_req_ready_o = !rd_pend_q &&
                            !(is_mem_wr && wr_db_ok && db_cnt_q == 5'(DbDepth)) &&
                            !(is_mem_wr && mmio_req_addr_i == RegCmdOp && (run_q || cmd_start_i));
  assign acc     = mmio_req_valid_i && mmio_req_ready_o && !mmio_req_cfg_i;
  assign cfg_acc = mmio_req_valid_i && mmio_req_ready_o && mmio_req_cfg_i;

  // Round-robin choice of the next command: the first function with one pending after last_q.
  always_comb begin
    sel       = '0;
    sel_valid = 1'b0;
    for (int unsigned k = NumFunc; k >= 1; k--) begin
      logic [FuncW-1:0] f;
      f = FuncW'((32'(last_q) + k) % NumFunc);
      if (pend_q[f]) begin
        sel       = f;
        sel_valid = 1'b1;
      end
    end
  end

  // Read data of the register file at a BAR offset; bad = unknown or not readable.
  logic [63:0] rd_data;
  logic        rd_bad;
  logic [31:0] cnt_off;
  logic [$clog2(CounterNum)-1:0] cnt_sel;
  logic [FuncW-1:0] rf;
  assign cnt_off = rd_addr_q - RegCounters;
  assign unused_cnt_off = ^{cnt_off[31:3 + $clog2(CounterNum)], cnt_off[2:0]};
  assign cnt_sel = cnt_off[3 +: $clog2(CounterNum)];
  assign rf      = FuncW'(rd_func_q);

  always_comb begin
    rd_data = '0;
    rd_bad  = 1'b0;
    if (!dec(rd_func_q, decodes)) begin
      rd_data = '1;
      rd_bad  = 1'b1;
    end else if (rd_addr_q[2:0] != 3'd0) begin
      rd_bad = 1'b1;
    end else if (rd_addr_q == RegDevId) begin
      rd_data = RegDevIdReset;
    end else if (rd_addr_q == RegDevCaps) begin
      rd_data = DevCaps;
    end else if (rd_addr_q == RegDevCaps2) begin
      rd_data = DevCaps2;
    end else if (rd_addr_q == RegFuncId) begin
      rd_data = 64'(rd_func_q);
    end else if (rd_addr_q == RegResQp) begin
      rd_data = res_range(rd_func_q, NumQp, vfres_vfs_i, vfres_q_i[0]);
    end else if (rd_addr_q == RegResCq) begin
      rd_data = res_range(rd_func_q, NumCq, vfres_vfs_i, vfres_q_i[1]);
    end else if (rd_addr_q == RegResMr) begin
      rd_data = res_range(rd_func_q, NumMr, vfres_vfs_i, vfres_q_i[2]);
    end else if (rd_addr_q == RegResPd) begin
      rd_data = res_range(rd_func_q, NumPd, vfres_vfs_i, vfres_q_i[3]);
    end else if (rd_addr_q == RegResMtt) begin
      rd_data = res_range(rd_func_q, NumMtt, vfres_vfs_i, vfres_q_i[4]);
    end else if (rd_addr_q >= RegCmdArg0 && rd_addr_q <= RegCmdArg5) begin
      rd_data = args_q[rf][3'((rd_addr_q - RegCmdArg0) >> 3)];
    end else if (rd_addr_q == RegCmdStatus) begin
      rd_data = busy_q[rf] ? 64'(CmdStatusBusy) : 64'(status_q[rf]);
    end else if (rd_addr_q == RegCmdOut0) begin
      rd_data = out0_q[rf];
    end else if (rd_addr_q == RegCmdOut1) begin
      rd_data = out1_q[rf];
    end else if (rd_addr_q >= RegCounters && rd_addr_q < RegCounters + 8 * CounterNum) begin
      rd_data = cnt_q[cnt_sel];
    end else begin
      // CMD_OP is write-only: reading it is treated like an unknown offset.
      rd_bad = 1'b1;
    end
  end

  ////////////////
  // Next state //
  ////////////////

  logic wr_bad;
  logic answer;

  always_comb begin
    args_clr    = 1'b0;
    args_we     = 1'b0;
    args_idx    = 3'((mmio_req_addr_i - RegCmdArg0) >> 3);
    op_d        = op_q;
    pend_d      = pend_q;
    busy_d      = busy_q;
    status_d    = status_q;
    out0_d      = out0_q;
    out1_d      = out1_q;
    last_d      = last_q;
    run_f_d     = run_f_q;
    rd_pend_d   = rd_pend_q;
    rd_func_d   = rd_func_q;
    rd_addr_d   = rd_addr_q;
    rsp_valid_d = 1'b0;
    rsp_data_d  = rsp_data_q;
    db_push     = 1'b0;
    db_wdata    = {mmio_req_func_i, wr_db_kind, wr_db_idx, mmio_req_wdata_i};
    wr_bad      = 1'b0;
    answer      = 1'b0;

    // engine side of the command handshake
    if (cmd_start_i) begin
      pend_d[sel] = 1'b0;
      out0_d[sel] = '0;
      out1_d[sel] = '0;
      last_d      = sel;
      run_f_d     = sel;
    end
    if (cmd_done_i) begin
      busy_d[run_f_q]   = 1'b0;
      status_d[run_f_q] = cmd_status_i;
      out0_d[run_f_q]   = cmd_out0_i;
      out1_d[run_f_q]   = cmd_out1_i;
    end

    // FLR: the function's command interface resets (no command of it can be running: tasks are
    // sequential, and none is taken in this cycle)
    if (flr_start_i && 32'(flr_func_i) < NumFunc) begin
      args_clr                     = 1'b1;
      op_d[FuncW'(flr_func_i)]     = '0;
      pend_d[FuncW'(flr_func_i)]   = 1'b0;
      busy_d[FuncW'(flr_func_i)]   = 1'b0;
      status_d[FuncW'(flr_func_i)] = '0;
      out0_d[FuncW'(flr_func_i)]   = '0;
      out1_d[FuncW'(flr_func_i)]   = '0;
    end

    // answer a pending read between tasks
    if (rd_pend_q && eng_idle_i) begin
      answer      = 1'b1;
      rd_pend_d   = 1'b0;
      rsp_valid_d = 1'b1;
      rsp_data_d  = rd_data;
    end

    if (cfg_acc && !mmio_req_write_i) begin
      rsp_valid_d = 1'b1;
      rsp_data_d  = 64'(cfg_rdata);
    end

    if (acc) begin
      if (!mmio_req_write_i) begin
        rd_pend_d = 1'b1;
        rd_func_d = mmio_req_func_i;
        rd_addr_d = mmio_req_addr_i;
      end else if (!dec(mmio_req_func_i, decodes)) begin
        wr_bad = 1'b1;
      end else if (mmio_req_addr_i >= RegCmdArg0 && mmio_req_addr_i <= RegCmdArg5 &&
                   mmio_req_addr_i[2:0] == 3'd0) begin
        args_we = 1'b1;
      end else if (mmio_req_addr_i == RegCmdOp) begin
        if (busy_q[req_f]) begin
          wr_bad = 1'b1;
        end else begin
          pend_d[req_f] = 1'b1;
          busy_d[req_f] = 1'b1;
          op_d[req_f]   = mmio_req_wdata_i[7:0];
        end
      end else if (wr_db_ok) begin
        db_push = 1'b1;
      end else begin
        wr_bad = 1'b1;
      end
    end
  end

  always_comb begin
    cnt_d = cnt_q;
    for (int unsigned i = 0; i < CounterNum; i++) begin
      if (cnt_inc_i[i]) cnt_d[i] = cnt_q[i] + 64'd1;
    end
    if (wr_bad || (answer && rd_bad)) begin
      cnt_d[CounterMmioBad] = cnt_d[CounterMmioBad] + 64'd1;
    end
  end

  // Doorbell coalescing (section 4, Doorbells): a doorbell for the same function, kind and queue
  // as the newest one still waiting in the FIFO (not the one the engine takes this cycle) replaces
  // its value instead of taking a new entry, as a doorbell register would: a burst of doorbells
  // for one queue costs one engine task.
  logic [DbEntW-1:0] db_tail;
  logic              db_merge;
  assign db_tail  = db_mem_q[db_wp_q - 4'd1];
  assign db_merge = db_push && (db_cnt_q > 5'd1 || (db_cnt_q == 5'd1 && !db_pop_i)) &&
                    db_tail[DbEntW-1:64] == db_wdata[DbEntW-1:64];
  logic [63:0] unused_db_tail;   // (the newest doorbell's value is replaced, not read)
  assign unused_db_tail = db_tail[63:0];

  // doorbell FIFO pointers
  always_comb begin
    db_rp_d  = db_rp_q;
    db_wp_d  = db_wp_q;
    db_cnt_d = db_cnt_q;
    if (db_push && !db_merge) begin
      db_wp_d = db_wp_q + 4'd1;
    end
    if (db_pop_i && db_cnt_q != 5'd0) begin
      db_rp_d = db_rp_q + 4'd1;
    end
    db_cnt_d = db_cnt_q + 5'(db_push && !db_merge) - 5'(db_pop_i && db_cnt_q != 5'd0);
  end

  always_ff @(posedge clk_i) begin
    if (db_push) db_mem_q[db_merge ? db_wp_q - 4'd1 : db_wp_q] <= db_wdata;
  end

  // Command arguments: written in place (at most an FLR clear and one argument per cycle, in
  // that order, as the two assignments of the next-state logic did) rather than through a
  // next-state copy: an args_d = args_q default cost a 432-byte copy on every evaluation of the
  // comb logic, which the simulator runs several times per cycle.
  always_ff @(posedge clk_i) begin
    if (!rst_ni) begin
      args_q <= '0;
    end else begin
      if (args_clr) args_q[FuncW'(flr_func_i)] <= '0;
      if (args_we)  args_q[req_f][args_idx] <= mmio_req_wdata_i;
    end
  end

  always_ff @(posedge clk_i) begin
    if (!rst_ni) begin
      op_q        <= '0;
      pend_q      <= '0;
      busy_q      <= '0;
      status_q    <= '0;
      out0_q      <= '0;
      out1_q      <= '0;
      last_q      <= '0;
      run_f_q     <= '0;
      cnt_q       <= '0;
      rd_pend_q   <= 1'b0;
      rd_func_q   <= '0;
      rd_addr_q   <= '0;
      rsp_valid_q <= 1'b0;
      rsp_data_q  <= '0;
      db_cnt_q    <= '0;
      db_rp_q     <= '0;
      db_wp_q     <= '0;
    end else begin
      op_q        <= op_d;
      pend_q      <= pend_d;
      busy_q      <= busy_d;
      status_q    <= status_d;
      out0_q      <= out0_d;
      out1_q      <= out1_d;
      last_q      <= last_d;
      run_f_q     <= run_f_d;
      cnt_q       <= cnt_d;
      rd_pend_q   <= rd_pend_d;
      rd_func_q   <= rd_func_d;
      rd_addr_q   <= rd_addr_d;
      rsp_valid_q <= rsp_valid_d;
      rsp_data_q  <= rsp_data_d;
      db_cnt_q    <= db_cnt_d;
      db_rp_q     <= db_rp_d;
      db_wp_q     <= db_wp_d;
    end
  end

  ////////////////
  // Outputs    //
  ////////////////

  assign mmio_rsp_valid_o = rsp_valid_q;
  assign mmio_rsp_rdata_o = rsp_data_q;
  assign cmd_valid_o      = sel_valid;
  assign cmd_func_o       = 8'(sel);
  assign cmd_op_o         = op_q[sel];
  assign cmd_args_o       = args_q[sel];
  assign rd_pend_o        = rd_pend_q;
  assign db_valid_o       = db_cnt_q != 5'd0;
  assign {db_func_o, db_kind_o, db_idx_o, db_val_o} = db_mem_q[db_rp_q];

endmodule
