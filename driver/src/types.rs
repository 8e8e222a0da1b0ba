// SPDX-License-Identifier: Apache-2.0
//! Typed views of the spec's constant groups (values always come from `rnic_regs`).

use std::fmt;

use rnic_regs::{access, cmd, cmd_status, mtu, qp_attr, qp_state, wc_opcode, wc_status};

bitflags::bitflags! {
    /// Memory and QP access rights (`ibv_access_flags`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct AccessFlags: u32 {
        /// The device may write the region locally (receive scatter, READ/atomic results).
        const LOCAL_WRITE = access::LOCAL_WRITE;
        /// Remote peers may RDMA WRITE into it.
        const REMOTE_WRITE = access::REMOTE_WRITE;
        /// Remote peers may RDMA READ from it.
        const REMOTE_READ = access::REMOTE_READ;
        /// Remote peers may run atomics on it.
        const REMOTE_ATOMIC = access::REMOTE_ATOMIC;
    }
}

bitflags::bitflags! {
    /// MODIFY_QP attribute mask (`ibv_qp_attr_mask` values).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct QpAttrMask: u32 {
        /// Target state (always present).
        const STATE = qp_attr::STATE;
        /// Access flags.
        const ACCESS_FLAGS = qp_attr::ACCESS_FLAGS;
        /// P_Key index (only index 0 exists).
        const PKEY_INDEX = qp_attr::PKEY_INDEX;
        /// Port number (only port 1 exists).
        const PORT = qp_attr::PORT;
        /// Address vector: destination MAC and IPv4 address.
        const AV = qp_attr::AV;
        /// Path MTU.
        const PATH_MTU = qp_attr::PATH_MTU;
        /// Local ACK timeout exponent.
        const TIMEOUT = qp_attr::TIMEOUT;
        /// Retry count.
        const RETRY_CNT = qp_attr::RETRY_CNT;
        /// RNR retry count (7 = infinite).
        const RNR_RETRY = qp_attr::RNR_RETRY;
        /// Receive PSN.
        const RQ_PSN = qp_attr::RQ_PSN;
        /// Outstanding READ/atomic requests as requester.
        const MAX_QP_RD_ATOMIC = qp_attr::MAX_QP_RD_ATOMIC;
        /// Minimum RNR NAK timer code.
        const MIN_RNR_TIMER = qp_attr::MIN_RNR_TIMER;
        /// Send PSN.
        const SQ_PSN = qp_attr::SQ_PSN;
        /// Outstanding READ/atomic requests as responder.
        const MAX_DEST_RD_ATOMIC = qp_attr::MAX_DEST_RD_ATOMIC;
        /// Destination QP number.
        const DEST_QPN = qp_attr::DEST_QPN;
    }
}

/// Queue-pair state (`ibv_qp_state`; SQD/SQE are not implemented by the device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QpState {
    /// Created or reset: nothing may be posted.
    Reset,
    /// Receives may be posted; nothing is processed.
    Init,
    /// Ready to receive.
    Rtr,
    /// Ready to send.
    Rts,
    /// Error: outstanding work requests are flushed.
    Err,
}

impl QpState {
    /// Every state, for table-driven code and tests.
    pub const ALL: [QpState; 5] = [
        QpState::Reset,
        QpState::Init,
        QpState::Rtr,
        QpState::Rts,
        QpState::Err,
    ];

    /// The spec encoding (`qp_state::*`).
    pub fn code(self) -> u8 {
        match self {
            QpState::Reset => qp_state::RESET,
            QpState::Init => qp_state::INIT,
            QpState::Rtr => qp_state::RTR,
            QpState::Rts => qp_state::RTS,
            QpState::Err => qp_state::ERR,
        }
    }

    /// Decode a spec encoding; `None` for values the spec does not define.
    pub fn from_code(v: u8) -> Option<Self> {
        Some(match v {
            qp_state::RESET => QpState::Reset,
            qp_state::INIT => QpState::Init,
            qp_state::RTR => QpState::Rtr,
            qp_state::RTS => QpState::Rts,
            qp_state::ERR => QpState::Err,
            _ => return None,
        })
    }
}

impl fmt::Display for QpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QpState::Reset => "RESET",
            QpState::Init => "INIT",
            QpState::Rtr => "RTR",
            QpState::Rts => "RTS",
            QpState::Err => "ERR",
        })
    }
}

