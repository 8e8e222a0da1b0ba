// SPDX-License-Identifier: Apache-2.0
//
// Smoke test of the RNIC core (rnic_top) on its own: C++ host memory and DMA responder, MMIO
// driver, and the transmit stream looped back into the receive stream (both QPs on this NIC). The
// QPs address a peer MAC (kPeerMac) so that frames leave on the uplink instead of through the
// embedded switch, and the loop rewrites the destination MAC to the port's (outside the ICRC). It runs admin commands (good and bad), a SEND/RECV, an RDMA WRITE, an
// RDMA READ and a FETCH_ADD, and checks the bytes moved and the CQEs.
//
// Build: make -C rtl/tb_core   (Verilator into rtl/tb_core/obj_dir)

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <vector>

#include "Vrnic_top.h"
#include "verilated.h"
#include "rnic_regs.h"

namespace {

// ---- constants: generated from spec/rnic.toml (testbench/csrc/rnic_regs.h), never typed here
namespace R = rnic_regs;
constexpr uint32_t kRegDevId = R::reg::DEV_ID, kRegDevCaps = R::reg::DEV_CAPS,
                   kRegCmdArg0 = R::reg::CMD_ARG0, kRegCmdOp = R::reg::CMD_OP,
                   kRegCmdStatus = R::reg::CMD_STATUS, kRegCmdOut0 = R::reg::CMD_OUT0,
                   kRegCmdOut1 = R::reg::CMD_OUT1, kRegCounters = R::reg::COUNTERS;
constexpr uint64_t kMac = 0x02aabbccdd01ull;
constexpr uint64_t kPeerMac = 0x02aabbccdd02ull;
constexpr uint32_t kDbQp = uint32_t(R::params::DB_QP_BASE), kDbCq = uint32_t(R::params::DB_CQ_BASE);
enum : uint8_t {
  CmdNop = R::cmd::NOP, CmdSetPort = R::cmd::SET_PORT, CmdCreateCq = R::cmd::CREATE_CQ,
  CmdAllocPd = R::cmd::ALLOC_PD, CmdWriteMtt = R::cmd::WRITE_MTT, CmdRegMr = R::cmd::REG_MR,
  CmdCreateQp = R::cmd::CREATE_QP, CmdModifyQp = R::cmd::MODIFY_QP, CmdQueryQp = R::cmd::QUERY_QP
};
enum : uint32_t {
  AttrState = R::qp_attr::STATE, AttrAccess = R::qp_attr::ACCESS_FLAGS,
  AttrPkey = R::qp_attr::PKEY_INDEX, AttrPort = R::qp_attr::PORT, AttrAv = R::qp_attr::AV,
  AttrPathMtu = R::qp_attr::PATH_MTU, AttrTimeout = R::qp_attr::TIMEOUT,
  AttrRetry = R::qp_attr::RETRY_CNT, AttrRnrRetry = R::qp_attr::RNR_RETRY,
  AttrRqPsn = R::qp_attr::RQ_PSN, AttrMaxQpRd = R::qp_attr::MAX_QP_RD_ATOMIC,
  AttrMinRnr = R::qp_attr::MIN_RNR_TIMER, AttrSqPsn = R::qp_attr::SQ_PSN,
  AttrMaxDestRd = R::qp_attr::MAX_DEST_RD_ATOMIC, AttrDestQpn = R::qp_attr::DEST_QPN
};

// ---- host memory: one flat region at kHostBase
constexpr uint64_t kHostBase = 0x100000;
constexpr size_t kHostSize = 1 << 20;
std::vector<uint8_t> host(kHostSize);

uint8_t *hp(uint64_t a) {
  if (a < kHostBase || a >= kHostBase + kHostSize) {
    fprintf(stderr, "DMA outside host memory: %#llx\n", (unsigned long long)a);
    exit(1);
  }
  return &host[a - kHostBase];
}
void put(uint64_t a, uint64_t v, int n) {
  for (int i = 0; i < n; i++) hp(a)[i] = uint8_t(v >> (8 * i));
}
uint64_t get(uint64_t a, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++) v |= uint64_t(hp(a)[i]) << (8 * i);
  return v;
}

// set a bit field in a little-endian image
void setf(uint8_t *img, int lsb, int width, uint64_t v) {
  for (int i = 0; i < width; i++) {
    int b = lsb + i;
    uint8_t m = uint8_t(1u << (b % 8));
    if ((v >> i) & 1) img[b / 8] |= m; else img[b / 8] &= uint8_t(~m);
  }
}

void setf(uint8_t *img, R::Field f, uint64_t v) { setf(img, int(f.bit), int(f.width), v); }
// Write a generated layout field of the structure at host address a.
void putf(uint64_t a, R::Field f, uint64_t v) { setf(hp(a), f, v); }
// SGE n of a WQE sits 16 bytes after SGE n-1 (the spec lists them that way).
constexpr uint32_t kSgeStride = R::send_wqe::SGE1_ADDR.bit / 8 - R::send_wqe::SGE0_ADDR.bit / 8;
static_assert(kSgeStride == R::recv_wqe::SGE1_ADDR.bit / 8 - R::recv_wqe::SGE0_ADDR.bit / 8, "SGE stride");
// Read a generated layout field of the structure at host address a.
uint64_t getf(uint64_t a, R::Field f) {
  uint64_t v = 0;
  for (uint32_t i = 0; i < f.width; i++) {
    uint32_t b = f.bit + i;
    v |= uint64_t((hp(a + b / 8)[0] >> (b % 8)) & 1) << i;
  }
  return v;
}

std::unique_ptr<VerilatedContext> ctx;
std::unique_ptr<Vrnic_top> top;
uint64_t cycles = 0;
int errors = 0;

#define CHECK(c, ...)                                   \
  do {                                                  \
    if (!(c)) {                                         \
      errors++;                                         \
      printf("FAIL %s:%d: ", __FILE__, __LINE__);       \
      printf(__VA_ARGS__);                              \
      printf("\n");                                     \
    }                                                   \
  } while (0)

// ---- DMA responder state
struct RdReq { uint8_t tag; uint64_t addr; uint32_t len; uint32_t sent; };
std::deque<RdReq> rd_q;
uint64_t wr_off = 0;   // bytes of the current write burst done
int n_wr_bursts = 0, n_msix = 0, n_frames = 0, n_traces = 0;
std::vector<std::pair<uint64_t, uint32_t>> wr_log;

