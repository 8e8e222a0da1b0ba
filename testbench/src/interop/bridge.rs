// SPDX-License-Identifier: Apache-2.0
//! The bridge between a simulated NIC's wire and a real Ethernet peer outside the simulator, in
//! the framing of QEMU's `-netdev dgram`: exactly one Ethernet frame per UDP datagram, no length
//! prefix, no FCS, short frames not padded (QEMU accepts datagrams from any source port).
//!
//! The bridge is also the NIC's *host stack* for what the NIC does not do itself:
//! * it answers ARP requests for the NIC's IPv4 address (the NIC has no ARP), learns the peer's
//!   MAC from every ARP packet and IPv4 frame it sees, and can ask (`who-has`) for a peer's MAC;
//! * it drops, before the NIC, every frame that is not IPv4/UDP to port 4791 for the NIC's
//!   address (IPv6 neighbour discovery, multicast, the guest's other IPv4 traffic), counting
//!   them in [`BridgeStats`], so the NIC's `RX_DROP_HDR` counts only real RoCEv2 header faults.
//!
//! With [`Bridge::new_stream`] the bridge speaks QEMU's `-netdev stream` instead: a TCP
//! connection (QEMU 7.2's client never reconnects, so the bridge listens first and QEMU connects)
//! carrying each frame as a 4-byte big-endian length and the frame, with `TCP_NODELAY`.
//!
//! Every frame that crosses the bridge, in either direction and whatever it is, goes to the
//! bridge's pcap (timestamps: wall-clock time since the bridge was created).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::link::ExternalPort;
use crate::pcap::{Capture, CLOCK_PERIOD_PS};

const ETH_ARP: u16 = 0x0806;
const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86DD;
const ROCE_PORT: u16 = 4791;
/// Default pacing of frames towards the peer (see [`Bridge::set_pace`]); `RNIC_INTEROP_PPS`
/// overrides the rate (0 = off).
pub const DEFAULT_PACE_PPS: u32 = 20_000;
/// Default burst of the pacing.
pub const DEFAULT_PACE_BURST: u32 = 48;

/// What crossed the bridge.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BridgeStats {
    /// Frames the NIC sent to the peer.
    pub nic_to_peer: u64,
    /// RoCEv2 frames from the peer handed to the NIC.
    pub peer_to_nic: u64,
    /// ARP requests for our address answered.
    pub arp_replies: u64,
    /// ARP requests we sent.
    pub arp_requests: u64,
    /// IPv6 frames dropped (neighbour discovery, MLD, ...).
    pub dropped_ipv6: u64,
    /// Other frames dropped (non-RoCE IPv4, other ethertypes, other ARP, runts).
    pub dropped_other: u64,
}

/// One end of a QEMU `dgram` netdev.
pub struct Bridge {
    sock: UdpSocket,
    peer: SocketAddr,
    mac: [u8; 6],
    ip: Ipv4Addr,
    neighbours: HashMap<Ipv4Addr, [u8; 6]>,
    capture: Option<Capture>,
    t0: Instant,
    blocking: bool,
    buf: Vec<u8>,
    /// `-netdev stream` framing instead of the UDP socket.
    stream: Option<StreamWire>,
    /// Frames from the NIC waiting for their turn (see [`Bridge::set_pace`]).
    out_q: std::collections::VecDeque<Vec<u8>>,
    pace_pps: u32,
    pace_burst: u32,
    tokens: f64,
    last_refill: Instant,
    /// Counters.
    pub stats: BridgeStats,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge").field("local", &self.sock.local_addr().ok()).field("peer", &self.peer).finish()
    }
}

/// A shared handle on a bridge (the fabric owns a [`BridgePort`] of it, the peer code keeps one).
pub type BridgeRef = Rc<RefCell<Bridge>>;

