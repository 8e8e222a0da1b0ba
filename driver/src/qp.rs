// SPDX-License-Identifier: Apache-2.0
//! RC queue pairs: rings in host memory, the state machine, posting work requests.

use std::cell::{Cell, RefCell};
use std::net::Ipv4Addr;
use std::rc::Rc;

use rnic_regs::{cmd_create_qp, cmd_qp_args, params, recv_wqe, send_wqe};

use crate::context::{mac_to_u64, CmdImage, Context, CtxInner, DmaBuf, CMD_IMAGE_SIZE};
use crate::cq::{Cq, CqInner, WorkCompletion};
use crate::error::{Error, Result};
use crate::pd::PdInner;
use crate::types::{
    AccessFlags, Command, CommandStatus, Mtu, Object, QpAttrMask, QpState, QueueKind, Resource,
};
use crate::wr::{encode_recv_wqe, encode_send_wqe, RecvWr, SendWr};

/// Largest work queue the device accepts (`log_sq_size`, `log_rq_size <= 15`).
pub const MAX_WQ_LOG_SIZE: u32 = rnic_regs::params::MAX_WQ_LOG_SIZE as u32;

/// Limit of `max_rd_atomic` / `max_dest_rd_atomic` (docs/architecture.md, MODIFY_QP value checks).
pub const MAX_RD_ATOMIC: u8 = rnic_regs::params::MAX_RD_ATOMIC as u8;

/// The only P_Key index the device has (it uses `params::DEFAULT_PKEY`).
pub const PKEY_INDEX: u16 = 0;

/// The only port number (IBTA numbers ports from 1).
pub const PORT_NUM: u8 = 1;

/// Creation attributes of a QP (like `ibv_qp_init_attr` for RC).
#[derive(Debug, Clone, Copy)]
pub struct QpInitAttr<'a> {
    /// CQ for send completions.
    pub send_cq: &'a Cq,
    /// CQ for receive completions.
    pub recv_cq: &'a Cq,
    /// Send queue depth (rounded up to a power of two, at least 2, at most 2^15).
    pub max_send_wr: u32,
    /// Receive queue depth (rounded like `max_send_wr`).
    pub max_recv_wr: u32,
}

/// Destination address of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressVector {
    /// Peer MAC address (first byte first on the wire).
    pub dest_mac: [u8; 6],
    /// Peer IPv4 address.
    pub dest_ip: Ipv4Addr,
}

/// MODIFY_QP attributes; the attribute mask is derived from which fields are `Some`
/// ([`QpAttr::mask`]). Build with [`QpAttr::new`] and the `with_*` methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpAttr {
    /// Target state (always part of the mask).
    pub state: QpState,
    /// Access flags (`ACCESS_FLAGS`).
    pub access: Option<AccessFlags>,
    /// P_Key index (`PKEY_INDEX`; must be 0).
    pub pkey_index: Option<u16>,
    /// Port (`PORT`; must be 1).
    pub port: Option<u8>,
    /// Address vector (`AV`).
    pub av: Option<AddressVector>,
    /// Path MTU (`PATH_MTU`).
    pub path_mtu: Option<Mtu>,
    /// Destination QPN (`DEST_QPN`).
    pub dest_qpn: Option<u32>,
    /// Expected PSN of the next request received (`RQ_PSN`).
    pub rq_psn: Option<u32>,
    /// Responder READ/atomic depth (`MAX_DEST_RD_ATOMIC`, 0..=16).
    pub max_dest_rd_atomic: Option<u8>,
    /// RNR NAK timer code (`MIN_RNR_TIMER`, 0..=31).
    pub min_rnr_timer: Option<u8>,
    /// PSN of the next request sent (`SQ_PSN`).
    pub sq_psn: Option<u32>,
    /// Local ACK timeout exponent (`TIMEOUT`, 0..=31).
    pub timeout: Option<u8>,
    /// Transport retry count (`RETRY_CNT`, 0..=7).
    pub retry_cnt: Option<u8>,
    /// RNR retry count (`RNR_RETRY`, 0..=7, 7 = infinite).
    pub rnr_retry: Option<u8>,
    /// Requester READ/atomic depth (`MAX_QP_RD_ATOMIC`, 0..=16).
    pub max_rd_atomic: Option<u8>,
}