// Loopback through a frame queue, so that the test can drop or duplicate a frame.
std::vector<uint8_t> tx_cur;
std::deque<std::vector<uint8_t>> link_q;
size_t rx_pos = 0;
int tx_frame_no = 0, drop_frame_no = -1, dup_frame_no = -1;
// TB_STALL=1: random back-pressure on every handshake and gaps in completions and rx beats
bool stall = false;
uint32_t lfsr = 0x1234567;
bool coin() {
  lfsr ^= lfsr << 13; lfsr ^= lfsr >> 17; lfsr ^= lfsr << 5;
  return !stall || (lfsr & 3) != 0;
}

void set_wide(VlWide<16> &w, const uint8_t *b, int n) {
  for (int i = 0; i < 16; i++) w[i] = 0;
  for (int i = 0; i < n; i++) w[i / 4] |= uint32_t(b[i]) << (8 * (i % 4));
}
uint8_t wide_byte(const VlWide<16> &w, int i) { return uint8_t(w[i / 4] >> (8 * (i % 4))); }

// One clock cycle: inputs depending on outputs are computed with clk low, then the rising edge.
void tick() {
  top->clk_i = 0;
  top->eval();
  top->tx_tready_i = coin();
  top->rx_tvalid_i = 0;
  if (!link_q.empty() && coin()) {
    const std::vector<uint8_t> &f = link_q.front();
    size_t n = std::min<size_t>(64, f.size() - rx_pos);
    set_wide(top->rx_tdata_i, f.data() + rx_pos, int(n));
    top->rx_tkeep_i = n == 64 ? ~0ull : ((1ull << n) - 1);
    top->rx_tlast_i = rx_pos + n == f.size();
    top->rx_tvalid_i = 1;
  }
  // DMA read completions: one beat per cycle of the oldest request
  top->dma_rd_cpl_valid_i = 0;
  if (!rd_q.empty() && coin()) {
    RdReq &r = rd_q.front();
    uint32_t n = std::min<uint32_t>(64, r.len - r.sent);
    set_wide(top->dma_rd_cpl_data_i, hp(r.addr + r.sent), n);
    top->dma_rd_cpl_valid_i = 1;
    top->dma_rd_cpl_tag_i = r.tag;
    top->dma_rd_cpl_last_i = (r.sent + n == r.len);
  }
  top->dma_rd_req_ready_i = coin();
  top->dma_wr_ready_i = coin();
  top->eval();

  // sample handshakes before the edge
  bool rd_req = top->dma_rd_req_valid_o && top->dma_rd_req_ready_i;
  RdReq nr{top->dma_rd_req_tag_o, top->dma_rd_req_addr_o, top->dma_rd_req_len_o, 0};
  if (top->dma_rd_cpl_valid_i) {
    RdReq &r = rd_q.front();
    r.sent += std::min<uint32_t>(64, r.len - r.sent);
    if (r.sent == r.len) rd_q.pop_front();
  }
  if (rd_req) rd_q.push_back(nr);
  if (top->dma_wr_valid_o && top->dma_wr_ready_i) {
    uint64_t a = top->dma_wr_addr_o;
    uint32_t len = top->dma_wr_len_o;
    uint32_t n = std::min<uint64_t>(64, len - wr_off);
    for (uint32_t i = 0; i < n; i++) hp(a + wr_off)[i] = wide_byte(top->dma_wr_data_o, i);
    wr_off += n;
    if (top->dma_wr_last_o) {
      CHECK(wr_off == len, "write burst of %u bytes ended after %llu", len,
            (unsigned long long)wr_off);
      wr_log.push_back({a, len});
      wr_off = 0;
      n_wr_bursts++;
    }
  }
  if (top->msix_valid_o) n_msix++;
  if (top->rx_tvalid_i && top->rx_tready_o) {
    rx_pos += 64;
    if (top->rx_tlast_i) {
      link_q.pop_front();
      rx_pos = 0;
    }
  }
  if (top->tx_tvalid_o && top->tx_tready_i) {
    for (int i = 0; i < 64; i++)
      if ((top->tx_tkeep_o >> i) & 1) tx_cur.push_back(wide_byte(top->tx_tdata_o, i));
    if (top->tx_tlast_o) {
      n_frames++;
      for (int i = 0; i < 6; i++) tx_cur[i] = uint8_t(kMac >> (40 - 8 * i));
      if (tx_frame_no != drop_frame_no) link_q.push_back(tx_cur);
      if (tx_frame_no == dup_frame_no) link_q.push_back(tx_cur);
      tx_frame_no++;
      tx_cur.clear();
    }
  }
  if (top->trace_valid_o) n_traces++;

  top->clk_i = 1;
  top->eval();
  cycles++;
  if (cycles > 2000000) {
    printf("timeout\n");
    exit(1);
  }
}

void mmio_write(uint32_t addr, uint64_t data, uint8_t func = 0) {
  top->mmio_req_valid_i = 1;
  top->mmio_req_write_i = 1;
  top->mmio_req_func_i = func;
  top->mmio_req_addr_i = addr;
  top->mmio_req_wdata_i = data;
  for (;;) {
    top->clk_i = 0;
    top->eval();
    bool acc = top->mmio_req_ready_o;
    tick();
    if (acc) break;
  }
  top->mmio_req_valid_i = 0;
}

uint64_t mmio_read(uint32_t addr, uint8_t func = 0) {
  top->mmio_req_valid_i = 1;
  top->mmio_req_write_i = 0;
  top->mmio_req_func_i = func;
  top->mmio_req_addr_i = addr;
  for (;;) {
    top->clk_i = 0;
    top->eval();
    bool acc = top->mmio_req_ready_o;
    tick();
    if (acc) break;
  }
  top->mmio_req_valid_i = 0;
  for (;;) {
    top->clk_i = 0;
    top->eval();
    if (top->mmio_rsp_valid_o) {
      uint64_t v = top->mmio_rsp_rdata_o;
      tick();
      return v;
    }
    tick();
  }
}

