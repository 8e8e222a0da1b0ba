// SPDX-License-Identifier: Apache-2.0
//
// Unit-test wrapper: rnic_tx_frame and rnic_rx_frame side by side with flat ports (the C++ bench is
// the link between them, so that it can check, corrupt and back-pressure frames), plus a bare
// rnic_crc32 for direct vector tests.
module tb_frame_top
  import rnic_pkg::*;
(
  input  logic                      clk_i,
  input  logic                      rst_ni,
  input  logic [47:0]               port_mac_i,
  input  logic [31:0]               port_ip_i,

  input  logic                      hdr_valid_i,
  output logic                      hdr_ready_o,
  input  logic [$bits(tx_hdr_t)-1:0] hdr_i,
  input  logic                      pl_valid_i,
  output logic                      pl_ready_o,
  input  logic [511:0]              pl_data_i,
  input  logic [6:0]                pl_bytes_i,
  output logic                      tx_tvalid_o,
  input  logic                      tx_tready_i,
  output logic [511:0]              tx_tdata_o,
  output logic [63:0]               tx_tkeep_o,
  output logic                      tx_tlast_o,
  output logic                      sent_o,

  input  logic                      rx_tvalid_i,
  output logic                      rx_tready_o,
  output logic                      room_o,   // embedded-switch admission (rnic_esw)
  input  logic [511:0]              rx_tdata_i,
  input  logic [63:0]               rx_tkeep_i,
  input  logic                      rx_tlast_i,
  output logic                      pkt_valid_o,
  output logic [$bits(rx_pkt_t)-1:0] pkt_o,
  input  logic                      pkt_done_i,
  input  logic                      pl_rd_en_i,
  input  logic [12:0]               pl_rd_off_i,
  output logic [511:0]              pl_rd_data_o,

  input  logic [31:0]               crc_i,
  input  logic [511:0]              crc_data_i,
  input  logic [6:0]                crc_bytes_i,
  output logic [31:0]               crc_o
);

  // The source address travels in the header now; the bench keeps driving it on port_*_i.
  tx_hdr_t hdr;
  always_comb begin
    hdr         = tx_hdr_t'(hdr_i);
    hdr.src_mac = port_mac_i;
    hdr.src_ip  = port_ip_i;
  end

  rnic_tx_frame u_tx (
    .clk_i, .rst_ni,
    .hdr_valid_i, .hdr_ready_o, .hdr_i(hdr),
    .pl_valid_i, .pl_ready_o, .pl_data_i, .pl_bytes_i,
    .tx_tvalid_o, .tx_tready_i, .tx_tdata_o, .tx_tkeep_o, .tx_tlast_o,
    .sent_o
  );

  rx_pkt_t pkt;
  assign pkt_o = pkt;

  rnic_rx_frame #(.NumFunc(1)) u_rx (
    .clk_i, .rst_ni, .func_mac_i(port_mac_i), .func_ip_i(port_ip_i), .func_on_i(1'b1),
    .rx_tvalid_i, .rx_tready_o, .rx_tdata_i, .rx_tkeep_i, .rx_tlast_i, .room_o,
    .pkt_valid_o, .pkt_o(pkt), .pkt_done_i,
    // the bench reads at offsets in the head frame's payload and frees its words with it
    .free_i(pkt_done_i && pkt_valid_o), .free_words_i(pkt.nwords),
    .pl_rd_en_i, .pl_rd_addr_i(pkt.pl_base + 16'(pl_rd_off_i)), .pl_rd_data_o
  );

  rnic_crc32 u_crc (
    .crc_i, .data_i(crc_data_i), .bytes_i(crc_bytes_i), .crc_o
  );

endmodule