macro_rules! with {
    ($(#[$m:meta])* $name:ident, $field:ident: $ty:ty) => {
        $(#[$m])*
        pub fn $name(mut self, v: $ty) -> Self {
            self.$field = Some(v);
            self
        }
    };
}

impl QpAttr {
    /// Attributes moving to `state`, with nothing else set.
    pub fn new(state: QpState) -> Self {
        QpAttr {
            state,
            access: None,
            pkey_index: None,
            port: None,
            av: None,
            path_mtu: None,
            dest_qpn: None,
            rq_psn: None,
            max_dest_rd_atomic: None,
            min_rnr_timer: None,
            sq_psn: None,
            timeout: None,
            retry_cnt: None,
            rnr_retry: None,
            max_rd_atomic: None,
        }
    }

    with!(/// Set the access flags.
        with_access, access: AccessFlags);
    with!(/// Set the P_Key index.
        with_pkey_index, pkey_index: u16);
    with!(/// Set the port.
        with_port, port: u8);
    with!(/// Set the address vector.
        with_av, av: AddressVector);
    with!(/// Set the path MTU.
        with_path_mtu, path_mtu: Mtu);
    with!(/// Set the destination QPN.
        with_dest_qpn, dest_qpn: u32);
    with!(/// Set the receive PSN.
        with_rq_psn, rq_psn: u32);
    with!(/// Set the responder READ/atomic depth.
        with_max_dest_rd_atomic, max_dest_rd_atomic: u8);
    with!(/// Set the RNR NAK timer code.
        with_min_rnr_timer, min_rnr_timer: u8);
    with!(/// Set the send PSN.
        with_sq_psn, sq_psn: u32);
    with!(/// Set the local ACK timeout exponent.
        with_timeout, timeout: u8);
    with!(/// Set the retry count.
        with_retry_cnt, retry_cnt: u8);
    with!(/// Set the RNR retry count.
        with_rnr_retry, rnr_retry: u8);
    with!(/// Set the requester READ/atomic depth.
        with_max_rd_atomic, max_rd_atomic: u8);

    /// The attribute mask: STATE plus one bit per field that is set.
    pub fn mask(&self) -> QpAttrMask {
        let mut m = QpAttrMask::STATE;
        for (set, bit) in [
            (self.access.is_some(), QpAttrMask::ACCESS_FLAGS),
            (self.pkey_index.is_some(), QpAttrMask::PKEY_INDEX),
            (self.port.is_some(), QpAttrMask::PORT),
            (self.av.is_some(), QpAttrMask::AV),
            (self.path_mtu.is_some(), QpAttrMask::PATH_MTU),
            (self.dest_qpn.is_some(), QpAttrMask::DEST_QPN),
            (self.rq_psn.is_some(), QpAttrMask::RQ_PSN),
            (
                self.max_dest_rd_atomic.is_some(),
                QpAttrMask::MAX_DEST_RD_ATOMIC,
            ),
            (self.min_rnr_timer.is_some(), QpAttrMask::MIN_RNR_TIMER),
            (self.sq_psn.is_some(), QpAttrMask::SQ_PSN),
            (self.timeout.is_some(), QpAttrMask::TIMEOUT),
            (self.retry_cnt.is_some(), QpAttrMask::RETRY_CNT),
            (self.rnr_retry.is_some(), QpAttrMask::RNR_RETRY),
            (self.max_rd_atomic.is_some(), QpAttrMask::MAX_QP_RD_ATOMIC),
        ] {
            if set {
                m |= bit;
            }
        }
        m
    }

    /// Encode the MODIFY_QP argument image (`cmd_qp_args`) for `qpn`.
    pub fn encode(&self, qpn: u32) -> CmdImage {
        let mut b = [0u8; CMD_IMAGE_SIZE];
        let set = |b: &mut CmdImage, f: rnic_regs::Field, v: Option<u64>| {
            if let Some(v) = v {
                f.set(b, v);
            }
        };
        cmd_qp_args::QPN.set(&mut b, u64::from(qpn));
        cmd_qp_args::ATTR_MASK.set(&mut b, u64::from(self.mask().bits()));
        cmd_qp_args::STATE.set(&mut b, u64::from(self.state.code()));
        set(
            &mut b,
            cmd_qp_args::ACCESS,
            self.access.map(|a| u64::from(a.bits())),
        );
        set(
            &mut b,
            cmd_qp_args::PATH_MTU,
            self.path_mtu.map(|m| u64::from(m.code())),
        );
        set(
            &mut b,
            cmd_qp_args::RETRY_CNT,
            self.retry_cnt.map(u64::from),
        );
        set(
            &mut b,
            cmd_qp_args::RNR_RETRY,
            self.rnr_retry.map(u64::from),
        );
        set(&mut b, cmd_qp_args::TIMEOUT, self.timeout.map(u64::from));
        set(
            &mut b,
            cmd_qp_args::MIN_RNR_TIMER,
            self.min_rnr_timer.map(u64::from),
        );
        set(
            &mut b,
            cmd_qp_args::MAX_RD_ATOMIC,
            self.max_rd_atomic.map(u64::from),
        );
        set(
            &mut b,
            cmd_qp_args::MAX_DEST_RD_ATOMIC,
            self.max_dest_rd_atomic.map(u64::from),
        );
        set(&mut b, cmd_qp_args::DEST_QPN, self.dest_qpn.map(u64::from));
        set(&mut b, cmd_qp_args::RQ_PSN, self.rq_psn.map(u64::from));
        set(&mut b, cmd_qp_args::SQ_PSN, self.sq_psn.map(u64::from));
        set(
            &mut b,
            cmd_qp_args::DEST_IP,
            self.av.map(|av| u64::from(u32::from(av.dest_ip))),
        );
        set(
            &mut b,
            cmd_qp_args::DEST_MAC,
            self.av.map(|av| mac_to_u64(av.dest_mac)),
        );
        b
    }
}

/// INIT → RTR parameters (all required by the transition; RESET → INIT only needs the access
/// flags, see [`QueuePair::to_init`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtrAttr {
    /// Peer QPN.
    pub dest_qpn: u32,
    /// PSN of the first request expected from the peer (the peer's `sq_psn`).
    pub rq_psn: u32,
    /// Path MTU.
    pub path_mtu: Mtu,
    /// Peer MAC.
    pub dest_mac: [u8; 6],
    /// Peer IPv4 address.
    pub dest_ip: Ipv4Addr,
    /// READ/atomic requests the peer may have outstanding here (0..=16).
    pub max_dest_rd_atomic: u8,
    /// RNR NAK timer code sent to the peer (0..=31).
    pub min_rnr_timer: u8,
}

/// RTR → RTS parameters (all required by the transition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtsAttr {
    /// PSN of the first request sent.
    pub sq_psn: u32,
    /// Local ACK timeout exponent (0..=31).
    pub timeout: u8,
    /// Transport retry count (0..=7).
    pub retry_cnt: u8,
    /// RNR retry count (0..=7, 7 = infinite).
    pub rnr_retry: u8,
    /// READ/atomic requests this side may have outstanding (0..=16).
    pub max_rd_atomic: u8,
}