impl Bridge {
    /// A bridge bound to `local` (UDP) sending to `peer` (the QEMU netdev's `local` address), for
    /// a NIC with `mac` and `ip`, capturing to `capture` if given.
    ///
    /// # Errors
    /// The socket cannot be bound or the capture created.
    pub fn new(local: SocketAddr, peer: SocketAddr, mac: [u8; 6], ip: Ipv4Addr, capture: Option<&Path>) -> Result<BridgeRef, String> {
        let sock = UdpSocket::bind(local).map_err(|e| format!("bridge: bind {local}: {e}"))?;
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        // Bursts of full frames from the guest must not overflow the socket buffer while the
        // simulator is busy (the default, ~200 KiB, holds about 90 of them; a 64 KiB WRITE is 64).
        set_rcvbuf(&sock, RCVBUF_BYTES);
        let capture = match capture {
            Some(p) => Some(Capture::create(p).map_err(|e| e.to_string())?),
            None => None,
        };
        Ok(Rc::new(RefCell::new(Bridge {
            sock,
            peer,
            mac,
            ip,
            neighbours: HashMap::new(),
            capture,
            t0: Instant::now(),
            blocking: false,
            buf: vec![0; 65536],
            stream: None,
            out_q: std::collections::VecDeque::new(),
            pace_pps: DEFAULT_PACE_PPS,
            pace_burst: DEFAULT_PACE_BURST,
            tokens: f64::from(DEFAULT_PACE_BURST),
            last_refill: Instant::now(),
            stats: BridgeStats::default(),
        })))
    }

    /// A bridge in `-netdev stream` framing, listening on `listen` (QEMU's `addr`).
    ///
    /// # Errors
    /// The sockets cannot be bound or the capture created.
    pub fn new_stream(listen: SocketAddr, mac: [u8; 6], ip: Ipv4Addr, capture: Option<&Path>) -> Result<BridgeRef, String> {
        let listener = std::net::TcpListener::bind(listen).map_err(|e| format!("bridge: listen {listen}: {e}"))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let unused = "127.0.0.1:0".parse().expect("address");
        let b = Bridge::new(unused, unused, mac, ip, capture)?;
        b.borrow_mut().stream = Some(StreamWire { listener, conn: None, rx: Vec::new(), tx: Vec::new() });
        Ok(b)
    }

    /// The address QEMU's netdev talks to: the UDP socket (dgram `remote`) or the TCP listener
    /// (stream `addr`).
    pub fn local_addr(&self) -> SocketAddr {
        match &self.stream {
            Some(s) => s.listener.local_addr().expect("bound listener"),
            None => self.sock.local_addr().expect("bound socket"),
        }
    }

    /// Whether the bridge uses `-netdev stream` framing.
    pub fn is_stream(&self) -> bool {
        self.stream.is_some()
    }

    /// The MAC learnt for `ip`, if any.
    pub fn neighbour(&self, ip: Ipv4Addr) -> Option<[u8; 6]> {
        self.neighbours.get(&ip).copied()
    }

    /// Broadcast an ARP request for `ip`.
    pub fn send_arp_request(&mut self, ip: Ipv4Addr) {
        let f = arp_frame(1, self.mac, self.ip, [0xff; 6], [0; 6], ip);
        self.stats.arp_requests += 1;
        self.send_raw(&f);
    }

    /// The bridge's capture file, if any.
    pub fn capture_path(&self) -> Option<&Path> {
        self.capture.as_ref().map(Capture::path)
    }

    fn capture(&mut self, frame: &[u8]) {
        if let Some(c) = &mut self.capture {
            // The pcap module counts in clock cycles; convert wall time since start.
            let cycles = self.t0.elapsed().as_nanos() as u64 * 1000 / CLOCK_PERIOD_PS;
            let _ = c.write(cycles, frame);
        }
    }

    fn send_raw(&mut self, frame: &[u8]) {
        self.capture(frame);
        if let Some(s) = &mut self.stream {
            s.send(frame);
            return;
        }
        if let Err(e) = self.sock.send_to(frame, self.peer) {
            log::warn!("bridge: send to {}: {e}", self.peer);
        }
    }

    /// Pace frames from the NIC to at most `pps` per wall second in bursts of `burst` (0 = no
    /// pacing). A simulated NIC can emit a whole 64 KiB READ response at once; QEMU's socket
    /// buffer (the host's `rmem_default`, ~200 KiB = about 90 full frames) drops the rest while
    /// a TCG guest drains it, and rxe then retries. Frames wait in the bridge, not in the NIC:
    /// the simulated wire is unaffected.
    pub fn set_pace(&mut self, pps: u32, burst: u32) {
        self.pace_pps = pps;
        self.pace_burst = burst.max(1);
    }

