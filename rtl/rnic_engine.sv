// SPDX-License-Identifier: Apache-2.0
//
// The RNIC task engine (docs/architecture.md sections 5, 8, 9, 10, 11).
//
// It runs one task at a time, start to finish: admin commands, doorbells, received frames
// (responder or completer), requester steps (TX), flushes and the two phases of a function's
// teardown (FLR, FLR_DONE: Function Level Reset or VF disable, section 4). Every state change of the NIC happens
// inside exactly one task, which is what lets the reference model follow the RTL task by task
// through the trace port. The trace event is combinational in the cycle the task starts (the
// cycle the engine takes the command / doorbell / frame / QP), so that an MMIO write accepted in
// the same cycle is ordered after the task, as the lockstep rules say.
//
// Structure: one main FSM (state_q) with small subroutines that return through a return-state
// register:
//   * StMr*   — MR check (lkey or rkey): index range, valid, key, PD, access, range
//   * StWk*   — piece walker over a segment list (SGEs or one MR range): skips `off` bytes, then
//               covers `n` bytes in pieces split at segment and MR page ends; modes: check only,
//               gather to the transmit framer, gather 8 bytes locally, scatter from the receive
//               framer's payload buffer, scatter a local 8-byte value
//   * StWqe*  — DMA read of a WQE (64 or 128 bytes) into wqe_q
//   * StHdr   — hand one header descriptor to the transmit framer
//   * StCqe*  — CQE writer (overflow check, one 32-byte DMA write, pi update, MSI-X)
// The context memories and the QP ring are single-port RAMs with a registered read (rnic_ram),
// cleared after reset by StInit (one entry per cycle, NumQp cycles); the task works on a copy of
// the QP context (qp_q) and writes it back at the end (StEnd). Lock-step-relevant choices where
// the contract is silent follow the reference model (see the comments at StWkSeg, StWrite4, StTx2).
//
// DMA: one read outstanding at a time (tag 0); completion beats go into a 64-entry FIFO (one
// 4096-byte piece) from which the WQE loader, the MTT loader, the atomic read or the transmit
// framer's payload port take them. Writes are issued one beat at a time from the receive framer's
// payload read port. Performance work (later): several tagged reads in flight, prefetching the
// next WQE, pipelining the payload read port into the write channel, sharding the engine per QP.
module rnic_engine
  import rnic_pkg::*;
  import rnic_reg_pkg::*;
