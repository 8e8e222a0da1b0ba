// SPDX-License-Identifier: Apache-2.0
//
// PCI configuration space of the PF and its VFs (docs/sriov.md, slice A; offsets and fields in
// spec/rnic.toml `cfg` and `sriov`).
//
// PF: type-0 header with a 64-bit BAR0 (size probing), a PCI Express capability at PCIE_CAP and the
// SR-IOV extended capability at EXT_CAP. VF n (1 <= n <= NumVFs, while VF Enable is set) answers at
// function n: vendor/device ID read 0xFFFF, BARs read 0 (they live in the PF's SR-IOV capability),
// Bus Master Enable is its only writable bit. Requests to functions that do not exist read
// all-ones and ignore writes. Accesses are whole dwords; reads are combinational (the MMIO block
// registers the response).
//
// Function Level Reset (docs/architecture.md section 4, Function Level Reset): a VF advertises FLR
// in Device Capabilities; writing Initiate FLR in its Device Control starts a teardown of it (its
// Bus Master Enable clears), and clearing VF Enable starts one for every VF 1..NumVFs. A function
// with a teardown pending is "in reset" (rst_o: Device Status Transactions Pending reads 1, its
// memory requests are Unsupported Requests) until the engine's FLR_DONE task ends it
// (done_i/done_func_i, in that task's trace cycle, so a read in that cycle already sees it done,
// as the model does). The PF's Transactions Pending reads 1 while any VF teardown is pending.
module rnic_cfg
  import rnic_reg_pkg::*;
