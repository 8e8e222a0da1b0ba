// SPDX-License-Identifier: Apache-2.0
//! Frames captured from a lockstep run of every verb, decoded by an independent RoCEv2 dissector
//! (tshark) and checked: opcodes, QPNs, PSN sequences, RETH fields, and the ICRC recomputed with
//! a from-scratch CRC-32.

use std::collections::HashMap;

use rnic_driver::{Mtu, SendWr, WrOpcode};
use rnic_testbench::fabric::Backend;
use rnic_testbench::harness::{Pair, PairOptions};
use rnic_testbench::oracle::{icrc_check, tshark_decode};
use rnic_testbench::scenarios::every_verb;

#[test]
fn tshark_decodes_every_frame_and_icrcs_match() {
    let dir = std::env::temp_dir().join(format!("rnic-tshark-{}", std::process::id()));
    let pcap = dir.join("every_verb.pcap");
    let mut o = PairOptions::on(Backend::Lockstep);
    o.mtu = Mtu::Mtu1024;
    o.fabric.capture = Some(pcap.clone());
    let pair = Pair::new(&o).expect("setup");
    let (qa, qb) = (pair.a.qps[0].qpn(), pair.b.qps[0].qpn());
    every_verb(&pair, 3000, &mut |_| {}).expect("verbs");
    // One more WRITE whose RETH we know exactly.
    let remote = pair.b.mr.addr() + 0x100;
    let op = WrOpcode::Write { remote_addr: remote, rkey: pair.b.mr.rkey() };
    pair.a.qps[0].post_send(&SendWr::new(9, op, vec![pair.a.mr.sge(0, 2500).unwrap()])).unwrap();
    Pair::wait(&pair.a, 1).expect("write completion");
    pair.settle().expect("lockstep");
    pair.fabric.borrow_mut().flush_capture();
    let sent = pair.fabric.borrow().frames_sent();

    // Raw frames from the pcap, read back with the same crate that wrote them.
    let file = std::fs::File::open(&pcap).unwrap();
    let mut rd = pcap_file::pcap::PcapReader::new(file).unwrap();
    let mut raw = Vec::new();
    while let Some(p) = rd.next_packet() {
        raw.push(p.unwrap().data.into_owned());
    }
    assert_eq!(raw.len() as u64, sent, "capture holds every frame that crossed the link");

    let frames = match tshark_decode(&pcap) {
        Ok(f) => f,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(frames.len(), raw.len(), "tshark decoded every frame");

    let mut next_psn: HashMap<(u32, bool), u32> = HashMap::new();
    let mut write_seen = false;
    for (i, (t, bytes)) in frames.iter().zip(&raw).enumerate() {
        // ICRC: an independent CRC-32 must match the wire, and tshark must show the same 4 bytes.
        let (calc, wire) = icrc_check(bytes).unwrap_or_else(|| panic!("frame {i} is not RoCEv2/IPv4"));
        assert_eq!(calc, wire, "frame {i}: ICRC on the wire {wire:#010x}, recomputed {calc:#010x}");
        assert_eq!(t.icrc_field, wire.swap_bytes(), "frame {i}: tshark's ICRC field");
        assert!(t.opcode <= 0x14, "frame {i}: RC opcode, got {:#x}", t.opcode);
        assert!(t.dest_qp == qa || t.dest_qp == qb, "frame {i}: dest QP {:#x} is one of ours", t.dest_qp);
        // Requests towards a QP carry consecutive PSNs (READ requests consume one PSN per
        // response packet, so only requests other than READ are followed exactly here).
        let is_request = !(0x0D..=0x12).contains(&t.opcode);
        if is_request {
            let key = (t.dest_qp, true);
            if let Some(&exp) = next_psn.get(&key) {
                assert_eq!(t.psn, exp, "frame {i}: request PSN to QP {:#x}", t.dest_qp);
            }
            let reth_len = t.reth_len.unwrap_or(0);
            let span = if t.opcode == 0x0C { reth_len.div_ceil(1024).max(1) } else { 1 };
            next_psn.insert(key, (t.psn + span) & 0xFF_FFFF);
        } else {
            assert!(t.opcode == 0x0E || t.aeth_syndrome.is_some(), "frame {i}: response without AETH");
        }
        if t.opcode == 0x06 && t.reth_va == Some(remote) {
            assert_eq!(t.reth_rkey, Some(pair.b.mr.rkey()), "RETH rkey");
            assert_eq!(t.reth_len, Some(2500), "RETH DMA length");
            assert_eq!(t.dest_qp, qb, "WRITE goes to B's QP");
            write_seen = true;
        }
    }
    assert!(write_seen, "the WRITE FIRST with the known RETH is in the capture");
    let _ = std::fs::remove_dir_all(&dir);
}
