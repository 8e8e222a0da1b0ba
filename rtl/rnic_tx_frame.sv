// SPDX-License-Identifier: Apache-2.0
//
// Transmit framer (docs/architecture.md sections 6 and 13).
//
// For every header descriptor it sends one frame: Ethernet · IPv4 · UDP · BTH · extension headers
// · payload (streamed on pl_*, any chunking of 1..64 bytes) · zero pad to a multiple of 4 · ICRC.
//
// Structure: an accepted header descriptor is turned at once into its header bytes (54..82) and
// their part of the ICRC, held in a one-entry header register, so the next header is accepted while
// the current frame drains. A 128-byte accumulator (`acc`) is the byte packer: the header bytes
// enter it in one cycle (the cycle the previous frame's last beat leaves, at the earliest, together
// with the first payload chunk if they fit), every payload chunk is OR-ed in at the fill level, and
// the low 64 bytes leave as one beat whenever 64 are present (or the frame is complete). At most 64
// bytes remain after a beat leaves, so a full chunk can be taken in the same cycle: with payload
// arriving one beat per cycle, frames leave one beat per cycle, back to back.
// The ICRC is computed on the input side (headers on acceptance, each chunk as it is taken, the pad
// with the last chunk), so it is ready right after the last payload byte; only when the accumulator
// has no room for pad + ICRC in that cycle does a one-cycle trailer step follow.
// Invariant: accumulator bytes at and above the fill level are zero.
module rnic_tx_frame
  import rnic_pkg::*;
  import rnic_reg_pkg::*;
