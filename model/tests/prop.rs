// SPDX-License-Identifier: Apache-2.0
//! Random workloads between two model NICs, checked against a shadow computation of what
//! the memory must contain afterwards (RC executes A's requests in order at B).

mod common;

use common::*;
use proptest::prelude::*;
use rnic_regs::{wc_opcode, wc_status, wr_opcode};

#[derive(Clone, Debug)]
enum Op {
    Send { len: usize, split: usize },
    Write { len: usize, off: usize, imm: bool },
    Read { len: usize, off: usize },
    FetchAdd { slot: usize, add: u64 },
    CmpSwap { slot: usize, hit: bool, swap: u64 },
}

const RBUF: usize = 32 * 1024;
const SLOTS: usize = 8;

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..9000, 0usize..100).prop_map(|(len, split)| Op::Send { len, split }),
        (0usize..9000, 0usize..RBUF - 9000, any::<bool>()).prop_map(|(len, off, imm)| Op::Write {
            len,
            off,
            imm
        }),
        (0usize..9000, 0usize..RBUF - 9000).prop_map(|(len, off)| Op::Read { len, off }),
        (0usize..SLOTS, any::<u64>()).prop_map(|(slot, add)| Op::FetchAdd { slot, add }),
        (0usize..SLOTS, any::<bool>(), any::<u64>()).prop_map(|(slot, hit, swap)| Op::CmpSwap {
            slot,
            hit,
            swap
        }),
    ]
}