/// What a peer needs to know to connect to a QP (exchanged out of band, like the
/// `ibv_qp_endpoint` of rust-ibverbs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// QP number.
    pub qpn: u32,
    /// Port MAC address.
    pub mac: [u8; 6],
    /// Port IPv4 address.
    pub ip: Ipv4Addr,
    /// PSN of the first request this QP sends (the peer's `rq_psn`).
    pub psn: u32,
}

/// Parameters of [`QueuePair::connect`]. The defaults follow perftest (timeout 14, retry count 7,
/// RNR retry 7) with all access rights, MTU 1024 and 4 outstanding READs/atomics each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectAttr {
    /// Remote access rights granted on this QP.
    pub access: AccessFlags,
    /// Path MTU.
    pub path_mtu: Mtu,
    /// READ/atomic depth, used both as requester and as responder.
    pub max_rd_atomic: u8,
    /// RNR NAK timer code.
    pub min_rnr_timer: u8,
    /// Local ACK timeout exponent.
    pub timeout: u8,
    /// Transport retry count.
    pub retry_cnt: u8,
    /// RNR retry count (7 = infinite).
    pub rnr_retry: u8,
}

impl Default for ConnectAttr {
    fn default() -> Self {
        ConnectAttr {
            access: AccessFlags::all(),
            path_mtu: Mtu::Mtu1024,
            max_rd_atomic: 4,
            min_rnr_timer: 12,
            timeout: 14,
            retry_cnt: 7,
            rnr_retry: 7,
        }
    }
}

/// Required and optional attributes (besides STATE) of `from → to`, or `None` if the transition
/// is not allowed. This is the MODIFY_QP table of docs/architecture.md.
pub fn transition_rule(from: QpState, to: QpState) -> Option<(QpAttrMask, QpAttrMask)> {
    use QpState::*;
    type M = QpAttrMask;
    let none = M::empty();
    Some(match (from, to) {
        (_, Reset) | (_, Err) => (none, none),
        (Reset, Init) => (M::PKEY_INDEX | M::PORT | M::ACCESS_FLAGS, none),
        (Init, Init) => (none, M::ACCESS_FLAGS | M::PKEY_INDEX | M::PORT),
        (Init, Rtr) => (
            M::AV
                | M::PATH_MTU
                | M::DEST_QPN
                | M::RQ_PSN
                | M::MAX_DEST_RD_ATOMIC
                | M::MIN_RNR_TIMER,
            M::ACCESS_FLAGS | M::PKEY_INDEX,
        ),
        (Rtr, Rts) => (
            M::SQ_PSN | M::MAX_QP_RD_ATOMIC | M::RETRY_CNT | M::RNR_RETRY | M::TIMEOUT,
            M::ACCESS_FLAGS | M::MIN_RNR_TIMER,
        ),
        (Rts, Rts) => (none, M::ACCESS_FLAGS | M::MIN_RNR_TIMER),
        _ => return None,
    })
}

/// Check `attr` against the transition table and the value limits, in the device's order
/// (transition, then mask, then values). Returns the mask on success.
///
/// # Errors
/// [`Error::InvalidTransition`], [`Error::MissingAttributes`], [`Error::UnsupportedAttributes`],
/// [`Error::InvalidAttribute`].
pub fn check_modify(qpn: u32, from: QpState, attr: &QpAttr) -> Result<QpAttrMask> {
    let to = attr.state;
    let (required, optional) =
        transition_rule(from, to).ok_or(Error::InvalidTransition { qpn, from, to })?;
    let mask = attr.mask();
    let given = mask - QpAttrMask::STATE;
    let missing = required - given;
    if !missing.is_empty() {
        return Err(Error::MissingAttributes {
            qpn,
            from,
            to,
            missing,
        });
    }
    let extra = given - required - optional;
    if !extra.is_empty() {
        return Err(Error::UnsupportedAttributes {
            qpn,
            from,
            to,
            extra,
        });
    }
    let bad = |attr: &'static str, value: u64, reason: &'static str| Error::InvalidAttribute {
        qpn,
        attr,
        value,
        reason,
    };
    let limit = |name: &'static str, v: Option<u64>, max: u64, reason: &'static str| match v {
        Some(v) if v > max => Err(bad(name, v, reason)),
        _ => Ok(()),
    };
    if let Some(p) = attr.pkey_index.filter(|p| *p != PKEY_INDEX) {
        return Err(bad(
            "pkey_index",
            u64::from(p),
            "the device has a single P_Key at index 0",
        ));
    }
    if let Some(p) = attr.port.filter(|p| *p != PORT_NUM) {
        return Err(bad(
            "port",
            u64::from(p),
            "the device has a single port, number 1",
        ));
    }
    let f = cmd_qp_args::TIMEOUT.mask();
    limit("timeout", attr.timeout.map(u64::from), f, "must be 0..=31")?;
    limit(
        "min_rnr_timer",
        attr.min_rnr_timer.map(u64::from),
        cmd_qp_args::MIN_RNR_TIMER.mask(),
        "must be 0..=31",
    )?;
    limit(
        "retry_cnt",
        attr.retry_cnt.map(u64::from),
        cmd_qp_args::RETRY_CNT.mask(),
        "must be 0..=7",
    )?;
    limit(
        "rnr_retry",
        attr.rnr_retry.map(u64::from),
        cmd_qp_args::RNR_RETRY.mask(),
        "must be 0..=7 (7 = infinite)",
    )?;
    limit(
        "max_rd_atomic",
        attr.max_rd_atomic.map(u64::from),
        u64::from(MAX_RD_ATOMIC),
        "must be 0..=16",
    )?;
    limit(
        "max_dest_rd_atomic",
        attr.max_dest_rd_atomic.map(u64::from),
        u64::from(MAX_RD_ATOMIC),
        "must be 0..=16",
    )?;
    limit(
        "sq_psn",
        attr.sq_psn.map(u64::from),
        cmd_qp_args::SQ_PSN.mask(),
        "PSNs are 24 bits",
    )?;
    limit(
        "rq_psn",
        attr.rq_psn.map(u64::from),
        cmd_qp_args::RQ_PSN.mask(),
        "PSNs are 24 bits",
    )?;
    limit(
        "dest_qpn",
        attr.dest_qpn.map(u64::from),
        cmd_qp_args::DEST_QPN.mask(),
        "QPNs are 24 bits",
    )?;
    Ok(mask)
}