    /// Frames from the NIC not sent yet.
    pub fn queued(&self) -> usize {
        self.out_q.len()
    }

    /// A frame from the NIC to the peer.
    pub fn send_from_nic(&mut self, frame: &[u8]) {
        self.stats.nic_to_peer += 1;
        self.out_q.push_back(frame.to_vec());
        self.flush_out();
    }

    fn flush_out(&mut self) {
        if self.pace_pps == 0 {
            while let Some(f) = self.out_q.pop_front() {
                self.send_raw(&f);
            }
            return;
        }
        let now = Instant::now();
        let dt = now.duration_since(self.last_refill).as_secs_f64();
        self.last_refill = now;
        self.tokens = (self.tokens + dt * f64::from(self.pace_pps)).min(f64::from(self.pace_burst));
        while self.tokens >= 1.0 {
            let Some(f) = self.out_q.pop_front() else { break };
            self.tokens -= 1.0;
            self.send_raw(&f);
        }
    }

    /// Datagrams from the peer; returns the frames for the NIC. Waits up to `wait` for the first.
    pub fn poll(&mut self, wait: Option<Duration>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        self.flush_out();
        // With frames waiting for their turn, wait no longer than the pacing needs.
        let wait = if self.out_q.is_empty() { wait } else { wait.map(|w| w.min(Duration::from_micros(200))) };
        if let Some(s) = &mut self.stream {
            let frames = s.poll(wait);
            for f in frames {
                self.take_from_peer(f, &mut out);
            }
            return out;
        }
        if let Some(w) = wait.filter(|w| !w.is_zero()) {
            if !self.blocking {
                let _ = self.sock.set_nonblocking(false);
                self.blocking = true;
            }
            let _ = self.sock.set_read_timeout(Some(w));
            if let Ok((n, _)) = self.sock.recv_from(&mut self.buf) {
                let f = self.buf[..n].to_vec();
                self.take_from_peer(f, &mut out);
            }
        }
        if self.blocking {
            let _ = self.sock.set_nonblocking(true);
            self.blocking = false;
        }
        while let Ok((n, _)) = self.sock.recv_from(&mut self.buf) {
            let f = self.buf[..n].to_vec();
            self.take_from_peer(f, &mut out);
        }
        out
    }

    fn take_from_peer(&mut self, f: Vec<u8>, out: &mut Vec<Vec<u8>>) {
        self.capture(&f);
        if f.len() < 14 {
            self.stats.dropped_other += 1;
            return;
        }
        let src_mac: [u8; 6] = f[6..12].try_into().expect("6 bytes");
        match u16::from_be_bytes([f[12], f[13]]) {
            ETH_ARP => self.arp_in(&f),
            ETH_IPV4 if f.len() >= 14 + 20 + 8 => {
                let ip = &f[14..];
                let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
                let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
                if !src.is_unspecified() && !src.is_multicast() {
                    self.neighbours.insert(src, src_mac);
                }
                let ihl = usize::from(ip[0] & 0xf) * 4;
                let udp_dst = if ip[9] == 17 && ip.len() >= ihl + 8 {
                    u16::from_be_bytes([ip[ihl + 2], ip[ihl + 3]])
                } else {
                    0
                };
                if dst == self.ip && udp_dst == ROCE_PORT {
                    self.stats.peer_to_nic += 1;
                    out.push(f);
                } else {
                    self.stats.dropped_other += 1;
                }
            }
            ETH_IPV6 => self.stats.dropped_ipv6 += 1,
            _ => self.stats.dropped_other += 1,
        }
    }

    fn arp_in(&mut self, f: &[u8]) {
        // htype 1, ptype 0x0800, hlen 6, plen 4
        if f.len() < 14 + 28 || f[14..20] != [0, 1, 8, 0, 6, 4] {
            self.stats.dropped_other += 1;
            return;
        }
        let a = &f[14..];
        let op = u16::from_be_bytes([a[6], a[7]]);
        let sha: [u8; 6] = a[8..14].try_into().expect("6 bytes");
        let spa = Ipv4Addr::new(a[14], a[15], a[16], a[17]);
        let tpa = Ipv4Addr::new(a[24], a[25], a[26], a[27]);
        if !spa.is_unspecified() {
            self.neighbours.insert(spa, sha);
        }
        if op == 1 && tpa == self.ip {
            let reply = arp_frame(2, self.mac, self.ip, sha, sha, spa);
            self.stats.arp_replies += 1;
            self.send_raw(&reply);
        }
    }
}

