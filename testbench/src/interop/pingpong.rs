// SPDX-License-Identifier: Apache-2.0
//! `ibv_rc_pingpong`'s peer, written with our driver: the same QP setup (RC, RTR with
//! `min_rnr_timer` 12 and one READ in flight, RTS with timeout 14, retry 7, RNR retry 7), the same
//! out-of-band exchange ([`super::oob`]) and the same strictly alternating SEND/RECV loop, so
//! the unmodified tool in the guest talks to the simulated NIC.

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rnic_driver::{AccessFlags, Mtu, QpInitAttr, RecvWr, RtrAttr, RtsAttr, SendWr, WcStatus, WrOpcode};

use super::oob::{pp_client_done, pp_client_exchange, pp_server_read, pp_server_reply, PpDest};
use super::{gid_ipv4, ipv4_gid, Station, NIC_IP};

const RECV_WRID: u64 = 1;
const SEND_WRID: u64 = 2;

/// Parameters of one run (the tool's `-s`, `-n`, `-m`).
#[derive(Clone, Copy, Debug)]
pub struct PpParams {
    /// Message size in bytes.
    pub size: u32,
    /// Round trips.
    pub iters: u32,
    /// Path MTU.
    pub mtu: Mtu,
    /// Our first PSN.
    pub psn: u32,
    /// Wall-clock limit.
    pub timeout: Duration,
}

/// What a run measured on our side.
#[derive(Clone, Copy, Debug)]
pub struct PpResult {
    /// Messages sent and received.
    pub sent: u32,
    /// Messages received.
    pub received: u32,
    /// Wall time of the SEND/RECV loop.
    pub wall: Duration,
    /// The peer's QPN.
    pub peer_qpn: u32,
}

/// How our side reaches the tool's TCP exchange.
#[derive(Debug)]
pub enum PpRole {
    /// We are the server: the tool connects to this listener.
    Server(TcpListener),
    /// We are the client: connect to this address (the guest's forwarded port).
    Client(std::net::SocketAddr),
}