/// Result of [`QueuePair::query`] (QUERY_QP outputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpInfo {
    /// Current state.
    pub state: QpState,
    /// Next send PSN.
    pub sq_psn: u32,
    /// Next expected receive PSN.
    pub rq_psn: u32,
    /// Requester's next WQE index.
    pub sq_ci: u16,
    /// Completer's next WQE index.
    pub comp_ci: u16,
    /// Responder's next receive WQE index.
    pub rq_ci: u16,
    /// Send producer index.
    pub sq_pi: u16,
}

impl QpInfo {
    /// Decode CMD_OUT0/CMD_OUT1 of QUERY_QP (docs/architecture.md: OUT0 = `state | sq_psn << 8 |
    /// rq_psn << 32`, OUT1 = `sq_ci | comp_ci << 16 | rq_ci << 32 | sq_pi << 48`).
    ///
    /// # Errors
    /// [`Error::UnexpectedValue`] for an undefined state.
    pub fn decode(qpn: u32, out0: u64, out1: u64) -> Result<Self> {
        use rnic_regs::query_qp_out as qo;
        let mut out = [0u8; qo::SIZE];
        out[0..8].copy_from_slice(&out0.to_le_bytes());
        out[8..16].copy_from_slice(&out1.to_le_bytes());
        let raw = qo::STATE.get(&out) as u8;
        let state = QpState::from_code(raw).ok_or(Error::UnexpectedValue {
            object: Object::Qp(qpn),
            what: "QUERY_QP state",
            value: u64::from(raw),
        })?;
        Ok(QpInfo {
            state,
            sq_psn: qo::SQ_PSN.get(&out) as u32,
            rq_psn: qo::RQ_PSN.get(&out) as u32,
            sq_ci: qo::SQ_CI.get(&out) as u16,
            comp_ci: qo::COMP_CI.get(&out) as u16,
            rq_ci: qo::RQ_CI.get(&out) as u16,
            sq_pi: qo::SQ_PI.get(&out) as u16,
        })
    }
}

/// Producer/consumer bookkeeping of one work queue ring.
#[derive(Debug)]
pub(crate) struct Ring {
    base: u64,
    log_size: u32,
    /// WQEs posted (16-bit counter, the doorbell value).
    pi: u16,
    /// WQEs known complete (from polled CQEs).
    ci: u16,
}

impl Ring {
    fn size(&self) -> u32 {
        1 << self.log_size
    }
    fn outstanding(&self) -> u32 {
        u32::from(self.pi.wrapping_sub(self.ci))
    }
    fn free(&self) -> u32 {
        self.size() - self.outstanding()
    }
    fn slot(&self, idx: u16, stride: usize) -> u64 {
        self.base + u64::from(u32::from(idx) & (self.size() - 1)) * stride as u64
    }
}

/// QP state the CQs update when they poll its completions.
pub(crate) struct QpShared {
    qpn: u32,
    state: Cell<QpState>,
    sq: RefCell<Ring>,
    rq: RefCell<Ring>,
}

impl QpShared {
    /// A CQE for WQE `wqe_idx` means it and every WQE before it (unsignaled ones) are done.
    pub(crate) fn on_completion(&self, log_target: &str, wc: &WorkCompletion) {
        let (ring, kind) = if wc.opcode.is_recv() {
            (&self.rq, QueueKind::Recv)
        } else {
            (&self.sq, QueueKind::Send)
        };
        let mut r = ring.borrow_mut();
        let next = wc.wqe_idx.wrapping_add(1);
        let advance = u32::from(next.wrapping_sub(r.ci));
        if advance == 0 || advance > r.outstanding() {
            log::warn!(
                target: log_target,
                "qp {:#x}: completion for {kind} WQE {} outside the outstanding window {}..{}; stale CQE (QP reset?) ignored",
                self.qpn,
                wc.wqe_idx,
                r.ci,
                r.pi
            );
            return;
        }
        r.ci = next;
        // The device moves the QP to ERR before it writes any error completion (contract §8-§11).
        if !wc.status.is_success() && self.state.get() != QpState::Err {
            log::info!(
                target: log_target,
                "qp {:#x}: error completion {:?}, QP is now in ERR",
                self.qpn,
                wc.status
            );
            self.state.set(QpState::Err);
        }
    }
}

