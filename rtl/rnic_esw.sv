// SPDX-License-Identifier: Apache-2.0
//
// Embedded switch (docs/architecture.md section 4b): the virtual bridge between the functions of
// this NIC and the uplink port.
//
// Egress: a frame whose destination MAC is the MAC of a function that exists here (func_on_i,
// non-zero MAC) is looped back into the receive framer instead of leaving on the uplink; every
// other frame goes to the uplink. Ingress: the receive framer takes frames from the uplink and
// from the loop, a whole frame at a time; at a frame boundary a waiting looped frame goes first.
//
// Deadlock freedom: the engine that emits a looped frame is the only consumer of the receive
// framer, so a looped frame must never wait for the framer to drain. It starts only when the
// framer has room for a whole frame (rf_room_i) and no uplink frame is half way in; then it
// streams without stalling. Otherwise it is dropped whole and counted (drop_o, counter
// ESW_DROP, reported to the lockstep checker as a choice the model cannot predict); RC
// retransmission recovers. The responder sends at most one frame per task (section 9a), and
// receive tasks go before transmit tasks, so the framer rarely holds more than a frame or two.
module rnic_esw #(
  parameter int unsigned NumFunc = 1,
  parameter int unsigned DataW   = 512
) (
  input  logic                     clk_i,
  input  logic                     rst_ni,

  input  logic [NumFunc-1:0][47:0] func_mac_i,   // [47:40] is the first byte on the wire
  input  logic [NumFunc-1:0]       func_on_i,

  // egress of the NIC (after the spoof filter)
  input  logic                     eg_tvalid_i,
  output logic                     eg_tready_o,
  input  logic [DataW-1:0]         eg_tdata_i,
  input  logic [DataW/8-1:0]       eg_tkeep_i,
  input  logic                     eg_tlast_i,

  // uplink transmit
  output logic                     tx_tvalid_o,
  input  logic                     tx_tready_i,
  output logic [DataW-1:0]         tx_tdata_o,
  output logic [DataW/8-1:0]       tx_tkeep_o,
  output logic                     tx_tlast_o,

  // uplink receive
  input  logic                     rx_tvalid_i,
  output logic                     rx_tready_o,
  input  logic [DataW-1:0]         rx_tdata_i,
  input  logic [DataW/8-1:0]       rx_tkeep_i,
  input  logic                     rx_tlast_i,

  // receive framer
  output logic                     rf_tvalid_o,
  input  logic                     rf_tready_i,
  output logic [DataW-1:0]         rf_tdata_o,
  output logic [DataW/8-1:0]       rf_tkeep_o,
  output logic                     rf_tlast_o,
  input  logic                     rf_room_i,    // a whole frame fits now, at a frame boundary

  output logic                     loop_o,       // the beat on rf_* comes from the loop
  output logic                     drop_o        // a looped frame is dropped (first beat)
);

  typedef enum logic [1:0] {
    EgIdle,   // between frames: the next first beat decides
    EgUp,     // a frame to the uplink
    EgLoop,   // a frame into the receive framer
    EgDrop    // a looped frame without room: consumed
  } eg_state_e;

  eg_state_e eg_q, eg_d;
  logic      up_busy_q, up_busy_d;   // an uplink frame is half way into the receive framer

  logic [47:0] dmac;
  logic        local_dst;
  logic        loop_start, drop_start, loop_sel;

  // destination MAC: bytes 0..5 of the first beat, byte 0 in bits 7:0
  for (genvar b = 0; b < 6; b++) begin : g_dmac
    assign dmac[47 - 8 * b -: 8] = eg_tdata_i[8 * b +: 8];
  end

  always_comb begin
    local_dst = 1'b0;
    for (int unsigned f = 0; f < NumFunc; f++) begin
      if (func_on_i[f] && func_mac_i[f] != 48'd0 && func_mac_i[f] == dmac) local_dst = 1'b1;
    end
  end

  // One assign per signal: the ready/valid paths through here must not look like a loop.
  assign loop_start = eg_q == EgIdle && eg_tvalid_i && local_dst && !up_busy_q && rf_room_i;
  // An uplink frame half way in is waited for while it streams, but if the framer stalls it (a
  // full buffer that only the engine can free) waiting could deadlock just like waiting for
  // room, so that is a drop too.
  assign drop_start = eg_q == EgIdle && eg_tvalid_i && local_dst &&
                      (up_busy_q ? !rf_tready_i : !rf_room_i);
  assign loop_sel   = loop_start || eg_q == EgLoop;

  // uplink transmit
  assign tx_tvalid_o = eg_tvalid_i && (eg_q == EgUp || (eg_q == EgIdle && !local_dst));
  assign tx_tdata_o  = eg_tdata_i;
  assign tx_tkeep_o  = eg_tkeep_i;
  assign tx_tlast_o  = eg_tlast_i;

  // receive framer: the loop, else the uplink
  assign rf_tvalid_o = loop_sel ? eg_tvalid_i : rx_tvalid_i;
  assign rf_tdata_o  = loop_sel ? eg_tdata_i : rx_tdata_i;
  assign rf_tkeep_o  = loop_sel ? eg_tkeep_i : rx_tkeep_i;
  assign rf_tlast_o  = loop_sel ? eg_tlast_i : rx_tlast_i;
  assign rx_tready_o = rf_tready_i && !loop_sel;
  assign loop_o      = loop_sel && eg_tvalid_i && rf_tready_i;
  assign drop_o      = drop_start;

  always_comb begin
    unique case (eg_q)
      // (ready does not depend on valid: the framer's valid depends on its ready)
      EgIdle:  eg_tready_o = !local_dst ? tx_tready_i :
                             up_busy_q ? !rf_tready_i : (!rf_room_i || rf_tready_i);
      EgUp:    eg_tready_o = tx_tready_i;
      EgLoop:  eg_tready_o = rf_tready_i;
      default: eg_tready_o = 1'b1;   // EgDrop
    endcase
  end

  always_comb begin
    eg_d = eg_q;
    if (eg_tvalid_i && eg_tready_o) begin
      if (eg_tlast_i) begin
        eg_d = EgIdle;
      end else if (eg_q == EgIdle) begin
        eg_d = !local_dst ? EgUp : loop_start ? EgLoop : EgDrop;
      end
    end
    up_busy_d = up_busy_q;
    if (rx_tvalid_i && rx_tready_o) up_busy_d = !rx_tlast_i;
  end

  always_ff @(posedge clk_i) begin
    if (!rst_ni) begin
      eg_q      <= EgIdle;
      up_busy_q <= 1'b0;
    end else begin
      eg_q      <= eg_d;
      up_busy_q <= up_busy_d;
    end
  end

endmodule