/// Path MTU (`ibv_mtu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mtu {
    /// 256 bytes.
    Mtu256,
    /// 512 bytes.
    Mtu512,
    /// 1024 bytes.
    Mtu1024,
    /// 2048 bytes.
    Mtu2048,
    /// 4096 bytes.
    Mtu4096,
}

impl Mtu {
    /// The spec encoding (`mtu::*`).
    pub fn code(self) -> u8 {
        match self {
            Mtu::Mtu256 => mtu::MTU_256,
            Mtu::Mtu512 => mtu::MTU_512,
            Mtu::Mtu1024 => mtu::MTU_1024,
            Mtu::Mtu2048 => mtu::MTU_2048,
            Mtu::Mtu4096 => mtu::MTU_4096,
        }
    }

    /// Payload bytes per packet.
    pub fn bytes(self) -> u32 {
        rnic_regs::mtu_bytes(self.code())
    }

    /// The MTU of `bytes` payload bytes per packet (256, 512, 1024, 2048 or 4096).
    ///
    /// # Errors
    /// Any other size, with the sizes that exist.
    pub fn from_bytes(bytes: u32) -> std::result::Result<Self, String> {
        [Mtu::Mtu256, Mtu::Mtu512, Mtu::Mtu1024, Mtu::Mtu2048, Mtu::Mtu4096]
            .into_iter()
            .find(|m| m.bytes() == bytes)
            .ok_or_else(|| format!("MTU {bytes}: use 256, 512, 1024, 2048 or 4096"))
    }

    /// Decode a spec encoding.
    pub fn from_code(v: u8) -> Option<Self> {
        Some(match v {
            mtu::MTU_256 => Mtu::Mtu256,
            mtu::MTU_512 => Mtu::Mtu512,
            mtu::MTU_1024 => Mtu::Mtu1024,
            mtu::MTU_2048 => Mtu::Mtu2048,
            mtu::MTU_4096 => Mtu::Mtu4096,
            _ => return None,
        })
    }
}

/// Admin command opcode (`cmd::*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// No operation.
    Nop,
    /// Set port MAC and IPv4 address.
    SetPort,
    /// PF only: the VF resource profile.
    SetVfRes,
    /// PF only: a VF's MAC, IPv4 address and trust.
    SetVfPort,
    /// PF only: a VF's DMA window.
    SetVfDma,
    /// `SET_VF_RATE` (PF only).
    SetVfRate,
    /// Create a completion queue.
    CreateCq,
    /// Destroy a completion queue.
    DestroyCq,
    /// Allocate a protection domain.
    AllocPd,
    /// Free a protection domain.
    DeallocPd,
    /// Load MTT entries from host memory.
    WriteMtt,
    /// Register a memory region.
    RegMr,
    /// Deregister a memory region.
    DeregMr,
    /// Create a queue pair.
    CreateQp,
    /// Modify a queue pair.
    ModifyQp,
    /// Query a queue pair.
    QueryQp,
    /// Destroy a queue pair.
    DestroyQp,
    /// An opcode the spec does not define (only through [`crate::Context::raw_command`]).
    Other(u8),
}

impl Command {
    /// The opcode written to `CMD_OP`.
    pub fn code(self) -> u8 {
        match self {
            Command::Nop => cmd::NOP,
            Command::SetPort => cmd::SET_PORT,
            Command::SetVfRes => cmd::SET_VF_RES,
            Command::SetVfPort => cmd::SET_VF_PORT,
            Command::SetVfDma => cmd::SET_VF_DMA,
            Command::SetVfRate => cmd::SET_VF_RATE,
            Command::CreateCq => cmd::CREATE_CQ,
            Command::DestroyCq => cmd::DESTROY_CQ,
            Command::AllocPd => cmd::ALLOC_PD,
            Command::DeallocPd => cmd::DEALLOC_PD,
            Command::WriteMtt => cmd::WRITE_MTT,
            Command::RegMr => cmd::REG_MR,
            Command::DeregMr => cmd::DEREG_MR,
            Command::CreateQp => cmd::CREATE_QP,
            Command::ModifyQp => cmd::MODIFY_QP,
            Command::QueryQp => cmd::QUERY_QP,
            Command::DestroyQp => cmd::DESTROY_QP,
            Command::Other(v) => v,
        }
    }