/// An RC queue pair (like `ibv_qp`). Destroyed on drop.
///
/// Slot accounting: a send-queue slot is freed when a CQE for it *or for a later WQE* is polled
/// from the send CQ, so an unsignaled WR is only known complete once a later signaled WR
/// completes (as in verbs: post a signaled WR at least every queue-depth WRs, or the queue
/// fills up and [`Error::QueueFull`] is returned).
pub struct QueuePair {
    shared: Rc<QpShared>,
    pd: Rc<PdInner>,
    send_cq: Rc<CqInner>,
    recv_cq: Rc<CqInner>,
    _sq_buf: DmaBuf,
    _rq_buf: DmaBuf,
    destroyed: bool,
}

impl std::fmt::Debug for QueuePair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuePair")
            .field("qpn", &self.shared.qpn)
            .field("state", &self.shared.state.get())
            .finish()
    }
}

fn wq_log_size(what: &'static str, wr: u32) -> Result<u32> {
    let log = wr.max(2).next_power_of_two().trailing_zeros();
    if log > MAX_WQ_LOG_SIZE {
        return Err(Error::InvalidArgument {
            what,
            value: u64::from(wr),
            reason: "must be at most 32768",
        });
    }
    Ok(log)
}

impl QueuePair {
    pub(crate) fn create(pd: &Rc<PdInner>, attr: &QpInitAttr<'_>) -> Result<QueuePair> {
        let ctx = &pd.ctx;
        for cq in [attr.send_cq, attr.recv_cq] {
            if !Rc::ptr_eq(&cq.inner.ctx, ctx) {
                return Err(Error::InvalidArgument {
                    what: "QP completion queue",
                    value: u64::from(cq.cqn()),
                    reason: "belongs to another device context",
                });
            }
        }
        let log_sq = wq_log_size("max_send_wr", attr.max_send_wr)?;
        let log_rq = wq_log_size("max_recv_wr", attr.max_recv_wr)?;
        let sq_buf = DmaBuf::alloc(&ctx.dev, (send_wqe::SIZE as u64) << log_sq, 4096)?;
        let rq_buf = DmaBuf::alloc(&ctx.dev, (recv_wqe::SIZE as u64) << log_rq, 4096)?;
        let qpn = ctx.alloc_index(Resource::Qp)?;
        let mut img = [0u8; CMD_IMAGE_SIZE];
        cmd_create_qp::QPN.set(&mut img, u64::from(qpn));
        cmd_create_qp::SQ_BASE.set(&mut img, sq_buf.iova());
        cmd_create_qp::RQ_BASE.set(&mut img, rq_buf.iova());
        cmd_create_qp::LOG_SQ_SIZE.set(&mut img, u64::from(log_sq));
        cmd_create_qp::LOG_RQ_SIZE.set(&mut img, u64::from(log_rq));
        cmd_create_qp::PDN.set(&mut img, u64::from(pd.pdn));
        cmd_create_qp::SEND_CQN.set(&mut img, u64::from(attr.send_cq.cqn()));
        cmd_create_qp::RECV_CQN.set(&mut img, u64::from(attr.recv_cq.cqn()));
        if let Err(e) = ctx.command(Command::CreateQp, Object::Qp(qpn), &img) {
            ctx.free_index(Resource::Qp, qpn);
            return Err(e);
        }
        let shared = Rc::new(QpShared {
            qpn,
            state: Cell::new(QpState::Reset),
            sq: RefCell::new(Ring {
                base: sq_buf.iova(),
                log_size: log_sq,
                pi: 0,
                ci: 0,
            }),
            rq: RefCell::new(Ring {
                base: rq_buf.iova(),
                log_size: log_rq,
                pi: 0,
                ci: 0,
            }),
        });
        for cq in [attr.send_cq, attr.recv_cq] {
            cq.inner
                .qps
                .borrow_mut()
                .insert(qpn, Rc::downgrade(&shared));
        }
        log::info!(
            target: &pd.ctx.log_target,
            "qp {qpn:#x}: created in pd {:#x}: SQ {} x {}B at {:#x}, RQ {} x {}B at {:#x}, send cq {:#x}, recv cq {:#x}",
            pd.pdn,
            1u32 << log_sq,
            send_wqe::SIZE,
            sq_buf.iova(),
            1u32 << log_rq,
            recv_wqe::SIZE,
            rq_buf.iova(),
            attr.send_cq.cqn(),
            attr.recv_cq.cqn()
        );
        Ok(QueuePair {
            shared,
            pd: pd.clone(),
            send_cq: attr.send_cq.inner.clone(),
            recv_cq: attr.recv_cq.inner.clone(),
            _sq_buf: sq_buf,
            _rq_buf: rq_buf,
            destroyed: false,
        })
    }

    fn ctx(&self) -> &CtxInner {
        &self.pd.ctx
    }

    /// The QP number.
    pub fn qpn(&self) -> u32 {
        self.shared.qpn
    }

    /// The PD number.
    pub fn pdn(&self) -> u32 {
        self.pd.pdn
    }

    /// The state as the driver last knew it: set by successful modifies, by [`QueuePair::query`],
    /// and to ERR when an error completion of this QP is polled.
    pub fn state(&self) -> QpState {
        self.shared.state.get()
    }

    /// Send queue capacity.
    pub fn send_queue_depth(&self) -> u32 {
        self.shared.sq.borrow().size()
    }

    /// Receive queue capacity.
    pub fn recv_queue_depth(&self) -> u32 {
        self.shared.rq.borrow().size()
    }

