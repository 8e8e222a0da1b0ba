// SPDX-License-Identifier: Apache-2.0
//! RoCEv2 frames on the wire (contract sections 6 and 7): building, parsing with the receive
//! header checks, the ICRC and the IPv4 header checksum.
//!
//! Public so the testbench can decode the RTL's frames and check them independently.
//! MAC and IPv4 addresses are numbers whose most significant byte goes first on the wire
//! (all multi-byte header fields are big-endian).

use rnic_regs::{bth_opcode as op, counter, params};
use thiserror::Error;

/// Ethernet header bytes (no VLAN tag).
pub const ETH_LEN: usize = 14;
/// IPv4 header bytes (IHL 5, no options).
pub const IP_LEN: usize = 20;
/// UDP header bytes.
pub const UDP_LEN: usize = 8;
/// Base transport header bytes.
pub const BTH_LEN: usize = 12;
/// RDMA extended transport header bytes.
pub const RETH_LEN: usize = 16;
/// Atomic extended transport header bytes.
pub const ATOMIC_ETH_LEN: usize = 28;
/// ACK extended transport header bytes.
pub const AETH_LEN: usize = 4;
/// Atomic acknowledge header bytes.
pub const ATOMIC_ACK_LEN: usize = 8;
/// Immediate data header bytes.
pub const IMM_LEN: usize = 4;
/// Invariant CRC bytes.
pub const ICRC_LEN: usize = 4;
/// Largest payload a frame may carry (section 13: larger frames are header drops).
pub const MAX_PAYLOAD: usize = 4096;
/// Smallest frame that passes the length check: Ethernet + IP + UDP + BTH + ICRC.
pub const MIN_FRAME: usize = ETH_LEN + IP_LEN + UDP_LEN + BTH_LEN + ICRC_LEN;

const ETHERTYPE_IPV4: u16 = 0x0800;
const IP_PROTO_UDP: u8 = 17;
const IP_VER_IHL: u8 = 0x45;
const IP_FLAGS_DF: u16 = 0x4000;
/// Offset of the BTH inside an Ethernet frame.
const BTH_OFF: usize = ETH_LEN + IP_LEN + UDP_LEN;

/// Base transport header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bth {
    /// `bth_opcode::*`.
    pub opcode: u8,
    /// Solicited event.
    pub se: bool,
    /// Migration state bit (always 0 when built by the NIC).
    pub mig: bool,
    /// Pad count; ignored by [`build`] (computed from the payload), filled by [`parse`].
    pub padcnt: u8,
    /// Transport header version (must be 0).
    pub tver: u8,
    /// Partition key.
    pub pkey: u16,
    /// Destination QP (24 bits).
    pub dqpn: u32,
    /// Acknowledge request.
    pub ackreq: bool,
    /// Packet sequence number (24 bits).
    pub psn: u32,
}

/// RDMA extended transport header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reth {
    /// Remote virtual address.
    pub va: u64,
    /// Remote key.
    pub rkey: u32,
    /// DMA length of the whole message.
    pub dma_len: u32,
}

/// Atomic extended transport header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AtomicEth {
    /// Remote virtual address (8-byte aligned for a valid request).
    pub va: u64,
    /// Remote key.
    pub rkey: u32,
    /// Swap value (CMP_SWAP) or addend (FETCH_ADD).
    pub swap_add: u64,
    /// Compare value (CMP_SWAP; 0 for FETCH_ADD).
    pub compare: u64,
}

/// ACK extended transport header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Aeth {
    /// Syndrome (`aeth::*`).
    pub syndrome: u8,
    /// Message sequence number (24 bits).
    pub msn: u32,
}

