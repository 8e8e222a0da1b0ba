// SPDX-License-Identifier: Apache-2.0
//! A one-sided key-value GET over two simulated RNICs, written the way a user writes a verbs
//! program. The server (NIC 1) keeps a small hash table in a registered memory region: fixed-size
//! slots, a key hashed to its slot. The client (NIC 0) learns the table's address and rkey out of
//! band, then fetches each key's slot with one RDMA READ and checks the value — the server's CPU
//! never runs (this is how Pilaf/FaRM-style stores read).
//!
//! Run it (default backend: RTL and reference model in lockstep):
//!
//! ```text
//! cargo run --release -p rnic-testbench --example kv_get -- --backend lockstep
//! cargo run --release -p rnic-testbench --example kv_get -- --backend rtl --keys 16
//! RUST_LOG=debug cargo run --release -p rnic-testbench --example kv_get -- --backend model
//! ```
//!
//! Latency per GET is modelled time at 250 MHz (`Fabric::cycle()`, 10-cycle resolution); the
//! model backend has no clock and reports 0.

use std::net::Ipv4Addr;
use std::rc::Rc;

use clap::Parser;
use rnic_driver::{
    AccessFlags, Context, Cq, Mr, Mtu, Pd, QpInitAttr, QueuePair, RtrAttr, RtsAttr, SendWr, WcOpcode,
    WcStatus, WrOpcode,
};
use rnic_testbench::fabric::{Backend, Fabric, FabricConfig};
use rnic_testbench::pcap::CLOCK_PERIOD_PS;

/// RDMA READ based key-value GETs between two simulated RNICs.
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// model, rtl or lockstep
    #[arg(long, default_value = "lockstep")]
    backend: Backend,
    /// Number of keys the server stores (at most 32); the client also GETs one absent key
    #[arg(long, default_value_t = 8)]
    keys: u32,
}

/// Table layout, shared by client and server: `SLOTS` slots of `SLOT` bytes, each a 16-byte key
/// (zero-padded; all zero = empty) followed by a 48-byte value.
const SLOTS: u64 = 64;
const SLOT: u64 = 64;
const KEY_LEN: usize = 16;
const BUDGET: u32 = 1_000_000;

/// FNV-1a: both sides must agree on where a key lives, and that is all the hash must do.
fn slot_of(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)) % SLOTS
}

fn value_of(key: &str) -> Vec<u8> {
    let mut v = format!("value of {key}").into_bytes();
    v.resize((SLOT as usize) - KEY_LEN, 0);
    v
}

/// What the server tells the client out of band (a real program sends it over TCP).
struct TableInfo {
    addr: u64,
    rkey: u32,
    qpn: u32,
    psn: u32,
}

struct Side {
    qp: QueuePair,
    mr: Mr,
    cq: Cq,
    _pd: Pd,
    _ctx: Context,
    mac: [u8; 6],
    ip: Ipv4Addr,
}

/// Open NIC `nic`, register `len` bytes with `access`, and create a QP on one CQ.
fn open_side(dev: Rc<dyn rnic_driver::Device>, nic: u8, len: u64, access: AccessFlags) -> Result<Side, String> {
    let e = |what: &'static str| move |err: rnic_driver::Error| format!("NIC {nic}: {what}: {err}");
    let ctx = Context::open(dev).map_err(e("open"))?;
    let (mac, ip) = ([0x02, 0, 0, 0, 0, 0x10 + nic], Ipv4Addr::new(10, 0, 0, 1 + nic));
    ctx.set_port(mac, ip).map_err(e("set_port"))?;
    let pd = ctx.alloc_pd().map_err(e("alloc_pd"))?;
    let cq = ctx.create_cq(16).map_err(e("create_cq"))?;
    let mr = pd.reg_mr(len, access).map_err(e("reg_mr"))?;
    let qp = pd
        .create_qp(&QpInitAttr { send_cq: &cq, recv_cq: &cq, max_send_wr: 8, max_recv_wr: 8 })
        .map_err(e("create_qp"))?;
    Ok(Side { qp, mr, cq, _pd: pd, _ctx: ctx, mac, ip })
}

/// RESET → INIT → RTR → RTS towards `peer`. `access` is what the *peer* may do to us remotely:
/// the server must allow REMOTE_READ or every READ is NAKed with a remote access error.
fn connect(me: &Side, peer: &Side, access: AccessFlags, my_psn: u32, peer_psn: u32) -> Result<(), String> {
    let qpn = me.qp.qpn();
    let e = move |what: &'static str| move |err: rnic_driver::Error| format!("QP {qpn:#x}: {what}: {err}");
    me.qp.to_init(access).map_err(e("RESET -> INIT"))?;
    // max_dest_rd_atomic: how many READs the peer may have outstanding at us (responder side).
    let rtr = RtrAttr {
        dest_qpn: peer.qp.qpn(), rq_psn: peer_psn, path_mtu: Mtu::Mtu1024,
        dest_mac: peer.mac, dest_ip: peer.ip, max_dest_rd_atomic: 4, min_rnr_timer: 12,
    };
    me.qp.to_rtr(&rtr).map_err(e("INIT -> RTR"))?;
    // max_rd_atomic: how many READs we may have outstanding (requester side).
    let rts = RtsAttr { sq_psn: my_psn, timeout: 14, retry_cnt: 7, rnr_retry: 7, max_rd_atomic: 4 };
    me.qp.to_rts(&rts).map_err(e("RTR -> RTS"))
}

