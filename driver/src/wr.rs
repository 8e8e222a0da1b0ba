// SPDX-License-Identifier: Apache-2.0
//! Work requests and their WQE encodings (`send_wqe`, `recv_wqe` layouts).

use rnic_regs::{params, recv_wqe, send_wqe, wqe_flag, wr_opcode, Field};

/// A scatter/gather entry (like `ibv_sge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sge {
    /// Start address (iova inside the MR).
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// The MR's lkey.
    pub lkey: u32,
}

/// Operation of a send work request, with its operation-specific fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrOpcode {
    /// SEND.
    Send,
    /// SEND with immediate data.
    SendWithImm(u32),
    /// RDMA WRITE.
    Write {
        /// Remote address.
        remote_addr: u64,
        /// Remote key.
        rkey: u32,
    },
    /// RDMA WRITE with immediate data (consumes a receive WQE at the peer).
    WriteWithImm {
        /// Remote address.
        remote_addr: u64,
        /// Remote key.
        rkey: u32,
        /// Immediate data.
        imm: u32,
    },
    /// RDMA READ into the local SGEs.
    Read {
        /// Remote address.
        remote_addr: u64,
        /// Remote key.
        rkey: u32,
    },
    /// 64-bit compare and swap; the original value lands in the single 8-byte SGE.
    CompareSwap {
        /// Remote address (8-byte aligned).
        remote_addr: u64,
        /// Remote key.
        rkey: u32,
        /// Value compared with.
        compare: u64,
        /// Value written when equal.
        swap: u64,
    },
    /// 64-bit fetch and add; the original value lands in the single 8-byte SGE.
    FetchAdd {
        /// Remote address (8-byte aligned).
        remote_addr: u64,
        /// Remote key.
        rkey: u32,
        /// Value added.
        add: u64,
    },
}

impl WrOpcode {
    /// The WQE opcode (`wr_opcode::*`).
    pub fn code(&self) -> u8 {
        match self {
            WrOpcode::Send => wr_opcode::SEND,
            WrOpcode::SendWithImm(_) => wr_opcode::SEND_WITH_IMM,
            WrOpcode::Write { .. } => wr_opcode::RDMA_WRITE,
            WrOpcode::WriteWithImm { .. } => wr_opcode::RDMA_WRITE_WITH_IMM,
            WrOpcode::Read { .. } => wr_opcode::RDMA_READ,
            WrOpcode::CompareSwap { .. } => wr_opcode::ATOMIC_CMP_AND_SWP,
            WrOpcode::FetchAdd { .. } => wr_opcode::ATOMIC_FETCH_AND_ADD,
        }
    }

    /// Whether this is an atomic (one 8-byte SGE required).
    pub fn is_atomic(&self) -> bool {
        matches!(
            self,
            WrOpcode::CompareSwap { .. } | WrOpcode::FetchAdd { .. }
        )
    }
}

/// A send work request (like `ibv_send_wr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendWr {
    /// Returned in the completion.
    pub wr_id: u64,
    /// Operation.
    pub opcode: WrOpcode,
    /// Local buffers (gathered for SEND/WRITE, scattered into for READ/atomics).
    pub sgl: Vec<Sge>,
    /// Generate a completion. Unsignaled WRs produce none on success; their queue slots are freed
    /// when a later signaled WR completes.
    pub signaled: bool,
    /// Set the solicited-event bit on the last packet (SEND*, WRITE_WITH_IMM).
    pub solicited: bool,
    /// `IBV_SEND_FENCE`: start only after every earlier RDMA READ and atomic of the QP has
    /// completed (the responder may run later requests before it reads a READ's data).
    pub fence: bool,
    /// `IBV_SEND_INLINE`: SEND/WRITE payload carried in the WQE itself (at most `MAX_INLINE`
    /// bytes; `sgl` must be empty). The NIC reads no payload from memory, which saves a DMA
    /// read of latency; the bytes are copied at post time, so the buffer is free at once.
    pub inline_data: Option<Vec<u8>>,
}

impl SendWr {
    /// A signaled, unsolicited WR.
    pub fn new(wr_id: u64, opcode: WrOpcode, sgl: Vec<Sge>) -> Self {
        SendWr {
            wr_id,
            opcode,
            sgl,
            signaled: true,
            solicited: false,
            fence: false,
            inline_data: None,
        }
    }

    /// A signaled SEND/WRITE (± immediate) whose payload `data` is carried inline in the WQE
    /// (`IBV_SEND_INLINE`; at most `MAX_INLINE` bytes).
    pub fn inline(wr_id: u64, opcode: WrOpcode, data: &[u8]) -> Self {
        SendWr { inline_data: Some(data.to_vec()), ..SendWr::new(wr_id, opcode, Vec::new()) }
    }

    /// Set whether the WR generates a completion on success.
    pub fn with_signaled(mut self, signaled: bool) -> Self {
        self.signaled = signaled;
        self
    }

    /// Set the solicited-event bit.
    pub fn with_solicited(mut self, solicited: bool) -> Self {
        self.solicited = solicited;
        self
    }

    /// Set the fence indicator (`IBV_SEND_FENCE`).
    pub fn with_fence(mut self, fence: bool) -> Self {
        self.fence = fence;
        self
    }

    /// Message length: the inline bytes, or the total length of the SGEs.
    pub fn total_len(&self) -> u64 {
        match &self.inline_data {
            Some(d) => d.len() as u64,
            None => self.sgl.iter().map(|s| u64::from(s.len)).sum(),
        }
    }
}

