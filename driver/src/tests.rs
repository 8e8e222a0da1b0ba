// SPDX-License-Identifier: Apache-2.0
//! Unit tests against a small fake device: records MMIO writes, answers every command (OK unless
//! scripted otherwise) and backs DMA memory with a `Vec`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::rc::Rc;

use proptest::strategy::Strategy;

use rnic_regs::{
    cmd, cmd_create_cq, cmd_create_qp, cmd_index, cmd_qp_args, cmd_reg_mr, cmd_set_port,
    cmd_status, cmd_write_mtt, cqe, params, qp_attr, recv_wqe, reg, send_wqe, wc_opcode, wc_status,
    wqe_flag, wr_opcode,
};

use crate::*;

const MEM_BASE: u64 = 0x1_0000_0000;

struct FakeDev {
    dev_id: u64,
    caps: u64,
    caps2: u64,
    args: RefCell<[u64; 6]>,
    writes: RefCell<Vec<(u64, u64)>>,
    reads: RefCell<Vec<u64>>,
    /// DMA reads at this address fail (to test error propagation).
    fail_read_at: Cell<Option<u64>>,
    commands: RefCell<Vec<(u8, CmdImage)>>,
    /// WRITE_MTT loads as the device would see them: (start, page addresses read at `src`).
    mtt_loads: RefCell<Vec<(u32, Vec<u64>)>>,
    /// Progress calls a command stays BUSY for.
    busy_for: Cell<u32>,
    busy_left: Cell<u32>,
    status_script: RefCell<VecDeque<u8>>,
    status: Cell<u8>,
    out_script: RefCell<VecDeque<(u64, u64)>>,
    out: Cell<(u64, u64)>,
    mem: RefCell<Vec<u8>>,
    irqs: RefCell<Vec<u16>>,
    progress_calls: Cell<u32>,
    /// On progress call number `n` (1-based), write the bytes at the address.
    progress_writes: RefCell<Vec<(u32, u64, Vec<u8>)>>,
    /// On progress call number `n`, raise the vector.
    progress_irqs: RefCell<Vec<(u32, u16)>>,
    /// Configuration space dwords (unwritten ones read 0).
    cfg: RefCell<std::collections::HashMap<u32, u32>>,
}

fn caps_value(num_qp: u64) -> u64 {
    num_qp | params::NUM_CQ << 16 | params::NUM_MR << 32 | params::NUM_PD << 48
}

impl FakeDev {
    fn new() -> Self {
        FakeDev {
            dev_id: reg::DEV_ID_RESET,
            caps: caps_value(params::NUM_QP),
            caps2: params::NUM_MTT | params::MAX_SEND_SGE << 32 | params::MAX_RECV_SGE << 40,
            args: RefCell::new([0; 6]),
            writes: RefCell::new(Vec::new()),
            reads: RefCell::new(Vec::new()),
            fail_read_at: Cell::new(None),
            commands: RefCell::new(Vec::new()),
            mtt_loads: RefCell::new(Vec::new()),
            busy_for: Cell::new(0),
            busy_left: Cell::new(0),
            status_script: RefCell::new(VecDeque::new()),
            status: Cell::new(cmd_status::OK),
            out_script: RefCell::new(VecDeque::new()),
            out: Cell::new((0, 0)),
            mem: RefCell::new(Vec::new()),
            irqs: RefCell::new(Vec::new()),
            progress_calls: Cell::new(0),
            progress_writes: RefCell::new(Vec::new()),
            progress_irqs: RefCell::new(Vec::new()),
            cfg: RefCell::new(std::collections::HashMap::new()),
        }
    }

    fn range(&self, iova: u64, len: usize) -> Result<std::ops::Range<usize>, DeviceError> {
        let mem = self.mem.borrow().len() as u64;
        if iova < MEM_BASE || iova - MEM_BASE + len as u64 > mem {
            return Err(DeviceError::BadAddress {
                iova,
                len: len as u64,
            });
        }
        let s = (iova - MEM_BASE) as usize;
        Ok(s..s + len)
    }

    fn peek(&self, iova: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.dma_read(iova, &mut v).unwrap();
        v
    }

    fn cmds(&self, op: u8) -> Vec<CmdImage> {
        self.commands
            .borrow()
            .iter()
            .filter(|(o, _)| *o == op)
            .map(|(_, i)| *i)
            .collect()
    }

    fn ncmds(&self) -> usize {
        self.commands.borrow().len()
    }
}

impl Device for FakeDev {
    fn mmio_write(&self, offset: u64, value: u64) {
        self.writes.borrow_mut().push((offset, value));
        if (reg::CMD_ARG0..=reg::CMD_ARG5).contains(&offset) {
            self.args.borrow_mut()[((offset - reg::CMD_ARG0) / 8) as usize] = value;
        } else if offset == reg::CMD_OP {
            let mut img = [0u8; CMD_IMAGE_SIZE];
            for (i, a) in self.args.borrow().iter().enumerate() {
                img[8 * i..8 * i + 8].copy_from_slice(&a.to_le_bytes());
            }
            let op = value as u8;
            if op == cmd::WRITE_MTT {
                let count = cmd_write_mtt::COUNT.get(&img) as usize;
                let raw = self.peek(cmd_write_mtt::SRC.get(&img), count * 8);
                let pages = raw
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                self.mtt_loads
                    .borrow_mut()
                    .push((cmd_write_mtt::START.get(&img) as u32, pages));
            }
            self.commands.borrow_mut().push((op, img));
            self.busy_left.set(self.busy_for.get());
            self.status.set(
                self.status_script
                    .borrow_mut()
                    .pop_front()
                    .unwrap_or(cmd_status::OK),
            );
            self.out
                .set(self.out_script.borrow_mut().pop_front().unwrap_or((0, 0)));
        }
    }

    fn cfg_write(&self, offset: u32, value: u32) {
        self.cfg.borrow_mut().insert(offset, value);
    }

    fn cfg_read(&self, offset: u32) -> u32 {
        self.cfg.borrow().get(&offset).copied().unwrap_or(0)
    }

    fn mmio_read(&self, offset: u64) -> u64 {
        self.reads.borrow_mut().push(offset);
        match offset {
            reg::DEV_ID => self.dev_id,
            reg::DEV_CAPS => self.caps,
            reg::DEV_CAPS2 => self.caps2,
            // The whole tables belong to this (PF) function.
            reg::FUNC_ID => 0,
            reg::RES_QP => (self.caps & 0xFFFF) << 32,
            reg::RES_CQ => (self.caps >> 16 & 0xFFFF) << 32,
            reg::RES_MR => (self.caps >> 32 & 0xFFFF) << 32,
            reg::RES_PD => (self.caps >> 48 & 0xFFFF) << 32,
            reg::RES_MTT => (self.caps2 & 0xFFFF_FFFF) << 32,
            reg::CMD_STATUS if self.busy_left.get() > 0 => u64::from(cmd_status::BUSY),
            reg::CMD_STATUS => u64::from(self.status.get()),
            reg::CMD_OUT0 => self.out.get().0,
            reg::CMD_OUT1 => self.out.get().1,
            // Counters read back their own offset so the test can see which one was read.
            o if o >= reg::COUNTERS
                && o < reg::COUNTERS + 8 * u64::from(rnic_regs::counter::NUM) =>
            {
                o
            }
            _ => 0,
        }
    }

    fn dma_alloc(&self, len: u64, align: u64) -> Result<u64, DeviceError> {
        let mut mem = self.mem.borrow_mut();
        let start = (mem.len() as u64).next_multiple_of(align);
        mem.resize((start + len) as usize, 0);
        Ok(MEM_BASE + start)
    }

    fn dma_free(&self, _iova: u64, _len: u64) {}

    fn dma_read(&self, iova: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        if self.fail_read_at.get() == Some(iova) {
            return Err(DeviceError::Simulation(format!(
                "injected read failure at {iova:#x}"
            )));
        }
        let r = self.range(iova, buf.len())?;
        buf.copy_from_slice(&self.mem.borrow()[r]);
        Ok(())
    }

    fn dma_write(&self, iova: u64, data: &[u8]) -> Result<(), DeviceError> {
        let r = self.range(iova, data.len())?;
        self.mem.borrow_mut()[r].copy_from_slice(data);
        Ok(())
    }

    fn progress(&self) -> Result<(), DeviceError> {
        let n = self.progress_calls.get() + 1;
        self.progress_calls.set(n);
        self.busy_left.set(self.busy_left.get().saturating_sub(1));
        let due: Vec<_> = self
            .progress_writes
            .borrow()
            .iter()
            .filter(|w| w.0 == n)
            .cloned()
            .collect();
        for (_, iova, bytes) in due {
            self.dma_write(iova, &bytes)?;
        }
        let irqs: Vec<u16> = self
            .progress_irqs
            .borrow()
            .iter()
            .filter(|w| w.0 == n)
            .map(|w| w.1)
            .collect();
        self.irqs.borrow_mut().extend(irqs);
        Ok(())
    }

    fn take_interrupts(&self) -> Vec<u16> {
        std::mem::take(&mut *self.irqs.borrow_mut())
    }
}

fn open_with(dev: FakeDev) -> (Rc<FakeDev>, Context) {
    let dev = Rc::new(dev);
    let ctx = Context::open(dev.clone()).expect("open");
    (dev, ctx)
}

fn open() -> (Rc<FakeDev>, Context) {
    open_with(FakeDev::new())
}

const MAC_A: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

fn rtr_attr() -> RtrAttr {
    RtrAttr {
        dest_qpn: 0x12_3456,
        rq_psn: 0xAB_CDEF,
        path_mtu: Mtu::Mtu1024,
        dest_mac: MAC_A,
        dest_ip: Ipv4Addr::new(10, 1, 2, 3),
        max_dest_rd_atomic: 16,
        min_rnr_timer: 31,
    }
}

fn rts_attr() -> RtsAttr {
    RtsAttr {
        sq_psn: 0xFF_FFFF,
        timeout: 31,
        retry_cnt: 7,
        rnr_retry: 6,
        max_rd_atomic: 3,
    }
}

struct Setup {
    dev: Rc<FakeDev>,
    ctx: Context,
    pd: Pd,
    cq: Cq,
}

fn setup() -> Setup {
    let (dev, ctx) = open();
    let pd = ctx.alloc_pd().unwrap();
    let cq = ctx.create_cq(16).unwrap();
    Setup { dev, ctx, pd, cq }
}

impl Setup {
    fn qp(&self, sq: u32, rq: u32) -> QueuePair {
        self.pd
            .create_qp(&QpInitAttr {
                send_cq: &self.cq,
                recv_cq: &self.cq,
                max_send_wr: sq,
                max_recv_wr: rq,
            })
            .unwrap()
    }