/// All headers of one RoCEv2 frame. Extension headers are present exactly when the opcode
/// calls for them: [`parse`] fills them that way and [`build`] writes the ones the opcode needs
/// (an absent one is written as zeros).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    /// Ethernet destination MAC (48 bits).
    pub dst_mac: u64,
    /// Ethernet source MAC (48 bits).
    pub src_mac: u64,
    /// IPv4 source address.
    pub src_ip: u32,
    /// IPv4 destination address.
    pub dst_ip: u32,
    /// UDP source port.
    pub udp_sport: u16,
    /// Base transport header.
    pub bth: Bth,
    /// RETH (WRITE_FIRST/ONLY/ONLY_IMM, READ_REQUEST).
    pub reth: Option<Reth>,
    /// AtomicETH (CMP_SWAP, FETCH_ADD).
    pub atomic_eth: Option<AtomicEth>,
    /// AETH (READ_RESP FIRST/LAST/ONLY, ACK, ATOMIC_ACK).
    pub aeth: Option<Aeth>,
    /// AtomicAckETH original value (ATOMIC_ACK).
    pub atomic_ack: Option<u64>,
    /// Immediate data, numeric value (the `_IMM` opcodes).
    pub imm: Option<u32>,
}

/// A frame that passed every check of section 7 up to and including the ICRC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedFrame<'a> {
    /// Decoded headers.
    pub hdr: Headers,
    /// IPv4 total length.
    pub ip_total: u16,
    /// ICRC carried by the frame (equal to the computed one).
    pub icrc: u32,
    /// Payload bytes (without pad).
    pub payload: &'a [u8],
    /// The function whose MAC/IP the frame was addressed to (0 when parsed without ports).
    pub func: u8,
}

/// Why a received frame was dropped (section 7, in check order).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// Shorter than Ethernet + IPv4 + UDP + BTH + ICRC.
    #[error("frame of {len} bytes is shorter than the minimum {MIN_FRAME}")]
    TooShort { len: usize },
    /// Not IPv4.
    #[error("ethertype {0:#06x} is not IPv4")]
    EtherType(u16),
    /// IP version / IHL byte is not 0x45.
    #[error("IP version/IHL byte {0:#04x} is not 0x45")]
    IpVersion(u8),
    /// IPv4 header checksum does not verify.
    #[error("IPv4 header checksum invalid (sum {0:#06x})")]
    IpChecksum(u16),
    /// IP total length inconsistent with the frame.
    #[error("IP total length {total} invalid for a frame of {frame_len} bytes")]
    IpLength { total: usize, frame_len: usize },
    /// IP protocol is not UDP.
    #[error("IP protocol {0} is not UDP")]
    Protocol(u8),
    /// UDP destination port is not RoCEv2.
    #[error("UDP destination port {0} is not the RoCEv2 port")]
    UdpPort(u16),
    /// Destination MAC is not the port's.
    #[error("destination MAC {0:#014x} is not the port MAC")]
    DstMac(u64),
    /// Destination IP is not the port's.
    #[error("destination IP {0:#010x} is not the port IP")]
    DstIp(u32),
    /// BTH transport version not 0.
    #[error("BTH tver {0} is not 0")]
    Tver(u8),
    /// Wrong partition key.
    #[error("P_Key {0:#06x} is not the default")]
    Pkey(u16),
    /// Opcode not one of the supported RC opcodes.
    #[error("opcode {0:#04x} is not supported")]
    Opcode(u8),
    /// IB length does not cover BTH + extension headers + pad.
    #[error("IB length {ib_len} too short for opcode {opcode:#04x} with pad {padcnt}")]
    IbLength {
        opcode: u8,
        ib_len: usize,
        padcnt: u8,
    },
    /// Payload larger than the receive buffer (section 13).
    #[error("payload of {0} bytes exceeds {MAX_PAYLOAD}")]
    PayloadTooLong(usize),
    /// ICRC mismatch.
    #[error("ICRC {carried:#010x} on the wire, {computed:#010x} computed")]
    Icrc { carried: u32, computed: u32 },
}

impl WireError {
    /// The counter (`counter::*`) that a drop for this reason increments.
    pub fn counter(&self) -> u32 {
        match self {
            WireError::Icrc { .. } => counter::RX_DROP_ICRC,
            _ => counter::RX_DROP_HDR,
        }
    }
}

/// True when `opcode` is one of `bth_opcode::*`.
pub fn is_valid_opcode(opcode: u8) -> bool {
    op::ALL.iter().any(|&(_, v)| v == opcode)
}

/// True for the response opcodes (READ_RESP_*, ACK, ATOMIC_ACK).
pub fn is_response(opcode: u8) -> bool {
    (op::READ_RESP_FIRST..=op::ATOMIC_ACK).contains(&opcode)
}

