// SPDX-License-Identifier: Apache-2.0
//! Verb scenarios shared by the demo and the tests. Every scenario checks its result against an
//! expectation computed here (the bytes the test wrote, arithmetic on the values it chose), never
//! against what the model or the RTL computed.

use rnic_driver::{RecvWr, SendWr, WcOpcode, WcStatus, WorkCompletion, WrOpcode};

use crate::harness::{HarnessResult, Pair};

/// A deterministic byte pattern (seeded xorshift) for payloads.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn expect_wc(wc: &WorkCompletion, opcode: WcOpcode, what: &str) -> HarnessResult<()> {
    if wc.status != WcStatus::Success || wc.opcode != opcode {
        return Err(format!("{what}: expected {opcode:?} Success, got {wc:?}"));
    }
    Ok(())
}

fn check_bytes(what: &str, got: &[u8], want: &[u8]) -> HarnessResult<()> {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
        return Err(format!("{what}: data differs at byte {at} of {}", want.len()));
    }
    Ok(())
}

fn drv<T>(what: &str, r: rnic_driver::Result<T>) -> HarnessResult<T> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// Run SEND, SEND with immediate, RDMA WRITE, WRITE with immediate, RDMA READ, CMP_SWAP (hit and
/// miss) and FETCH_ADD from A to B on QP 0 with a `len`-byte message, calling `log` with one line
/// per verb.
///
/// # Errors
/// The first wrong completion or byte.
pub fn every_verb(p: &Pair, len: usize, log: &mut dyn FnMut(String)) -> HarnessResult<()> {
    let (a, b) = (&p.a, &p.b);
    let (qa, qb) = (&a.qps[0], &b.qps[0]);
    let half = (a.mr.len() / 2) as usize;
    if len > half - 64 {
        return Err(format!("message of {len} bytes does not fit the {}-byte buffers", a.mr.len()));
    }

    // SEND / RECV, then SEND with immediate.
    for (k, imm) in [(1u64, None), (2, Some(0xC0FF_EE00u32))] {
        let data = pattern(k, len);
        drv("write source", a.mr.write(0, &data))?;
        drv("post_recv", qb.post_recv(&RecvWr { wr_id: 100 + k, sgl: vec![drv("sge", b.mr.sge(half as u64, len as u32))?] }))?;
        let op = match imm {
            Some(i) => WrOpcode::SendWithImm(i),
            None => WrOpcode::Send,
        };
        drv("post_send", qa.post_send(&SendWr::new(k, op, vec![drv("sge", a.mr.sge(0, len as u32))?])))?;
        let wa = Pair::wait(a, 1)?;
        let wb = Pair::wait(b, 1)?;
        expect_wc(&wa[0], WcOpcode::Send, "send completion")?;
        expect_wc(&wb[0], WcOpcode::Recv, "recv completion")?;
        if wb[0].wr_id != 100 + k || wb[0].byte_len as usize != len || wb[0].imm != imm {
            return Err(format!("recv completion fields wrong: {:?} (want wr_id {}, len {len}, imm {imm:?})", wb[0], 100 + k));
        }
        check_bytes("SEND payload", &drv("read", b.mr.read_vec(half as u64, len))?, &data)?;
        log(format!("SEND{}: {len} bytes, recv wr_id {} byte_len {} imm {:?}: OK", if imm.is_some() { " with immediate" } else { "" }, wb[0].wr_id, wb[0].byte_len, wb[0].imm));
    }

    // RDMA WRITE, then WRITE with immediate (consumes a receive WQE on B).
    for (k, imm) in [(3u64, None), (4, Some(0x1234_5678u32))] {
        let data = pattern(k, len);
        drv("write source", a.mr.write(0, &data))?;
        let remote = b.mr.addr() + 64;
        let op = match imm {
            Some(i) => {
                drv("post_recv", qb.post_recv(&RecvWr { wr_id: 200 + k, sgl: vec![] }))?;
                WrOpcode::WriteWithImm { remote_addr: remote, rkey: b.mr.rkey(), imm: i }
            }
            None => WrOpcode::Write { remote_addr: remote, rkey: b.mr.rkey() },
        };
        drv("post_send", qa.post_send(&SendWr::new(k, op, vec![drv("sge", a.mr.sge(0, len as u32))?])))?;
        let wa = Pair::wait(a, 1)?;
        expect_wc(&wa[0], WcOpcode::RdmaWrite, "write completion")?;
        if let Some(i) = imm {
            let wb = Pair::wait(b, 1)?;
            expect_wc(&wb[0], WcOpcode::RecvRdmaWithImm, "write-with-imm receive")?;
            if wb[0].imm != Some(i) || wb[0].byte_len as usize != len {
                return Err(format!("write-with-imm completion wrong: {:?}", wb[0]));
            }
        }
        check_bytes("WRITE payload", &drv("read", b.mr.read_vec(64, len))?, &data)?;
        log(format!("RDMA WRITE{}: {len} bytes placed at remote {remote:#x}: OK", if imm.is_some() { " with immediate" } else { "" }));
    }

    // Inline SEND and inline RDMA WRITE (IBV_SEND_INLINE: the payload travels in the WQE).
    let il = len.min(rnic_regs::params::MAX_INLINE as usize);
    let data = pattern(11, il);
    drv("post_recv", qb.post_recv(&RecvWr { wr_id: 111, sgl: vec![drv("sge", b.mr.sge(half as u64, il as u32))?] }))?;
    drv("post_send", qa.post_send(&SendWr::inline(11, WrOpcode::Send, &data)))?;
    expect_wc(&Pair::wait(a, 1)?[0], WcOpcode::Send, "inline send completion")?;
    let wb = Pair::wait(b, 1)?;
    expect_wc(&wb[0], WcOpcode::Recv, "inline send receive")?;
    if wb[0].byte_len as usize != il {
        return Err(format!("inline SEND received {} bytes, sent {il}", wb[0].byte_len));
    }
    check_bytes("inline SEND payload", &drv("read", b.mr.read_vec(half as u64, il))?, &data)?;
    let data = pattern(12, il);
    let op = WrOpcode::Write { remote_addr: b.mr.addr() + 64, rkey: b.mr.rkey() };
    drv("post_send", qa.post_send(&SendWr::inline(12, op, &data)))?;
    expect_wc(&Pair::wait(a, 1)?[0], WcOpcode::RdmaWrite, "inline write completion")?;
    check_bytes("inline WRITE payload", &drv("read", b.mr.read_vec(64, il))?, &data)?;
    log(format!("inline SEND and RDMA WRITE: {il} bytes each from the WQE: OK"));

    // RDMA READ: B's buffer to A's.
    let data = pattern(5, len);
    drv("write remote", b.mr.write(128, &data))?;
    let op = WrOpcode::Read { remote_addr: b.mr.addr() + 128, rkey: b.mr.rkey() };
    drv("post_send", qa.post_send(&SendWr::new(5, op, vec![drv("sge", a.mr.sge(half as u64, len as u32))?])))?;
    let wa = Pair::wait(a, 1)?;
    expect_wc(&wa[0], WcOpcode::RdmaRead, "read completion")?;
    check_bytes("READ data", &drv("read", a.mr.read_vec(half as u64, len))?, &data)?;
    log(format!("RDMA READ: {len} bytes fetched: OK"));

    // Atomics on an 8-byte word in B's buffer; the original value lands in A's buffer.
    let word = b.mr.addr() + 8;
    let initial = 0x0102_0304_0506_0708u64;
    drv("init word", b.mr.write(8, &initial.to_le_bytes()))?;
    let atomics = [
        ("CMP_SWAP (match)", WrOpcode::CompareSwap { remote_addr: word, rkey: b.mr.rkey(), compare: initial, swap: 0xAAAA_BBBB_CCCC_DDDD }, initial, 0xAAAA_BBBB_CCCC_DDDDu64, WcOpcode::CompSwap),
        ("CMP_SWAP (miss)", WrOpcode::CompareSwap { remote_addr: word, rkey: b.mr.rkey(), compare: 1, swap: 2 }, 0xAAAA_BBBB_CCCC_DDDD, 0xAAAA_BBBB_CCCC_DDDD, WcOpcode::CompSwap),
        ("FETCH_ADD", WrOpcode::FetchAdd { remote_addr: word, rkey: b.mr.rkey(), add: 0x1111 }, 0xAAAA_BBBB_CCCC_DDDD, 0xAAAA_BBBB_CCCC_DDDDu64.wrapping_add(0x1111), WcOpcode::FetchAdd),
    ];
    for (i, (name, op, want_orig, want_mem, wc_op)) in atomics.into_iter().enumerate() {
        drv("post_send", qa.post_send(&SendWr::new(10 + i as u64, op, vec![drv("sge", a.mr.sge(256, 8))?])))?;
        let wa = Pair::wait(a, 1)?;
        expect_wc(&wa[0], wc_op, name)?;
        let orig = u64::from_le_bytes(drv("read", a.mr.read_vec(256, 8))?.try_into().expect("8 bytes"));
        let mem = u64::from_le_bytes(drv("read", b.mr.read_vec(8, 8))?.try_into().expect("8 bytes"));
        if orig != want_orig || mem != want_mem {
            return Err(format!("{name}: original {orig:#x} (want {want_orig:#x}), memory {mem:#x} (want {want_mem:#x})"));
        }
        log(format!("{name}: returned {orig:#x}, remote now {mem:#x}: OK"));
    }
    Ok(())
}