fn run(args: &Args) -> Result<(), String> {
    if args.keys == 0 || args.keys > 32 {
        return Err(format!("--keys {}: use 1 to 32 (the table has {SLOTS} slots)", args.keys));
    }
    let cfg = FabricConfig { backend: args.backend, progress_cycles: 10, ..FabricConfig::default() };
    let fabric = Fabric::new(cfg).map_err(|e| e.to_string())?;
    let client = open_side(Fabric::device(&fabric, 0, 0), 0, SLOT, AccessFlags::LOCAL_WRITE)?;
    let server = open_side(Fabric::device(&fabric, 1, 0), 1, SLOTS * SLOT, AccessFlags::REMOTE_READ)?;
    connect(&client, &server, AccessFlags::empty(), 0x100, 0x200)?;
    connect(&server, &client, AccessFlags::REMOTE_READ, 0x200, 0x100)?;

    // Server: fill the table. No collision handling, to keep one READ per GET: a key whose slot
    // is taken gets another name (the client never sees the names that were skipped).
    let mut keys = Vec::new();
    let mut used = [false; SLOTS as usize];
    for n in 0.. {
        if keys.len() == args.keys as usize {
            break;
        }
        let key = format!("key-{n}");
        let s = slot_of(key.as_bytes());
        if used[s as usize] {
            continue;
        }
        used[s as usize] = true;
        let mut slot = key.clone().into_bytes();
        slot.resize(KEY_LEN, 0);
        slot.extend(value_of(&key));
        server.mr.write(s * SLOT, &slot).map_err(|e| format!("server: fill slot {s}: {e}"))?;
        keys.push(key);
    }
    // An absent key whose home slot is empty, so its GET must come back as a miss.
    let absent = (0..).map(|n| format!("absent-{n}")).find(|k| !used[slot_of(k.as_bytes()) as usize]).expect("a free slot");
    keys.push(absent.clone());

    // Out of band: the server publishes where the table is and how to reach it.
    let info = TableInfo { addr: server.mr.addr(), rkey: server.mr.rkey(), qpn: server.qp.qpn(), psn: 0x200 };
    println!("backend {:?}: server table at {:#x} rkey {:#x} on QP {:#x} (PSN {:#x}), {} keys in {SLOTS} slots of {SLOT} bytes",
        args.backend, info.addr, info.rkey, info.qpn, info.psn, args.keys);

    // Client: one RDMA READ per GET, into its own one-slot buffer.
    let (mut hits, mut total) = (0u32, 0u64);
    for (i, key) in keys.iter().enumerate() {
        let s = slot_of(key.as_bytes());
        client.mr.write(0, &[0xEE; SLOT as usize]).map_err(|e| e.to_string())?; // no stale data
        let c0 = fabric.borrow().cycle();
        let op = WrOpcode::Read { remote_addr: info.addr + s * SLOT, rkey: info.rkey };
        let sge = client.mr.sge(0, SLOT as u32).map_err(|e| e.to_string())?;
        client.qp.post_send(&SendWr::new(i as u64, op, vec![sge])).map_err(|e| format!("GET {key}: post_send: {e}"))?;
        let wc = client.cq.wait(1, BUDGET).map_err(|e| format!("GET {key}: {e}"))?;
        let cycles = fabric.borrow().cycle() - c0;
        if wc[0].status != WcStatus::Success || wc[0].opcode != WcOpcode::RdmaRead {
            return Err(format!("GET {key}: READ completed with {:?}", wc[0]));
        }
        let got = client.mr.read_vec(0, SLOT as usize).map_err(|e| e.to_string())?;
        let hit = got[..KEY_LEN].iter().take_while(|b| **b != 0).eq(key.as_bytes().iter());
        let want_hit = *key != absent;
        if hit != want_hit || (hit && got[KEY_LEN..] != value_of(key)[..]) {
            return Err(format!("GET {key} (slot {s}): wrong answer, slot holds {:?}", String::from_utf8_lossy(&got)));
        }
        hits += u32::from(hit);
        total += cycles;
        let value = if hit { String::from_utf8_lossy(&got[KEY_LEN..]).trim_end_matches('\0').to_string() } else { "(miss)".into() };
        println!("  GET {key:10} slot {s:2}: {value:18} {cycles:5} cycles = {:.3} us", cycles as f64 * CLOCK_PERIOD_PS as f64 / 1e6);
    }
    let mut f = fabric.borrow_mut();
    f.check_drained().and_then(|_| f.check_memories()).map_err(|e| e.to_string())?;
    let avg = total / keys.len() as u64;
    println!("{hits} hits, {} miss out of {} GETs; average {avg} cycles = {:.3} us modelled at 250 MHz",
        keys.len() as u32 - hits, keys.len(), avg as f64 * CLOCK_PERIOD_PS as f64 / 1e6);
    Ok(())
}

fn main() {
    env_logger::init();
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("kv_get FAILED: {e}");
        std::process::exit(1);
    }
}
