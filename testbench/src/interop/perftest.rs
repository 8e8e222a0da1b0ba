// SPDX-License-Identifier: Apache-2.0
//! perftest's server side (`ib_write_bw`, `ib_read_bw`, `ib_send_bw` without rdma_cm), written
//! with our driver, so the unmodified tools in the guest run their client against our NIC.
//!
//! perftest's TCP protocol (perftest_communication.c, perftest 4.5 as in Debian bookworm): every
//! exchange is *client writes, server reads, server writes, client reads*, one `read()` per
//! message, so each message arrives alone. In order:
//! 1. `exchange_versions`: the version string (16 bytes); `check_sys_data`: cycle buffer size and
//!    cache line size (one `int` each); `check_mtu`: the active MTU enum as text (2 bytes);
//! 2. `ctx_hand_shake` with the keys: `KEY_PRINT_FMT_GID` =
//!    `"%04x:%04x:%06x:%06x:%08x:%016llx:" + 16 x "%02x:" + "%08x:"` (LID, outstanding READs,
//!    QPN, PSN, rkey, VA, GID bytes, SRQN), 108 bytes with the NUL, when a GID index is used;
//! 3. more `ctx_hand_shake`s with the same message as barriers (after RTR; before the test for
//!    send_bw; after the test); `xchg_bw_reports` (8-byte fields and a 4-byte SL);
//! 4. `ctx_close_connection`: a last hand shake, then both write `"done"` and close.
//!
//! So the server answers every message of another size with the same bytes (the max of equal
//! values is that value, our MTU covers rxe's, and the client does not print our report in a
//! half-duplex test), and every key message with its own keys; after the first key message it
//! connects its QP. Meanwhile it keeps the NIC running and, for SEND, keeps receives posted.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use rnic_driver::{AccessFlags, Mtu, QpInitAttr, RecvWr, RtrAttr, RtsAttr, WcOpcode, WcStatus};

use super::pingpong::accept_until;
use super::{gid_ipv4, ipv4_gid, Station, NIC_IP};

/// Key message size with a GID (`KEY_MSG_SIZE_GID`).
pub const KEY_MSG_SIZE_GID: usize = 108;
/// Outstanding READs we accept as a responder (advertised as `out_reads`).
pub const OUT_READS: u8 = 16;

/// Which tool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PtVerb {
    /// ib_write_bw
    Write,
    /// ib_read_bw
    Read,
    /// ib_send_bw
    Send,
}

impl PtVerb {
    /// The tool's name.
    pub fn tool(self) -> &'static str {
        match self {
            PtVerb::Write => "ib_write_bw",
            PtVerb::Read => "ib_read_bw",
            PtVerb::Send => "ib_send_bw",
        }
    }
}

/// Parameters of one run.
#[derive(Clone, Copy, Debug)]
pub struct PtParams {
    /// Tool.
    pub verb: PtVerb,
    /// Message size.
    pub size: u32,
    /// Iterations (the tool's `-n`).
    pub iters: u32,
    /// Wall-clock limit.
    pub timeout: Duration,
}

/// perftest's key message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PtDest {
    /// LID.
    pub lid: u16,
    /// Outstanding READs accepted.
    pub out_reads: u16,
    /// QPN.
    pub qpn: u32,
    /// PSN.
    pub psn: u32,
    /// rkey.
    pub rkey: u32,
    /// Buffer VA.
    pub vaddr: u64,
    /// GID.
    pub gid: [u8; 16],
    /// SRQ number.
    pub srqn: u32,
}

impl PtDest {
    /// `KEY_PRINT_FMT_GID`, NUL-padded to [`KEY_MSG_SIZE_GID`].
    pub fn encode(&self) -> [u8; KEY_MSG_SIZE_GID] {
        let mut s = format!(
            "{:04x}:{:04x}:{:06x}:{:06x}:{:08x}:{:016x}:",
            self.lid, self.out_reads, self.qpn, self.psn, self.rkey, self.vaddr
        );
        for b in self.gid {
            s.push_str(&format!("{b:02x}:"));
        }
        s.push_str(&format!("{:08x}:", self.srqn));
        let mut out = [0u8; KEY_MSG_SIZE_GID];
        out[..s.len()].copy_from_slice(s.as_bytes());
        out
    }