/// The opcode carries a RETH.
pub fn has_reth(opcode: u8) -> bool {
    matches!(
        opcode,
        op::WRITE_FIRST | op::WRITE_ONLY | op::WRITE_ONLY_IMM | op::READ_REQUEST
    )
}

/// The opcode carries ImmDt.
pub fn has_imm(opcode: u8) -> bool {
    matches!(
        opcode,
        op::SEND_LAST_IMM | op::SEND_ONLY_IMM | op::WRITE_LAST_IMM | op::WRITE_ONLY_IMM
    )
}

/// The opcode carries an AETH.
pub fn has_aeth(opcode: u8) -> bool {
    matches!(
        opcode,
        op::READ_RESP_FIRST | op::READ_RESP_LAST | op::READ_RESP_ONLY | op::ACK | op::ATOMIC_ACK
    )
}

/// The opcode carries an AtomicETH.
pub fn has_atomic_eth(opcode: u8) -> bool {
    matches!(opcode, op::CMP_SWAP | op::FETCH_ADD)
}

/// The opcode carries an AtomicAckETH.
pub fn has_atomic_ack(opcode: u8) -> bool {
    opcode == op::ATOMIC_ACK
}

/// Bytes of extension headers after the BTH for `opcode`.
pub fn ext_len(opcode: u8) -> usize {
    let mut n = 0;
    if has_reth(opcode) {
        n += RETH_LEN;
    }
    if has_atomic_eth(opcode) {
        n += ATOMIC_ETH_LEN;
    }
    if has_aeth(opcode) {
        n += AETH_LEN;
    }
    if has_atomic_ack(opcode) {
        n += ATOMIC_ACK_LEN;
    }
    if has_imm(opcode) {
        n += IMM_LEN;
    }
    n
}

