//! Verbs-shaped driver for the RNIC (work in progress).
pub mod device;
pub use device::{Device, DeviceError};