    /// Parse a key message (fields separated by ':', as the tool's `strtol` loop reads them).
    ///
    /// # Errors
    /// Not in the format.
    pub fn decode(msg: &[u8]) -> Result<PtDest, String> {
        let end = msg.iter().position(|&b| b == 0).unwrap_or(msg.len());
        let s = std::str::from_utf8(&msg[..end]).map_err(|_| "non-text perftest key message".to_string())?;
        let f: Vec<&str> = s.split(':').collect();
        let bad = || format!("bad perftest key message `{s}`");
        if f.len() < 23 {
            return Err(bad());
        }
        let h = |t: &str| u64::from_str_radix(t, 16).map_err(|_| bad());
        let mut gid = [0u8; 16];
        for (i, g) in gid.iter_mut().enumerate() {
            *g = h(f[6 + i])? as u8;
        }
        Ok(PtDest {
            lid: h(f[0])? as u16,
            out_reads: h(f[1])? as u16,
            qpn: h(f[2])? as u32,
            psn: h(f[3])? as u32,
            rkey: h(f[4])? as u32,
            vaddr: h(f[5])?,
            gid,
            srqn: h(f[22])? as u32,
        })
    }
}

/// What the server saw.
#[derive(Clone, Debug, Default)]
pub struct PtResult {
    /// SENDs received (send_bw).
    pub received: u64,
    /// Bytes received in SENDs.
    pub bytes: u64,
    /// Control messages exchanged.
    pub messages: u32,
    /// Sizes of the control messages received, in order (the protocol trace).
    pub trace: Vec<usize>,
    /// Operations this side posted (client) and completed.
    pub posted: u32,
    /// Wall time from the QP connected to the client's closing hand shake.
    pub wall: Duration,
}

impl std::fmt::Display for PtResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} control messages", self.messages)?;
        if self.posted > 0 {
            write!(f, ", {} operations posted and completed here", self.posted)?;
        }
        if self.received > 0 {
            write!(f, ", {} SENDs ({} B) received", self.received, self.bytes)?;
        }
        write!(f, ", {:.2} s wall", self.wall.as_secs_f64())
    }
}