    /// A QP driven through the legal path to `state`.
    fn qp_in(&self, state: QpState) -> QueuePair {
        let qp = self.qp(4, 4);
        let path: &[QpState] = match state {
            QpState::Reset => &[],
            QpState::Init => &[QpState::Init],
            QpState::Rtr => &[QpState::Init, QpState::Rtr],
            QpState::Rts => &[QpState::Init, QpState::Rtr, QpState::Rts],
            QpState::Err => &[QpState::Err],
        };
        for s in path {
            qp.modify(&full_attr(*s)).unwrap();
        }
        assert_eq!(qp.state(), state);
        qp
    }
}

/// Attributes with every bit that is required for `to` from its predecessor on the normal path.
fn full_attr(to: QpState) -> QpAttr {
    let a = QpAttr::new(to);
    match to {
        QpState::Init => a
            .with_pkey_index(0)
            .with_port(1)
            .with_access(AccessFlags::REMOTE_WRITE),
        QpState::Rtr => a
            .with_av(AddressVector {
                dest_mac: MAC_A,
                dest_ip: Ipv4Addr::new(10, 0, 0, 2),
            })
            .with_path_mtu(Mtu::Mtu4096)
            .with_dest_qpn(7)
            .with_rq_psn(1)
            .with_max_dest_rd_atomic(1)
            .with_min_rnr_timer(1),
        QpState::Rts => a
            .with_sq_psn(2)
            .with_max_rd_atomic(1)
            .with_retry_cnt(1)
            .with_rnr_retry(1)
            .with_timeout(1),
        QpState::Reset | QpState::Err => a,
    }
}

/// Attributes carrying exactly `mask` (besides STATE), with valid values.
fn attr_with_mask(to: QpState, mask: QpAttrMask) -> QpAttr {
    let mut a = QpAttr::new(to);
    let all = full_attr(QpState::Init);
    let rtr = full_attr(QpState::Rtr);
    let rts = full_attr(QpState::Rts);
    for bit in mask.iter() {
        match bit {
            QpAttrMask::ACCESS_FLAGS => a.access = all.access,
            QpAttrMask::PKEY_INDEX => a.pkey_index = all.pkey_index,
            QpAttrMask::PORT => a.port = all.port,
            QpAttrMask::AV => a.av = rtr.av,
            QpAttrMask::PATH_MTU => a.path_mtu = rtr.path_mtu,
            QpAttrMask::DEST_QPN => a.dest_qpn = rtr.dest_qpn,
            QpAttrMask::RQ_PSN => a.rq_psn = rtr.rq_psn,
            QpAttrMask::MAX_DEST_RD_ATOMIC => a.max_dest_rd_atomic = rtr.max_dest_rd_atomic,
            QpAttrMask::MIN_RNR_TIMER => a.min_rnr_timer = rtr.min_rnr_timer,
            QpAttrMask::SQ_PSN => a.sq_psn = rts.sq_psn,
            QpAttrMask::TIMEOUT => a.timeout = rts.timeout,
            QpAttrMask::RETRY_CNT => a.retry_cnt = rts.retry_cnt,
            QpAttrMask::RNR_RETRY => a.rnr_retry = rts.rnr_retry,
            QpAttrMask::MAX_QP_RD_ATOMIC => a.max_rd_atomic = rts.max_rd_atomic,
            QpAttrMask::STATE => {}
            other => panic!("unhandled mask bit {other:?}"),
        }
    }
    assert_eq!(a.mask(), mask | QpAttrMask::STATE);
    a
}

/// Write a CQE as the device would: the `pi`-th CQE of `cq`'s life.
fn push_cqe(dev: &FakeDev, cq: &Cq, pi: u32, wc: &WorkCompletion) {
    let log = cq.depth().trailing_zeros();
    let owner = ((pi >> log) & 1) ^ 1;
    let slot = u64::from(pi & (cq.depth() - 1));
    dev.dma_write(
        cq.ring_addr() + slot * cqe::SIZE as u64,
        &wc.encode(owner == 1),
    )
    .unwrap();
}

fn send_wc(qpn: u32, wqe_idx: u16, wr_id: u64) -> WorkCompletion {
    WorkCompletion {
        wr_id,
        status: WcStatus::Success,
        opcode: WcOpcode::Send,
        byte_len: 0,
        imm: None,
        qpn,
        wqe_idx,
    }
}

fn recv_wc(qpn: u32, wqe_idx: u16, wr_id: u64) -> WorkCompletion {
    WorkCompletion {
        opcode: WcOpcode::Recv,
        ..send_wc(qpn, wqe_idx, wr_id)
    }
}

fn last_write(dev: &FakeDev) -> (u64, u64) {
    *dev.writes.borrow().last().unwrap()
}

// ------------------------------------------------------------------ context and commands

#[test]
fn open_reads_caps() {
    let (_dev, ctx) = open();
    let c = ctx.caps();
    assert_eq!(c.interface_version as u64, reg::DEV_ID_RESET >> 32 & 0xFFFF);
    assert_eq!(u64::from(c.num_qp), params::NUM_QP);
    assert_eq!(u64::from(c.num_cq), params::NUM_CQ);
    assert_eq!(u64::from(c.num_mr), params::NUM_MR);
    assert_eq!(u64::from(c.num_pd), params::NUM_PD);
    assert_eq!(u64::from(c.num_mtt), params::NUM_MTT);
    assert_eq!(u64::from(c.max_send_sge), params::MAX_SEND_SGE);
    assert_eq!(u64::from(c.max_recv_sge), params::MAX_RECV_SGE);
}

#[test]
fn open_enables_memory_and_bus_mastering() {
    let (dev, _ctx) = open();
    let c = dev.cfg.borrow().get(&rnic_regs::cfg::COMMAND).copied();
    assert_eq!(c, Some(rnic_regs::cfg::CMD_MEM | rnic_regs::cfg::CMD_MASTER));
}

#[test]
fn sriov_needs_the_capability_and_a_sane_count() {
    use rnic_regs::{cfg, sriov};
    let (dev, ctx) = open();
    // No extended capability: not a PF with SR-IOV.
    assert!(matches!(ctx.enable_vfs(1), Err(Error::NoSriov)));
    // A capability list whose first entry is another capability, then SR-IOV at 0x180.
    dev.cfg.borrow_mut().insert(cfg::EXT_CAP, 0x180 << 20 | 1 << 16 | 0x0001);
    dev.cfg.borrow_mut().insert(0x180, 1 << 16 | cfg::EXT_CAP_ID_SRIOV);
    dev.cfg.borrow_mut().insert(0x180 + sriov::INITIAL_VFS, 4 << 16 | 4);
    dev.cfg.borrow_mut().insert(0x180 + sriov::VF_OFFSET, 1 << 16 | 1);
    let info = ctx.sriov().expect("found after walking the list");
    assert_eq!((info.offset, info.total_vfs), (0x180, 4));
    assert!(matches!(ctx.enable_vfs(5), Err(Error::TooManyVfs { requested: 5, total: 4 })));
    // The fake device keeps every write, so NumVFs and VF Enable read back.
    let info = ctx.enable_vfs(2).expect("enable");
    assert_eq!(info.num_vfs, 2);
    assert_eq!(dev.cfg.borrow()[&(0x180 + sriov::SYS_PAGE_SIZE)], 1, "4 KiB system pages");
    assert!(matches!(ctx.enable_vfs(2), Err(Error::VfsEnabled { num_vfs: 2 })));
    ctx.disable_vfs().unwrap();
    assert_eq!(dev.cfg.borrow()[&(0x180 + sriov::CTRL)] & sriov::CTRL_VFE, 0);
    assert_eq!(dev.cfg.borrow()[&(0x180 + sriov::NUM_VFS)], 0);
}

#[test]
fn open_rejects_other_interface_version_and_unusable_caps() {
    let mut d = FakeDev::new();
    d.dev_id = reg::DEV_ID_RESET + (1 << 32);
    match Context::open(Rc::new(d)) {
        Err(Error::UnsupportedDevice { found, expected }) => {
            assert_eq!(expected, reg::DEV_ID_RESET);
            assert_eq!(found, reg::DEV_ID_RESET + (1 << 32));
        }
        other => panic!("{other:?}"),
    }
    let mut d = FakeDev::new();
    d.caps = caps_value(2);
    assert!(matches!(
        Context::open(Rc::new(d)),
        Err(Error::InvalidArgument {
            what: "DEV_CAPS number of QPs",
            ..
        })
    ));
}

#[test]
fn set_port_image() {
    let (dev, ctx) = open();
    ctx.set_port(MAC_A, Ipv4Addr::new(192, 168, 1, 20)).unwrap();
    let img = dev.cmds(cmd::SET_PORT);
    assert_eq!(img.len(), 1);
    assert_eq!(cmd_set_port::MAC.get(&img[0]), 0x02_11_22_33_44_55);
    assert_eq!(cmd_set_port::IP.get(&img[0]), 0xC0A8_0114);
    assert_eq!(mac_from_u64(mac_to_u64(MAC_A)), MAC_A);
    // The argument registers are written before CMD_OP.
    let w = dev.writes.borrow();
    let op_at = w.iter().position(|(o, _)| *o == reg::CMD_OP).unwrap();
    for a in [
        reg::CMD_ARG0,
        reg::CMD_ARG1,
        reg::CMD_ARG2,
        reg::CMD_ARG3,
        reg::CMD_ARG4,
        reg::CMD_ARG5,
    ] {
        assert!(
            w[..op_at].iter().any(|(o, _)| *o == a),
            "CMD_ARG at {a:#x} not written before CMD_OP"
        );
    }
    assert_eq!(w[op_at].1, u64::from(cmd::SET_PORT));
}

#[test]
fn command_calls_progress_while_busy() {
    let (dev, ctx) = open();
    dev.busy_for.set(5);
    ctx.nop().unwrap();
    assert_eq!(dev.progress_calls.get(), 5);
}

