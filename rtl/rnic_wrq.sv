// SPDX-License-Identifier: Apache-2.0
//
// DMA write queue (docs/architecture.md section 13, Data paths): the engine's host-memory writes,
// executed in the order the tasks issued them while the engine goes on with the next task.
//
// Commands (wrq_cmd_t): copy received payload from the receive framer's ring to host memory,
// write up to 32 bytes given in the command (a CQE, an atomic's original value) and then send
// an MSI-X, or release a frame's ring words once the copies before it have read them. A payload
// copy reads the ring one word ahead of the DMA write port, so it moves one 64-byte beat per
// cycle.
//
// Ordering: one queue for all of it keeps writes in task order (the lockstep contract) and the
// MSI-X behind its CQE, as PCIe orders posted writes. A DMA read of the engine must see the data
// of the writes queued before it (the model runs a task's writes at once): hazard_o tells the
// engine whether a queued or running write overlaps the bytes it wants to read; only then does the
// read wait. (Reads of other bytes cannot tell whether they went first, so they do not wait.)
module rnic_wrq
  import rnic_pkg::*;
#(
  parameter int unsigned Depth = 4   // power of two
) (
  input  logic          clk_i,
  input  logic          rst_ni,

  input  logic          cmd_valid_i,
  output logic          cmd_ready_o,
  input  wrq_cmd_t      cmd_i,
  input  logic          chk_i,        // a read of [chk_addr_i, + chk_len_i) waits to go ...
  input  logic [63:0]   chk_addr_i,
  input  logic [12:0]   chk_len_i,
  output logic          hazard_o,     // ... overlaps a write queued or under way
  output logic          empty_o,      // no write queued or under way

  // receive framer: ring read port (registered read) and word release
  output logic          pl_rd_en_o,
  output logic [15:0]   pl_rd_addr_o,
  input  logic [511:0]  pl_rd_data_i,
  output logic          free_o,
  output logic [6:0]    free_words_o,

  output logic          dma_wr_valid_o,
  input  logic          dma_wr_ready_i,
  output logic [7:0]    dma_wr_func_o,
  output logic [63:0]   dma_wr_addr_o,
  output logic [12:0]   dma_wr_len_o,
  output logic [511:0]  dma_wr_data_o,
  output logic          dma_wr_last_o,

  output logic          msix_valid_o,
  output logic [7:0]    msix_func_o,
  output logic [15:0]   msix_vector_o
);

  localparam int unsigned AW = $clog2(Depth);

  typedef enum logic [1:0] {
    StIdle,    // nothing under way: take the head command
    StCopy,    // payload copy: the word of beat k is in the read register
    StImm      // immediate write (one beat), then the MSI-X
  } state_e;

  wrq_cmd_t     q_mem [Depth];
  logic [AW:0]  wp_q, wp_d, rp_q, rp_d;
  logic         push, pop;
  wrq_cmd_t     head;

  state_e       state_q, state_d;
  wrq_cmd_t     cur_q, cur_d;
  logic [6:0]   k_q, k_d;          // beat of the copy being written

  assign cmd_ready_o = (wp_q - rp_q) != (AW + 1)'(Depth);
  assign push        = cmd_valid_i && cmd_ready_o;
  assign head        = q_mem[rp_q[AW-1:0]];
  assign empty_o     = wp_q == rp_q && state_q == StIdle;

  always_ff @(posedge clk_i) begin
    if (push) q_mem[wp_q[AW-1:0]] <= cmd_i;
  end

  // (only the kind and the byte range of a command matter here)
  /* verilator lint_off UNUSEDSIGNAL */
  function automatic logic overlaps(wrq_cmd_t c, logic [63:0] a, logic [12:0] l);
    return c.kind != WrqRelease && a < c.addr + 64'(c.len) && c.addr < a + 64'(l);
  endfunction
  /* verilator lint_on UNUSEDSIGNAL */

  always_comb begin
    hazard_o = chk_i && state_q != StIdle && overlaps(cur_q, chk_addr_i, chk_len_i);
    for (int unsigned i = 0; i < Depth && chk_i; i++) begin
      // entry i holds a command when it is among the wp - rp entries from rp on
      if ((AW + 1)'(AW'(AW'(i) - rp_q[AW-1:0])) < (wp_q - rp_q) &&
          overlaps(q_mem[i], chk_addr_i, chk_len_i)) begin
        hazard_o = 1'b1;
      end
    end
  end

  always_comb begin
    state_d = state_q;
    cur_d   = cur_q;
    k_d     = k_q;
    pop     = 1'b0;

    pl_rd_en_o    = 1'b0;
    pl_rd_addr_o  = cur_q.src + {3'd0, k_q + 7'd1, 6'd0};
    free_o        = 1'b0;
    free_words_o  = head.rel_words;

    dma_wr_valid_o = 1'b0;
    dma_wr_func_o  = cur_q.func;
    dma_wr_addr_o  = cur_q.addr;
    dma_wr_len_o   = cur_q.len;
    dma_wr_data_o  = (state_q == StImm) ? 512'(cur_q.data) : pl_rd_data_i;
    dma_wr_last_o  = 1'b0;
    msix_valid_o   = 1'b0;
    msix_func_o    = cur_q.msix_func;
    msix_vector_o  = cur_q.msix_vector;

    unique case (state_q)
      StIdle: begin
        if (wp_q != rp_q) begin
          pop   = 1'b1;
          cur_d = head;
          k_d   = '0;
          unique case (head.kind)
            WrqPayload: begin
              pl_rd_en_o   = 1'b1;       // beat 0 into the read register
              pl_rd_addr_o = head.src;
              state_d      = StCopy;
            end
            WrqImm:     state_d = StImm;
            default:    free_o  = 1'b1;  // WrqRelease
          endcase
        end
      end

      StCopy: begin
        dma_wr_valid_o = 1'b1;
        dma_wr_last_o  = {k_q, 6'd0} + 13'd64 >= cur_q.len;
        if (dma_wr_ready_i) begin
          if (dma_wr_last_o) begin
            state_d = StIdle;
          end else begin
            pl_rd_en_o = 1'b1;           // the next beat, while this one is written
            k_d        = k_q + 7'd1;
          end
        end
      end

      StImm: begin
        dma_wr_valid_o = 1'b1;
        dma_wr_last_o  = 1'b1;
        if (dma_wr_ready_i) begin
          msix_valid_o = cur_q.msix;
          state_d      = StIdle;
        end
      end

      default: state_d = StIdle;
    endcase

    wp_d = wp_q + (AW + 1)'(push);
    rp_d = rp_q + (AW + 1)'(pop);
  end

  always_ff @(posedge clk_i) begin
    if (!rst_ni) begin
      state_q <= StIdle;
      cur_q   <= '0;
      k_q     <= '0;
      wp_q    <= '0;
      rp_q    <= '0;
    end else begin
      state_q <= state_d;
      cur_q   <= cur_d;
      k_q     <= k_d;
      wp_q    <= wp_d;
      rp_q    <= rp_d;
    end
  end

endmodule