/// Serve one perftest client that connects to `listener`.
///
/// # Errors
/// Protocol, connection or completion failures.
pub fn serve(st: &Station, listener: TcpListener, p: &PtParams) -> Result<PtResult, String> {
    let deadline = Instant::now() + p.timeout;
    let e = |what: &'static str| move |err: rnic_driver::Error| format!("{what}: {err}");
    let ctx = &st.ctx;
    let pd = ctx.alloc_pd().map_err(e("alloc_pd"))?;
    let rq_depth = 64u32;
    let cq = st.create_cq(rq_depth * 2)?;
    // perftest's buffer: 2 x max(size, cycle buffer); the client walks the remote VA through it.
    let buf_len = 2 * u64::from(p.size.max(65536));
    let access = AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_WRITE | AccessFlags::REMOTE_READ;
    let mr = pd.reg_mr(buf_len, access).map_err(e("reg_mr"))?;
    let qp = pd
        .create_qp(&QpInitAttr { send_cq: &cq, recv_cq: &cq, max_send_wr: 4, max_recv_wr: rq_depth })
        .map_err(e("create_qp"))?;
    qp.to_init(access).map_err(e("RESET -> INIT"))?;
    let sge = mr.sge(0, p.size.max(1)).map_err(e("sge"))?;
    if p.verb == PtVerb::Send {
        for i in 0..rq_depth {
            qp.post_recv(&RecvWr { wr_id: u64::from(i), sgl: vec![sge] }).map_err(e("post_recv"))?;
        }
    }
    let psn = 0x1f_2e3d ^ (p.size & 0xffff) ^ ((p.verb as u32) << 20);
    let me = PtDest {
        lid: 0,
        out_reads: u16::from(OUT_READS),
        qpn: qp.qpn(),
        psn,
        rkey: mr.rkey(),
        vaddr: mr.addr(),
        gid: ipv4_gid(NIC_IP),
        srqn: 0,
    };

    let mut s = accept_until(&listener, deadline)?;
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut res = PtResult::default();
    let mut connected_at: Option<Instant> = None;
    let mut keys_seen = 0u32;
    let mut buf = [0u8; 256];
    loop {
        // The NIC runs while we wait for the next control message.
        while let Some(wc) = cq.poll_one().map_err(e("poll"))? {
            if wc.status != WcStatus::Success {
                return Err(format!("{}: completion {wc:?}", p.verb.tool()));
            }
            if wc.opcode == WcOpcode::Recv {
                res.received += 1;
                res.bytes += u64::from(wc.byte_len);
                qp.post_recv(&RecvWr { wr_id: wc.wr_id, sgl: vec![sge] }).map_err(e("post_recv"))?;
            }
        }
        let n = match s.read(&mut buf) {
            Ok(0) => break, // the client closed after its "done"
            Ok(n) => n,
            Err(err) if err.kind() == ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err(format!("{}: timed out ({} control messages, {} SENDs received)", p.verb.tool(), res.messages, res.received));
                }
                st.progress()?;
                continue;
            }
            Err(err) => return Err(format!("{}: control connection: {err}", p.verb.tool())),
        };
        res.messages += 1;
        res.trace.push(n);
        let msg = &buf[..n];
        if msg.starts_with(b"done") {
            let _ = write_all_nb(&mut s, b"done\0", st, deadline);
            break;
        }
        if n == KEY_MSG_SIZE_GID {
            let rem = PtDest::decode(msg)?;
            write_all_nb(&mut s, &me.encode(), st, deadline)?;
            keys_seen += 1;
            if keys_seen == 1 {
                connect(st, &qp, &rem, &me)?;
                connected_at = Some(Instant::now());
                log::info!("{}: local QP {:#x}, remote QP {:#x}", p.verb.tool(), me.qpn, rem.qpn);
            }
            continue;
        }
        if n > 64 {
            return Err(format!(
                "{}: unexpected {n}-byte control message (a key message without GID? run the tool with -x <IPv4 GID index>)",
                p.verb.tool()
            ));
        }
        // Versions, sizes, MTU, reports: the same bytes back.
        let echo = msg.to_vec();
        write_all_nb(&mut s, &echo, st, deadline)?;
    }
    res.wall = connected_at.map(|t| t.elapsed()).unwrap_or_default();
    log::info!("{}: control messages received (sizes): {:?}", p.verb.tool(), res.trace);
    if p.verb == PtVerb::Send && res.received < u64::from(p.iters) {
        return Err(format!("ib_send_bw: {} SENDs received, the client sent {}", res.received, p.iters));
    }
    // Let the last ACKs leave before the QP goes.
    for _ in 0..20 {
        st.progress()?;
    }
    qp.destroy().map_err(e("destroy_qp"))?;
    Ok(res)
}

/// perftest's version string as this side announces it when it is the client (the tool's own).
pub const CLIENT_VERSION: &str = "6.06";

