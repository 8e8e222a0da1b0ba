// SPDX-License-Identifier: Apache-2.0
//! Frames for injection and a wire tap, for the conformance, malformed-input and fault suites.
//!
//! * Valid RoCEv2 frames addressed to a NIC of the fabric ([`to_nic`], [`build`], [`ack`]),
//!   built with the model's public frame builder (`rnic_model::wire::build`).
//! * Malformed frames ([`Malform`], [`malformed`]): every class of section 7 of the contract
//!   (bad ethertype, IP version, checksum, length, protocol, UDP port, MAC, IP, tver, P_Key,
//!   opcode, IB length, pad count, ICRC, truncation, random bytes), with helpers that re-seal a
//!   mutated frame (IP checksum, ICRC) so that exactly one check fails.
//! * [`Tap`]: a [`FaultHook`] that records every frame entering the link (before any fault) and
//!   what the inner hook did with it, so tests can assert the packets on the wire.

use std::cell::RefCell;
use std::rc::Rc;

use rnic_model::wire::{self, Aeth, Bth, Headers, Reth};
use rnic_regs::{bth_opcode as op, params};

use crate::faults::SplitMix64;
use crate::harness::{nic_ip, nic_mac};
use crate::link::FaultHook;

/// Offset of the IPv4 header in a frame.
pub const IP_OFF: usize = wire::ETH_LEN;
/// Offset of the UDP header in a frame.
pub const UDP_OFF: usize = IP_OFF + wire::IP_LEN;
/// Offset of the BTH in a frame.
pub const BTH_OFF: usize = UDP_OFF + wire::UDP_LEN;

/// A MAC address as the 48-bit number of [`Headers`].
pub fn mac_u64(mac: [u8; 6]) -> u64 {
    mac.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b))
}

/// Headers of a frame from NIC `to ^ 1` to NIC `to` (addresses of the [`crate::harness`] pair),
/// with the given opcode, destination QP and PSN; P_Key default, no extension headers set.
pub fn to_nic(to: usize, opcode: u8, dqpn: u32, psn: u32) -> Headers {
    let from = to ^ 1;
    Headers {
        dst_mac: mac_u64(nic_mac(to)),
        src_mac: mac_u64(nic_mac(from)),
        src_ip: u32::from(nic_ip(from)),
        dst_ip: u32::from(nic_ip(to)),
        udp_sport: params::UDP_SPORT_BASE as u16 | 0x123,
        bth: Bth { opcode, pkey: params::DEFAULT_PKEY as u16, dqpn, psn: psn & 0xFF_FFFF, ..Bth::default() },
        ..Headers::default()
    }
}

/// A complete, valid frame (IP checksum, pad, ICRC).
pub fn build(hdr: &Headers, payload: &[u8]) -> Vec<u8> {
    wire::build(hdr, payload)
}

/// An ACK/NAK frame to NIC `to`, QP `dqpn`, with `syndrome` and `msn`.
pub fn ack(to: usize, dqpn: u32, psn: u32, syndrome: u8, msn: u32) -> Vec<u8> {
    let mut h = to_nic(to, op::ACK, dqpn, psn);
    h.aeth = Some(Aeth { syndrome, msn });
    build(&h, &[])
}

/// Recompute the IPv4 header checksum of `f` in place (no-op if too short).
pub fn fix_ip_checksum(f: &mut [u8]) {
    if f.len() < UDP_OFF {
        return;
    }
    f[IP_OFF + 10] = 0;
    f[IP_OFF + 11] = 0;
    let c = wire::ipv4_checksum(&f[IP_OFF..UDP_OFF]);
    f[IP_OFF + 10..IP_OFF + 12].copy_from_slice(&c.to_be_bytes());
}

/// Recompute the ICRC of `f` in place at `14 + ip_total - 4` (no-op if that is outside the frame).
pub fn fix_icrc(f: &mut [u8]) {
    if f.len() < BTH_OFF + wire::BTH_LEN {
        return;
    }
    let ip_total = u16::from_be_bytes([f[IP_OFF + 2], f[IP_OFF + 3]]) as usize;
    let end = IP_OFF + ip_total;
    if ip_total < wire::ICRC_LEN || end > f.len() || end < BTH_OFF + wire::BTH_LEN + wire::ICRC_LEN {
        return;
    }
    let crc = wire::icrc(f);
    f[end - 4..end].copy_from_slice(&crc.to_le_bytes());
}

