// SPDX-License-Identifier: Apache-2.0
//! Errors of the model layer.

use crate::Task;
use thiserror::Error;

/// A host-memory access the backing store could not serve.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("host memory access failed: func {func}, addr {addr:#x}, len {len}")]
pub struct MemError {
    /// PCIe function of the request.
    pub func: u8,
    /// Host (IO virtual) address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Why [`crate::Nic::run_task`] could not run a task.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelError {
    /// A DMA access of the task failed; the task stopped part way.
    #[error("DMA failed: {0}")]
    Mem(#[from] MemError),
    /// The task cannot run in the current state (nothing to do for it): in lockstep this
    /// means the RTL started a task the model considers impossible. Carries the task and what
    /// was missing.
    #[error("no such task {0:?}: {1}")]
    NoSuchTask(Task, &'static str),
}
