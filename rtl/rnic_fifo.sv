// SPDX-License-Identifier: Apache-2.0
//
// A small synchronous FIFO with valid/ready on both sides (first-word fall-through: the head is
// on out_data_o while out_valid_o). Used between the engine and the transmit framer for headers
// (docs/architecture.md section 13, Data paths), so the engine can run a few packets ahead of the
// wire, as far as the transmit payload queue holds their data.
module rnic_fifo #(
  parameter int unsigned Width = 8,
  parameter int unsigned Depth = 4   // power of two
) (
  input  logic             clk_i,
  input  logic             rst_ni,
  input  logic             in_valid_i,
  output logic             in_ready_o,
  input  logic [Width-1:0] in_data_i,
  output logic             out_valid_o,
  input  logic             out_ready_i,
  output logic [Width-1:0] out_data_o
);

  localparam int unsigned AW = $clog2(Depth);

  logic [Width-1:0] mem_q [Depth];
  logic [AW:0]      wp_q, wp_d, rp_q, rp_d;

  assign in_ready_o  = (wp_q - rp_q) != (AW + 1)'(Depth);
  assign out_valid_o = wp_q != rp_q;
  assign out_data_o  = mem_q[rp_q[AW-1:0]];

  always_comb begin
    wp_d = wp_q + (AW + 1)'(in_valid_i && in_ready_o);
    rp_d = rp_q + (AW + 1)'(out_valid_o && out_ready_i);
  end

  always_ff @(posedge clk_i) begin
    if (in_valid_i && in_ready_o) mem_q[wp_q[AW-1:0]] <= in_data_i;
  end

  always_ff @(posedge clk_i) begin
    if (!rst_ni) begin
      wp_q <= '0;
      rp_q <= '0;
    end else begin
      wp_q <= wp_d;
      rp_q <= rp_d;
    end
  end

endmodule
