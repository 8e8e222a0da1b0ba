// SPDX-License-Identifier: Apache-2.0
//! Packet capture of a link, as a classic pcap file that Wireshark/tshark decode (UDP 4791 is
//! RoCEv2). Written with the `pcap-file` crate; timestamps are modelled time at the nominal clock.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::pcap::{PcapPacket, PcapWriter};

/// Nominal clock period in picoseconds (250 MHz).
pub const CLOCK_PERIOD_PS: u64 = 4000;

/// Errors writing a capture.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file could not be created or written.
    #[error("cannot write packet capture {path}: {source}")]
    Io {
        /// Capture file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: pcap_file::PcapError,
    },
}

/// A pcap file receiving every frame of a link.
pub struct Capture {
    path: PathBuf,
    writer: PcapWriter<File>,
    /// Frames written.
    pub frames: u64,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Capture({}, {} frames)", self.path.display(), self.frames)
    }
}

impl Capture {
    /// Create (truncate) `path`.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn create(path: &Path) -> Result<Capture, CaptureError> {
        let io = |e: std::io::Error| CaptureError::Io { path: path.to_owned(), source: pcap_file::PcapError::IoError(e) };
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
        }
        let file = File::create(path).map_err(io)?;
        let writer = PcapWriter::new(file)
            .map_err(|source| CaptureError::Io { path: path.to_owned(), source })?;
        Ok(Capture { path: path.to_owned(), writer, frames: 0 })
    }

    /// Append a frame seen at `cycle`.
    ///
    /// # Errors
    /// The write fails.
    pub fn write(&mut self, cycle: u64, frame: &[u8]) -> Result<(), CaptureError> {
        let ts = Duration::from_nanos(cycle * CLOCK_PERIOD_PS / 1000);
        let pkt = PcapPacket::new(ts, frame.len() as u32, frame);
        self.writer
            .write_packet(&pkt)
            .map_err(|source| CaptureError::Io { path: self.path.clone(), source })?;
        self.frames += 1;
        Ok(())
    }

    /// Path of the capture file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Make sure every frame is in the file (frames are written unbuffered, so this is a no-op
    /// kept for callers that want to state the intent before reading the file).
    pub fn flush(&mut self) {}
}
