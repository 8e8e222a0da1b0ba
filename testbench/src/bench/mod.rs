// SPDX-License-Identifier: Apache-2.0
//! `rnic-bench`: the perftest family (write/read/send, bandwidth and latency) on two linked
//! NICs in modelled time, and the simulation-speed measurement. See `docs/bench.md`.
//!
//! * [`stats`]: perftest's statistics (latency percentiles, average / peak bandwidth), units,
//!   iteration scaling.
//! * [`run`]: the tests themselves on a [`crate::harness::Pair`].
//! * [`report`]: result points, tables, the JSON record and the SVG plot.
//! * [`simspeed`]: cycles per wall second of the bare model, the harness, lockstep and the model.

pub mod report;
pub mod run;
pub mod simspeed;
pub mod stats;