/// Internet checksum of an IPv4 header with its checksum field taken as zero.
pub fn ipv4_checksum(ip_hdr: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for i in (0..IP_LEN).step_by(2) {
        if i == 10 {
            continue;
        }
        sum += u16::from_be_bytes([ip_hdr[i], ip_hdr[i + 1]]) as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// ICRC of an Ethernet frame (reference §1): CRC-32 of 8 × 0xFF followed by the IP datagram up
/// to (not including) the ICRC, with IP TOS/TTL/checksum, UDP checksum and BTH byte 4 set to
/// all ones. The datagram length comes from the IPv4 total-length field (clamped to the bytes
/// present). The frame must hold at least the Ethernet, IP, UDP and BTH headers.
///
/// # Panics
/// If `frame` is shorter than `ETH_LEN + IP_LEN + UDP_LEN + BTH_LEN`.
pub fn icrc(frame: &[u8]) -> u32 {
    let ip_total = u16::from_be_bytes([frame[ETH_LEN + 2], frame[ETH_LEN + 3]]) as usize;
    let end = (ETH_LEN + ip_total)
        .saturating_sub(ICRC_LEN)
        .clamp(BTH_OFF + BTH_LEN, frame.len());
    let mut h = crc32fast::Hasher::new();
    h.update(&[0xFF; 8]);
    // Masked copies on the stack: no allocation per frame.
    let mut ip = [0u8; IP_LEN];
    ip.copy_from_slice(&frame[ETH_LEN..ETH_LEN + IP_LEN]);
    ip[1] = 0xFF;
    ip[8] = 0xFF;
    ip[10] = 0xFF;
    ip[11] = 0xFF;
    h.update(&ip);
    let mut udp = [0u8; UDP_LEN];
    udp.copy_from_slice(&frame[ETH_LEN + IP_LEN..BTH_OFF]);
    udp[6] = 0xFF;
    udp[7] = 0xFF;
    h.update(&udp);
    let mut bth = [0u8; BTH_LEN];
    bth.copy_from_slice(&frame[BTH_OFF..BTH_OFF + BTH_LEN]);
    bth[4] = 0xFF;
    h.update(&bth);
    h.update(&frame[BTH_OFF + BTH_LEN..end]);
    h.finalize()
}

fn put_be(buf: &mut Vec<u8>, v: u64, bytes: usize) {
    for i in (0..bytes).rev() {
        buf.push((v >> (8 * i)) as u8);
    }
}

fn get_be(buf: &[u8], bytes: usize) -> u64 {
    buf[..bytes].iter().fold(0u64, |a, &b| (a << 8) | b as u64)
}

/// Build a complete frame (section 6): Ethernet, IPv4 (with checksum), UDP, BTH, the opcode's
/// extension headers, `payload`, zero pad to a multiple of 4 and the ICRC. The pad count in
/// `hdr.bth.padcnt` is ignored and computed from the payload length.
pub fn build(hdr: &Headers, payload: &[u8]) -> Vec<u8> {
    let opcode = hdr.bth.opcode;
    let ext = ext_len(opcode);
    let pad = (4 - payload.len() % 4) % 4;
    let ip_total = IP_LEN + UDP_LEN + BTH_LEN + ext + payload.len() + pad + ICRC_LEN;
    let mut f = Vec::with_capacity(ETH_LEN + ip_total);
    // Ethernet
    put_be(&mut f, hdr.dst_mac, 6);
    put_be(&mut f, hdr.src_mac, 6);
    put_be(&mut f, ETHERTYPE_IPV4 as u64, 2);
    // IPv4
    f.push(IP_VER_IHL);
    f.push(0);
    put_be(&mut f, ip_total as u64, 2);
    put_be(&mut f, 0, 2);
    put_be(&mut f, IP_FLAGS_DF as u64, 2);
    f.push(params::IP_TTL as u8);
    f.push(IP_PROTO_UDP);
    put_be(&mut f, 0, 2);
    put_be(&mut f, hdr.src_ip as u64, 4);
    put_be(&mut f, hdr.dst_ip as u64, 4);
    let csum = ipv4_checksum(&f[ETH_LEN..ETH_LEN + IP_LEN]);
    f[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&csum.to_be_bytes());
    // UDP
    put_be(&mut f, hdr.udp_sport as u64, 2);
    put_be(&mut f, params::ROCE_UDP_PORT, 2);
    put_be(&mut f, (ip_total - IP_LEN) as u64, 2);
    put_be(&mut f, 0, 2);
    // BTH
    let b = &hdr.bth;
    f.push(opcode);
    f.push((b.se as u8) << 7 | (b.mig as u8) << 6 | (pad as u8) << 4 | (b.tver & 0xF));
    put_be(&mut f, b.pkey as u64, 2);
    f.push(0);
    put_be(&mut f, (b.dqpn & 0xFF_FFFF) as u64, 3);
    f.push((b.ackreq as u8) << 7);
    put_be(&mut f, (b.psn & 0xFF_FFFF) as u64, 3);
    // Extension headers in wire order: RETH, AtomicETH, AETH, AtomicAckETH, ImmDt.
    if has_reth(opcode) {
        let r = hdr.reth.unwrap_or_default();
        put_be(&mut f, r.va, 8);
        put_be(&mut f, r.rkey as u64, 4);
        put_be(&mut f, r.dma_len as u64, 4);
    }
    if has_atomic_eth(opcode) {
        let a = hdr.atomic_eth.unwrap_or_default();
        put_be(&mut f, a.va, 8);
        put_be(&mut f, a.rkey as u64, 4);
        put_be(&mut f, a.swap_add, 8);
        put_be(&mut f, a.compare, 8);
    }
    if has_aeth(opcode) {
        let a = hdr.aeth.unwrap_or_default();
        f.push(a.syndrome);
        put_be(&mut f, (a.msn & 0xFF_FFFF) as u64, 3);
    }
    if has_atomic_ack(opcode) {
        put_be(&mut f, hdr.atomic_ack.unwrap_or_default(), 8);
    }
    if has_imm(opcode) {
        put_be(&mut f, hdr.imm.unwrap_or_default() as u64, 4);
    }
    f.extend_from_slice(payload);
    f.resize(f.len() + pad, 0);
    f.extend_from_slice(&[0; ICRC_LEN]);
    let crc = icrc(&f);
    let n = f.len();
    f[n - ICRC_LEN..].copy_from_slice(&crc.to_le_bytes());
    f
}

/// Parse and check a frame without the port address checks (destination MAC / IP are not
/// compared). See [`parse_for_port`].
///
/// # Errors
/// The first failing check of section 7, as a [`WireError`].
pub fn parse(frame: &[u8]) -> Result<ParsedFrame<'_>, WireError> {
    parse_inner(frame, None)
}

/// Parse and check a frame exactly as the NIC with port MAC `mac` and IPv4 address `ip` does
/// (section 7 header checks, in order, then the payload size limit, then the ICRC).
///
/// # Errors
/// The first failing check, as a [`WireError`]; [`WireError::counter`] names the drop counter.
pub fn parse_for_port(frame: &[u8], mac: u64, ip: u32) -> Result<ParsedFrame<'_>, WireError> {
    let one = [(mac & 0xFFFF_FFFF_FFFF, ip)];
    parse_inner(frame, Some(&one))
}