#[test]
fn command_timeout_names_command_and_object() {
    let (dev, ctx) = open();
    dev.busy_for.set(u32::MAX);
    ctx.set_command_poll_limit(20);
    match ctx.alloc_pd() {
        Err(e @ Error::CommandTimeout { .. }) => {
            let Error::CommandTimeout {
                command,
                object,
                polls,
            } = e
            else {
                unreachable!()
            };
            assert_eq!(
                (command, object, polls),
                (Command::AllocPd, Object::Pd(0), 20)
            );
            let msg = Error::CommandTimeout {
                command,
                object,
                polls,
            }
            .to_string();
            assert!(msg.contains("ALLOC_PD") && msg.contains("PD 0"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(dev.progress_calls.get(), 20);
    // The PDN was returned: the next allocation (after the device recovers) gets PD 0 again.
    dev.busy_for.set(0);
    assert_eq!(ctx.alloc_pd().unwrap().pdn(), 0);
}

#[test]
fn command_status_maps_to_typed_errors() {
    let (dev, ctx) = open();
    for (code, status) in [
        (cmd_status::BAD_OPCODE, CommandStatus::BadOpcode),
        (cmd_status::BAD_INDEX, CommandStatus::BadIndex),
        (cmd_status::BAD_STATE, CommandStatus::BadState),
        (cmd_status::BAD_PARAM, CommandStatus::BadParam),
        (0x42, CommandStatus::Other(0x42)),
    ] {
        dev.status_script.borrow_mut().push_back(code);
        match ctx.create_cq(4) {
            Err(Error::CommandFailed {
                command: Command::CreateCq,
                object: Object::Cq(0),
                status: s,
            }) => {
                assert_eq!(s, status)
            }
            other => panic!("{other:?}"),
        }
    }
    dev.status_script
        .borrow_mut()
        .push_back(cmd_status::BAD_OPCODE);
    let e = ctx.raw_command(0x7E, &[0; CMD_IMAGE_SIZE]).unwrap_err();
    assert!(matches!(
        e,
        Error::CommandFailed {
            command: Command::Other(0x7E),
            status: CommandStatus::BadOpcode,
            ..
        }
    ));
}

#[test]
fn qpn_exhaustion_and_reuse() {
    let mut d = FakeDev::new();
    d.caps = caps_value(5);
    let (_dev, ctx) = open_with(d);
    let pd = ctx.alloc_pd().unwrap();
    let cq = ctx.create_cq(4).unwrap();
    let attr = QpInitAttr {
        send_cq: &cq,
        recv_cq: &cq,
        max_send_wr: 2,
        max_recv_wr: 2,
    };
    let qps: Vec<_> = (0..3).map(|_| pd.create_qp(&attr).unwrap()).collect();
    assert_eq!(
        qps.iter().map(|q| q.qpn()).collect::<Vec<_>>(),
        vec![2, 3, 4],
        "QPNs 0 and 1 are reserved"
    );
    assert!(matches!(
        pd.create_qp(&attr),
        Err(Error::ResourceExhausted {
            resource: Resource::Qp,
            limit: 3
        })
    ));
    let mut qps = qps.into_iter();
    let _a = qps.next();
    drop(qps.next()); // QP 3
    assert_eq!(pd.create_qp(&attr).unwrap().qpn(), 3);
}

// ------------------------------------------------------------------ CQ, PD, MR

#[test]
fn create_cq_image_and_depth() {
    let (dev, ctx) = open();
    let cq = ctx.create_cq_with_vector(5, 9).unwrap();
    assert_eq!(cq.depth(), 8);
    let img = dev.cmds(cmd::CREATE_CQ)[0];
    assert_eq!(cmd_create_cq::CQN.get(&img), u64::from(cq.cqn()));
    assert_eq!(cmd_create_cq::BASE.get(&img), cq.ring_addr());
    assert_eq!(cmd_create_cq::BASE.get(&img) % 32, 0);
    assert_eq!(cmd_create_cq::LOG_SIZE.get(&img), 3);
    assert_eq!(cmd_create_cq::VECTOR.get(&img), 9);
    assert_eq!(
        ctx.create_cq(1).unwrap().depth(),
        2,
        "log_size is at least 1"
    );
    assert_eq!(ctx.create_cq(65536).unwrap().depth(), 65536);
    for bad in [0, 65537] {
        assert!(matches!(
            ctx.create_cq(bad),
            Err(Error::InvalidArgument {
                what: "CQ depth",
                ..
            })
        ));
    }
}

#[test]
fn pd_alloc_dealloc_and_in_use() {
    let (dev, ctx) = open();
    let pd0 = ctx.alloc_pd().unwrap();
    let pd1 = ctx.alloc_pd().unwrap();
    assert_eq!((pd0.pdn(), pd1.pdn()), (0, 1));
    assert_eq!(cmd_index::INDEX.get(&dev.cmds(cmd::ALLOC_PD)[1]), 1);
    let mr = pd0.reg_mr(100, AccessFlags::LOCAL_WRITE).unwrap();
    match pd0.dealloc() {
        Err(Error::InUse {
            object: Object::Pd(0),
            users: 1,
        }) => {}
        other => panic!("{other:?}"),
    }
    // The failed dealloc dropped only a handle: the MR still keeps PD 0 alive.
    assert!(dev.cmds(cmd::DEALLOC_PD).is_empty());
    drop(mr);
    assert_eq!(
        dev.cmds(cmd::DEALLOC_PD).len(),
        1,
        "last user gone: PD deallocated"
    );
    assert_eq!(cmd_index::INDEX.get(&dev.cmds(cmd::DEALLOC_PD)[0]), 0);
    pd1.dealloc().unwrap();
    assert_eq!(cmd_index::INDEX.get(&dev.cmds(cmd::DEALLOC_PD)[1]), 1);
    assert_eq!(ctx.alloc_pd().unwrap().pdn(), 0, "PDN reused");
}

#[test]
fn reg_mr_images_contiguous() {
    let (dev, ctx) = open();
    let pd = ctx.alloc_pd().unwrap();
    let _pd2 = ctx.alloc_pd().unwrap();
    let access = AccessFlags::LOCAL_WRITE | AccessFlags::REMOTE_READ | AccessFlags::REMOTE_ATOMIC;
    let mr = pd.reg_mr(3 * 4096 + 10, access).unwrap();
    assert_eq!(mr.num_pages(), 4);
    let loads = dev.mtt_loads.borrow();
    assert_eq!(loads.len(), 1);
    assert_eq!(loads[0].0, mr.mtt_base());
    assert_eq!(
        loads[0].1,
        (0..4).map(|i| mr.addr() + i * 4096).collect::<Vec<_>>()
    );
    let w = dev.cmds(cmd::WRITE_MTT)[0];
    assert_eq!(cmd_write_mtt::COUNT.get(&w), 4);
    let img = dev.cmds(cmd::REG_MR)[0];
    assert_eq!(cmd_reg_mr::INDEX.get(&img), u64::from(mr.lkey() >> 8));
    assert_eq!(cmd_reg_mr::KEY.get(&img), u64::from(mr.lkey() & 0xFF));
    assert_eq!(cmd_reg_mr::PDN.get(&img), 0);
    assert_eq!(cmd_reg_mr::ACCESS.get(&img), u64::from(access.bits()));
    assert_eq!(cmd_reg_mr::IOVA.get(&img), mr.addr());
    assert_eq!(cmd_reg_mr::LENGTH.get(&img), 3 * 4096 + 10);
    assert_eq!(cmd_reg_mr::MTT_BASE.get(&img), u64::from(mr.mtt_base()));
    assert_eq!(cmd_reg_mr::LOG_PAGE.get(&img), 12);
    assert_eq!(mr.rkey(), mr.lkey());
    assert_eq!(mr.addr() % 4096, 0);
    // The WRITE_MTT happens before the REG_MR that uses it.
    let ops: Vec<u8> = dev.commands.borrow().iter().map(|c| c.0).collect();
    assert_eq!(&ops[ops.len() - 2..], &[cmd::WRITE_MTT, cmd::REG_MR]);
    assert!(matches!(
        pd.reg_mr(0, access),
        Err(Error::InvalidArgument {
            what: "MR length",
            ..
        })
    ));
}

#[test]
fn reg_mr_scrambled_really_translates() {
    let (dev, ctx) = open();
    let pd = ctx.alloc_pd().unwrap();
    let mr = pd
        .reg_mr_with(
            5 * 4096,
            AccessFlags::LOCAL_WRITE,
            &MrOptions {
                scramble: Some(3),
                first_page_offset: 100,
                iova: None,
            },
        )
        .unwrap();
    assert_eq!(mr.num_pages(), 6, "offset 100 + 5 pages spans 6 pages");
    assert_eq!(mr.addr() % 4096, 100);
    let pages: Vec<u64> = (0..6).map(|i| mr.page_addr(i)).collect();
    assert_ne!(
        pages,
        (0..6)
            .map(|i| (mr.addr() & !4095) + i * 4096)
            .collect::<Vec<_>>(),
        "not scrambled"
    );
    assert_eq!(
        dev.mtt_loads.borrow()[0].1,
        pages,
        "the MTT holds the scrambled page list"
    );
    let mut sorted = pages.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 6);
    // A write that crosses page boundaries lands in the translated pages.
    let data: Vec<u8> = (0..9000u32).map(|i| (i % 251) as u8).collect();
    mr.write(4000, &data).unwrap();
    assert_eq!(mr.read_vec(4000, data.len()).unwrap(), data);
    let va = mr.addr() + 4000; // iova page 1 at offset (100 + 4000) - 4096 = 4
    let page = ((va - (mr.addr() & !4095)) >> 12) as usize;
    assert_eq!(page, 1);
    assert_eq!(dev.peek(pages[1] + 4, 4), data[..4]);
    let va_last = va + data.len() as u64 - 1;
    let last_page = ((va_last - (mr.addr() & !4095)) >> 12) as usize;
    assert_eq!(
        dev.peek(pages[last_page] + (va_last & 4095), 1)[0],
        *data.last().unwrap()
    );
}

#[test]
fn reg_mr_at_foreign_iova() {
    let (dev, ctx) = open();
    let pd = ctx.alloc_pd().unwrap();
    let va = 0x7F00_0000_0FF0u64;
    let opts = MrOptions {
        iova: Some(va),
        first_page_offset: 7,
        ..MrOptions::default()
    };
    let mr = pd.reg_mr_with(32, AccessFlags::LOCAL_WRITE, &opts).unwrap();
    assert_eq!(mr.addr(), va);
    assert_eq!(mr.num_pages(), 2, "0xFF0 + 32 crosses a page end");
    let img = dev.cmds(cmd::REG_MR)[0];
    assert_eq!(cmd_reg_mr::IOVA.get(&img), va);
    assert_eq!(
        dev.mtt_loads.borrow()[0].1,
        vec![mr.page_addr(0), mr.page_addr(1)]
    );
    let data: Vec<u8> = (1..=32).collect();
    mr.write(0, &data).unwrap();
    assert_eq!(dev.peek(mr.page_addr(0) + 0xFF0, 16), data[..16]);
    assert_eq!(dev.peek(mr.page_addr(1), 16), data[16..]);
    let bad = MrOptions {
        iova: Some(u64::MAX - 4),
        ..MrOptions::default()
    };
    assert!(matches!(
        pd.reg_mr_with(8, AccessFlags::empty(), &bad),
        Err(Error::InvalidArgument {
            what: "MR iova",
            ..
        })
    ));
}

#[test]
fn reg_mr_large_splits_write_mtt() {
    let (dev, ctx) = open();
    let pd = ctx.alloc_pd().unwrap();
    let n = params::MTT_WRITE_MAX as usize + 88;
    let mr = pd
        .reg_mr_scrambled(n as u64 * 4096, AccessFlags::empty(), 1)
        .unwrap();
    let loads = dev.mtt_loads.borrow();
    assert_eq!(loads.len(), 2);
    assert_eq!(loads[0].0, mr.mtt_base());
    assert_eq!(loads[0].1.len(), params::MTT_WRITE_MAX as usize);
    assert_eq!(loads[1].0, mr.mtt_base() + params::MTT_WRITE_MAX as u32);
    let all: Vec<u64> = loads.iter().flat_map(|l| l.1.clone()).collect();
    assert_eq!(all, (0..n).map(|i| mr.page_addr(i)).collect::<Vec<_>>());
}

#[test]
fn reg_mr_failure_rolls_back_and_keys_rotate() {
    let (dev, ctx) = open();
    let pd = ctx.alloc_pd().unwrap();
    let a = pd.reg_mr(4096, AccessFlags::LOCAL_WRITE).unwrap();
    dev.status_script
        .borrow_mut()
        .extend([cmd_status::OK, cmd_status::BAD_PARAM]); // WRITE_MTT ok, REG_MR fails
    match pd.reg_mr(8192, AccessFlags::LOCAL_WRITE) {
        Err(Error::CommandFailed {
            command: Command::RegMr,
            object: Object::Mr(1),
            status: CommandStatus::BadParam,
        }) => {}
        other => panic!("{other:?}"),
    }
    let b = pd.reg_mr(8192, AccessFlags::LOCAL_WRITE).unwrap();
    assert_eq!(b.lkey() >> 8, 1, "index of the failed registration reused");
    assert_eq!(
        b.mtt_base(),
        a.mtt_base() + 1,
        "MTT range of the failed registration reused"
    );
    let (ka, kb) = (a.lkey() & 0xFF, b.lkey() & 0xFF);
    drop(a);
    assert_eq!(
        cmd_index::INDEX.get(dev.cmds(cmd::DEREG_MR).last().unwrap()),
        0
    );
    let c = pd.reg_mr(4096, AccessFlags::LOCAL_WRITE).unwrap();
    assert_eq!(c.lkey() >> 8, 0, "index 0 reused");
    assert_ne!(
        c.lkey() & 0xFF,
        ka,
        "a new registration of the same index gets a new key"
    );
    assert_ne!(kb, ka);
}

#[test]
fn mr_bounds_and_sge() {
    let s = setup();
    let mr = s.pd.reg_mr(100, AccessFlags::LOCAL_WRITE).unwrap();
    assert!(mr.write(90, &[0; 10]).is_ok());
    assert!(matches!(
        mr.write(91, &[0; 10]),
        Err(Error::OutOfBounds {
            offset: 91,
            len: 10,
            mr_len: 100,
            ..
        })
    ));
    assert!(matches!(
        mr.read(u64::MAX, &mut [0; 2]),
        Err(Error::OutOfBounds { .. })
    ));
    assert_eq!(
        mr.sge(10, 20).unwrap(),
        Sge {
            addr: mr.addr() + 10,
            len: 20,
            lkey: mr.lkey()
        }
    );
    assert!(mr.sge(90, 11).is_err());
    assert_eq!(mr.sge_all().len, 100);
}

// ------------------------------------------------------------------ QP creation and state machine

#[test]
fn create_qp_image() {
    let s = setup();
    let rcq = s.ctx.create_cq(8).unwrap();
    let qp =
        s.pd.create_qp(&QpInitAttr {
            send_cq: &s.cq,
            recv_cq: &rcq,
            max_send_wr: 5,
            max_recv_wr: 1,
        })
        .unwrap();
    assert_eq!((qp.send_queue_depth(), qp.recv_queue_depth()), (8, 2));
    assert_eq!(qp.state(), QpState::Reset);
    let img = s.dev.cmds(cmd::CREATE_QP)[0];
    assert_eq!(cmd_create_qp::QPN.get(&img), u64::from(qp.qpn()));
    assert_eq!(cmd_create_qp::SQ_BASE.get(&img), qp.send_queue_addr());
    assert_eq!(cmd_create_qp::RQ_BASE.get(&img), qp.recv_queue_addr());
    assert_eq!(cmd_create_qp::SQ_BASE.get(&img) % 128, 0);
    assert_eq!(cmd_create_qp::RQ_BASE.get(&img) % 64, 0);
    assert_eq!(cmd_create_qp::LOG_SQ_SIZE.get(&img), 3);
    assert_eq!(cmd_create_qp::LOG_RQ_SIZE.get(&img), 1);
    assert_eq!(cmd_create_qp::PDN.get(&img), u64::from(s.pd.pdn()));
    assert_eq!(cmd_create_qp::SEND_CQN.get(&img), u64::from(s.cq.cqn()));
    assert_eq!(cmd_create_qp::RECV_CQN.get(&img), u64::from(rcq.cqn()));
    let too_big = QpInitAttr {
        send_cq: &s.cq,
        recv_cq: &s.cq,
        max_send_wr: 32769,
        max_recv_wr: 1,
    };
    assert!(matches!(
        s.pd.create_qp(&too_big),
        Err(Error::InvalidArgument {
            what: "max_send_wr",
            ..
        })
    ));
}

fn legal(from: QpState, to: QpState) -> bool {
    use QpState::*;
    matches!(
        (from, to),
        (_, Reset)
            | (_, Err)
            | (Reset, Init)
            | (Init, Init)
            | (Init, Rtr)
            | (Rtr, Rts)
            | (Rts, Rts)
    )
}

#[test]
fn transition_table_all_pairs() {
    let s = setup();
    for from in QpState::ALL {
        for to in QpState::ALL {
            let qp = s.qp_in(from);
            let (required, _) = transition_rule(from, to).unwrap_or_default();
            assert_eq!(
                transition_rule(from, to).is_some(),
                legal(from, to),
                "{from} -> {to}"
            );
            let before = s.dev.ncmds();
            let r = qp.modify(&attr_with_mask(to, required));
            if legal(from, to) {
                r.unwrap_or_else(|e| panic!("{from} -> {to}: {e}"));
                assert_eq!(qp.state(), to);
                let img = s.dev.cmds(cmd::MODIFY_QP).pop().unwrap();
                assert_eq!(cmd_qp_args::STATE.get(&img), u64::from(to.code()));
                assert_eq!(
                    cmd_qp_args::ATTR_MASK.get(&img),
                    u64::from((required | QpAttrMask::STATE).bits())
                );
            } else {
                match r {
                    Err(Error::InvalidTransition {
                        qpn,
                        from: f,
                        to: t,
                    }) => {
                        assert_eq!((qpn, f, t), (qp.qpn(), from, to))
                    }
                    other => panic!("{from} -> {to}: {other:?}"),
                }
                assert_eq!(
                    s.dev.ncmds(),
                    before,
                    "{from} -> {to}: rejected before touching the device"
                );
                assert_eq!(qp.state(), from);
            }
        }
    }
}

#[test]
fn missing_required_attributes_each_bit() {
    let s = setup();
    let mut checked = 0;
    for from in QpState::ALL {
        for to in QpState::ALL {
            let Some((required, _)) = transition_rule(from, to) else {
                continue;
            };
            for bit in required.iter() {
                let qp = s.qp_in(from);
                let before = s.dev.ncmds();
                match qp.modify(&attr_with_mask(to, required - bit)) {
                    Err(Error::MissingAttributes {
                        missing,
                        from: f,
                        to: t,
                        ..
                    }) => {
                        assert_eq!((missing, f, t), (bit, from, to))
                    }
                    other => panic!("{from} -> {to} without {bit:?}: {other:?}"),
                }
                assert_eq!(s.dev.ncmds(), before);
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 3 + 6 + 5, "INIT, RTR and RTS required attributes");
}

#[test]
fn unsupported_attributes_rejected() {
    let s = setup();
    let all_bits = QpAttrMask::all() - QpAttrMask::STATE;
    for from in QpState::ALL {
        for to in QpState::ALL {
            let Some((required, optional)) = transition_rule(from, to) else {
                continue;
            };
            for bit in (all_bits - required - optional).iter() {
                let qp = s.qp_in(from);
                match qp.modify(&attr_with_mask(to, required | bit)) {
                    Err(Error::UnsupportedAttributes { extra, .. }) => assert_eq!(extra, bit),
                    other => panic!("{from} -> {to} with {bit:?}: {other:?}"),
                }
            }
            // Optional attributes are accepted.
            if !optional.is_empty() {
                s.qp_in(from)
                    .modify(&attr_with_mask(to, required | optional))
                    .unwrap();
            }
        }
    }
}

#[test]
fn attribute_values_checked() {
    let s = setup();
    let init = s.qp_in(QpState::Init);
    let rtr = s.qp_in(QpState::Rtr);
    let cases: Vec<(&QueuePair, QpAttr, &str)> = vec![
        (
            &init,
            full_attr(QpState::Rtr).with_max_dest_rd_atomic(17),
            "max_dest_rd_atomic",
        ),
        (
            &init,
            full_attr(QpState::Rtr).with_min_rnr_timer(32),
            "min_rnr_timer",
        ),
        (
            &init,
            full_attr(QpState::Rtr).with_rq_psn(1 << 24),
            "rq_psn",
        ),
        (
            &init,
            full_attr(QpState::Rtr).with_dest_qpn(1 << 24),
            "dest_qpn",
        ),
        (
            &init,
            full_attr(QpState::Rtr).with_pkey_index(1),
            "pkey_index",
        ),
        (
            &rtr,
            full_attr(QpState::Rts).with_max_rd_atomic(17),
            "max_rd_atomic",
        ),
        (&rtr, full_attr(QpState::Rts).with_retry_cnt(8), "retry_cnt"),
        (&rtr, full_attr(QpState::Rts).with_rnr_retry(8), "rnr_retry"),
        (&rtr, full_attr(QpState::Rts).with_timeout(32), "timeout"),
        (&rtr, full_attr(QpState::Rts).with_sq_psn(1 << 24), "sq_psn"),
    ];
    let before = s.dev.ncmds();
    for (qp, attr, name) in cases {
        match qp.modify(&attr) {
            Err(Error::InvalidAttribute { attr, .. }) => assert_eq!(attr, name),
            other => panic!("{name}: {other:?}"),
        }
    }
    let reset = s.qp_in(QpState::Reset);
    let bad_port = full_attr(QpState::Init).with_port(2);
    assert!(matches!(
        reset.modify(&bad_port),
        Err(Error::InvalidAttribute { attr: "port", .. })
    ));
    assert_eq!(
        s.dev.ncmds(),
        before + 1,
        "only the CREATE_QP of `reset` reached the device"
    );
    // The limits themselves are accepted.
    init.modify(
        &full_attr(QpState::Rtr)
            .with_max_dest_rd_atomic(16)
            .with_rq_psn(0xFF_FFFF),
    )
    .unwrap();
}

#[test]
fn modify_images_for_the_convenience_transitions() {
    let s = setup();
    let qp = s.qp(4, 4);
    let access = AccessFlags::REMOTE_WRITE | AccessFlags::REMOTE_READ;
    qp.to_init(access).unwrap();
    qp.to_rtr(&rtr_attr()).unwrap();
    qp.to_rts(&rts_attr()).unwrap();
    let imgs = s.dev.cmds(cmd::MODIFY_QP);
    let [init, rtr, rts] = [imgs[0], imgs[1], imgs[2]];
    for img in [&init, &rtr, &rts] {
        assert_eq!(cmd_qp_args::QPN.get(img), u64::from(qp.qpn()));
    }
    assert_eq!(
        cmd_qp_args::ATTR_MASK.get(&init),
        u64::from(qp_attr::STATE | qp_attr::PKEY_INDEX | qp_attr::PORT | qp_attr::ACCESS_FLAGS)
    );
    assert_eq!(
        cmd_qp_args::STATE.get(&init),
        u64::from(QpState::Init.code())
    );
    assert_eq!(cmd_qp_args::ACCESS.get(&init), u64::from(access.bits()));

    let r = rtr_attr();
    assert_eq!(
        cmd_qp_args::ATTR_MASK.get(&rtr),
        u64::from(
            qp_attr::STATE
                | qp_attr::AV
                | qp_attr::PATH_MTU
                | qp_attr::DEST_QPN
                | qp_attr::RQ_PSN
                | qp_attr::MAX_DEST_RD_ATOMIC
                | qp_attr::MIN_RNR_TIMER
        )
    );
    assert_eq!(cmd_qp_args::STATE.get(&rtr), u64::from(QpState::Rtr.code()));
    assert_eq!(cmd_qp_args::DEST_QPN.get(&rtr), u64::from(r.dest_qpn));
    assert_eq!(cmd_qp_args::RQ_PSN.get(&rtr), u64::from(r.rq_psn));
    assert_eq!(
        cmd_qp_args::PATH_MTU.get(&rtr),
        u64::from(Mtu::Mtu1024.code())
    );
    assert_eq!(cmd_qp_args::DEST_MAC.get(&rtr), 0x02_11_22_33_44_55);
    assert_eq!(cmd_qp_args::DEST_IP.get(&rtr), 0x0A01_0203);
    assert_eq!(cmd_qp_args::MAX_DEST_RD_ATOMIC.get(&rtr), 16);
    assert_eq!(cmd_qp_args::MIN_RNR_TIMER.get(&rtr), 31);
    assert_eq!(
        cmd_qp_args::SQ_PSN.get(&rtr),
        0,
        "fields outside the mask stay 0"
    );

    let t = rts_attr();
    assert_eq!(
        cmd_qp_args::ATTR_MASK.get(&rts),
        u64::from(
            qp_attr::STATE
                | qp_attr::SQ_PSN
                | qp_attr::TIMEOUT
                | qp_attr::RETRY_CNT
                | qp_attr::RNR_RETRY
                | qp_attr::MAX_QP_RD_ATOMIC
        )
    );
    assert_eq!(cmd_qp_args::SQ_PSN.get(&rts), u64::from(t.sq_psn));
    assert_eq!(cmd_qp_args::TIMEOUT.get(&rts), u64::from(t.timeout));
    assert_eq!(cmd_qp_args::RETRY_CNT.get(&rts), u64::from(t.retry_cnt));
    assert_eq!(cmd_qp_args::RNR_RETRY.get(&rts), u64::from(t.rnr_retry));
    assert_eq!(
        cmd_qp_args::MAX_RD_ATOMIC.get(&rts),
        u64::from(t.max_rd_atomic)
    );
    assert_eq!(qp.state(), QpState::Rts);
    qp.to_err().unwrap();
    qp.reset().unwrap();
    let imgs = s.dev.cmds(cmd::MODIFY_QP);
    assert_eq!(
        cmd_qp_args::ATTR_MASK.get(&imgs[3]),
        u64::from(qp_attr::STATE)
    );
    assert_eq!(
        cmd_qp_args::STATE.get(&imgs[3]),
        u64::from(QpState::Err.code())
    );
    assert_eq!(
        cmd_qp_args::STATE.get(&imgs[4]),
        u64::from(QpState::Reset.code())
    );
}

#[test]
fn device_rejection_maps_to_transition_rejected() {
    let s = setup();
    let qp = s.qp_in(QpState::Rts);
    for (code, status) in [
        (cmd_status::BAD_STATE, CommandStatus::BadState),
        (cmd_status::BAD_PARAM, CommandStatus::BadParam),
    ] {
        s.dev.status_script.borrow_mut().push_back(code);
        match qp.modify(&QpAttr::new(QpState::Rts).with_min_rnr_timer(3)) {
            Err(Error::TransitionRejected {
                qpn,
                from: QpState::Rts,
                to: QpState::Rts,
                status: st,
            }) => {
                assert_eq!((qpn, st), (qp.qpn(), status))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(qp.state(), QpState::Rts, "state unchanged on rejection");
    }
    s.dev
        .status_script
        .borrow_mut()
        .push_back(cmd_status::BAD_INDEX);
    assert!(matches!(
        qp.to_err(),
        Err(Error::CommandFailed {
            status: CommandStatus::BadIndex,
            ..
        })
    ));
    // modify_unchecked sends what the driver would refuse.
    let before = s.dev.ncmds();
    s.dev
        .status_script
        .borrow_mut()
        .push_back(cmd_status::BAD_STATE);
    assert!(matches!(
        qp.modify_unchecked(&QpAttr::new(QpState::Init)),
        Err(Error::TransitionRejected { .. })
    ));
    assert_eq!(s.dev.ncmds(), before + 1);
}

#[test]
fn query_decodes_outputs_and_refreshes_state() {
    let s = setup();
    let qp = s.qp_in(QpState::Rts);
    let out0 = u64::from(QpState::Err.code()) | 0x12_3456 << 8 | 0xAB_CDEF << 32;
    let out1 = 0x1111 | 0x2222 << 16 | 0x3333 << 32 | 0x4444 << 48;
    s.dev.out_script.borrow_mut().push_back((out0, out1));
    let info = qp.query().unwrap();
    assert_eq!(
        info,
        QpInfo {
            state: QpState::Err,
            sq_psn: 0x12_3456,
            rq_psn: 0xAB_CDEF,
            sq_ci: 0x1111,
            comp_ci: 0x2222,
            rq_ci: 0x3333,
            sq_pi: 0x4444
        }
    );
    assert_eq!(
        cmd_index::INDEX.get(&s.dev.cmds(cmd::QUERY_QP)[0]),
        u64::from(qp.qpn())
    );
    assert_eq!(qp.state(), QpState::Err);
    s.dev.out_script.borrow_mut().push_back((5, 0));
    assert!(matches!(
        qp.query(),
        Err(Error::UnexpectedValue { value: 5, .. })
    ));
}

// ------------------------------------------------------------------ posting

fn sges(mr: &Mr, n: usize) -> Vec<Sge> {
    (0..n)
        .map(|i| Sge {
            addr: mr.addr() + 16 * i as u64,
            len: 8 + i as u32,
            lkey: mr.lkey(),
        })
        .collect()
}

#[test]
fn send_wqe_encoding_every_opcode() {
    let s = setup();
    let qp = s.qp_in(QpState::Rts);
    let mr = s.pd.reg_mr(4096, AccessFlags::LOCAL_WRITE).unwrap();
    let (ra, rk) = (0xDEAD_BEEF_0000_1000u64, 0xABCD_EF01u32);
    let ops = [
        (WrOpcode::Send, wr_opcode::SEND),
        (WrOpcode::SendWithImm(0x1234_5678), wr_opcode::SEND_WITH_IMM),
        (
            WrOpcode::Write {
                remote_addr: ra,
                rkey: rk,
            },
            wr_opcode::RDMA_WRITE,
        ),
        (
            WrOpcode::WriteWithImm {
                remote_addr: ra,
                rkey: rk,
                imm: 0x9ABC_DEF0,
            },
            wr_opcode::RDMA_WRITE_WITH_IMM,
        ),
        (
            WrOpcode::Read {
                remote_addr: ra,
                rkey: rk,
            },
            wr_opcode::RDMA_READ,
        ),
        (
            WrOpcode::CompareSwap {
                remote_addr: ra,
                rkey: rk,
                compare: 0x1111,
                swap: 0x2222,
            },
            wr_opcode::ATOMIC_CMP_AND_SWP,
        ),
        (
            WrOpcode::FetchAdd {
                remote_addr: ra,
                rkey: rk,
                add: 0x3333,
            },
            wr_opcode::ATOMIC_FETCH_AND_ADD,
        ),
    ];
    for (i, (op, code)) in ops.into_iter().enumerate() {
        let sgl = if op.is_atomic() {
            vec![mr.sge(8, 8).unwrap()]
        } else {
            sges(&mr, i % 5)
        };
        let wr = SendWr {
            wr_id: 0x100 + i as u64,
            opcode: op,
            sgl: sgl.clone(),
            signaled: i % 2 == 0,
            solicited: i % 3 == 0,
            fence: i % 7 == 0,
            inline_data: None,
        };
        qp.post_send(&wr).unwrap();
        let slot = (i as u64) % u64::from(qp.send_queue_depth());
        let b = s.dev.peek(
            qp.send_queue_addr() + slot * send_wqe::SIZE as u64,
            send_wqe::SIZE,
        );
        assert_eq!(send_wqe::WR_ID.get(&b), 0x100 + i as u64);
        assert_eq!(send_wqe::OPCODE.get(&b), u64::from(code), "{op:?}");
        let mut flags = 0;
        if wr.signaled {
            flags |= wqe_flag::SIGNALED;
        }
        if wr.solicited {
            flags |= wqe_flag::SOLICITED;
        }
        if wr.fence {
            flags |= wqe_flag::FENCE;
        }
        assert_eq!(send_wqe::FLAGS.get(&b), u64::from(flags));
        assert_eq!(send_wqe::NUM_SGE.get(&b), sgl.len() as u64);
        let (imm, rem, cmp, swp) = match op {
            WrOpcode::Send => (0, None, 0, 0),
            WrOpcode::SendWithImm(imm) => (imm, None, 0, 0),
            WrOpcode::Write { .. } | WrOpcode::Read { .. } => (0, Some((ra, rk)), 0, 0),
            WrOpcode::WriteWithImm { imm, .. } => (imm, Some((ra, rk)), 0, 0),
            WrOpcode::CompareSwap { compare, swap, .. } => (0, Some((ra, rk)), compare, swap),
            WrOpcode::FetchAdd { add, .. } => (0, Some((ra, rk)), add, 0),
        };
        assert_eq!(send_wqe::IMM.get(&b), u64::from(imm), "{op:?}");
        assert_eq!(
            send_wqe::REMOTE_ADDR.get(&b),
            rem.map_or(0, |r| r.0),
            "{op:?}"
        );
        assert_eq!(
            send_wqe::RKEY.get(&b),
            rem.map_or(0, |r| u64::from(r.1)),
            "{op:?}"
        );
        assert_eq!(send_wqe::COMPARE_ADD.get(&b), cmp, "{op:?}");
        assert_eq!(send_wqe::SWAP.get(&b), swp, "{op:?}");
        for (k, [addr, len, lkey]) in SEND_SGE_FIELDS.iter().enumerate() {
            let want = sgl.get(k).copied().unwrap_or_default();
            assert_eq!(
                (addr.get(&b), len.get(&b) as u32, lkey.get(&b) as u32),
                (want.addr, want.len, want.lkey)
            );
        }
        // Doorbell: the new producer index on the QP's SQ_PI doorbell.
        assert_eq!(
            last_write(&s.dev),
            (
                Context::qp_doorbell(qp.qpn()) + params::DB_SQ_PI,
                i as u64 + 1
            )
        );
        // Free the slot again (the 4-deep ring would fill otherwise).
        push_cqe(&s.dev, &s.cq, i as u32, &send_wc(qp.qpn(), i as u16, 0));
        assert_eq!(s.cq.poll_one().unwrap().unwrap().wqe_idx, i as u16);
    }
    assert_eq!(
        Context::qp_doorbell(3),
        params::DB_QP_BASE + (3 << params::DB_PAGE_SHIFT)
    );
}

#[test]
fn recv_wqe_encoding() {
    let s = setup();
    let qp = s.qp_in(QpState::Init);
    let mr = s.pd.reg_mr(4096, AccessFlags::LOCAL_WRITE).unwrap();
    for n in 0..=3 {
        let wr = RecvWr {
            wr_id: 0xF00 + n as u64,
            sgl: sges(&mr, n),
        };
        qp.post_recv(&wr).unwrap();
        let b = s.dev.peek(
            qp.recv_queue_addr() + n as u64 * recv_wqe::SIZE as u64,
            recv_wqe::SIZE,
        );
        assert_eq!(recv_wqe::WR_ID.get(&b), 0xF00 + n as u64);
        assert_eq!(recv_wqe::NUM_SGE.get(&b), n as u64);
        for (k, [addr, len, lkey]) in RECV_SGE_FIELDS.iter().enumerate() {
            let want = wr.sgl.get(k).copied().unwrap_or_default();
            assert_eq!(
                (addr.get(&b), len.get(&b) as u32, lkey.get(&b) as u32),
                (want.addr, want.len, want.lkey)
            );
        }
        assert_eq!(
            last_write(&s.dev),
            (
                Context::qp_doorbell(qp.qpn()) + params::DB_RQ_PI,
                n as u64 + 1
            )
        );
    }
}

#[test]
fn post_requires_the_right_state() {
    let s = setup();
    let wr = SendWr::new(1, WrOpcode::Send, vec![]);
    let rwr = RecvWr {
        wr_id: 2,
        sgl: vec![],
    };
    for state in QpState::ALL {
        let qp = s.qp_in(state);
        let writes = s.dev.writes.borrow().len();
        let send = qp.post_send(&wr);
        let recv = qp.post_recv(&rwr);
        let send_ok = matches!(state, QpState::Rts | QpState::Err);
        let recv_ok = state != QpState::Reset;
        assert_eq!(send.is_ok(), send_ok, "post_send in {state}: {send:?}");
        assert_eq!(recv.is_ok(), recv_ok, "post_recv in {state}: {recv:?}");
        if !send_ok {
            assert!(
                matches!(send, Err(Error::QpNotReady { queue: QueueKind::Send, state: st, .. }) if st == state)
            );
        }
        if !recv_ok {
            assert!(matches!(
                recv,
                Err(Error::QpNotReady {
                    queue: QueueKind::Recv,
                    ..
                })
            ));
            assert_eq!(
                s.dev.writes.borrow().len(),
                writes,
                "no doorbell when refused"
            );
        }
    }
}

#[test]
fn too_many_sges_and_bad_atomics() {
    let s = setup();
    let qp = s.qp_in(QpState::Rts);
    let mr = s.pd.reg_mr(4096, AccessFlags::LOCAL_WRITE).unwrap();
    let wr = SendWr::new(1, WrOpcode::Send, sges(&mr, 5));
    assert!(matches!(
        qp.post_send(&wr),
        Err(Error::TooManySges {
            queue: QueueKind::Send,
            given: 5,
            max: 4,
            ..
        })
    ));
    let rwr = RecvWr {
        wr_id: 1,
        sgl: sges(&mr, 4),
    };
    assert!(matches!(
        qp.post_recv(&rwr),
        Err(Error::TooManySges {
            queue: QueueKind::Recv,
            given: 4,
            max: 3,
            ..
        })
    ));
    let fa = WrOpcode::FetchAdd {
        remote_addr: 0,
        rkey: 0,
        add: 1,
    };
    for sgl in [
        vec![],
        vec![mr.sge(0, 4).unwrap()],
        vec![mr.sge(0, 8).unwrap(); 2],
    ] {
        assert!(matches!(
            qp.post_send(&SendWr::new(9, fa, sgl)),
            Err(Error::InvalidWorkRequest { wr_id: 9, .. })
        ));
    }
    let huge = vec![
        Sge {
            addr: 0,
            len: u32::MAX,
            lkey: 0
        };
        2
    ];
    assert!(matches!(
        qp.post_send(&SendWr::new(3, WrOpcode::Send, huge)),
        Err(Error::InvalidWorkRequest { .. })
    ));
    // A list is all-or-nothing: a bad WR in it posts none.
    let good = SendWr::new(1, WrOpcode::Send, vec![]);
    let bad = SendWr::new(2, fa, vec![]);
    assert!(qp.post_send_list(&[good.clone(), bad]).is_err());
    assert_eq!(qp.send_outstanding(), 0);
    qp.post_send_list(&[good.clone(), good]).unwrap();
    assert_eq!(qp.send_outstanding(), 2);
    assert_eq!(last_write(&s.dev).1, 2, "one doorbell for the list");
}

#[test]
fn send_queue_full_and_freed_by_completions() {
    let s = setup();
    let qp = s.qp_in(QpState::Rts);
    assert_eq!(qp.send_queue_depth(), 4);
    let wr =
        |id: u64, signaled: bool| SendWr::new(id, WrOpcode::Send, vec![]).with_signaled(signaled);
    for i in 0..4 {
        qp.post_send(&wr(i, i == 2)).unwrap(); // only WQE 2 signaled
    }
    match qp.post_send(&wr(9, true)) {
        Err(Error::QueueFull {
            qpn,
            queue: QueueKind::Send,
            depth: 4,
        }) => assert_eq!(qpn, qp.qpn()),
        other => panic!("{other:?}"),
    }
    assert!(
        qp.post_send_raw(&[0; send_wqe::SIZE]).is_err(),
        "raw posts never overrun the ring either"
    );
    // The CQE of WQE 2 also retires the unsignaled WQEs 0 and 1.
    push_cqe(&s.dev, &s.cq, 0, &send_wc(qp.qpn(), 2, 2));
    assert_eq!(s.cq.poll_one().unwrap().unwrap().wr_id, 2);
    assert_eq!(qp.send_outstanding(), 1);
    for i in 0..3 {
        qp.post_send(&wr(10 + i, true)).unwrap();
    }
    assert!(matches!(
        qp.post_send(&wr(20, true)),
        Err(Error::QueueFull { .. })
    ));
    // The ring wrapped: WQE 4 sits in slot 0.
    let b = s.dev.peek(qp.send_queue_addr(), send_wqe::SIZE);
    assert_eq!(send_wqe::WR_ID.get(&b), 10);
    // A stale CQE (index outside the outstanding window) frees nothing.
    push_cqe(&s.dev, &s.cq, 1, &send_wc(qp.qpn(), 1, 0));
    s.cq.poll_one().unwrap().unwrap();
    assert_eq!(qp.send_outstanding(), 4);
}

#[test]
fn recv_queue_full_and_freed_by_completions() {
    let s = setup();
    let qp = s.qp(2, 2);
    qp.to_init(AccessFlags::empty()).unwrap();
    let rwr = |id| RecvWr {
        wr_id: id,
        sgl: vec![],
    };
    qp.post_recv(&rwr(1)).unwrap();
    qp.post_recv(&rwr(2)).unwrap();
    assert!(matches!(
        qp.post_recv(&rwr(3)),
        Err(Error::QueueFull {
            queue: QueueKind::Recv,
            depth: 2,
            ..
        })
    ));
    push_cqe(&s.dev, &s.cq, 0, &recv_wc(qp.qpn(), 0, 1));
    assert_eq!(s.cq.poll_one().unwrap().unwrap().opcode, WcOpcode::Recv);
    assert_eq!((qp.recv_outstanding(), qp.send_outstanding()), (1, 0));
    qp.post_recv(&rwr(3)).unwrap();
    // A WRITE_WITH_IMM consumes a receive too.
    let mut wc = recv_wc(qp.qpn(), 1, 2);
    wc.opcode = WcOpcode::RecvRdmaWithImm;
    push_cqe(&s.dev, &s.cq, 1, &wc);
    s.cq.poll_one().unwrap().unwrap();
    assert_eq!(qp.recv_outstanding(), 1);
}

#[test]
fn reset_zeroes_queue_indices() {
    let s = setup();
    let qp = s.qp_in(QpState::Rts);
    qp.post_send(&SendWr::new(1, WrOpcode::Send, vec![]))
        .unwrap();
    qp.post_recv(&RecvWr {
        wr_id: 1,
        sgl: vec![],
    })
    .unwrap();
    qp.reset().unwrap();
    assert_eq!((qp.send_outstanding(), qp.recv_outstanding()), (0, 0));
    qp.to_init(AccessFlags::empty()).unwrap();
    qp.post_recv(&RecvWr {
        wr_id: 1,
        sgl: vec![],
    })
    .unwrap();
    assert_eq!(
        last_write(&s.dev),
        (Context::qp_doorbell(qp.qpn()) + params::DB_RQ_PI, 1)
    );
}

#[test]
fn post_send_raw_bypasses_checks() {
    let s = setup();
    let qp = s.qp_in(QpState::Reset);
    let mut wqe = [0xA5u8; send_wqe::SIZE];
    send_wqe::OPCODE.set(&mut wqe, 0x7F);
    qp.post_send_raw(&wqe).unwrap();
    assert_eq!(
        s.dev.peek(qp.send_queue_addr(), send_wqe::SIZE),
        wqe.to_vec()
    );
    assert_eq!(
        last_write(&s.dev),
        (Context::qp_doorbell(qp.qpn()) + params::DB_SQ_PI, 1)
    );
    s.ctx.raw_mmio_write(0x1234_5678, 9);
    assert_eq!(last_write(&s.dev), (0x1234_5678, 9));
}

// ------------------------------------------------------------------ completions

#[test]
fn cqe_decode_all_fields() {
    let mut b = [0u8; cqe::SIZE];
    cqe::WR_ID.set(&mut b, 0x0123_4567_89AB_CDEF);
    cqe::BYTE_LEN.set(&mut b, 0x8000_0001);
    cqe::IMM.set(&mut b, 0xCAFE_F00D);
    cqe::QPN.set(&mut b, 0xAB_CDEF);
    cqe::OPCODE.set(&mut b, u64::from(wc_opcode::RECV_RDMA_WITH_IMM));
    cqe::STATUS.set(&mut b, u64::from(wc_status::REM_ACCESS_ERR));
    cqe::FLAGS.set(&mut b, u64::from(rnic_regs::cqe_flag::WITH_IMM));
    cqe::OWNER.set(&mut b, 1);
    cqe::WQE_IDX.set(&mut b, 0xFFFE);
    let wc = WorkCompletion::decode(&b);
    assert_eq!(
        wc,
        WorkCompletion {
            wr_id: 0x0123_4567_89AB_CDEF,
            status: WcStatus::RemAccessErr,
            opcode: WcOpcode::RecvRdmaWithImm,
            byte_len: 0x8000_0001,
            imm: Some(0xCAFE_F00D),
            qpn: 0xAB_CDEF,
            wqe_idx: 0xFFFE,
        }
    );
    assert_eq!(wc.encode(true), b);
    // Without WITH_IMM the imm field is not reported.
    cqe::FLAGS.set(&mut b, 0);
    assert_eq!(WorkCompletion::decode(&b).imm, None);
    // Every defined status and opcode round-trips; unknown ones are kept.
    for (_, v) in wc_status::ALL {
        assert_eq!(WcStatus::from_code(*v).code(), *v);
        assert!(!matches!(WcStatus::from_code(*v), WcStatus::Other(_)));
    }
    for (_, v) in wc_opcode::ALL {
        assert_eq!(WcOpcode::from_code(*v).code(), *v);
        assert!(!matches!(WcOpcode::from_code(*v), WcOpcode::Other(_)));
    }
    assert_eq!(WcStatus::from_code(0x99), WcStatus::Other(0x99));
    assert_eq!(WcOpcode::from_code(0x42), WcOpcode::Other(0x42));
    assert_eq!(Command::from_code(cmd::DESTROY_QP), Command::DestroyQp);
    for (_, v) in cmd::ALL {
        assert_eq!(Command::from_code(*v).code(), *v);
        assert!(!matches!(Command::from_code(*v), Command::Other(_)));
    }
}

#[test]
fn cq_owner_bit_wraps_over_two_passes() {
    let (dev, ctx) = open();
    let cq = ctx.create_cq(4).unwrap();
    let db = Context::cq_doorbell(cq.cqn()) + params::DB_CQ_CI;
    assert_eq!(
        cq.poll_one().unwrap(),
        None,
        "zeroed ring: owner 0 is not new on the first pass"
    );
    let mut wcs = [WorkCompletion::default(); 8];
    let mut pi = 0u32;
    let mut ci = 0u32;
    for pass in 0..3 {
        // Fill three slots, poll two, then fill to wrap and poll the rest.
        for _ in 0..3 {
            push_cqe(&dev, &cq, pi, &send_wc(2, pi as u16, u64::from(pi)));
            pi += 1;
        }
        let n = cq.poll(&mut wcs[..2]).unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            wcs[..2].iter().map(|w| w.wr_id).collect::<Vec<_>>(),
            vec![u64::from(ci), u64::from(ci) + 1]
        );
        ci += 2;
        assert_eq!(last_write(&dev), (db, u64::from(ci)), "pass {pass}");
        for _ in 0..3 {
            push_cqe(&dev, &cq, pi, &send_wc(2, pi as u16, u64::from(pi)));
            pi += 1;
        }
        let n = cq.poll(&mut wcs).unwrap();
        assert_eq!(n, 4, "pass {pass}");
        assert_eq!(
            wcs[..4].iter().map(|w| w.wr_id).collect::<Vec<_>>(),
            (ci..ci + 4).map(u64::from).collect::<Vec<_>>()
        );
        ci += 4;
        assert_eq!(cq.consumer_index(), ci);
        assert_eq!(last_write(&dev), (db, u64::from(ci)));
        // Stale entries from the previous pass are not new.
        let writes = dev.writes.borrow().len();
        assert_eq!(cq.poll(&mut wcs).unwrap(), 0);
        assert_eq!(
            dev.writes.borrow().len(),
            writes,
            "no doorbell when nothing was consumed"
        );
    }
}

#[test]
fn cq_wait_progresses_and_times_out_with_partial_results() {
    let (dev, ctx) = open();
    let cq = ctx.create_cq(8).unwrap();
    for (call, pi) in [(3u32, 0u32), (7, 1)] {
        let wc = send_wc(2, pi as u16, 100 + u64::from(pi));
        let log = cq.depth().trailing_zeros();
        let owner = ((pi >> log) & 1) ^ 1 == 1;
        dev.progress_writes.borrow_mut().push((
            call,
            cq.ring_addr() + u64::from(pi) * 32,
            wc.encode(owner).to_vec(),
        ));
    }
    let wcs = cq.wait(2, 100).unwrap();
    assert_eq!(
        wcs.iter().map(|w| w.wr_id).collect::<Vec<_>>(),
        vec![100, 101]
    );
    assert_eq!(
        dev.progress_calls.get(),
        7,
        "stops progressing once satisfied"
    );
    push_cqe(&dev, &cq, 2, &send_wc(2, 2, 102));
    match cq.wait(3, 10) {
        Err(Error::CqTimeout {
            cqn,
            wanted: 3,
            completions,
            progress_calls: 10,
        }) => {
            assert_eq!(cqn, cq.cqn());
            assert_eq!(completions.len(), 1);
            assert_eq!(completions[0].wr_id, 102);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn cq_poll_keeps_completions_read_before_a_backend_error() {
    let (dev, ctx) = open();
    let cq = ctx.create_cq(4).unwrap();
    for pi in 0..3 {
        push_cqe(&dev, &cq, pi, &send_wc(2, pi as u16, u64::from(pi)));
    }
    dev.fail_read_at
        .set(Some(cq.ring_addr() + 2 * cqe::SIZE as u64));
    let mut wcs = [WorkCompletion::default(); 4];
    assert_eq!(cq.poll(&mut wcs).unwrap(), 2);
    match cq.poll(&mut wcs) {
        Err(Error::Device {
            during: "reading a CQE",
            source: DeviceError::Simulation(_),
        }) => {}
        other => panic!("{other:?}"),
    }
    dev.fail_read_at.set(None);
    assert_eq!(cq.poll(&mut wcs).unwrap(), 1);
    assert_eq!(wcs[0].wr_id, 2);
}

#[test]
fn arm_and_wait_event() {
    let (dev, ctx) = open();
    let cq = ctx.create_cq_with_vector(4, 3).unwrap();
    let other = ctx.create_cq_with_vector(4, 5).unwrap();
    cq.arm();
    assert_eq!(
        last_write(&dev),
        (Context::cq_doorbell(cq.cqn()) + params::DB_CQ_ARM, 1)
    );
    dev.progress_irqs.borrow_mut().extend([(2, 5), (4, 3)]);
    cq.wait_event(10).unwrap();
    assert_eq!(dev.progress_calls.get(), 4);
    // Vector 5 arrived meanwhile and is kept for its own waiter.
    other.wait_event(0).unwrap();
    match cq.wait_event(3) {
        Err(Error::InterruptTimeout {
            vector: 3,
            progress_calls: 3,
            ..
        }) => {}
        r => panic!("{r:?}"),
    }
}

#[test]
fn error_completion_moves_cached_state_to_err() {
    let s = setup();
    let qp = s.qp_in(QpState::Rts);
    qp.post_send(&SendWr::new(7, WrOpcode::Send, vec![]))
        .unwrap();
    let wc = WorkCompletion {
        status: WcStatus::RetryExcErr,
        ..send_wc(qp.qpn(), 0, 7)
    };
    push_cqe(&s.dev, &s.cq, 0, &wc);
    assert_eq!(
        s.cq.poll_one().unwrap().unwrap().status,
        WcStatus::RetryExcErr
    );
    assert_eq!(qp.state(), QpState::Err);
    // RTS -> RTS is now refused by the driver; ERR -> RESET is fine.
    assert!(matches!(
        qp.modify(&QpAttr::new(QpState::Rts)),
        Err(Error::InvalidTransition {
            from: QpState::Err,
            ..
        })
    ));
    qp.reset().unwrap();
}

#[test]
fn drop_destroys_everything_and_frees_indices() {
    let s = setup();
    let qp = s.qp_in(QpState::Rts);
    let qpn = qp.qpn();
    let mr = s.pd.reg_mr(3 * 4096, AccessFlags::LOCAL_WRITE).unwrap();
    let (mr_index, mtt) = (mr.lkey() >> 8, mr.mtt_base());
    match s.cq.destroy() {
        // The QP holds it twice: as send CQ and as receive CQ.
        Err(Error::InUse {
            object: Object::Cq(_),
            users: 2,
        }) => {}
        other => panic!("{other:?}"),
    }
    // The failed destroy consumed only the handle; the QP keeps the CQ alive.
    assert!(s.dev.cmds(cmd::DESTROY_CQ).is_empty());
    drop(qp);
    assert_eq!(
        cmd_index::INDEX.get(&s.dev.cmds(cmd::DESTROY_QP)[0]),
        u64::from(qpn)
    );
    assert_eq!(
        s.dev.cmds(cmd::DESTROY_CQ).len(),
        1,
        "CQ destroyed with its last user"
    );
    drop(mr);
    assert_eq!(
        cmd_index::INDEX.get(&s.dev.cmds(cmd::DEREG_MR)[0]),
        u64::from(mr_index)
    );
    let cq = s.ctx.create_cq(4).unwrap();
    let qp =
        s.pd.create_qp(&QpInitAttr {
            send_cq: &cq,
            recv_cq: &cq,
            max_send_wr: 2,
            max_recv_wr: 2,
        })
        .unwrap();
    assert_eq!(qp.qpn(), qpn, "QPN reused");
    let mr = s.pd.reg_mr(3 * 4096, AccessFlags::LOCAL_WRITE).unwrap();
    assert_eq!(
        (mr.lkey() >> 8, mr.mtt_base()),
        (mr_index, mtt),
        "MR index and MTT range reused"
    );
    qp.destroy().unwrap();
    assert_eq!(s.dev.cmds(cmd::DESTROY_QP).len(), 2);
    cq.destroy().unwrap();
    assert_eq!(s.dev.cmds(cmd::DESTROY_CQ).len(), 2);
}

#[test]
fn failed_destroy_leaks_the_index_instead_of_reusing_it() {
    let s = setup();
    let qp = s.qp(2, 2);
    let qpn = qp.qpn();
    s.dev
        .status_script
        .borrow_mut()
        .push_back(cmd_status::BAD_STATE);
    assert!(matches!(
        qp.destroy(),
        Err(Error::CommandFailed {
            command: Command::DestroyQp,
            ..
        })
    ));
    assert_ne!(
        s.qp(2, 2).qpn(),
        qpn,
        "the device may still hold the QPN: not reused"
    );
}

#[test]
fn counters_read_from_the_counter_block() {
    let (dev, ctx) = open();
    assert_eq!(ctx.counter(rnic_regs::counter::DB_BAD), 0x248);
    assert_eq!(
        *dev.reads.borrow().last().unwrap(),
        reg::COUNTERS + 8 * u64::from(rnic_regs::counter::DB_BAD)
    );
}

#[test]
fn endpoint_and_connect() {
    let s = setup();
    let qp = s.qp(4, 4);
    assert!(matches!(qp.endpoint(5), Err(Error::PortNotConfigured)));
    assert_eq!(s.ctx.port(), None);
    s.ctx.set_port(MAC_A, Ipv4Addr::new(10, 0, 0, 9)).unwrap();
    assert_eq!(s.ctx.port(), Some((MAC_A, Ipv4Addr::new(10, 0, 0, 9))));
    let ep = qp.endpoint(0x55).unwrap();
    assert_eq!(
        ep,
        Endpoint {
            qpn: qp.qpn(),
            mac: MAC_A,
            ip: Ipv4Addr::new(10, 0, 0, 9),
            psn: 0x55
        }
    );
    let remote = Endpoint {
        qpn: 77,
        mac: [2, 0, 0, 0, 0, 7],
        ip: Ipv4Addr::new(10, 0, 0, 7),
        psn: 0x66,
    };
    qp.connect(0x55, &remote, &ConnectAttr::default()).unwrap();
    assert_eq!(qp.state(), QpState::Rts);
    let imgs = s.dev.cmds(cmd::MODIFY_QP);
    assert_eq!(imgs.len(), 3);
    assert_eq!(cmd_qp_args::DEST_QPN.get(&imgs[1]), 77);
    assert_eq!(cmd_qp_args::RQ_PSN.get(&imgs[1]), 0x66);
    assert_eq!(cmd_qp_args::DEST_MAC.get(&imgs[1]), 0x02_00_00_00_00_07);
    assert_eq!(cmd_qp_args::DEST_IP.get(&imgs[1]), 0x0A00_0007);
    assert_eq!(cmd_qp_args::SQ_PSN.get(&imgs[2]), 0x55);
    assert_eq!(
        cmd_qp_args::ACCESS.get(&imgs[0]),
        u64::from(AccessFlags::all().bits())
    );
    // Already connected: connecting again is an invalid transition, checked before the device.
    assert!(matches!(
        qp.connect(0x55, &remote, &ConnectAttr::default()),
        Err(Error::InvalidTransition {
            from: QpState::Rts,
            to: QpState::Rtr,
            ..
        })
    ));
    assert_eq!(s.dev.cmds(cmd::MODIFY_QP).len(), 3);
}

// ------------------------------------------------------------------ properties

fn arb_opcode() -> impl proptest::strategy::Strategy<Value = WrOpcode> {
    use proptest::prelude::*;
    prop_oneof![
        Just(WrOpcode::Send),
        any::<u32>().prop_map(WrOpcode::SendWithImm),
        (any::<u64>(), any::<u32>())
            .prop_map(|(remote_addr, rkey)| WrOpcode::Write { remote_addr, rkey }),
        (any::<u64>(), any::<u32>(), any::<u32>()).prop_map(|(remote_addr, rkey, imm)| {
            WrOpcode::WriteWithImm {
                remote_addr,
                rkey,
                imm,
            }
        }),
        (any::<u64>(), any::<u32>())
            .prop_map(|(remote_addr, rkey)| WrOpcode::Read { remote_addr, rkey }),
        (any::<u64>(), any::<u32>(), any::<u64>(), any::<u64>()).prop_map(
            |(remote_addr, rkey, compare, swap)| WrOpcode::CompareSwap {
                remote_addr,
                rkey,
                compare,
                swap
            }
        ),
        (any::<u64>(), any::<u32>(), any::<u64>()).prop_map(|(remote_addr, rkey, add)| {
            WrOpcode::FetchAdd {
                remote_addr,
                rkey,
                add,
            }
        }),
    ]
}

/// Decode a send WQE back into a work request (the inverse of `encode_send_wqe`).
fn decode_send_wqe(b: &[u8]) -> SendWr {
    let ra = send_wqe::REMOTE_ADDR.get(b);
    let rk = send_wqe::RKEY.get(b) as u32;
    let imm = send_wqe::IMM.get(b) as u32;
    let ca = send_wqe::COMPARE_ADD.get(b);
    let opcode = match send_wqe::OPCODE.get(b) as u8 {
        wr_opcode::SEND => WrOpcode::Send,
        wr_opcode::SEND_WITH_IMM => WrOpcode::SendWithImm(imm),
        wr_opcode::RDMA_WRITE => WrOpcode::Write {
            remote_addr: ra,
            rkey: rk,
        },
        wr_opcode::RDMA_WRITE_WITH_IMM => WrOpcode::WriteWithImm {
            remote_addr: ra,
            rkey: rk,
            imm,
        },
        wr_opcode::RDMA_READ => WrOpcode::Read {
            remote_addr: ra,
            rkey: rk,
        },
        wr_opcode::ATOMIC_CMP_AND_SWP => WrOpcode::CompareSwap {
            remote_addr: ra,
            rkey: rk,
            compare: ca,
            swap: send_wqe::SWAP.get(b),
        },
        wr_opcode::ATOMIC_FETCH_AND_ADD => WrOpcode::FetchAdd {
            remote_addr: ra,
            rkey: rk,
            add: ca,
        },
        other => panic!("opcode {other}"),
    };
    let n = send_wqe::NUM_SGE.get(b) as usize;
    let sgl = SEND_SGE_FIELDS[..n]
        .iter()
        .map(|[a, l, k]| Sge {
            addr: a.get(b),
            len: l.get(b) as u32,
            lkey: k.get(b) as u32,
        })
        .collect();
    let flags = send_wqe::FLAGS.get(b) as u32;
    let inline = flags & wqe_flag::INLINE != 0;
    let n = send_wqe::INLINE_LEN.get(b) as usize;
    SendWr {
        wr_id: send_wqe::WR_ID.get(b),
        opcode,
        sgl: if inline { Vec::new() } else { sgl },
        signaled: flags & wqe_flag::SIGNALED != 0,
        solicited: flags & wqe_flag::SOLICITED != 0,
        fence: flags & wqe_flag::FENCE != 0,
        inline_data: inline.then(|| b[64..64 + n].to_vec()),
    }
}

proptest::proptest! {
    #[test]
    fn send_wqe_roundtrips(
        wr_id in proptest::prelude::any::<u64>(),
        opcode in arb_opcode(),
        sgl in proptest::collection::vec(
            (proptest::prelude::any::<u64>(), proptest::prelude::any::<u32>(), proptest::prelude::any::<u32>())
                .prop_map(|(addr, len, lkey)| Sge { addr, len, lkey }),
            0..=4,
        ),
        signaled in proptest::bool::ANY,
        solicited in proptest::bool::ANY,
        fence in proptest::bool::ANY,
        inline_data in proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..=64)),
    ) {
        let sgl = if inline_data.is_some() { Vec::new() } else { sgl };
        let wr = SendWr { wr_id, opcode, sgl, signaled, solicited, fence, inline_data };
        let b = encode_send_wqe(&wr);
        proptest::prop_assert_eq!(decode_send_wqe(&b), wr);
        // Nothing is written outside the spec's fields.
        let mut covered = [0u8; send_wqe::SIZE];
        for f in send_wqe::FIELDS {
            f.set(&mut covered, u64::MAX);
        }
        for (i, (byte, mask)) in b.iter().zip(covered).enumerate() {
            proptest::prop_assert_eq!(byte & !mask, 0, "stray bits in byte {}", i);
        }
    }

    #[test]
    fn modify_image_roundtrips(
        access in 0u32..16, mtu in 1u8..=5, retry in 0u8..8, rnr in 0u8..8, timeout in 0u8..32,
        rnr_timer in 0u8..32, rd in 0u8..=16, dest_rd in 0u8..=16, dest_qpn in 0u32..1 << 24,
        rq_psn in 0u32..1 << 24, sq_psn in 0u32..1 << 24, ip in proptest::prelude::any::<u32>(),
        mac in proptest::prelude::any::<[u8; 6]>(), qpn in 0u32..1 << 24,
    ) {
        let a = QpAttr::new(QpState::Rts)
            .with_access(AccessFlags::from_bits_truncate(access))
            .with_path_mtu(Mtu::from_code(mtu).unwrap())
            .with_retry_cnt(retry)
            .with_rnr_retry(rnr)
            .with_timeout(timeout)
            .with_min_rnr_timer(rnr_timer)
            .with_max_rd_atomic(rd)
            .with_max_dest_rd_atomic(dest_rd)
            .with_dest_qpn(dest_qpn)
            .with_rq_psn(rq_psn)
            .with_sq_psn(sq_psn)
            .with_av(AddressVector { dest_mac: mac, dest_ip: Ipv4Addr::from(ip) });
        let b = a.encode(qpn);
        use cmd_qp_args as f;
        proptest::prop_assert_eq!(f::QPN.get(&b), u64::from(qpn));
        proptest::prop_assert_eq!(f::ATTR_MASK.get(&b), u64::from(a.mask().bits()));
        proptest::prop_assert_eq!(f::STATE.get(&b), u64::from(QpState::Rts.code()));
        proptest::prop_assert_eq!(f::ACCESS.get(&b), u64::from(access));
        proptest::prop_assert_eq!(f::PATH_MTU.get(&b), u64::from(mtu));
        proptest::prop_assert_eq!(f::RETRY_CNT.get(&b), u64::from(retry));
        proptest::prop_assert_eq!(f::RNR_RETRY.get(&b), u64::from(rnr));
        proptest::prop_assert_eq!(f::TIMEOUT.get(&b), u64::from(timeout));
        proptest::prop_assert_eq!(f::MIN_RNR_TIMER.get(&b), u64::from(rnr_timer));
        proptest::prop_assert_eq!(f::MAX_RD_ATOMIC.get(&b), u64::from(rd));
        proptest::prop_assert_eq!(f::MAX_DEST_RD_ATOMIC.get(&b), u64::from(dest_rd));
        proptest::prop_assert_eq!(f::DEST_QPN.get(&b), u64::from(dest_qpn));
        proptest::prop_assert_eq!(f::RQ_PSN.get(&b), u64::from(rq_psn));
        proptest::prop_assert_eq!(f::SQ_PSN.get(&b), u64::from(sq_psn));
        proptest::prop_assert_eq!(f::DEST_IP.get(&b), u64::from(ip));
        proptest::prop_assert_eq!(mac_from_u64(f::DEST_MAC.get(&b)), mac);
    }
}

#[test]
fn mtu_from_bytes_round_trips_and_names_the_sizes() {
    for m in [Mtu::Mtu256, Mtu::Mtu512, Mtu::Mtu1024, Mtu::Mtu2048, Mtu::Mtu4096] {
        assert_eq!(Mtu::from_bytes(m.bytes()), Ok(m));
    }
    let e = Mtu::from_bytes(1500).unwrap_err();
    assert!(e.contains("1500") && e.contains("256, 512, 1024, 2048 or 4096"), "{e}");
}