(
  input  logic          clk_i,
  input  logic          rst_ni,
  input  logic          hdr_valid_i,
  output logic          hdr_ready_o,
  input  tx_hdr_t       hdr_i,

  input  logic          pl_valid_i,
  output logic          pl_ready_o,
  input  logic [511:0]  pl_data_i,
  input  logic [6:0]    pl_bytes_i,   // 1..64

  output logic          tx_tvalid_o,
  input  logic          tx_tready_i,
  output logic [511:0]  tx_tdata_o,
  output logic [63:0]   tx_tkeep_o,
  output logic          tx_tlast_o,

  output logic          sent_o
);

  // Register value of the CRC-32 after the 8 bytes of 0xFF that precede the IP header in the ICRC
  // (the seed Linux rxe uses).
  localparam logic [31:0] IcrcSeed = 32'hDEBB20E3;

  typedef enum logic [1:0] {
    StIdle,      // no frame in the accumulator
    StPayload,   // headers loaded, payload bytes outstanding
    StTrailer,   // all payload taken, pad + ICRC not yet appended (accumulator was too full)
    StDrain      // whole frame in the accumulator, emitting its last beats
  } state_e;

  ///////////////////////
  // Header generation //
  ///////////////////////

  localparam int unsigned HdrBytes = 82;  // 14 + 20 + 8 + 12 + 28 (largest extension: AtomicETH)

  // The headers (and their part of the ICRC) are built from hdr_i when it is accepted and kept in
  // a one-entry header register until the accumulator is free.
  // They are assembled in a big-endian view (be[0] = first byte on the wire) so that every
  // field is a plain slice, then byte-reversed into the stream layout (hb[0] = lane 0). Plain
  // slices keep the Verilated code small: this logic is evaluated every cycle.
  logic [0:HdrBytes-1][7:0]  be;
  logic [HdrBytes-1:0][7:0]  hb;       // header bytes of hdr_i, stream layout
  logic [HdrBytes-1:14][7:0] hb_crc;   // bytes from the IP header on, ICRC mask applied
  logic [6:0]                ext_len;
  logic [6:0]                hdr_len;
  logic [1:0]                pad;
  logic [15:0]               ip_total;
  logic [19:0]               csum_acc;
  logic [15:0]               csum_fold;
  logic [7:0]                op;

  always_comb begin
    op       = hdr_i.opcode;
    ext_len  = op_ext_len(op);
    hdr_len  = 7'd54 + ext_len;
    pad      = 2'(3'd4 - {1'b0, hdr_i.payload_len[1:0]});
    ip_total = 16'd44 + 16'(ext_len) + 16'(hdr_i.payload_len) + 16'(pad);

    // IPv4 header checksum: one's complement of the one's-complement sum of the header words
    // (version/IHL/TOS, total length, ID 0, flags, TTL/protocol, addresses).
    csum_acc = 20'h4500 + 20'(ip_total) + 20'h4000 + {4'd0, 8'(IpTtl), 8'd17} +
               20'(hdr_i.src_ip[31:16]) + 20'(hdr_i.src_ip[15:0]) +
               20'(hdr_i.dst_ip[31:16]) + 20'(hdr_i.dst_ip[15:0]);
    csum_fold = csum_acc[15:0] + {12'd0, csum_acc[19:16]};
    csum_fold = csum_fold + 16'(csum_fold < csum_acc[15:0]);  // end-around carry of the fold

    be = '0;
    // Ethernet
    be[0:5]   = hdr_i.dst_mac;
    be[6:11]  = hdr_i.src_mac;   // [47:40] is the first byte on the wire
    be[12:13] = 16'h0800;
    // IPv4
    be[14:15] = 16'h4500;
    be[16:17] = ip_total;
    be[20:21] = 16'h4000;
    be[22]    = 8'(IpTtl);
    be[23]    = 8'd17;
    be[24:25] = ~csum_fold;
    be[26:29] = hdr_i.src_ip;
    be[30:33] = hdr_i.dst_ip;
    // UDP (checksum 0)
    be[34:35] = hdr_i.udp_sport;
    be[36:37] = 16'(RoceUdpPort);
    be[38:39] = ip_total - 16'd20;
    // BTH
    be[42]    = op;
    be[43]    = {hdr_i.se, 1'b0, pad, 4'd0};
    be[44:45] = 16'(DefaultPkey);
    be[47:49] = hdr_i.dqpn;
    be[50]    = {hdr_i.ackreq, 7'd0};
    be[51:53] = hdr_i.psn;
    // Extension headers, in wire order RETH, AtomicETH, AETH, AtomicAckETH, ImmDt.
    if (op_has_reth(op) || op_has_atomiceth(op)) begin
      be[54:61] = hdr_i.va;
      be[62:65] = hdr_i.rkey;
    end
    if (op_has_reth(op)) be[66:69] = hdr_i.dma_len;
    if (op_has_atomiceth(op)) begin
      be[66:73] = hdr_i.swap_add;
      be[74:81] = hdr_i.compare;
    end
    if (op_has_aeth(op)) be[54:57] = {hdr_i.syndrome, hdr_i.msn};
    if (op_has_atomicack(op)) be[58:65] = hdr_i.orig;
    if (op_has_imm(op)) begin
      if (op_has_reth(op)) be[70:73] = hdr_i.imm;
      else                 be[54:57] = hdr_i.imm;
    end

  end

  // Byte reversal as constant-index assigns: a procedural loop over 82 bytes is not unrolled by the
  // simulator and would cost a variable-position insert per byte, every cycle.
  for (genvar i = 0; i < HdrBytes; i++) begin : g_hb
    assign hb[i] = be[i];
  end

  always_comb begin
    // ICRC invariant mask: TOS, TTL, IP checksum, UDP checksum, BTH byte 4 count as all ones.
    hb_crc     = hb[HdrBytes-1:14];
    hb_crc[15] = 8'hFF;
    hb_crc[22] = 8'hFF;
    hb_crc[24] = 8'hFF;
    hb_crc[25] = 8'hFF;
    hb_crc[40] = 8'hFF;
    hb_crc[41] = 8'hFF;
    hb_crc[46] = 8'hFF;
  end

  // ICRC over the headers: IP..BTH (40 bytes), then the extension headers.
  // crc_h2 is used only in the cycle a header is offered (hdr_valid_i); in the other cycles the
  // CRC instances get 0 bytes, which the simulator evaluates without the table lookups.
  logic [31:0] crc_h1, crc_h2;
  logic [6:0]  crc_h1_bytes, crc_h2_bytes;

  assign crc_h1_bytes = hdr_valid_i ? 7'd40 : 7'd0;
  assign crc_h2_bytes = hdr_valid_i ? ext_len : 7'd0;

  rnic_crc32 #(.MaxBytes(40)) u_crc_hdr_base (
    .crc_i   (IcrcSeed),
    .data_i  (hb_crc[53:14]),
    .bytes_i (crc_h1_bytes),
    .crc_o   (crc_h1)
  );

  rnic_crc32 #(.MaxBytes(28)) u_crc_hdr_ext (
    .crc_i   (crc_h1),
    .data_i  (hb_crc[81:54]),
    .bytes_i (crc_h2_bytes),
    .crc_o   (crc_h2)
  );

  /////////////////////
  // Header register //
  /////////////////////

  logic                     pend_valid_q, pend_valid_d;
  logic [HdrBytes-1:0][7:0] pend_hb_q, pend_hb_d;
  logic [6:0]               pend_len_q, pend_len_d;     // header bytes (54..82)
  logic [12:0]              pend_plen_q, pend_plen_d;   // payload bytes
  logic [1:0]               pend_pad_q, pend_pad_d;
  logic [31:0]              pend_crc_q, pend_crc_d;     // ICRC register after the headers

  //////////////////////////
  // Packer and streaming //
  //////////////////////////

  state_e        state_q, state_d;
  logic [1023:0] acc_q, acc_d;
  logic [7:0]    cnt_q, cnt_d;      // bytes in acc (0..128)
  logic [12:0]   rem_q, rem_d;      // payload bytes still to take
  logic [1:0]    pad_q, pad_d;
  logic [31:0]   crc_q, crc_d;      // ICRC register so far (after the pad once rem is 0)

  logic          fire;
  logic          loading;           // the header register moves into the accumulator this cycle
  logic          in_payload;        // payload bytes of the frame in (or entering) acc outstanding
  logic [1023:0] base_acc;          // accumulator before this cycle's payload chunk
  logic [7:0]    base_cnt;
  logic [12:0]   base_rem;
  logic [1:0]    base_pad;
  logic [31:0]   base_crc;
  logic [511:0]  chunk;
  logic [6:0]    chunk_bytes;
  logic [6:0]    crc_chunk_bytes;   // chunk_bytes when the chunk is taken, else 0 (CRC unused)
  logic [31:0]   crc_chunk, crc_chunk_pad;
  logic [7:0]    end_cnt;
  logic          icrc_app;          // append the ICRC this cycle ...
  logic [31:0]   icrc_val;
  logic [6:0]    icrc_pos;          // ... at this byte of acc_d (<= 124)

  always_comb begin
    chunk_bytes = (pl_bytes_i > 7'd64) ? 7'd64 : pl_bytes_i;
    // Lanes beyond the chunk are not guaranteed to be zero; the packer relies on it.
    chunk = pl_data_i & ((chunk_bytes >= 7'd64) ? {512{1'b1}} :
                         ~({512{1'b1}} << {chunk_bytes, 3'b000}));
  end

  // crc_chunk and crc_chunk_pad are used only when a chunk is taken; in the other cycles the
  // instance gets 0 bytes, which the simulator evaluates without the 64 table lookups.
  assign crc_chunk_bytes = (pl_valid_i && pl_ready_o) ? chunk_bytes : 7'd0;

  rnic_crc32 u_crc_chunk (
    .crc_i   (base_crc),
    .data_i  (chunk),
    .bytes_i (crc_chunk_bytes),
    .crc_o   (crc_chunk)
  );

  // The pad bytes are zeros straight after the last chunk.
  rnic_crc32 #(.MaxBytes(3)) u_crc_pad (
    .crc_i   (crc_chunk),
    .data_i  ('0),
    .bytes_i ({5'd0, base_pad}),
    .crc_o   (crc_chunk_pad)
  );

  always_comb begin
    // Output beat: the low 64 bytes once 64 are present, or the rest of a complete frame.
    tx_tvalid_o = (cnt_q >= 8'd64) || (state_q == StDrain && cnt_q != 8'd0);
    tx_tlast_o  = (state_q == StDrain) && (cnt_q <= 8'd64);
    tx_tdata_o  = acc_q[511:0];
    tx_tkeep_o  = (cnt_q >= 8'd64) ? {64{1'b1}} : ~({64{1'b1}} << cnt_q[5:0]);
    fire        = tx_tvalid_o && tx_tready_i;
    sent_o      = fire && tx_tlast_o;

    // The next frame's headers enter the accumulator as soon as it is free (possibly in the cycle
    // the previous frame's last beat leaves), and its first payload chunk may join them at once.
    loading = pend_valid_q && (state_q == StIdle || (state_q == StDrain && sent_o));
    if (loading) begin
      base_acc   = {368'd0, pend_hb_q};
      base_cnt   = {1'b0, pend_len_q};
      base_rem   = pend_plen_q;
      base_pad   = pend_pad_q;
      base_crc   = pend_crc_q;
      in_payload = (pend_plen_q != 13'd0);
    end else begin
      base_acc   = fire ? {512'd0, acc_q[1023:512]} : acc_q;
      base_cnt   = fire ? ((cnt_q > 8'd64) ? cnt_q - 8'd64 : 8'd0) : cnt_q;
      base_rem   = rem_q;
      base_pad   = pad_q;
      base_crc   = crc_q;
      in_payload = (state_q == StPayload);
    end
    // A chunk fits when at most 64 bytes are left after this cycle's beat.
    pl_ready_o = in_payload && (base_cnt <= 8'd64);
  end

  // Kept apart from the block above (which feeds the chunk CRC) so that the simulator sees no
  // combinational loop.
  always_comb begin
    state_d      = state_q;
    acc_d        = base_acc;
    cnt_d        = base_cnt;
    rem_d        = base_rem;
    pad_d        = base_pad;
    crc_d        = base_crc;
    pend_valid_d = pend_valid_q;
    end_cnt      = '0;
    icrc_app     = 1'b0;
    icrc_val     = '0;
    icrc_pos     = '0;

    if (loading) begin
      pend_valid_d = 1'b0;
      if (pend_plen_q == 13'd0) begin
        // No payload (and so no pad): the frame is complete at once.
        icrc_app = 1'b1;
        icrc_val = ~pend_crc_q;
        icrc_pos = pend_len_q;
        cnt_d    = base_cnt + 8'd4;
        state_d  = StDrain;
      end else begin
        state_d  = StPayload;
      end
    end else begin
      unique case (state_q)
        StIdle, StPayload: ;
        StTrailer: begin
          end_cnt = base_cnt + 8'(base_pad);
          if (end_cnt <= 8'd124) begin
            icrc_app = 1'b1;
            icrc_val = ~crc_q;
            icrc_pos = end_cnt[6:0];
            cnt_d    = end_cnt + 8'd4;
            state_d  = StDrain;
          end
        end
        StDrain: begin
          if (sent_o) state_d = StIdle;
        end
        default: state_d = StIdle;
      endcase
    end

    if (pl_valid_i && pl_ready_o) begin
      acc_d = base_acc | ({512'd0, chunk} << {base_cnt, 3'b000});
      cnt_d = base_cnt + 8'(chunk_bytes);
      rem_d = (13'(chunk_bytes) >= base_rem) ? 13'd0 : base_rem - 13'(chunk_bytes);
      crc_d = crc_chunk;
      if (rem_d == 13'd0) begin
        crc_d   = crc_chunk_pad;
        end_cnt = cnt_d + 8'(base_pad);
        if (end_cnt <= 8'd124) begin
          // Room for pad + ICRC now: the frame is complete.
          icrc_app = 1'b1;
          icrc_val = ~crc_chunk_pad;
          icrc_pos = end_cnt[6:0];
          cnt_d    = end_cnt + 8'd4;
          state_d  = StDrain;
        end else begin
          state_d  = StTrailer;
        end
      end
    end

    // One place for the ICRC in all cases above, byte by byte (bytes at and above the fill level
    // are zero; byte inserts simulate much faster than a 1024-bit shift).
    if (icrc_app) begin
      for (int unsigned j = 0; j < 4; j++) begin
        acc_d[{icrc_pos + 7'(j), 3'b000} +: 8] = icrc_val[8 * j +: 8];
      end
    end

    // The header register frees up in the cycle it is loaded, so back-to-back short frames need
    // no bubble (this makes hdr_ready_o depend on tx_tready_i combinationally).
    hdr_ready_o = !pend_valid_d;
    pend_hb_d   = pend_hb_q;
    pend_len_d  = pend_len_q;
    pend_plen_d = pend_plen_q;
    pend_pad_d  = pend_pad_q;
    pend_crc_d  = pend_crc_q;
    if (hdr_valid_i && hdr_ready_o) begin
      pend_valid_d = 1'b1;
      pend_hb_d    = hb;
      pend_len_d   = hdr_len;
      pend_plen_d  = hdr_i.payload_len;
      pend_pad_d   = pad;
      pend_crc_d   = crc_h2;
    end
  end

  always_ff @(posedge clk_i) begin
    if (!rst_ni) begin
      state_q      <= StIdle;
      acc_q        <= '0;
      cnt_q        <= '0;
      rem_q        <= '0;
      pad_q        <= '0;
      crc_q        <= '0;
      pend_valid_q <= 1'b0;
      pend_hb_q    <= '0;
      pend_len_q   <= '0;
      pend_plen_q  <= '0;
      pend_pad_q   <= '0;
      pend_crc_q   <= '0;
    end else begin
      state_q      <= state_d;
      acc_q        <= acc_d;
      cnt_q        <= cnt_d;
      rem_q        <= rem_d;
      pad_q        <= pad_d;
      crc_q        <= crc_d;
      pend_valid_q <= pend_valid_d;
      pend_hb_q    <= pend_hb_d;
      pend_len_q   <= pend_len_d;
      pend_plen_q  <= pend_plen_d;
      pend_pad_q   <= pend_pad_d;
      pend_crc_q   <= pend_crc_d;
    end
  end

endmodule
