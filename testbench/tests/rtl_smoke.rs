// SPDX-License-Identifier: Apache-2.0
//! Smoke test of the Verilated NIC: reset, DEV_ID over MMIO, a NOP and an invalid command.

use rnic_regs::{cmd, cmd_status, reg, trace};
use rnic_testbench::hostmem::HostMem;
use rnic_testbench::lockstep::Observed;
use rnic_testbench::rtl::{RtlConfig, RtlNic, WaveConfig};

fn new_nic() -> RtlNic {
    let mem = HostMem::new(1 << 20).expect("host memory");
    RtlNic::with_config(
        mem,
        RtlConfig {
            waves: None,
            ..RtlConfig::default()
        },
    )
    .expect("Verilated NIC")
}

/// Issues command `op` with zero arguments and polls CMD_STATUS until it is not BUSY.
fn run_cmd(nic: &mut RtlNic, op: u8) -> u8 {
    for i in 0..6 {
        nic.mmio_write(0, reg::CMD_ARG0 + 8 * i, 0)
            .expect("CMD_ARG write");
    }
    nic.mmio_write(0, reg::CMD_OP, u64::from(op))
        .expect("CMD_OP write");
    for _ in 0..10_000 {
        let status = nic.mmio_read(0, reg::CMD_STATUS).expect("CMD_STATUS read");
        if status != u64::from(cmd_status::BUSY) {
            return u8::try_from(status).expect("CMD_STATUS is 8 bits");
        }
    }
    panic!("command {op:#x} still BUSY after 10000 polls");
}

/// A command opcode that `cmd::ALL` does not define.
fn invalid_opcode() -> u8 {
    (0u8..=0xFE)
        .rev()
        .find(|op| cmd::ALL.iter().all(|&(_, v)| v != *op))
        .expect("a free opcode")
}

#[test]
fn dev_id_nop_and_invalid_command() {
    let mut nic = new_nic();
    assert_eq!(nic.mmio_read(0, reg::DEV_ID).unwrap(), reg::DEV_ID_RESET);

    assert_eq!(run_cmd(&mut nic, cmd::NOP), cmd_status::OK);
    assert_eq!(run_cmd(&mut nic, invalid_opcode()), cmd_status::BAD_OPCODE);

    let mut events = Vec::new();
    nic.drain_events(&mut events);
    let cmd_tasks = events
        .iter()
        .filter(|(_, e)| matches!(e, Observed::Task { kind, .. } if *kind == trace::CMD))
        .count();
    assert_eq!(cmd_tasks, 2, "one CMD task per command: {events:?}");
    let op_writes: Vec<u64> = events
        .iter()
        .filter_map(|(_, e)| match e {
            Observed::MmioWrite { offset, value, .. } if *offset == reg::CMD_OP => Some(*value),
            _ => None,
        })
        .collect();
    assert_eq!(
        op_writes,
        vec![u64::from(cmd::NOP), u64::from(invalid_opcode())]
    );
    // The log is ordered by cycle.
    assert!(events.windows(2).all(|w| w[0].0 <= w[1].0));
}

#[test]
fn posted_and_blocking_reads_keep_order() {
    let mut nic = new_nic();
    nic.post_mmio_read(0, reg::DEV_ID);
    nic.post_mmio_read(0, reg::CMD_STATUS);
    // The blocking read returns its own value; the posted ones stay queued, in order.
    assert_eq!(nic.mmio_read(0, reg::DEV_ID).unwrap(), reg::DEV_ID_RESET);
    assert_eq!(nic.take_mmio_read(), Some(reg::DEV_ID_RESET));
    assert_eq!(nic.take_mmio_read(), Some(u64::from(cmd_status::OK)));
    assert_eq!(nic.take_mmio_read(), None);
    let mut events = Vec::new();
    nic.drain_events(&mut events);
    let reads: Vec<u64> = events
        .iter()
        .filter_map(|(_, e)| match e {
            Observed::MmioRead { offset, .. } => Some(*offset),
            _ => None,
        })
        .collect();
    assert_eq!(reads, vec![reg::DEV_ID, reg::CMD_STATUS, reg::DEV_ID]);
}

#[test]
fn waveform_window() {
    let dir = std::env::temp_dir().join(format!("rnic-smoke-waves-{}", std::process::id()));
    let path = dir.join("smoke.fst");
    let waves = WaveConfig {
        path: path.clone(),
        start_cycle: 100,
        end_cycle: 300,
    };
    let mem = HostMem::new(1 << 20).unwrap();
    let mut nic = RtlNic::with_config(
        mem,
        RtlConfig {
            waves: Some(waves),
            ..RtlConfig::default()
        },
    )
    .unwrap();
    assert_eq!(nic.waves_path(), Some(path.as_path()));
    nic.step(50).unwrap();
    assert!(!path.exists(), "the file is created when the window starts");
    nic.step(300).unwrap();
    let size = std::fs::metadata(&path).expect("waveform written").len();
    assert!(size > 0);
    nic.step(1000).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        size,
        "closed at the end of the window"
    );
    // A second window on the same NIC.
    let second = dir.join("second.fst");
    nic.open_waves(&second, nic.cycle(), nic.cycle() + 10)
        .unwrap();
    nic.step(20).unwrap();
    assert!(std::fs::metadata(&second).unwrap().len() > 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Idle simulation speed (run with `--ignored --nocapture`).
#[test]
#[ignore = "speed measurement, not a test: run with --ignored --nocapture"]
fn idle_cycles_per_second() {
    let mut nic = new_nic();
    let n = 1_000_000;
    // Best of 5: the machine is shared, the best run is the least disturbed one.
    let best = (0..5)
        .map(|_| {
            let t = std::time::Instant::now();
            nic.step(n).unwrap();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    println!(
        "idle: {n} cycles in {best:.3} s = {:.2} M cycles/s (best of 5)",
        n as f64 / best / 1e6
    );
}