    /// Send WQEs posted and not yet known complete.
    pub fn send_outstanding(&self) -> u32 {
        self.shared.sq.borrow().outstanding()
    }

    /// Receive WQEs posted and not yet known complete.
    pub fn recv_outstanding(&self) -> u32 {
        self.shared.rq.borrow().outstanding()
    }

    /// Host address of the send queue ring.
    pub fn send_queue_addr(&self) -> u64 {
        self.shared.sq.borrow().base
    }

    /// Host address of the receive queue ring.
    pub fn recv_queue_addr(&self) -> u64 {
        self.shared.rq.borrow().base
    }

    /// Modify the QP (like `ibv_modify_qp`). The transition and attributes are checked against
    /// the contract's table before the device is touched.
    ///
    /// # Errors
    /// [`Error::InvalidTransition`], [`Error::MissingAttributes`],
    /// [`Error::UnsupportedAttributes`], [`Error::InvalidAttribute`] (nothing sent to the
    /// device); [`Error::TransitionRejected`] when the device answers BAD_STATE/BAD_PARAM; other
    /// command and backend errors.
    pub fn modify(&self, attr: &QpAttr) -> Result<()> {
        check_modify(self.qpn(), self.state(), attr)?;
        self.send_modify(attr)
    }

    /// **For tests of the device's own checks.** Send MODIFY_QP without the driver's checks.
    ///
    /// # Errors
    /// As [`QueuePair::modify`], minus the driver-side checks.
    pub fn modify_unchecked(&self, attr: &QpAttr) -> Result<()> {
        self.send_modify(attr)
    }

    fn send_modify(&self, attr: &QpAttr) -> Result<()> {
        let (qpn, from, to) = (self.qpn(), self.state(), attr.state);
        match self
            .ctx()
            .command(Command::ModifyQp, Object::Qp(qpn), &attr.encode(qpn))
        {
            Ok(_) => {}
            Err(Error::CommandFailed {
                status: status @ (CommandStatus::BadState | CommandStatus::BadParam),
                ..
            }) => {
                return Err(Error::TransitionRejected {
                    qpn,
                    from,
                    to,
                    status,
                });
            }
            Err(e) => return Err(e),
        }
        self.shared.state.set(to);
        if to == QpState::Reset {
            // The device zeroes every queue index on RESET (contract: MODIFY_QP any → RESET).
            for r in [&self.shared.sq, &self.shared.rq] {
                let mut r = r.borrow_mut();
                r.pi = 0;
                r.ci = 0;
            }
        }
        log::info!(target: &self.pd.ctx.log_target, "qp {qpn:#x}: {from} -> {to} ({:?})", attr.mask());
        Ok(())
    }

    /// RESET → INIT with `access` (P_Key index 0, port 1).
    ///
    /// # Errors
    /// As [`QueuePair::modify`].
    pub fn to_init(&self, access: AccessFlags) -> Result<()> {
        self.modify(
            &QpAttr::new(QpState::Init)
                .with_pkey_index(PKEY_INDEX)
                .with_port(PORT_NUM)
                .with_access(access),
        )
    }

    /// INIT → RTR: connect to the peer.
    ///
    /// # Errors
    /// As [`QueuePair::modify`].
    pub fn to_rtr(&self, a: &RtrAttr) -> Result<()> {
        log::info!(
            target: &self.pd.ctx.log_target,
            "qp {:#x}: connecting to qp {:#x} at {} / {} (rq_psn {:#x}, {:?})",
            self.qpn(),
            a.dest_qpn,
            crate::context::fmt_mac(a.dest_mac),
            a.dest_ip,
            a.rq_psn,
            a.path_mtu
        );
        self.modify(
            &QpAttr::new(QpState::Rtr)
                .with_av(AddressVector {
                    dest_mac: a.dest_mac,
                    dest_ip: a.dest_ip,
                })
                .with_path_mtu(a.path_mtu)
                .with_dest_qpn(a.dest_qpn)
                .with_rq_psn(a.rq_psn)
                .with_max_dest_rd_atomic(a.max_dest_rd_atomic)
                .with_min_rnr_timer(a.min_rnr_timer),
        )
    }

    /// RTR → RTS.
    ///
    /// # Errors
    /// As [`QueuePair::modify`].
    pub fn to_rts(&self, a: &RtsAttr) -> Result<()> {
        self.modify(
            &QpAttr::new(QpState::Rts)
                .with_sq_psn(a.sq_psn)
                .with_timeout(a.timeout)
                .with_retry_cnt(a.retry_cnt)
                .with_rnr_retry(a.rnr_retry)
                .with_max_rd_atomic(a.max_rd_atomic),
        )
    }

    /// This QP's [`Endpoint`] for the peer, announcing `psn` as its first send PSN (pass the
    /// same value to [`QueuePair::connect`]).
    ///
    /// # Errors
    /// [`Error::PortNotConfigured`] before [`Context::set_port`].
    pub fn endpoint(&self, psn: u32) -> Result<Endpoint> {
        let (mac, ip) = self.ctx().port.get().ok_or(Error::PortNotConfigured)?;
        Ok(Endpoint {
            qpn: self.qpn(),
            mac,
            ip,
            psn,
        })
    }