/// Re-seal a mutated frame: IP checksum then ICRC.
pub fn reseal(f: &mut [u8]) {
    fix_ip_checksum(f);
    fix_icrc(f);
}

/// BTH (opcode, dest QP, PSN) of a frame, without checks.
pub fn bth(f: &[u8]) -> Option<(u8, u32, u32)> {
    crate::lockstep::bth_summary(f)
}

/// AETH (syndrome, MSN) of a frame that passes the contract's header checks and carries one.
pub fn aeth(f: &[u8]) -> Option<(u8, u32)> {
    let p = wire::parse(f).ok()?;
    p.hdr.aeth.map(|a| (a.syndrome, a.msn))
}

/// The kinds of malformation [`malformed`] applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Malform {
    /// Ethertype not IPv4 (RX_DROP_HDR).
    EtherType,
    /// IP version/IHL byte not 0x45 (RX_DROP_HDR).
    IpVersion,
    /// IPv4 header checksum wrong (RX_DROP_HDR).
    IpChecksum,
    /// IP total length larger than the frame (RX_DROP_HDR).
    IpTotalLong,
    /// IP total length below the minimum (RX_DROP_HDR).
    IpTotalShort,
    /// IP protocol not UDP (RX_DROP_HDR).
    Protocol,
    /// UDP destination port not 4791 (RX_DROP_HDR).
    UdpPort,
    /// Destination MAC not the port's (RX_DROP_HDR).
    DstMac,
    /// Destination IP not the port's (RX_DROP_HDR).
    DstIp,
    /// BTH tver != 0 (RX_DROP_HDR).
    Tver,
    /// P_Key not the default (RX_DROP_HDR).
    Pkey,
    /// Opcode outside the RC set (RX_DROP_HDR).
    Opcode,
    /// Pad count larger than the IB payload allows (RX_DROP_HDR when it does not fit).
    PadCount,
    /// Frame cut short after the headers (IP total length then exceeds it: RX_DROP_HDR).
    Truncated,
    /// Shorter than the minimum frame (RX_DROP_HDR).
    Runt,
    /// ICRC wrong, everything else right (RX_DROP_ICRC).
    Icrc,
    /// Ethernet padding after the IP datagram (ignored: the frame is valid).
    EthPadding,
    /// IP total length shortened (payload becomes smaller, ICRC re-sealed): valid headers,
    /// wrong payload length for the opcode.
    ShortPayload,
    /// Random bytes of random length (usually RX_DROP_HDR).
    Garbage,
    /// 1..8 random bit flips anywhere after the Ethernet header, not re-sealed.
    BitFlips,
    /// Random bit flips in the headers, then re-sealed (checks beyond the ICRC).
    SealedFlips,
}

impl Malform {
    /// Every kind.
    pub const ALL: [Malform; 21] = [
        Malform::EtherType,
        Malform::IpVersion,
        Malform::IpChecksum,
        Malform::IpTotalLong,
        Malform::IpTotalShort,
        Malform::Protocol,
        Malform::UdpPort,
        Malform::DstMac,
        Malform::DstIp,
        Malform::Tver,
        Malform::Pkey,
        Malform::Opcode,
        Malform::PadCount,
        Malform::Truncated,
        Malform::Runt,
        Malform::Icrc,
        Malform::EthPadding,
        Malform::ShortPayload,
        Malform::Garbage,
        Malform::BitFlips,
        Malform::SealedFlips,
    ];

    /// Whether the contract drops every frame of this kind at the header checks (RX_DROP_HDR),
    /// whatever the base frame was.
    pub fn always_hdr_drop(self) -> bool {
        matches!(
            self,
            Malform::EtherType
                | Malform::IpVersion
                | Malform::IpChecksum
                | Malform::IpTotalLong
                | Malform::IpTotalShort
                | Malform::Protocol
                | Malform::UdpPort
                | Malform::DstMac
                | Malform::DstIp
                | Malform::Tver
                | Malform::Pkey
                | Malform::Opcode
                | Malform::Runt
        )
    }
}

fn set_ip_total(f: &mut [u8], v: u16) {
    f[IP_OFF + 2..IP_OFF + 4].copy_from_slice(&v.to_be_bytes());
}

