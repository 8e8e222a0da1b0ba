// SPDX-License-Identifier: Apache-2.0
//! Independent checks of frames, written from the RoCEv2 rules and not from the model or RTL:
//! the ICRC recomputed with a plain CRC-32 over the masked bytes, and tshark's decoding.

use std::path::Path;
use std::process::Command;

/// ICRC of a RoCEv2-over-IPv4 frame (Ethernet header first, ICRC last), computed from scratch:
/// CRC-32 over 8 bytes of 0xFF, the IPv4 header with TOS, TTL and checksum set to ones, the UDP
/// header with the checksum set to ones, the BTH with byte 4 set to ones, and the rest up to the
/// ICRC. Returns (computed, found on the wire), or None if the frame is not IPv4/UDP.
pub fn icrc_check(frame: &[u8]) -> Option<(u32, u32)> {
    if frame.len() < 14 + 20 + 8 + 12 + 4 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip_total = u16::from_be_bytes([frame[16], frame[17]]) as usize;
    let end = 14 + ip_total;
    if end > frame.len() || ip_total < 20 + 8 + 12 + 4 {
        return None;
    }
    let mut buf = vec![0xFFu8; 8];
    buf.extend_from_slice(&frame[14..end - 4]);
    let ip = 8;
    buf[ip + 1] = 0xFF; // TOS
    buf[ip + 8] = 0xFF; // TTL
    buf[ip + 10] = 0xFF; // header checksum
    buf[ip + 11] = 0xFF;
    let udp = ip + 20;
    buf[udp + 6] = 0xFF; // UDP checksum
    buf[udp + 7] = 0xFF;
    let bth = udp + 8;
    buf[bth + 4] = 0xFF; // FECN/BECN/resv6
    let mut h = crc32fast::Hasher::new();
    h.update(&buf);
    let wire = u32::from_le_bytes(frame[end - 4..end].try_into().ok()?);
    Some((h.finalize(), wire))
}

/// One frame as tshark decoded it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TsharkFrame {
    /// `infiniband.bth.opcode`.
    pub opcode: u32,
    /// `infiniband.bth.destqp`.
    pub dest_qp: u32,
    /// `infiniband.bth.psn`.
    pub psn: u32,
    /// `infiniband.bth.a`.
    pub ack_req: bool,
    /// `infiniband.reth.va`, if present.
    pub reth_va: Option<u64>,
    /// `infiniband.reth.r_key`, if present.
    pub reth_rkey: Option<u32>,
    /// `infiniband.reth.dmalen`, if present.
    pub reth_len: Option<u32>,
    /// `infiniband.aeth.syndrome`, if present.
    pub aeth_syndrome: Option<u32>,
    /// `infiniband.aeth.msn`, if present.
    pub aeth_msn: Option<u32>,
    /// `infiniband.invariant.crc` (the 4 wire bytes read big-endian).
    pub icrc_field: u32,
}

fn num(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => match s {
            "True" | "1" => Some(1),
            "False" | "0" => Some(0),
            _ => s.parse().ok(),
        },
    }
}

/// Decode a pcap with tshark's InfiniBand (RRoCE) dissector.
///
/// # Errors
/// tshark is missing (install it with `make deps`) or fails.
pub fn tshark_decode(pcap: &Path) -> Result<Vec<TsharkFrame>, String> {
    let fields = [
        "infiniband.bth.opcode",
        "infiniband.bth.destqp",
        "infiniband.bth.psn",
        "infiniband.bth.a",
        "infiniband.reth.va",
        "infiniband.reth.r_key",
        "infiniband.reth.dmalen",
        "infiniband.aeth.syndrome",
        "infiniband.aeth.msn",
        "infiniband.invariant.crc",
    ];
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(pcap).args(["-T", "fields", "-E", "separator=|", "-E", "occurrence=f"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().map_err(|e| format!("cannot run tshark ({e}): install it with `make deps` (apt-get install tshark)"))?;
    if !out.status.success() {
        return Err(format!("tshark failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut frames = Vec::new();
    for line in text.lines() {
        let c: Vec<&str> = line.split('|').collect();
        if c.len() != fields.len() {
            return Err(format!("unexpected tshark line `{line}`"));
        }
        frames.push(TsharkFrame {
            opcode: num(c[0]).ok_or_else(|| format!("no BTH opcode in `{line}`"))? as u32,
            dest_qp: num(c[1]).unwrap_or(u64::MAX) as u32,
            psn: num(c[2]).unwrap_or(u64::MAX) as u32,
            ack_req: num(c[3]) == Some(1),
            reth_va: num(c[4]),
            reth_rkey: num(c[5]).map(|v| v as u32),
            reth_len: num(c[6]).map(|v| v as u32),
            aeth_syndrome: num(c[7]).map(|v| v as u32),
            aeth_msn: num(c[8]).map(|v| v as u32),
            icrc_field: num(c[9]).unwrap_or(0) as u32,
        });
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn icrc_of_connectx_cnp_vector() {
        // A ConnectX-4 Lx CNP from scapy's roce.uts (shared reference §1): ICRC 82 fd 00 2a.
        let f = hex("e41d2dab2bc27cfe90643b32 0800 45c2003c718c400040119161 0a001101 0a001201 000012b700280000 8100ffff4000011800000000 00000000000000000000000000000000 82fd002a");
        let (calc, wire) = icrc_check(&f).unwrap();
        assert_eq!(calc, wire);
        let mut bad = f.clone();
        bad[60] ^= 1;
        let (calc, wire) = icrc_check(&bad).unwrap();
        assert_ne!(calc, wire);
    }
}