    /// Connect to `remote`: RESET → INIT → RTR → RTS in one call (from INIT, the first step is
    /// skipped). `local_psn` is the first PSN this QP sends (as announced by
    /// [`QueuePair::endpoint`]).
    ///
    /// # Errors
    /// [`Error::InvalidTransition`] unless the QP is in RESET or INIT; the errors of
    /// [`QueuePair::modify`] for each step.
    pub fn connect(&self, local_psn: u32, remote: &Endpoint, attr: &ConnectAttr) -> Result<()> {
        match self.state() {
            QpState::Reset => self.to_init(attr.access)?,
            QpState::Init => {}
            from => {
                return Err(Error::InvalidTransition {
                    qpn: self.qpn(),
                    from,
                    to: QpState::Rtr,
                })
            }
        }
        self.to_rtr(&RtrAttr {
            dest_qpn: remote.qpn,
            rq_psn: remote.psn,
            path_mtu: attr.path_mtu,
            dest_mac: remote.mac,
            dest_ip: remote.ip,
            max_dest_rd_atomic: attr.max_rd_atomic,
            min_rnr_timer: attr.min_rnr_timer,
        })?;
        self.to_rts(&RtsAttr {
            sq_psn: local_psn,
            timeout: attr.timeout,
            retry_cnt: attr.retry_cnt,
            rnr_retry: attr.rnr_retry,
            max_rd_atomic: attr.max_rd_atomic,
        })
    }

    /// Any state → ERR: outstanding WRs are flushed with `WR_FLUSH_ERR` completions.
    ///
    /// # Errors
    /// As [`QueuePair::modify`].
    pub fn to_err(&self) -> Result<()> {
        self.modify(&QpAttr::new(QpState::Err))
    }

    /// Any state → RESET: the device forgets all queue progress; so does the driver (WRs still
    /// outstanding are dropped without completions).
    ///
    /// # Errors
    /// As [`QueuePair::modify`].
    pub fn reset(&self) -> Result<()> {
        self.modify(&QpAttr::new(QpState::Reset))
    }

    /// Read the QP's state and progress from the device (QUERY_QP); refreshes [`QueuePair::state`].
    ///
    /// # Errors
    /// [`Error::UnexpectedValue`] for an undefined state; command and backend errors.
    pub fn query(&self) -> Result<QpInfo> {
        let qpn = self.qpn();
        let (o0, o1) = self
            .ctx()
            .index_command(Command::QueryQp, Object::Qp(qpn), qpn)?;
        let info = QpInfo::decode(qpn, o0, o1)?;
        self.shared.state.set(info.state);
        Ok(info)
    }

    fn check_post(&self, queue: QueueKind) -> Result<()> {
        let state = self.state();
        // IBTA lets WRs be posted in ERR (they complete with WR_FLUSH_ERR); the device flushes them.
        let (ok, needed) = match queue {
            QueueKind::Send => (matches!(state, QpState::Rts | QpState::Err), "RTS"),
            QueueKind::Recv => (!matches!(state, QpState::Reset), "INIT, RTR or RTS"),
        };
        if ok {
            Ok(())
        } else {
            Err(Error::QpNotReady {
                qpn: self.qpn(),
                queue,
                state,
                needed,
            })
        }
    }

    fn check_send_wr(&self, wr: &SendWr) -> Result<()> {
        let qpn = self.qpn();
        let max = self
            .ctx()
            .caps
            .max_send_sge
            .min(params::MAX_SEND_SGE as u32);
        if wr.sgl.len() > max as usize {
            return Err(Error::TooManySges {
                qpn,
                queue: QueueKind::Send,
                given: wr.sgl.len(),
                max,
            });
        }
        let invalid = |reason: String| Error::InvalidWorkRequest {
            qpn,
            wr_id: wr.wr_id,
            reason,
        };
        if let Some(d) = &wr.inline_data {
            if wr.opcode.is_atomic() || matches!(wr.opcode, crate::WrOpcode::Read { .. }) {
                return Err(invalid("inline data is for SEND and RDMA WRITE only".into()));
            }
            if !wr.sgl.is_empty() {
                return Err(invalid("an inline WR carries its data, not SGEs: leave sgl empty".into()));
            }
            if d.len() as u64 > params::MAX_INLINE {
                return Err(invalid(format!(
                    "{} bytes of inline data exceed MAX_INLINE {}: post it with an SGE",
                    d.len(),
                    params::MAX_INLINE
                )));
            }
        }
        if wr.opcode.is_atomic() && (wr.sgl.len() != 1 || wr.sgl[0].len != 8) {
            return Err(invalid(
                "an atomic needs exactly one SGE of 8 bytes for the original value".into(),
            ));
        }
        if wr.total_len() > params::MAX_MSG_LEN {
            return Err(invalid(format!(
                "message of {} bytes exceeds MAX_MSG_LEN {}",
                wr.total_len(),
                params::MAX_MSG_LEN
            )));
        }
        Ok(())
    }

    fn reserve(&self, queue: QueueKind, n: usize) -> Result<()> {
        let ring = match queue {
            QueueKind::Send => self.shared.sq.borrow(),
            QueueKind::Recv => self.shared.rq.borrow(),
        };
        if (ring.free() as usize) < n {
            return Err(Error::QueueFull {
                qpn: self.qpn(),
                queue,
                depth: ring.size(),
            });
        }
        Ok(())
    }

    /// Write `wqes` into the send ring and ring the SQ doorbell once.
    fn push_send(&self, wqes: &[[u8; send_wqe::SIZE]]) -> Result<()> {
        let mut sq = self.shared.sq.borrow_mut();
        for w in wqes {
            let addr = sq.slot(sq.pi, send_wqe::SIZE);
            self.ctx().dma_write(addr, w, "writing a send WQE")?;
            sq.pi = sq.pi.wrapping_add(1);
        }
        self.ctx().write(
            Context::qp_doorbell(self.qpn()) + params::DB_SQ_PI,
            u64::from(sq.pi),
        );
        Ok(())
    }