/// Run one pingpong against the tool.
///
/// # Errors
/// Exchange, connection or completion failures (with what was happening).
pub fn run(st: &Station, role: PpRole, p: &PpParams) -> Result<PpResult, String> {
    let deadline = Instant::now() + p.timeout;
    let e = |what: &'static str| move |err: rnic_driver::Error| format!("{what}: {err}");
    let ctx = &st.ctx;
    let pd = ctx.alloc_pd().map_err(e("alloc_pd"))?;
    let rx_depth = 16u32;
    let cq = st.create_cq(rx_depth * 2 + 2)?;
    let mr = pd.reg_mr(u64::from(p.size.max(1)), AccessFlags::LOCAL_WRITE).map_err(e("reg_mr"))?;
    mr.write(0, &vec![0x7b; p.size as usize]).map_err(e("init buffer"))?;
    let qp = pd
        .create_qp(&QpInitAttr { send_cq: &cq, recv_cq: &cq, max_send_wr: 4, max_recv_wr: rx_depth })
        .map_err(e("create_qp"))?;
    qp.to_init(AccessFlags::empty()).map_err(e("RESET -> INIT"))?;
    let sge = mr.sge(0, p.size).map_err(e("sge"))?;
    let post_recv = || qp.post_recv(&RecvWr { wr_id: RECV_WRID, sgl: vec![sge] }).map_err(e("post_recv"));
    for _ in 0..rx_depth {
        post_recv()?;
    }
    let me = PpDest { lid: 0, qpn: qp.qpn(), psn: p.psn & 0xff_ffff, gid: ipv4_gid(NIC_IP) };

    let connect = |rem: &PpDest| -> Result<(), String> {
        let ip = gid_ipv4(&rem.gid).ok_or_else(|| {
            format!("the peer's GID {:02x?} is not IPv4-mapped (RoCE v2 over IPv4 only; use the IPv4 GID index)", rem.gid)
        })?;
        let mac = st.resolve(ip, Duration::from_secs(20))?;
        qp.to_rtr(&RtrAttr {
            dest_qpn: rem.qpn,
            rq_psn: rem.psn,
            path_mtu: p.mtu,
            dest_mac: mac,
            dest_ip: ip,
            max_dest_rd_atomic: 1,
            min_rnr_timer: 12,
        })
        .map_err(e("INIT -> RTR"))?;
        qp.to_rts(&RtsAttr { sq_psn: me.psn, timeout: 14, retry_cnt: 7, rnr_retry: 7, max_rd_atomic: 1 })
            .map_err(e("RTR -> RTS"))
    };

    let client = matches!(role, PpRole::Client(_));
    let mut pump = || st.progress();
    let rem = match role {
        PpRole::Server(l) => {
            let mut s = accept_until(&l, deadline)?;
            let rem = pp_server_read(&mut s, &mut pump, deadline)?;
            connect(&rem)?;
            pp_server_reply(&mut s, &me, &mut pump, deadline)?;
            rem
        }
        PpRole::Client(addr) => {
            let mut s = connect_until(addr, deadline)?;
            let rem = pp_client_exchange(&mut s, &me, &mut pump, deadline)?;
            connect(&rem)?;
            pp_client_done(&mut s)?;
            rem
        }
    };
    log::info!("pingpong: local QP {:#x} PSN {:#x}, remote QP {:#x} PSN {:#x}", me.qpn, me.psn, rem.qpn, rem.psn);

    let t0 = Instant::now();
    let post_send = || qp.post_send(&SendWr::new(SEND_WRID, WrOpcode::Send, vec![sge])).map_err(e("post_send"));
    let (mut scnt, mut rcnt, mut routs) = (0u32, 0u32, rx_depth);
    let mut pending = RECV_WRID;
    if client {
        post_send()?;
        pending |= SEND_WRID;
    }
    while scnt < p.iters || rcnt < p.iters {
        let wc = st.wait_wc(&cq, deadline, &format!("pingpong: {scnt} sent, {rcnt} received of {}", p.iters))?;
        if wc.status != WcStatus::Success {
            return Err(format!("pingpong: completion {wc:?} (after {scnt} sent, {rcnt} received)"));
        }
        match wc.wr_id {
            SEND_WRID => scnt += 1,
            RECV_WRID => {
                if wc.byte_len != p.size {
                    return Err(format!("pingpong: received {} bytes, expected {}", wc.byte_len, p.size));
                }
                routs -= 1;
                if routs <= 1 {
                    while routs < rx_depth {
                        post_recv()?;
                        routs += 1;
                    }
                }
                rcnt += 1;
            }
            other => return Err(format!("pingpong: completion for unknown wr_id {other}")),
        }
        pending &= !wc.wr_id;
        if scnt < p.iters && pending == 0 {
            post_send()?;
            pending = RECV_WRID | SEND_WRID;
        }
    }
    let wall = t0.elapsed();
    // Let the last ACKs go out before the QP is destroyed.
    for _ in 0..20 {
        st.progress()?;
    }
    qp.destroy().map_err(e("destroy_qp"))?;
    Ok(PpResult { sent: scnt, received: rcnt, wall, peer_qpn: rem.qpn })
}

/// Accept one connection before `deadline`.
pub(crate) fn accept_until(l: &TcpListener, deadline: Instant) -> Result<TcpStream, String> {
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).map_err(|e| e.to_string())?;
                s.set_nodelay(true).ok();
                s.set_read_timeout(Some(deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1)))).ok();
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err("the tool in the guest never connected".into());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
}

/// Connect (retrying while the tool in the guest is not listening yet) before `deadline`.
///
/// Through QEMU's `hostfwd` the connect itself succeeds even when nothing listens in the guest;
/// the connection is then closed at once, which the first read sees. The callers' reads fail
/// then, so they retry the whole exchange; here we only retry refused connects.
pub(crate) fn connect_until(addr: std::net::SocketAddr, deadline: Instant) -> Result<TcpStream, String> {
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => {
                s.set_nodelay(true).ok();
                s.set_read_timeout(Some(deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1)))).ok();
                return Ok(s);
            }
            Err(e) => {
                if Instant::now() > deadline {
                    return Err(format!("cannot connect to the tool at {addr}: {e}"));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}
