// SPDX-License-Identifier: Apache-2.0
//! RC ping-pong over two simulated RNICs, written the way a user writes a verbs program
//! (like `ibv_rc_pingpong`): build a fabric, open one driver context per NIC, create PD, MR, CQ
//! and QP, connect the QPs by hand (RESET → INIT → RTR → RTS), then bounce a message back and
//! forth with SEND/RECV and time every round trip.
//!
//! Run it (default backend: RTL and reference model in lockstep):
//!
//! ```text
//! cargo run --release -p rnic-testbench --example pingpong -- --backend lockstep
//! cargo run --release -p rnic-testbench --example pingpong -- --backend rtl --iters 100 --size 4096
//! RUST_LOG=info cargo run --release -p rnic-testbench --example pingpong -- --backend model
//! ```
//!
//! Round-trip times are *modelled* time: clock cycles of the simulated NICs at 250 MHz
//! (`Fabric::cycle()`), so they include the DMA latency and the link delay of the fabric, but
//! also the granularity of `Device::progress()` (one call runs `progress_cycles` = 10 cycles). The model
//! backend has no clock, so it reports 0 cycles. Wall time is how long the simulation took.

use std::net::Ipv4Addr;
use std::rc::Rc;
use std::time::Instant;

use clap::Parser;
use rnic_driver::{
    AccessFlags, Context, Cq, Mr, Mtu, Pd, QpInitAttr, QueuePair, RecvWr, RtrAttr, RtsAttr, SendWr,
    WcOpcode, WcStatus, WrOpcode,
};
use rnic_testbench::fabric::{Backend, Fabric, FabricConfig};
use rnic_testbench::pcap::CLOCK_PERIOD_PS;

/// SEND/RECV ping-pong between two simulated RNICs.
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// model, rtl or lockstep
    #[arg(long, default_value = "lockstep")]
    backend: Backend,
    /// Number of round trips
    #[arg(long, default_value_t = 10)]
    iters: u32,
    /// Message size in bytes
    #[arg(long, default_value_t = 64)]
    size: u32,
}

/// `progress()` calls a wait may take before we call it a hang (one call = 10 cycles on RTL).
const BUDGET: u32 = 1_000_000;

/// Everything one side of the connection owns. Field order matters only for drop order: QPs
/// must go before the CQ and PD they use (the driver keeps those alive anyway).
struct Side {
    qp: QueuePair,
    mr: Mr,
    cq: Cq,
    _pd: Pd,
    _ctx: Context,
    mac: [u8; 6],
    ip: Ipv4Addr,
}

/// Open NIC `nic`'s PF, give its port an address, and create the verbs objects.
fn open_side(dev: Rc<dyn rnic_driver::Device>, nic: u8, size: u32) -> Result<Side, String> {
    let e = |what: &'static str| move |err: rnic_driver::Error| format!("NIC {nic}: {what}: {err}");
    let ctx = Context::open(dev).map_err(e("open"))?;
    // Each port needs a MAC and an IPv4 address: they go into the Ethernet/IP headers of
    // every RoCEv2 frame, and the peer's QP is told them in RTR.
    let (mac, ip) = ([0x02, 0, 0, 0, 0, 0x10 + nic], Ipv4Addr::new(10, 0, 0, 1 + nic));
    ctx.set_port(mac, ip).map_err(e("set_port"))?;
    let pd = ctx.alloc_pd().map_err(e("alloc_pd"))?;
    let cq = ctx.create_cq(16).map_err(e("create_cq"))?;
    // One buffer holds the outgoing message in its first half and receives in the second.
    let mr = pd.reg_mr(u64::from(size.max(1)) * 2, AccessFlags::LOCAL_WRITE).map_err(e("reg_mr"))?;
    let qp = pd
        .create_qp(&QpInitAttr { send_cq: &cq, recv_cq: &cq, max_send_wr: 4, max_recv_wr: 4 })
        .map_err(e("create_qp"))?;
    Ok(Side { qp, mr, cq, _pd: pd, _ctx: ctx, mac, ip })
}

/// Walk `me`'s QP through RESET → INIT → RTR → RTS towards `peer`. In a real program the peer's
/// QPN, PSN, MAC and IP would come over a TCP socket or an RDMA-CM exchange; here both sides
/// live in one process, so we just read them.
fn connect(me: &Side, peer: &Side, my_psn: u32, peer_psn: u32) -> Result<(), String> {
    let e = |what: &'static str| {
        let qpn = me.qp.qpn();
        move |err: rnic_driver::Error| format!("QP {qpn:#x}: {what}: {err}")
    };
    // INIT: the QP exists on the port; it may post receives but nothing moves yet.
    me.qp.to_init(AccessFlags::LOCAL_WRITE).map_err(e("RESET -> INIT"))?;
    // RTR: the responder side is set up — who the peer is, and the PSN we expect from it.
    me.qp
        .to_rtr(&RtrAttr {
            dest_qpn: peer.qp.qpn(),
            rq_psn: peer_psn,
            path_mtu: Mtu::Mtu1024,
            dest_mac: peer.mac,
            dest_ip: peer.ip,
            max_dest_rd_atomic: 1,
            min_rnr_timer: 12,
        })
        .map_err(e("INIT -> RTR"))?;
    // RTS: the requester side — our first PSN (the peer's rq_psn), retry and timeout policy.
    me.qp
        .to_rts(&RtsAttr { sq_psn: my_psn, timeout: 14, retry_cnt: 7, rnr_retry: 7, max_rd_atomic: 1 })
        .map_err(e("RTR -> RTS"))
}