// PCI configuration requests: the dword holding byte offset `off` of function `func`.
uint32_t cfg_read(uint8_t func, uint32_t off) {
  top->mmio_req_cfg_i = 1;
  const uint64_t v = mmio_read(off & ~3u, func);
  top->mmio_req_cfg_i = 0;
  return uint32_t(v);
}

void cfg_write(uint8_t func, uint32_t off, uint32_t v) {
  top->mmio_req_cfg_i = 1;
  mmio_write(off & ~3u, v, func);
  top->mmio_req_cfg_i = 0;
}

uint8_t cmd(uint8_t op, const uint8_t *img, uint64_t *out0 = nullptr, uint64_t *out1 = nullptr) {
  for (int i = 0; i < 6; i++) {
    uint64_t v;
    memcpy(&v, img + 8 * i, 8);
    mmio_write(kRegCmdArg0 + 8 * i, v);
  }
  mmio_write(kRegCmdOp, op);
  uint64_t st;
  while ((st = mmio_read(kRegCmdStatus)) == 0xff) {
  }
  if (out0) *out0 = mmio_read(kRegCmdOut0);
  if (out1) *out1 = mmio_read(kRegCmdOut1);
  return uint8_t(st);
}

uint64_t counter(int i) { return mmio_read(kRegCounters + 8 * i); }

// ---- host layout
constexpr uint64_t kCqSend = kHostBase + 0x0000;   // CQ 1: 16 x 32 bytes
constexpr uint64_t kCqRecv = kHostBase + 0x1000;   // CQ 2
constexpr uint64_t kMttTab = kHostBase + 0x2000;
constexpr uint64_t kSq2 = kHostBase + 0x3000;      // QP 2 SQ (16 x 128)
constexpr uint64_t kRq2 = kHostBase + 0x4000;
constexpr uint64_t kSq3 = kHostBase + 0x5000;
constexpr uint64_t kRq3 = kHostBase + 0x6000;
constexpr uint64_t kPages = kHostBase + 0x10000;   // MR pages (4 KiB each)
constexpr uint64_t kIova = 0x7f0000000000ull;      // MR iova
constexpr int kNPages = 8;

// MR page i lives at host page perm[i] (not contiguous, so transfers split at page ends)
const int perm[kNPages] = {3, 0, 6, 1, 7, 2, 5, 4};
uint64_t iova_to_host(uint64_t va) {
  uint64_t off = va - kIova;
  return kPages + uint64_t(perm[off >> 12]) * 4096 + (off & 4095);
}

uint8_t create_cq(uint32_t cqn, uint64_t base, int log_size, int vector) {
  uint8_t img[48] = {};
  setf(img, R::cmd_create_cq::CQN, cqn);
  setf(img, R::cmd_create_cq::BASE, base);
  setf(img, R::cmd_create_cq::LOG_SIZE, log_size);
  setf(img, R::cmd_create_cq::VECTOR, vector);
  return cmd(CmdCreateCq, img);
}
uint8_t idx_cmd(uint8_t op, uint32_t idx) {
  uint8_t img[48] = {};
  setf(img, R::cmd_index::INDEX, idx);
  return cmd(op, img);
}
uint8_t create_qp(uint32_t qpn, uint64_t sq, uint64_t rq, uint32_t pdn, uint32_t scq,
                  uint32_t rcq) {
  uint8_t img[48] = {};
  setf(img, R::cmd_create_qp::QPN, qpn);
  setf(img, R::cmd_create_qp::SQ_BASE, sq);
  setf(img, R::cmd_create_qp::RQ_BASE, rq);
  setf(img, R::cmd_create_qp::LOG_SQ_SIZE, 4);
  setf(img, R::cmd_create_qp::LOG_RQ_SIZE, 4);
  setf(img, R::cmd_create_qp::PDN, pdn);
  setf(img, R::cmd_create_qp::SEND_CQN, scq);
  setf(img, R::cmd_create_qp::RECV_CQN, rcq);
  return cmd(CmdCreateQp, img);
}
struct QpAttr {
  uint32_t mask = 0, state = 0, access = 0, path_mtu = 0, retry = 0, rnr = 0, timeout = 0,
           min_rnr = 0, max_rd = 0, max_dest_rd = 0, dest_qpn = 0, rq_psn = 0, sq_psn = 0,
           dest_ip = 0;
  uint64_t dest_mac = 0;
};
uint8_t modify_qp(uint32_t qpn, const QpAttr &a) {
  uint8_t img[48] = {};
  setf(img, R::cmd_qp_args::QPN, qpn);
  setf(img, R::cmd_qp_args::ATTR_MASK, a.mask);
  setf(img, R::cmd_qp_args::STATE, a.state);
  setf(img, R::cmd_qp_args::ACCESS, a.access);
  setf(img, R::cmd_qp_args::PATH_MTU, a.path_mtu);
  setf(img, R::cmd_qp_args::RETRY_CNT, a.retry);
  setf(img, R::cmd_qp_args::RNR_RETRY, a.rnr);
  setf(img, R::cmd_qp_args::TIMEOUT, a.timeout);
  setf(img, R::cmd_qp_args::MIN_RNR_TIMER, a.min_rnr);
  setf(img, R::cmd_qp_args::MAX_RD_ATOMIC, a.max_rd);
  setf(img, R::cmd_qp_args::MAX_DEST_RD_ATOMIC, a.max_dest_rd);
  setf(img, R::cmd_qp_args::DEST_QPN, a.dest_qpn);
  setf(img, R::cmd_qp_args::RQ_PSN, a.rq_psn);
  setf(img, R::cmd_qp_args::SQ_PSN, a.sq_psn);
  setf(img, R::cmd_qp_args::DEST_IP, a.dest_ip);
  setf(img, R::cmd_qp_args::DEST_MAC, a.dest_mac);
  return cmd(CmdModifyQp, img);
}

constexpr uint32_t kIp = 0x0a000001;