    /// Decode an opcode.
    pub fn from_code(v: u8) -> Self {
        match v {
            cmd::NOP => Command::Nop,
            cmd::SET_PORT => Command::SetPort,
            cmd::SET_VF_RES => Command::SetVfRes,
            cmd::SET_VF_PORT => Command::SetVfPort,
            cmd::SET_VF_DMA => Command::SetVfDma,
            cmd::SET_VF_RATE => Command::SetVfRate,
            cmd::CREATE_CQ => Command::CreateCq,
            cmd::DESTROY_CQ => Command::DestroyCq,
            cmd::ALLOC_PD => Command::AllocPd,
            cmd::DEALLOC_PD => Command::DeallocPd,
            cmd::WRITE_MTT => Command::WriteMtt,
            cmd::REG_MR => Command::RegMr,
            cmd::DEREG_MR => Command::DeregMr,
            cmd::CREATE_QP => Command::CreateQp,
            cmd::MODIFY_QP => Command::ModifyQp,
            cmd::QUERY_QP => Command::QueryQp,
            cmd::DESTROY_QP => Command::DestroyQp,
            other => Command::Other(other),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.code();
        match cmd::ALL.iter().find(|(_, v)| *v == code) {
            Some((name, _)) => f.write_str(name),
            None => write!(f, "command {code:#04x}"),
        }
    }
}

/// Completion status of an admin command (`cmd_status::*`, except OK and BUSY).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandStatus {
    /// The device does not know the opcode.
    BadOpcode,
    /// The object index is out of range.
    BadIndex,
    /// The object is in the wrong state (exists/does not exist, illegal QP transition).
    BadState,
    /// An argument is invalid.
    BadParam,
    /// The index is inside the device's table but outside this function's range.
    NoQuota,
    /// This function may not issue the command.
    Denied,
    /// An address (queue, CQ, MTT source or MTT page) is outside this function's DMA window.
    BadAddr,
    /// A value the spec does not define.
    Other(u8),
}

impl CommandStatus {
    /// Decode a non-OK, non-BUSY status.
    pub fn from_code(v: u8) -> Self {
        match v {
            cmd_status::BAD_OPCODE => CommandStatus::BadOpcode,
            cmd_status::BAD_INDEX => CommandStatus::BadIndex,
            cmd_status::BAD_STATE => CommandStatus::BadState,
            cmd_status::BAD_PARAM => CommandStatus::BadParam,
            cmd_status::NO_QUOTA => CommandStatus::NoQuota,
            cmd_status::DENIED => CommandStatus::Denied,
            cmd_status::BAD_ADDR => CommandStatus::BadAddr,
            other => CommandStatus::Other(other),
        }
    }

    /// What the caller should do about it (used in error messages).
    pub fn hint(self) -> &'static str {
        match self {
            CommandStatus::BadOpcode => "the device does not implement this command; check the interface version",
            CommandStatus::BadIndex => "the index is outside the device's limits (DEV_CAPS)",
            CommandStatus::BadState => {
                "the object already exists, does not exist, or is in the wrong state; query it and retry"
            }
            CommandStatus::BadParam => "an argument is out of range; check the command's rules in docs/architecture.md",
            CommandStatus::NoQuota => {
                "the index is outside this function's share (Context::resources); ask the PF for a larger VF profile"
            }
            CommandStatus::Denied => "only the PF (or a trusted VF, for SET_PORT) may issue this command",
            CommandStatus::BadAddr => {
                "an address is outside this function's DMA window: allocate DMA memory through this \
                 function's Device, or have the PF give the VF a window that holds it (Context::set_vf_dma)"
            }
            CommandStatus::Other(_) => "the device returned an undefined status; this is a device bug",
        }
    }
}

impl fmt::Display for CommandStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandStatus::BadOpcode => f.write_str("BAD_OPCODE"),
            CommandStatus::BadIndex => f.write_str("BAD_INDEX"),
            CommandStatus::BadState => f.write_str("BAD_STATE"),
            CommandStatus::BadParam => f.write_str("BAD_PARAM"),
            CommandStatus::NoQuota => f.write_str("NO_QUOTA"),
            CommandStatus::Denied => f.write_str("DENIED"),
            CommandStatus::BadAddr => f.write_str("BAD_ADDR"),
            CommandStatus::Other(v) => write!(f, "status {v:#04x}"),
        }
    }
}

