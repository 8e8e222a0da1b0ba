// SPDX-License-Identifier: Apache-2.0
//! Interoperability with an independent RoCEv2 stack: the Linux kernel's rxe and the unmodified
//! `ibv_rc_pingpong` / perftest tools in a QEMU guest, talking to one simulated NIC (model, RTL or
//! both in lockstep) whose wire is bridged to the guest (see `docs/interop.md`).
//!
//! * [`bridge`]: the QEMU `-netdev dgram` end of the simulated wire, with ARP answered there.
//! * [`guest`]: booting the guest and running commands in it.
//! * [`oob`]: the out-of-band TCP exchanges of `ibv_rc_pingpong` and perftest.
//! * [`Station`]: our NIC on the bridge, with the driver's verbs objects, and the peers
//!   ([`pingpong`], [`perftest`]) written against the driver.

pub mod bridge;
pub mod guest;
pub mod oob;
pub mod perftest;
pub mod pingpong;
pub mod suite;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use rnic_driver::{Context, Cq, WorkCompletion};

use crate::fabric::{Backend, Fabric, FabricConfig, FabricRef};
use bridge::{Bridge, BridgePort, BridgeRef};

/// Our side's addresses (documentation range, never routed: these frames only cross the
/// loopback UDP socket between the simulator and QEMU).
pub const NIC_MAC: [u8; 6] = [0x02, 0x52, 0x4e, 0x49, 0x43, 0x01];
/// IPv4 address of the simulated NIC.
pub const NIC_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// MAC of the guest's bridged NIC.
pub const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x02];
/// IPv4 address of the guest's bridged NIC (rxe0 runs on it).
pub const GUEST_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

/// The RoCE v2 IPv4-mapped GID of an address (`::ffff:a.b.c.d`).
pub fn ipv4_gid(ip: Ipv4Addr) -> [u8; 16] {
    let mut g = [0u8; 16];
    g[10] = 0xff;
    g[11] = 0xff;
    g[12..].copy_from_slice(&ip.octets());
    g
}

/// The IPv4 address of an IPv4-mapped GID (our NIC speaks RoCE v2 over IPv4 only).
pub fn gid_ipv4(g: &[u8; 16]) -> Option<Ipv4Addr> {
    (g[..10].iter().all(|&b| b == 0) && g[10] == 0xff && g[11] == 0xff).then(|| Ipv4Addr::new(g[12], g[13], g[14], g[15]))
}

/// One simulated NIC whose wire is the bridge, and a driver context on its PF.
pub struct Station {
    /// The fabric (one NIC, external port).
    pub fabric: FabricRef,
    /// The bridge.
    pub bridge: BridgeRef,
    /// Driver context of the PF.
    pub ctx: Context,
    /// Backend the NIC runs on.
    pub backend: Backend,
}

impl std::fmt::Debug for Station {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Station").field("backend", &self.backend).finish()
    }
}

impl Station {
    /// Bind the bridge on the loopback (sending to QEMU's `qemu_port`), build the fabric and open
    /// the NIC with [`NIC_MAC`]/[`NIC_IP`]. `bridge_pcap` gets every frame on the bridge,
    /// `nic_pcap` every frame in and out of the NIC (the fabric's capture).
    ///
    /// # Errors
    /// Socket, fabric or driver setup failed.
    pub fn new(backend: Backend, qemu_port: u16, bridge_pcap: Option<&Path>, nic_pcap: Option<&Path>) -> Result<Station, String> {
        Station::with_netdev(backend, qemu_port, false, bridge_pcap, nic_pcap)
    }

    /// [`Station::new`], with QEMU's `-netdev stream` framing when `stream` (the bridge then
    /// listens on a TCP port and `qemu_port` is unused).
    ///
    /// # Errors
    /// Socket, fabric or driver setup failed.
    pub fn with_netdev(
        backend: Backend,
        qemu_port: u16,
        stream: bool,
        bridge_pcap: Option<&Path>,
        nic_pcap: Option<&Path>,
    ) -> Result<Station, String> {
        let peer: SocketAddr = format!("127.0.0.1:{qemu_port}").parse().expect("address");
        let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let bridge = if stream {
            Bridge::new_stream(any, NIC_MAC, NIC_IP, bridge_pcap)?
        } else {
            Bridge::new(any, peer, NIC_MAC, NIC_IP, bridge_pcap)?
        };
        if let Some(pps) = std::env::var("RNIC_INTEROP_PPS").ok().and_then(|s| s.parse().ok()) {
            bridge.borrow_mut().set_pace(pps, bridge::DEFAULT_PACE_BURST);
        }
        let cfg = FabricConfig {
            backend,
            capture: nic_pcap.map(Path::to_path_buf),
            // Every progress() call polls the bridge; small batches keep the latency low.
            progress_cycles: 200,
            ..FabricConfig::default()
        };
        let fabric = Fabric::with_external_port(cfg, Box::new(BridgePort(bridge.clone()))).map_err(|e| e.to_string())?;
        let ctx = Context::open(Fabric::device(&fabric, 0, 0)).map_err(|e| format!("open: {e}"))?;
        ctx.set_port(NIC_MAC, NIC_IP).map_err(|e| format!("set_port: {e}"))?;
        Ok(Station { fabric, bridge, ctx, backend })
    }