#(
  parameter int unsigned NumVf = 8
) (
  input  logic        clk_i,
  input  logic        rst_ni,

  input  logic        req_i,      // one access this cycle
  input  logic        we_i,
  input  logic [7:0]  func_i,
  input  logic [9:0]  dw_i,       // dword index (byte offset >> 2)
  input  logic [31:0] wdata_i,
  output logic [31:0] rdata_o,

  output logic        pf_mem_en_o,    // PF Memory Space Enable
  output logic        pf_master_o,    // PF Bus Master Enable
  output logic        vf_en_o,        // VF Enable
  output logic        vf_mem_en_o,    // VF MSE
  output logic [15:0] num_vfs_o,

  input  logic        done_i,         // the FLR_DONE task of function done_func_i starts
  input  logic [7:0]  done_func_i,
  output logic [NumVf:0] rst_o,       // function in reset (teardown pending); bit 0 is 0
  output logic [NumVf:0] pend_o       // the same, registered (not yet cleared by done_i)
);

  localparam logic [31:0] Bar0Mask = ~(32'(Bar0Size) - 32'd1);  // writable address bits

  // Dword addresses of the registers.
  localparam logic [9:0] DwId      = 10'(CfgVendorId >> 2);
  localparam logic [9:0] DwCmd     = 10'(CfgCommand >> 2);
  localparam logic [9:0] DwClass   = 10'(CfgRevision >> 2);
  localparam logic [9:0] DwBar0    = 10'(CfgBar0 >> 2);
  localparam logic [9:0] DwBar1    = 10'(CfgBar1 >> 2);
  localparam logic [9:0] DwCapPtr  = 10'(CfgCapPtr >> 2);
  localparam logic [9:0] DwExp     = 10'(CfgPcieCap >> 2);
  localparam logic [9:0] DwDevCap  = 10'((CfgPcieCap + CfgPcieDevcap) >> 2);
  localparam logic [9:0] DwDevCtl  = 10'((CfgPcieCap + CfgPcieDevctl) >> 2);
  localparam logic [9:0] DwExt     = 10'(CfgExtCap >> 2);
  localparam logic [9:0] DwSrCaps  = 10'((CfgExtCap + SriovCaps) >> 2);
  localparam logic [9:0] DwSrCtrl  = 10'((CfgExtCap + SriovCtrl) >> 2);
  localparam logic [9:0] DwSrVfs   = 10'((CfgExtCap + SriovInitialVfs) >> 2);
  localparam logic [9:0] DwSrNum   = 10'((CfgExtCap + SriovNumVfs) >> 2);
  localparam logic [9:0] DwSrOff   = 10'((CfgExtCap + SriovVfOffset) >> 2);
  localparam logic [9:0] DwSrDev   = 10'((CfgExtCap + SriovVfDeviceId - 2) >> 2);
  localparam logic [9:0] DwSrSupp  = 10'((CfgExtCap + SriovSuppPageSizes) >> 2);
  localparam logic [9:0] DwSrSys   = 10'((CfgExtCap + SriovSysPageSize) >> 2);
  localparam logic [9:0] DwSrBar0  = 10'((CfgExtCap + SriovVfBar0) >> 2);
  localparam logic [9:0] DwSrBar1  = 10'((CfgExtCap + SriovVfBar1) >> 2);

  localparam logic [15:0] CtrlWritable = 16'(SriovCtrlVfe | SriovCtrlVfMse | SriovCtrlAri);

  logic [15:0]      cmd_q, cmd_d;          // PF command register (MEM, MASTER)
  logic [31:0]      bar0_q, bar0_d, bar1_q, bar1_d;
  logic [15:0]      devctl_q, devctl_d;
  logic [15:0]      ctrl_q, ctrl_d;        // SR-IOV control
  logic [15:0]      numvfs_q, numvfs_d;
  logic [31:0]      sysps_q, sysps_d;
  logic [31:0]      vbar0_q, vbar0_d, vbar1_q, vbar1_d;
  logic [NumVf:0]   vf_master_q, vf_master_d;   // bit 0 unused (the PF has cmd_q)
  logic [NumVf:0]   tp_q, tp_d;                 // teardown pending (bit 0 unused)
  logic [NumVf:0]   tp_eff;                     // tp_q without the one ending this cycle
  logic             tp_any;                     // some VF is in reset (the PF's Transactions Pending)

  logic is_pf, is_vf;
  localparam int unsigned VfIdxW = $clog2(NumVf+1);
  logic [VfIdxW-1:0] vf_idx;
  assign vf_idx = VfIdxW'(func_i);
  assign is_pf = func_i == 8'd0;
  assign is_vf = ctrl_q[0] && func_i != 8'd0 && 16'(func_i) <= numvfs_q &&
                 32'(func_i) <= NumVf;

  // The PCI Express capability: version 2, endpoint, last in the list. VFs support FLR; the PF
  // does not.
  localparam logic [31:0] ExpHdr = {16'h0002, 8'h00, 8'(CfgCapIdExp)};
  localparam logic [31:0] DevCap = 32'h0;
  localparam logic [31:0] VfDevCap = 32'(CfgDevcapFlr);
  localparam logic [31:0] DevStaTp = 32'(CfgDevstaTp) << 16;   // in the Device Control dword

  always_comb begin
    tp_eff = tp_q;
    if (done_i && 32'(done_func_i) <= NumVf) tp_eff[VfIdxW'(done_func_i)] = 1'b0;
    tp_eff[0] = 1'b0;
    tp_any    = tp_eff != '0;
  end
  localparam logic [31:0] StatusCmdRo = {16'(CfgStatusCapList), 16'h0};

  always_comb begin
    rdata_o = '1;
    if (is_pf) begin
      rdata_o = '0;
      unique case (dw_i)
        DwId:     rdata_o = {16'(PfDeviceId), 16'(PciVendorId)};
        DwCmd:    rdata_o = StatusCmdRo | 32'(cmd_q);
        DwClass:  rdata_o = {24'(PciClass), 8'h00};
        DwBar0:   rdata_o = (bar0_q & Bar0Mask) | 32'(CfgBarMem64);
        DwBar1:   rdata_o = bar1_q;
        DwCapPtr: rdata_o = 32'(CfgPcieCap);
        DwExp:    rdata_o = ExpHdr;
        DwDevCap: rdata_o = DevCap;
        DwDevCtl: rdata_o = 32'(devctl_q) | (tp_any ? DevStaTp : 32'h0);
        DwExt:    rdata_o = {12'h000, 4'h1, 16'(CfgExtCapIdSriov)};
        DwSrCaps: rdata_o = '0;
        DwSrCtrl: rdata_o = 32'(ctrl_q);
        DwSrVfs:  rdata_o = {16'(NumVf), 16'(NumVf)};
        DwSrNum:  rdata_o = 32'(numvfs_q);
        DwSrOff:  rdata_o = {16'(SriovStride), 16'(SriovFirstVfOffset)};
        DwSrDev:  rdata_o = {16'(VfDeviceId), 16'h0};
        DwSrSupp: rdata_o = 32'(SriovPageSizes);
        DwSrSys:  rdata_o = sysps_q;
        DwSrBar0: rdata_o = (vbar0_q & Bar0Mask) | 32'(CfgBarMem64);
        DwSrBar1: rdata_o = vbar1_q;
        default:  rdata_o = '0;
      endcase
    end else if (is_vf) begin
      rdata_o = '0;
      unique case (dw_i)
        DwId:     rdata_o = '1;
        DwCmd:    rdata_o = StatusCmdRo | (vf_master_q[vf_idx] ? 32'(CfgCmdMaster) : 32'h0);
        DwClass:  rdata_o = {24'(PciClass), 8'h00};
        DwCapPtr: rdata_o = 32'(CfgPcieCap);
        DwExp:    rdata_o = ExpHdr;
        DwDevCap: rdata_o = VfDevCap;
        DwDevCtl: rdata_o = tp_eff[vf_idx] ? DevStaTp : 32'h0;
        default:  rdata_o = '0;
      endcase
    end
  end

  always_comb begin
    cmd_d       = cmd_q;
    bar0_d      = bar0_q;
    bar1_d      = bar1_q;
    devctl_d    = devctl_q;
    ctrl_d      = ctrl_q;
    numvfs_d    = numvfs_q;
    sysps_d     = sysps_q;
    vbar0_d     = vbar0_q;
    vbar1_d     = vbar1_q;
    vf_master_d = vf_master_q;
    tp_d        = tp_eff;
    if (req_i && we_i && is_pf) begin
      unique case (dw_i)
        DwCmd:    cmd_d = wdata_i[15:0] & 16'(CfgCmdMem | CfgCmdMaster);
        DwBar0:   bar0_d = wdata_i & Bar0Mask;
        DwBar1:   bar1_d = wdata_i;
        DwDevCtl: devctl_d = wdata_i[15:0] & 16'h7FFF;  // bit 15 (Initiate FLR) reads 0
        DwSrCtrl: begin
          ctrl_d = wdata_i[15:0] & CtrlWritable;
          // VFs disappear with VF Enable: their command registers reset, and clearing it starts
          // the teardown of every VF.
          if (!ctrl_d[0]) vf_master_d = '0;
          if (ctrl_q[0] && !ctrl_d[0]) begin
            for (int unsigned f = 1; f <= NumVf; f++) begin
              if (16'(f) <= numvfs_q) tp_d[f] = 1'b1;
            end
          end
        end
        // NumVFs and the system page size only change while VF Enable is clear; a NumVFs above
        // TotalVFs is ignored.
        DwSrNum:  if (!ctrl_q[0] && wdata_i[15:0] <= 16'(NumVf)) numvfs_d = wdata_i[15:0];
        DwSrSys:  if (!ctrl_q[0]) sysps_d = wdata_i;
        DwSrBar0: vbar0_d = wdata_i & Bar0Mask;
        DwSrBar1: vbar1_d = wdata_i;
        default: ;
      endcase
    end else if (req_i && we_i && is_vf && dw_i == DwCmd) begin
      vf_master_d[vf_idx] = (wdata_i & 32'(CfgCmdMaster)) != 32'h0;
    end else if (req_i && we_i && is_vf && dw_i == DwDevCtl && (wdata_i & 32'(CfgDevctlFlr)) != 32'h0) begin
      // Initiate FLR: the VF's configuration state resets and its teardown starts.
      vf_master_d[vf_idx] = 1'b0;
      tp_d[vf_idx]        = 1'b1;
    end
  end

  always_ff @(posedge clk_i) begin
    if (!rst_ni) begin
      cmd_q       <= '0;
      bar0_q      <= '0;
      bar1_q      <= '0;
      devctl_q    <= '0;
      ctrl_q      <= '0;
      numvfs_q    <= '0;
      sysps_q     <= 32'd1;
      vbar0_q     <= '0;
      vbar1_q     <= '0;
      vf_master_q <= '0;
      tp_q        <= '0;
    end else begin
      cmd_q       <= cmd_d;
      bar0_q      <= bar0_d;
      bar1_q      <= bar1_d;
      devctl_q    <= devctl_d;
      ctrl_q      <= ctrl_d;
      numvfs_q    <= numvfs_d;
      sysps_q     <= sysps_d;
      vbar0_q     <= vbar0_d;
      vbar1_q     <= vbar1_d;
      vf_master_q <= vf_master_d;
      tp_q        <= tp_d;
    end
  end

  assign pf_mem_en_o = cmd_q[1];
  assign pf_master_o = cmd_q[2];
  assign vf_en_o     = ctrl_q[0];
  assign vf_mem_en_o = ctrl_q[3];
  assign num_vfs_o   = numvfs_q;
  assign rst_o       = tp_eff;
  assign pend_o      = {tp_q[NumVf:1], 1'b0};

endmodule