void bring_up(uint32_t qpn, uint32_t dest, uint32_t my_psn, uint32_t peer_psn, int rnr = 7) {
  QpAttr a;
  a.mask = AttrState | AttrPkey | AttrPort | AttrAccess;
  a.state = 1;
  a.access = 0xf;
  CHECK(modify_qp(qpn, a) == R::cmd_status::OK, "RESET->INIT");
  QpAttr r;
  r.mask = AttrState | AttrAv | AttrPathMtu | AttrDestQpn | AttrRqPsn | AttrMaxDestRd | AttrMinRnr;
  r.state = 2;
  r.dest_mac = kPeerMac;
  r.dest_ip = kIp;
  r.path_mtu = 1;  // 256 bytes: multi-packet messages with small buffers
  r.dest_qpn = dest;
  r.rq_psn = peer_psn;
  r.max_dest_rd = 4;
  r.min_rnr = 5;
  CHECK(modify_qp(qpn, r) == R::cmd_status::OK, "INIT->RTR");
  QpAttr s;
  s.mask = AttrState | AttrSqPsn | AttrMaxQpRd | AttrRetry | AttrRnrRetry | AttrTimeout;
  s.state = 3;
  s.sq_psn = my_psn;
  s.max_rd = 4;
  s.retry = 7;
  s.rnr = rnr;
  s.timeout = 14;
  CHECK(modify_qp(qpn, s) == R::cmd_status::OK, "RTR->RTS");
}

void send_wqe(uint64_t sq, int idx, uint8_t opcode, uint64_t wr_id, uint32_t imm,
              uint64_t raddr, uint32_t rkey, const std::vector<std::pair<uint64_t, uint32_t>> &sges,
              uint32_t lkey, uint64_t cmp_add = 0, uint64_t swap = 0) {
  uint64_t w = sq + 128 * idx;
  memset(hp(w), 0, 128);
  putf(w, R::send_wqe::WR_ID, wr_id);
  putf(w, R::send_wqe::OPCODE, opcode);
  putf(w, R::send_wqe::FLAGS, R::wqe_flag::SIGNALED);
  putf(w, R::send_wqe::NUM_SGE, sges.size());
  putf(w, R::send_wqe::IMM, imm);
  putf(w, R::send_wqe::REMOTE_ADDR, raddr);
  putf(w, R::send_wqe::RKEY, rkey);
  putf(w, R::send_wqe::COMPARE_ADD, cmp_add);
  putf(w, R::send_wqe::SWAP, swap);
  for (size_t i = 0; i < sges.size(); i++) {
    putf(w + kSgeStride * i, R::send_wqe::SGE0_ADDR, sges[i].first);
    putf(w + kSgeStride * i, R::send_wqe::SGE0_LEN, sges[i].second);
    putf(w + kSgeStride * i, R::send_wqe::SGE0_LKEY, lkey);
  }
}

struct Cqe {
  uint64_t wr_id;
  uint32_t byte_len, imm, qpn;
  uint8_t opcode, status, flags, owner;
  uint16_t wqe_idx;
};
Cqe read_cqe(uint64_t base, int i) {
  uint64_t a = base + 32 * i;
  Cqe c;
  c.wr_id = getf(a, R::cqe::WR_ID);
  c.byte_len = uint32_t(getf(a, R::cqe::BYTE_LEN));
  c.imm = uint32_t(getf(a, R::cqe::IMM));
  c.qpn = uint32_t(getf(a, R::cqe::QPN));
  c.opcode = uint8_t(getf(a, R::cqe::OPCODE));
  c.status = uint8_t(getf(a, R::cqe::STATUS));
  c.flags = uint8_t(getf(a, R::cqe::FLAGS));
  c.owner = uint8_t(getf(a, R::cqe::OWNER));
  c.wqe_idx = uint16_t(getf(a, R::cqe::WQE_IDX));
  return c;
}

// run until the CQE slot i of a CQ has the owner bit of the first pass
bool wait_cqe(uint64_t base, int i, int max_cycles = 200000) {
  for (int c = 0; c < max_cycles; c++) {
    if (getf(base + R::cqe::SIZE * i, R::cqe::OWNER)) return true;
    tick();
  }
  return false;
}

}  // namespace

