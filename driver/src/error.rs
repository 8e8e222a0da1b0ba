// SPDX-License-Identifier: Apache-2.0
//! The driver's error type.

use crate::cq::WorkCompletion;
use crate::device::DeviceError;
use crate::types::{Command, CommandStatus, Object, QpAttrMask, QpState, QueueKind, Resource};

/// Result type of the driver.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the driver. Each variant carries the object it is about and
/// its message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend failed (DMA, simulation).
    #[error("device backend failed while {during}: {source}")]
    Device {
        /// What the driver was doing.
        during: &'static str,
        /// The backend's error.
        #[source]
        source: DeviceError,
    },
    /// DEV_ID does not identify a device with the interface this driver speaks.
    #[error("DEV_ID {found:#018x} is not a supported RNIC (expected {expected:#018x}); use a driver built from the same spec/rnic.toml as the device")]
    UnsupportedDevice {
        /// DEV_ID read from the device.
        found: u64,
        /// DEV_ID this driver was generated for.
        expected: u64,
    },
    /// An admin command stayed BUSY for the whole poll budget.
    #[error("{command} on {object} still BUSY after {polls} progress calls; the device is hung or the poll limit (Context::set_command_poll_limit) is too low")]
    CommandTimeout {
        /// The command.
        command: Command,
        /// The object it was about.
        object: Object,
        /// Progress calls made.
        polls: u32,
    },
    /// The device refused an admin command.
    #[error("{command} on {object} failed with {status}: {}", .status.hint())]
    CommandFailed {
        /// The command.
        command: Command,
        /// The object it was about.
        object: Object,
        /// The device's answer.
        status: CommandStatus,
    },
    /// The device refused a QP transition the driver considered legal (the driver's cached
    /// state is stale, e.g. the QP went to ERR on its own, or driver and device disagree).
    #[error("QP {qpn}: device refused {from} -> {to} with {status}; query the QP (QueuePair::query) for its real state")]
    TransitionRejected {
        /// Queue pair.
        qpn: u32,
        /// State the driver believed the QP was in.
        from: QpState,
        /// Requested state.
        to: QpState,
        /// The device's answer.
        status: CommandStatus,
    },
    /// The function stopped answering (its registers read all-ones): a VF whose VFs were
    /// disabled, or a device that was reset or removed.
    #[error("{command} on {object}: the function does not answer (reads all-ones); were its VFs disabled or the device reset? reopen the context")]
    FunctionGone {
        /// The command.
        command: Command,
        /// The object it was about.
        object: Object,
    },
    /// The function does not advertise Function Level Reset (Device Capabilities bit 28).
    #[error("this function does not support Function Level Reset (only VFs do); disable and re-enable the VFs, or reset the device")]
    FlrNotSupported,
    /// A Function Level Reset or VF disable was started but the device kept Transactions Pending
    /// set for the whole poll budget.
    #[error("{what}: Transactions Pending still set after {polls} progress calls; the teardown is hung (or the device has very many QPs with WQEs to flush)")]
    ResetTimeout {
        /// Which reset.
        what: &'static str,
        /// Progress calls made.
        polls: u32,
    },
    /// The function has no SR-IOV capability.
    #[error("this function has no SR-IOV capability; VFs are enabled from the PF (function 0)")]
    NoSriov,
    /// A VF count of 0 or above TotalVFs.
    #[error("cannot enable {requested} VFs: the PF supports 1..={total} (TotalVFs)")]
    TooManyVfs {
        /// VFs asked for.
        requested: u16,
        /// TotalVFs of the device.
        total: u16,
    },
    /// VFs are already enabled.
    #[error("{num_vfs} VFs are already enabled; disable them (Context::disable_vfs) before changing the number")]
    VfsEnabled {
        /// NumVFs now.
        num_vfs: u16,
    },
    /// The device did not take a configuration value.
    #[error("the device did not accept {field}: wrote {wrote:#x}, read back {read:#x}")]
    SriovRejected {
        /// The configuration field.
        field: &'static str,
        /// Value written.
        wrote: u32,
        /// Value read back.
        read: u32,
    },
    /// All indices of a resource are in use.
    #[error("out of {resource} (device limit {limit}); destroy unused objects first")]
    ResourceExhausted {
        /// The resource.
        resource: Resource,
        /// The device's limit.
        limit: u32,
    },
    /// The QP state machine does not allow this transition.
    #[error("QP {qpn}: transition {from} -> {to} is not allowed; see the MODIFY_QP table in docs/architecture.md")]
    InvalidTransition {
        /// Queue pair.
        qpn: u32,
        /// Current state.
        from: QpState,
        /// Requested state.
        to: QpState,
    },
    /// A required attribute of the transition is not set.
    #[error("QP {qpn}: transition {from} -> {to} requires attributes {missing:?}; set them on the QpAttr")]
    MissingAttributes {
        /// Queue pair.
        qpn: u32,
        /// Current state.
        from: QpState,
        /// Requested state.
        to: QpState,
        /// Required attributes that were not given.
        missing: QpAttrMask,
    },
    /// Attributes were given that the transition does not accept.
    #[error(
        "QP {qpn}: transition {from} -> {to} does not accept attributes {extra:?}; remove them"
    )]
    UnsupportedAttributes {
        /// Queue pair.
        qpn: u32,
        /// Current state.
        from: QpState,
        /// Requested state.
        to: QpState,
        /// Attributes not allowed for this transition.
        extra: QpAttrMask,
    },
    /// An attribute value is out of range.
    #[error("QP {qpn}: attribute {attr} = {value} is invalid: {reason}")]
    InvalidAttribute {
        /// Queue pair.
        qpn: u32,
        /// Attribute name.
        attr: &'static str,
        /// Value given.
        value: u64,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// Work requests cannot be posted in the QP's current state.
    #[error(
        "QP {qpn}: cannot post to the {queue} in state {state}; move the QP to {needed} first"
    )]
    QpNotReady {
        /// Queue pair.
        qpn: u32,
        /// The queue.
        queue: QueueKind,
        /// Current (cached) state.
        state: QpState,
        /// The states that allow posting.
        needed: &'static str,
    },
    /// The work queue has no free slot.
    #[error("QP {qpn}: {queue} is full ({depth} entries outstanding); poll completions (an unsignaled WR is freed only when a later signaled WR completes)")]
    QueueFull {
        /// Queue pair.
        qpn: u32,
        /// The queue.
        queue: QueueKind,
        /// Ring capacity.
        depth: u32,
    },
    /// More scatter/gather entries than the queue supports.
    #[error("QP {qpn}: {given} SGEs posted to the {queue}, at most {max} allowed; merge buffers or split the WR")]
    TooManySges {
        /// Queue pair.
        qpn: u32,
        /// The queue.
        queue: QueueKind,
        /// SGEs given.
        given: usize,
        /// Device limit (DEV_CAPS2).
        max: u32,
    },
    /// A work request is malformed (not the device's problem; the driver refuses it).
    #[error("QP {qpn}: invalid work request {wr_id:#x}: {reason}")]
    InvalidWorkRequest {
        /// Queue pair.
        qpn: u32,
        /// The WR's id.
        wr_id: u64,
        /// What is wrong.
        reason: String,
    },
    /// An access outside a memory region.
    #[error("MR (lkey {lkey:#x}): access at offset {offset} length {len} exceeds the region length {mr_len}")]
    OutOfBounds {
        /// The region's lkey.
        lkey: u32,
        /// Offset of the access.
        offset: u64,
        /// Length of the access.
        len: u64,
        /// Region length.
        mr_len: u64,
    },
    /// An argument of a driver call is invalid.
    #[error("invalid {what} = {value}: {reason}")]
    InvalidArgument {
        /// The argument.
        what: &'static str,
        /// Value given.
        value: u64,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// Completions did not arrive within the progress budget.
    #[error("CQ {cqn}: {} of {wanted} completions after {progress_calls} progress calls; the peer may not be connected, the QP may be stalled, or the budget is too small", .completions.len())]
    CqTimeout {
        /// Completion queue.
        cqn: u32,
        /// Completions requested.
        wanted: usize,
        /// Completions that did arrive (not lost: they are returned here).
        completions: Vec<WorkCompletion>,
        /// Progress calls made.
        progress_calls: u32,
    },
    /// No interrupt arrived for an armed CQ within the progress budget.
    #[error("CQ {cqn}: no interrupt on vector {vector} after {progress_calls} progress calls; arm the CQ (Cq::arm) before waiting")]
    InterruptTimeout {
        /// Completion queue.
        cqn: u32,
        /// Its MSI-X vector.
        vector: u16,
        /// Progress calls made.
        progress_calls: u32,
    },
    /// An object cannot be destroyed while other objects use it.
    #[error("{object} is still used by {users} other object(s); destroy those first")]
    InUse {
        /// The object.
        object: Object,
        /// Number of other holders.
        users: usize,
    },
    /// An operation needs the port address, which has not been set.
    #[error("the port address is not set; call Context::set_port first")]
    PortNotConfigured,
    /// The device returned a value the spec does not allow.
    #[error("{object}: device returned {what} = {value:#x}, which the spec does not define; this is a device bug")]
    UnexpectedValue {
        /// The object.
        object: Object,
        /// The field.
        what: &'static str,
        /// The value.
        value: u64,
    },
}

impl Error {
    /// Wrap a backend error with what the driver was doing.
    pub(crate) fn device(during: &'static str) -> impl FnOnce(DeviceError) -> Error {
        move |source| Error::Device { during, source }
    }
}
