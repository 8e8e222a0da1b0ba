// SPDX-License-Identifier: Apache-2.0
//
// Hand-written shared types of the RNIC: the header descriptor the engine hands to the transmit
// framer, the parsed frame the receive framer hands to the engine, and the opcode table.
// Everything shared with software (opcodes, layouts, registers) comes from rnic_reg_pkg, which is
// generated from spec/rnic.toml.

package rnic_pkg;
  import rnic_reg_pkg::*;

  localparam int unsigned DataW     = 512;
  localparam int unsigned DataBeatBytes = DataW / 8;
  localparam int unsigned MaxPayload = 4096;

  // Range of a resource a function owns (docs/architecture.md, Functions): {count, first} for
  // function f of a table of `total` entries under the VF profile {vfs, q}.
  function automatic logic [63:0] res_range(logic [7:0] f, logic [31:0] total, logic [15:0] vfs,
                                            logic [23:0] q);
    logic [31:0] pool;
    pool = total - 32'(vfs) * 32'(q);
    if (f == 8'd0)              return {pool, 32'd0};
    else if (16'(f) <= vfs)     return {32'(q), pool + (32'(f) - 32'd1) * 32'(q)};
    else                        return {32'd0, pool};
  endfunction

  function automatic logic res_owns(logic [63:0] range, logic [31:0] idx);
    return idx >= range[31:0] && (idx - range[31:0]) < range[63:32];
  endfunction

  // Modes of a QP's timer (rnic_timer, contract section 10a).
  localparam logic [1:0] TmrOff = 2'd0;
  localparam logic [1:0] TmrAck = 2'd1;
  localparam logic [1:0] TmrRnr = 2'd2;

  // Transmit header descriptor: rnic_tx_frame builds Ethernet/IPv4/UDP/BTH and the extension
  // headers the opcode calls for (see has_* below) from it; payload_len bytes of payload follow
  // on the framer's payload port.
  typedef struct packed {
    logic [47:0] src_mac;      // the sending QP's function's address (added first: the older
    logic [31:0] src_ip;       // fields keep their bit positions)
    logic [47:0] dst_mac;
    logic [31:0] dst_ip;
    logic [15:0] udp_sport;
    logic [7:0]  opcode;
    logic        se;
    logic        ackreq;
    logic [23:0] dqpn;
    logic [23:0] psn;
    logic [63:0] va;           // RETH or AtomicETH virtual address
    logic [31:0] rkey;         // RETH or AtomicETH R_Key
    logic [31:0] dma_len;      // RETH DMA length
    logic [31:0] imm;          // ImmDt (numeric value, sent big-endian)
    logic [7:0]  syndrome;     // AETH
    logic [23:0] msn;          // AETH
    logic [63:0] swap_add;     // AtomicETH swap or add data
    logic [63:0] compare;      // AtomicETH compare data
    logic [63:0] orig;         // AtomicAckETH original remote data
    logic [12:0] payload_len;  // 0 .. MaxPayload
  } tx_hdr_t;

  typedef enum logic [1:0] {
    RxOk      = 2'd0,
    RxDropHdr = 2'd1,   // counter RX_DROP_HDR
    RxDropIcrc = 2'd2   // counter RX_DROP_ICRC
  } rx_status_e;

  // Parsed receive frame (valid only when status == RxOk, except status itself).
  typedef struct packed {
    // (ring fields first: the framer's unit bench decodes the rest from the low end)
    logic [15:0] pl_base;      // ring byte address of the first payload byte (rnic_wrq reads it)
    logic [6:0]  nwords;       // ring words the frame holds (released by rnic_wrq after its writes)
    logic [7:0]  func;         // function whose MAC/IP the frame was addressed to
    rx_status_e  status;
    logic [7:0]  opcode;
    logic        se;
    logic        ackreq;
    logic [1:0]  padcnt;
    logic [23:0] dqpn;
    logic [23:0] psn;
    logic [63:0] va;
    logic [31:0] rkey;
    logic [31:0] dma_len;
    logic [31:0] imm;
    logic [7:0]  syndrome;
    logic [23:0] msn;
    logic [63:0] swap_add;
    logic [63:0] compare;
    logic [63:0] orig;
    logic [12:0] payload_len;
  } rx_pkt_t;

  // A command of the DMA write queue (rnic_wrq): the engine's host-memory writes, executed in
  // order behind the task that issued them.
  typedef enum logic [1:0] {
    WrqPayload,   // len bytes of received payload from ring byte address src to addr
    WrqImm,       // len (<= 32) bytes of data to addr, then the MSI-X if msix is set
    WrqRelease    // return rel_words ring words to the receive framer
  } wrq_kind_e;

  typedef struct packed {
    wrq_kind_e    kind;
    logic [7:0]   func;
    logic [63:0]  addr;
    logic [12:0]  len;
    logic [15:0]  src;
    logic [255:0] data;
    logic         msix;
    logic [7:0]   msix_func;
    logic [15:0]  msix_vector;
    logic [6:0]   rel_words;
  } wrq_cmd_t;

  // ---- opcode table (RC), following rxe_opcode.c
  function automatic logic op_valid(logic [7:0] op);
    return op <= 8'h14;
  endfunction

  function automatic logic op_has_reth(logic [7:0] op);
    return op == BthOpcodeWriteFirst || op == BthOpcodeWriteOnly ||
           op == BthOpcodeWriteOnlyImm || op == BthOpcodeReadRequest;
  endfunction

  function automatic logic op_has_imm(logic [7:0] op);
    return op == BthOpcodeSendLastImm || op == BthOpcodeSendOnlyImm ||
           op == BthOpcodeWriteLastImm || op == BthOpcodeWriteOnlyImm;
  endfunction

  function automatic logic op_has_aeth(logic [7:0] op);
    return op == BthOpcodeReadRespFirst || op == BthOpcodeReadRespLast ||
           op == BthOpcodeReadRespOnly || op == BthOpcodeAck || op == BthOpcodeAtomicAck;
  endfunction

  function automatic logic op_has_atomiceth(logic [7:0] op);
    return op == BthOpcodeCmpSwap || op == BthOpcodeFetchAdd;
  endfunction

  function automatic logic op_has_atomicack(logic [7:0] op);
    return op == BthOpcodeAtomicAck;
  endfunction

  function automatic logic op_is_response(logic [7:0] op);
    return op >= BthOpcodeReadRespFirst && op <= BthOpcodeAtomicAck;
  endfunction

  // Bytes of extension headers after the BTH: RETH 16, ImmDt 4, AETH 4, AtomicETH 28, AtomicAck 8.
  function automatic logic [6:0] op_ext_len(logic [7:0] op);
    logic [6:0] n;
    n = 7'd0;
    if (op_has_reth(op))      n = n + 7'd16;
    if (op_has_imm(op))       n = n + 7'd4;
    if (op_has_aeth(op))      n = n + 7'd4;
    if (op_has_atomiceth(op)) n = n + 7'd28;
    if (op_has_atomicack(op)) n = n + 7'd8;
    return n;
  endfunction

  // Order of extension headers on the wire: RETH, AtomicETH, AETH, AtomicAckETH, ImmDt
  // (only the combinations above occur: RETH+ImmDt, AETH+AtomicAck).

endpackage