/// A receive work request (like `ibv_recv_wr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecvWr {
    /// Returned in the completion.
    pub wr_id: u64,
    /// Buffers the incoming message is scattered into.
    pub sgl: Vec<Sge>,
}

/// `[addr, len, lkey]` fields of each SGE slot of a send WQE.
pub const SEND_SGE_FIELDS: [[Field; 3]; 4] = [
    [send_wqe::SGE0_ADDR, send_wqe::SGE0_LEN, send_wqe::SGE0_LKEY],
    [send_wqe::SGE1_ADDR, send_wqe::SGE1_LEN, send_wqe::SGE1_LKEY],
    [send_wqe::SGE2_ADDR, send_wqe::SGE2_LEN, send_wqe::SGE2_LKEY],
    [send_wqe::SGE3_ADDR, send_wqe::SGE3_LEN, send_wqe::SGE3_LKEY],
];

/// `[addr, len, lkey]` fields of each SGE slot of a receive WQE.
pub const RECV_SGE_FIELDS: [[Field; 3]; 3] = [
    [recv_wqe::SGE0_ADDR, recv_wqe::SGE0_LEN, recv_wqe::SGE0_LKEY],
    [recv_wqe::SGE1_ADDR, recv_wqe::SGE1_LEN, recv_wqe::SGE1_LKEY],
    [recv_wqe::SGE2_ADDR, recv_wqe::SGE2_LEN, recv_wqe::SGE2_LKEY],
];

// The slot tables above must cover exactly what the spec allows.
const _: () = assert!(SEND_SGE_FIELDS.len() as u64 == params::MAX_SEND_SGE);
const _: () = assert!(RECV_SGE_FIELDS.len() as u64 == params::MAX_RECV_SGE);

/// Encode a send WQE. SGEs beyond the four slots are ignored (callers check the count first).
pub fn encode_send_wqe(wr: &SendWr) -> [u8; send_wqe::SIZE] {
    let mut b = [0u8; send_wqe::SIZE];
    send_wqe::WR_ID.set(&mut b, wr.wr_id);
    send_wqe::OPCODE.set(&mut b, u64::from(wr.opcode.code()));
    let mut flags = 0;
    if wr.signaled {
        flags |= wqe_flag::SIGNALED;
    }
    if wr.fence {
        flags |= wqe_flag::FENCE;
    }
    if wr.solicited {
        flags |= wqe_flag::SOLICITED;
    }
    if let Some(d) = &wr.inline_data {
        flags |= wqe_flag::INLINE;
        let n = d.len().min(params::MAX_INLINE as usize);
        send_wqe::INLINE_LEN.set(&mut b, n as u64);
        b[64..64 + n].copy_from_slice(&d[..n]);
    }
    send_wqe::FLAGS.set(&mut b, u64::from(flags));
    send_wqe::NUM_SGE.set(&mut b, wr.sgl.len() as u64);
    match wr.opcode {
        WrOpcode::Send => {}
        WrOpcode::SendWithImm(imm) => send_wqe::IMM.set(&mut b, u64::from(imm)),
        WrOpcode::Write { remote_addr, rkey } | WrOpcode::Read { remote_addr, rkey } => {
            send_wqe::REMOTE_ADDR.set(&mut b, remote_addr);
            send_wqe::RKEY.set(&mut b, u64::from(rkey));
        }
        WrOpcode::WriteWithImm {
            remote_addr,
            rkey,
            imm,
        } => {
            send_wqe::REMOTE_ADDR.set(&mut b, remote_addr);
            send_wqe::RKEY.set(&mut b, u64::from(rkey));
            send_wqe::IMM.set(&mut b, u64::from(imm));
        }
        WrOpcode::CompareSwap {
            remote_addr,
            rkey,
            compare,
            swap,
        } => {
            send_wqe::REMOTE_ADDR.set(&mut b, remote_addr);
            send_wqe::RKEY.set(&mut b, u64::from(rkey));
            send_wqe::COMPARE_ADD.set(&mut b, compare);
            send_wqe::SWAP.set(&mut b, swap);
        }
        WrOpcode::FetchAdd {
            remote_addr,
            rkey,
            add,
        } => {
            send_wqe::REMOTE_ADDR.set(&mut b, remote_addr);
            send_wqe::RKEY.set(&mut b, u64::from(rkey));
            send_wqe::COMPARE_ADD.set(&mut b, add);
        }
    }
    if wr.inline_data.is_none() {
        for (sge, [addr, len, lkey]) in wr.sgl.iter().zip(SEND_SGE_FIELDS) {
            addr.set(&mut b, sge.addr);
            len.set(&mut b, u64::from(sge.len));
            lkey.set(&mut b, u64::from(sge.lkey));
        }
    }
    b
}

/// Encode a receive WQE. SGEs beyond the three slots are ignored (callers check the count first).
pub fn encode_recv_wqe(wr: &RecvWr) -> [u8; recv_wqe::SIZE] {
    let mut b = [0u8; recv_wqe::SIZE];
    recv_wqe::WR_ID.set(&mut b, wr.wr_id);
    recv_wqe::NUM_SGE.set(&mut b, wr.sgl.len() as u64);
    for (sge, [addr, len, lkey]) in wr.sgl.iter().zip(RECV_SGE_FIELDS) {
        addr.set(&mut b, sge.addr);
        len.set(&mut b, u64::from(sge.len));
        lkey.set(&mut b, u64::from(sge.lkey));
    }
    b
}
