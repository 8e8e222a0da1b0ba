// SPDX-License-Identifier: Apache-2.0
//
// Egress spoof-check (docs/architecture.md section 4, Functions): frames whose header the engine
// marked `drop` (a spoof-checked VF whose address is not the one the PF assigned) are consumed
// from the framer but never reach the MAC. The framer emits frames in header order and holds at
// most two (its header register and its accumulator), so a small FIFO of drop bits, pushed at
// the header handshake and popped at each frame's last beat, says which frame is leaving.
module rnic_spoof_filter #(
  parameter int unsigned DataW = 512
) (
  input  logic               clk_i,
  input  logic               rst_ni,
  // header handshake of the framer (one drop bit per frame)
  input  logic               hdr_fire_i,
  input  logic               hdr_drop_i,
  // framer output
  input  logic               in_tvalid_i,
  output logic               in_tready_o,
  input  logic [DataW-1:0]   in_tdata_i,
  input  logic [DataW/8-1:0] in_tkeep_i,
  input  logic               in_tlast_i,
  // MAC
  output logic               tx_tvalid_o,
  input  logic               tx_tready_i,
  output logic [DataW-1:0]   tx_tdata_o,
  output logic [DataW/8-1:0] tx_tkeep_o,
  output logic               tx_tlast_o
);

  logic [3:0] drop_q, drop_d;   // FIFO of drop bits, oldest at bit 0
  logic [2:0] cnt_q, cnt_d;
  logic       drop_head;
  logic       pop;

  assign drop_head   = cnt_q != 3'd0 && drop_q[0];
  assign tx_tvalid_o = in_tvalid_i && !drop_head;
  assign in_tready_o = tx_tready_i || drop_head;
  assign tx_tdata_o  = in_tdata_i;
  assign tx_tkeep_o  = in_tkeep_i;
  assign tx_tlast_o  = in_tlast_i;
  assign pop         = in_tvalid_i && in_tready_o && in_tlast_i;

  always_comb begin
    drop_d = drop_q;
    cnt_d  = cnt_q;
    if (pop) begin
      drop_d = {1'b0, drop_d[3:1]};
      cnt_d  = cnt_d - 3'd1;
    end
    if (hdr_fire_i) begin
      drop_d[2'(cnt_d)] = hdr_drop_i;
      cnt_d = cnt_d + 3'd1;
    end
  end

  always_ff @(posedge clk_i) begin
    if (!rst_ni) begin
      drop_q <= '0;
      cnt_q  <= '0;
    end else begin
      drop_q <= drop_d;
      cnt_q  <= cnt_d;
    end
  end

endmodule