fn ip_total(f: &[u8]) -> u16 {
    u16::from_be_bytes([f[IP_OFF + 2], f[IP_OFF + 3]])
}

/// An opcode that is not one of `bth_opcode::*`.
pub fn invalid_opcode(rng: &mut SplitMix64) -> u8 {
    loop {
        let o = rng.next_u64() as u8;
        if !wire::is_valid_opcode(o) {
            return o;
        }
    }
}

/// Apply `kind` to the valid frame `base` (built by [`build`]).
pub fn malformed(rng: &mut SplitMix64, kind: Malform, base: &[u8]) -> Vec<u8> {
    let mut f = base.to_vec();
    match kind {
        Malform::EtherType => {
            let mut t = rng.next_u64() as u16;
            if t == 0x0800 {
                t = 0x86DD;
            }
            f[12..14].copy_from_slice(&t.to_be_bytes());
        }
        Malform::IpVersion => {
            let mut b = rng.next_u64() as u8;
            if b == 0x45 {
                b = 0x46;
            }
            f[IP_OFF] = b;
            fix_ip_checksum(&mut f);
            fix_icrc(&mut f);
        }
        Malform::IpChecksum => {
            let x = (rng.range(1, 0xFFFF)) as u16;
            let c = u16::from_be_bytes([f[IP_OFF + 10], f[IP_OFF + 11]]) ^ x;
            f[IP_OFF + 10..IP_OFF + 12].copy_from_slice(&c.to_be_bytes());
        }
        Malform::IpTotalLong => {
            let t = ip_total(&f) as u64 + rng.range(1, 3000);
            set_ip_total(&mut f, t.min(0xFFFF) as u16);
            fix_ip_checksum(&mut f);
        }
        Malform::IpTotalShort => {
            set_ip_total(&mut f, rng.range(0, 43) as u16);
            fix_ip_checksum(&mut f);
        }
        Malform::Protocol => {
            let mut p = rng.next_u64() as u8;
            if p == 17 {
                p = 6;
            }
            f[IP_OFF + 9] = p;
            reseal(&mut f);
        }
        Malform::UdpPort => {
            let mut p = rng.next_u64() as u16;
            if u64::from(p) == params::ROCE_UDP_PORT {
                p = 4792;
            }
            f[UDP_OFF + 2..UDP_OFF + 4].copy_from_slice(&p.to_be_bytes());
            fix_icrc(&mut f);
        }
        Malform::DstMac => {
            let i = rng.range(0, 5) as usize;
            f[i] ^= rng.range(1, 255) as u8;
        }
        Malform::DstIp => {
            let i = rng.range(0, 3) as usize;
            f[IP_OFF + 16 + i] ^= rng.range(1, 255) as u8;
            reseal(&mut f);
        }
        Malform::Tver => {
            f[BTH_OFF + 1] = (f[BTH_OFF + 1] & 0xF0) | rng.range(1, 15) as u8;
            fix_icrc(&mut f);
        }
        Malform::Pkey => {
            let mut k = rng.next_u64() as u16;
            if u64::from(k) == params::DEFAULT_PKEY {
                k = 0x7FFF;
            }
            f[BTH_OFF + 2..BTH_OFF + 4].copy_from_slice(&k.to_be_bytes());
            fix_icrc(&mut f);
        }
        Malform::Opcode => {
            f[BTH_OFF] = invalid_opcode(rng);
            fix_icrc(&mut f);
        }
        Malform::PadCount => {
            f[BTH_OFF + 1] = (f[BTH_OFF + 1] & 0xCF) | ((rng.range(0, 3) as u8) << 4);
            fix_icrc(&mut f);
        }
        Malform::Truncated => {
            let lo = (BTH_OFF + 1).min(f.len() - 1);
            let n = rng.range(lo as u64, f.len() as u64 - 1) as usize;
            f.truncate(n);
        }
        Malform::Runt => {
            let n = rng.range(1, wire::MIN_FRAME as u64 - 1) as usize;
            f.truncate(n.min(f.len()));
        }
        Malform::Icrc => {
            let n = f.len();
            let i = n - 1 - rng.range(0, 3) as usize;
            f[i] ^= rng.range(1, 255) as u8;
        }
        Malform::EthPadding => {
            let n = rng.range(1, 64) as usize;
            for _ in 0..n {
                f.push(rng.next_u64() as u8);
            }
        }
        Malform::ShortPayload => {
            let t = ip_total(&f);
            let cut = rng.range(1, 8) as u16 * 4;
            if t > cut + 44 {
                set_ip_total(&mut f, t - cut);
                f.truncate(f.len() - cut as usize);
                reseal(&mut f);
            }
        }
        Malform::Garbage => {
            let n = rng.range(1, 300) as usize;
            f = (0..n).map(|_| rng.next_u64() as u8).collect();
            if rng.range(0, 1) == 0 && f.len() > 14 {
                // Mostly-plausible garbage: right addresses and ethertype, random rest.
                f[..14].copy_from_slice(&base[..14]);
            }
        }
        Malform::BitFlips => {
            let n = rng.range(1, 8);
            for _ in 0..n {
                let b = rng.range(14 * 8, f.len() as u64 * 8 - 1);
                f[(b / 8) as usize] ^= 1 << (b % 8);
            }
        }
        Malform::SealedFlips => {
            let n = rng.range(1, 3);
            let hdr_end = (BTH_OFF + wire::BTH_LEN + 28).min(f.len() - 4);
            for _ in 0..n {
                let b = rng.range(IP_OFF as u64 * 8, hdr_end as u64 * 8 - 1);
                f[(b / 8) as usize] ^= 1 << (b % 8);
            }
            reseal(&mut f);
        }
    }
    if f.is_empty() {
        f.push(0);
    }
    f
}