/// One message from `from` to `to`: post the receive first (a SEND with no receive posted
/// would get an RNR NAK and be retried), then the send, and wait for both completions.
fn one_way(from: &Side, to: &Side, size: u32, wr_id: u64) -> Result<(), String> {
    let d = |what: &'static str| move |err: rnic_driver::Error| format!("{what}: {err}");
    let recv_sge = to.mr.sge(u64::from(size), size).map_err(d("recv sge"))?;
    to.qp.post_recv(&RecvWr { wr_id, sgl: vec![recv_sge] }).map_err(d("post_recv"))?;
    let send_sge = from.mr.sge(0, size).map_err(d("send sge"))?;
    from.qp.post_send(&SendWr::new(wr_id, WrOpcode::Send, vec![send_sge])).map_err(d("post_send"))?;
    for (side, want) in [(from, WcOpcode::Send), (to, WcOpcode::Recv)] {
        let wc = side.cq.wait(1, BUDGET).map_err(d("waiting for a completion"))?;
        let wc = &wc[0];
        if wc.status != WcStatus::Success || wc.opcode != want || wc.wr_id != wr_id {
            return Err(format!("wr_id {wr_id}: expected {want:?} Success, got {wc:?}"));
        }
        if want == WcOpcode::Recv && wc.byte_len != size {
            return Err(format!("wr_id {wr_id}: received {} bytes, sent {size}", wc.byte_len));
        }
    }
    Ok(())
}

fn run(args: &Args) -> Result<(), String> {
    // One `progress()` call runs `progress_cycles` cycles; 10 (instead of 1000) makes the
    // measured round trip accurate to 10 cycles = 40 ns at a small cost in wall time.
    let cfg = FabricConfig { backend: args.backend, nics: 2, progress_cycles: 10, ..FabricConfig::default() };
    let fabric = Fabric::new(cfg).map_err(|e| e.to_string())?;
    // Two NICs linked back to back; function 0 (the PF) of each is a driver `Device`.
    let a = open_side(Fabric::device(&fabric, 0, 0), 0, args.size)?;
    let b = open_side(Fabric::device(&fabric, 1, 0), 1, args.size)?;
    let (psn_a, psn_b) = (0x1000, 0xFF_FFF0); // B's PSN wraps past 2^24 during the run
    connect(&a, &b, psn_a, psn_b)?;
    connect(&b, &a, psn_b, psn_a)?;
    println!("backend {:?}: QP {:#x} (NIC 0) <-> QP {:#x} (NIC 1), {} bytes x {} round trips",
        args.backend, a.qp.qpn(), b.qp.qpn(), args.size, args.iters);

    let us = |cycles: u64| cycles as f64 * CLOCK_PERIOD_PS as f64 / 1e6;
    let (mut total_cycles, t_all) = (0u64, Instant::now());
    for i in 0..args.iters {
        // A fresh pattern each time so a stale buffer cannot pass the check.
        let ping: Vec<u8> = (0..args.size).map(|k| (k as u8) ^ (i as u8).wrapping_mul(31)).collect();
        a.mr.write(0, &ping).map_err(|e| format!("write ping: {e}"))?;
        let (c0, t0) = (fabric.borrow().cycle(), Instant::now());
        one_way(&a, &b, args.size, 2 * u64::from(i))?;
        // B echoes what it got: copy the received half into its send half.
        let got = b.mr.read_vec(u64::from(args.size), args.size as usize).map_err(|e| e.to_string())?;
        b.mr.write(0, &got).map_err(|e| e.to_string())?;
        one_way(&b, &a, args.size, 2 * u64::from(i) + 1)?;
        let cycles = fabric.borrow().cycle() - c0;
        let wall = t0.elapsed();
        let pong = a.mr.read_vec(u64::from(args.size), args.size as usize).map_err(|e| e.to_string())?;
        if pong != ping {
            return Err(format!("iteration {i}: the echoed message differs from the one sent"));
        }
        total_cycles += cycles;
        println!("  iter {i:4}: RTT {cycles:7} cycles = {:8.3} us modelled, {:8.3} ms wall",
            us(cycles), wall.as_secs_f64() * 1e3);
    }
    let loop_wall = t_all.elapsed();
    // Lockstep: make sure the model has no prediction left and both host memories agree.
    let mut f = fabric.borrow_mut();
    f.check_drained().and_then(|_| f.check_memories()).map_err(|e| e.to_string())?;
    let n = u64::from(args.iters.max(1));
    println!("average RTT: {} cycles = {:.3} us modelled at 250 MHz, {:.3} ms wall ({} frames on the link)",
        total_cycles / n, us(total_cycles / n), loop_wall.as_secs_f64() * 1e3 / n as f64, f.frames_sent());
    if args.backend == Backend::Model {
        println!("(the model backend has no clock: modelled times are 0)");
    }
    Ok(())
}

fn main() {
    env_logger::init();
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("pingpong FAILED: {e}");
        std::process::exit(1);
    }
}
