// SPDX-License-Identifier: Apache-2.0
//
// Error-path and lossy-link scenarios run in LOCKSTEP (RTL vs model) through the driver, written
// while bringing up the engine. It is a standalone binary crate outside the workspace:
//   mkdir -p /tmp/core_err/src && cp rtl/tb_core/lockstep_scenarios.rs /tmp/core_err/src/main.rs
//   (Cargo.toml: deps rnic-testbench and rnic-driver by path, plus an empty [workspace])
//   cd /tmp/core_err && CARGO_TARGET_DIR=/tmp/core_tgt cargo run --offline
// Candidate for testbench/tests/ (owned by the testbench): A RNR retry exhausted + flush,
// B bad rkey (REM_ACCESS, responder ERR, FLUSH_RQ), C bad lkey / receive too small, D 4 QPs with
// 48 multi-packet WRITE/READs (PSN window, read limit, ring), E lossy link (drops and duplicates:
// PSN NAK, go-back-N, RX_DUP), F every verb on scrambled MR pages at MTU 4096 and 512.

use rnic_driver::{Context, Mtu, QpInitAttr, RecvWr, RtrAttr, RtsAttr, SendWr, WrOpcode};
use rnic_testbench::fabric::Fabric;
use rnic_testbench::harness::{nic_ip, nic_mac};
use rnic_testbench::link::FaultHook;
use rnic_testbench::fabric::Backend;
use rnic_testbench::harness::{Pair, PairOptions};

fn opts() -> PairOptions {
    let mut o = PairOptions::on(Backend::Lockstep);
    o.mtu = Mtu::Mtu256;
    o
}