/// The object a command or an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Object {
    /// The device as a whole.
    Device,
    /// The (single) port.
    Port,
    /// Virtual function `n` (PF admin commands).
    Vf(u8),
    /// Protection domain `pdn`.
    Pd(u32),
    /// Completion queue `cqn`.
    Cq(u32),
    /// Memory region with this index (`lkey >> 8`).
    Mr(u32),
    /// MTT entries `start..start + count`.
    Mtt {
        /// First entry.
        start: u32,
        /// Number of entries.
        count: u32,
    },
    /// Queue pair `qpn`.
    Qp(u32),
}

/// An [`Object`] as the prefix of a driver log line (`qp 0x2`, `cq 0x1`, `port`): every log line
/// starts with the object it is about, so `RUST_LOG=debug ... | grep 'qp 0x2:'` follows one QP.
pub(crate) struct LogObj(pub(crate) Object);

impl fmt::Display for LogObj {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Object::Device => f.write_str("device"),
            Object::Port => f.write_str("port"),
            Object::Vf(n) => write!(f, "vf {n}"),
            Object::Pd(n) => write!(f, "pd {n:#x}"),
            Object::Cq(n) => write!(f, "cq {n:#x}"),
            Object::Mr(n) => write!(f, "mr {n:#x}"),
            Object::Mtt { start, count } => write!(f, "mtt {start:#x}..{:#x}", start + count),
            Object::Qp(n) => write!(f, "qp {n:#x}"),
        }
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Object::Device => f.write_str("device"),
            Object::Port => f.write_str("port"),
            Object::Vf(n) => write!(f, "vf {n}"),
            Object::Pd(n) => write!(f, "PD {n}"),
            Object::Cq(n) => write!(f, "CQ {n}"),
            Object::Mr(n) => write!(f, "MR {n}"),
            Object::Mtt { start, count } => write!(f, "MTT {start}..{}", start + count),
            Object::Qp(n) => write!(f, "QP {n}"),
        }
    }
}

/// Kinds of device resources the driver allocates indices for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// Queue pair numbers.
    Qp,
    /// Completion queue numbers.
    Cq,
    /// Protection domain numbers.
    Pd,
    /// Memory region indices.
    Mr,
    /// MTT entries (a contiguous range).
    Mtt,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Qp => "QP numbers",
            Resource::Cq => "CQ numbers",
            Resource::Pd => "PD numbers",
            Resource::Mr => "MR indices",
            Resource::Mtt => "MTT entries",
        })
    }
}

/// Which work queue of a QP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueKind {
    /// Send queue.
    Send,
    /// Receive queue.
    Recv,
}

impl fmt::Display for QueueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QueueKind::Send => "send queue",
            QueueKind::Recv => "receive queue",
        })
    }
}

/// Work completion status (`ibv_wc_status`); undefined values are kept as `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WcStatus {
    /// Success.
    Success,
    /// Local length error.
    LocLenErr,
    /// Local QP operation error.
    LocQpOpErr,
    /// Local protection error (lkey check).
    LocProtErr,
    /// Flushed because the QP is in ERR.
    WrFlushErr,
    /// Bad response.
    BadRespErr,
    /// Local access error.
    LocAccessErr,
    /// Remote invalid request (NAK).
    RemInvReqErr,
    /// Remote access error (NAK).
    RemAccessErr,
    /// Remote operational error (NAK).
    RemOpErr,
    /// Transport retry count exceeded.
    RetryExcErr,
    /// RNR retry count exceeded.
    RnrRetryExcErr,
    /// General error.
    GeneralErr,
    /// A value the spec does not define.
    Other(u8),
}

