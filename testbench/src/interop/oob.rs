// SPDX-License-Identifier: Apache-2.0
//! The out-of-band exchange of rdma-core's `ibv_rc_pingpong` (libibverbs/examples): one
//! NUL-terminated text message each way over TCP (port 18515 by default),
//! `"%04x:%06x:%06x:%s"` = LID, QPN, PSN and the GID as 32 hex digits (`gid_to_wire_gid`: the four
//! 32-bit words of the GID, each printed big-endian, i.e. the GID's bytes in order), 52 bytes
//! with the NUL. The client writes its message, reads the server's, then writes `"done"` (5
//! bytes with the NUL); the server reads the client's, connects its QP (RTR, RTS), then writes
//! its own and reads the `"done"`.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

/// What runs while an exchange waits for the peer: the simulated NIC and its bridge, so that the
/// guest's ARP requests (sent while it connects its QP) get their answers.
pub type Pump<'a> = &'a mut dyn FnMut() -> Result<(), String>;

/// `read_exact` on `s`, running `pump` whenever nothing has arrived.
///
/// # Errors
/// EOF, I/O errors, `deadline`, or the pump's error.
pub fn read_exact_pumping(s: &mut TcpStream, buf: &mut [u8], pump: Pump<'_>, deadline: Instant) -> Result<(), String> {
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut got = 0;
    let r = loop {
        if got == buf.len() {
            break Ok(());
        }
        match s.read(&mut buf[got..]) {
            Ok(0) => break Err(format!("connection closed after {got} of {} bytes", buf.len())),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    break Err(format!("timed out after {got} of {} bytes", buf.len()));
                }
                if let Err(e) = pump() {
                    break Err(e);
                }
            }
            Err(e) => break Err(e.to_string()),
        }
    };
    s.set_nonblocking(false).map_err(|e| e.to_string())?;
    r
}

/// Size of one message, NUL included (`sizeof "0000:000000:000000:" + 32 hex digits`).
pub const PP_MSG_LEN: usize = 52;

/// One side's address, as `ibv_rc_pingpong` exchanges it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PpDest {
    /// LID (0 on RoCE).
    pub lid: u16,
    /// QP number (24 bits).
    pub qpn: u32,
    /// First PSN (24 bits).
    pub psn: u32,
    /// GID.
    pub gid: [u8; 16],
}

impl PpDest {
    /// The wire message, NUL-terminated.
    pub fn encode(&self) -> [u8; PP_MSG_LEN] {
        let gid: String = self.gid.iter().map(|b| format!("{b:02x}")).collect();
        let s = format!("{:04x}:{:06x}:{:06x}:{gid}", self.lid, self.qpn & 0xff_ffff, self.psn & 0xff_ffff);
        let mut out = [0u8; PP_MSG_LEN];
        out[..s.len()].copy_from_slice(s.as_bytes());
        out
    }

    /// Parse a message (like the tools' `sscanf("%x:%x:%x:%s")` + `wire_gid_to_gid`).
    ///
    /// # Errors
    /// Not in the format.
    pub fn decode(msg: &[u8]) -> Result<PpDest, String> {
        let end = msg.iter().position(|&b| b == 0).unwrap_or(msg.len());
        let s = std::str::from_utf8(&msg[..end]).map_err(|_| "non-text pingpong message".to_string())?;
        let f: Vec<&str> = s.split(':').collect();
        let bad = || format!("bad pingpong message `{s}`");
        if f.len() != 4 || f[3].len() != 32 {
            return Err(bad());
        }
        let hex = |t: &str| u32::from_str_radix(t, 16).map_err(|_| bad());
        let mut gid = [0u8; 16];
        for (i, g) in gid.iter_mut().enumerate() {
            *g = u8::from_str_radix(&f[3][2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(PpDest { lid: hex(f[0])? as u16, qpn: hex(f[1])?, psn: hex(f[2])?, gid })
    }
}

/// Client half: send ours, receive theirs (the caller then connects its QP and calls
/// [`pp_client_done`]).
///
/// # Errors
/// I/O or format errors.
pub fn pp_client_exchange(s: &mut TcpStream, me: &PpDest, pump: Pump<'_>, deadline: Instant) -> Result<PpDest, String> {
    s.write_all(&me.encode()).map_err(|e| format!("pingpong exchange: write: {e}"))?;
    let mut buf = [0u8; PP_MSG_LEN];
    read_exact_pumping(s, &mut buf, pump, deadline).map_err(|e| format!("pingpong exchange: read: {e}"))?;
    PpDest::decode(&buf)
}

/// Client: the final `"done"`.
///
/// # Errors
/// I/O errors.
pub fn pp_client_done(s: &mut TcpStream) -> Result<(), String> {
    s.write_all(b"done\0").map_err(|e| format!("pingpong exchange: write done: {e}"))
}

/// Server half 1: the client's message.
///
/// # Errors
/// I/O or format errors.
pub fn pp_server_read(s: &mut TcpStream, pump: Pump<'_>, deadline: Instant) -> Result<PpDest, String> {
    let mut buf = [0u8; PP_MSG_LEN];
    read_exact_pumping(s, &mut buf, pump, deadline).map_err(|e| format!("pingpong exchange: read: {e}"))?;
    PpDest::decode(&buf)
}

/// Server half 2 (after connecting the QP): ours, then the client's `"done"`.
///
/// # Errors
/// I/O errors.
pub fn pp_server_reply(s: &mut TcpStream, me: &PpDest, pump: Pump<'_>, deadline: Instant) -> Result<(), String> {
    s.write_all(&me.encode()).map_err(|e| format!("pingpong exchange: write: {e}"))?;
    let mut done = [0u8; 5];
    read_exact_pumping(s, &mut done, pump, deadline).map_err(|e| format!("pingpong exchange: read done: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pingpong_message_roundtrip() {
        let d = PpDest { lid: 0, qpn: 0x11, psn: 0xabcdef, gid: super::super::ipv4_gid(std::net::Ipv4Addr::new(192, 0, 2, 2)) };
        let m = d.encode();
        assert_eq!(&m[..51], b"0000:000011:abcdef:00000000000000000000ffffc0000202");
        assert_eq!(m[51], 0);
        assert_eq!(PpDest::decode(&m).unwrap(), d);
    }
}
