// SPDX-License-Identifier: Apache-2.0
//
// Generic single-port RAM with a registered read port: the context memories (QPC, CQC, MRC, PDC,
// MTT) are built from it so that they map onto block RAM instead of per-entry flip-flops. A read
// (req_i && !we_i) returns mem[addr_i] on rdata_o in the next cycle; rdata_o holds its value until
// the next read. Contents are not reset: the engine clears the context memories after reset.
module rnic_ram #(
  parameter int unsigned Width = 64,
  parameter int unsigned Depth = 1024,
  localparam int unsigned AddrW = (Depth > 1) ? $clog2(Depth) : 1
) (
  input  logic             clk_i,
  input  logic             req_i,
  input  logic             we_i,
  input  logic [AddrW-1:0] addr_i,
  input  logic [Width-1:0] wdata_i,
  output logic [Width-1:0] rdata_o
);

  logic [Width-1:0] mem_q [Depth];

  // Memory array: the write-enable form is the RAM inference template, not a d/q register.
  always_ff @(posedge clk_i) begin
    if (req_i) begin
      if (we_i) begin
        mem_q[addr_i] <= wdata_i;
      end else begin
        rdata_o <= mem_q[addr_i];
      end
    end
  end

endmodule
