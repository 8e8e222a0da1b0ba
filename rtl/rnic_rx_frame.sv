// SPDX-License-Identifier: Apache-2.0
//
// Receive framer (docs/architecture.md sections 7 and 13).
//
// Frames are written, one 64-byte beat per word, into a ring buffer of BufWords words (two banks of
// even and odd words, so that any two consecutive words can be read in one cycle). Each frame
// starts at a word boundary. While a frame streams in, its first two beats are kept for parsing,
// the ICRC is computed over [14, 14 + ip_total - 4) with the invariant mask, and the 4 wire ICRC
// bytes are picked out; in the cycle after the last beat all header checks are evaluated and one
// descriptor (parsed header, status, buffer position) is pushed into a small FIFO. The oldest
// descriptor is offered on pkt_*; pkt_done_i frees it. Its buffer words are freed separately
// (free_i, by the engine's write queue once it has copied the payload to host memory), so the
// engine can go on to the next frame while the payload of this one is still being written.
//
// Only the first MaxFrameWords words of a frame are stored: any frame that passes the header checks
// (payload <= 4096) ends within them, so the rest can only be Ethernet padding (ignored).
// rx_tready_o is low when the ring is full, or at the start of a frame when the FIFO has no slot.
module rnic_rx_frame
  import rnic_pkg::*;
  import rnic_reg_pkg::*;