    /// A CQ of `depth` entries (its ring is zeroed by the allocator, `Device::dma_alloc`).
    ///
    /// # Errors
    /// The driver failed.
    pub fn create_cq(&self, depth: u32) -> Result<Cq, String> {
        self.ctx.create_cq(depth).map_err(|e| format!("create_cq: {e}"))
    }

    /// The bridge's UDP address (QEMU's dgram `remote`).
    pub fn bridge_addr(&self) -> SocketAddr {
        self.bridge.borrow().local_addr()
    }

    /// Run the NIC for a while (polls the bridge).
    ///
    /// # Errors
    /// The simulation failed (a lockstep mismatch, say).
    pub fn progress(&self) -> Result<(), String> {
        self.ctx.progress().map_err(|e| e.to_string())
    }

    /// The MAC of `ip` on the bridge: learnt from the peer's traffic, else asked for with ARP.
    ///
    /// # Errors
    /// No answer within `timeout`.
    pub fn resolve(&self, ip: Ipv4Addr, timeout: Duration) -> Result<[u8; 6], String> {
        let t0 = Instant::now();
        let mut last_ask: Option<Instant> = None;
        loop {
            if let Some(m) = self.bridge.borrow().neighbour(ip) {
                return Ok(m);
            }
            if last_ask.is_none_or(|t| t.elapsed() > Duration::from_millis(500)) {
                self.bridge.borrow_mut().send_arp_request(ip);
                last_ask = Some(Instant::now());
            }
            if t0.elapsed() > timeout {
                return Err(format!("no ARP answer for {ip} within {timeout:?}"));
            }
            self.progress()?;
        }
    }

    /// The next completion on `cq`, running the NIC until it comes.
    ///
    /// # Errors
    /// None before `deadline`, or the simulation failed.
    pub fn wait_wc(&self, cq: &Cq, deadline: Instant, what: &str) -> Result<WorkCompletion, String> {
        loop {
            if let Some(wc) = cq.poll_one().map_err(|e| format!("poll: {e}"))? {
                return Ok(wc);
            }
            if Instant::now() > deadline {
                return Err(format!("timed out waiting for a completion ({what})"));
            }
            self.progress()?;
        }
    }

    /// The NIC's counters, by name.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        rnic_regs::counter::ALL
            .iter()
            .filter(|(n, _)| *n != "NUM")
            .map(|&(n, i)| (n, self.ctx.counter(i)))
            .collect()
    }

    /// The NIC's error counters that are not zero: everything but the packet counts and RC
    /// recovery (`RX_DUP`: duplicates the peer retransmitted, answered as the spec says, and rxe
    /// retransmits spuriously, see docs/interop.md; `RNR_TIMER`, `ACK_TIMEOUT`, `RX_GHOST_ACK`:
    /// an RNR NAK from the guest or a lost frame, and the stale answers after the go-back).
    pub fn counter_errors(&self) -> Vec<(&'static str, u64)> {
        self.counters()
            .into_iter()
            // Traffic, and RC recovery that a loss or an RNR NAK of the peer causes: duplicates,
            // timer-driven retries, and a stale ACK/NAK arriving after a go-back (ghost).
            .filter(|(n, v)| {
                *v != 0
                    && !matches!(*n, "TX_PKTS" | "RX_PKTS" | "RX_DUP" | "RNR_TIMER" | "ACK_TIMEOUT" | "RX_GHOST_ACK")
            })
            .collect()
    }

    /// Lockstep only: compare everything that is left (predictions waiting, host memories).
    ///
    /// # Errors
    /// A mismatch.
    pub fn check_lockstep(&self) -> Result<(), String> {
        let mut f = self.fabric.borrow_mut();
        f.check_drained().and_then(|_| f.check_memories()).map_err(|e| e.to_string())
    }
}