/// What the contract's header and ICRC checks (section 7) do with `f` at NIC `to`:
/// `Err(counter)` for a drop (RX_DROP_HDR / RX_DROP_ICRC), `Ok(headers)` if it passes them.
pub fn classify(f: &[u8], to: usize) -> Result<Headers, u32> {
    match wire::parse_for_port(f, mac_u64(nic_mac(to)), u32::from(nic_ip(to))) {
        Ok(p) => Ok(p.hdr),
        Err(e) => Err(e.counter()),
    }
}

/// A random valid request or response frame to NIC `to`, QP `dqpn`, PSN `psn`, with a payload
/// that fits `mtu` (or sometimes does not, for length errors).
pub fn random_frame(rng: &mut SplitMix64, to: usize, dqpn: u32, psn: u32, mtu: usize) -> Vec<u8> {
    let ops = op::ALL;
    let (_, opcode) = ops[rng.range(0, ops.len() as u64 - 1) as usize];
    let mut h = to_nic(to, opcode, dqpn, psn);
    h.bth.ackreq = rng.range(0, 1) == 1;
    h.bth.se = rng.range(0, 7) == 0;
    if wire::has_reth(opcode) {
        h.reth = Some(Reth { va: rng.next_u64(), rkey: rng.next_u64() as u32, dma_len: rng.range(0, 2 * mtu as u64) as u32 });
    }
    if wire::has_atomic_eth(opcode) {
        h.atomic_eth = Some(wire::AtomicEth {
            va: rng.next_u64() & !7,
            rkey: rng.next_u64() as u32,
            swap_add: rng.next_u64(),
            compare: rng.next_u64(),
        });
    }
    if wire::has_aeth(opcode) {
        h.aeth = Some(Aeth { syndrome: rng.next_u64() as u8, msn: rng.next_u64() as u32 & 0xFF_FFFF });
    }
    if wire::has_atomic_ack(opcode) {
        h.atomic_ack = Some(rng.next_u64());
    }
    if wire::has_imm(opcode) {
        h.imm = Some(rng.next_u64() as u32);
    }
    let carries = !matches!(opcode, op::READ_REQUEST | op::ACK | op::ATOMIC_ACK | op::CMP_SWAP | op::FETCH_ADD);
    let len = if carries { rng.range(0, mtu as u64 + 8) as usize } else { 0 };
    let payload: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
    build(&h, &payload)
}

/// One frame that entered the link.
#[derive(Clone, Debug)]
pub struct WireFrame {
    /// Index among all frames the tap saw (0-based).
    pub index: u64,
    /// Sending NIC.
    pub from: usize,
    /// The frame as the NIC sent it (before any fault).
    pub bytes: Vec<u8>,
    /// Copies the inner hook delivered (0 = dropped, 2 = duplicated).
    pub copies: usize,
    /// Whether a delivered copy differs from what was sent (corrupted).
    pub altered: bool,
}