#(
  parameter int unsigned BufWords  = 256,   // power of two, >= 2 * MaxFrameWords
  parameter int unsigned DescDepth = 8,     // power of two
  parameter int unsigned NumFunc   = 1      // PF + VFs
) (
  input  logic          clk_i,
  input  logic          rst_ni,
  // Addresses of the functions (docs/architecture.md, Functions): a frame is for the lowest
  // function that exists (func_on_i) with a non-zero MAC equal to its destination MAC, and must
  // carry that function's IP. MAC [47:40] and IP [31:24] are the first bytes on the wire.
  input  logic [NumFunc-1:0][47:0] func_mac_i,
  input  logic [NumFunc-1:0][31:0] func_ip_i,
  input  logic [NumFunc-1:0]       func_on_i,

  input  logic          rx_tvalid_i,
  output logic          rx_tready_o,
  input  logic [511:0]  rx_tdata_i,
  input  logic [63:0]   rx_tkeep_i,
  input  logic          rx_tlast_i,
  // A whole frame fits now and no frame is half way in (the embedded switch's loop, rnic_esw).
  output logic          room_o,

  output logic          pkt_valid_o,
  output rx_pkt_t       pkt_o,
  input  logic          pkt_done_i,

  input  logic          free_i,       // free_words_i words at the head of the ring are free
  input  logic [6:0]    free_words_i,

  input  logic          pl_rd_en_i,
  // ring byte address (pkt_o.pl_base + offset), taken modulo the ring's size (bits above unused)
  /* verilator lint_off UNUSEDSIGNAL */
  input  logic [15:0]   pl_rd_addr_i,
  /* verilator lint_on UNUSEDSIGNAL */
  output logic [511:0]  pl_rd_data_o
);

  localparam logic [31:0] IcrcSeed      = 32'hDEBB20E3;  // CRC register after 8 bytes of 0xFF
  // 14 + 20 + 8 + 12 + 28 + 4096 + 4 = 4182 bytes -> 66 words.
  localparam int unsigned MaxFrameWords = 66;
  localparam int unsigned PtrW          = $clog2(BufWords);
  localparam int unsigned DescW         = $clog2(DescDepth);
  localparam int unsigned BankW         = PtrW - 1;

  ////////////////////
  // Ingress stream //
  ////////////////////

  logic                in_frame_q, in_frame_d;   // a frame has started (beat 0 taken)
  logic [6:0]          beat_q, beat_d;           // index of the next beat (saturates at 127)
  logic [15:0]         flen_q, flen_d;           // frame length in bytes (saturating)
  logic [15:0]         tot_q, tot_d;             // IPv4 total length from beat 0
  logic [31:0]         crc_q, crc_d;
  logic [31:0]         icrc_q, icrc_d;           // ICRC bytes from the wire, byte j at [8j+7:8j]
  logic [511:0]        h0_q, h0_d;               // beat 0
  logic [143:0]        h1_q, h1_d;               // bytes 64..81 (end of the longest headers)
  logic [PtrW-1:0]     start_q, start_d;         // first word of the current frame
  logic [6:0]          nwords_q, nwords_d;       // words stored for the current frame
  logic [PtrW-1:0]     wr_ptr_q, wr_ptr_d;
  logic [PtrW:0]       used_q, used_d;
  logic                fin_q, fin_d;             // a frame ended last cycle: check and push it

  logic [DescW:0]      dwr_q, dwr_d, drd_q, drd_d;
  rx_pkt_t             desc_pkt_q [DescDepth];

  logic                fire;
  logic                store;
  logic [6:0]          widx;
  logic [6:0]          beat_bytes;
  logic [15:0]         tot_cur;
  logic [31:0]         crc_cur;
  logic [16:0]         crc_end_rel;    // end of the ICRC region relative to this beat
  logic [6:0]          crc_s, crc_e;
  logic [511:0]        crc_data;
  logic [6:0]          crc_n;
  logic [31:0]         crc_beat;
  logic [16:0]         icrc_pos;
  logic [DescW:0]      desc_busy;

  // Ready and room depend on registers only (kept apart from the datapath below, so that the
  // embedded switch's muxing in front of this port is not a combinational loop).
  always_comb begin
    widx      = in_frame_q ? beat_q : 7'd0;
    desc_busy = dwr_q - drd_q + {{DescW{1'b0}}, fin_q};
    store     = widx < 7'(MaxFrameWords);
    rx_tready_o = (in_frame_q || (desc_busy < (DescW + 1)'(DescDepth))) &&
                  (!store || used_q < (PtrW + 1)'(BufWords));
    room_o    = !in_frame_q && (desc_busy < (DescW + 1)'(DescDepth)) &&
                ({1'b0, used_q} + (PtrW + 2)'(MaxFrameWords) <= (PtrW + 2)'(BufWords));
  end

  always_comb begin
    fire      = rx_tvalid_i && rx_tready_o;

    beat_bytes = 7'($countones(rx_tkeep_i));

    tot_cur = (widx == 7'd0) ? {rx_tdata_i[16*8 +: 8], rx_tdata_i[17*8 +: 8]} : tot_q;
    crc_cur = (widx == 7'd0) ? IcrcSeed : crc_q;

    // ICRC region [14, tot + 10) of the frame, intersected with this beat.
    crc_end_rel = 17'(tot_cur) + 17'd10 - {4'd0, widx, 6'd0};
    crc_e = crc_end_rel[16] ? 7'd0 : (crc_end_rel > 17'd64) ? 7'd64 : crc_end_rel[6:0];
    crc_s = (widx == 7'd0) ? 7'd14 : 7'd0;
    // crc_beat is used only for a beat that is taken: without a beat the CRC instance gets 0
    // bytes, which the simulator evaluates without the 64 table lookups.
    crc_n = (rx_tvalid_i && crc_e > crc_s) ? crc_e - crc_s : 7'd0;
    if (widx == 7'd0) begin
      // Drop the Ethernet header and apply the invariant mask (TOS, TTL, IP checksum, UDP
      // checksum, BTH byte 4), at offsets relative to the IP header.
      crc_data = {112'd0, rx_tdata_i[511:112]};
      crc_data[1*8 +: 8]  = 8'hFF;
      crc_data[8*8 +: 8]  = 8'hFF;
      crc_data[10*8 +: 16] = 16'hFFFF;
      crc_data[26*8 +: 16] = 16'hFFFF;
      crc_data[32*8 +: 8] = 8'hFF;
    end else begin
      crc_data = rx_tdata_i;
    end
  end

  rnic_crc32 u_crc (
    .crc_i   (crc_cur),
    .data_i  (crc_data),
    .bytes_i (crc_n),
    .crc_o   (crc_beat)
  );

  ///////////////////
  // Header checks //
  ///////////////////

  logic [81:0][7:0] hb;
  logic [6:0]       ext_len;
  logic [1:0]       padcnt;
  logic [19:0]      csum_acc;
  logic [15:0]      csum_fold;
  logic [16:0]      pl_len;       // payload length, may be negative (bit 16) on a bad frame
  logic             hdr_ok;
  rx_pkt_t          pkt_new;
  localparam int unsigned FuncW = (NumFunc > 1) ? $clog2(NumFunc) : 1;
  logic             dst_hit;      // some function has the destination MAC
  logic [FuncW-1:0] dst_func;     // the lowest such function

  // Destination lookup: a priority search over the function table (highest index first, so the
  // lowest matching function wins).
  always_comb begin
    dst_hit  = 1'b0;
    dst_func = '0;
    for (int i = NumFunc - 1; i >= 0; i--) begin
      if (func_on_i[i] && func_mac_i[i] != 48'd0 && func_mac_i[i] == be[0:5]) begin
        dst_hit  = 1'b1;
        dst_func = FuncW'(i);
      end
    end
  end

  // Big-endian view of the same bytes (be[0] = first byte on the wire): every field is a slice.
  logic [0:81][7:0] be;
  // Constant-index assigns: an 82-byte procedural loop would not be unrolled by the simulator.
  assign hb = {h1_q, h0_q};
  for (genvar i = 0; i < 82; i++) begin : g_be
    assign be[i] = hb[i];
  end

  always_comb begin
    ext_len = op_ext_len(hb[42]);
    padcnt  = hb[43][5:4];

    csum_acc = '0;
    for (int unsigned i = 0; i < 10; i++) begin
      csum_acc = csum_acc + {4'd0, hb[14 + 2 * i], hb[15 + 2 * i]};
    end
    csum_fold = csum_acc[15:0] + {12'd0, csum_acc[19:16]};
    csum_fold = csum_fold + 16'(csum_fold < csum_acc[15:0]);

    pl_len = {1'b0, tot_q} - 17'd44 - 17'(ext_len) - 17'(padcnt);

    hdr_ok = (flen_q >= 16'd58) &&
             (be[12:13] == 16'h0800) &&
             (hb[14] == 8'h45) &&
             (csum_fold == 16'hFFFF) &&
             ({1'b0, tot_q} <= {1'b0, flen_q} - 17'd14) && (tot_q >= 16'd44) &&
             (hb[23] == 8'd17) &&
             (be[36:37] == 16'(RoceUdpPort)) &&
             dst_hit &&
             (be[30:33] == func_ip_i[dst_func]) &&
             (hb[43][3:0] == 4'd0) &&
             (be[44:45] == 16'(DefaultPkey)) &&
             op_valid(hb[42]) &&
             !pl_len[16] && (pl_len <= 17'(MaxPayload));

    pkt_new         = '0;
    pkt_new.func    = 8'(dst_func);
    pkt_new.status  = !hdr_ok            ? RxDropHdr :
                      (icrc_q != ~crc_q) ? RxDropIcrc : RxOk;
    pkt_new.opcode  = hb[42];
    pkt_new.se      = hb[43][7];
    pkt_new.padcnt  = padcnt;
    pkt_new.dqpn    = be[47:49];
    pkt_new.ackreq  = hb[50][7];
    pkt_new.psn     = be[51:53];
    if (op_has_reth(hb[42]) || op_has_atomiceth(hb[42])) begin
      pkt_new.va   = be[54:61];
      pkt_new.rkey = be[62:65];
    end
    if (op_has_reth(hb[42])) pkt_new.dma_len = be[66:69];
    if (op_has_atomiceth(hb[42])) begin
      pkt_new.swap_add = be[66:73];
      pkt_new.compare  = be[74:81];
    end
    if (op_has_aeth(hb[42])) begin
      pkt_new.syndrome = hb[54];
      pkt_new.msn      = be[55:57];
    end
    if (op_has_atomicack(hb[42])) pkt_new.orig = be[58:65];
    if (op_has_imm(hb[42])) begin
      pkt_new.imm = op_has_reth(hb[42]) ? be[70:73] : be[54:57];
    end
    pkt_new.payload_len = pl_len[12:0];
    pkt_new.pl_base     = 16'({start_q, 6'd0}) + 16'd54 + 16'(ext_len);
    pkt_new.nwords      = nwords_q;
  end

  ////////////////////////////////
  // Stream, descriptors, space //
  ////////////////////////////////

  logic [PtrW:0] used_inc, used_dec;

  always_comb begin
    in_frame_d = in_frame_q;
    beat_d     = beat_q;
    flen_d     = flen_q;
    tot_d      = tot_q;
    crc_d      = crc_q;
    icrc_d     = icrc_q;
    h0_d       = h0_q;
    h1_d       = h1_q;
    start_d    = start_q;
    nwords_d   = nwords_q;
    wr_ptr_d   = wr_ptr_q;
    fin_d      = 1'b0;
    dwr_d      = dwr_q;
    drd_d      = drd_q;
    used_inc   = '0;
    used_dec   = '0;
    icrc_pos   = '0;

    if (fire) begin
      if (widx == 7'd0) begin
        start_d  = wr_ptr_q;
        nwords_d = '0;
        flen_d   = '0;
        tot_d    = tot_cur;
        h0_d     = rx_tdata_i;
        h1_d     = '0;
        icrc_d   = '0;
      end
      if (widx == 7'd1) h1_d = rx_tdata_i[143:0];
      if (store) begin
        wr_ptr_d = wr_ptr_q + 1'b1;
        used_inc = 1;
        nwords_d = ((widx == 7'd0) ? 7'd0 : nwords_q) + 7'd1;
      end
      flen_d = (widx == 7'd0) ? {9'd0, beat_bytes} :
               (flen_q > 16'hFFFF - 16'd64) ? 16'hFFFF : flen_q + {9'd0, beat_bytes};
      crc_d  = crc_beat;
      // Pick the ICRC bytes at [tot + 10, tot + 14) out of whichever beats carry them.
      for (int unsigned j = 0; j < 4; j++) begin
        icrc_pos = 17'(tot_cur) + 17'd10 + 17'(j);
        if (icrc_pos[16:6] == {4'd0, widx}) icrc_d[8 * j +: 8] = rx_tdata_i[8 * icrc_pos[5:0] +: 8];
      end
      beat_d     = (widx == 7'd127) ? 7'd127 : widx + 7'd1;
      in_frame_d = !rx_tlast_i;
      fin_d      = rx_tlast_i;
    end

    if (fin_q) dwr_d = dwr_q + 1'b1;

    if (pkt_done_i && pkt_valid_o) drd_d = drd_q + 1'b1;
    if (free_i) used_dec = (PtrW + 1)'(free_words_i);
    used_d = used_q + used_inc - used_dec;
  end

  always_ff @(posedge clk_i) begin
    if (!rst_ni) begin
      in_frame_q <= 1'b0;
      beat_q     <= '0;
      flen_q     <= '0;
      tot_q      <= '0;
      crc_q      <= '0;
      icrc_q     <= '0;
      h0_q       <= '0;
      h1_q       <= '0;
      start_q    <= '0;
      nwords_q   <= '0;
      wr_ptr_q   <= '0;
      used_q     <= '0;
      fin_q      <= 1'b0;
      dwr_q      <= '0;
      drd_q      <= '0;
    end else begin
      in_frame_q <= in_frame_d;
      beat_q     <= beat_d;
      flen_q     <= flen_d;
      tot_q      <= tot_d;
      crc_q      <= crc_d;
      icrc_q     <= icrc_d;
      h0_q       <= h0_d;
      h1_q       <= h1_d;
      start_q    <= start_d;
      nwords_q   <= nwords_d;
      wr_ptr_q   <= wr_ptr_d;
      used_q     <= used_d;
      fin_q      <= fin_d;
      dwr_q      <= dwr_d;
      drd_q      <= drd_d;
    end
  end

  // Descriptor FIFO storage (no reset needed: entries are written before they are read).
  always_ff @(posedge clk_i) begin
    if (fin_q) desc_pkt_q[dwr_q[DescW-1:0]] <= pkt_new;
  end

  assign pkt_valid_o = (dwr_q != drd_q);
  assign pkt_o       = desc_pkt_q[drd_q[DescW-1:0]];

  /////////////////
  // Ring buffer //
  /////////////////

  logic [511:0]     mem_even [BufWords/2];
  logic [511:0]     mem_odd  [BufWords/2];
  logic [511:0]     rd_even_q, rd_odd_q;
  logic             rd_swap_q, rd_swap_d;
  logic [5:0]       rd_rot_q, rd_rot_d;
  logic [PtrW+5:0]  rd_addr;       // byte address in the ring
  logic [PtrW-1:0]  rd_w0;
  logic [BankW-1:0] rd_idx_even, rd_idx_odd;

  always_ff @(posedge clk_i) begin
    if (fire && store && !wr_ptr_q[0]) mem_even[wr_ptr_q[PtrW-1:1]] <= rx_tdata_i;
    if (fire && store && wr_ptr_q[0])  mem_odd[wr_ptr_q[PtrW-1:1]]  <= rx_tdata_i;
  end

  always_comb begin
    rd_addr = (PtrW + 6)'(pl_rd_addr_i);
    rd_w0   = rd_addr[PtrW+5:6];
    // The even word of the pair comes first unless the pair starts on an odd word.
    rd_idx_even = rd_w0[PtrW-1:1] + BankW'(rd_w0[0]);
    rd_idx_odd  = rd_w0[PtrW-1:1];
    rd_swap_d   = rd_w0[0];
    rd_rot_d    = rd_addr[5:0];
  end

  always_ff @(posedge clk_i) begin
    if (pl_rd_en_i) begin
      rd_even_q <= mem_even[rd_idx_even];
      rd_odd_q  <= mem_odd[rd_idx_odd];
      rd_swap_q <= rd_swap_d;
      rd_rot_q  <= rd_rot_d;
    end
  end

  logic [1023:0] rd_pair;
  always_comb begin
    rd_pair      = rd_swap_q ? {rd_even_q, rd_odd_q} : {rd_odd_q, rd_even_q};
    pl_rd_data_o = 512'(rd_pair >> {rd_rot_q, 3'b000});
  end

endmodule