int main(int argc, char **argv) {
  ctx = std::make_unique<VerilatedContext>();
  ctx->commandArgs(argc, argv);
  top = std::make_unique<Vrnic_top>(ctx.get());
  stall = getenv("TB_STALL") != nullptr;

  top->rst_ni = 0;
  for (int i = 0; i < 5; i++) tick();
  top->rst_ni = 1;

  // ---- identification
  CHECK(mmio_read(kRegDevId) == 0x11D1E0001ull, "DEV_ID");
  CHECK(mmio_read(kRegDevCaps) == 0x0400040004000400ull, "DEV_CAPS %llx",
        (unsigned long long)mmio_read(kRegDevCaps));
  printf("init + id reads done at cycle %llu\n", (unsigned long long)cycles);
  CHECK(mmio_read(kRegDevId, 1) == ~0ull, "func 1 read");
  CHECK(mmio_read(0x48) == 0, "unknown read");
  CHECK(counter(R::counter::MMIO_BAD) == 2, "MMIO_BAD = %llu", (unsigned long long)counter(R::counter::MMIO_BAD));

  // ---- admin commands
  uint8_t img[48] = {};
  setf(img, R::cmd_set_port::MAC, kMac);
  setf(img, R::cmd_set_port::IP, kIp);
  CHECK(cmd(CmdSetPort, img) == R::cmd_status::OK, "SET_PORT");
  memset(img, 0, sizeof img);
  CHECK(cmd(0x99, img) == R::cmd_status::BAD_OPCODE, "bad opcode");
  CHECK(cmd(CmdNop, img) == R::cmd_status::OK, "NOP");
  CHECK(create_cq(1, kCqSend, 4, 7) == R::cmd_status::OK, "CREATE_CQ 1");
  CHECK(create_cq(1, kCqSend, 4, 7) == R::cmd_status::BAD_STATE, "CREATE_CQ 1 again -> BAD_STATE");
  CHECK(create_cq(5000, kCqSend, 4, 7) == R::cmd_status::BAD_INDEX, "CREATE_CQ 5000 -> BAD_INDEX");
  CHECK(create_cq(3, kCqSend + 8, 4, 7) == R::cmd_status::BAD_PARAM, "CREATE_CQ misaligned -> BAD_PARAM");
  CHECK(create_cq(2, kCqRecv, 4, 8) == R::cmd_status::OK, "CREATE_CQ 2");
  CHECK(idx_cmd(CmdAllocPd, 1) == R::cmd_status::OK, "ALLOC_PD");
  CHECK(idx_cmd(CmdAllocPd, 1) == R::cmd_status::BAD_STATE, "ALLOC_PD again");
  CHECK(idx_cmd(CmdAllocPd, 4096) == R::cmd_status::BAD_INDEX, "ALLOC_PD range");

  // MTT: page addresses of the MR
  for (int i = 0; i < kNPages; i++) put(kMttTab + 8 * i, kPages + uint64_t(perm[i]) * 4096, 8);
  memset(img, 0, sizeof img);
  setf(img, R::cmd_write_mtt::START, 0);
  setf(img, R::cmd_write_mtt::COUNT, kNPages);
  setf(img, R::cmd_write_mtt::SRC, kMttTab);
  CHECK(cmd(CmdWriteMtt, img) == R::cmd_status::OK, "WRITE_MTT");
  setf(img, R::cmd_write_mtt::COUNT, 0);
  CHECK(cmd(CmdWriteMtt, img) == R::cmd_status::BAD_PARAM, "WRITE_MTT count 0");
  setf(img, R::cmd_write_mtt::START, 16380);
  setf(img, R::cmd_write_mtt::COUNT, 8);
  CHECK(cmd(CmdWriteMtt, img) == R::cmd_status::BAD_INDEX, "WRITE_MTT range");

  // REG_MR index 1, key 0x11 -> lkey = rkey = 0x111
  memset(img, 0, sizeof img);
  setf(img, R::cmd_reg_mr::INDEX, 1);
  setf(img, R::cmd_reg_mr::KEY, 0x11);
  setf(img, R::cmd_reg_mr::PDN, 1);
  setf(img, R::cmd_reg_mr::ACCESS, 0xf);
  setf(img, R::cmd_reg_mr::IOVA, kIova);
  setf(img, R::cmd_reg_mr::LENGTH, kNPages * 4096);
  setf(img, R::cmd_reg_mr::MTT_BASE, 0);
  setf(img, R::cmd_reg_mr::LOG_PAGE, 12);
  CHECK(cmd(CmdRegMr, img) == R::cmd_status::OK, "REG_MR");
  CHECK(cmd(CmdRegMr, img) == R::cmd_status::BAD_STATE, "REG_MR again");
  setf(img, R::cmd_reg_mr::INDEX, 2);
  setf(img, R::cmd_reg_mr::LOG_PAGE, 11);
  CHECK(cmd(CmdRegMr, img) == R::cmd_status::BAD_PARAM, "REG_MR log_page 11");
  const uint32_t key = 0x111;

  CHECK(create_qp(1, kSq2, kRq2, 1, 1, 2) == R::cmd_status::BAD_INDEX, "CREATE_QP 1 -> BAD_INDEX");
  CHECK(create_qp(2, kSq2, kRq2, 1, 1, 2) == R::cmd_status::OK, "CREATE_QP 2");
  CHECK(create_qp(2, kSq2, kRq2, 1, 1, 2) == R::cmd_status::BAD_STATE, "CREATE_QP 2 again");
  CHECK(create_qp(4, kSq2, kRq2, 1, 1, 9) == R::cmd_status::BAD_PARAM, "CREATE_QP bad cq");
  CHECK(create_qp(3, kSq3, kRq3, 1, 1, 2) == R::cmd_status::OK, "CREATE_QP 3");

  {
    QpAttr bad;
    bad.mask = AttrAccess;
    CHECK(modify_qp(2, bad) == R::cmd_status::BAD_PARAM, "MODIFY without STATE");
    bad.mask = AttrState;
    bad.state = 3;
    CHECK(modify_qp(2, bad) == R::cmd_status::BAD_STATE, "RESET->RTS");
    bad.mask = AttrState | AttrPkey;
    bad.state = 1;
    CHECK(modify_qp(2, bad) == R::cmd_status::BAD_PARAM, "RESET->INIT missing bits");
  }
  bring_up(2, 3, 1000, 5000);
  bring_up(3, 2, 5000, 1000);
  uint64_t o0, o1;
  memset(img, 0, sizeof img);
  setf(img, R::cmd_index::INDEX, 2);
  CHECK(cmd(CmdQueryQp, img, &o0, &o1) == R::cmd_status::OK, "QUERY_QP");
  CHECK(o0 == (3ull | (1000ull << 8) | (5000ull << 32)), "QUERY out0 %llx",
        (unsigned long long)o0);
  CHECK(o1 == 0, "QUERY out1 %llx", (unsigned long long)o1);
  printf("admin commands done at cycle %llu, %d errors\n", (unsigned long long)cycles, errors);

  // ---- SEND/RECV: 600 bytes from 2 SGEs (QP 2) into 2 SGEs (QP 3), mtu 256 -> 3 packets
  for (int i = 0; i < kNPages * 4096; i++) *hp(iova_to_host(kIova + i)) = uint8_t(i * 7 + 3);
  std::vector<uint8_t> src;
  const uint64_t s_a = kIova + 4000, s_b = kIova + 9000;  // crosses a page at 4096
  for (int i = 0; i < 300; i++) src.push_back(*hp(iova_to_host(s_a + i)));
  for (int i = 0; i < 300; i++) src.push_back(*hp(iova_to_host(s_b + i)));
  const uint64_t r_a = kIova + 3 * 4096 + 4000, r_b = kIova + 5 * 4096 + 100;
  // receive WQE at QP 3 RQ slot 0: SGE 200 bytes + 1000 bytes
  memset(hp(kRq3), 0, 64);
  putf(kRq3, R::recv_wqe::WR_ID, 0xabc);
  putf(kRq3, R::recv_wqe::NUM_SGE, 2);
  putf(kRq3, R::recv_wqe::SGE0_ADDR, r_a); putf(kRq3, R::recv_wqe::SGE0_LEN, 200); putf(kRq3, R::recv_wqe::SGE0_LKEY, key);
  putf(kRq3, R::recv_wqe::SGE1_ADDR, r_b); putf(kRq3, R::recv_wqe::SGE1_LEN, 1000); putf(kRq3, R::recv_wqe::SGE1_LKEY, key);
  mmio_write(kDbQp + (3 << 12) + 8, 1);
  send_wqe(kSq2, 0, 3 /*SEND_WITH_IMM*/, 0x1234, 0xdeadbeef, 0, 0, {{s_a, 300}, {s_b, 300}}, key);
  mmio_write(kDbQp + (2 << 12) + 0, 1);
  CHECK(wait_cqe(kCqRecv, 0), "recv CQE");
  CHECK(wait_cqe(kCqSend, 0), "send CQE");
  {
    Cqe r = read_cqe(kCqRecv, 0);
    CHECK(r.wr_id == 0xabc && r.byte_len == 600 && r.opcode == 0x80 && r.status == 0 &&
              r.imm == 0xdeadbeef && r.flags == 1 && r.qpn == 3 && r.wqe_idx == 0,
          "recv CQE fields: wr_id %llx len %u op %x st %x imm %x qpn %u",
          (unsigned long long)r.wr_id, r.byte_len, r.opcode, r.status, r.imm, r.qpn);
    Cqe s = read_cqe(kCqSend, 0);
    CHECK(s.wr_id == 0x1234 && s.byte_len == 600 && s.opcode == 0 && s.status == 0 && s.qpn == 2,
          "send CQE fields: wr_id %llx len %u op %x st %x qpn %u", (unsigned long long)s.wr_id,
          s.byte_len, s.opcode, s.status, s.qpn);
    int bad = 0;
    for (int i = 0; i < 600; i++) {
      uint64_t va = i < 200 ? r_a + i : r_b + (i - 200);
      if (*hp(iova_to_host(va)) != src[i]) bad++;
    }
    CHECK(bad == 0, "SEND payload: %d bytes differ", bad);
  }
  printf("SEND done at cycle %llu, %d errors, %d frames, %d write bursts\n",
         (unsigned long long)cycles, errors, n_frames, n_wr_bursts);

  // ---- RDMA WRITE 1000 bytes from QP 2 to QP 3's MR at kIova + 6*4096 - 300 (page split)
  {
    const uint64_t wsrc = kIova + 2 * 4096 + 10, wdst = kIova + 6 * 4096 - 300;
    std::vector<uint8_t> expect;
    for (int i = 0; i < 1000; i++) expect.push_back(*hp(iova_to_host(wsrc + i)));
    send_wqe(kSq2, 1, 0 /*RDMA_WRITE*/, 0x5555, 0, wdst, key, {{wsrc, 1000}}, key);
    mmio_write(kDbQp + (2 << 12) + 0, 2);
    CHECK(wait_cqe(kCqSend, 1), "write CQE");
    Cqe s = read_cqe(kCqSend, 1);
    CHECK(s.wr_id == 0x5555 && s.byte_len == 1000 && s.opcode == 1 && s.status == 0,
          "write CQE: wr_id %llx len %u op %x st %x", (unsigned long long)s.wr_id, s.byte_len,
          s.opcode, s.status);
    int bad = 0;
    for (int i = 0; i < 1000; i++)
      if (*hp(iova_to_host(wdst + i)) != expect[i]) bad++;
    CHECK(bad == 0, "WRITE payload: %d bytes differ", bad);
  }
  printf("WRITE done at cycle %llu, %d errors\n", (unsigned long long)cycles, errors);

  // ---- RDMA READ 700 bytes from QP 3's MR into QP 2's buffer
  {
    const uint64_t rsrc = kIova + 7 * 4096 - 100, rdst = kIova + 4096 + 50;
    std::vector<uint8_t> expect;
    for (int i = 0; i < 700; i++) expect.push_back(*hp(iova_to_host(rsrc + i)));
    send_wqe(kSq2, 2, 4 /*RDMA_READ*/, 0x7777, 0, rsrc, key, {{rdst, 700}}, key);
    mmio_write(kDbQp + (2 << 12) + 0, 3);
    CHECK(wait_cqe(kCqSend, 2), "read CQE");
    Cqe s = read_cqe(kCqSend, 2);
    CHECK(s.wr_id == 0x7777 && s.byte_len == 700 && s.opcode == 2 && s.status == 0,
          "read CQE: wr_id %llx len %u op %x st %x", (unsigned long long)s.wr_id, s.byte_len,
          s.opcode, s.status);
    int bad = 0;
    for (int i = 0; i < 700; i++)
      if (*hp(iova_to_host(rdst + i)) != expect[i]) bad++;
    CHECK(bad == 0, "READ payload: %d bytes differ", bad);
  }
  printf("READ done at cycle %llu, %d errors\n", (unsigned long long)cycles, errors);

  // ---- FETCH_ADD on QP 3's MR, result into QP 2's buffer
  {
    const uint64_t tgt = kIova + 5 * 4096 + 2048, res = kIova + 256;
    for (int i = 0; i < 8; i++) *hp(iova_to_host(tgt + i)) = uint8_t(0x10 + i);
    uint64_t before = get(iova_to_host(tgt), 8);
    send_wqe(kSq2, 3, 6 /*FETCH_ADD*/, 0x8888, 0, tgt, key, {{res, 8}}, key, 5);
    mmio_write(kDbQp + (2 << 12) + 0, 4);
    CHECK(wait_cqe(kCqSend, 3), "atomic CQE");
    Cqe s = read_cqe(kCqSend, 3);
    CHECK(s.wr_id == 0x8888 && s.byte_len == 8 && s.opcode == 4 && s.status == 0,
          "atomic CQE: wr_id %llx len %u op %x st %x", (unsigned long long)s.wr_id, s.byte_len,
          s.opcode, s.status);
    CHECK(get(iova_to_host(tgt), 8) == before + 5, "FETCH_ADD target");
    CHECK(get(iova_to_host(res), 8) == before, "FETCH_ADD result");
  }
  printf("FETCH_ADD done at cycle %llu, %d errors\n", (unsigned long long)cycles, errors);

  for (int i = 0; i < 200; i++) tick();
  const char *names[] = {"TX_PKTS", "RX_PKTS", "RX_DROP_ICRC", "RX_DROP_HDR", "RX_DROP_QP",
                         "RX_DROP_STATE", "RX_DUP", "RX_NAK_SENT", "RX_GHOST_ACK", "DB_BAD",
                         "CQ_OVERFLOW", "MMIO_BAD", "RX_DROP_RESP"};
  uint64_t cnt[13];
  for (int i = 0; i < 13; i++) {
    cnt[i] = counter(i);
    printf("  %-14s %llu\n", names[i], (unsigned long long)cnt[i]);
  }
  CHECK(cnt[0] == cnt[1] && cnt[0] == uint64_t(n_frames), "TX_PKTS %llu RX_PKTS %llu frames %d",
        (unsigned long long)cnt[0], (unsigned long long)cnt[1], n_frames);
  for (int i = 2; i <= 10; i++) CHECK(cnt[i] == 0, "counter %s = %llu", names[i],
                                      (unsigned long long)cnt[i]);
  CHECK(cnt[12] == 0, "RX_DROP_RESP");
  memset(img, 0, sizeof img);
  setf(img, R::cmd_index::INDEX, 2);
  cmd(CmdQueryQp, img, &o0, &o1);
  printf("QP2: out0 %016llx out1 %016llx\n", (unsigned long long)o0, (unsigned long long)o1);
  CHECK((o1 & 0xffff) == 4 && ((o1 >> 16) & 0xffff) == 4, "QP2 sq_ci/comp_ci");

  // ---- lost frame: drop the MIDDLE of a 3-packet SEND -> NAK PSN_SEQ, go-back-N retransmit
  {
    memset(hp(kRq3 + 64), 0, 64);
    put(kRq3 + 64, 0xabd, 8);
    put(kRq3 + 72, 1, 1);
    const uint64_t rbuf = kIova + 6 * 4096 + 8;
    put(kRq3 + 80, rbuf, 8); put(kRq3 + 88, 700, 4); put(kRq3 + 92, key, 4);
    mmio_write(kDbQp + (3 << 12) + 8, 2);
    const uint64_t sbuf = kIova + 100;
    std::vector<uint8_t> expect;
    for (int i = 0; i < 600; i++) expect.push_back(*hp(iova_to_host(sbuf + i)));
    drop_frame_no = tx_frame_no + 1;
    send_wqe(kSq2, 4, 2 /*SEND*/, 0x9999, 0, 0, 0, {{sbuf, 600}}, key);
    mmio_write(kDbQp + (2 << 12) + 0, 5);
    CHECK(wait_cqe(kCqSend, 4), "send CQE after retransmit");
    CHECK(wait_cqe(kCqRecv, 1), "recv CQE after retransmit");
    Cqe s = read_cqe(kCqSend, 4), r = read_cqe(kCqRecv, 1);
    CHECK(s.wr_id == 0x9999 && s.status == 0 && r.wr_id == 0xabd && r.byte_len == 600 &&
              r.status == 0, "retransmit CQEs: %llx/%x %llx/%u/%x", (unsigned long long)s.wr_id,
          s.status, (unsigned long long)r.wr_id, r.byte_len, r.status);
    int bad = 0;
    for (int i = 0; i < 600; i++)
      if (*hp(iova_to_host(rbuf + i)) != expect[i]) bad++;
    CHECK(bad == 0, "retransmitted payload: %d bytes differ", bad);
    CHECK(counter(R::counter::RX_NAK_SENT) == 1, "RX_NAK_SENT %llu", (unsigned long long)counter(R::counter::RX_NAK_SENT));
  }
  // ---- duplicated WRITE_ONLY: RX_DUP at the responder, its re-ACK is a ghost at the requester
  {
    dup_frame_no = tx_frame_no;
    send_wqe(kSq2, 5, 0 /*WRITE*/, 0xaaaa, 0, kIova + 7 * 4096, key, {{kIova + 64, 100}}, key);
    mmio_write(kDbQp + (2 << 12) + 0, 6);
    CHECK(wait_cqe(kCqSend, 5), "dup write CQE");
    for (int i = 0; i < 300; i++) tick();
    CHECK(counter(R::counter::RX_DUP) == 1, "RX_DUP %llu", (unsigned long long)counter(R::counter::RX_DUP));
    CHECK(counter(R::counter::RX_GHOST_ACK) == 1, "RX_GHOST_ACK %llu", (unsigned long long)counter(R::counter::RX_GHOST_ACK));
  }
  printf("NAK/dup done at cycle %llu, %d errors\n", (unsigned long long)cycles, errors);

  // ---- error paths on CQ 3 (armed: one MSI-X for its first CQE)
  constexpr uint64_t kCq3 = kHostBase + 0x7000, kSq4 = kHostBase + 0x8000,
                     kRq4 = kHostBase + 0x9000, kSq5 = kHostBase + 0xa000,
                     kRq5 = kHostBase + 0xb000, kSq6 = kHostBase + 0xc000,
                     kRq6 = kHostBase + 0xd000, kSq7 = kHostBase + 0xe000,
                     kRq7 = kHostBase + 0xf000;
  CHECK(create_cq(3, kCq3, 4, 9) == R::cmd_status::OK, "CREATE_CQ 3");
  CHECK(create_qp(4, kSq4, kRq4, 1, 3, 3) == R::cmd_status::OK, "CREATE_QP 4");
  CHECK(create_qp(5, kSq5, kRq5, 1, 3, 3) == R::cmd_status::OK, "CREATE_QP 5");
  CHECK(create_qp(6, kSq6, kRq6, 1, 3, 3) == R::cmd_status::OK, "CREATE_QP 6");
  CHECK(create_qp(7, kSq7, kRq7, 1, 3, 3) == R::cmd_status::OK, "CREATE_QP 7");
  bring_up(4, 5, 100, 200, 1);
  bring_up(5, 4, 200, 100);
  bring_up(6, 7, 300, 400);
  bring_up(7, 6, 400, 300);
  int msix0 = n_msix;
  mmio_write(kDbCq + (3 << 12) + 8, 1);  // arm CQ 3
  // RNR: QP 5 has no receive WQE; QP 4 has rnr_retry 1 -> RNR_RETRY_EXC_ERR
  send_wqe(kSq4, 0, 2 /*SEND*/, 0x4444, 0, 0, 0, {{kIova, 100}}, key);
  mmio_write(kDbQp + (4 << 12), 1);
  CHECK(wait_cqe(kCq3, 0), "RNR CQE");
  {
    Cqe c = read_cqe(kCq3, 0);
    CHECK(c.wr_id == 0x4444 && c.status == 0xd && c.opcode == 0 && c.qpn == 4,
          "RNR CQE: wr_id %llx st %x op %x qpn %u", (unsigned long long)c.wr_id, c.status,
          c.opcode, c.qpn);
  }
  for (int i = 0; i < 100; i++) tick();
  CHECK(n_msix == msix0 + 1, "MSI-X count %d", n_msix - msix0);
  // local protection error on QP 5: bad lkey, then a second WQE is flushed
  send_wqe(kSq5, 0, 2 /*SEND*/, 0x5501, 0, 0, 0, {{kIova, 100}}, 0x112);
  send_wqe(kSq5, 1, 2 /*SEND*/, 0x5502, 0, 0, 0, {{kIova, 100}}, key);
  mmio_write(kDbQp + (5 << 12), 2);
  CHECK(wait_cqe(kCq3, 2), "local error CQEs");
  {
    Cqe c = read_cqe(kCq3, 1), d = read_cqe(kCq3, 2);
    CHECK(c.wr_id == 0x5501 && c.status == 0x4 && c.wqe_idx == 0, "LOC_PROT CQE: %llx st %x",
          (unsigned long long)c.wr_id, c.status);
    CHECK(d.wr_id == 0x5502 && d.status == 0x5 && d.wqe_idx == 1, "flush CQE: %llx st %x",
          (unsigned long long)d.wr_id, d.status);
  }
  // remote access error: QP 6 writes with a bad rkey -> NAK REM_ACCESS, both QPs in ERR
  send_wqe(kSq6, 0, 0 /*WRITE*/, 0x6601, 0, kIova, 0x1ff, {{kIova, 64}}, key);
  mmio_write(kDbQp + (6 << 12), 1);
  CHECK(wait_cqe(kCq3, 3), "REM_ACCESS CQE");
  {
    Cqe c = read_cqe(kCq3, 3);
    CHECK(c.wr_id == 0x6601 && c.status == 0xa, "REM_ACCESS CQE: %llx st %x",
          (unsigned long long)c.wr_id, c.status);
  }
  // QP 7 (responder) is in ERR: a posted receive is flushed
  memset(hp(kRq7), 0, 64);
  put(kRq7, 0x7701, 8);
  mmio_write(kDbQp + (7 << 12) + 8, 1);
  CHECK(wait_cqe(kCq3, 4), "FLUSH_RQ CQE");
  {
    Cqe c = read_cqe(kCq3, 4);
    CHECK(c.wr_id == 0x7701 && c.status == 0x5 && c.opcode == 0x80 && c.qpn == 7,
          "FLUSH_RQ CQE: %llx st %x op %x qpn %u", (unsigned long long)c.wr_id, c.status,
          c.opcode, c.qpn);
  }
  mmio_write(kDbQp + (9 << 12), 1);  // QP 9 does not exist: DB_BAD
  memset(img, 0, sizeof img);
  for (uint32_t q = 4; q <= 7; q++) {
    setf(img, R::cmd_index::INDEX, q);
    cmd(CmdQueryQp, img, &o0, &o1);
    CHECK((o0 & 7) == (q == 5 ? 6u : 6u), "QP %u state %llu", q, (unsigned long long)(o0 & 7));
  }
  CHECK(counter(R::counter::DB_BAD) == 1, "DB_BAD %llu", (unsigned long long)counter(R::counter::DB_BAD));
  CHECK(counter(R::counter::RX_NAK_SENT) == 4, "RX_NAK_SENT %llu (1 PSN_SEQ + 2 RNR + 1 REM_ACCESS)",
        (unsigned long long)counter(R::counter::RX_NAK_SENT));

  // ---- SR-IOV at the NumVf this binary was built with (make NUMVF=16 / 64 builds run it too):
  // TotalVFs, a VF profile for all of them, VF Enable, and the last VF answering at its routing ID.
  {
    const uint32_t cap = R::cfg::EXT_CAP;
    const uint32_t total = cfg_read(0, cap + R::sriov::TOTAL_VFS) >> 16;
    CHECK(total == TB_NUMVF, "TotalVFs %u, built with %d", total, TB_NUMVF);
    CHECK((cfg_read(0, cap + R::sriov::INITIAL_VFS) & 0xffff) == total, "InitialVFs");
    memset(img, 0, sizeof img);
    setf(img, R::cmd_set_vf_res::VFS, total);
    setf(img, R::cmd_set_vf_res::QPS, 4);
    setf(img, R::cmd_set_vf_res::CQS, 4);
    setf(img, R::cmd_set_vf_res::MRS, 4);
    setf(img, R::cmd_set_vf_res::PDS, 4);
    setf(img, R::cmd_set_vf_res::MTTS, 16);
    CHECK(cmd(R::cmd::SET_VF_RES, img) == R::cmd_status::OK, "SET_VF_RES for %u VFs", total);
    cfg_write(0, cap + R::sriov::NUM_VFS, total);
    CHECK((cfg_read(0, cap + R::sriov::NUM_VFS) & 0xffff) == total, "NumVFs");
    cfg_write(0, cap + R::sriov::CTRL, R::sriov::CTRL_VFE | R::sriov::CTRL_VF_MSE);
    CHECK(mmio_read(R::reg::FUNC_ID, uint8_t(total)) == total, "FUNC_ID of VF %u", total);
    const uint64_t pool = 1024 - 4 * total;
    CHECK(mmio_read(R::reg::RES_QP, uint8_t(total)) == ((pool + 4 * (total - 1)) | (4ull << 32)),
          "RES_QP of VF %u: %llx", total, (unsigned long long)mmio_read(R::reg::RES_QP, uint8_t(total)));
    if (total < 255) CHECK(mmio_read(R::reg::FUNC_ID, uint8_t(total + 1)) == ~0ull, "no VF past TotalVFs");
    printf("SR-IOV with %u VFs done at cycle %llu\n", total, (unsigned long long)cycles);
  }

  printf("%s: %d errors, %llu cycles, %d frames, %d write bursts, %d MSI-X, %d trace events\n",
         errors ? "FAILED" : "PASSED", errors, (unsigned long long)cycles, n_frames, n_wr_bursts,
         n_msix, n_traces);
  top->final();
  return errors ? 1 : 0;
}