fn run_workload(mtu: u8, ops: &[Op], dup_seed: u64) -> Result<(), TestCaseError> {
    // Start A's PSNs just before the 24-bit wrap so every workload crosses it.
    let psn_a = 0xFF_FFFF - (dup_seed % 64) as u32;
    let mut p = Pair::with(mtu, FULL_ACCESS, psn_a, 0x12_3456, 3, 3);
    let src = p.a.reg_mr(1, 3, FULL_ACCESS, 16 * 1024, 0x77);
    let lbuf = p.a.reg_mr(2, 4, FULL_ACCESS, 24 * 9000 + 8 * 24, 0x10);
    let rbuf = p.b.reg_mr(1, 5, FULL_ACCESS, RBUF as u64, 0x321);
    let slots = p.b.reg_mr(2, 6, FULL_ACCESS, 8 * SLOTS as u64, 0);
    let recv = p.b.reg_mr(3, 7, FULL_ACCESS, 24 * 9000, 0x9);

    let src_data = pattern(dup_seed, 9200);
    p.a.mr_fill(&src, 0, &src_data);
    let mut shadow_r = pattern(dup_seed ^ 0xABCD, RBUF);
    p.b.mr_fill(&rbuf, 0, &shadow_r);
    let mut shadow_slots: Vec<u64> = (0..SLOTS as u64).map(|i| i * 0x1_0000_0001).collect();
    for (i, v) in shadow_slots.iter().enumerate() {
        p.b.mr_fill(&slots, 8 * i as u64, &v.to_le_bytes());
    }

    // Expected results, computed by the test alone.
    let mut expect_local: Vec<(u64, Vec<u8>)> = Vec::new(); // (lbuf offset, bytes)
    let mut expect_recv: Vec<(u64, Vec<u8>, u64, u32, bool)> = Vec::new(); // (recv off, bytes, wr_id, imm, with_imm)
    let mut expect_send_wc: Vec<(u64, u8, u32)> = Vec::new();
    let mut lpos = 0u64;
    let mut reads: Vec<(usize, usize)> = Vec::new();
    let mut rpos = 0u64;
    for (i, o) in ops.iter().enumerate() {
        let wr_id = 1000 + i as u64;
        let mut wr = SendWr {
            wr_id,
            flags: 1,
            ..SendWr::default()
        };
        match *o {
            Op::Send { len, split } => {
                let s1 = (len * split / 100) as u32;
                wr.opcode = wr_opcode::SEND;
                wr.sges = vec![
                    Sg {
                        addr: src.iova,
                        len: s1,
                        lkey: src.lkey(),
                    },
                    Sg {
                        addr: src.iova + s1 as u64,
                        len: len as u32 - s1,
                        lkey: src.lkey(),
                    },
                ];
                // Receive buffer: two SGEs with a gap, 16 bytes of slack.
                let r1 = (len as u32).min(1000);
                p.b.post_recv(
                    p.qb,
                    wr_id,
                    &[
                        Sg {
                            addr: recv.iova + rpos,
                            len: r1,
                            lkey: recv.lkey(),
                        },
                        Sg {
                            addr: recv.iova + rpos + r1 as u64 + 64,
                            len: len as u32 - r1 + 16,
                            lkey: recv.lkey(),
                        },
                    ],
                );
                let d = &src_data[..len];
                expect_recv.push((rpos, d[..r1 as usize].to_vec(), wr_id, 0, false));
                expect_recv.push((
                    rpos + r1 as u64 + 64,
                    d[r1 as usize..].to_vec(),
                    u64::MAX,
                    0,
                    false,
                ));
                rpos += len as u64 + 128;
                expect_send_wc.push((wr_id, wc_opcode::SEND, len as u32));
            }
            Op::Write { len, off, imm } => {
                wr.opcode = if imm {
                    wr_opcode::RDMA_WRITE_WITH_IMM
                } else {
                    wr_opcode::RDMA_WRITE
                };
                wr.sges = vec![Sg {
                    addr: src.iova + 100,
                    len: len as u32,
                    lkey: src.lkey(),
                }];
                wr.remote_addr = rbuf.iova + off as u64;
                wr.rkey = rbuf.lkey();
                wr.imm = wr_id as u32 ^ 0x5A5A;
                // B may run this WRITE before it reads an earlier READ's data (IBTA relaxed
                // READ ordering): fence it when it overlaps one.
                if reads.iter().any(|&(o, l)| o < off + len && off < o + l) {
                    wr.flags |= rnic_regs::wqe_flag::FENCE as u8;
                }
                shadow_r[off..off + len].copy_from_slice(&src_data[100..100 + len]);
                if imm {
                    p.b.post_recv(p.qb, wr_id, &[]);
                    expect_recv.push((0, vec![], wr_id, wr.imm, true));
                }
                expect_send_wc.push((wr_id, wc_opcode::RDMA_WRITE, len as u32));
            }
            Op::Read { len, off } => {
                wr.opcode = wr_opcode::RDMA_READ;
                wr.sges = vec![Sg {
                    addr: lbuf.iova + lpos,
                    len: len as u32,
                    lkey: lbuf.lkey(),
                }];
                wr.remote_addr = rbuf.iova + off as u64;
                wr.rkey = rbuf.lkey();
                expect_local.push((lpos, shadow_r[off..off + len].to_vec()));
                reads.push((off, len));
                lpos += len as u64 + 8;
                expect_send_wc.push((wr_id, wc_opcode::RDMA_READ, len as u32));
            }
            Op::FetchAdd { slot, add } => {
                wr.opcode = wr_opcode::ATOMIC_FETCH_AND_ADD;
                wr.sges = vec![Sg {
                    addr: lbuf.iova + lpos,
                    len: 8,
                    lkey: lbuf.lkey(),
                }];
                wr.remote_addr = slots.iova + 8 * slot as u64;
                wr.rkey = slots.lkey();
                wr.compare_add = add;
                expect_local.push((lpos, shadow_slots[slot].to_le_bytes().to_vec()));
                shadow_slots[slot] = shadow_slots[slot].wrapping_add(add);
                lpos += 8;
                expect_send_wc.push((wr_id, wc_opcode::FETCH_ADD, 8));
            }
            Op::CmpSwap { slot, hit, swap } => {
                wr.opcode = wr_opcode::ATOMIC_CMP_AND_SWP;
                wr.sges = vec![Sg {
                    addr: lbuf.iova + lpos,
                    len: 8,
                    lkey: lbuf.lkey(),
                }];
                wr.remote_addr = slots.iova + 8 * slot as u64;
                wr.rkey = slots.lkey();
                wr.compare_add = if hit {
                    shadow_slots[slot]
                } else {
                    !shadow_slots[slot]
                };
                wr.swap = swap;
                expect_local.push((lpos, shadow_slots[slot].to_le_bytes().to_vec()));
                if hit {
                    shadow_slots[slot] = swap;
                }
                lpos += 8;
                expect_send_wc.push((wr_id, wc_opcode::COMP_SWAP, 8));
            }
        }
        p.a.post_send(p.qa, &wr);
    }
    // Duplicate some request frames on the way (RC must execute each once).
    let mut rng = Rng(dup_seed | 1);
    let mut dups = Vec::new();
    p.pump_with(|ab, f| {
        if ab && rng.below(8) == 0 {
            dups.push(f.clone());
        }
        true
    });
    for f in dups {
        p.b.nic.rx_enqueue(f);
    }
    p.pump();

    prop_assert_eq!(p.b.mr_get(&rbuf, 0, RBUF), shadow_r);
    for (i, v) in shadow_slots.iter().enumerate() {
        prop_assert_eq!(
            p.b.mr_get(&slots, 8 * i as u64, 8),
            v.to_le_bytes().to_vec()
        );
    }
    for (off, bytes) in &expect_local {
        prop_assert_eq!(&p.a.mr_get(&lbuf, *off, bytes.len()), bytes);
    }
    for (off, bytes, _, _, _) in &expect_recv {
        prop_assert_eq!(&p.b.mr_get(&recv, *off, bytes.len()), bytes);
    }
    let wc = p.a.poll_cq(1);
    let got: Vec<(u64, u8, u32)> = wc.iter().map(|w| (w.wr_id, w.opcode, w.byte_len)).collect();
    prop_assert_eq!(got, expect_send_wc);
    prop_assert!(wc.iter().all(|w| w.status == wc_status::SUCCESS));
    let rwc = p.b.poll_cq(2);
    let want: Vec<(u64, u32, bool)> = expect_recv
        .iter()
        .filter(|e| e.2 != u64::MAX)
        .map(|e| (e.2, e.3, e.4))
        .collect();
    let got: Vec<(u64, u32, bool)> = rwc.iter().map(|w| (w.wr_id, w.imm, w.flags != 0)).collect();
    prop_assert_eq!(got, want);
    // The CQ_CI doorbells of the polls are the only work left.
    prop_assert!(!p.a.nic.is_idle());
    p.pump();
    prop_assert!(p.a.nic.is_idle() && p.b.nic.is_idle());
    prop_assert_eq!(p.a.nic.cqc(1).ci, p.a.nic.cqc(1).pi);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_workloads_match_shadow(mtu in 1u8..=5, ops in prop::collection::vec(op_strategy(), 1..20), seed in any::<u64>()) {
        run_workload(mtu, &ops, seed)?;
    }
}