impl WcStatus {
    /// Decode a CQE status byte.
    pub fn from_code(v: u8) -> Self {
        match v {
            wc_status::SUCCESS => WcStatus::Success,
            wc_status::LOC_LEN_ERR => WcStatus::LocLenErr,
            wc_status::LOC_QP_OP_ERR => WcStatus::LocQpOpErr,
            wc_status::LOC_PROT_ERR => WcStatus::LocProtErr,
            wc_status::WR_FLUSH_ERR => WcStatus::WrFlushErr,
            wc_status::BAD_RESP_ERR => WcStatus::BadRespErr,
            wc_status::LOC_ACCESS_ERR => WcStatus::LocAccessErr,
            wc_status::REM_INV_REQ_ERR => WcStatus::RemInvReqErr,
            wc_status::REM_ACCESS_ERR => WcStatus::RemAccessErr,
            wc_status::REM_OP_ERR => WcStatus::RemOpErr,
            wc_status::RETRY_EXC_ERR => WcStatus::RetryExcErr,
            wc_status::RNR_RETRY_EXC_ERR => WcStatus::RnrRetryExcErr,
            wc_status::GENERAL_ERR => WcStatus::GeneralErr,
            other => WcStatus::Other(other),
        }
    }

    /// The CQE encoding.
    pub fn code(self) -> u8 {
        match self {
            WcStatus::Success => wc_status::SUCCESS,
            WcStatus::LocLenErr => wc_status::LOC_LEN_ERR,
            WcStatus::LocQpOpErr => wc_status::LOC_QP_OP_ERR,
            WcStatus::LocProtErr => wc_status::LOC_PROT_ERR,
            WcStatus::WrFlushErr => wc_status::WR_FLUSH_ERR,
            WcStatus::BadRespErr => wc_status::BAD_RESP_ERR,
            WcStatus::LocAccessErr => wc_status::LOC_ACCESS_ERR,
            WcStatus::RemInvReqErr => wc_status::REM_INV_REQ_ERR,
            WcStatus::RemAccessErr => wc_status::REM_ACCESS_ERR,
            WcStatus::RemOpErr => wc_status::REM_OP_ERR,
            WcStatus::RetryExcErr => wc_status::RETRY_EXC_ERR,
            WcStatus::RnrRetryExcErr => wc_status::RNR_RETRY_EXC_ERR,
            WcStatus::GeneralErr => wc_status::GENERAL_ERR,
            WcStatus::Other(v) => v,
        }
    }

    /// Whether this is [`WcStatus::Success`].
    pub fn is_success(self) -> bool {
        self == WcStatus::Success
    }
}

/// Work completion opcode (`ibv_wc_opcode`); undefined values are kept as `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WcOpcode {
    /// SEND (with or without immediate).
    Send,
    /// RDMA WRITE (with or without immediate), requester side.
    RdmaWrite,
    /// RDMA READ.
    RdmaRead,
    /// Compare and swap.
    CompSwap,
    /// Fetch and add.
    FetchAdd,
    /// A receive consumed by a SEND.
    Recv,
    /// A receive consumed by a WRITE with immediate.
    RecvRdmaWithImm,
    /// A value the spec does not define.
    Other(u8),
}

impl WcOpcode {
    /// Decode a CQE opcode byte.
    pub fn from_code(v: u8) -> Self {
        match v {
            wc_opcode::SEND => WcOpcode::Send,
            wc_opcode::RDMA_WRITE => WcOpcode::RdmaWrite,
            wc_opcode::RDMA_READ => WcOpcode::RdmaRead,
            wc_opcode::COMP_SWAP => WcOpcode::CompSwap,
            wc_opcode::FETCH_ADD => WcOpcode::FetchAdd,
            wc_opcode::RECV => WcOpcode::Recv,
            wc_opcode::RECV_RDMA_WITH_IMM => WcOpcode::RecvRdmaWithImm,
            other => WcOpcode::Other(other),
        }
    }

    /// The CQE encoding.
    pub fn code(self) -> u8 {
        match self {
            WcOpcode::Send => wc_opcode::SEND,
            WcOpcode::RdmaWrite => wc_opcode::RDMA_WRITE,
            WcOpcode::RdmaRead => wc_opcode::RDMA_READ,
            WcOpcode::CompSwap => wc_opcode::COMP_SWAP,
            WcOpcode::FetchAdd => wc_opcode::FETCH_ADD,
            WcOpcode::Recv => wc_opcode::RECV,
            WcOpcode::RecvRdmaWithImm => wc_opcode::RECV_RDMA_WITH_IMM,
            WcOpcode::Other(v) => v,
        }
    }

    /// Whether the completion belongs to a receive queue (IBV_WC_RECV bit, 0x80).
    pub fn is_recv(self) -> bool {
        // The spec's receive opcodes are exactly the ones with the top bit set (ibv_wc_opcode).
        self.code() & wc_opcode::RECV != 0
    }
}