fn main() -> Result<(), String> {
    let d = |e: rnic_driver::Error| e.to_string();
    // A) RNR exhausted, then a flushed WQE
    {
        let mut o = opts();
        o.rnr_retry = 1;
        let p = Pair::new(&o)?;
        let (qa, _qb) = (&p.a.qps[0], &p.b.qps[0]);
        qa.post_send(&SendWr::new(1, WrOpcode::Send, vec![p.a.mr.sge(0, 600).map_err(d)?])).map_err(d)?;
        qa.post_send(&SendWr::new(2, WrOpcode::Send, vec![p.a.mr.sge(0, 10).map_err(d)?])).map_err(d)?;
        let w = Pair::wait(&p.a, 2)?;
        println!("A: {:?}", w.iter().map(|c| (c.wr_id, c.status)).collect::<Vec<_>>());
        p.settle()?;
    }
    // B) WRITE with a bad rkey: REM_ACCESS at A, B's QP in ERR flushes a receive
    {
        let p = Pair::new(&opts())?;
        let (qa, qb) = (&p.a.qps[0], &p.b.qps[0]);
        let op = WrOpcode::Write { remote_addr: p.b.mr.addr(), rkey: p.b.mr.rkey() ^ 1 };
        qa.post_send(&SendWr::new(3, op, vec![p.a.mr.sge(0, 100).map_err(d)?])).map_err(d)?;
        let w = Pair::wait(&p.a, 1)?;
        println!("B: A {:?}", w.iter().map(|c| (c.wr_id, c.status)).collect::<Vec<_>>());
        qb.post_recv(&RecvWr { wr_id: 77, sgl: vec![p.b.mr.sge(0, 100).map_err(d)?] }).map_err(d)?;
        let w = Pair::wait(&p.b, 1)?;
        println!("B: B {:?}", w.iter().map(|c| (c.wr_id, c.status, c.opcode)).collect::<Vec<_>>());
        p.settle()?;
    }
    // C) bad lkey (local protection error); receive too small (B: LOC_LEN via NAK INV_REQ)
    {
        let p = Pair::new(&opts())?;
        let (qa, qb) = (&p.a.qps[0], &p.b.qps[0]);
        let mut s = p.a.mr.sge(0, 100).map_err(d)?;
        s.lkey ^= 1;
        qa.post_send(&SendWr::new(4, WrOpcode::Send, vec![s])).map_err(d)?;
        let w = Pair::wait(&p.a, 1)?;
        println!("C1: {:?}", w.iter().map(|c| (c.wr_id, c.status)).collect::<Vec<_>>());
        p.settle()?;
        let p = Pair::new(&opts())?;
        let (qa, qb2) = (&p.a.qps[0], &p.b.qps[0]);
        let _ = qb;
        qb2.post_recv(&RecvWr { wr_id: 88, sgl: vec![p.b.mr.sge(0, 100).map_err(d)?] }).map_err(d)?;
        qa.post_send(&SendWr::new(5, WrOpcode::Send, vec![p.a.mr.sge(0, 200).map_err(d)?])).map_err(d)?;
        let w = Pair::wait(&p.a, 1)?;
        let wb = Pair::wait(&p.b, 1)?;
        println!("C2: A {:?} B {:?}", w.iter().map(|c| (c.wr_id, c.status)).collect::<Vec<_>>(),
                 wb.iter().map(|c| (c.wr_id, c.status)).collect::<Vec<_>>());
        p.settle()?;
    }
    // D) 4 QPs, many multi-packet WRITEs and READs (PSN window and read-limit stalls, ring)
    {
        let mut o = opts();
        o.qps = 4;
        let p = Pair::new(&o)?;
        let n = 12u64;
        for i in 0..n {
            for (k, qa) in p.a.qps.iter().enumerate() {
                let off = (k as u64 * n + i) * 3000 % (p.a.mr.len() / 2 - 3000);
                let op = if i % 3 == 2 {
                    WrOpcode::Read { remote_addr: p.b.mr.addr() + off, rkey: p.b.mr.rkey() }
                } else {
                    WrOpcode::Write { remote_addr: p.b.mr.addr() + off, rkey: p.b.mr.rkey() }
                };
                qa.post_send(&SendWr::new(1000 + i, op, vec![p.a.mr.sge(off, 3000).map_err(d)?])).map_err(d)?;
            }
        }
        let w = Pair::wait(&p.a, (n * 4) as usize)?;
        let bad: Vec<_> = w.iter().filter(|c| format!("{:?}", c.status) != "Success").collect();
        println!("D: {} completions, {} not successful", w.len(), bad.len());
        p.settle()?;
    }
    // E) lossy link: drop and duplicate frames from NIC 0 (go-back-N, PSN NAK, duplicates)
    {
        struct Hook { n: u64 }
        impl FaultHook for Hook {
            fn on_frame(&mut self, from: usize, _to: usize, f: Vec<u8>) -> Vec<(u64, Vec<u8>)> {
                if from != 0 { return vec![(0, f)]; }
                self.n += 1;
                match self.n {
                    3 | 40 => vec![],
                    10 | 25 => vec![(0, f.clone()), (7, f)],
                    _ => vec![(0, f)],
                }
            }
        }
        let o = opts();
        let fabric = Fabric::with_faults(o.fabric.clone(), Box::new(Hook { n: 0 })).map_err(|e| e.to_string())?;
        let mut eps = Vec::new();
        for i in 0..2 {
            let dev = Fabric::device(&fabric, i, 0);
            let ctx = Context::open(dev).map_err(d)?;
            ctx.set_port(nic_mac(i), nic_ip(i)).map_err(d)?;
            let pd = ctx.alloc_pd().map_err(d)?;
            let cq = ctx.create_cq(64).map_err(d)?;
            let mr = pd.reg_mr(1 << 16, o.access).map_err(d)?;
            let qp = pd.create_qp(&QpInitAttr { send_cq: &cq, recv_cq: &cq, max_send_wr: 64, max_recv_wr: 64 }).map_err(d)?;
            eps.push((ctx, pd, cq, mr, qp));
        }
        let (qa, qb) = (eps[0].4.qpn(), eps[1].4.qpn());
        for (i, (dest, rq, sq)) in [(qb, 0xFFFF00u32, 0x100000u32), (qa, 0x100000, 0xFFFF00)].into_iter().enumerate() {
            let qp = &eps[i].4;
            qp.to_init(o.access).map_err(d)?;
            qp.to_rtr(&RtrAttr { dest_qpn: dest, rq_psn: rq, path_mtu: o.mtu, dest_mac: nic_mac(1 - i), dest_ip: nic_ip(1 - i), max_dest_rd_atomic: 16, min_rnr_timer: 12 }).map_err(d)?;
            qp.to_rts(&RtsAttr { sq_psn: sq, timeout: 14, retry_cnt: 7, rnr_retry: 7, max_rd_atomic: 16 }).map_err(d)?;
        }
        let (a, b) = (&eps[0], &eps[1]);
        for k in 0..3u64 {
            b.4.post_recv(&RecvWr { wr_id: 500 + k, sgl: vec![b.3.sge(20000 + 3000 * k, 2500).map_err(d)?] }).map_err(d)?;
        }
        let rk = b.3.rkey();
        let wrs = vec![
            SendWr::new(1, WrOpcode::Send, vec![a.3.sge(0, 2000).map_err(d)?]),
            SendWr::new(2, WrOpcode::Write { remote_addr: b.3.addr() + 100, rkey: rk }, vec![a.3.sge(10, 2000).map_err(d)?]),
            SendWr::new(3, WrOpcode::Read { remote_addr: b.3.addr() + 5000, rkey: rk }, vec![a.3.sge(30000, 2000).map_err(d)?]),
            SendWr::new(4, WrOpcode::Send, vec![a.3.sge(40000, 1500).map_err(d)?]),
            SendWr::new(5, WrOpcode::Write { remote_addr: b.3.addr() + 9000, rkey: rk }, vec![a.3.sge(10, 2000).map_err(d)?]),
            SendWr::new(6, WrOpcode::Send, vec![a.3.sge(50, 2300).map_err(d)?]),
        ];
        for w in &wrs { a.4.post_send(w).map_err(d)?; }
        let wa = a.2.wait(6, 400_000).map_err(d)?;
        let wb = b.2.wait(3, 400_000).map_err(d)?;
        println!("E: A {:?}", wa.iter().map(|c| (c.wr_id, c.status)).collect::<Vec<_>>());
        println!("E: B {:?}", wb.iter().map(|c| (c.wr_id, c.status, c.byte_len)).collect::<Vec<_>>());
        let mut f = fabric.borrow_mut();
        f.check_drained().map_err(|e| e.to_string())?;
        f.check_memories().map_err(|e| e.to_string())?;
        for (i, name) in [(6u32, "RX_DUP"), (7, "RX_NAK_SENT"), (8, "RX_GHOST_ACK"), (12, "RX_DROP_RESP")] {
            println!("E: counters {name}: NIC0 {} NIC1 {}", f.counter(0, i).map_err(|e| e.to_string())?, f.counter(1, i).map_err(|e| e.to_string())?);
        }
    }
    // F) every verb on scrambled MR pages (pieces split at page ends), MTU 4096 and 512
    for (mtu, len) in [(Mtu::Mtu4096, 9000usize), (Mtu::Mtu512, 3333)] {
        let mut o = opts();
        o.mtu = mtu;
        o.scrambled = true;
        o.mr_len = 1 << 16;
        let p = Pair::new(&o)?;
        rnic_testbench::scenarios::every_verb(&p, len, &mut |l| println!("F: {l}"))?;
        p.settle()?;
    }
    // G) B -> A: PSNs wrap past 0xFFFFFF, a 157-packet SEND (A bit every 64 PSNs), unsignaled
    // WRITEs completed by a later signaled one, solicited SEND with immediate
    {
        let mut o = opts();
        o.mr_len = 1 << 17;
        let p = Pair::new(&o)?;
        let (qa, qb) = (&p.a.qps[0], &p.b.qps[0]);
        qa.post_recv(&RecvWr { wr_id: 900, sgl: vec![p.a.mr.sge(0, 40000).map_err(d)?] }).map_err(d)?;
        qa.post_recv(&RecvWr { wr_id: 901, sgl: vec![p.a.mr.sge(50000, 100).map_err(d)?] }).map_err(d)?;
        qb.post_send(&SendWr::new(10, WrOpcode::Send, vec![p.b.mr.sge(0, 40000).map_err(d)?])).map_err(d)?;
        for k in 0..3u64 {
            let mut w = SendWr::new(20 + k, WrOpcode::Write { remote_addr: p.a.mr.addr() + 60000 + 1000 * k, rkey: p.a.mr.rkey() },
                                    vec![p.b.mr.sge(100 * k, 700).map_err(d)?]);
            w.signaled = k == 2;
            qb.post_send(&w).map_err(d)?;
        }
        let mut w = SendWr::new(30, WrOpcode::SendWithImm(0x5a5a), vec![p.b.mr.sge(0, 50).map_err(d)?]);
        w.solicited = true;
        qb.post_send(&w).map_err(d)?;
        let wb = Pair::wait(&p.b, 3)?;
        let wa = Pair::wait(&p.a, 2)?;
        println!("G: B {:?}", wb.iter().map(|c| (c.wr_id, c.status, c.byte_len)).collect::<Vec<_>>());
        println!("G: A {:?}", wa.iter().map(|c| (c.wr_id, c.status, c.byte_len, c.imm)).collect::<Vec<_>>());
        p.settle()?;
    }
    println!("all error scenarios ran in lockstep without mismatches");
    Ok(())
}