/// Run the client side of one perftest against the tool's server at `addr` (the guest's forwarded
/// port 18515): our NIC is the requester of the RDMA WRITEs, READs or SENDs.
///
/// # Errors
/// Protocol, connection or completion failures.
pub fn client(st: &Station, addr: std::net::SocketAddr, p: &PtParams) -> Result<PtResult, String> {
    use rnic_driver::{SendWr, WrOpcode};
    let deadline = Instant::now() + p.timeout;
    let e = |what: &'static str| move |err: rnic_driver::Error| format!("{what}: {err}");
    let ctx = &st.ctx;
    let pd = ctx.alloc_pd().map_err(e("alloc_pd"))?;
    let sq_depth = 64u32;
    let cq = st.create_cq(sq_depth * 2)?;
    let buf_len = 2 * u64::from(p.size.max(65536));
    let access = AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_WRITE | AccessFlags::REMOTE_READ;
    let mr = pd.reg_mr(buf_len, access).map_err(e("reg_mr"))?;
    let pattern: Vec<u8> = (0..p.size).map(|i| (i as u8) ^ 0x5a).collect();
    mr.write(0, &pattern).map_err(e("init buffer"))?;
    let qp = pd
        .create_qp(&QpInitAttr { send_cq: &cq, recv_cq: &cq, max_send_wr: sq_depth, max_recv_wr: 2 })
        .map_err(e("create_qp"))?;
    qp.to_init(access).map_err(e("RESET -> INIT"))?;
    let me = PtDest {
        lid: 0,
        out_reads: u16::from(OUT_READS),
        qpn: qp.qpn(),
        psn: 0x0c_1e47 ^ (p.size & 0xffff),
        rkey: mr.rkey(),
        vaddr: mr.addr(),
        gid: ipv4_gid(NIC_IP),
        srqn: 0,
    };
    let mut res = PtResult::default();
    let mut s = super::pingpong::connect_until(addr, deadline)?;
    let mut pump = || st.progress();
    // client writes first in every exchange
    let mut xchg = |s: &mut std::net::TcpStream, out: &[u8], res: &mut PtResult| -> Result<Vec<u8>, String> {
        s.write_all(out).map_err(|e| format!("{}: control write: {e}", p.verb.tool()))?;
        let mut b = vec![0u8; out.len()];
        super::oob::read_exact_pumping(s, &mut b, &mut pump, deadline)
            .map_err(|e| format!("{}: control read ({} bytes): {e}", p.verb.tool(), out.len()))?;
        res.messages += 1;
        res.trace.push(out.len());
        Ok(b)
    };
    let mut version = [0u8; 16];
    version[..CLIENT_VERSION.len()].copy_from_slice(CLIENT_VERSION.as_bytes());
    let rv = xchg(&mut s, &version, &mut res)?;
    log::info!("{}: server version {:?}", p.verb.tool(), String::from_utf8_lossy(&rv).trim_end_matches('\0'));
    // check_sys_data: hton_int(cycle buffer), hton_int(cache line size); each side takes the max.
    xchg(&mut s, &4096i32.to_be_bytes(), &mut res)?;
    xchg(&mut s, &64i32.to_be_bytes(), &mut res)?;
    xchg(&mut s, b"3\0", &mut res)?; // MTU 1024 (IBV_MTU_1024 = 3)
    let rem = PtDest::decode(&xchg(&mut s, &me.encode(), &mut res)?)?;
    connect(st, &qp, &rem, &me)?;
    xchg(&mut s, &me.encode(), &mut res)?; // after RTR
    // One more barrier before the test (send_bw: the server has posted its receives). The
    // server's trace is keys, 3 barriers, [reports], close for every tool.
    xchg(&mut s, &me.encode(), &mut res)?;
    // The test: iters operations, at most sq_depth outstanding.
    let t0 = Instant::now();
    let sge = mr.sge(0, p.size).map_err(e("sge"))?;
    let (mut posted, mut done) = (0u32, 0u32);
    while done < p.iters {
        while posted < p.iters && posted - done < sq_depth {
            let op = match p.verb {
                PtVerb::Write => WrOpcode::Write { remote_addr: rem.vaddr, rkey: rem.rkey },
                PtVerb::Read => WrOpcode::Read { remote_addr: rem.vaddr, rkey: rem.rkey },
                PtVerb::Send => WrOpcode::Send,
            };
            qp.post_send(&SendWr::new(u64::from(posted), op, vec![sge])).map_err(e("post_send"))?;
            posted += 1;
        }
        let wc = st.wait_wc(&cq, deadline, &format!("{}: {done} of {} completed", p.verb.tool(), p.iters))?;
        if wc.status != WcStatus::Success {
            return Err(format!("{}: completion {wc:?} after {done} completed", p.verb.tool()));
        }
        done += 1;
    }
    let secs = t0.elapsed().as_secs_f64().max(1e-9);
    res.posted = done;
    res.wall = t0.elapsed();
    // The barrier after the test, then (WRITE/READ, half duplex) the reports: size, iters (u64),
    // peak/avg bandwidth (Gb/s: the tools run with --report_gbits) and message rate (Mpps) as
    // big-endian doubles, each its own exchange (the server's trace: five 8-byte messages).
    xchg(&mut s, &me.encode(), &mut res)?;
    if p.verb != PtVerb::Send {
        let mbps = f64::from(p.size) * f64::from(p.iters) * 8.0 / secs / 1e9;
        let mpps = f64::from(p.iters) / secs / 1e6;
        xchg(&mut s, &u64::from(p.size).to_be_bytes(), &mut res)?;
        xchg(&mut s, &u64::from(p.iters).to_be_bytes(), &mut res)?;
        xchg(&mut s, &mbps.to_bits().to_be_bytes(), &mut res)?;
        xchg(&mut s, &mbps.to_bits().to_be_bytes(), &mut res)?;
        xchg(&mut s, &mpps.to_bits().to_be_bytes(), &mut res)?;
    }
    // ctx_close_connection: a last hand shake, then "done".
    xchg(&mut s, &me.encode(), &mut res)?;
    s.write_all(b"done\0").map_err(|e| format!("{}: control write done: {e}", p.verb.tool()))?;
    if p.verb == PtVerb::Read {
        let got = mr.read_vec(0, p.size as usize).map_err(e("read buffer"))?;
        log::info!("ib_read_bw: first bytes read from the guest: {:02x?}", &got[..got.len().min(8)]);
    }
    for _ in 0..20 {
        st.progress()?;
    }
    qp.destroy().map_err(e("destroy_qp"))?;
    Ok(res)
}