/// QEMU's `-netdev stream` wire: 4-byte big-endian length + frame, both ways.
struct StreamWire {
    listener: std::net::TcpListener,
    conn: Option<std::net::TcpStream>,
    rx: Vec<u8>,
    tx: Vec<u8>,
}

impl StreamWire {
    fn accept(&mut self) {
        if self.conn.is_none() {
            if let Ok((c, _)) = self.listener.accept() {
                let _ = c.set_nodelay(true);
                let _ = c.set_nonblocking(true);
                self.conn = Some(c);
            }
        }
    }

    fn send(&mut self, frame: &[u8]) {
        self.accept();
        if self.conn.is_none() {
            log::warn!("bridge: frame dropped, QEMU has not connected yet");
            return;
        }
        self.tx.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        self.tx.extend_from_slice(frame);
        self.flush();
    }

    fn flush(&mut self) {
        use std::io::Write;
        let Some(c) = &mut self.conn else { return };
        while !self.tx.is_empty() {
            match c.write(&self.tx) {
                Ok(0) => break,
                Ok(n) => {
                    self.tx.drain(..n);
                }
                Err(_) => break, // WouldBlock: the rest goes with the next flush
            }
        }
    }

    fn poll(&mut self, wait: Option<Duration>) -> Vec<Vec<u8>> {
        use std::io::Read;
        self.accept();
        self.flush();
        let mut out = Vec::new();
        let Some(c) = &mut self.conn else {
            if let Some(w) = wait {
                std::thread::sleep(w.min(Duration::from_millis(1)));
            }
            return out;
        };
        let mut buf = [0u8; 65536];
        let mut first = true;
        loop {
            if first && wait.is_some() && self.rx.len() < 4 {
                let _ = c.set_nonblocking(false);
                let _ = c.set_read_timeout(wait);
            }
            let r = c.read(&mut buf);
            if first && wait.is_some() {
                let _ = c.set_nonblocking(true);
            }
            first = false;
            match r {
                Ok(0) => {
                    log::warn!("bridge: QEMU closed the stream");
                    self.conn = None;
                    break;
                }
                Ok(n) => self.rx.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        while self.rx.len() >= 4 {
            let n = u32::from_be_bytes([self.rx[0], self.rx[1], self.rx[2], self.rx[3]]) as usize;
            if self.rx.len() < 4 + n {
                break;
            }
            out.push(self.rx[4..4 + n].to_vec());
            self.rx.drain(..4 + n);
        }
        out
    }
}

/// Receive buffer asked for on the bridge's socket.
const RCVBUF_BYTES: i32 = 16 << 20;

/// Enlarge the socket's receive buffer: `SO_RCVBUFFORCE` (root) past `net.core.rmem_max`, else
/// `SO_RCVBUF` up to it. Best effort: a smaller buffer only costs retransmissions.
fn set_rcvbuf(sock: &UdpSocket, bytes: i32) {
    use std::os::fd::AsRawFd;
    extern "C" {
        fn setsockopt(fd: i32, level: i32, name: i32, value: *const std::ffi::c_void, len: u32) -> i32;
    }
    const SOL_SOCKET: i32 = 1;
    const SO_RCVBUF: i32 = 8;
    const SO_RCVBUFFORCE: i32 = 33;
    let v = bytes;
    let p = std::ptr::addr_of!(v).cast::<std::ffi::c_void>();
    // SAFETY: a valid socket descriptor and a pointer to a live i32 of the given length.
    unsafe {
        if setsockopt(sock.as_raw_fd(), SOL_SOCKET, SO_RCVBUFFORCE, p, 4) != 0 {
            setsockopt(sock.as_raw_fd(), SOL_SOCKET, SO_RCVBUF, p, 4);
        }
    }
}

/// An ARP packet (`op` 1 request, 2 reply) in an Ethernet frame to `eth_dst`, unpadded.
fn arp_frame(op: u16, sha: [u8; 6], spa: Ipv4Addr, eth_dst: [u8; 6], tha: [u8; 6], tpa: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&ETH_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa.octets());
    f
}

/// The fabric's view of a bridge: NIC 0's wire.
#[derive(Debug)]
pub struct BridgePort(pub BridgeRef);

impl ExternalPort for BridgePort {
    fn transmit(&mut self, frame: Vec<u8>) {
        self.0.borrow_mut().send_from_nic(&frame);
    }