impl WireFrame {
    /// (opcode, dest QP, PSN).
    pub fn bth(&self) -> (u8, u32, u32) {
        bth(&self.bytes).unwrap_or((0xFF, 0, 0))
    }
    /// BTH opcode.
    pub fn opcode(&self) -> u8 {
        self.bth().0
    }
    /// BTH PSN.
    pub fn psn(&self) -> u32 {
        self.bth().2
    }
    /// BTH dest QP.
    pub fn dqpn(&self) -> u32 {
        self.bth().1
    }
    /// AETH syndrome, if the opcode carries one.
    pub fn syndrome(&self) -> Option<u8> {
        aeth(&self.bytes).map(|a| a.0)
    }
    /// Parsed headers (the frame as sent is always well formed).
    pub fn headers(&self) -> Option<Headers> {
        wire::parse(&self.bytes).ok().map(|p| p.hdr)
    }
    /// Payload length (without pad).
    pub fn payload_len(&self) -> usize {
        wire::parse(&self.bytes).map(|p| p.payload.len()).unwrap_or(0)
    }
    /// Whether it was delivered at least once unaltered.
    pub fn delivered(&self) -> bool {
        self.copies > 0 && !self.altered
    }
}

/// Shared record of a [`Tap`].
pub type WireLog = Rc<RefCell<Vec<WireFrame>>>;

/// A [`FaultHook`] that records every frame, then lets `inner` decide its fate.
pub struct Tap {
    inner: Box<dyn FaultHook>,
    log: WireLog,
}

impl Tap {
    /// Tap in front of `inner`.
    pub fn new(inner: Box<dyn FaultHook>) -> Tap {
        Tap { inner, log: WireLog::default() }
    }
    /// The shared record (keep a clone before handing the tap to the fabric).
    pub fn log(&self) -> WireLog {
        Rc::clone(&self.log)
    }
}