fn connect(st: &Station, qp: &rnic_driver::QueuePair, rem: &PtDest, me: &PtDest) -> Result<(), String> {
    let e = |what: &'static str| move |err: rnic_driver::Error| format!("{what}: {err}");
    let ip = gid_ipv4(&rem.gid).ok_or_else(|| format!("the client's GID {:02x?} is not IPv4-mapped", rem.gid))?;
    let mac = st.resolve(ip, Duration::from_secs(20))?;
    qp.to_rtr(&RtrAttr {
        dest_qpn: rem.qpn,
        rq_psn: rem.psn,
        path_mtu: Mtu::Mtu1024,
        dest_mac: mac,
        dest_ip: ip,
        max_dest_rd_atomic: OUT_READS,
        min_rnr_timer: 12,
    })
    .map_err(e("INIT -> RTR"))?;
    let rd = u8::try_from(rem.out_reads.clamp(1, 16)).unwrap_or(1);
    qp.to_rts(&RtsAttr { sq_psn: me.psn, timeout: 14, retry_cnt: 7, rnr_retry: 7, max_rd_atomic: rd }).map_err(e("RTR -> RTS"))
}

/// Write on the non-blocking control socket, running the NIC while the socket is full.
fn write_all_nb(s: &mut std::net::TcpStream, mut data: &[u8], st: &Station, deadline: Instant) -> Result<(), String> {
    while !data.is_empty() {
        match s.write(data) {
            Ok(n) => data = &data[n..],
            Err(err) if err.kind() == ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err("control connection: write timed out".into());
                }
                st.progress()?;
            }
            Err(err) => return Err(format!("control connection: write: {err}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_message_roundtrip() {
        let d = PtDest {
            lid: 0,
            out_reads: 16,
            qpn: 0x12,
            psn: 0xabcdef,
            rkey: 0x1234_5678,
            vaddr: 0x7f00_1234_5000,
            gid: ipv4_gid(std::net::Ipv4Addr::new(192, 0, 2, 1)),
            srqn: 0,
        };
        let m = d.encode();
        assert_eq!(m.len(), 108);
        assert_eq!(m[106], b':');
        assert_eq!(m[107], 0);
        assert!(m.starts_with(b"0000:0010:000012:abcdef:12345678:00007f0012345000:00:00:"));
        assert_eq!(PtDest::decode(&m).unwrap(), d);
    }
}