/// Parse a frame received by a NIC whose functions have the addresses `ports` (index = function;
/// a function that does not exist or has MAC 0 is `None`): the destination MAC selects the lowest
/// function with that MAC, whose IP must match (docs/architecture.md, Functions).
///
/// # Errors
/// The first failing receive check.
pub fn parse_for_functions<'a>(frame: &'a [u8], ports: &[Option<(u64, u32)>]) -> Result<ParsedFrame<'a>, WireError> {
    let mut lut = [(0u64, 0u32); 256];
    let mut n = 0;
    let mut funcs = [0u8; 256];
    for (f, p) in ports.iter().enumerate() {
        if let Some((mac, ip)) = *p {
            if mac != 0 {
                lut[n] = (mac & 0xFFFF_FFFF_FFFF, ip);
                funcs[n] = f as u8;
                n += 1;
            }
        }
    }
    let mut p = parse_inner(frame, Some(&lut[..n]));
    if let Ok(pf) = &mut p {
        pf.func = funcs[pf.func as usize];
    }
    p
}

fn parse_inner<'a>(frame: &'a [u8], port: Option<&[(u64, u32)]>) -> Result<ParsedFrame<'a>, WireError> {
    if frame.len() < MIN_FRAME {
        return Err(WireError::TooShort { len: frame.len() });
    }
    let ethertype = get_be(&frame[12..], 2) as u16;
    if ethertype != ETHERTYPE_IPV4 {
        return Err(WireError::EtherType(ethertype));
    }
    let ip = &frame[ETH_LEN..ETH_LEN + IP_LEN];
    if ip[0] != IP_VER_IHL {
        return Err(WireError::IpVersion(ip[0]));
    }
    let carried = get_be(&ip[10..], 2) as u16;
    let computed = ipv4_checksum(ip);
    if carried != computed {
        return Err(WireError::IpChecksum(carried));
    }
    let ip_total = get_be(&ip[2..], 2) as usize;
    if ip_total > frame.len() - ETH_LEN || ip_total < MIN_FRAME - ETH_LEN {
        return Err(WireError::IpLength {
            total: ip_total,
            frame_len: frame.len(),
        });
    }
    if ip[9] != IP_PROTO_UDP {
        return Err(WireError::Protocol(ip[9]));
    }
    let udp = &frame[ETH_LEN + IP_LEN..BTH_OFF];
    let dport = get_be(&udp[2..], 2) as u16;
    if dport as u64 != params::ROCE_UDP_PORT {
        return Err(WireError::UdpPort(dport));
    }
    let dst_mac = get_be(frame, 6);
    let dst_ip = get_be(&ip[16..], 4) as u32;
    // Index (into `port`) of the function the frame is for.
    let mut func = 0u8;
    if let Some(ports) = port {
        let Some(k) = ports.iter().position(|&(mac, _)| mac == dst_mac) else {
            return Err(WireError::DstMac(dst_mac));
        };
        if dst_ip != ports[k].1 {
            return Err(WireError::DstIp(dst_ip));
        }
        func = k as u8;
    }
    let b = &frame[BTH_OFF..BTH_OFF + BTH_LEN];
    let bth = Bth {
        opcode: b[0],
        se: b[1] & 0x80 != 0,
        mig: b[1] & 0x40 != 0,
        padcnt: (b[1] >> 4) & 3,
        tver: b[1] & 0xF,
        pkey: get_be(&b[2..], 2) as u16,
        dqpn: get_be(&b[5..], 3) as u32,
        ackreq: b[8] & 0x80 != 0,
        psn: get_be(&b[9..], 3) as u32,
    };
    if bth.tver != 0 {
        return Err(WireError::Tver(bth.tver));
    }
    if bth.pkey as u64 != params::DEFAULT_PKEY {
        return Err(WireError::Pkey(bth.pkey));
    }
    if !is_valid_opcode(bth.opcode) {
        return Err(WireError::Opcode(bth.opcode));
    }
    let ext = ext_len(bth.opcode);
    let ib_len = ip_total - IP_LEN - UDP_LEN - ICRC_LEN;
    if ib_len < BTH_LEN + ext + bth.padcnt as usize {
        return Err(WireError::IbLength {
            opcode: bth.opcode,
            ib_len,
            padcnt: bth.padcnt,
        });
    }
    let payload_len = ib_len - BTH_LEN - ext - bth.padcnt as usize;
    if payload_len > MAX_PAYLOAD {
        return Err(WireError::PayloadTooLong(payload_len));
    }
    let icrc_off = ETH_LEN + ip_total - ICRC_LEN;
    let carried = u32::from_le_bytes(frame[icrc_off..icrc_off + 4].try_into().unwrap());
    let computed = icrc(frame);
    if carried != computed {
        return Err(WireError::Icrc { carried, computed });
    }
    let mut hdr = Headers {
        dst_mac,
        src_mac: get_be(&frame[6..], 6),
        src_ip: get_be(&ip[12..], 4) as u32,
        dst_ip,
        udp_sport: get_be(udp, 2) as u16,
        bth,
        ..Headers::default()
    };
    let mut p = BTH_OFF + BTH_LEN;
    if has_reth(bth.opcode) {
        hdr.reth = Some(Reth {
            va: get_be(&frame[p..], 8),
            rkey: get_be(&frame[p + 8..], 4) as u32,
            dma_len: get_be(&frame[p + 12..], 4) as u32,
        });
        p += RETH_LEN;
    }
    if has_atomic_eth(bth.opcode) {
        hdr.atomic_eth = Some(AtomicEth {
            va: get_be(&frame[p..], 8),
            rkey: get_be(&frame[p + 8..], 4) as u32,
            swap_add: get_be(&frame[p + 12..], 8),
            compare: get_be(&frame[p + 20..], 8),
        });
        p += ATOMIC_ETH_LEN;
    }
    if has_aeth(bth.opcode) {
        hdr.aeth = Some(Aeth {
            syndrome: frame[p],
            msn: get_be(&frame[p + 1..], 3) as u32,
        });
        p += AETH_LEN;
    }
    if has_atomic_ack(bth.opcode) {
        hdr.atomic_ack = Some(get_be(&frame[p..], 8));
        p += ATOMIC_ACK_LEN;
    }
    if has_imm(bth.opcode) {
        hdr.imm = Some(get_be(&frame[p..], 4) as u32);
        p += IMM_LEN;
    }
    Ok(ParsedFrame {
        hdr,
        ip_total: ip_total as u16,
        icrc: carried,
        payload: &frame[p..p + payload_len],
        func,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Bitwise CRC-32 (reflected 0xEDB88320), written out independently of crc32fast.
    fn crc32_bitwise(init: u32, data: &[u8]) -> u32 {
        let mut c = init;
        for &b in data {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0xEDB8_8320
                } else {
                    c >> 1
                };
            }
        }
        c
    }

    /// The rxe form: `~crc32_le(0xdebb20e3, masked bytes)` without the 8 × 0xFF prefix.
    fn icrc_rxe(frame: &[u8]) -> u32 {
        let ip_total = ((frame[16] as usize) << 8) | frame[17] as usize;
        let mut m = frame[14..14 + ip_total - 4].to_vec();
        m[1] = 0xFF;
        m[8] = 0xFF;
        m[10] = 0xFF;
        m[11] = 0xFF;
        m[26] = 0xFF;
        m[27] = 0xFF;
        m[32] = 0xFF;
        !crc32_bitwise(0xDEBB_20E3, &m)
    }

    const CNP: &str = "e41d2dab2bc27cfe90643b32 0800 45c2003c718c400040119161 0a001101 0a001201 \
                       000012b700280000 8100ffff4000011800000000 \
                       00000000000000000000000000000000 82fd002a";

    #[test]
    fn icrc_connectx_cnp_vector() {
        let f = hex(CNP);
        assert_eq!(f.len(), 74);
        assert_eq!(&f[70..], &[0x82, 0xfd, 0x00, 0x2a]);
        assert_eq!(icrc(&f).to_le_bytes(), [0x82, 0xfd, 0x00, 0x2a]);
        assert_eq!(icrc_rxe(&f), icrc(&f));
        // The CNP's IPv4 checksum is also valid under our checksum routine.
        assert_eq!(ipv4_checksum(&f[14..34]), 0x9161);
        // Opcode 0x81 is not an RC opcode: parse rejects it as a header drop, not ICRC.
        assert_eq!(parse(&f), Err(WireError::Opcode(0x81)));
    }

    #[test]
    fn icrc_masks_variant_fields_and_detects_corruption() {
        let mut f = hex(CNP);
        let good = icrc(&f);
        f[15] = 0x00; // TOS
        f[22] = 0x01; // TTL
        f[24] = 0x12; // IP checksum
        f[40] = 0xAA; // UDP checksum
        f[46] = 0x55; // BTH byte 4 (FECN/BECN)
        assert_eq!(icrc(&f), good);
        f[60] ^= 1; // payload bit
        assert_ne!(icrc(&f), good);
    }

    fn sample(opcode: u8, payload_len: usize) -> (Headers, Vec<u8>) {
        let hdr = Headers {
            dst_mac: 0x0200_0000_0002,
            src_mac: 0x0200_0000_0001,
            src_ip: 0x0A00_0001,
            dst_ip: 0x0A00_0002,
            udp_sport: 0xC012,
            bth: Bth {
                opcode,
                se: true,
                pkey: 0xFFFF,
                dqpn: 0x12,
                ackreq: true,
                psn: 100,
                ..Bth::default()
            },
            reth: has_reth(opcode).then_some(Reth {
                va: 0x7f00_0000_1000,
                rkey: 0x1234,
                dma_len: 16,
            }),
            atomic_eth: has_atomic_eth(opcode).then_some(AtomicEth {
                va: 0x1000,
                rkey: 0x55,
                swap_add: 0x1122_3344_5566_7788,
                compare: 0x99,
            }),
            aeth: has_aeth(opcode).then_some(Aeth {
                syndrome: 0x1F,
                msn: 0xABCDE,
            }),
            atomic_ack: has_atomic_ack(opcode).then_some(0xDEAD_BEEF_0000_0001),
            imm: has_imm(opcode).then_some(0x0102_0304),
        };
        let payload: Vec<u8> = (0..payload_len).map(|i| (i * 7 + 3) as u8).collect();
        (hdr, payload)
    }

    #[test]
    fn build_parse_roundtrip_every_opcode() {
        for &(_, opcode) in op::ALL {
            for len in [0usize, 1, 2, 3, 4, 5, 255, 4096] {
                let (hdr, payload) = sample(opcode, len);
                let f = build(&hdr, &payload);
                let pad = (4 - len % 4) % 4;
                assert_eq!(f.len(), MIN_FRAME + ext_len(opcode) + len + pad);
                let p = parse_for_port(&f, hdr.dst_mac, hdr.dst_ip).expect("parses");
                let mut want = hdr;
                want.bth.padcnt = pad as u8;
                assert_eq!(p.hdr, want);
                assert_eq!(p.payload, &payload[..]);
                assert_eq!(
                    icrc_rxe(&f),
                    u32::from_le_bytes(f[f.len() - 4..].try_into().unwrap())
                );
            }
        }
    }

    #[test]
    fn write_only_layout_by_hand() {
        let (hdr, payload) = sample(op::WRITE_ONLY, 16);
        let f = build(&hdr, &payload);
        // Hand-checked offsets: BTH at 42, RETH at 54, payload at 70.
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(&f[14..24], &[0x45, 0, 0, 76, 0, 0, 0x40, 0, 64, 17]);
        assert_eq!(&f[34..42], &[0xC0, 0x12, 0x12, 0xB7, 0, 56, 0, 0]);
        assert_eq!(
            &f[42..54],
            &[0x0A, 0x80, 0xFF, 0xFF, 0, 0, 0, 0x12, 0x80, 0, 0, 100]
        );
        assert_eq!(&f[54..70], &hex("00007f0000001000 00001234 00000010")[..]);
        assert_eq!(&f[70..86], &payload[..]);
        assert_eq!(f.len(), 90);
    }

    #[test]
    fn header_checks_each_reason() {
        let (hdr, payload) = sample(op::SEND_ONLY, 10);
        let good = build(&hdr, &payload);
        let chk = |f: &[u8]| parse_for_port(f, hdr.dst_mac, hdr.dst_ip).map(|_| ());
        assert_eq!(chk(&good), Ok(()));
        assert!(matches!(
            chk(&good[..57]),
            Err(WireError::TooShort { len: 57 })
        ));
        let mut f = good.clone();
        f[12] = 0x86;
        assert_eq!(chk(&f), Err(WireError::EtherType(0x8600)));
        let mut f = good.clone();
        f[14] = 0x46;
        assert_eq!(chk(&f), Err(WireError::IpVersion(0x46)));
        let mut f = good.clone();
        f[24] ^= 1;
        assert!(matches!(chk(&f), Err(WireError::IpChecksum(_))));
        // Rebuild with a different field, then fix the IP checksum.
        let fix = |f: &mut Vec<u8>| {
            let c = ipv4_checksum(&f[14..34]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
        };
        let mut f = good.clone();
        f[23] = 6;
        fix(&mut f);
        assert_eq!(chk(&f), Err(WireError::Protocol(6)));
        let mut f = good.clone();
        f[16] = 0x10; // total length larger than the frame
        fix(&mut f);
        assert!(matches!(chk(&f), Err(WireError::IpLength { .. })));
        let mut f = good.clone();
        f[37] = 0xB8;
        assert_eq!(chk(&f), Err(WireError::UdpPort(4792)));
        assert_eq!(
            parse_for_port(&good, 0x0200_0000_0003, hdr.dst_ip).map(|_| ()),
            Err(WireError::DstMac(0x0200_0000_0002))
        );
        assert_eq!(
            parse_for_port(&good, hdr.dst_mac, 1).map(|_| ()),
            Err(WireError::DstIp(0x0A00_0002))
        );
        let mut h2 = hdr;
        h2.bth.tver = 1;
        assert_eq!(chk(&build(&h2, &payload)), Err(WireError::Tver(1)));
        let mut h2 = hdr;
        h2.bth.pkey = 0x7FFF;
        assert_eq!(chk(&build(&h2, &payload)), Err(WireError::Pkey(0x7FFF)));
        let mut h2 = hdr;
        h2.bth.opcode = 0x15;
        assert_eq!(chk(&build(&h2, &payload)), Err(WireError::Opcode(0x15)));
        // A SEND_ONLY frame relabelled WRITE_ONLY is too short for its RETH.
        let (h3, _) = sample(op::SEND_ONLY, 0);
        let mut f = build(&h3, &[]);
        f[42] = op::WRITE_ONLY;
        assert!(matches!(chk(&f), Err(WireError::IbLength { .. })));
        let (h4, p4) = sample(op::SEND_ONLY, 4100);
        assert_eq!(chk(&build(&h4, &p4)), Err(WireError::PayloadTooLong(4100)));
        let mut f = good.clone();
        f[60] ^= 0x40;
        let e = chk(&f).unwrap_err();
        assert!(matches!(e, WireError::Icrc { .. }));
        assert_eq!(e.counter(), counter::RX_DROP_ICRC);
        // Ethernet padding after the datagram is ignored.
        let mut f = good.clone();
        f.extend_from_slice(&[0xEE; 6]);
        assert_eq!(chk(&f), Ok(()));
    }
}