    /// Post one send WR (like `ibv_post_send`).
    ///
    /// The SGEs must stay registered until the WR completes; the driver cannot check this
    /// (the device reports `LOC_PROT_ERR` if an MR vanished).
    ///
    /// # Errors
    /// [`Error::QpNotReady`] unless the QP is in RTS (or ERR, where the WR is flushed);
    /// [`Error::TooManySges`]; [`Error::InvalidWorkRequest`] (atomic SGE shape, message too
    /// long); [`Error::QueueFull`]; backend errors.
    pub fn post_send(&self, wr: &SendWr) -> Result<()> {
        self.post_send_list(std::slice::from_ref(wr))
    }

    /// Post several send WRs with a single doorbell. All are checked first: on error nothing is
    /// posted.
    ///
    /// # Errors
    /// As [`QueuePair::post_send`].
    pub fn post_send_list(&self, wrs: &[SendWr]) -> Result<()> {
        self.check_post(QueueKind::Send)?;
        for wr in wrs {
            self.check_send_wr(wr)?;
        }
        self.reserve(QueueKind::Send, wrs.len())?;
        for wr in wrs {
            log::debug!(
                target: &self.pd.ctx.log_target,
                "qp {:#x}: post_send wr_id {:#x} {:?} {} SGEs {} bytes{}{}",
                self.qpn(),
                wr.wr_id,
                wr.opcode,
                wr.sgl.len(),
                wr.total_len(),
                if wr.signaled { " signaled" } else { "" },
                if wr.solicited { " solicited" } else { "" }
            );
        }
        let wqes: Vec<_> = wrs.iter().map(encode_send_wqe).collect();
        self.push_send(&wqes)
    }

    /// **For tests of malformed input only.** Post a raw 128-byte send WQE, bypassing the state
    /// and content checks (only the ring-space check remains, so the ring is never overrun).
    /// If the WQE's flags are not SIGNALED and it succeeds, its slot is freed only by a later
    /// completion, as for any unsignaled WR.
    ///
    /// # Errors
    /// [`Error::QueueFull`]; backend errors.
    pub fn post_send_raw(&self, wqe: &[u8; send_wqe::SIZE]) -> Result<()> {
        self.reserve(QueueKind::Send, 1)?;
        log::debug!(
            target: &self.pd.ctx.log_target,
            "qp {:#x}: post_send_raw wr_id {:#x}",
            self.qpn(),
            send_wqe::WR_ID.get(wqe)
        );
        self.push_send(std::slice::from_ref(wqe))
    }

    /// Post one receive WR (like `ibv_post_recv`).
    ///
    /// # Errors
    /// [`Error::QpNotReady`] in RESET; [`Error::TooManySges`]; [`Error::QueueFull`]; backend errors.
    pub fn post_recv(&self, wr: &RecvWr) -> Result<()> {
        self.post_recv_list(std::slice::from_ref(wr))
    }

    /// Post several receive WRs with a single doorbell; all are checked first.
    ///
    /// # Errors
    /// As [`QueuePair::post_recv`].
    pub fn post_recv_list(&self, wrs: &[RecvWr]) -> Result<()> {
        let qpn = self.qpn();
        self.check_post(QueueKind::Recv)?;
        let max = self
            .ctx()
            .caps
            .max_recv_sge
            .min(params::MAX_RECV_SGE as u32);
        if let Some(wr) = wrs.iter().find(|wr| wr.sgl.len() > max as usize) {
            return Err(Error::TooManySges {
                qpn,
                queue: QueueKind::Recv,
                given: wr.sgl.len(),
                max,
            });
        }
        self.reserve(QueueKind::Recv, wrs.len())?;
        let mut rq = self.shared.rq.borrow_mut();
        for wr in wrs {
            log::debug!(
                target: &self.pd.ctx.log_target,
                "qp {qpn:#x}: post_recv wr_id {:#x} {} SGEs",
                wr.wr_id,
                wr.sgl.len()
            );
            let addr = rq.slot(rq.pi, recv_wqe::SIZE);
            self.ctx()
                .dma_write(addr, &encode_recv_wqe(wr), "writing a receive WQE")?;
            rq.pi = rq.pi.wrapping_add(1);
        }
        self.ctx().write(
            Context::qp_doorbell(qpn) + params::DB_RQ_PI,
            u64::from(rq.pi),
        );
        Ok(())
    }

    fn destroy_now(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.destroyed, true) {
            return Ok(());
        }
        let qpn = self.qpn();
        for cq in [&self.send_cq, &self.recv_cq] {
            cq.qps.borrow_mut().remove(&qpn);
        }
        self.ctx()
            .index_command(Command::DestroyQp, Object::Qp(qpn), qpn)?;
        self.ctx().free_index(Resource::Qp, qpn);
        log::info!(target: &self.pd.ctx.log_target, "qp {qpn:#x}: destroyed");
        Ok(())
    }

    /// Destroy the QP now (dropping it does the same but can only log failures).
    ///
    /// # Errors
    /// Command and backend errors; the QPN is then leaked, not reused.
    pub fn destroy(mut self) -> Result<()> {
        self.destroy_now()
    }
}

impl Drop for QueuePair {
    fn drop(&mut self) {
        if let Err(e) = self.destroy_now() {
            log::error!(
                target: &self.pd.ctx.log_target,
                "qp {:#x}: destroying on drop failed (QPN leaked): {e}",
                self.qpn()
            );
        }
    }
}