impl FaultHook for Tap {
    fn on_frame(&mut self, from: usize, to: usize, frame: Vec<u8>) -> Vec<(u64, Vec<u8>)> {
        let sent = frame.clone();
        let out = self.inner.on_frame(from, to, frame);
        let altered = out.iter().any(|(_, f)| *f != sent);
        let mut log = self.log.borrow_mut();
        let index = log.len() as u64;
        log.push(WireFrame { index, from, bytes: sent, copies: out.len(), altered });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_frames_pass_and_malformed_ones_fail_where_expected() {
        let mut rng = SplitMix64::new(7);
        let mut h = to_nic(1, op::SEND_ONLY, 5, 100);
        h.bth.ackreq = true;
        let base = build(&h, &[1, 2, 3, 4, 5]);
        assert!(classify(&base, 1).is_ok());
        assert_eq!(classify(&base, 0).err(), Some(rnic_regs::counter::RX_DROP_HDR));
        for _ in 0..200 {
            for k in Malform::ALL {
                let f = malformed(&mut rng, k, &base);
                let c = classify(&f, 1);
                if k.always_hdr_drop() {
                    assert_eq!(c.err(), Some(rnic_regs::counter::RX_DROP_HDR), "{k:?}");
                }
                if k == Malform::Icrc {
                    assert_eq!(c.err(), Some(rnic_regs::counter::RX_DROP_ICRC), "{k:?}");
                }
                if k == Malform::EthPadding {
                    assert!(c.is_ok(), "{k:?}");
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// A connected pair with chosen QP attributes (short timers for simulation) over any fault hook
// ------------------------------------------------------------------------------------------------

use rnic_driver::{Context, Mtu, QpInitAttr, QueuePair, RtrAttr, RtsAttr};

use crate::fabric::{Fabric, FabricConfig};
use crate::harness::{Endpoint, Pair, PairOptions};

/// QP attributes of a [`pair_with`] pair (both directions use the same values).
#[derive(Clone, Debug)]
pub struct QpCfg {
    /// Number of connected QP pairs.
    pub qps: usize,
    /// Path MTU.
    pub mtu: Mtu,
    /// Local ACK timeout exponent (1024 << timeout cycles; 0 = none).
    pub timeout: u8,
    /// Transport retry count.
    pub retry_cnt: u8,
    /// RNR retry count (7 = infinite).
    pub rnr_retry: u8,
    /// RNR timer code the responder sends (1 = 10 us = 2,500 cycles).
    pub min_rnr_timer: u8,
    /// READ/atomic requests outstanding as requester (NIC 0's QPs; NIC 1's use 16).
    pub max_rd_atomic: u8,
    /// First send PSN of NIC 0's QP k is `psn_a + k * 0x1000`.
    pub psn_a: u32,
    /// First send PSN of NIC 1's QP k is `psn_b + k * 0x1000`.
    pub psn_b: u32,
    /// Registered buffer bytes per side.
    pub mr_len: u64,
    /// Queue depths.
    pub depth: u32,
    /// CQ depth.
    pub cq_depth: u32,
    /// Fabric (backend, link delay).
    pub fabric: FabricConfig,
}

impl Default for QpCfg {
    fn default() -> QpCfg {
        QpCfg {
            qps: 1,
            mtu: Mtu::Mtu256,
            timeout: 4,
            retry_cnt: 7,
            rnr_retry: 7,
            min_rnr_timer: 1,
            max_rd_atomic: 16,
            psn_a: 0x10_0000,
            psn_b: 0xFF_FF00,
            mr_len: 1 << 16,
            depth: 64,
            cq_depth: 512,
            fabric: FabricConfig::default(),
        }
    }
}

impl QpCfg {
    /// First send PSN of NIC `nic`'s QP `k`.
    pub fn psn(&self, nic: usize, k: usize) -> u32 {
        let base = if nic == 0 { self.psn_a } else { self.psn_b };
        base.wrapping_add(0x1000 * k as u32) & 0xFF_FFFF
    }

    /// Connect `qp` (on NIC `nic`, index `k`) to `dest` (RESET/INIT → INIT → RTR → RTS).
    ///
    /// # Errors
    /// The driver's.
    pub fn connect(&self, qp: &QueuePair, nic: usize, k: usize, dest: u32) -> rnic_driver::Result<()> {
        let access = PairOptions::default().access;
        qp.to_init(access)?;
        qp.to_rtr(&RtrAttr {
            dest_qpn: dest,
            rq_psn: self.psn(nic ^ 1, k),
            path_mtu: self.mtu,
            dest_mac: nic_mac(nic ^ 1),
            dest_ip: nic_ip(nic ^ 1),
            max_dest_rd_atomic: 16,
            min_rnr_timer: self.min_rnr_timer,
        })?;
        qp.to_rts(&RtsAttr {
            sq_psn: self.psn(nic, k),
            timeout: self.timeout,
            retry_cnt: self.retry_cnt,
            rnr_retry: self.rnr_retry,
            max_rd_atomic: if nic == 0 { self.max_rd_atomic } else { 16 },
        })
    }
}

/// Two NICs on a link with `hook`, `cfg.qps` connected QP pairs with `cfg`'s attributes.
///
/// # Panics
/// On any setup failure.
pub fn pair_with(cfg: &QpCfg, hook: Box<dyn FaultHook>) -> Pair {
    let access = PairOptions::default().access;
    let fabric = Fabric::with_faults(cfg.fabric.clone(), hook).expect("fabric");
    let mut eps = Vec::new();
    for i in 0..2 {
        let ctx = Context::open(Fabric::device(&fabric, i, 0)).expect("open");
        ctx.set_port(nic_mac(i), nic_ip(i)).expect("set_port");
        let pd = ctx.alloc_pd().expect("alloc_pd");
        let cq = ctx.create_cq(cfg.cq_depth).expect("create_cq");
        let mr = pd.reg_mr(cfg.mr_len, access).expect("reg_mr");
        let qps = (0..cfg.qps)
            .map(|_| {
                pd.create_qp(&QpInitAttr { send_cq: &cq, recv_cq: &cq, max_send_wr: cfg.depth, max_recv_wr: cfg.depth })
                    .expect("create_qp")
            })
            .collect();
        eps.push(Endpoint { ctx, pd, cq, mr, qps });
    }
    for k in 0..cfg.qps {
        let (qa, qb) = (eps[0].qps[k].qpn(), eps[1].qps[k].qpn());
        cfg.connect(&eps[0].qps[k], 0, k, qb).expect("connect NIC 0");
        cfg.connect(&eps[1].qps[k], 1, k, qa).expect("connect NIC 1");
    }
    let b = eps.pop().expect("two endpoints");
    let a = eps.pop().expect("two endpoints");
    Pair { fabric, a, b }
}
