// SPDX-License-Identifier: Apache-2.0
//
// Transmit payload queue (docs/architecture.md section 13, Data paths): the DMA reads of outgoing
// payload (requester data, READ responses), several in flight, their completions put back in
// request order for the transmit framer.
//
// The engine hands it one piece (<= 4096 bytes, one DMA read) at a time; the request goes to the
// DMA port in the same cycle, with its own tag (1..NumTag; tag 0 is the engine's own reads), and
// only when a tag is free and the ring has room for all of the piece's beats, which are reserved
// then. Completion beats of a tag fill its reserved slots in any order across tags; the framer
// takes the ring's head beat once it has arrived. So the engine does not wait for payload: it goes
// on to the next packet (and its reads) while this one's data is still on its way, which is what
// hides the DMA read latency.
module rnic_txq #(
  parameter int unsigned Beats  = 128,   // ring slots of 64 bytes, power of two, >= 64
  parameter int unsigned NumTag = 4
) (
  input  logic          clk_i,
  input  logic          rst_ni,

  // a piece from the engine (accepted when req_ready_o: the DMA port took the read)
  input  logic          req_valid_i,
  output logic          req_ready_o,
  input  logic [7:0]    req_func_i,
  input  logic [63:0]   req_addr_i,
  input  logic [12:0]   req_len_i,     // 1..4096
  input  logic          port_free_i,   // the DMA request port is ours this cycle
  output logic          empty_o,       // no beat reserved: every piece went to the framer

  // DMA read request and completion ports
  output logic          dma_rd_req_valid_o,
  input  logic          dma_rd_req_ready_i,
  output logic [7:0]    dma_rd_req_tag_o,
  output logic [7:0]    dma_rd_req_func_o,
  output logic [63:0]   dma_rd_req_addr_o,
  output logic [12:0]   dma_rd_req_len_o,
  input  logic          dma_rd_cpl_valid_i,
  input  logic [7:0]    dma_rd_cpl_tag_i,
  input  logic [511:0]  dma_rd_cpl_data_i,

  // to the transmit framer
  output logic          pl_valid_o,
  input  logic          pl_ready_i,
  output logic [511:0]  pl_data_o,
  output logic [6:0]    pl_bytes_o
);

  localparam int unsigned BW = $clog2(Beats);
  localparam int unsigned TW = $clog2(NumTag);

  logic [511:0]      data_q [Beats];
  logic [6:0]        bytes_q [Beats];
  logic [Beats-1:0]  ok_q, ok_d;        // the slot's beat has arrived

  logic [BW:0]       alloc_q, alloc_d;  // next slot to reserve
  logic [BW:0]       rp_q, rp_d;        // head slot (next to the framer)
  logic [TW-1:0]     ntag_q, ntag_d;    // next tag to use (tags are used in turn)
  logic [NumTag-1:0] busy_q, busy_d;
  logic [BW-1:0]     slot_q [NumTag];   // slot of the tag's next beat
  logic [BW-1:0]     slot_d [NumTag];
  logic [12:0]       rem_q [NumTag];    // bytes of the tag still to come
  logic [12:0]       rem_d [NumTag];

  logic [7:0]        nbeats;
  logic              fire, cpl, take;
  logic [TW-1:0]     ct;                // tag of the completion beat
  logic [6:0]        cbytes;

  assign nbeats = 8'((req_len_i + 13'd63) >> 6);
  assign req_ready_o = port_free_i && !busy_q[ntag_q] && dma_rd_req_ready_i &&
                       (alloc_q - rp_q) + (BW + 1)'(nbeats) <= (BW + 1)'(Beats);
  assign fire = req_valid_i && req_ready_o;

  assign dma_rd_req_valid_o = req_valid_i && port_free_i && !busy_q[ntag_q] &&
                              (alloc_q - rp_q) + (BW + 1)'(nbeats) <= (BW + 1)'(Beats);
  assign dma_rd_req_tag_o   = 8'(ntag_q) + 8'd1;
  assign dma_rd_req_func_o  = req_func_i;
  assign dma_rd_req_addr_o  = req_addr_i;
  assign dma_rd_req_len_o   = req_len_i;

  assign ct     = TW'(dma_rd_cpl_tag_i - 8'd1);
  assign cpl    = dma_rd_cpl_valid_i && dma_rd_cpl_tag_i != 8'd0;
  assign cbytes = (rem_q[ct] >= 13'd64) ? 7'd64 : 7'(rem_q[ct]);

  assign pl_valid_o = ok_q[rp_q[BW-1:0]];
  assign pl_data_o  = data_q[rp_q[BW-1:0]];
  assign pl_bytes_o = bytes_q[rp_q[BW-1:0]];
  assign take       = pl_valid_o && pl_ready_i;
  assign empty_o    = alloc_q == rp_q;

  always_comb begin
    ok_d    = ok_q;
    alloc_d = alloc_q;
    rp_d    = rp_q;
    ntag_d  = ntag_q;
    busy_d  = busy_q;
    slot_d  = slot_q;
    rem_d   = rem_q;
    if (fire) begin
      busy_d[ntag_q] = 1'b1;
      slot_d[ntag_q] = alloc_q[BW-1:0];
      rem_d[ntag_q]  = req_len_i;
      alloc_d        = alloc_q + (BW + 1)'(nbeats);
      ntag_d         = ntag_q + 1'b1;
    end
    if (cpl) begin
      ok_d[slot_q[ct]] = 1'b1;
      slot_d[ct]       = slot_q[ct] + 1'b1;
      rem_d[ct]        = rem_q[ct] - 13'(cbytes);
      if (rem_q[ct] <= 13'd64) busy_d[ct] = 1'b0;
    end
    if (take) begin
      ok_d[rp_q[BW-1:0]] = 1'b0;
      rp_d               = rp_q + 1'b1;
    end
  end

  always_ff @(posedge clk_i) begin
    if (cpl) begin
      data_q[slot_q[ct]]  <= dma_rd_cpl_data_i;
      bytes_q[slot_q[ct]] <= cbytes;
    end
  end

  always_ff @(posedge clk_i) begin
    if (!rst_ni) begin
      ok_q    <= '0;
      alloc_q <= '0;
      rp_q    <= '0;
      ntag_q  <= '0;
      busy_q  <= '0;
      for (int unsigned t = 0; t < NumTag; t++) begin
        slot_q[t] <= '0;
        rem_q[t]  <= '0;
      end
    end else begin
      ok_q    <= ok_d;
      alloc_q <= alloc_d;
      rp_q    <= rp_d;
      ntag_q  <= ntag_d;
      busy_q  <= busy_d;
      slot_q  <= slot_d;
      rem_q   <= rem_d;
    end
  end

endmodule