#(
  parameter int unsigned NumQp  = 1024,
  parameter int unsigned NumCq  = 1024,
  parameter int unsigned NumMr  = 1024,
  parameter int unsigned NumPd  = 1024,
  parameter int unsigned NumMtt = 16384,
  parameter int unsigned NumVf  = 8
) (
  input  logic                  clk_i,
  input  logic                  rst_ni,

  // commands from rnic_mmio
  input  logic                  cmd_valid_i,
  input  logic [7:0]            cmd_func_i,
  input  logic [7:0]            cmd_op_i,
  input  logic [383:0]          cmd_args_i,
  output logic                  cmd_start_o,
  output logic                  cmd_done_o,
  output logic [7:0]            cmd_status_o,
  output logic [63:0]           cmd_out0_o,
  output logic [63:0]           cmd_out1_o,

  // doorbell FIFO head
  input  logic                  db_valid_i,
  input  logic [1:0]            db_kind_i,
  input  logic [23:0]           db_idx_i,
  input  logic [63:0]           db_val_i,
  input  logic [7:0]            db_func_i,
  output logic                  db_pop_o,

  input  logic                  rd_pend_i,
  output logic                  idle_o,
  output logic [CounterNum-1:0] cnt_inc_o,

  // functions (docs/architecture.md section 4, Functions)
  input  logic                  vf_en_i,
  input  logic [NumVf:0]        func_rst_i,     // teardown pending (FLR / VF disable)
  output logic                  flr_start_o,    // FLR task of flr_func_o starts
  output logic                  flr_done_o,     // FLR_DONE task of flr_func_o starts
  output logic [7:0]            flr_func_o,
  output logic [15:0]           vfres_vfs_o,
  output logic [4:0][23:0]      vfres_q_o,
  output logic [NumVf:0][47:0]  func_mac_o,
  output logic [NumVf:0][31:0]  func_ip_o,

  // DMA
  output logic                  dma_rd_req_valid_o,
  input  logic                  dma_rd_req_ready_i,
  output logic [7:0]            dma_rd_req_tag_o,
  output logic [7:0]            dma_rd_req_func_o,
  output logic [63:0]           dma_rd_req_addr_o,
  output logic [12:0]           dma_rd_req_len_o,
  input  logic                  dma_rd_cpl_valid_i,
  input  logic [7:0]            dma_rd_cpl_tag_i,
  input  logic [511:0]          dma_rd_cpl_data_i,
  input  logic                  dma_rd_cpl_last_i,
  output logic                  dma_wr_valid_o,
  input  logic                  dma_wr_ready_i,
  output logic [7:0]            dma_wr_func_o,
  output logic [63:0]           dma_wr_addr_o,
  output logic [12:0]           dma_wr_len_o,
  output logic [511:0]          dma_wr_data_o,
  output logic                  dma_wr_last_o,

  output logic                  msix_valid_o,
  output logic [7:0]            msix_func_o,
  output logic [15:0]           msix_vector_o,

  // transmit framer
  output logic                  hdr_valid_o,
  input  logic                  hdr_ready_i,
  output tx_hdr_t               hdr_o,
  output logic                  hdr_drop_o,     // spoof-check: this frame must not leave
  output logic                  pl_valid_o,
  input  logic                  pl_ready_i,
  output logic [511:0]          pl_data_o,
  output logic [6:0]            pl_bytes_o,

  // receive framer
  input  logic                  pkt_valid_i,
  input  rx_pkt_t               pkt_i,
  output logic                  pkt_done_o,
  output logic                  pl_rd_en_o,
  output logic [15:0]           pl_rd_addr_o,
  input  logic [511:0]          pl_rd_data_i,
  output logic                  pl_free_o,
  output logic [6:0]            pl_free_words_o,

  output logic                  trace_valid_o,
  output logic [3:0]            trace_kind_o,
  output logic [23:0]           trace_qpn_o,
  output logic [7:0]            trace_func_o
);

  localparam int unsigned QpW  = $clog2(NumQp);
  localparam int unsigned CqW  = $clog2(NumCq);
  localparam int unsigned MrW  = $clog2(NumMr);
  localparam int unsigned PdW  = $clog2(NumPd);
  localparam int unsigned MttW = $clog2(NumMtt);
  localparam int unsigned MaxQpCq = NumQp > NumCq ? NumQp : NumCq;
  localparam int unsigned MaxMrPd = NumMr > NumPd ? NumMr : NumPd;
  localparam int unsigned InitMax = MaxQpCq > MaxMrPd ? MaxQpCq : MaxMrPd;
  localparam int unsigned InitW = $clog2(InitMax);
  localparam int unsigned FifoDepth = 64;

  //////////////////////////
  // Types and helpers    //
  //////////////////////////

  typedef enum logic [6:0] {
    StInit, StIdle, StPopQ, StPopChk,
    // admin commands
    StCmdRd, StCmdRd2, StCmdExec, StMttIss, StMttWait, StMttWr, StCmdDone,
    // doorbells
    StDbRd, StDbExec, StDbPf, StDbPf2,
    // received frames
    StRxStart, StRxQp,
    // responder
    StRespStart, StErrNak, StRnrNak, StAckChk,
    StSend, StSendC, StSendChk, StSendChk2, StSendDone, StSendFin,
    StWrite, StWrite2, StWrite3, StWrite4, StWrite5, StWriteImmW, StWriteImm, StWriteFin,
    StRead, StRead2, StRsp, StRsp2, StRsp3, StRsp4,
    StAtomic, StAtomic2, StAtomic3, StAtomic4,
    // completer
    StCompStart, StCompFetch, StCompC, StCompLoop, StCompOp, StCompRr2, StCompRr3, StCompAa2, StCompAa3,
    StCompl, StCompl2, StSqErr,
    // requester
    StTx, StTxC, StTx2, StTxLk, StTxLk2, StTxGo, StTxG2, StTxG3, StTxG4, StTxInl, StTxG5, StTxEnd,
    // flushes
    StFlushSq, StFlushSq2, StFlushSq3, StFlushRq, StFlushRq2, StFlushRq3,
    StTmrLd, StTmr, StTmr2,
    StVrRd, StVrChk, StMrScan, StMrScanChk,
    StFlrRd, StFlrChk, StFlrDRd, StFlrDChk,
    // subroutines
    StMrRd, StMrChk,
    StWkSeg, StWkMr, StWkMtt, StWkRdIss, StWkWr, StWkDrain, StWkRet,
    StWqeIss, StWqeWait, StLnIss, StLnWait, StRlWait,
    StHdr,
    StCqeRd, StCqeChk, StCqeWr,
    StEnd
  } state_e;

  typedef enum logic [2:0] {
    WkCheck, WkGatherTx, WkGatherLocal, WkScatterPl, WkScatterLocal
  } wk_mode_e;

  // Segment list of the walker: the SGEs of a WQE, or one MR range.
  typedef struct packed {
    logic [3:0][63:0] addr;
    logic [3:0][31:0] len;
    logic [3:0][31:0] key;
    logic [2:0]       nseg;
    logic             whole;   // SGE list: the lkey check covers the whole SGE (as the model)
  } segs_t;

  // The helpers below read only some fields of the structures they are given.
  /* verilator lint_off UNUSEDSIGNAL */
  function automatic logic [7:0] wc_of(logic [7:0] wr_op);
    unique case (wr_op)
      WrOpcodeRdmaWrite, WrOpcodeRdmaWriteWithImm: return WcOpcodeRdmaWrite;
      WrOpcodeSend, WrOpcodeSendWithImm:           return WcOpcodeSend;
      WrOpcodeRdmaRead:                            return WcOpcodeRdmaRead;
      WrOpcodeAtomicCmpAndSwp:                     return WcOpcodeCompSwap;
      WrOpcodeAtomicFetchAndAdd:                   return WcOpcodeFetchAdd;
      default:                                     return 8'd0;
    endcase
  endfunction

  // WQEs in a line fetched from index idx (section 8): posted ones (up to sq_pi), at most
  // WqeLine, not past the end of the ring
  function automatic logic [3:0] line_n(qpc_t q, logic [15:0] idx);
    logic [15:0] posted, to_end, n;
    posted = q.sq_pi - idx;
    to_end = (16'd1 << q.log_sq_size) - (idx & ((16'd1 << q.log_sq_size) - 16'd1));
    n = 16'(WqeLine);
    if (posted < n) n = posted;
    if (to_end < n) n = to_end;
    return (n == 16'd0) ? 4'd1 : n[3:0];
  endfunction

  function automatic logic [3:0] rline_n(qpc_t q, logic [15:0] idx);
    logic [15:0] posted, to_end, n;
    posted = q.rq_pi - idx;
    to_end = (16'd1 << q.log_rq_size) - (idx & ((16'd1 << q.log_rq_size) - 16'd1));
    n = 16'(WqeLine);
    if (posted < n) n = posted;
    if (to_end < n) n = to_end;
    return (n == 16'd0) ? 4'd1 : n[3:0];
  endfunction

  function automatic segs_t segs_send(send_wqe_t w);
    segs_t s;
    s.addr = {w.sge3_addr, w.sge2_addr, w.sge1_addr, w.sge0_addr};
    s.len  = {w.sge3_len, w.sge2_len, w.sge1_len, w.sge0_len};
    s.key  = {w.sge3_lkey, w.sge2_lkey, w.sge1_lkey, w.sge0_lkey};
    s.nseg = (w.num_sge > 8'd4) ? 3'd4 : w.num_sge[2:0];
    s.whole = 1'b1;
    return s;
  endfunction

  function automatic segs_t segs_recv(recv_wqe_t w);
    segs_t s;
    s.addr = {64'd0, w.sge2_addr, w.sge1_addr, w.sge0_addr};
    s.len  = {32'd0, w.sge2_len, w.sge1_len, w.sge0_len};
    s.key  = {32'd0, w.sge2_lkey, w.sge1_lkey, w.sge0_lkey};
    s.nseg = (w.num_sge > 8'd3) ? 3'd3 : w.num_sge[2:0];
    s.whole = 1'b1;
    return s;
  endfunction

  function automatic segs_t segs_one(logic [63:0] addr, logic [31:0] len, logic [31:0] key);
    segs_t s;
    s      = '0;
    s.addr[0] = addr;
    s.len[0]  = len;
    s.key[0]  = key;
    s.nseg    = 3'd1;
    return s;
  endfunction

  // Sum of the first n SGE lengths.
  function automatic logic [33:0] seg_sum(segs_t s);
    logic [33:0] t;
    t = '0;
    for (int unsigned i = 0; i < 4; i++) begin
      if (3'(i) < s.nseg) t = t + 34'(s.len[i]);
    end
    return t;
  endfunction

  // Go-back-N (sections 10 and 10a): restart the requester at PSN p inside the WQE at comp_ci;
  // a READ or atomic starts over from its first PSN. One function for the NAK and the timer paths.
  // is_read: the WQE is an RDMA READ, which resumes at its first missing response p (a new READ
  // request for the rest) unless nothing of it arrived.
  function automatic qpc_t go_back(qpc_t q, logic [23:0] p, logic send_write, logic is_read);
    q.sq_ci          = q.comp_ci;
    q.rd_outstanding = 8'd0;
    q.rd_resume      = 1'b0;
    if (send_write || (is_read && p != q.comp_wqe_psn)) begin
      q.rd_resume     = is_read;
      q.rd_resume_psn = p;
      q.sq_psn    = p;
      q.sq_offset = {8'd0, 24'(p - q.comp_wqe_psn)} << (7 + 32'(q.path_mtu));
      q.acked_psn = p;
    end else begin
      q.sq_psn    = q.comp_wqe_psn;
      q.sq_offset = 32'd0;
      q.acked_psn = q.comp_wqe_psn;
    end
    return q;
  endfunction

  function automatic tx_hdr_t mk_hdr(qpc_t q, logic [QpW-1:0] qpn, logic [7:0] op,
                                     logic [23:0] psn);
    tx_hdr_t h;
    h           = '0;
    h.dst_mac   = q.dest_mac;
    h.dst_ip    = q.dest_ip;
    h.udp_sport = UdpSportBase[15:0] | {2'b0, 14'(qpn)};
    h.opcode    = op;
    h.dqpn      = q.dest_qpn;
    h.psn       = psn;
    return h;
  endfunction

  // A QP with queued responses (section 9a): a ring pop gives it a TX task that sends one.
  function automatic logic rsp_work(qpc_t q);
    return q.valid && (q.state == QpStateRtr || q.state == QpStateRts) &&
           (q.rsp_cnt != 5'd0 || q.ack_pend);
  endfunction

  function automatic logic s24_neg(logic [23:0] v);
    return v[23];
  endfunction

  /* verilator lint_on UNUSEDSIGNAL */

  // ceil(x / mtu) with mtu = 128 << pmtu
  function automatic logic [32:0] div_mtu_ceil(logic [33:0] x, logic [2:0] pmtu);
    logic [33:0] m;
    m = (34'd128 << pmtu) - 34'd1;
    return 33'((x + m) >> (7 + 32'(pmtu)));
  endfunction

  ///////////////////
  // Context RAMs  //
  ///////////////////

  logic                qpc_req, qpc_we;
  logic [QpW-1:0]      qpc_addr;
  qpc_t                qpc_wdata, qpc_rdata;
  logic                cqc_req, cqc_we;
  logic [CqW-1:0]      cqc_addr;
  cqc_t                cqc_wdata, cqc_rdata;
  logic                mrc_req, mrc_we;
  logic [MrW-1:0]      mrc_addr;
  mrc_t                mrc_wdata, mrc_rdata;
  logic                pdc_req, pdc_we;
  logic [PdW-1:0]      pdc_addr;
  pdc_t                pdc_wdata, pdc_rdata;
  logic                mtt_req, mtt_we;
  logic [MttW-1:0]     mtt_addr;
  logic [63:0]         mtt_wdata, mtt_rdata;

  rnic_ram #(.Width(QpcBits), .Depth(NumQp)) u_qpc (
    .clk_i, .req_i(qpc_req), .we_i(qpc_we), .addr_i(qpc_addr), .wdata_i(qpc_wdata),
    .rdata_o(qpc_rdata));
  rnic_ram #(.Width(CqcBits), .Depth(NumCq)) u_cqc (
    .clk_i, .req_i(cqc_req), .we_i(cqc_we), .addr_i(cqc_addr), .wdata_i(cqc_wdata),
    .rdata_o(cqc_rdata));
  rnic_ram #(.Width(MrcBits), .Depth(NumMr)) u_mrc (
    .clk_i, .req_i(mrc_req), .we_i(mrc_we), .addr_i(mrc_addr), .wdata_i(mrc_wdata),
    .rdata_o(mrc_rdata));
  rnic_ram #(.Width(PdcBits), .Depth(NumPd)) u_pdc (
    .clk_i, .req_i(pdc_req), .we_i(pdc_we), .addr_i(pdc_addr), .wdata_i(pdc_wdata),
    .rdata_o(pdc_rdata));
  rnic_ram #(.Width(64), .Depth(NumMtt)) u_mtt (
    .clk_i, .req_i(mtt_req), .we_i(mtt_we), .addr_i(mtt_addr), .wdata_i(mtt_wdata),
    .rdata_o(mtt_rdata));

  // Responder resources (sections 9, 9a): per QP a ring of AtomHist entries, one RAM word per
  // QP: accepted READ requests (until their responses are sent) and executed atomics (their
  // results, kept for duplicates). It is read with the QPC at the start of every RX task and at
  // every ring pop, written when a READ or atomic is accepted (slot qpc.atom_wp), and cleared by
  // CREATE_QP, MODIFY_QP to RESET and reset.
  typedef struct packed {
    logic        v;
    logic        rd;      // READ request (else an atomic)
    logic [23:0] psn;
    logic [63:0] va;      // READ: remote address; atomic: original value
    logic [31:0] rkey;    // READ only
    logic [31:0] len;     // READ only
  } atom_ent_t;
  localparam int unsigned NumAtom = int'(AtomHist);
  typedef atom_ent_t [NumAtom-1:0] atom_hist_t;
  logic                atom_req, atom_we;
  logic [QpW-1:0]      atom_addr;
  atom_hist_t          atom_wdata, atom_rdata;

  rnic_ram #(.Width($bits(atom_hist_t)), .Depth(NumQp)) u_atom (
    .clk_i, .req_i(atom_req), .we_i(atom_we), .addr_i(atom_addr), .wdata_i(atom_wdata),
    .rdata_o(atom_rdata));

  // Receive WQE copies (section 9): as the send WQE copies below, WqeCopies slots per QP (valid
  // bits qpc.rqe_cp), filled by lines of up to WqeLine receive WQEs; an RQ_PI doorbell reads the
  // line at rq_ci ahead when its slot misses, so a SEND finds its WQE without a DMA read.
  localparam int unsigned NumCp = int'(WqeCopies);
  localparam int unsigned CpW   = $clog2(NumCp);
  typedef struct packed {
    logic [15:0]  idx;
    logic [511:0] wqe;
  } rqc_ent_t;
  logic                rqc_req, rqc_we;
  logic [QpW+CpW-1:0]  rqc_addr;
  rqc_ent_t            rqc_wdata, rqc_rdata;

  rnic_ram #(.Width($bits(rqc_ent_t)), .Depth(NumQp * NumCp)) u_rqc (
    .clk_i, .req_i(rqc_req), .we_i(rqc_we), .addr_i(rqc_addr), .wdata_i(rqc_wdata),
    .rdata_o(rqc_rdata));

  // Send WQE copies (section 8): per QP WqeCopies slots (slot = ring index mod WqeCopies), each
  // a send WQE and its ring index; valid while the slot's bit in qpc.wqe_cp is set (cleared with
  // the QPC by CREATE_QP and MODIFY_QP to RESET). The requester and the completer look a WQE up
  // here first; a miss reads a line of up to WqeLine posted WQEs in one DMA read and keeps all.
  typedef struct packed {
    logic [15:0]   idx;
    logic [1023:0] wqe;
  } sqc_ent_t;
  logic                sqc_req, sqc_we;
  logic [QpW+CpW-1:0]  sqc_addr;
  sqc_ent_t            sqc_wdata, sqc_rdata;

  rnic_ram #(.Width($bits(sqc_ent_t)), .Depth(NumQp * NumCp)) u_sqc (
    .clk_i, .req_i(sqc_req), .we_i(sqc_we), .addr_i(sqc_addr), .wdata_i(sqc_wdata),
    .rdata_o(sqc_rdata));

  // The completer's own copies of send WQEs (section 10), valid bits qpc.cmp_cp: with one set
  // shared, a requester more than WqeCopies WQEs ahead of the completer would evict the copies
  // the completer is about to use and the other way round.
  logic                cpc_req, cpc_we;
  logic [QpW+CpW-1:0]  cpc_addr;
  sqc_ent_t            cpc_wdata, cpc_rdata;

  rnic_ram #(.Width($bits(sqc_ent_t)), .Depth(NumQp * NumCp)) u_cpc (
    .clk_i, .req_i(cpc_req), .we_i(cpc_we), .addr_i(cpc_addr), .wdata_i(cpc_wdata),
    .rdata_o(cpc_rdata));

  // A duplicate atomic's saved result.
  logic        atom_hit;
  logic [63:0] atom_orig;
  always_comb begin
    atom_hit  = 1'b0;
    atom_orig = '0;
    for (int unsigned k = 0; k < NumAtom; k++) begin
      if (atom_rdata[k].v && !atom_rdata[k].rd && atom_rdata[k].psn == pkt_i.psn) begin
        atom_hit  = 1'b1;
        atom_orig = atom_rdata[k].va;
      end
    end
  end

  ///////////////////////////////////
  // DMA read completion FIFO      //
  ///////////////////////////////////

  logic [511:0] fifo_data_q [FifoDepth];
  logic [5:0]   fifo_rp_q, fifo_rp_d, fifo_wp_q, fifo_wp_d;
  logic [6:0]   fifo_cnt_q, fifo_cnt_d;
  logic         fifo_push, fifo_pop;
  logic [6:0]   fifo_push_bytes;
  logic [511:0] fifo_head;

  assign fifo_head       = fifo_data_q[fifo_rp_q];

  always_ff @(posedge clk_i) begin
    if (fifo_push) begin
      fifo_data_q[fifo_wp_q]  <= dma_rd_cpl_data_i;
    end
  end

  ////////////////
  // Registers  //
  ////////////////

  state_e            state_q, state_d;
  state_e            ret_q, ret_d;        // return of WQE / header / CQE subroutines
  state_e            wk_ret_q, wk_ret_d;  // return of the walker
  state_e            mr_ret_q, mr_ret_d;  // return of the MR check
  logic [InitW:0]    init_q, init_d;

  // Per-function addresses and trust, the caller of the running command, the VF profile.
  localparam int unsigned NumFunc = NumVf + 1;
  localparam int unsigned FuncSelW = $clog2(NumFunc + 1);
  logic [NumFunc-1:0][47:0] fmac_q, fmac_d;
  logic [NumFunc-1:0][31:0] fip_q, fip_d;
  logic [NumFunc-1:0]       ftrust_q, ftrust_d;
  // Spoof-check: the address the PF assigned, and whether frames must carry it.
  logic [NumFunc-1:0][47:0] amac_q, amac_d;
  logic [NumFunc-1:0][31:0] aip_q, aip_d;
  logic [NumFunc-1:0]       fspoof_q, fspoof_d;
  // DMA windows [dwb, dwe) set by SET_VF_DMA (reset: empty; the PF's entry is never used).
  logic [NumFunc-1:0][63:0] dwb_q, dwb_d, dwe_q, dwe_d;
  logic [7:0]               cfunc_q, cfunc_d;
  logic [7:0]               dbf_q, dbf_d;        // function of the doorbell being executed
  logic [15:0]              vfs_q, vfs_d;
  logic [4:0][23:0]         vq_q, vq_d;
  // SET_VF_RES scan: table index and "an object is in the way"
  logic [$clog2(NumMtt+1)-1:0] vr_i_q, vr_i_d;
  logic                     vr_bad_q, vr_bad_d;
  // Function Level Reset (section 4): functions whose FLR task ran and FLR_DONE did not, per
  // function the number of its QPs with flush work left, the function and index of the scan.
  logic [NumFunc-1:0]       flr_on_q, flr_on_d;
  logic [NumFunc-1:0][QpW:0] flr_cnt_q, flr_cnt_d;
  logic [7:0]               flr_f_q, flr_f_d;
  logic [InitW:0]           fl_i_q, fl_i_d;
  logic                     flr_go, flr_fin;     // a FLR / FLR_DONE task can start
  logic [7:0]               flr_go_f, flr_fin_f;

  // task context
  logic              is_rx_q, is_rx_d;
  logic [QpW-1:0]    qpn_q, qpn_d;
  qpc_t              qp_q, qp_d;
  logic              qp_ld_q, qp_ld_d;    // qp_q is written back at the end of the task
  logic              push_q, push_d;      // push qpn_q into the ring at the end of the task
  // Timer bookkeeping of the current task (section 10a): the QP's acked_psn and comp_ci when it
  // was loaded, whether the task rewound the requester (or is a TIMER task), and an RNR wait
  // it started with the NAK's timer code.
  logic [23:0]       acked0_q, acked0_d;
  logic [15:0]       ci0_q, ci0_d;
  logic              trew_q, trew_d;
  logic              trnr_q, trnr_d;
  logic [4:0]        trnr_code_q, trnr_code_d;
  logic [7:0]        op_q, op_d;
  logic [383:0]      args_q, args_d;
  cqc_t              cq_q, cq_d;
  pdc_t              pd_q, pd_d;
  mrc_t              mr_q, mr_d;
  logic [1:0]        db_kind_q, db_kind_d;
  logic [23:0]       db_idx_q, db_idx_d;
  logic [63:0]       db_val_q, db_val_d;
  logic [7:0]        cst_q, cst_d;        // command status
  logic [63:0]       out0_q, out0_d, out1_q, out1_d;
  query_qp_out_t     qout;

  // WRITE_MTT loop
  logic [MttW:0]     mtt_idx_q, mtt_idx_d;
  logic [15:0]       mtt_cnt_q, mtt_cnt_d;
  logic [63:0]       mtt_src_q, mtt_src_d;
  logic [3:0]        mtt_j_q, mtt_j_d;

  // WQE buffer
  logic [1023:0]     wqe_q, wqe_d;
  logic [1:0]        wqe_nb_q, wqe_nb_d, wqe_b_q, wqe_b_d;
  logic [15:0]       ln_idx_q, ln_idx_d;  // line fetch: index of its first WQE,
  logic [3:0]        ln_n_q, ln_n_d;      //   WQEs in it,
  logic [3:0]        ln_k_q, ln_k_d;      //   WQEs received
  logic              ln_cmp_q, ln_cmp_d;  //   for the completer's copies
  logic [511:0]      lnb_q, lnb_d;        //   and the first beat of the one arriving
  logic              ln_rq_q, ln_rq_d;    //   of receive WQEs

  // header / CQE
  tx_hdr_t           hdr_q, hdr_d;
  cqe_t              cqe_q, cqe_d;
  logic [CqW-1:0]    cqe_cqn_q, cqe_cqn_d;

  // MR check
  logic [31:0]       chk_key_q, chk_key_d;
  logic [63:0]       chk_va_q, chk_va_d;
  logic [31:0]       chk_len_q, chk_len_d;
  logic [3:0]        chk_acc_q, chk_acc_d;
  logic              mr_ok_q, mr_ok_d;

  // walker
  segs_t             segs_q, segs_d;
  wk_mode_e          wk_mode_q, wk_mode_d;
  logic [2:0]        seg_idx_q, seg_idx_d;
  logic [31:0]       seg_off_q, seg_off_d;
  logic [31:0]       wk_rem_q, wk_rem_d;
  logic [3:0]        wk_acc_q, wk_acc_d;
  logic              wk_err_q, wk_err_d;
  logic [12:0]       pl_off_q, pl_off_d;
  logic [31:0]       avail_q, avail_d;
  logic [12:0]       plen_q, plen_d;      // current piece length (1..4096)
  logic [63:0]       piece_va_q, piece_va_d;
  logic [63:0]       phys_q, phys_d;
  logic [63:0]       local_q, local_d;    // 8-byte local value (atomics)
  logic              wq_valid, wq_ready;   // DMA write queue (rnic_wrq)
  logic              wq_hazard;   // the pending read overlaps a queued write: it waits
  logic              wq_empty;    // every write of the tasks so far has been issued
  wrq_cmd_t          wq_cmd;
  logic              txq_req, txq_ready, txq_empty;      // transmit payload queue (rnic_txq)
  logic              txq_rd_valid, txq_pl_valid;
  logic [7:0]        txq_rd_tag, txq_rd_func;
  logic [63:0]       txq_rd_addr;
  logic [12:0]       txq_rd_len;
  logic [511:0]      txq_pl_data;
  logic [6:0]        txq_pl_bytes;

  // DMA read
  logic              rd_req_q, rd_req_d;
  logic [63:0]       rd_addr_q, rd_addr_d;
  logic [12:0]       rd_len_q, rd_len_d;
  logic [7:0]        rd_func_q, rd_func_d;
  logic              rd_busy_q, rd_busy_d;
  logic [12:0]       rd_rem_q, rd_rem_d;

  // task scratch
  logic [31:0]       i_q, i_d;            // READ response index / SGE index
  logic [31:0]       npk_q, npk_d;
  logic [31:0]       w_off_q, w_off_d;    // responder offset / requester payload length
  logic [63:0]       w_va_q, w_va_d;
  logic [31:0]       w_len_q, w_len_d;
  logic [31:0]       w_key_q, w_key_d;
  logic              replay_q, replay_d;
  logic [23:0]       last_q, last_d;      // completer: last PSN of the WQE at comp_ci
  logic [33:0]       lsum_q, lsum_d;      // L of the WQE
  logic [7:0]        err_syn_q, err_syn_d;
  logic [23:0]       err_psn_q, err_psn_d;    // PSN of an error NAK
  atom_ent_t         rsp_e_q, rsp_e_d;        // the response-queue entry a TX task answers
  logic [7:0]        sq_st_q, sq_st_d;    // SQ error status
  state_e            cret_q, cret_d;      // return of "complete"
  logic              lastpkt_q, lastpkt_d;
  logic              inl_q, inl_d;        // the inline payload beat is offered to the framer
  logic [511:0]      inl_data_q, inl_data_d;

  // Two-level scheduler of active QPs (section 5): per function a FIFO of QPNs kept as a linked
  // list (a next-pointer RAM word per QP, head/tail registers per function) and an in_ring bit per
  // QP (each QP at most once); functions with queued QPs are served round-robin, one QP per pop,
  // skipping a function over its rate limit. Pushes happen at the end of a task, pops between
  // tasks.
  logic [NumQp-1:0]              in_ring_q, in_ring_d;
  logic [NumFunc-1:0][QpW-1:0]   fhead_q, fhead_d, ftail_q, ftail_d;
  logic [NumFunc-1:0]            fne_q, fne_d;          // the function's list is not empty
  logic [FuncSelW-1:0]           flast_q, flast_d;      // function served by the last pop
  logic [FuncSelW-1:0]           popf_q, popf_d;        // function of the QP being popped
  logic                          popmore_q, popmore_d;  // its list holds more QPs
  logic                          ring_push, ring_pop;
  logic [QpW-1:0]                ring_waddr, ring_raddr, ring_push_qpn, ring_rdata;
  // Function of each QP (written by CREATE_QP), so that a push finds the QP's list.
  logic [FuncSelW-1:0]           qfunc_mem [NumQp];
  logic                          qfunc_we;
  logic [QpW-1:0]                qfunc_waddr;
  logic [FuncSelW-1:0]           qfunc_wdata, push_f;
  // Transmit rate limits (SET_VF_RATE): a token bucket per function in units of 1/(8*ClockMhz)
  // byte, so that a rate of R Mb/s adds R units per cycle; signed, at most RATE_BURST bytes.
  localparam logic [39:0] TokPerByte = 40'(8 * ClockMhz);
  localparam logic [39:0] TokBurst   = 40'(RateBurst * 8 * ClockMhz);
  logic [NumFunc-1:0][31:0]      frate_q, frate_d;
  logic [NumFunc-1:0][39:0]      ftok_q, ftok_d;
  logic                          chg;                   // a header of a loaded QP leaves
  logic [FuncSelW-1:0]           chg_f;
  logic [39:0]                   chg_amt;
  logic [NumFunc-1:0]            f_elig;
  logic                          sel_valid;
  logic [FuncSelW-1:0]           sel_f;

  // Retransmission and RNR timers.
  logic              tmr_set, tmr_set_restart, tmr_exp_valid, tmr_take;
  logic [QpW-1:0]    tmr_set_qpn, tmr_exp_qpn;
  logic [1:0]        tmr_set_mode;
  logic [4:0]        tmr_set_code;

  rnic_timer #(.NumQp(NumQp)) u_timer (
    .clk_i,
    .rst_ni,
    .set_i         (tmr_set),
    .set_qpn_i     (tmr_set_qpn),
    .set_mode_i    (tmr_set_mode),
    .set_restart_i (tmr_set_restart),
    .set_code_i    (tmr_set_code),
    .exp_valid_o   (tmr_exp_valid),
    .exp_qpn_o     (tmr_exp_qpn),
    .exp_take_i    (tmr_take)
  );

  rnic_ram #(.Width(QpW), .Depth(NumQp)) u_ring (
    .clk_i,
    .req_i   (ring_push || ring_pop),
    .we_i    (ring_push),
    .addr_i  (ring_push ? ring_waddr : ring_raddr),
    .wdata_i (ring_push_qpn),
    .rdata_o (ring_rdata)
  );

  // QP -> function table: a memory with an asynchronous read (the write form is the memory
  // template, not a d/q register).
  always_ff @(posedge clk_i) begin
    if (qfunc_we) qfunc_mem[qfunc_waddr] <= qfunc_wdata;
  end
  assign push_f = qfunc_mem[qpn_q];

  // Round-robin over functions with queued QPs and tokens, starting after the last one served.
  always_comb begin
    for (int unsigned f = 0; f < NumFunc; f++) begin
      f_elig[f] = fne_q[f] && (frate_q[f] == 32'd0 || !ftok_q[f][39]);
    end
    sel_valid = 1'b0;
    sel_f     = flast_q;
    for (int unsigned k = NumFunc; k >= 1; k--) begin
      int unsigned f;
      f = int'(flast_q) + k;
      if (f >= NumFunc) f = f - NumFunc;
      if (f_elig[f]) begin
        sel_valid = 1'b1;
        sel_f     = FuncSelW'(f);
      end
    end
  end

  // Token buckets: refilled every cycle, charged with every header of a function's QP.
  always_comb begin
    for (int unsigned f = 0; f < NumFunc; f++) begin
      logic [39:0] t;
      t = ftok_q[f] + 40'(frate_q[f]);
      ftok_d[f] = (frate_q[f] == 32'd0 || $signed(t) > $signed(TokBurst)) ? TokBurst : t;
    end
    if (chg) ftok_d[chg_f] = ftok_d[chg_f] - chg_amt;
  end

  ///////////////////////////
  // Derived values        //
  ///////////////////////////

  send_wqe_t   swqe;
  recv_wqe_t   rwqe;
  assign swqe = send_wqe_t'(wqe_q);
  assign rwqe = recv_wqe_t'(wqe_q[511:0]);

  logic [12:0] mtu;
  assign mtu = 13'(13'd128 << qp_q.path_mtu);

  // received frame classification
  logic [7:0]  pop;
  logic        p_send, p_write, p_read, p_atomic, p_first, p_middle, p_last, p_only, p_imm;
  logic [12:0] pl;
  assign pop      = pkt_i.opcode;
  assign pl       = pkt_i.payload_len;
  assign p_send   = pop <= 8'h05;
  assign p_write  = pop >= 8'h06 && pop <= 8'h0B;
  assign p_read   = pop == BthOpcodeReadRequest;
  assign p_atomic = pop == BthOpcodeCmpSwap || pop == BthOpcodeFetchAdd;
  assign p_first  = pop == BthOpcodeSendFirst || pop == BthOpcodeWriteFirst;
  assign p_middle = pop == BthOpcodeSendMiddle || pop == BthOpcodeWriteMiddle;
  assign p_last   = pop == BthOpcodeSendLast || pop == BthOpcodeSendLastImm ||
                    pop == BthOpcodeWriteLast || pop == BthOpcodeWriteLastImm;
  assign p_only   = pop == BthOpcodeSendOnly || pop == BthOpcodeSendOnlyImm ||
                    pop == BthOpcodeWriteOnly || pop == BthOpcodeWriteOnlyImm;
  assign p_imm    = op_has_imm(pop);

  // send WQE
  logic        w_is_rd, w_is_atomic, w_is_sw;
  assign w_is_rd     = swqe.opcode == WrOpcodeRdmaRead;
  assign w_is_atomic = swqe.opcode == WrOpcodeAtomicCmpAndSwp ||
                       swqe.opcode == WrOpcodeAtomicFetchAndAdd;
  assign w_is_sw     = swqe.opcode <= WrOpcodeSendWithImm;
  // IBV_SEND_INLINE: the payload is the WQE's inline_len bytes at offset 64 (section 8)
  // (functions, not continuous assigns: evaluated only in the states that use them, which keeps
  // the simulator's per-cycle work down)
  logic        w_inl;
  assign w_inl    = (swqe.flags & 8'(WqeFlagInline)) != 8'd0;
  // L of a send WQE
  function automatic logic [33:0] wqe_len(send_wqe_t w);
    return ((w.flags & 8'(WqeFlagInline)) != 8'd0) ? 34'(w.inline_len) : seg_sum(segs_send(w));
  endfunction

  // A queued response already answers a duplicate READ or atomic at `psn` (section 9a): a
  // queued READ whose unsent packets cover it, or a queued atomic with that PSN; such a
  // duplicate is not queued again.
  function automatic logic dup_covered(atom_hist_t h, logic [3:0] rp, logic [4:0] cnt,
                                       logic [31:0] off, logic [2:0] pmtu, logic [23:0] psn,
                                       logic rd);
    logic c;
    c = 1'b0;
    for (int unsigned k = 0; k < NumAtom; k++) begin
      logic [3:0]  j;
      logic [23:0] start, nend;
      j = rp + 4'(k);
      start = h[j].psn + ((k == 0) ? 24'(off >> (7 + 32'(pmtu))) : 24'd0);
      nend  = h[j].psn + ((h[j].len == 32'd0) ? 24'd1 : 24'(div_mtu_ceil(34'(h[j].len), pmtu)));
      if (5'(k) < cnt && h[j].v) begin
        if (rd && h[j].rd && !s24_neg(psn - start) && s24_neg(psn - nend)) c = 1'b1;
        if (!rd && !h[j].rd && h[j].psn == psn) c = 1'b1;
      end
    end
    return c;
  endfunction

  // piece geometry in the walker (mr_q holds the MR of the current segment)
  logic [63:0] pg_mask, pg_off, pg_rem;
  logic [MttW-1:0] mtt_idx;
  assign pg_mask = (64'd1 << mr_q.log_page) - 64'd1;
  assign pg_off  = piece_va_q & pg_mask;
  assign pg_rem  = (64'd1 << mr_q.log_page) - pg_off;
  assign mtt_idx = MttW'(64'(mr_q.mtt_base) + (piece_va_q >> mr_q.log_page) -
                         (mr_q.iova >> mr_q.log_page));

  // send / receive WQE addresses
  logic [63:0] sq_wqe_addr_comp, rq_wqe_addr;
  assign sq_wqe_addr_comp = qp_q.sq_base +
      {41'd0, (qp_q.comp_ci & ((16'd1 << qp_q.log_sq_size) - 16'd1)), 7'd0};
  assign rq_wqe_addr      = qp_q.rq_base +
      {42'd0, (qp_q.rq_ci & ((16'd1 << qp_q.log_rq_size) - 16'd1)), 6'd0};

  // CQE
  logic [31:0] cq_mask;
  logic [63:0] cqe_addr;
  cqe_t        cqe_out;
  assign cq_mask  = (32'd1 << cq_q.log_size) - 32'd1;
  assign cqe_addr = cq_q.base + {27'd0, (cq_q.pi & cq_mask), 5'd0};
  always_comb begin
    cqe_out       = cqe_q;
    cqe_out.qpn   = 24'(qpn_q);
    cqe_out.func  = qp_q.func;   // the QP's function (the DMA carries the CQ's)
    cqe_out.owner = ~(1'((cq_q.pi >> cq_q.log_size) & 32'd1));
  end

  /////////////////////////
  // Main next-state     //
  /////////////////////////

  // Command argument views (the argument image is latched at task start). Each command reads only
  // its own fields (reserved and other commands' bits are unused by design).
  /* verilator lint_off UNUSEDSIGNAL */
  cmd_create_cq_t a_cq;
  cmd_reg_mr_t    a_mr;
  cmd_write_mtt_t a_mtt;
  cmd_create_qp_t a_cqp;
  cmd_qp_args_t   a_qp;
  cmd_set_port_t  a_port;
  cmd_set_vf_port_t a_vfp;
  cmd_set_vf_res_t  a_vfr;
  cmd_set_vf_dma_t  a_vfd;
  cmd_set_vf_rate_t a_vft;
  logic [23:0]    a_idx;
  assign a_cq   = cmd_create_cq_t'(args_q);
  assign a_mr   = cmd_reg_mr_t'(args_q);
  assign a_mtt  = cmd_write_mtt_t'(args_q);
  assign a_cqp  = cmd_create_qp_t'(args_q);
  assign a_qp   = cmd_qp_args_t'(args_q);
  assign a_port = cmd_set_port_t'(args_q);
  assign a_vfp  = cmd_set_vf_port_t'(args_q);
  assign a_vfr  = cmd_set_vf_res_t'(args_q);
  assign a_vfd  = cmd_set_vf_dma_t'(args_q);
  assign a_vft  = cmd_set_vf_rate_t'(args_q);

  // The calling function's resource ranges ({count, first}; docs/architecture.md, Functions).
  logic [63:0] rq_qp, rq_cq, rq_mr, rq_pd, rq_mtt;
  assign rq_qp  = res_range(cfunc_q, NumQp,  vfs_q, vq_q[0]);
  assign rq_cq  = res_range(cfunc_q, NumCq,  vfs_q, vq_q[1]);
  assign rq_mr  = res_range(cfunc_q, NumMr,  vfs_q, vq_q[2]);
  assign rq_pd  = res_range(cfunc_q, NumPd,  vfs_q, vq_q[3]);
  assign rq_mtt = res_range(cfunc_q, NumMtt, vfs_q, vq_q[4]);

  // SET_VF_RES: the PF's part of each table under the new profile, and the scan length.
  localparam int unsigned MaxTab = (NumQp > NumCq ? NumQp : NumCq) > (NumMr > NumPd ? NumMr : NumPd) ?
                                   (NumQp > NumCq ? NumQp : NumCq) : (NumMr > NumPd ? NumMr : NumPd);
  logic [31:0] vr_pool_qp, vr_pool_cq, vr_pool_mr, vr_pool_pd, vr_pool_mtt;
  assign vr_pool_qp  = NumQp  - 32'(a_vfr.vfs) * 32'(a_vfr.qps);
  assign vr_pool_cq  = NumCq  - 32'(a_vfr.vfs) * 32'(a_vfr.cqs);
  assign vr_pool_mr  = NumMr  - 32'(a_vfr.vfs) * 32'(a_vfr.mrs);
  assign vr_pool_pd  = NumPd  - 32'(a_vfr.vfs) * 32'(a_vfr.pds);
  assign vr_pool_mtt = NumMtt - 32'(a_vfr.vfs) * 32'(a_vfr.mtts);
  assign a_idx  = args_q[23:0];
  /* verilator lint_on UNUSEDSIGNAL */

  logic [CounterNum-1:0] cnt_inc;

  // FLR tasks to start: the lowest function in reset whose FLR task has not run, and the lowest
  // one whose FLR task ran and whose QPs have no flush work left.
  always_comb begin
    flr_go    = 1'b0;
    flr_go_f  = '0;
    flr_fin   = 1'b0;
    flr_fin_f = '0;
    for (int f = NumFunc - 1; f >= 1; f--) begin
      if (func_rst_i[f] && !flr_on_q[f]) begin
        flr_go   = 1'b1;
        flr_go_f = 8'(f);
      end
      // (FLR_DONE, which ends the function's reset, also waits for the writes queued before
      // it, the flush CQEs among them)
      if (flr_on_q[f] && flr_cnt_q[f] == '0 && wq_empty) begin
        flr_fin   = 1'b1;
        flr_fin_f = 8'(f);
      end
    end
  end

  // MODIFY_QP decode
  logic [31:0] mq_req, mq_opt;
  logic        mq_trans_ok;
  logic [2:0]  mq_cur, mq_new;
  always_comb begin
    mq_cur      = qp_q.state;
    mq_new      = a_qp.state;
    mq_req      = '0;
    mq_opt      = '0;
    mq_trans_ok = 1'b1;
    if (mq_new == QpStateReset || mq_new == QpStateErr) begin
      // any -> RESET / ERR: no other bits
    end else if (mq_cur == QpStateReset && mq_new == QpStateInit) begin
      mq_req = QpAttrPkeyIndex | QpAttrPort | QpAttrAccessFlags;
    end else if (mq_cur == QpStateInit && mq_new == QpStateInit) begin
      mq_opt = QpAttrAccessFlags | QpAttrPkeyIndex | QpAttrPort;
    end else if (mq_cur == QpStateInit && mq_new == QpStateRtr) begin
      mq_req = QpAttrAv | QpAttrPathMtu | QpAttrDestQpn | QpAttrRqPsn | QpAttrMaxDestRdAtomic |
               QpAttrMinRnrTimer;
      mq_opt = QpAttrAccessFlags | QpAttrPkeyIndex;
    end else if (mq_cur == QpStateRtr && mq_new == QpStateRts) begin
      mq_req = QpAttrSqPsn | QpAttrMaxQpRdAtomic | QpAttrRetryCnt | QpAttrRnrRetry | QpAttrTimeout;
      mq_opt = QpAttrAccessFlags | QpAttrMinRnrTimer;
    end else if (mq_cur == QpStateRts && mq_new == QpStateRts) begin
      mq_opt = QpAttrAccessFlags | QpAttrMinRnrTimer;
    end else begin
      mq_trans_ok = 1'b0;
    end
  end

  // DMA window of the calling function: [a, a + n) inside it (the PF's is all of memory).
  function automatic logic in_win(logic [7:0] f, logic [63:0] b, logic [63:0] e,
                                  logic [63:0] a, logic [64:0] n);
    return f == 8'd0 || (a >= b && {1'b0, a} + n <= {1'b0, e});
  endfunction
  logic [63:0] cw_b, cw_e;
  logic        win_cq, win_qp, win_mtt_src, win_mtt_ent, win_mtt_rd;
  logic [63:0] mtt_ent;
  logic        cmd_st;   // a command's states: the only ones that use the window checks below
  assign cmd_st = state_q == StCmdExec || state_q == StMttWr || state_q == StMrScanChk;
  assign cw_b    = dwb_q[FuncSelW'(cfunc_q)];
  assign cw_e    = dwe_q[FuncSelW'(cfunc_q)];
  assign mtt_ent = fifo_head[{mtt_j_q[2:0], 6'd0} +: 64];
  // Evaluated only in those states (wide adds and compares the simulator would otherwise do
  // every cycle; the values are don't-care elsewhere).
  always_comb begin
    win_cq      = 1'b0;
    win_qp      = 1'b0;
    win_mtt_src = 1'b0;
    win_mtt_ent = 1'b0;
    win_mtt_rd  = 1'b0;
    if (cmd_st) begin
      win_cq      = in_win(cfunc_q, cw_b, cw_e, a_cq.base, 65'(CqeSize) << a_cq.log_size);
      win_qp      = in_win(cfunc_q, cw_b, cw_e, a_cqp.sq_base, 65'(SendWqeSize) << a_cqp.log_sq_size) &&
                    in_win(cfunc_q, cw_b, cw_e, a_cqp.rq_base, 65'(RecvWqeSize) << a_cqp.log_rq_size);
      win_mtt_src = in_win(cfunc_q, cw_b, cw_e, a_mtt.src, 65'({a_mtt.count, 3'd0}));
      win_mtt_ent = in_win(cfunc_q, cw_b, cw_e, mtt_ent, 65'd1 << MinLogPage);
      win_mtt_rd  = in_win(cfunc_q, cw_b, cw_e, mtt_rdata, 65'd1 << MinLogPage);
    end
  end

  // REG_MR: the context it writes
  mrc_t mr_new;
  always_comb begin
    mr_new          = '0;
    mr_new.valid    = 1'b1;
    mr_new.func     = cfunc_q;
    mr_new.mtt_end  = 24'({41'd0, a_mr.mtt_base} + mr_npages);
    mr_new.pdn      = a_mr.pdn;
    mr_new.key      = a_mr.key;
    mr_new.access   = a_mr.access;
    mr_new.iova     = a_mr.iova;
    mr_new.length   = a_mr.length;
    mr_new.mtt_base = a_mr.mtt_base;
    mr_new.log_page = a_mr.log_page;
  end

  // REG_MR page count (only in the command's states, as the window checks)
  logic [64:0] mr_end;
  logic [64:0] mr_npages;
  always_comb begin
    mr_end    = '0;
    mr_npages = '0;
    if (cmd_st) begin
      mr_end    = {1'b0, a_mr.iova} + {1'b0, a_mr.length} - 65'd1;
      mr_npages = (mr_end >> a_mr.log_page) - ({1'b0, a_mr.iova} >> a_mr.log_page) + 65'd1;
    end
  end

  // responder checks
  logic [23:0] r_d;        // psn - rq_psn
  logic        seq_ok, acc_ok, len_ok;
  assign r_d = pkt_i.psn - qp_q.rq_psn;
  always_comb begin
    if (pop == BthOpcodeSendMiddle || pop == BthOpcodeSendLast || pop == BthOpcodeSendLastImm)
      seq_ok = qp_q.resp_in_msg == 2'(RespInMsgSend);
    else if (pop == BthOpcodeWriteMiddle || pop == BthOpcodeWriteLast ||
             pop == BthOpcodeWriteLastImm)
      seq_ok = qp_q.resp_in_msg == 2'(RespInMsgWrite);
    else
      seq_ok = qp_q.resp_in_msg == 2'(RespInMsgNone);
    if (p_write)       acc_ok = (qp_q.access & 4'(AccessRemoteWrite)) != 4'd0;
    else if (p_read)   acc_ok = (qp_q.access & 4'(AccessRemoteRead)) != 4'd0;
    else if (p_atomic) acc_ok = (qp_q.access & 4'(AccessRemoteAtomic)) != 4'd0;
    else               acc_ok = 1'b1;
    if (p_first || p_middle)  len_ok = pl == mtu;
    else if (p_last)          len_ok = pl >= 13'd1 && pl <= mtu;
    else if (p_only)          len_ok = pl <= mtu;
    else                      len_ok = pl == 13'd0;
  end

  // SEND: offset of this packet's payload in the receive buffer
  logic [31:0] s_off;
  assign s_off = (p_first || p_only) ? 32'd0 : qp_q.resp_offset;

  // completer
  logic [23:0] c_p;
  assign c_p  = pkt_i.psn;

  // requester payload of this packet
  logic [33:0] tx_left;
  logic [12:0] tx_n;
  assign tx_left = (lsum_q > 34'(qp_q.sq_offset)) ? lsum_q - 34'(qp_q.sq_offset) : 34'd0;
  assign tx_n    = (tx_left > 34'(mtu)) ? mtu : tx_left[12:0];

  always_comb begin
    // defaults
    state_d      = state_q;
    ret_d        = ret_q;
    wk_ret_d     = wk_ret_q;
    mr_ret_d     = mr_ret_q;
    init_d       = init_q;
    fmac_d       = fmac_q;
    fip_d        = fip_q;
    ftrust_d     = ftrust_q;
    amac_d       = amac_q;
    aip_d        = aip_q;
    fspoof_d     = fspoof_q;
    dwb_d        = dwb_q;
    dwe_d        = dwe_q;
    cfunc_d      = cfunc_q;
    dbf_d        = dbf_q;
    vfs_d        = vfs_q;
    vq_d         = vq_q;
    vr_i_d       = vr_i_q;
    vr_bad_d     = vr_bad_q;
    flr_on_d     = flr_on_q;
    flr_cnt_d    = flr_cnt_q;
    flr_f_d      = flr_f_q;
    fl_i_d       = fl_i_q;
    is_rx_d      = is_rx_q;
    qpn_d        = qpn_q;
    qp_d         = qp_q;
    qp_ld_d      = qp_ld_q;
    push_d       = push_q;
    acked0_d     = acked0_q;
    ci0_d        = ci0_q;
    trew_d       = trew_q;
    trnr_d       = trnr_q;
    trnr_code_d  = trnr_code_q;
    op_d         = op_q;
    args_d       = args_q;
    cq_d         = cq_q;
    pd_d         = pd_q;
    mr_d         = mr_q;
    db_kind_d    = db_kind_q;
    db_idx_d     = db_idx_q;
    db_val_d     = db_val_q;
    cst_d        = cst_q;
    out0_d       = out0_q;
    qout         = '0;
    out1_d       = out1_q;
    mtt_idx_d    = mtt_idx_q;
    mtt_cnt_d    = mtt_cnt_q;
    mtt_src_d    = mtt_src_q;
    mtt_j_d      = mtt_j_q;
    wqe_d        = wqe_q;
    wqe_nb_d     = wqe_nb_q;
    ln_idx_d     = ln_idx_q;
    ln_n_d       = ln_n_q;
    ln_k_d       = ln_k_q;
    lnb_d        = lnb_q;
    ln_rq_d      = ln_rq_q;
    ln_cmp_d     = ln_cmp_q;
    wqe_b_d      = wqe_b_q;
    hdr_d        = hdr_q;
    cqe_d        = cqe_q;
    cqe_cqn_d    = cqe_cqn_q;
    chk_key_d    = chk_key_q;
    chk_va_d     = chk_va_q;
    chk_len_d    = chk_len_q;
    chk_acc_d    = chk_acc_q;
    mr_ok_d      = mr_ok_q;
    segs_d       = segs_q;
    wk_mode_d    = wk_mode_q;
    seg_idx_d    = seg_idx_q;
    seg_off_d    = seg_off_q;
    wk_rem_d     = wk_rem_q;
    wk_acc_d     = wk_acc_q;
    wk_err_d     = wk_err_q;
    pl_off_d     = pl_off_q;
    avail_d      = avail_q;
    plen_d       = plen_q;
    piece_va_d   = piece_va_q;
    phys_d       = phys_q;
    local_d      = local_q;
    rd_req_d     = rd_req_q;
    rd_addr_d    = rd_addr_q;
    rd_len_d     = rd_len_q;
    rd_func_d    = rd_func_q;
    rd_busy_d    = rd_busy_q;
    rd_rem_d     = rd_rem_q;
    i_d          = i_q;
    npk_d        = npk_q;
    w_off_d      = w_off_q;
    w_va_d       = w_va_q;
    w_len_d      = w_len_q;
    w_key_d      = w_key_q;
    replay_d     = replay_q;
    last_d       = last_q;
    lsum_d       = lsum_q;
    err_syn_d    = err_syn_q;
    err_psn_d    = err_psn_q;
    rsp_e_d      = rsp_e_q;
    sq_st_d      = sq_st_q;
    cret_d       = cret_q;
    lastpkt_d    = lastpkt_q;
    inl_d        = inl_q;
    inl_data_d   = inl_data_q;
    in_ring_d    = in_ring_q;
    fhead_d      = fhead_q;
    ftail_d      = ftail_q;
    fne_d        = fne_q;
    flast_d      = flast_q;
    popf_d       = popf_q;
    popmore_d    = popmore_q;
    frate_d      = frate_q;

    ring_push     = 1'b0;
    ring_pop      = 1'b0;
    ring_waddr    = '0;
    ring_raddr    = '0;
    ring_push_qpn = qpn_q;
    qfunc_we      = 1'b0;
    qfunc_waddr   = '0;
    qfunc_wdata   = '0;
    chg           = 1'b0;
    chg_f         = '0;
    chg_amt       = '0;
    tmr_set         = 1'b0;
    tmr_set_qpn     = qpn_q;
    tmr_set_mode    = TmrOff;
    tmr_set_restart = 1'b0;
    tmr_set_code    = qp_q.timeout;
    tmr_take        = 1'b0;
    fifo_pop      = 1'b0;

    qpc_req = 1'b0; qpc_we = 1'b0; qpc_addr = qpn_q;      qpc_wdata = qp_q;
    cqc_req = 1'b0; cqc_we = 1'b0; cqc_addr = cqe_cqn_q;  cqc_wdata = cq_q;
    mrc_req = 1'b0; mrc_we = 1'b0; mrc_addr = MrW'(a_idx); mrc_wdata = mr_q;
    pdc_req = 1'b0; pdc_we = 1'b0; pdc_addr = PdW'(a_idx); pdc_wdata = pd_q;
    mtt_req = 1'b0; mtt_we = 1'b0; mtt_addr = mtt_idx; mtt_wdata = '0;
    atom_req = 1'b0; atom_we = 1'b0; atom_addr = qpn_q; atom_wdata = '0;
    rqc_req = 1'b0; rqc_we = 1'b0; rqc_addr = {qpn_q, CpW'(0)}; rqc_wdata = '0;
    sqc_req = 1'b0; sqc_we = 1'b0; sqc_addr = {qpn_q, CpW'(0)}; sqc_wdata = '0;
    cpc_req = 1'b0; cpc_we = 1'b0; cpc_addr = {qpn_q, CpW'(0)}; cpc_wdata = '0;

    cmd_start_o   = 1'b0;
    cmd_done_o    = 1'b0;
    flr_start_o   = 1'b0;
    flr_done_o    = 1'b0;
    flr_func_o    = flr_f_q;
    db_pop_o      = 1'b0;
    pkt_done_o    = 1'b0;
    trace_valid_o = 1'b0;
    trace_kind_o  = '0;
    trace_qpn_o   = '0;
    trace_func_o  = '0;
    hdr_valid_o   = 1'b0;
    wq_valid       = 1'b0;
    txq_req        = 1'b0;
    wq_cmd         = '0;
    wq_cmd.func    = qp_q.func;
    wq_cmd.addr    = phys_q;
    wq_cmd.len     = plen_q;
    cnt_inc        = '0;

    /////////////////////////////////////////////////
    // DMA read channel (independent of the FSM)   //
    /////////////////////////////////////////////////
    if (rd_req_q && !wq_hazard && dma_rd_req_ready_i) rd_req_d = 1'b0;
    fifo_push       = 1'b0;
    fifo_push_bytes = (rd_rem_q >= 13'd64) ? 7'd64 : rd_rem_q[6:0];
    if (dma_rd_cpl_valid_i && dma_rd_cpl_tag_i == 8'd0 && rd_busy_q) begin
      fifo_push = 1'b1;
      rd_rem_d  = rd_rem_q - 13'(fifo_push_bytes);
      if (dma_rd_cpl_last_i) rd_busy_d = 1'b0;
    end

    `define CALL_MR(KEY, VA, LEN, ACC, RET) \
      begin chk_key_d = (KEY); chk_va_d = (VA); chk_len_d = (LEN); chk_acc_d = (ACC); \
            mr_ret_d = (RET); state_d = StMrRd; end
    `define CALL_WALK(MODE, OFF, N, ACC, RET) \
      begin wk_mode_d = (MODE); seg_idx_d = '0; seg_off_d = (OFF); wk_rem_d = 32'(N); \
            wk_acc_d = (ACC); wk_err_d = 1'b0; pl_off_d = '0; wk_ret_d = (RET); \
            state_d = StWkSeg; end
    `define CALL_WQE(ADDR, NB, RET) \
      begin rd_addr_d = (ADDR); rd_len_d = 13'((NB) * 64); rd_func_d = qp_q.func; \
            wqe_nb_d = 2'(NB); wqe_b_d = '0; ret_d = (RET); state_d = StWqeIss; end
    // a line of send WQEs from index IDX: as many as are posted, up to WqeLine, not past the
    // ring's end (one DMA read); each is kept in its copy slot, the first also in wqe_q
    `define CALL_LINE(IDX, CMP, RET) \
      begin ln_idx_d = (IDX); ln_n_d = line_n(qp_q, (IDX)); ln_k_d = '0; wqe_b_d = '0; \
            ln_cmp_d = (CMP); \
            rd_addr_d = qp_q.sq_base + {41'd0, ((IDX) & ((16'd1 << qp_q.log_sq_size) - 16'd1)), 7'd0}; \
            rd_len_d = 13'({line_n(qp_q, (IDX)), 7'd0}); rd_func_d = qp_q.func; \
            ln_rq_d = 1'b0; ret_d = (RET); state_d = StLnIss; end
    `define CALL_RLINE(IDX, RET) \
      begin ln_idx_d = (IDX); ln_n_d = rline_n(qp_q, (IDX)); ln_k_d = '0; \
            rd_addr_d = qp_q.rq_base + {42'd0, ((IDX) & ((16'd1 << qp_q.log_rq_size) - 16'd1)), 6'd0}; \
            rd_len_d = 13'({rline_n(qp_q, (IDX)), 6'd0}); rd_func_d = qp_q.func; \
            ln_rq_d = 1'b1; ret_d = (RET); state_d = StLnIss; end
    `define CALL_HDR(RET) begin ret_d = (RET); state_d = StHdr; end
    `define CALL_CQE(CQN, RET) begin cqe_cqn_d = CqW'(CQN); ret_d = (RET); state_d = StCqeRd; end
    `define ERR_NAK(SYN) begin err_syn_d = 8'(SYN); err_psn_d = pkt_i.psn; state_d = StErrNak; end
    // An ACK, sequence NAK or RNR NAK decided by an RX task (section 9a): sent at once when no
    // response is queued, else it becomes the QP's one pending ACK, sent after the queue.
    `define EMIT_ACK(SYN, PSN) \
      if (qp_q.rsp_cnt == 5'd0 && !qp_q.ack_pend) begin \
        hdr_d = mk_hdr(qp_q, qpn_q, BthOpcodeAck, (PSN)); \
        hdr_d.syndrome = 8'(SYN); \
        hdr_d.msn      = qp_q.msn; \
        `CALL_HDR(StEnd) \
      end else begin \
        if (!(qp_q.ack_pend && qp_q.ack_syn[6:5] != 2'd0 && (8'(SYN) & 8'h60) == 8'd0)) begin \
          qp_d.ack_pend = 1'b1; qp_d.ack_syn = 8'(SYN); qp_d.ack_psn = (PSN); \
        end \
        push_d = 1'b1; state_d = StEnd; \
      end
    `define SQ_ERR(ST) begin sq_st_d = 8'(ST); state_d = StSqErr; end

    unique case (state_q)
      //////////////////////////////////////////
      // Reset: clear the context memories    //
      //////////////////////////////////////////
      StInit: begin
        qpc_req = init_q < (InitW+1)'(NumQp); qpc_we = 1'b1;
        qpc_addr = QpW'(init_q); qpc_wdata = '0;
        atom_req = qpc_req; atom_we = 1'b1; atom_addr = QpW'(init_q);
        cqc_req = init_q < (InitW+1)'(NumCq); cqc_we = 1'b1;
        cqc_addr = CqW'(init_q); cqc_wdata = '0;
        mrc_req = init_q < (InitW+1)'(NumMr); mrc_we = 1'b1;
        mrc_addr = MrW'(init_q); mrc_wdata = '0;
        pdc_req = init_q < (InitW+1)'(NumPd); pdc_we = 1'b1;
        pdc_addr = PdW'(init_q); pdc_wdata = '0;
        init_d = init_q + 1'b1;
        if (init_q == (InitW+1)'(InitMax - 1)) state_d = StIdle;
      end

      ////////////////////////////////////////////////////////////////////
      // Arbitration: CMD > FLR > DB > FLR_DONE > RX > TIMER > QP ring    //
      ////////////////////////////////////////////////////////////////////
      StIdle: begin
        qp_ld_d  = 1'b0;
        push_d   = 1'b0;
        is_rx_d  = 1'b0;
        replay_d = 1'b0;
        trew_d   = 1'b0;
        trnr_d   = 1'b0;
        if (!rd_pend_i) begin
          if (cmd_valid_i) begin
            trace_valid_o = 1'b1;
            trace_kind_o  = TraceCmd;
            trace_func_o  = cmd_func_i;
            cmd_start_o   = 1'b1;
            op_d          = cmd_op_i;
            args_d        = cmd_args_i;
            cfunc_d       = cmd_func_i;
            cst_d         = CmdStatusOk;
            out0_d        = '0;
            out1_d        = '0;
            state_d       = StCmdRd;
          end else if (flr_go) begin
            // FLR phase 1 (section 4, Function Level Reset): reset the command interface (rnic_mmio)
            // and the address, then move every valid QP of the function to ERR.
            trace_valid_o = 1'b1;
            trace_kind_o  = TraceFlr;
            trace_func_o  = flr_go_f;
            flr_start_o   = 1'b1;
            flr_func_o    = flr_go_f;
            flr_f_d       = flr_go_f;
            flr_on_d[FuncSelW'(flr_go_f)]  = 1'b1;
            flr_cnt_d[FuncSelW'(flr_go_f)] = '0;
            fmac_d[FuncSelW'(flr_go_f)]    = amac_q[FuncSelW'(flr_go_f)];
            fip_d[FuncSelW'(flr_go_f)]     = aip_q[FuncSelW'(flr_go_f)];
            fl_i_d        = '0;
            state_d       = StFlrRd;
          end else if (db_valid_i) begin
            trace_valid_o = 1'b1;
            trace_kind_o  = TraceDb;
            trace_func_o  = db_func_i;
            db_pop_o      = 1'b1;
            db_kind_d     = db_kind_i;
            dbf_d         = db_func_i;
            db_idx_d      = db_idx_i;
            db_val_d      = db_val_i;
            state_d       = StDbRd;
          end else if (flr_fin) begin
            // FLR phase 2: free every object of the function; its reset ends (rnic_cfg).
            trace_valid_o = 1'b1;
            trace_kind_o  = TraceFlrDone;
            trace_func_o  = flr_fin_f;
            flr_done_o    = 1'b1;
            flr_func_o    = flr_fin_f;
            flr_f_d       = flr_fin_f;
            fl_i_d        = '0;
            state_d       = StFlrDRd;
          end else if (pkt_valid_i) begin
            trace_valid_o = 1'b1;
            trace_kind_o  = TraceRx;
            is_rx_d       = 1'b1;
            state_d       = StRxStart;
          end else if (tmr_exp_valid) begin
            // Taking an expired timer turns it off; the TIMER task re-arms it if needed.
            tmr_take = 1'b1;
            qpn_d    = tmr_exp_qpn;
            qpc_req  = 1'b1;
            qpc_addr = tmr_exp_qpn;
            state_d  = StTmrLd;
          end else if (sel_valid) begin
            // Popping is not a task: it only reads the QP context to decide which task, if any.
            ring_pop   = 1'b1;
            ring_raddr = fhead_q[sel_f];   // its successor in the list
            qpn_d      = fhead_q[sel_f];
            popf_d     = sel_f;
            flast_d    = sel_f;
            popmore_d  = fhead_q[sel_f] != ftail_q[sel_f];
            if (fhead_q[sel_f] == ftail_q[sel_f]) fne_d[sel_f] = 1'b0;
            state_d    = StPopQ;
          end
        end
      end

      StPopQ: begin
        if (popmore_q) fhead_d[popf_q] = ring_rdata;
        in_ring_d[qpn_q] = 1'b0;
        qpc_req  = 1'b1;
        qpc_addr = qpn_q;
        atom_req  = 1'b1;
        atom_addr = qpn_q;
        state_d  = StPopChk;
      end

      StPopChk: begin
        // Wait (between tasks) while a read is pending; rnic_mmio answers it meanwhile.
        if (!rd_pend_i) begin
          qp_d    = qpc_rdata;
          qp_ld_d = 1'b1;
          trace_qpn_o  = 24'(qpn_q);
          trace_func_o = qpc_rdata.func;
          if (qpc_rdata.valid && qpc_rdata.state == QpStateErr &&
              qpc_rdata.comp_ci != qpc_rdata.sq_pi) begin
            trace_valid_o = 1'b1;
            trace_kind_o  = TraceFlushSq;
            state_d       = StFlushSq;
          end else if (qpc_rdata.valid && qpc_rdata.state == QpStateErr &&
                       qpc_rdata.rq_ci != qpc_rdata.rq_pi) begin
            trace_valid_o = 1'b1;
            trace_kind_o  = TraceFlushRq;
            state_d       = StFlushRq;
          end else if (rsp_work(qpc_rdata)) begin
            trace_valid_o = 1'b1;
            trace_kind_o  = TraceTx;
            state_d       = StRsp;
          end else if (qpc_rdata.valid && qpc_rdata.state == QpStateRts &&
                       qpc_rdata.sq_ci != qpc_rdata.sq_pi) begin
            trace_valid_o = 1'b1;
            trace_kind_o  = TraceTx;
            state_d       = StTx;
          end else begin
            qp_ld_d = 1'b0;
            state_d = StIdle;
          end
        end
      end

      //////////////////////////////////////////
      // Admin commands                       //
      //////////////////////////////////////////
      StCmdRd: begin
        // Read every context the command may check (all RAMs have their own port).
        qpc_req  = 1'b1; qpc_addr = QpW'(a_idx);
        cqc_req  = 1'b1; cqc_addr = CqW'((op_q == CmdCreateQp) ? a_cqp.send_cqn : a_idx);
        mrc_req  = 1'b1; mrc_addr = MrW'(a_idx);
        pdc_req  = 1'b1;
        pdc_addr = PdW'((op_q == CmdCreateQp) ? a_cqp.pdn : (op_q == CmdRegMr) ? a_mr.pdn : a_idx);
        qpn_d    = QpW'(a_idx);
        state_d  = StCmdRd2;
      end

      StCmdRd2: begin
        qp_d     = qpc_rdata;
        cq_d     = cqc_rdata;
        mr_d     = mrc_rdata;
        pd_d     = pdc_rdata;
        cqc_req  = 1'b1; cqc_addr = CqW'(a_cqp.recv_cqn);
        state_d  = StCmdExec;
      end

      StCmdExec: begin
        state_d = StCmdDone;
        unique case (op_q)
          CmdNop: ;
          CmdSetPort: begin
            if (cfunc_q != 8'd0 && !ftrust_q[FuncSelW'(cfunc_q)]) cst_d = CmdStatusDenied;
            else begin
              fmac_d[FuncSelW'(cfunc_q)] = a_port.mac;
              fip_d[FuncSelW'(cfunc_q)]  = a_port.ip;
            end
          end
          CmdSetVfPort: begin
            if (cfunc_q != 8'd0)                                  cst_d = CmdStatusDenied;
            else if (a_vfp.vf == 8'd0 || 32'(a_vfp.vf) > NumVf)   cst_d = CmdStatusBadIndex;
            else begin
              fmac_d[FuncSelW'(a_vfp.vf)]   = a_vfp.mac;
              fip_d[FuncSelW'(a_vfp.vf)]    = a_vfp.ip;
              ftrust_d[FuncSelW'(a_vfp.vf)] = a_vfp.trust;
              amac_d[FuncSelW'(a_vfp.vf)]   = a_vfp.mac;
              aip_d[FuncSelW'(a_vfp.vf)]    = a_vfp.ip;
              fspoof_d[FuncSelW'(a_vfp.vf)] = a_vfp.spoofchk;
            end
          end
          CmdSetVfRate: begin
            if (cfunc_q != 8'd0)                                  cst_d = CmdStatusDenied;
            else if (a_vft.vf == 8'd0 || 32'(a_vft.vf) > NumVf)   cst_d = CmdStatusBadIndex;
            else                                   frate_d[FuncSelW'(a_vft.vf)] = a_vft.mbps;
          end
          CmdSetVfDma: begin
            if (cfunc_q != 8'd0)                                  cst_d = CmdStatusDenied;
            else if (a_vfd.vf == 8'd0 || 32'(a_vfd.vf) > NumVf ||
                     {1'b0, a_vfd.base} + {1'b0, a_vfd.len} > 65'({64{1'b1}}))
                                                                  cst_d = CmdStatusBadParam;
            else begin
              dwb_d[FuncSelW'(a_vfd.vf)] = a_vfd.base;
              dwe_d[FuncSelW'(a_vfd.vf)] = a_vfd.base + a_vfd.len;
            end
          end
          CmdSetVfRes: begin
            if (cfunc_q != 8'd0)  cst_d = CmdStatusDenied;
            else if (vf_en_i)     cst_d = CmdStatusBadState;
            else if (32'(a_vfr.vfs) > NumVf ||
                     40'(a_vfr.vfs) * 40'(a_vfr.qps) > 40'(64'(NumQp) - PfMinQp) ||
                     40'(a_vfr.vfs) * 40'(a_vfr.cqs) > 40'(64'(NumCq) - PfMinCq) ||
                     40'(a_vfr.vfs) * 40'(a_vfr.mrs) > 40'(64'(NumMr) - PfMinMr) ||
                     40'(a_vfr.vfs) * 40'(a_vfr.pds) > 40'(64'(NumPd) - PfMinPd) ||
                     40'(a_vfr.vfs) * 40'(a_vfr.mtts) > 40'(64'(NumMtt) - PfMinMtt))
                                  cst_d = CmdStatusBadParam;
            else begin
              // scan the tables for objects in the way, then set the profile
              vr_i_d   = '0;
              vr_bad_d = 1'b0;
              state_d  = StVrRd;
            end
          end
          CmdCreateCq: begin
            if (a_cq.cqn >= 24'(NumCq))                         cst_d = CmdStatusBadIndex;
            else if (!res_owns(rq_cq, 32'(a_cq.cqn)))           cst_d = CmdStatusNoQuota;
            else if (cq_q.valid)                                cst_d = CmdStatusBadState;
            else if (a_cq.log_size < 5'd1 || a_cq.log_size > 5'(MaxCqLogSize) || a_cq.base[4:0] != 5'd0)
                                                                cst_d = CmdStatusBadParam;
            else if (!win_cq)                                   cst_d = CmdStatusBadAddr;
            else begin
              cqc_req = 1'b1; cqc_we = 1'b1; cqc_addr = CqW'(a_cq.cqn);
              cqc_wdata = '0;
              cqc_wdata.valid    = 1'b1;
              cqc_wdata.func     = cfunc_q;
              cqc_wdata.base     = a_cq.base;
              cqc_wdata.log_size = a_cq.log_size;
              cqc_wdata.vector   = a_cq.vector;
            end
          end
          CmdDestroyCq: begin
            if (a_idx >= 24'(NumCq) || !res_owns(rq_cq, 32'(a_idx))) cst_d = CmdStatusBadIndex;
            else if (!cq_q.valid)     cst_d = CmdStatusBadState;
            else begin
              cqc_req = 1'b1; cqc_we = 1'b1; cqc_addr = CqW'(a_idx);
              cqc_wdata = cq_q; cqc_wdata.valid = 1'b0;
            end
          end
          CmdAllocPd, CmdDeallocPd: begin
            if (a_idx >= 24'(NumPd))                          cst_d = CmdStatusBadIndex;
            else if (!res_owns(rq_pd, 32'(a_idx)))
              cst_d = (op_q == CmdAllocPd) ? CmdStatusNoQuota : CmdStatusBadIndex;
            else if (pd_q.valid == (op_q == CmdAllocPd))      cst_d = CmdStatusBadState;
            else begin
              pdc_req = 1'b1; pdc_we = 1'b1; pdc_addr = PdW'(a_idx);
              pdc_wdata = '0; pdc_wdata.valid = (op_q == CmdAllocPd);
              pdc_wdata.func = cfunc_q;
            end
          end
          CmdWriteMtt: begin
            if (a_mtt.count < 16'd1 || a_mtt.count > 16'(MttWriteMax))  cst_d = CmdStatusBadParam;
            else if (25'(a_mtt.start) + 25'(a_mtt.count) > 25'(NumMtt)) cst_d = CmdStatusBadIndex;
            else if (32'(a_mtt.start) < rq_mtt[31:0] ||
                     33'(a_mtt.start) + 33'(a_mtt.count) > 33'(rq_mtt[31:0]) + 33'(rq_mtt[63:32]))
                                                                          cst_d = CmdStatusNoQuota;
            else if (!win_mtt_src)                                        cst_d = CmdStatusBadAddr;
            else begin
              mtt_idx_d = (MttW+1)'(a_mtt.start);
              mtt_cnt_d = a_mtt.count;
              mtt_src_d = a_mtt.src;
              state_d   = StMttIss;
            end
          end
          CmdRegMr: begin
            if (a_mr.index >= 24'(NumMr))                    cst_d = CmdStatusBadIndex;
            else if (!res_owns(rq_mr, 32'(a_mr.index)))      cst_d = CmdStatusNoQuota;
            else if (mr_q.valid)                             cst_d = CmdStatusBadState;
            else if (a_mr.pdn >= 24'(NumPd) || !pd_q.valid || pd_q.func != cfunc_q ||
                     a_mr.log_page < 6'(MinLogPage) || a_mr.log_page > 6'(MaxLogPage) || a_mr.length == 64'd0 ||
                     (cfunc_q != 8'd0 && a_mr.log_page != 6'(MinLogPage)) ||
                     32'(a_mr.mtt_base) < rq_mtt[31:0] ||
                     {41'd0, a_mr.mtt_base} + mr_npages > 65'(rq_mtt[31:0]) + 65'(rq_mtt[63:32]))
                                                             cst_d = CmdStatusBadParam;
            else if (cfunc_q != 8'd0) begin
              // a VF's MTT entries must all lie in its window: scan them first
              mtt_idx_d = (MttW+1)'(a_mr.mtt_base);
              state_d   = StMrScan;
            end else begin
              mrc_req = 1'b1; mrc_we = 1'b1; mrc_addr = MrW'(a_mr.index); mrc_wdata = mr_new;
            end
          end
          CmdDeregMr: begin
            if (a_idx >= 24'(NumMr) || !res_owns(rq_mr, 32'(a_idx))) cst_d = CmdStatusBadIndex;
            else if (!mr_q.valid)     cst_d = CmdStatusBadState;
            else begin
              mrc_req = 1'b1; mrc_we = 1'b1; mrc_addr = MrW'(a_idx);
              mrc_wdata = mr_q; mrc_wdata.valid = 1'b0;
            end
          end
          CmdCreateQp: begin
            if (a_cqp.qpn < 24'd2 || a_cqp.qpn >= 24'(NumQp))       cst_d = CmdStatusBadIndex;
            else if (!res_owns(rq_qp, 32'(a_cqp.qpn)))              cst_d = CmdStatusNoQuota;
            else if (qp_q.valid)                                    cst_d = CmdStatusBadState;
            else if (a_cqp.pdn >= 24'(NumPd) || !pd_q.valid || pd_q.func != cfunc_q ||
                     a_cqp.send_cqn >= 24'(NumCq) || !cq_q.valid || cq_q.func != cfunc_q ||
                     a_cqp.recv_cqn >= 24'(NumCq) || !cqc_rdata.valid ||
                     cqc_rdata.func != cfunc_q ||
                     a_cqp.log_sq_size < 5'd1 || a_cqp.log_sq_size > 5'(MaxWqLogSize) ||
                     a_cqp.log_rq_size < 5'd1 || a_cqp.log_rq_size > 5'(MaxWqLogSize) ||
                     a_cqp.sq_base[6:0] != 7'd0 || a_cqp.rq_base[5:0] != 6'd0)
                                                                    cst_d = CmdStatusBadParam;
            else if (!win_qp)                                       cst_d = CmdStatusBadAddr;
            else begin
              qpc_req = 1'b1; qpc_we = 1'b1; qpc_addr = QpW'(a_cqp.qpn);
              tmr_set = 1'b1; tmr_set_qpn = QpW'(a_cqp.qpn);
              atom_req = 1'b1; atom_we = 1'b1; atom_addr = QpW'(a_cqp.qpn);
              qpc_wdata = '0;
              qpc_wdata.valid       = 1'b1;
              qpc_wdata.state       = QpStateReset;
              qpc_wdata.func        = cfunc_q;
              qfunc_we    = 1'b1;
              qfunc_waddr = QpW'(a_cqp.qpn);
              qfunc_wdata = FuncSelW'(cfunc_q);
              qpc_wdata.pdn         = a_cqp.pdn;
              qpc_wdata.send_cqn    = a_cqp.send_cqn;
              qpc_wdata.recv_cqn    = a_cqp.recv_cqn;
              qpc_wdata.sq_base     = a_cqp.sq_base;
              qpc_wdata.rq_base     = a_cqp.rq_base;
              qpc_wdata.log_sq_size = a_cqp.log_sq_size;
              qpc_wdata.log_rq_size = a_cqp.log_rq_size;
            end
          end
          CmdModifyQp: begin
            if (a_qp.qpn < 24'd2 || a_qp.qpn >= 24'(NumQp) || !res_owns(rq_qp, 32'(a_qp.qpn)))
                                                                      cst_d = CmdStatusBadIndex;
            else if (!qp_q.valid)                                     cst_d = CmdStatusBadState;
            else if ((a_qp.attr_mask & QpAttrState) == 32'd0)         cst_d = CmdStatusBadParam;
            else if (!mq_trans_ok)                                    cst_d = CmdStatusBadState;
            else if ((a_qp.attr_mask & mq_req) != mq_req ||
                     (a_qp.attr_mask & ~(mq_req | mq_opt | QpAttrState)) != 32'd0)
                                                                      cst_d = CmdStatusBadParam;
            else if (((a_qp.attr_mask & QpAttrPathMtu) != 0 &&
                      (a_qp.path_mtu < 3'd1 || a_qp.path_mtu > 3'd5)) ||
                     ((a_qp.attr_mask & QpAttrMaxQpRdAtomic) != 0 && a_qp.max_rd_atomic > 8'(MaxRdAtomic)) ||
                     ((a_qp.attr_mask & QpAttrMaxDestRdAtomic) != 0 &&
                      a_qp.max_dest_rd_atomic > 8'(MaxRdAtomic)))
                                                                      cst_d = CmdStatusBadParam;
            else begin
              qpc_req = 1'b1; qpc_we = 1'b1; qpc_addr = QpW'(a_qp.qpn);
              tmr_set = 1'b1; tmr_set_qpn = QpW'(a_qp.qpn);
              qpc_wdata = qp_q;
              if (mq_new == QpStateReset) begin
                atom_req = 1'b1; atom_we = 1'b1; atom_addr = QpW'(a_qp.qpn);
                qpc_wdata             = '0;
                qpc_wdata.valid       = qp_q.valid;
                qpc_wdata.func        = qp_q.func;
                qpc_wdata.pdn         = qp_q.pdn;
                qpc_wdata.send_cqn    = qp_q.send_cqn;
                qpc_wdata.recv_cqn    = qp_q.recv_cqn;
                qpc_wdata.sq_base     = qp_q.sq_base;
                qpc_wdata.rq_base     = qp_q.rq_base;
                qpc_wdata.log_sq_size = qp_q.log_sq_size;
                qpc_wdata.log_rq_size = qp_q.log_rq_size;
                qpc_wdata.access      = qp_q.access;
                qpc_wdata.state       = QpStateReset;
              end else begin
                qpc_wdata.state = mq_new;
                if ((a_qp.attr_mask & QpAttrAccessFlags) != 0) qpc_wdata.access = a_qp.access;
                if ((a_qp.attr_mask & QpAttrMinRnrTimer) != 0)
                  qpc_wdata.min_rnr_timer = a_qp.min_rnr_timer;
                if ((a_qp.attr_mask & QpAttrAv) != 0) begin
                  qpc_wdata.dest_mac = a_qp.dest_mac;
                  qpc_wdata.dest_ip  = a_qp.dest_ip;
                end
                if ((a_qp.attr_mask & QpAttrPathMtu) != 0)  qpc_wdata.path_mtu = a_qp.path_mtu;
                if ((a_qp.attr_mask & QpAttrDestQpn) != 0)  qpc_wdata.dest_qpn = a_qp.dest_qpn;
                if ((a_qp.attr_mask & QpAttrRqPsn) != 0)    qpc_wdata.rq_psn = a_qp.rq_psn;
                if ((a_qp.attr_mask & QpAttrMaxDestRdAtomic) != 0)
                  qpc_wdata.max_dest_rd_atomic = a_qp.max_dest_rd_atomic;
                if ((a_qp.attr_mask & QpAttrSqPsn) != 0) begin
                  qpc_wdata.sq_psn       = a_qp.sq_psn;
                  qpc_wdata.comp_wqe_psn = a_qp.sq_psn;
                  qpc_wdata.acked_psn    = a_qp.sq_psn;
                end
                if ((a_qp.attr_mask & QpAttrMaxQpRdAtomic) != 0)
                  qpc_wdata.max_rd_atomic = a_qp.max_rd_atomic;
                if ((a_qp.attr_mask & QpAttrRetryCnt) != 0) begin
                  qpc_wdata.retry_cnt  = a_qp.retry_cnt;
                  qpc_wdata.retry_left = a_qp.retry_cnt;
                end
                if ((a_qp.attr_mask & QpAttrRnrRetry) != 0) begin
                  qpc_wdata.rnr_retry = a_qp.rnr_retry;
                  qpc_wdata.rnr_left  = a_qp.rnr_retry;
                end
                if ((a_qp.attr_mask & QpAttrTimeout) != 0) qpc_wdata.timeout = a_qp.timeout;
              end
              // A modify may give the QP work (RTS: sends, ERR: flushes).
              push_d = 1'b1;
            end
          end
          CmdQueryQp: begin
            if (a_idx < 24'd2 || a_idx >= 24'(NumQp) || !res_owns(rq_qp, 32'(a_idx)))
                                      cst_d = CmdStatusBadIndex;
            else if (!qp_q.valid)     cst_d = CmdStatusBadState;
            else begin
              qout         = '0;
              qout.state   = qp_q.state;
              qout.sq_psn  = qp_q.sq_psn;
              qout.rq_psn  = qp_q.rq_psn;
              qout.sq_ci   = qp_q.sq_ci;
              qout.comp_ci = qp_q.comp_ci;
              qout.rq_ci   = qp_q.rq_ci;
              qout.sq_pi   = qp_q.sq_pi;
              {out1_d, out0_d} = qout;
            end
          end
          CmdDestroyQp: begin
            if (a_idx < 24'd2 || a_idx >= 24'(NumQp) || !res_owns(rq_qp, 32'(a_idx)))
                                      cst_d = CmdStatusBadIndex;
            else if (!qp_q.valid)     cst_d = CmdStatusBadState;
            else begin
              qpc_req = 1'b1; qpc_we = 1'b1; qpc_addr = QpW'(a_idx);
              tmr_set = 1'b1; tmr_set_qpn = QpW'(a_idx);
              qpc_wdata = qp_q; qpc_wdata.valid = 1'b0;
            end
          end
          default: cst_d = CmdStatusBadOpcode;
        endcase
      end

      // SET_VF_RES: read entry vr_i of every context table, then check it (two cycles per entry).
      StVrRd: begin
        qpc_req = 32'(vr_i_q) < NumQp; qpc_addr = QpW'(vr_i_q);
        cqc_req = 32'(vr_i_q) < NumCq; cqc_addr = CqW'(vr_i_q);
        mrc_req = 32'(vr_i_q) < NumMr; mrc_addr = MrW'(vr_i_q);
        pdc_req = 32'(vr_i_q) < NumPd; pdc_addr = PdW'(vr_i_q);
        state_d = StVrChk;
      end

      StVrChk: begin
        logic [31:0] i;
        logic        bad;
        i   = 32'(vr_i_q);
        bad = (i < NumQp && qpc_rdata.valid && (qpc_rdata.func != 8'd0 || i >= vr_pool_qp)) ||
              (i < NumCq && cqc_rdata.valid && (cqc_rdata.func != 8'd0 || i >= vr_pool_cq)) ||
              (i < NumMr && mrc_rdata.valid && (mrc_rdata.func != 8'd0 || i >= vr_pool_mr ||
                                                32'(mrc_rdata.mtt_end) > vr_pool_mtt)) ||
              (i < NumPd && pdc_rdata.valid && (pdc_rdata.func != 8'd0 || i >= vr_pool_pd));
        vr_bad_d = vr_bad_q || bad;
        vr_i_d   = vr_i_q + 1'b1;
        if (i + 32'd1 == MaxTab) begin
          if (vr_bad_q || bad) begin
            cst_d = CmdStatusBadState;
          end else begin
            vfs_d = a_vfr.vfs;
            vq_d  = {a_vfr.mtts, a_vfr.pds, a_vfr.mrs, a_vfr.cqs, a_vfr.qps};
          end
          state_d = StCmdDone;
        end else begin
          state_d = StVrRd;
        end
      end

      // REG_MR of a VF: read MTT[mtt_base .. mtt_end) and check each page against the window
      // (two cycles per entry); the MR is written only when every entry is inside.
      StMrScan: begin
        mtt_req  = 1'b1;
        mtt_addr = MttW'(mtt_idx_q);
        state_d  = StMrScanChk;
      end

      StMrScanChk: begin
        if (!win_mtt_rd) begin
          cst_d   = CmdStatusBadAddr;
          state_d = StCmdDone;
        end else if (25'(mtt_idx_q) + 25'd1 == 25'(mr_new.mtt_end)) begin
          mrc_req = 1'b1; mrc_we = 1'b1; mrc_addr = MrW'(a_mr.index); mrc_wdata = mr_new;
          state_d = StCmdDone;
        end else begin
          mtt_idx_d = mtt_idx_q + 1'b1;
          state_d   = StMrScan;
        end
      end

      //////////////////////////////////////////
      // Function Level Reset (section 4)     //
      //////////////////////////////////////////
      // Phase 1 (FLR task): every valid QP of the function goes to ERR (its timer off); one that
      // has WQEs to flush is counted and pushed on the ring, where the flush tasks take it.
      StFlrRd: begin
        qpc_req  = 1'b1;
        qpc_addr = QpW'(fl_i_q);
        qpn_d    = QpW'(fl_i_q);
        state_d  = StFlrChk;
      end

      StFlrChk: begin
        if (qpc_rdata.valid && qpc_rdata.func == flr_f_q) begin
          qpc_req = 1'b1; qpc_we = 1'b1; qpc_wdata = qpc_rdata;
          qpc_wdata.state = QpStateErr;
          tmr_set      = 1'b1;
          tmr_set_mode = TmrOff;
          if (qpc_rdata.comp_ci != qpc_rdata.sq_pi || qpc_rdata.rq_ci != qpc_rdata.rq_pi) begin
            flr_cnt_d[FuncSelW'(flr_f_q)] = flr_cnt_q[FuncSelW'(flr_f_q)] + 1'b1;
            if (!in_ring_q[qpn_q]) begin
              // append to the function's list (as at StEnd)
              ring_push  = fne_q[FuncSelW'(flr_f_q)];
              ring_waddr = ftail_q[FuncSelW'(flr_f_q)];
              if (!fne_q[FuncSelW'(flr_f_q)]) fhead_d[FuncSelW'(flr_f_q)] = qpn_q;
              ftail_d[FuncSelW'(flr_f_q)] = qpn_q;
              fne_d[FuncSelW'(flr_f_q)]   = 1'b1;
              in_ring_d[qpn_q] = 1'b1;
            end
          end
        end
        fl_i_d  = fl_i_q + 1'b1;
        state_d = (32'(fl_i_q) + 32'd1 == NumQp) ? StIdle : StFlrRd;
      end

      // Phase 2 (FLR_DONE task): every valid QP, CQ, MR and PD of the function is invalidated.
      StFlrDRd: begin
        qpc_req = 32'(fl_i_q) < NumQp; qpc_addr = QpW'(fl_i_q);
        cqc_req = 32'(fl_i_q) < NumCq; cqc_addr = CqW'(fl_i_q);
        mrc_req = 32'(fl_i_q) < NumMr; mrc_addr = MrW'(fl_i_q);
        pdc_req = 32'(fl_i_q) < NumPd; pdc_addr = PdW'(fl_i_q);
        qpn_d   = QpW'(fl_i_q);
        state_d = StFlrDChk;
      end

      StFlrDChk: begin
        logic [31:0] i;
        i = 32'(fl_i_q);
        if (i < NumQp && qpc_rdata.valid && qpc_rdata.func == flr_f_q) begin
          qpc_req = 1'b1; qpc_we = 1'b1; qpc_addr = QpW'(fl_i_q);
          qpc_wdata = qpc_rdata; qpc_wdata.valid = 1'b0;
          tmr_set      = 1'b1;
          tmr_set_mode = TmrOff;
        end
        if (i < NumCq && cqc_rdata.valid && cqc_rdata.func == flr_f_q) begin
          cqc_req = 1'b1; cqc_we = 1'b1; cqc_addr = CqW'(fl_i_q);
          cqc_wdata = cqc_rdata; cqc_wdata.valid = 1'b0;
        end
        if (i < NumMr && mrc_rdata.valid && mrc_rdata.func == flr_f_q) begin
          mrc_req = 1'b1; mrc_we = 1'b1; mrc_addr = MrW'(fl_i_q);
          mrc_wdata = mrc_rdata; mrc_wdata.valid = 1'b0;
        end
        if (i < NumPd && pdc_rdata.valid && pdc_rdata.func == flr_f_q) begin
          pdc_req = 1'b1; pdc_we = 1'b1; pdc_addr = PdW'(fl_i_q);
          pdc_wdata = pdc_rdata; pdc_wdata.valid = 1'b0;
        end
        fl_i_d = fl_i_q + 1'b1;
        if (i + 32'd1 == InitMax) begin
          flr_on_d[FuncSelW'(flr_f_q)] = 1'b0;
          state_d = StIdle;
        end else begin
          state_d = StFlrDRd;
        end
      end

      // WRITE_MTT: 64-byte DMA reads (8 entries each), written into the MTT one entry per cycle.
      StMttIss: begin
        rd_req_d  = 1'b1;
        rd_busy_d = 1'b1;
        rd_addr_d = mtt_src_q;
        rd_func_d = cfunc_q;
        rd_len_d  = (mtt_cnt_q >= 16'd8) ? 13'd64 : 13'({mtt_cnt_q[2:0], 3'd0});
        rd_rem_d  = (mtt_cnt_q >= 16'd8) ? 13'd64 : 13'({mtt_cnt_q[2:0], 3'd0});
        mtt_j_d   = '0;
        state_d   = StMttWait;
      end

      StMttWait: begin
        if (fifo_cnt_q != 7'd0) state_d = StMttWr;
      end

      StMttWr: begin
        // An entry whose 4 KiB page leaves the caller's window ends the command (BAD_ADDR);
        // the entries before it stay written.
        if (!win_mtt_ent) begin
          cst_d    = CmdStatusBadAddr;
          fifo_pop = 1'b1;
          state_d  = StCmdDone;
        end else begin
          mtt_req   = 1'b1;
          mtt_we    = 1'b1;
          mtt_addr  = MttW'(mtt_idx_q);
          mtt_wdata = mtt_ent;
          mtt_idx_d = mtt_idx_q + 1'b1;
          mtt_cnt_d = mtt_cnt_q - 16'd1;
          mtt_j_d   = mtt_j_q + 4'd1;
          if (mtt_cnt_q == 16'd1 || mtt_j_q == 4'd7) begin
            fifo_pop  = 1'b1;
            mtt_src_d = mtt_src_q + 64'd64;
            state_d   = (mtt_cnt_q == 16'd1) ? StCmdDone : StMttIss;
          end
        end
      end

      // A command completes only when the writes of earlier tasks have gone out: a host that
      // frees or reuses memory after DESTROY_CQ / DEREG_MR / MODIFY_QP must not see a queued
      // write land after it.
      StCmdDone: begin
        if (wq_empty) begin
          cmd_done_o = 1'b1;
          state_d    = StEnd;
        end
      end

      //////////////////////////////////////////
      // Doorbells                            //
      //////////////////////////////////////////
      StDbRd: begin
        qpc_req  = 1'b1; qpc_addr = QpW'(db_idx_q);
        cqc_req  = 1'b1; cqc_addr = CqW'(db_idx_q);
        qpn_d    = QpW'(db_idx_q);
        state_d  = StDbExec;
        // A doorbell of a function between its FLR and FLR_DONE tasks is dropped.
        if (32'(dbf_q) < NumFunc && flr_on_q[FuncSelW'(dbf_q)]) begin
          cnt_inc[CounterDbBad] = 1'b1;
          state_d = StEnd;
        end
      end

      // RQ_PI read-ahead: the line at rq_ci, unless its slot holds it; then the QPC again with
      // the slots' valid bits
      StDbPf: begin
        if (qp_q.rqe_cp[qp_q.rq_ci[CpW-1:0]] && rqc_rdata.idx == qp_q.rq_ci) begin
          state_d = StEnd;
        end else begin
          `CALL_RLINE(qp_q.rq_ci, StDbPf2)
        end
      end

      StDbPf2: begin
        qpc_req   = 1'b1;
        qpc_we    = 1'b1;
        qpc_addr  = qpn_q;
        qpc_wdata = qp_q;
        state_d   = StEnd;
      end

      StDbExec: begin
        state_d = StEnd;
        unique case (db_kind_q)
          2'd0: begin  // SQ_PI
            if (!qpc_rdata.valid || qpc_rdata.state == QpStateReset || qpc_rdata.func != dbf_q ||
                {1'b0, 16'(db_val_q[15:0] - qpc_rdata.comp_ci)} >
                (17'd1 << qpc_rdata.log_sq_size)) begin
              cnt_inc[CounterDbBad] = 1'b1;
            end else begin
              qpc_req = 1'b1; qpc_we = 1'b1; qpc_wdata = qpc_rdata;
              qpc_wdata.sq_pi = db_val_q[15:0];
              push_d = 1'b1;
            end
          end
          2'd1: begin  // RQ_PI
            if (!qpc_rdata.valid || qpc_rdata.state == QpStateReset || qpc_rdata.func != dbf_q ||
                {1'b0, 16'(db_val_q[15:0] - qpc_rdata.rq_ci)} >
                (17'd1 << qpc_rdata.log_rq_size)) begin
              cnt_inc[CounterDbBad] = 1'b1;
            end else begin
              qpc_req = 1'b1; qpc_we = 1'b1; qpc_wdata = qpc_rdata;
              qpc_wdata.rq_pi = db_val_q[15:0];
              push_d = 1'b1;
              // read ahead the receive WQEs from rq_ci for the next SEND (section 9); the task
              // works on a copy of the QPC (not written back by StEnd: qp_ld stays 0)
              if (db_val_q[15:0] != qpc_rdata.rq_ci) begin
                qp_d       = qpc_rdata;
                qp_d.rq_pi = db_val_q[15:0];
                rqc_req    = 1'b1;
                rqc_addr   = {QpW'(db_idx_q), qpc_rdata.rq_ci[CpW-1:0]};
                state_d    = StDbPf;
              end
            end
          end
          2'd2: begin  // CQ_CI
            if (!cqc_rdata.valid || cqc_rdata.func != dbf_q) begin
              cnt_inc[CounterDbBad] = 1'b1;
            end else begin
              cqc_req = 1'b1; cqc_we = 1'b1; cqc_addr = CqW'(db_idx_q); cqc_wdata = cqc_rdata;
              cqc_wdata.ci = db_val_q[31:0];
            end
          end
          default: begin  // CQ_ARM
            if (!cqc_rdata.valid || cqc_rdata.func != dbf_q) begin
              cnt_inc[CounterDbBad] = 1'b1;
            end else begin
              cqc_req = 1'b1; cqc_we = 1'b1; cqc_addr = CqW'(db_idx_q); cqc_wdata = cqc_rdata;
              cqc_wdata.armed = 1'b1;
            end
          end
        endcase
      end

      //////////////////////////////////////////
      // Received frames (section 7)          //
      //////////////////////////////////////////
      StRxStart: begin
        cnt_inc[CounterRxPkts] = 1'b1;
        qpn_d = QpW'(pkt_i.dqpn);
        if (pkt_i.status == RxDropHdr) begin
          cnt_inc[CounterRxDropHdr] = 1'b1;
          state_d = StEnd;
        end else if (pkt_i.status != RxOk) begin
          cnt_inc[CounterRxDropIcrc] = 1'b1;
          state_d = StEnd;
        end else if (pkt_i.dqpn >= 24'(NumQp)) begin
          cnt_inc[CounterRxDropQp] = 1'b1;
          state_d = StEnd;
        end else begin
          qpc_req   = 1'b1;
          qpc_addr  = QpW'(pkt_i.dqpn);
          atom_req  = 1'b1;
          atom_addr = QpW'(pkt_i.dqpn);
          state_d   = StRxQp;
        end
      end

      StRxQp: begin
        qp_d = qpc_rdata;
        // a QP of another function than the one the frame's addresses selected: not ours to see
        if (!qpc_rdata.valid || qpc_rdata.func != pkt_i.func) begin
          cnt_inc[CounterRxDropQp] = 1'b1;
          state_d = StEnd;
        end else if (op_is_response(pop) ? (qpc_rdata.state != QpStateRts) :
                     (qpc_rdata.state != QpStateRtr && qpc_rdata.state != QpStateRts)) begin
          cnt_inc[CounterRxDropState] = 1'b1;
          state_d = StEnd;
        end else begin
          qp_ld_d = 1'b1;
          state_d = op_is_response(pop) ? StCompStart : StRespStart;
        end
      end

      //////////////////////////////////////////
      // Responder (section 9)                //
      //////////////////////////////////////////
      StRespStart: begin
        if (r_d != 24'd0 && !s24_neg(r_d)) begin
          // PSN ahead: one NAK per gap (nak_latch), drop
          state_d = StEnd;
          if (!qp_q.nak_latch) begin
            qp_d.nak_latch = 1'b1;
            cnt_inc[CounterRxNakSent] = 1'b1;
            `EMIT_ACK(AethNakPsnSeq, qp_q.rq_psn)
          end
        end else if (s24_neg(r_d)) begin
          // duplicate
          cnt_inc[CounterRxDup] = 1'b1;
          state_d = StEnd;
          if (p_send || p_write) begin
            `EMIT_ACK(AethAckUnlimited, qp_q.rq_psn - 24'd1)
          end else if (p_read) begin
            replay_d = 1'b1;
            state_d  = StRead;
          end else if (p_atomic && atom_hit && qp_q.rsp_cnt == 5'd0 && !qp_q.ack_pend) begin
            hdr_d = mk_hdr(qp_q, qpn_q, BthOpcodeAtomicAck, pkt_i.psn);
            hdr_d.syndrome = 8'(AethAckUnlimited);
            hdr_d.msn      = qp_q.msn;
            hdr_d.orig     = atom_orig;
            `CALL_HDR(StEnd)
          end else if (p_atomic && atom_hit && qp_q.rsp_cnt != 5'(NumAtom) &&
                       !dup_covered(atom_rdata, qp_q.rsp_rp, qp_q.rsp_cnt, qp_q.rsp_off,
                                   qp_q.path_mtu, pkt_i.psn, 1'b0)) begin
            // queued behind the responses before it
            atom_req   = 1'b1;
            atom_we    = 1'b1;
            atom_wdata = atom_rdata;
            atom_wdata[qp_q.atom_wp] = '{v: 1'b1, rd: 1'b0, psn: pkt_i.psn, va: atom_orig,
                                         rkey: 32'd0, len: 32'd0};
            qp_d.atom_wp = qp_q.atom_wp + 4'd1;
            qp_d.rsp_cnt = qp_q.rsp_cnt + 5'd1;
            push_d       = 1'b1;
          end
        end else begin
          qp_d.nak_latch = 1'b0;
          if (!seq_ok || !acc_ok || !len_ok) begin
            `ERR_NAK(AethNakInvReq)
          end else if ((p_read || p_atomic) && qp_q.rsp_cnt == 5'(NumAtom)) begin
            // more READ/atomic requests waiting than the resource ring holds
            `ERR_NAK(AethNakInvReq)
          end else if (p_send) begin
            state_d = StSend;
          end else if (p_write) begin
            state_d = StWrite;
          end else if (p_read) begin
            state_d = StRead;
          end else begin
            state_d = StAtomic;
          end
        end
      end

      // error NAK: send it at once, drop the queued responses, QP to ERR
      StErrNak: begin
        qp_d.state    = QpStateErr;
        qp_d.rsp_cnt  = 5'd0;
        qp_d.rsp_rp   = qp_q.atom_wp;
        qp_d.rsp_off  = 32'd0;
        qp_d.ack_pend = 1'b0;
        push_d     = 1'b1;
        cnt_inc[CounterRxNakSent] = 1'b1;
        hdr_d = mk_hdr(qp_q, qpn_q, BthOpcodeAck, err_psn_q);
        hdr_d.syndrome = err_syn_q;
        hdr_d.msn      = qp_q.msn;
        `CALL_HDR(StEnd)
      end

      StRnrNak: begin
        cnt_inc[CounterRxNakSent] = 1'b1;
        `EMIT_ACK(8'(AethRnrNakBase) | {3'd0, qp_q.min_rnr_timer}, pkt_i.psn)
      end

      // after a SEND*/WRITE* frame
      StAckChk: begin
        qp_d.rq_psn = qp_q.rq_psn + 24'd1;
        state_d = StEnd;
        if (pkt_i.ackreq) begin
          `EMIT_ACK(AethAckUnlimited, pkt_i.psn)
        end
      end

      // ---- SEND*
      StSend: begin
        if (qp_q.rq_ci == qp_q.rq_pi) begin
          state_d = StRnrNak;
        end else begin
          rqc_req  = 1'b1;
          rqc_addr = {qpn_q, qp_q.rq_ci[CpW-1:0]};
          state_d  = StSendC;
        end
      end

      // the receive WQE at rq_ci: its copy, or read with its line
      StSendC: begin
        if (qp_q.rqe_cp[qp_q.rq_ci[CpW-1:0]] && rqc_rdata.idx == qp_q.rq_ci) begin
          wqe_d[511:0] = rqc_rdata.wqe;
          state_d      = StSendChk;
        end else begin
          `CALL_RLINE(qp_q.rq_ci, StSendChk)
        end
      end

      StSendChk: begin
        w_off_d = s_off;
        segs_d  = segs_recv(rwqe);
        if (rwqe.num_sge > 8'(MaxRecvSge)) begin
          qp_d.rq_err_valid  = 1'b1;
          qp_d.rq_err_idx    = qp_q.rq_ci;
          qp_d.rq_err_status = WcStatusLocQpOpErr;
          `ERR_NAK(AethNakRemOp)
        end else if (34'(s_off) + 34'(pl) > seg_sum(segs_recv(rwqe))) begin
          qp_d.rq_err_valid  = 1'b1;
          qp_d.rq_err_idx    = qp_q.rq_ci;
          qp_d.rq_err_status = WcStatusLocLenErr;
          `ERR_NAK(AethNakInvReq)
        end else begin
          `CALL_WALK(WkCheck, s_off, pl, 4'(AccessLocalWrite), StSendChk2)
        end
      end

      StSendChk2: begin
        if (wk_err_q) begin
          qp_d.rq_err_valid  = 1'b1;
          qp_d.rq_err_idx    = qp_q.rq_ci;
          qp_d.rq_err_status = WcStatusLocProtErr;
          `ERR_NAK(AethNakRemOp)
        end else begin
          `CALL_WALK(WkScatterPl, w_off_q, pl, 4'(AccessLocalWrite), StSendDone)
        end
      end

      StSendDone: begin
        qp_d.resp_offset = w_off_q + 32'(pl);
        qp_d.resp_in_msg = (p_last || p_only) ? 2'(RespInMsgNone) : 2'(RespInMsgSend);
        state_d = StAckChk;
        if (p_last || p_only) begin
          cqe_d          = '0;
          cqe_d.wr_id    = rwqe.wr_id;
          cqe_d.byte_len = w_off_q + 32'(pl);
          cqe_d.imm      = p_imm ? pkt_i.imm : 32'd0;
          cqe_d.opcode   = WcOpcodeRecv;
          cqe_d.status   = WcStatusSuccess;
          cqe_d.flags    = p_imm ? 8'(CqeFlagWithImm) : 8'd0;
          cqe_d.wqe_idx  = qp_q.rq_ci;
          `CALL_CQE(qp_q.recv_cqn, StSendFin)
        end
      end

      StSendFin: begin
        qp_d.rq_ci       = qp_q.rq_ci + 16'd1;
        qp_d.msn         = qp_q.msn + 24'd1;
        qp_d.resp_offset = 32'd0;
        state_d          = StAckChk;
      end

      // ---- WRITE*
      StWrite: begin
        if (p_first || p_only) begin
          `CALL_MR(pkt_i.rkey, pkt_i.va, pkt_i.dma_len, 4'(AccessRemoteWrite), StWrite2)
        end else begin
          w_va_d  = qp_q.resp_va;
          w_len_d = qp_q.resp_len;
          w_key_d = qp_q.resp_rkey;
          w_off_d = qp_q.resp_offset;
          state_d = StWrite3;
        end
      end

      StWrite2: begin
        if (!mr_ok_q) begin
          `ERR_NAK(AethNakRemAccess)
        end else begin
          w_va_d  = pkt_i.va;
          w_len_d = pkt_i.dma_len;
          w_key_d = pkt_i.rkey;
          w_off_d = 32'd0;
          qp_d.resp_va     = pkt_i.va;
          qp_d.resp_len    = pkt_i.dma_len;
          qp_d.resp_rkey   = pkt_i.rkey;
          qp_d.resp_offset = 32'd0;
          state_d = StWrite3;
        end
      end

      StWrite3: begin
        if (33'(w_off_q) + 33'(pl) > 33'(w_len_q) ||
            ((p_last || p_only) && 33'(w_off_q) + 33'(pl) != 33'(w_len_q))) begin
          `ERR_NAK(AethNakInvReq)
        end else if (p_imm && qp_q.rq_ci == qp_q.rq_pi) begin
          state_d = StRnrNak;
        end else begin
          segs_d = segs_one(w_va_q, w_len_q, w_key_q);
          if (pl != 13'd0) begin
            `CALL_WALK(WkCheck, w_off_q, pl, 4'(AccessRemoteWrite), StWrite4)
          end else begin
            state_d = StWrite5;
          end
        end
      end

      StWrite4: begin
        if (wk_err_q) begin
          // The MR went away between FIRST and a later packet: a remote access error.
          `ERR_NAK(AethNakRemAccess)
        end else begin
          `CALL_WALK(WkScatterPl, w_off_q, pl, 4'(AccessRemoteWrite), StWrite5)
        end
      end

      StWrite5: begin
        qp_d.resp_offset = w_off_q + 32'(pl);
        qp_d.resp_in_msg = (p_last || p_only) ? 2'(RespInMsgNone) : 2'(RespInMsgWrite);
        state_d = StAckChk;
        if (p_last || p_only) begin
          qp_d.msn = qp_q.msn + 24'd1;
          if (p_imm) begin
            rqc_req  = 1'b1;
            rqc_addr = {qpn_q, qp_q.rq_ci[CpW-1:0]};
            state_d  = StWriteImmW;
          end
        end
      end

      StWriteImmW: begin
        if (qp_q.rqe_cp[qp_q.rq_ci[CpW-1:0]] && rqc_rdata.idx == qp_q.rq_ci) begin
          wqe_d[511:0] = rqc_rdata.wqe;
          state_d      = StWriteImm;
        end else begin
          `CALL_RLINE(qp_q.rq_ci, StWriteImm)
        end
      end

      StWriteImm: begin
        cqe_d          = '0;
        cqe_d.wr_id    = rwqe.wr_id;
        cqe_d.byte_len = qp_q.resp_len;
        cqe_d.imm      = pkt_i.imm;
        cqe_d.opcode   = WcOpcodeRecvRdmaWithImm;
        cqe_d.status   = WcStatusSuccess;
        cqe_d.flags    = 8'(CqeFlagWithImm);
        cqe_d.wqe_idx  = qp_q.rq_ci;
        `CALL_CQE(qp_q.recv_cqn, StWriteFin)
      end

      StWriteFin: begin
        qp_d.rq_ci = qp_q.rq_ci + 16'd1;
        state_d    = StAckChk;
      end

      // ---- READ_REQUEST (also the duplicate replay)
      StRead: begin
        `CALL_MR(pkt_i.rkey, pkt_i.va, pkt_i.dma_len, 4'(AccessRemoteRead), StRead2)
      end

      // Accepted (or replayed) READ: queued; the QP's TX tasks send the responses (section 9a).
      StRead2: begin
        state_d = StEnd;
        if (!mr_ok_q) begin
          if (!replay_q) `ERR_NAK(AethNakRemAccess)
        end else if (!replay_q || (qp_q.rsp_cnt != 5'(NumAtom) &&
                                   !dup_covered(atom_rdata, qp_q.rsp_rp, qp_q.rsp_cnt,
                                   qp_q.rsp_off, qp_q.path_mtu, pkt_i.psn, 1'b1))) begin
          if (!replay_q) begin
            qp_d.msn      = qp_q.msn + 24'd1;
            qp_d.rq_psn   = qp_q.rq_psn + ((pkt_i.dma_len == 32'd0) ? 24'd1 :
                            24'(div_mtu_ceil(34'(pkt_i.dma_len), qp_q.path_mtu)));
            qp_d.ack_pend = 1'b0;
          end
          atom_req   = 1'b1;
          atom_we    = 1'b1;
          atom_wdata = atom_rdata;
          atom_wdata[qp_q.atom_wp] = '{v: 1'b1, rd: 1'b1, psn: pkt_i.psn, va: pkt_i.va,
                                       rkey: pkt_i.rkey, len: pkt_i.dma_len};
          qp_d.atom_wp = qp_q.atom_wp + 4'd1;
          qp_d.rsp_cnt = qp_q.rsp_cnt + 5'd1;
          push_d       = 1'b1;
        end
      end

      // ---- atomics
      StAtomic: begin
        if (pkt_i.va[2:0] != 3'd0) begin
          `ERR_NAK(AethNakInvReq)
        end else begin
          `CALL_MR(pkt_i.rkey, pkt_i.va, 32'd8, 4'(AccessRemoteAtomic), StAtomic2)
        end
      end

      StAtomic2: begin
        if (!mr_ok_q) begin
          `ERR_NAK(AethNakRemAccess)
        end else begin
          segs_d = segs_one(pkt_i.va, 32'd8, pkt_i.rkey);
          `CALL_WALK(WkGatherLocal, 32'd0, 13'd8, 4'(AccessRemoteAtomic), StAtomic3)
        end
      end

      StAtomic3: begin
        // local_q = original value
        w_va_d  = local_q;   // keep orig
        state_d = StAtomic4;
        if (pop == BthOpcodeFetchAdd) begin
          local_d = local_q + pkt_i.swap_add;
          `CALL_WALK(WkScatterLocal, 32'd0, 13'd8, 4'(AccessRemoteAtomic), StAtomic4)
        end else if (local_q == pkt_i.compare) begin
          local_d = pkt_i.swap_add;
          `CALL_WALK(WkScatterLocal, 32'd0, 13'd8, 4'(AccessRemoteAtomic), StAtomic4)
        end
      end

      StAtomic4: begin
        qp_d.msn        = qp_q.msn + 24'd1;
        qp_d.atom_wp    = qp_q.atom_wp + 4'd1;   // AtomHist = 16 slots
        atom_req   = 1'b1;
        atom_we    = 1'b1;
        atom_wdata = atom_rdata;
        atom_wdata[qp_q.atom_wp] = '{v: 1'b1, rd: 1'b0, psn: pkt_i.psn, va: w_va_q,
                                     rkey: 32'd0, len: 32'd0};
        qp_d.rq_psn     = qp_q.rq_psn + 24'd1;
        if (qp_q.rsp_cnt == 5'd0 && !qp_q.ack_pend) begin
          // nothing queued: answered at once (the entry stays as history)
          qp_d.rsp_rp    = qp_q.atom_wp + 4'd1;
          hdr_d = mk_hdr(qp_q, qpn_q, BthOpcodeAtomicAck, pkt_i.psn);
          hdr_d.syndrome = 8'(AethAckUnlimited);
          hdr_d.msn      = qp_q.msn + 24'd1;
          hdr_d.orig     = w_va_q;
          `CALL_HDR(StEnd)
        end else begin
          qp_d.rsp_cnt  = qp_q.rsp_cnt + 5'd1;
          qp_d.ack_pend = 1'b0;
          push_d        = 1'b1;
          state_d       = StEnd;
        end
      end

      //////////////////////////////////////////
      // Completer (section 10)               //
      //////////////////////////////////////////
      StCompStart: begin
        if ((qp_q.comp_ci == qp_q.sq_ci && qp_q.sq_offset == 32'd0) ||
            s24_neg(c_p - qp_q.comp_wqe_psn) || !s24_neg(c_p - qp_q.sq_psn)) begin
          cnt_inc[CounterRxGhostAck] = 1'b1;
          state_d = StEnd;
        end else begin
          // acknowledgements may open the PSN window or free read credits
          push_d  = 1'b1;
          state_d = StCompFetch;
        end
      end

      StCompFetch: begin
        if (qp_q.comp_ci == qp_q.sq_ci && qp_q.sq_offset == 32'd0) begin
          // only reachable if the host rewrote WQEs in flight: nothing covers P
          cnt_inc[CounterRxGhostAck] = 1'b1;
          state_d = StEnd;
        end else begin
          cpc_req  = 1'b1;
          cpc_addr = {qpn_q, qp_q.comp_ci[CpW-1:0]};
          state_d  = StCompC;
        end
      end

      StCompC: begin
        if (qp_q.cmp_cp[qp_q.comp_ci[CpW-1:0]] && cpc_rdata.idx == qp_q.comp_ci) begin
          wqe_d   = cpc_rdata.wqe;
          state_d = StCompLoop;
        end else begin
          `CALL_LINE(qp_q.comp_ci, 1'b1, StCompLoop)
        end
      end

      StCompLoop: begin
        logic [23:0] np;
        logic [33:0] l;
        l  = wqe_len(swqe);
        np = w_is_atomic ? 24'd1 :
             (l == 34'd0) ? 24'd1 : 24'(div_mtu_ceil(l, qp_q.path_mtu));
        lsum_d = l;
        last_d = qp_q.comp_wqe_psn + np - 24'd1;
        segs_d = segs_send(swqe);
        if (s24_neg(qp_q.comp_wqe_psn + np - 24'd1 - c_p)) begin
          if (w_is_sw) begin
            cret_d  = StCompFetch;
            state_d = StCompl;
          end else begin
            cnt_inc[CounterRxDropResp] = 1'b1;
            state_d = StEnd;
          end
        end else begin
          state_d = StCompOp;
        end
      end

      StCompOp: begin
        state_d = StEnd;
        if (pop == BthOpcodeAck) begin
          unique case (pkt_i.syndrome[6:5])
            2'd0: begin  // ACK
              if (!w_is_sw) begin
                cnt_inc[CounterRxDropResp] = 1'b1;
              end else if (c_p == last_q) begin
                cret_d  = StEnd;
                state_d = StCompl;
              end else begin
                // forward progress: the retry counters start over (as in rxe)
                qp_d.acked_psn  = c_p + 24'd1;
                qp_d.retry_left = qp_q.retry_cnt;
                qp_d.rnr_left   = qp_q.rnr_retry;
              end
            end
            2'd1, 2'd3: begin  // RNR NAK / NAK
              logic       retry;
              logic       prog;
              logic [2:0] rtl_left, rnr_left;
              retry = 1'b0;
              // A NAK for a PSN past acked_psn acknowledges the packets before it: forward
              // progress, so the retry counters start over before this retry is counted.
              prog     = c_p != qp_q.acked_psn && !s24_neg(c_p - qp_q.acked_psn);
              rtl_left = prog ? qp_q.retry_cnt : qp_q.retry_left;
              rnr_left = prog ? qp_q.rnr_retry : qp_q.rnr_left;
              qp_d.retry_left = rtl_left;
              qp_d.rnr_left   = rnr_left;
              if (pkt_i.syndrome[6:5] == 2'd1) begin
                if (rnr_left == 3'd0 && qp_q.rnr_retry != 3'd7) begin
                  `SQ_ERR(WcStatusRnrRetryExcErr)
                end else begin
                  if (qp_q.rnr_retry != 3'd7) qp_d.rnr_left = rnr_left - 3'd1;
                  retry = 1'b1;
                end
              end else if (pkt_i.syndrome[4:0] == 5'(AethNakPsnSeq)) begin
                if (rtl_left == 3'd0) begin
                  `SQ_ERR(WcStatusRetryExcErr)
                end else begin
                  qp_d.retry_left = rtl_left - 3'd1;
                  retry = 1'b1;
                end
              end else if (pkt_i.syndrome[4:0] == 5'(AethNakInvReq)) begin
                `SQ_ERR(WcStatusRemInvReqErr)
              end else if (pkt_i.syndrome[4:0] == 5'(AethNakRemAccess)) begin
                `SQ_ERR(WcStatusRemAccessErr)
              end else begin
                `SQ_ERR(WcStatusRemOpErr)
              end
              if (retry) begin
                trew_d = 1'b1;
                qp_d   = go_back(qp_d, c_p, w_is_sw, w_is_rd);
                if (pkt_i.syndrome[6:5] == 2'd1) begin
                  // the requester waits the RNR timer before it sends again
                  qp_d.rnr_wait = 1'b1;
                  trnr_d        = 1'b1;
                  trnr_code_d   = pkt_i.syndrome[4:0];
                end
              end
            end
            default: begin  // reserved syndrome type: treated as a remote operational error
              `SQ_ERR(WcStatusRemOpErr)
            end
          endcase
        end else if (pop == BthOpcodeAtomicAck) begin
          if (!w_is_atomic || c_p != qp_q.comp_wqe_psn) begin
            cnt_inc[CounterRxDropResp] = 1'b1;
          end else begin
            segs_d = segs_one(swqe.sge0_addr, swqe.sge0_len, swqe.sge0_lkey);
            `CALL_WALK(WkCheck, 32'd0, 13'd8, 4'(AccessLocalWrite), StCompAa2)
          end
        end else begin
          // READ_RESP_*
          logic [23:0] ri;
          logic [23:0] np;
          logic [33:0] rem;
          logic [12:0] exp;
          logic        op_ok;
          logic [23:0] base, rk;
          ri  = c_p - qp_q.comp_wqe_psn;
          rem = lsum_q - (34'(ri) << (7 + 32'(qp_q.path_mtu)));
          exp = (rem > 34'(mtu)) ? mtu : rem[12:0];
          // opcodes follow the READ request being answered: the WQE, or its resumed rest
          base = qp_q.rd_resume ? qp_q.rd_resume_psn : qp_q.comp_wqe_psn;
          np   = last_q - base + 24'd1;
          rk   = c_p - base;
          if (np == 24'd1)            op_ok = pop == BthOpcodeReadRespOnly;
          else if (rk == 24'd0)       op_ok = pop == BthOpcodeReadRespFirst;
          else if (rk == np - 24'd1)  op_ok = pop == BthOpcodeReadRespLast;
          else                        op_ok = pop == BthOpcodeReadRespMiddle;
          if (!w_is_rd || c_p != qp_q.acked_psn || !op_ok || pl != exp) begin
            cnt_inc[CounterRxDropResp] = 1'b1;
          end else begin
            w_off_d   = 32'(ri) << (7 + 32'(qp_q.path_mtu));
            lastpkt_d = pop == BthOpcodeReadRespOnly || pop == BthOpcodeReadRespLast;
            if (pl != 13'd0) begin
              `CALL_WALK(WkCheck, 32'(ri) << (7 + 32'(qp_q.path_mtu)), pl,
                         4'(AccessLocalWrite), StCompRr2)
            end else begin
              state_d = StCompRr3;
            end
          end
        end
      end

      StCompRr2: begin
        if (wk_err_q) begin
          `SQ_ERR(WcStatusLocProtErr)
        end else begin
          `CALL_WALK(WkScatterPl, w_off_q, pl, 4'(AccessLocalWrite), StCompRr3)
        end
      end

      StCompRr3: begin
        qp_d.acked_psn  = c_p + 24'd1;
        qp_d.retry_left = qp_q.retry_cnt;
        qp_d.rnr_left   = qp_q.rnr_retry;
        state_d = StEnd;
        if (lastpkt_q) begin
          cret_d  = StEnd;
          state_d = StCompl;
        end
      end

      StCompAa2: begin
        if (wk_err_q) begin
          `SQ_ERR(WcStatusLocProtErr)
        end else begin
          local_d = pkt_i.orig;
          `CALL_WALK(WkScatterLocal, 32'd0, 13'd8, 4'(AccessLocalWrite), StCompAa3)
        end
      end

      StCompAa3: begin
        cret_d  = StEnd;
        state_d = StCompl;
      end

      // complete the WQE at comp_ci (swqe, lsum_q, last_q)
      StCompl: begin
        state_d = StCompl2;
        if ((swqe.flags & 8'(WqeFlagSignaled)) != 8'd0) begin
          cqe_d          = '0;
          cqe_d.wr_id    = swqe.wr_id;
          cqe_d.byte_len = lsum_q[31:0];
          cqe_d.opcode   = wc_of(swqe.opcode);
          cqe_d.status   = WcStatusSuccess;
          cqe_d.wqe_idx  = qp_q.comp_ci;
          `CALL_CQE(qp_q.send_cqn, StCompl2)
        end
      end

      StCompl2: begin
        qp_d.comp_ci      = qp_q.comp_ci + 16'd1;
        qp_d.comp_wqe_psn = last_q + 24'd1;
        qp_d.rd_resume    = 1'b0;
        if (!s24_neg(last_q + 24'd1 - qp_q.acked_psn) && last_q + 24'd1 != qp_q.acked_psn)
          qp_d.acked_psn = last_q + 24'd1;
        if (!w_is_sw) qp_d.rd_outstanding = qp_q.rd_outstanding - 8'd1;
        qp_d.retry_left = qp_q.retry_cnt;
        qp_d.rnr_left   = qp_q.rnr_retry;
        state_d = cret_q;
      end

      StSqErr: begin
        qp_d.sq_err_valid  = 1'b1;
        qp_d.sq_err_idx    = qp_q.comp_ci;
        qp_d.sq_err_status = sq_st_q;
        qp_d.state         = QpStateErr;
        push_d             = 1'b1;
        state_d            = StEnd;
      end

      //////////////////////////////////////////
      // Timers (section 10a)                 //
      //////////////////////////////////////////
      StTmrLd: begin
        // Like StPopChk: the task (and its trace event) starts once no MMIO read is pending.
        if (!rd_pend_i) begin
          qp_d          = qpc_rdata;
          qp_ld_d       = 1'b1;
          trew_d        = 1'b1;   // a TIMER task restarts the ACK timer if it stays armed
          trace_valid_o = 1'b1;
          trace_kind_o  = TraceTimer;
          trace_qpn_o   = 24'(qpn_q);
          trace_func_o  = qpc_rdata.func;
          state_d       = StTmr;
        end
      end

      StTmr: begin
        if (!qp_q.valid || qp_q.state != QpStateRts) begin
          state_d = StEnd;
        end else if (qp_q.rnr_wait) begin
          qp_d.rnr_wait = 1'b0;
          cnt_inc[CounterRnrTimer] = 1'b1;
          push_d  = 1'b1;
          state_d = StEnd;
        end else if (qp_q.sq_psn == qp_q.acked_psn) begin
          state_d = StEnd;
        end else begin
          cnt_inc[CounterAckTimeout] = 1'b1;
          `CALL_WQE(sq_wqe_addr_comp, 2, StTmr2)
        end
      end

      StTmr2: begin
        // local ACK timeout: go back to the oldest unacknowledged PSN (as a PSN-sequence NAK)
        if (qp_q.retry_left == 3'd0) begin
          `SQ_ERR(WcStatusRetryExcErr)
        end else begin
          qp_d.retry_left = qp_q.retry_left - 3'd1;
          qp_d            = go_back(qp_d, qp_q.acked_psn, w_is_sw, w_is_rd);
          push_d  = 1'b1;
          state_d = StEnd;
        end
      end

      //////////////////////////////////////////
      // Response queue (section 9a)          //
      //////////////////////////////////////////
      // One response per TX task: the oldest queued READ's next packet, a queued ATOMIC_ACK, or
      // (queue empty) the pending ACK.
      StRsp: begin
        atom_ent_t e;
        e       = atom_rdata[qp_q.rsp_rp];
        rsp_e_d = e;
        push_d  = 1'b1;
        if (qp_q.rsp_cnt == 5'd0) begin
          qp_d.ack_pend  = 1'b0;
          hdr_d = mk_hdr(qp_q, qpn_q, BthOpcodeAck, qp_q.ack_psn);
          hdr_d.syndrome = qp_q.ack_syn;
          hdr_d.msn      = qp_q.msn;
          `CALL_HDR(StEnd)
        end else if (!e.rd) begin
          qp_d.rsp_rp    = qp_q.rsp_rp + 4'd1;
          qp_d.rsp_cnt   = qp_q.rsp_cnt - 5'd1;
          hdr_d = mk_hdr(qp_q, qpn_q, BthOpcodeAtomicAck, e.psn);
          hdr_d.syndrome = 8'(AethAckUnlimited);
          hdr_d.msn      = qp_q.msn;
          hdr_d.orig     = e.va;
          `CALL_HDR(StEnd)
        end else begin
          logic [31:0] n;
          n = (e.len - qp_q.rsp_off > 32'(mtu)) ? 32'(mtu) : e.len - qp_q.rsp_off;
          plen_d = 13'(n);
          // The MR may have gone away since the request was accepted: checked per packet.
          `CALL_MR(e.rkey, e.va + 64'(qp_q.rsp_off), n, 4'(AccessRemoteRead), StRsp2)
        end
      end

      StRsp2: begin
        logic first, last;
        logic [7:0] rop;
        logic [23:0] psn;
        first = qp_q.rsp_off == 32'd0;
        last  = 33'(qp_q.rsp_off) + 33'(plen_q) >= 33'(rsp_e_q.len);
        psn   = rsp_e_q.psn + 24'(qp_q.rsp_off >> (7 + 32'(qp_q.path_mtu)));
        if (first && last) rop = BthOpcodeReadRespOnly;
        else if (first)    rop = BthOpcodeReadRespFirst;
        else if (last)     rop = BthOpcodeReadRespLast;
        else               rop = BthOpcodeReadRespMiddle;
        if (!mr_ok_q) begin
          err_syn_d = 8'(AethNakRemAccess);
          err_psn_d = psn;
          state_d   = StErrNak;
        end else begin
          hdr_d = mk_hdr(qp_q, qpn_q, rop, psn);
          hdr_d.syndrome    = 8'(AethAckUnlimited);
          hdr_d.msn         = qp_q.msn;
          hdr_d.payload_len = plen_q;
          segs_d  = segs_one(rsp_e_q.va, rsp_e_q.len, rsp_e_q.rkey);
          w_off_d = qp_q.rsp_off;
          if (last) begin
            qp_d.rsp_off = 32'd0;
            qp_d.rsp_rp  = qp_q.rsp_rp + 4'd1;
            qp_d.rsp_cnt = qp_q.rsp_cnt - 5'd1;
          end else begin
            qp_d.rsp_off = qp_q.rsp_off + 32'(plen_q);
          end
          state_d = StRsp3;
        end
      end

      // payload reads first, then the header (as StTxG3)
      StRsp3: begin
        if (hdr_q.payload_len != 13'd0) begin
          `CALL_WALK(WkGatherTx, w_off_q, hdr_q.payload_len, 4'(AccessRemoteRead), StRsp4)
        end else begin
          state_d = StRsp4;
        end
      end

      StRsp4: begin
        `CALL_HDR(StEnd)
      end

      //////////////////////////////////////////
      // Requester (section 8)                //
      //////////////////////////////////////////
      StTx: begin
        if (qp_q.state != QpStateRts || qp_q.rnr_wait || qp_q.sq_ci == qp_q.sq_pi ||
            (qp_q.sq_psn - qp_q.acked_psn) >= 24'(PsnWindow)) begin
          state_d = StEnd;
        end else begin
          sqc_req  = 1'b1;
          sqc_addr = {qpn_q, qp_q.sq_ci[CpW-1:0]};
          state_d  = StTxC;
        end
      end

      StTxC: begin
        if (qp_q.wqe_cp[qp_q.sq_ci[CpW-1:0]] && sqc_rdata.idx == qp_q.sq_ci) begin
          wqe_d   = sqc_rdata.wqe;
          state_d = StTx2;
        end else begin
          `CALL_LINE(qp_q.sq_ci, 1'b0, StTx2)
        end
      end

      StTx2: begin
        lsum_d = wqe_len(swqe);
        segs_d = segs_send(swqe);
        i_d    = 32'd0;
        if ((w_is_rd || w_is_atomic) && qp_q.max_rd_atomic != 8'd0 &&
            qp_q.rd_outstanding >= qp_q.max_rd_atomic) begin
          state_d = StEnd;   // waits for a completion to push it again
        end else if (qp_q.sq_offset == 32'd0 && (swqe.flags & 8'(WqeFlagFence)) != 8'd0 &&
                     qp_q.rd_outstanding != 8'd0) begin
          state_d = StEnd;   // fenced: likewise
        end else if (qp_q.sq_offset != 32'd0 && swqe.opcode <= 8'd6) begin
          state_d = StTxGo;
        end else if (swqe.opcode > 8'd6) begin
          // (also in the middle of a message, if the host rewrote the WQE)
          sq_st_d = WcStatusLocQpOpErr; state_d = StTxEnd;
        end else if (w_inl && (w_is_rd || w_is_atomic)) begin
          sq_st_d = WcStatusLocQpOpErr; state_d = StTxEnd;
        end else if (w_inl && 64'(swqe.inline_len) > MaxInline) begin
          sq_st_d = WcStatusLocLenErr; state_d = StTxEnd;
        end else if (w_inl) begin
          state_d = StTxGo;   // no SGEs, no lkeys
        end else if (swqe.num_sge > 8'(MaxSendSge) ||
                     seg_sum(segs_send(swqe)) > 34'(MaxMsgLen) ||
                     (w_is_atomic &&
                      (swqe.num_sge != 8'd1 || seg_sum(segs_send(swqe)) != 34'd8))) begin
          sq_st_d = WcStatusLocLenErr; state_d = StTxEnd;
        end else if ((w_is_rd || w_is_atomic) && qp_q.max_rd_atomic == 8'd0) begin
          sq_st_d = WcStatusLocQpOpErr; state_d = StTxEnd;
        end else begin
          state_d = StTxLk;
        end
        // StTxEnd with a status here means a local error; sq_st_d = 0 means none
        if (state_d != StTxEnd) sq_st_d = 8'd0;
      end

      StTxLk: begin
        if (i_q == 32'(segs_q.nseg)) begin
          state_d = StTxGo;
        end else if (segs_q.len[i_q[1:0]] == 32'd0) begin
          i_d = i_q + 32'd1;
        end else begin
          `CALL_MR(segs_q.key[i_q[1:0]], segs_q.addr[i_q[1:0]], segs_q.len[i_q[1:0]],
                   ((w_is_rd || w_is_atomic) ? 4'(AccessLocalWrite) : 4'd0), StTxLk2)
        end
      end

      StTxLk2: begin
        if (!mr_ok_q) begin
          sq_st_d = WcStatusLocProtErr;
          state_d = StTxEnd;
        end else begin
          i_d     = i_q + 32'd1;
          state_d = StTxLk;
        end
      end

      StTxGo: begin
        if (w_is_rd) begin
          hdr_d = mk_hdr(qp_q, qpn_q, BthOpcodeReadRequest, qp_q.sq_psn);
          hdr_d.ackreq  = 1'b1;
          // sq_offset != 0: a resumed READ (section 10) asks for the rest only
          hdr_d.va      = swqe.remote_addr + 64'(qp_q.sq_offset);
          hdr_d.rkey    = swqe.rkey;
          hdr_d.dma_len = lsum_q[31:0] - qp_q.sq_offset;
          qp_d.sq_psn   = qp_q.sq_psn + ((lsum_q == 34'd0) ? 24'd1 :
                                         24'(div_mtu_ceil(lsum_q, qp_q.path_mtu))) -
                          24'(qp_q.sq_offset >> (7 + 32'(qp_q.path_mtu)));
          qp_d.sq_offset = 32'd0;
          qp_d.sq_ci    = qp_q.sq_ci + 16'd1;
          qp_d.rd_outstanding = qp_q.rd_outstanding + 8'd1;
          `CALL_HDR(StTxEnd)
        end else if (w_is_atomic) begin
          hdr_d = mk_hdr(qp_q, qpn_q, (swqe.opcode == WrOpcodeAtomicCmpAndSwp) ?
                         BthOpcodeCmpSwap : BthOpcodeFetchAdd, qp_q.sq_psn);
          hdr_d.ackreq   = 1'b1;
          hdr_d.va       = swqe.remote_addr;
          hdr_d.rkey     = swqe.rkey;
          hdr_d.swap_add = (swqe.opcode == WrOpcodeAtomicCmpAndSwp) ? swqe.swap : swqe.compare_add;
          hdr_d.compare  = (swqe.opcode == WrOpcodeAtomicCmpAndSwp) ? swqe.compare_add : 64'd0;
          qp_d.sq_psn    = qp_q.sq_psn + 24'd1;
          qp_d.sq_ci     = qp_q.sq_ci + 16'd1;
          qp_d.rd_outstanding = qp_q.rd_outstanding + 8'd1;
          `CALL_HDR(StTxEnd)
        end else begin
          logic first, last, wr, imm;
          logic [7:0] o;
          first = qp_q.sq_offset == 32'd0;
          last  = 34'(qp_q.sq_offset) + 34'(tx_n) >= lsum_q;
          wr    = swqe.opcode == WrOpcodeRdmaWrite || swqe.opcode == WrOpcodeRdmaWriteWithImm;
          imm   = swqe.opcode == WrOpcodeRdmaWriteWithImm || swqe.opcode == WrOpcodeSendWithImm;
          if (first && last)  o = wr ? (imm ? BthOpcodeWriteOnlyImm : BthOpcodeWriteOnly) :
                                       (imm ? BthOpcodeSendOnlyImm : BthOpcodeSendOnly);
          else if (first)     o = wr ? BthOpcodeWriteFirst : BthOpcodeSendFirst;
          else if (last)      o = wr ? (imm ? BthOpcodeWriteLastImm : BthOpcodeWriteLast) :
                                       (imm ? BthOpcodeSendLastImm : BthOpcodeSendLast);
          else                o = wr ? BthOpcodeWriteMiddle : BthOpcodeSendMiddle;
          hdr_d = mk_hdr(qp_q, qpn_q, o, qp_q.sq_psn);
          hdr_d.se = last && ((swqe.flags & 8'(WqeFlagSolicited)) != 8'd0) &&
                     (!wr || imm);
          hdr_d.ackreq = last || ((qp_q.sq_psn & 24'(AckEveryMask)) == 24'(AckEveryMask));
          if (op_has_reth(o)) begin
            hdr_d.va      = swqe.remote_addr;
            hdr_d.rkey    = swqe.rkey;
            hdr_d.dma_len = lsum_q[31:0];
          end
          if (op_has_imm(o)) hdr_d.imm = swqe.imm;
          hdr_d.payload_len = tx_n;
          lastpkt_d = last;
          if (tx_n != 13'd0 && !w_inl) begin
            `CALL_WALK(WkCheck, qp_q.sq_offset, tx_n, 4'd0, StTxG2)
          end else begin
            state_d = StTxG3;
          end
        end
      end

      StTxG2: begin
        if (wk_err_q) begin
          sq_st_d = WcStatusLocProtErr;
          state_d = StTxEnd;
        end else begin
          state_d = StTxG3;
        end
      end

      // The payload's reads go out before the header is handed over, so their latency overlaps
      // the frames still queued in the framer.
      StTxG3: begin
        if (hdr_q.payload_len != 13'd0 && !w_inl) begin
          `CALL_WALK(WkGatherTx, qp_q.sq_offset, hdr_q.payload_len, 4'd0, StTxG4)
        end else begin
          state_d = StTxG4;
        end
      end

      StTxG4: begin
        if (hdr_q.payload_len != 13'd0 && w_inl) begin
          `CALL_HDR(StTxInl)
        end else begin
          `CALL_HDR(StTxG5)
        end
      end

      // the inline payload: one beat straight from the WQE (no DMA read), offered once the
      // payload queue has given the framer every beat of the frames before this one
      StTxInl: begin
        if (!inl_q) begin
          inl_d      = txq_empty;
          inl_data_d = wqe_q[1023:512] >> {qp_q.sq_offset[5:0], 3'd0};
        end else if (pl_ready_i) begin
          inl_d   = 1'b0;
          state_d = StTxG5;
        end
      end

      StTxG5: begin
        qp_d.sq_psn    = qp_q.sq_psn + 24'd1;
        qp_d.sq_offset = qp_q.sq_offset + 32'(hdr_q.payload_len);
        if (lastpkt_q) begin
          qp_d.sq_ci     = qp_q.sq_ci + 16'd1;
          qp_d.sq_offset = 32'd0;
        end
        sq_st_d = 8'd0;
        state_d = StTxEnd;
      end

      StTxEnd: begin
        if (sq_st_q != 8'd0) begin
          // local error
          qp_d.sq_err_valid  = 1'b1;
          qp_d.sq_err_idx    = qp_q.sq_ci;
          qp_d.sq_err_status = sq_st_q;
          qp_d.state         = QpStateErr;
          push_d             = 1'b1;
        end else begin
          push_d = qp_q.sq_ci != qp_q.sq_pi;
        end
        state_d = StEnd;
      end

      //////////////////////////////////////////
      // Flushes (section 11)                 //
      //////////////////////////////////////////
      StFlushSq: begin
        `CALL_WQE(sq_wqe_addr_comp, 2, StFlushSq2)
      end

      StFlushSq2: begin
        cqe_d         = '0;
        cqe_d.wr_id   = swqe.wr_id;
        cqe_d.opcode  = wc_of(swqe.opcode);
        cqe_d.status  = (qp_q.sq_err_valid && qp_q.sq_err_idx == qp_q.comp_ci) ?
                        qp_q.sq_err_status : WcStatusWrFlushErr;
        cqe_d.wqe_idx = qp_q.comp_ci;
        `CALL_CQE(qp_q.send_cqn, StFlushSq3)
      end

      StFlushSq3: begin
        qp_d.comp_ci = qp_q.comp_ci + 16'd1;
        qp_d.sq_ci   = qp_q.comp_ci + 16'd1;
        push_d       = (qp_q.comp_ci + 16'd1 != qp_q.sq_pi) || (qp_q.rq_ci != qp_q.rq_pi);
        // FLR: a QP of a function being torn down has no flush work left
        if (!push_d && 32'(qp_q.func) < NumFunc && flr_on_q[FuncSelW'(qp_q.func)] &&
            flr_cnt_q[FuncSelW'(qp_q.func)] != '0)
          flr_cnt_d[FuncSelW'(qp_q.func)] = flr_cnt_q[FuncSelW'(qp_q.func)] - 1'b1;
        state_d      = StEnd;
      end

      StFlushRq: begin
        `CALL_WQE(rq_wqe_addr, 1, StFlushRq2)
      end

      StFlushRq2: begin
        cqe_d         = '0;
        cqe_d.wr_id   = rwqe.wr_id;
        cqe_d.opcode  = WcOpcodeRecv;
        cqe_d.status  = (qp_q.rq_err_valid && qp_q.rq_err_idx == qp_q.rq_ci) ?
                        qp_q.rq_err_status : WcStatusWrFlushErr;
        cqe_d.wqe_idx = qp_q.rq_ci;
        `CALL_CQE(qp_q.recv_cqn, StFlushRq3)
      end

      StFlushRq3: begin
        qp_d.rq_ci = qp_q.rq_ci + 16'd1;
        push_d     = (qp_q.rq_ci + 16'd1 != qp_q.rq_pi) || (qp_q.comp_ci != qp_q.sq_pi);
        // FLR: a QP of a function being torn down has no flush work left
        if (!push_d && 32'(qp_q.func) < NumFunc && flr_on_q[FuncSelW'(qp_q.func)] &&
            flr_cnt_q[FuncSelW'(qp_q.func)] != '0)
          flr_cnt_d[FuncSelW'(qp_q.func)] = flr_cnt_q[FuncSelW'(qp_q.func)] - 1'b1;
        state_d    = StEnd;
      end

      //////////////////////////////////////////
      // Subroutine: MR check                 //
      //////////////////////////////////////////
      StMrRd: begin
        if (chk_key_q[31:8] >= 24'(NumMr)) begin
          mr_ok_d = 1'b0;
          state_d = mr_ret_q;
        end else begin
          mrc_req  = 1'b1;
          mrc_addr = MrW'(chk_key_q[31:8]);
          state_d  = StMrChk;
        end
      end

      StMrChk: begin
        mr_d    = mrc_rdata;
        mr_ok_d = mrc_rdata.valid && mrc_rdata.key == chk_key_q[7:0] &&
                  mrc_rdata.pdn == qp_q.pdn && (chk_acc_q & ~mrc_rdata.access) == 4'd0 &&
                  (chk_len_q == 32'd0 ||
                   (chk_va_q >= mrc_rdata.iova &&
                    {1'b0, chk_va_q} + 65'(chk_len_q) <=
                    {1'b0, mrc_rdata.iova} + {1'b0, mrc_rdata.length}));
        state_d = mr_ret_q;
      end

      //////////////////////////////////////////
      // Subroutine: piece walker             //
      //////////////////////////////////////////
      StWkSeg: begin
        if (wk_rem_q == 32'd0) begin
          state_d = (wk_mode_q == WkGatherLocal) ? StWkDrain : StWkRet;
        end else if (seg_idx_q >= segs_q.nseg) begin
          wk_err_d = 1'b1;   // not reachable after the length checks
          state_d  = StWkRet;
        end else if (seg_off_q >= segs_q.len[seg_idx_q[1:0]]) begin
          seg_off_d = seg_off_q - segs_q.len[seg_idx_q[1:0]];
          seg_idx_d = seg_idx_q + 3'd1;
        end else begin
          logic [31:0] av;
          av = segs_q.len[seg_idx_q[1:0]] - seg_off_q;
          if (av > wk_rem_q) av = wk_rem_q;
          avail_d    = av;
          piece_va_d = segs_q.addr[seg_idx_q[1:0]] + 64'(seg_off_q);
          // An SGE is checked as a whole whenever a packet touches it; an MR range (rkey) only
          // over the bytes of this packet.
          if (segs_q.whole) begin
            `CALL_MR(segs_q.key[seg_idx_q[1:0]], segs_q.addr[seg_idx_q[1:0]],
                     segs_q.len[seg_idx_q[1:0]], wk_acc_q, StWkMr)
          end else begin
            `CALL_MR(segs_q.key[seg_idx_q[1:0]], segs_q.addr[seg_idx_q[1:0]] + 64'(seg_off_q),
                     av, wk_acc_q, StWkMr)
          end
        end
      end

      StWkMr: begin
        if (!mr_ok_q) begin
          wk_err_d = 1'b1;
          state_d  = StWkRet;
        end else if (wk_mode_q == WkCheck) begin
          seg_off_d = seg_off_q + avail_q;
          wk_rem_d  = wk_rem_q - avail_q;
          state_d   = StWkSeg;
        end else begin
          plen_d  = (64'(avail_q) > pg_rem) ? 13'(pg_rem) : 13'(avail_q);
          mtt_req = 1'b1;
          state_d = StWkMtt;
        end
      end

      StWkMtt: begin
        phys_d  = mtt_rdata + pg_off;
        state_d = (wk_mode_q == WkGatherTx || wk_mode_q == WkGatherLocal) ? StWkRdIss : StWkWr;
      end

      StWkRdIss: begin
        if (wk_mode_q == WkGatherTx) begin
          // to the transmit payload queue: the read is on its way when it is accepted
          txq_req = 1'b1;
          if (txq_ready) begin
            seg_off_d = seg_off_q + 32'(plen_q);
            wk_rem_d  = wk_rem_q - 32'(plen_q);
            state_d   = StWkSeg;
          end
        end else if (!rd_busy_q && !rd_req_q &&
                     32'(fifo_cnt_q) + ((32'(plen_q) + 32'd63) >> 6) <= 32'(FifoDepth)) begin
          rd_req_d  = 1'b1;
          rd_busy_d = 1'b1;
          rd_addr_d = phys_q;
          rd_len_d  = plen_q;
          rd_rem_d  = plen_q;
          rd_func_d = qp_q.func;
          seg_off_d = seg_off_q + 32'(plen_q);
          wk_rem_d  = wk_rem_q - 32'(plen_q);
          state_d   = StWkSeg;
        end
      end

      // a piece of the scatter: queued to the DMA write queue, which copies it behind this task
      StWkWr: begin
        wq_valid = 1'b1;
        if (wk_mode_q == WkScatterPl) begin
          wq_cmd.kind = WrqPayload;
          wq_cmd.src  = pkt_i.pl_base + 16'(pl_off_q);
        end else begin
          wq_cmd.kind = WrqImm;
          wq_cmd.data = {192'd0, local_q >> {pl_off_q[2:0], 3'd0}};
        end
        if (wq_ready) begin
          seg_off_d = seg_off_q + 32'(plen_q);
          wk_rem_d  = wk_rem_q - 32'(plen_q);
          pl_off_d  = pl_off_q + plen_q;
          state_d   = StWkSeg;
        end
      end

      StWkDrain: begin
        if (wk_mode_q == WkGatherLocal) begin
          if (fifo_cnt_q != 7'd0) begin
            local_d  = fifo_head[63:0];
            fifo_pop = 1'b1;
            state_d  = StWkRet;
          end
        end else if (!rd_busy_q && !rd_req_q && fifo_cnt_q == 7'd0) begin
          state_d = StWkRet;
        end
      end

      StWkRet: begin
        wk_mode_d = WkCheck;
        state_d   = wk_ret_q;
      end

      //////////////////////////////////////////
      // Subroutine: WQE fetch                //
      //////////////////////////////////////////
      StWqeIss: begin
        rd_req_d  = 1'b1;
        rd_busy_d = 1'b1;
        rd_rem_d  = rd_len_q;
        state_d   = StWqeWait;
      end

      StWqeWait: begin
        if (fifo_cnt_q != 7'd0) begin
          fifo_pop = 1'b1;
          wqe_d[{wqe_b_q[0], 9'd0} +: 512] = fifo_head;
          wqe_b_d = wqe_b_q + 2'd1;
          if (wqe_b_q + 2'd1 == wqe_nb_q) state_d = ret_q;
        end
      end

      StLnIss: begin
        rd_req_d  = 1'b1;
        rd_busy_d = 1'b1;
        rd_rem_d  = rd_len_q;
        state_d   = ln_rq_q ? StRlWait : StLnWait;
      end

      // one beat per receive WQE: each kept in its copy slot, the first also in wqe_q
      StRlWait: begin
        if (fifo_cnt_q != 7'd0) begin
          logic [15:0] ix;
          ix       = ln_idx_q + 16'(ln_k_q);
          fifo_pop = 1'b1;
          if (ln_k_q == '0) wqe_d[511:0] = fifo_head;
          rqc_req   = 1'b1;
          rqc_we    = 1'b1;
          rqc_addr  = {qpn_q, ix[CpW-1:0]};
          rqc_wdata = '{idx: ix, wqe: fifo_head};
          qp_d.rqe_cp[ix[CpW-1:0]] = 1'b1;
          ln_k_d = ln_k_q + 4'd1;
          if (ln_k_q + 4'd1 == ln_n_q) state_d = ret_q;
        end
      end

      // two beats per WQE: the first kept (in wqe_q for the line's first WQE), then the slot
      // written with both
      StLnWait: begin
        if (fifo_cnt_q != 7'd0) begin
          fifo_pop = 1'b1;
          wqe_b_d  = wqe_b_q + 2'd1;
          if (!wqe_b_q[0]) begin
            lnb_d = fifo_head;
            if (ln_k_q == '0) wqe_d[511:0] = fifo_head;
          end else begin
            logic [15:0] ix;
            ix = ln_idx_q + 16'(ln_k_q);
            if (ln_k_q == '0) wqe_d[1023:512] = fifo_head;
            if (ln_cmp_q) begin
              cpc_req   = 1'b1;
              cpc_we    = 1'b1;
              cpc_addr  = {qpn_q, ix[CpW-1:0]};
              cpc_wdata = '{idx: ix, wqe: {fifo_head, lnb_q}};
              qp_d.cmp_cp[ix[CpW-1:0]] = 1'b1;
            end else begin
              sqc_req   = 1'b1;
              sqc_we    = 1'b1;
              sqc_addr  = {qpn_q, ix[CpW-1:0]};
              sqc_wdata = '{idx: ix, wqe: {fifo_head, lnb_q}};
              qp_d.wqe_cp[ix[CpW-1:0]] = 1'b1;
            end
            ln_k_d = ln_k_q + 4'd1;
            if (ln_k_q + 4'd1 == ln_n_q) state_d = ret_q;
          end
        end
      end

      //////////////////////////////////////////
      // Subroutine: header to the framer     //
      //////////////////////////////////////////
      StHdr: begin
        hdr_valid_o = 1'b1;
        if (hdr_ready_i) begin
          // the frame costs its function tokens (rate limit; payload + RATE_FRAME_OVERHEAD)
          chg     = qp_ld_q;
          chg_f   = FuncSelW'(qp_q.func);
          chg_amt = (40'(hdr_q.payload_len) + 40'(RateFrameOverhead)) * TokPerByte;
          cnt_inc[CounterTxPkts] = 1'b1;
          cnt_inc[CounterTxSpoof] = hdr_drop_o;
          state_d = ret_q;
        end
      end

      //////////////////////////////////////////
      // Subroutine: CQE writer               //
      //////////////////////////////////////////
      StCqeRd: begin
        cqc_req = 1'b1;
        state_d = StCqeChk;
      end

      StCqeChk: begin
        cq_d = cqc_rdata;
        if (!cqc_rdata.valid ||
            (cqc_rdata.pi - cqc_rdata.ci) >= (32'd1 << cqc_rdata.log_size)) begin
          cnt_inc[CounterCqOverflow] = 1'b1;
          state_d = ret_q;
        end else begin
          state_d = StCqeWr;
        end
      end

      // the CQE and its MSI-X go through the write queue, behind the data they complete
      StCqeWr: begin
        wq_valid            = 1'b1;
        wq_cmd.kind         = WrqImm;
        wq_cmd.func         = cq_q.func;
        wq_cmd.addr         = cqe_addr;
        wq_cmd.len          = 13'd32;
        wq_cmd.data         = cqe_out;
        wq_cmd.msix         = cq_q.armed;
        wq_cmd.msix_func    = cq_q.func;
        wq_cmd.msix_vector  = cq_q.vector;
        if (wq_ready) begin
          cqc_req = 1'b1; cqc_we = 1'b1;
          cqc_wdata = cq_q;
          cqc_wdata.pi = cq_q.pi + 32'd1;
          cqc_wdata.armed = 1'b0;
          state_d = ret_q;
        end
      end

      //////////////////////////////////////////
      // End of task                          //
      //////////////////////////////////////////
      StEnd: begin
        // a received frame's ring words are released behind the copies of its payload
        wq_valid       = is_rx_q;
        wq_cmd.kind    = WrqRelease;
        wq_cmd.rel_words = pkt_i.nwords;
        if (is_rx_q && !wq_ready) begin
          state_d = StEnd;   // wait for room in the write queue
        end else begin
        if (qp_ld_q) begin
          qpc_req = 1'b1; qpc_we = 1'b1; qpc_addr = qpn_q; qpc_wdata = qp_q;
          // timers (section 10a)
          tmr_set = 1'b1;
          if (!qp_q.valid || qp_q.state != QpStateRts) begin
            tmr_set_mode = TmrOff;
          end else if (trnr_q) begin
            tmr_set_mode = TmrRnr;
            tmr_set_code = trnr_code_q;
          end else if (qp_q.rnr_wait) begin
            tmr_set = 1'b0;        // the RNR timer keeps running
          end else if (qp_q.sq_psn != qp_q.acked_psn && qp_q.timeout != 5'd0) begin
            tmr_set_mode    = TmrAck;
            tmr_set_code    = qp_q.timeout;
            tmr_set_restart = trew_q || qp_q.acked_psn != acked0_q || qp_q.comp_ci != ci0_q;
          end else begin
            tmr_set_mode = TmrOff;
          end
        end
        if (push_q && !in_ring_q[qpn_q]) begin
          // append to the list of the QP's function
          ring_push  = fne_q[push_f];
          ring_waddr = ftail_q[push_f];
          if (!fne_q[push_f]) fhead_d[push_f] = qpn_q;
          ftail_d[push_f] = qpn_q;
          fne_d[push_f]   = 1'b1;
          in_ring_d[qpn_q] = 1'b1;
        end
        pkt_done_o = is_rx_q;
        qp_ld_d    = 1'b0;
        push_d     = 1'b0;
        is_rx_d    = 1'b0;
        state_d    = StIdle;
        end
      end

      default: state_d = StIdle;
    endcase

    // The QP's completer position when the task loaded it (for the timer restart rule).
    if (qp_ld_d && !qp_ld_q) begin
      acked0_d = qp_d.acked_psn;
      ci0_d    = qp_d.comp_ci;
    end

    `undef CALL_MR
    `undef CALL_WALK
    `undef CALL_WQE
    `undef CALL_HDR
    `undef CALL_CQE
    `undef ERR_NAK
    `undef SQ_ERR
  end

  // FIFO pointers
  always_comb begin
    fifo_rp_d  = fifo_rp_q + 6'(fifo_pop);
    fifo_wp_d  = fifo_wp_q + 6'(fifo_push);
    fifo_cnt_d = fifo_cnt_q + 7'(fifo_push) - 7'(fifo_pop);
  end

  always_ff @(posedge clk_i) begin
    if (!rst_ni) begin
      state_q     <= StInit;
      ret_q       <= StIdle;
      wk_ret_q    <= StIdle;
      mr_ret_q    <= StIdle;
      init_q      <= '0;
      fmac_q      <= '0;
      fip_q       <= '0;
      ftrust_q    <= '0;
      amac_q      <= '0;
      aip_q       <= '0;
      fspoof_q    <= '0;
      dwb_q       <= '0;
      dwe_q       <= '0;
      cfunc_q     <= '0;
      dbf_q       <= '0;
      vfs_q       <= '0;
      vq_q        <= '0;
      vr_i_q      <= '0;
      vr_bad_q    <= 1'b0;
      flr_on_q    <= '0;
      flr_cnt_q   <= '0;
      flr_f_q     <= '0;
      fl_i_q      <= '0;
      is_rx_q     <= 1'b0;
      qpn_q       <= '0;
      qp_q        <= '0;
      qp_ld_q     <= 1'b0;
      push_q      <= 1'b0;
      acked0_q    <= '0;
      ci0_q       <= '0;
      trew_q      <= 1'b0;
      trnr_q      <= 1'b0;
      trnr_code_q <= '0;
      op_q        <= '0;
      args_q      <= '0;
      cq_q        <= '0;
      pd_q        <= '0;
      mr_q        <= '0;
      db_kind_q   <= '0;
      db_idx_q    <= '0;
      db_val_q    <= '0;
      cst_q       <= '0;
      out0_q      <= '0;
      out1_q      <= '0;
      mtt_idx_q   <= '0;
      mtt_cnt_q   <= '0;
      mtt_src_q   <= '0;
      mtt_j_q     <= '0;
      wqe_q       <= '0;
      wqe_nb_q    <= '0;
      ln_idx_q    <= '0;
      ln_n_q      <= '0;
      ln_k_q      <= '0;
      lnb_q       <= '0;
      ln_rq_q     <= 1'b0;
      ln_cmp_q    <= 1'b0;
      wqe_b_q     <= '0;
      hdr_q       <= '0;
      cqe_q       <= '0;
      cqe_cqn_q   <= '0;
      chk_key_q   <= '0;
      chk_va_q    <= '0;
      chk_len_q   <= '0;
      chk_acc_q   <= '0;
      mr_ok_q     <= 1'b0;
      segs_q      <= '0;
      wk_mode_q   <= WkCheck;
      seg_idx_q   <= '0;
      seg_off_q   <= '0;
      wk_rem_q    <= '0;
      wk_acc_q    <= '0;
      wk_err_q    <= 1'b0;
      pl_off_q    <= '0;
      avail_q     <= '0;
      plen_q      <= '0;
      piece_va_q  <= '0;
      phys_q      <= '0;
      local_q     <= '0;
      rd_req_q    <= 1'b0;
      rd_addr_q   <= '0;
      rd_len_q    <= '0;
      rd_func_q   <= '0;
      rd_busy_q   <= 1'b0;
      rd_rem_q    <= '0;
      i_q         <= '0;
      npk_q       <= '0;
      w_off_q     <= '0;
      w_va_q      <= '0;
      w_len_q     <= '0;
      w_key_q     <= '0;
      replay_q    <= 1'b0;
      last_q      <= '0;
      lsum_q      <= '0;
      err_syn_q   <= '0;
      err_psn_q   <= '0;
      rsp_e_q     <= '0;
      sq_st_q     <= '0;
      cret_q      <= StIdle;
      lastpkt_q   <= 1'b0;
      inl_q       <= 1'b0;
      inl_data_q  <= '0;
      fifo_rp_q   <= '0;
      fifo_wp_q   <= '0;
      fifo_cnt_q  <= '0;
      in_ring_q   <= '0;
      fhead_q     <= '0;
      ftail_q     <= '0;
      fne_q       <= '0;
      flast_q     <= '0;
      popf_q      <= '0;
      popmore_q   <= 1'b0;
      frate_q     <= '0;
      ftok_q      <= {NumFunc{TokBurst}};
    end else begin
      state_q     <= state_d;
      ret_q       <= ret_d;
      wk_ret_q    <= wk_ret_d;
      mr_ret_q    <= mr_ret_d;
      init_q      <= init_d;
      fmac_q      <= fmac_d;
      fip_q       <= fip_d;
      ftrust_q    <= ftrust_d;
      amac_q      <= amac_d;
      aip_q       <= aip_d;
      fspoof_q    <= fspoof_d;
      dwb_q       <= dwb_d;
      dwe_q       <= dwe_d;
      cfunc_q     <= cfunc_d;
      dbf_q       <= dbf_d;
      vfs_q       <= vfs_d;
      vq_q        <= vq_d;
      vr_i_q      <= vr_i_d;
      vr_bad_q    <= vr_bad_d;
      flr_on_q    <= flr_on_d;
      flr_cnt_q   <= flr_cnt_d;
      flr_f_q     <= flr_f_d;
      fl_i_q      <= fl_i_d;
      is_rx_q     <= is_rx_d;
      qpn_q       <= qpn_d;
      qp_q        <= qp_d;
      qp_ld_q     <= qp_ld_d;
      push_q      <= push_d;
      acked0_q    <= acked0_d;
      ci0_q       <= ci0_d;
      trew_q      <= trew_d;
      trnr_q      <= trnr_d;
      trnr_code_q <= trnr_code_d;
      op_q        <= op_d;
      args_q      <= args_d;
      cq_q        <= cq_d;
      pd_q        <= pd_d;
      mr_q        <= mr_d;
      db_kind_q   <= db_kind_d;
      db_idx_q    <= db_idx_d;
      db_val_q    <= db_val_d;
      cst_q       <= cst_d;
      out0_q      <= out0_d;
      out1_q      <= out1_d;
      mtt_idx_q   <= mtt_idx_d;
      mtt_cnt_q   <= mtt_cnt_d;
      mtt_src_q   <= mtt_src_d;
      mtt_j_q     <= mtt_j_d;
      wqe_q       <= wqe_d;
      wqe_nb_q    <= wqe_nb_d;
      ln_idx_q    <= ln_idx_d;
      ln_n_q      <= ln_n_d;
      ln_k_q      <= ln_k_d;
      lnb_q       <= lnb_d;
      ln_rq_q     <= ln_rq_d;
      ln_cmp_q    <= ln_cmp_d;
      wqe_b_q     <= wqe_b_d;
      hdr_q       <= hdr_d;
      cqe_q       <= cqe_d;
      cqe_cqn_q   <= cqe_cqn_d;
      chk_key_q   <= chk_key_d;
      chk_va_q    <= chk_va_d;
      chk_len_q   <= chk_len_d;
      chk_acc_q   <= chk_acc_d;
      mr_ok_q     <= mr_ok_d;
      segs_q      <= segs_d;
      wk_mode_q   <= wk_mode_d;
      seg_idx_q   <= seg_idx_d;
      seg_off_q   <= seg_off_d;
      wk_rem_q    <= wk_rem_d;
      wk_acc_q    <= wk_acc_d;
      wk_err_q    <= wk_err_d;
      pl_off_q    <= pl_off_d;
      avail_q     <= avail_d;
      plen_q      <= plen_d;
      piece_va_q  <= piece_va_d;
      phys_q      <= phys_d;
      local_q     <= local_d;
      rd_req_q    <= rd_req_d;
      rd_addr_q   <= rd_addr_d;
      rd_len_q    <= rd_len_d;
      rd_func_q   <= rd_func_d;
      rd_busy_q   <= rd_busy_d;
      rd_rem_q    <= rd_rem_d;
      i_q         <= i_d;
      npk_q       <= npk_d;
      w_off_q     <= w_off_d;
      w_va_q      <= w_va_d;
      w_len_q     <= w_len_d;
      w_key_q     <= w_key_d;
      replay_q    <= replay_d;
      last_q      <= last_d;
      lsum_q      <= lsum_d;
      err_syn_q   <= err_syn_d;
      err_psn_q   <= err_psn_d;
      rsp_e_q     <= rsp_e_d;
      sq_st_q     <= sq_st_d;
      cret_q      <= cret_d;
      lastpkt_q   <= lastpkt_d;
      inl_q       <= inl_d;
      inl_data_q  <= inl_data_d;
      fifo_rp_q   <= fifo_rp_d;
      fifo_wp_q   <= fifo_wp_d;
      fifo_cnt_q  <= fifo_cnt_d;
      in_ring_q   <= in_ring_d;
      fhead_q     <= fhead_d;
      ftail_q     <= ftail_d;
      fne_q       <= fne_d;
      flast_q     <= flast_d;
      popf_q      <= popf_d;
      popmore_q   <= popmore_d;
      frate_q     <= frate_d;
      ftok_q      <= ftok_d;
    end
  end

  //////////////////////////
  // DMA write queue      //
  //////////////////////////

  // payload reads for the transmit framer (their tags 1..4)
  rnic_txq #(.Beats(256)) u_txq (
    .clk_i, .rst_ni,
    .req_valid_i        (txq_req),
    .req_ready_o        (txq_ready),
    .req_func_i         (qp_q.func),
    .req_addr_i         (phys_q),
    .req_len_i          (plen_q),
    .port_free_i        (!rd_req_q && !wq_hazard),
    .empty_o            (txq_empty),
    .dma_rd_req_valid_o (txq_rd_valid),
    .dma_rd_req_ready_i,
    .dma_rd_req_tag_o   (txq_rd_tag),
    .dma_rd_req_func_o  (txq_rd_func),
    .dma_rd_req_addr_o  (txq_rd_addr),
    .dma_rd_req_len_o   (txq_rd_len),
    .dma_rd_cpl_valid_i,
    .dma_rd_cpl_tag_i,
    .dma_rd_cpl_data_i,
    .pl_valid_o         (txq_pl_valid),
    .pl_ready_i         (pl_ready_i && !inl_q),
    .pl_data_o          (txq_pl_data),
    .pl_bytes_o         (txq_pl_bytes)
  );

  rnic_wrq u_wrq (
    .clk_i, .rst_ni,
    .cmd_valid_i    (wq_valid),
    .cmd_ready_o    (wq_ready),
    .cmd_i          (wq_cmd),
    .chk_i          (rd_req_q || txq_req),
    .chk_addr_i     (rd_req_q ? rd_addr_q : phys_q),
    .chk_len_i      (rd_req_q ? rd_len_q : plen_q),
    .hazard_o       (wq_hazard),
    .empty_o        (wq_empty),
    .pl_rd_en_o,
    .pl_rd_addr_o,
    .pl_rd_data_i,
    .free_o         (pl_free_o),
    .free_words_o   (pl_free_words_o),
    .dma_wr_valid_o, .dma_wr_ready_i, .dma_wr_func_o, .dma_wr_addr_o, .dma_wr_len_o,
    .dma_wr_data_o, .dma_wr_last_o,
    .msix_valid_o, .msix_func_o, .msix_vector_o
  );

  ////////////////
  // Outputs    //
  ////////////////

  // (and no write queued: an MMIO read is answered after the device's earlier writes, as a PCIe
  // read completion pushes the posted writes ahead of it)
  assign idle_o       = (state_q == StIdle || state_q == StPopQ || state_q == StPopChk ||
                         state_q == StTmrLd || state_q == StInit) && wq_empty;
  assign cnt_inc_o    = cnt_inc;
  assign func_mac_o   = fmac_q;
  assign func_ip_o    = fip_q;
  assign vfres_vfs_o  = vfs_q;
  assign vfres_q_o    = vq_q;
  assign cmd_status_o = cst_q;
  assign cmd_out0_o   = out0_q;
  assign cmd_out1_o   = out1_q;

  // a read waits for the queued writes of the bytes it reads (rnic_wrq, hazard_o)
  // The engine's own reads (tag 0) and the payload queue's share the request port; the engine
  // never has both pending (a gather waits for each piece's acceptance).
  assign dma_rd_req_valid_o = (rd_req_q && !wq_hazard) || txq_rd_valid;
  assign dma_rd_req_tag_o   = rd_req_q ? 8'd0 : txq_rd_tag;
  assign dma_rd_req_func_o  = rd_req_q ? rd_func_q : txq_rd_func;
  assign dma_rd_req_addr_o  = rd_req_q ? rd_addr_q : txq_rd_addr;
  assign dma_rd_req_len_o   = rd_req_q ? rd_len_q : txq_rd_len;

  // Frames carry the address of the sending QP's function (the task's QP). With spoof-check on,
  // a VF whose address is not the one the PF assigned has its frames dropped at the egress
  // (rnic_spoof_filter) and counted in TX_SPOOF.
  always_comb begin
    logic [FuncSelW-1:0] f;
    f             = FuncSelW'(qp_q.func);
    hdr_o         = hdr_q;
    hdr_o.src_mac = fmac_q[f];
    hdr_o.src_ip  = fip_q[f];
    hdr_drop_o    = qp_q.func != 8'd0 && fspoof_q[f] &&
                    (fmac_q[f] != amac_q[f] || fip_q[f] != aip_q[f]);
  end
  assign pl_valid_o = inl_q || txq_pl_valid;
  assign pl_data_o  = inl_q ? inl_data_q : txq_pl_data;
  assign pl_bytes_o = inl_q ? 7'(hdr_q.payload_len) : txq_pl_bytes;

  // Only one read is outstanding, so the completion tag carries no information yet.
  logic unused_tag;
  assign unused_tag = ^dma_rd_cpl_tag_i;
  // SE, pad count and MSN of received frames are not needed by the receive side.
  logic unused_pkt;
  assign unused_pkt = ^{pkt_i.se, pkt_i.padcnt, pkt_i.msn};

endmodule