    fn receive(&mut self, wait: Option<Duration>) -> Vec<Vec<u8>> {
        self.0.borrow_mut().poll(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_answered_roce_passed_rest_dropped() {
        let ours = Ipv4Addr::new(192, 0, 2, 1);
        let peer_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer_sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let b = Bridge::new("127.0.0.1:0".parse().unwrap(), peer_sock.local_addr().unwrap(), [2, 0, 0, 0, 0, 1], ours, None).unwrap();
        let to = b.borrow().local_addr();
        let pm = [0x52, 0x54, 0, 0x12, 0x34, 2];
        let pip = Ipv4Addr::new(192, 0, 2, 2);
        // ARP request from the peer
        peer_sock.send_to(&arp_frame(1, pm, pip, [0xff; 6], [0; 6], ours), to).unwrap();
        // an IPv6 frame
        let mut v6 = vec![0x33, 0x33, 0, 0, 0, 1];
        v6.extend_from_slice(&pm);
        v6.extend_from_slice(&[0x86, 0xdd]);
        v6.extend_from_slice(&[0u8; 40]);
        peer_sock.send_to(&v6, to).unwrap();
        // a RoCE frame (headers only as far as the bridge looks)
        let mut r = vec![2, 0, 0, 0, 0, 1];
        r.extend_from_slice(&pm);
        r.extend_from_slice(&[8, 0, 0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 17, 0, 0]);
        r.extend_from_slice(&pip.octets());
        r.extend_from_slice(&ours.octets());
        r.extend_from_slice(&[0xc0, 0, 0x12, 0xb7, 0, 40, 0, 0]);
        r.extend_from_slice(&[0u8; 16]);
        peer_sock.send_to(&r, to).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let got = b.borrow_mut().poll(Some(Duration::from_millis(100)));
        assert_eq!(got, vec![r]);
        let mut buf = [0u8; 100];
        let (n, _) = peer_sock.recv_from(&mut buf).unwrap();
        assert_eq!(n, 42);
        assert_eq!(&buf[..6], &pm);
        assert_eq!(u16::from_be_bytes([buf[20], buf[21]]), 2);
        let s = b.borrow().stats;
        assert_eq!((s.arp_replies, s.dropped_ipv6, s.peer_to_nic), (1, 1, 1));
        assert_eq!(b.borrow().neighbour(pip), Some(pm));
    }

    #[test]
    fn stream_framing() {
        use std::io::{Read, Write};
        let ours = Ipv4Addr::new(192, 0, 2, 1);
        let b = Bridge::new_stream("127.0.0.1:0".parse().unwrap(), [2, 0, 0, 0, 0, 1], ours, None).unwrap();
        let mut qemu = std::net::TcpStream::connect(b.borrow().local_addr()).unwrap();
        qemu.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let pm = [0x52, 0x54, 0, 0x12, 0x34, 2];
        let req = arp_frame(1, pm, Ipv4Addr::new(192, 0, 2, 2), [0xff; 6], [0; 6], ours);
        // the length prefix and the frame in two writes: the bridge reassembles
        qemu.write_all(&(req.len() as u32).to_be_bytes()).unwrap();
        qemu.write_all(&req).unwrap();
        let mut got = Vec::new();
        for _ in 0..50 {
            got.extend(b.borrow_mut().poll(Some(Duration::from_millis(10))));
        }
        assert!(got.is_empty(), "ARP is the bridge's, not the NIC's");
        let mut len = [0u8; 4];
        qemu.read_exact(&mut len).unwrap();
        assert_eq!(u32::from_be_bytes(len), 42);
        let mut reply = [0u8; 42];
        qemu.read_exact(&mut reply).unwrap();
        assert_eq!(&reply[..6], &pm);
        assert_eq!(u16::from_be_bytes([reply[20], reply[21]]), 2);
    }
}
