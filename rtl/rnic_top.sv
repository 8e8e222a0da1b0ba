// SPDX-License-Identifier: Apache-2.0
//
// RNIC top level: flat ports of docs/architecture.md section 2. It wires the BAR0 decoder, the task
// engine (which owns the context memories, DMA, MSI-X and the trace port) and the two framers.
module rnic_top
  import rnic_pkg::*;
  import rnic_reg_pkg::*;
#(
  parameter int unsigned DataW  = 512,
  parameter int unsigned NumQp  = int'(rnic_reg_pkg::NumQp),
  parameter int unsigned NumCq  = int'(rnic_reg_pkg::NumCq),
  parameter int unsigned NumMr  = int'(rnic_reg_pkg::NumMr),
  parameter int unsigned NumPd  = int'(rnic_reg_pkg::NumPd),
  parameter int unsigned NumMtt = int'(rnic_reg_pkg::NumMtt),
  parameter int unsigned NumVf  = int'(rnic_reg_pkg::NumVf)   // SR-IOV TotalVFs
) (
  input  logic                 clk_i,
  input  logic                 rst_ni,

  input  logic                 mmio_req_valid_i,
  output logic                 mmio_req_ready_o,
  input  logic                 mmio_req_write_i,
  input  logic                 mmio_req_cfg_i,
  input  logic [7:0]           mmio_req_func_i,
  input  logic [31:0]          mmio_req_addr_i,
  input  logic [63:0]          mmio_req_wdata_i,
  output logic                 mmio_rsp_valid_o,
  output logic [63:0]          mmio_rsp_rdata_o,

  output logic                 dma_rd_req_valid_o,
  input  logic                 dma_rd_req_ready_i,
  output logic [7:0]           dma_rd_req_tag_o,
  output logic [7:0]           dma_rd_req_func_o,
  output logic [63:0]          dma_rd_req_addr_o,
  output logic [12:0]          dma_rd_req_len_o,
  input  logic                 dma_rd_cpl_valid_i,
  input  logic [7:0]           dma_rd_cpl_tag_i,
  input  logic [DataW-1:0]     dma_rd_cpl_data_i,
  input  logic                 dma_rd_cpl_last_i,

  output logic                 dma_wr_valid_o,
  input  logic                 dma_wr_ready_i,
  output logic [7:0]           dma_wr_func_o,
  output logic [63:0]          dma_wr_addr_o,
  output logic [12:0]          dma_wr_len_o,
  output logic [DataW-1:0]     dma_wr_data_o,
  output logic                 dma_wr_last_o,

  output logic                 msix_valid_o,
  output logic [7:0]           msix_func_o,
  output logic [15:0]          msix_vector_o,

  output logic                 tx_tvalid_o,
  input  logic                 tx_tready_i,
  output logic [DataW-1:0]     tx_tdata_o,
  output logic [DataW/8-1:0]   tx_tkeep_o,
  output logic                 tx_tlast_o,

  input  logic                 rx_tvalid_i,
  output logic                 rx_tready_o,
  input  logic [DataW-1:0]     rx_tdata_i,
  input  logic [DataW/8-1:0]   rx_tkeep_i,
  input  logic                 rx_tlast_i,

  // Embedded-switch monitor (lockstep): beats of looped frames entering the receive framer, and
  // a pulse per looped frame dropped for want of room (section 4b).
  output logic                 lb_valid_o,
  output logic [DataW-1:0]     lb_tdata_o,
  output logic [DataW/8-1:0]   lb_tkeep_o,
  output logic                 lb_tlast_o,
  output logic                 esw_drop_o,

  output logic                 trace_valid_o,
  output logic [3:0]           trace_kind_o,
  output logic [23:0]          trace_qpn_o,
  output logic [7:0]           trace_func_o,

  output logic [63:0]          cycle_o
);

  // The framers and the engine's data paths are built for 512-bit beats.
  if (DataW != 512) begin : g_bad_dataw
    $error("rnic_top: only DataW = 512 is supported");
  end

  logic         cmd_valid, cmd_start, cmd_done;
  logic [7:0]   cmd_op, cmd_status;
  logic [383:0] cmd_args;
  logic [63:0]  cmd_out0, cmd_out1;
  logic         db_valid, db_pop;
  logic [1:0]   db_kind;
  logic [23:0]  db_idx;
  logic [63:0]  db_val;
  logic         rd_pend, eng_idle;
  logic [CounterNum-1:0] cnt_inc, eng_cnt_inc;
  logic [7:0]   cmd_func, db_func;
  logic         vf_en;
  logic [NumVf:0]       func_on;
  logic [NumVf:0]       func_rst;
  logic                 flr_start, flr_done;
  logic [7:0]           flr_func;
  logic [NumVf:0][47:0] func_mac;
  logic [NumVf:0][31:0] func_ip;
  logic [15:0]          vfres_vfs;
  logic [4:0][23:0]     vfres_q;

  tx_hdr_t      hdr;
  logic         hdr_drop;
  logic         fr_tvalid, fr_tready, fr_tlast;
  logic [511:0] fr_tdata;
  logic [63:0]  fr_tkeep;
  logic         hdr_valid, hdr_ready;
  logic         pl_valid, pl_ready;
  logic [511:0] pl_data;
  logic [6:0]   pl_bytes;
  logic         tx_sent;
  logic         eg_tvalid, eg_tready, eg_tlast;
  logic [511:0] eg_tdata;
  logic [63:0]  eg_tkeep;
  logic         rf_tvalid, rf_tready, rf_tlast, rf_room, esw_loop, esw_drop;
  logic [511:0] rf_tdata;
  logic [63:0]  rf_tkeep;

  logic         pkt_valid, pkt_done;
  rx_pkt_t      pkt;
  logic         pl_rd_en;
  logic [15:0]  pl_rd_addr;
  logic         pl_free;
  logic [6:0]   pl_free_words;
  logic [511:0] pl_rd_data;

  rnic_mmio #(
    .NumVf(NumVf),
    .NumQp(NumQp), .NumCq(NumCq), .NumMr(NumMr), .NumPd(NumPd), .NumMtt(NumMtt)
  ) u_mmio (
    .clk_i, .rst_ni,
    .mmio_req_valid_i, .mmio_req_ready_o, .mmio_req_write_i, .mmio_req_cfg_i, .mmio_req_func_i,
    .mmio_req_addr_i, .mmio_req_wdata_i, .mmio_rsp_valid_o, .mmio_rsp_rdata_o,
    .cmd_valid_o  (cmd_valid),
    .cmd_func_o   (cmd_func),
    .cmd_op_o     (cmd_op),
    .cmd_args_o   (cmd_args),
    .cmd_start_i  (cmd_start),
    .cmd_done_i   (cmd_done),
    .cmd_status_i (cmd_status),
    .cmd_out0_i   (cmd_out0),
    .cmd_out1_i   (cmd_out1),
    .db_valid_o   (db_valid),
    .db_kind_o    (db_kind),
    .db_idx_o     (db_idx),
    .db_val_o     (db_val),
    .db_func_o    (db_func),
    .db_pop_i     (db_pop),
    .vfres_vfs_i  (vfres_vfs),
    .vfres_q_i    (vfres_q),
    .vf_en_o      (vf_en),
    .func_on_o    (func_on),
    .func_rst_o   (func_rst),
    .flr_start_i  (flr_start),
    .flr_done_i   (flr_done),
    .flr_func_i   (flr_func),
    .rd_pend_o    (rd_pend),
    .eng_idle_i   (eng_idle),
    .cnt_inc_i    (cnt_inc)
  );

  rnic_engine #(
    .NumQp(NumQp), .NumCq(NumCq), .NumMr(NumMr), .NumPd(NumPd), .NumMtt(NumMtt), .NumVf(NumVf)
  ) u_engine (
    .clk_i, .rst_ni,
    .cmd_valid_i  (cmd_valid),
    .cmd_func_i   (cmd_func),
    .cmd_op_i     (cmd_op),
    .cmd_args_i   (cmd_args),
    .cmd_start_o  (cmd_start),
    .cmd_done_o   (cmd_done),
    .cmd_status_o (cmd_status),
    .cmd_out0_o   (cmd_out0),
    .cmd_out1_o   (cmd_out1),
    .db_valid_i   (db_valid),
    .db_kind_i    (db_kind),
    .db_idx_i     (db_idx),
    .db_val_i     (db_val),
    .db_func_i    (db_func),
    .db_pop_o     (db_pop),
    .rd_pend_i    (rd_pend),
    .idle_o       (eng_idle),
    .cnt_inc_o    (eng_cnt_inc),
    .vf_en_i      (vf_en),
    .func_rst_i   (func_rst),
    .flr_start_o  (flr_start),
    .flr_done_o   (flr_done),
    .flr_func_o   (flr_func),
    .vfres_vfs_o  (vfres_vfs),
    .vfres_q_o    (vfres_q),
    .func_mac_o   (func_mac),
    .func_ip_o    (func_ip),
    .dma_rd_req_valid_o, .dma_rd_req_ready_i, .dma_rd_req_tag_o, .dma_rd_req_func_o,
    .dma_rd_req_addr_o, .dma_rd_req_len_o,
    .dma_rd_cpl_valid_i, .dma_rd_cpl_tag_i, .dma_rd_cpl_data_i, .dma_rd_cpl_last_i,
    .dma_wr_valid_o, .dma_wr_ready_i, .dma_wr_func_o, .dma_wr_addr_o, .dma_wr_len_o,
    .dma_wr_data_o, .dma_wr_last_o,
    .msix_valid_o, .msix_func_o, .msix_vector_o,
    .hdr_valid_o  (hdr_valid),
    .hdr_ready_i  (hdr_ready),
    .hdr_o        (hdr),
    .hdr_drop_o   (hdr_drop),
    .pl_valid_o   (pl_valid),
    .pl_ready_i   (pl_ready),
    .pl_data_o    (pl_data),
    .pl_bytes_o   (pl_bytes),
    .pkt_valid_i  (pkt_valid),
    .pkt_i        (pkt),
    .pkt_done_o   (pkt_done),
    .pl_rd_en_o   (pl_rd_en),
    .pl_rd_addr_o (pl_rd_addr),
    .pl_free_o    (pl_free),
    .pl_free_words_o (pl_free_words),
    .pl_rd_data_i (pl_rd_data),
    .trace_valid_o, .trace_kind_o, .trace_qpn_o, .trace_func_o
  );

  // Headers queue up in front of the framer (with their spoof-drop bits), so the engine can
  // hand over a packet's header and go on while earlier frames still wait for their payload.
  tx_hdr_t      fh;
  logic         fh_drop, fh_valid, fh_ready;

  rnic_fifo #(.Width($bits(tx_hdr_t) + 1), .Depth(4)) u_hdr_fifo (
    .clk_i, .rst_ni,
    .in_valid_i  (hdr_valid),
    .in_ready_o  (hdr_ready),
    .in_data_i   ({hdr_drop, hdr}),
    .out_valid_o (fh_valid),
    .out_ready_i (fh_ready),
    .out_data_o  ({fh_drop, fh})
  );

  rnic_tx_frame u_tx_frame (
    .clk_i, .rst_ni,
    .hdr_valid_i (fh_valid),
    .hdr_ready_o (fh_ready),
    .hdr_i       (fh),
    .pl_valid_i  (pl_valid),
    .pl_ready_o  (pl_ready),
    .pl_data_i   (pl_data),
    .pl_bytes_i  (pl_bytes),
    .tx_tvalid_o (fr_tvalid),
    .tx_tready_i (fr_tready),
    .tx_tdata_o  (fr_tdata),
    .tx_tkeep_o  (fr_tkeep),
    .tx_tlast_o  (fr_tlast),
    .sent_o      (tx_sent)
  );

  rnic_spoof_filter #(.DataW(DataW)) u_spoof (
    .clk_i, .rst_ni,
    .hdr_fire_i  (fh_valid && fh_ready),
    .hdr_drop_i  (fh_drop),
    .in_tvalid_i (fr_tvalid),
    .in_tready_o (fr_tready),
    .in_tdata_i  (fr_tdata),
    .in_tkeep_i  (fr_tkeep),
    .in_tlast_i  (fr_tlast),
    .tx_tvalid_o (eg_tvalid),
    .tx_tready_i (eg_tready),
    .tx_tdata_o  (eg_tdata),
    .tx_tkeep_o  (eg_tkeep),
    .tx_tlast_o  (eg_tlast)
  );

  rnic_esw #(.NumFunc(NumVf + 1), .DataW(DataW)) u_esw (
    .clk_i, .rst_ni,
    .func_mac_i  (func_mac),
    .func_on_i   (func_on),
    .eg_tvalid_i (eg_tvalid),
    .eg_tready_o (eg_tready),
    .eg_tdata_i  (eg_tdata),
    .eg_tkeep_i  (eg_tkeep),
    .eg_tlast_i  (eg_tlast),
    .tx_tvalid_o, .tx_tready_i, .tx_tdata_o, .tx_tkeep_o, .tx_tlast_o,
    .rx_tvalid_i, .rx_tready_o, .rx_tdata_i, .rx_tkeep_i, .rx_tlast_i,
    .rf_tvalid_o (rf_tvalid),
    .rf_tready_i (rf_tready),
    .rf_tdata_o  (rf_tdata),
    .rf_tkeep_o  (rf_tkeep),
    .rf_tlast_o  (rf_tlast),
    .rf_room_i   (rf_room),
    .loop_o      (esw_loop),
    .drop_o      (esw_drop)
  );

  assign lb_valid_o = esw_loop;
  assign lb_tdata_o = rf_tdata;
  assign lb_tkeep_o = rf_tkeep;
  assign lb_tlast_o = rf_tlast;
  assign esw_drop_o = esw_drop;

  always_comb begin
    cnt_inc = eng_cnt_inc;
    cnt_inc[CounterEswDrop] = eng_cnt_inc[CounterEswDrop] | esw_drop;
  end

  rnic_rx_frame #(.NumFunc(NumVf + 1)) u_rx_frame (
    .clk_i, .rst_ni,
    .func_mac_i   (func_mac),
    .func_ip_i    (func_ip),
    .func_on_i    (func_on),
    .rx_tvalid_i  (rf_tvalid),
    .rx_tready_o  (rf_tready),
    .rx_tdata_i   (rf_tdata),
    .rx_tkeep_i   (rf_tkeep),
    .rx_tlast_i   (rf_tlast),
    .room_o       (rf_room),
    .pkt_valid_o  (pkt_valid),
    .pkt_o        (pkt),
    .pkt_done_i   (pkt_done),
    .pl_rd_en_i   (pl_rd_en),
    .pl_rd_addr_i (pl_rd_addr),
    .free_i       (pl_free),
    .free_words_i (pl_free_words),
    .pl_rd_data_o (pl_rd_data)
  );

  // TX_PKTS is counted by the engine when it hands a header to the framer (inside the task), not
  // on sent_o: a counter read between tasks must match the model even while a frame is queued.
  logic unused_sent;
  assign unused_sent = tx_sent;

  logic [63:0] cycle_q;
  always_ff @(posedge clk_i) begin
    if (!rst_ni) cycle_q <= '0;
    else         cycle_q <= cycle_q + 64'd1;
  end
  assign cycle_o = cycle_q;

endmodule
