// SPDX-License-Identifier: Apache-2.0
//! A seeded, deterministic fault model for the [`Link`](crate::link::Link): random per-frame
//! drop / duplicate / reorder / delay / corrupt at independent rates, plus scripted faults that
//! fire exactly once on a chosen frame. Everything derives from one `u64` seed through a small
//! self-contained PRNG (splitmix64), so a run replays exactly.
//!
//! The hook is handed to the fabric by value; counters and the [`FaultLog`] live behind a shared
//! [`FaultHandle`] the test keeps:
//!
//! ```no_run
//! use rnic_testbench::fabric::{Fabric, FabricConfig};
//! use rnic_testbench::faults::{FaultModel, FaultRates, Script};
//! let model = FaultModel::new(42, FaultRates { drop: 0.01, ..FaultRates::default() })
//!     .with_script(Script::corrupt_nth_from(0, 3));
//! let handle = model.handle();
//! let fabric = Fabric::with_faults(FabricConfig::default(), Box::new(model)).unwrap();
//! // ... run traffic ...
//! println!("{}", handle.borrow().log);
//! ```

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use crate::link::FaultHook;
use crate::lockstep::bth_summary;

/// Length of the Ethernet header: corruption never touches bytes before it.
pub const ETH_HDR: usize = 14;

/// splitmix64: tiny, fast, good enough for fault decisions, and fully reproducible.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi] (hi >= lo).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        let span = hi.saturating_sub(lo).saturating_add(1);
        if span == 0 { self.next_u64() } else { lo + self.next_u64() % span }
    }
}

/// What a fault does to a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The frame is lost.
    Drop,
    /// The frame is delivered twice (the copy a little later).
    Duplicate,
    /// The frame is held back so later frames overtake it.
    Reorder,
    /// The frame gets extra latency.
    Delay,
    /// 1..3 bits after the Ethernet header are flipped (the ICRC fails).
    Corrupt,
}

impl FaultKind {
    /// Every kind, in counter order.
    pub const ALL: [FaultKind; 5] =
        [FaultKind::Drop, FaultKind::Duplicate, FaultKind::Reorder, FaultKind::Delay, FaultKind::Corrupt];

    fn index(self) -> usize {
        self as usize
    }
}

/// Independent per-frame probabilities and the windows of the random delays.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultRates {
    /// Probability a frame is dropped.
    pub drop: f64,
    /// Probability a frame is duplicated.
    pub duplicate: f64,
    /// Probability a frame is held back by 1..=`reorder_window` cycles.
    pub reorder: f64,
    /// Probability a frame gets 1..=`delay_max` cycles of extra latency.
    pub delay: f64,
    /// Probability 1..3 bits of the frame (at offset >= `corrupt_from`) are flipped.
    pub corrupt: f64,
    /// Window of the reorder hold-back, in cycles.
    pub reorder_window: u64,
    /// Largest extra latency of a delayed frame, in cycles.
    pub delay_max: u64,
    /// Extra delay of a duplicate's second copy, in cycles (at least 1).
    pub dup_gap: u64,
    /// First byte corruption may touch (at least [`ETH_HDR`]; 54 = payload/ICRC only).
    pub corrupt_from: usize,
    /// Apply random faults only to frames from this NIC (scripts have their own filter).
    pub only_from: Option<usize>,
}

impl Default for FaultRates {
    fn default() -> FaultRates {
        FaultRates {
            drop: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            delay: 0.0,
            corrupt: 0.0,
            reorder_window: 2000,
            delay_max: 200,
            dup_gap: 7,
            corrupt_from: ETH_HDR,
            only_from: None,
        }
    }
}

/// A fault that fires exactly once: on the `nth` (1-based) frame matching every given filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Script {
    /// What to do.
    pub kind: FaultKind,
    /// Only frames sent by this NIC.
    pub from: Option<usize>,
    /// Only frames whose BTH dest QP is this.
    pub dest_qp: Option<u32>,
    /// Only frames whose BTH PSN is this.
    pub psn: Option<u32>,
    /// Which matching frame (1 = the first).
    pub nth: u64,
    /// Extra cycles for `Reorder`/`Delay` (0 = use the rates' window).
    pub extra: u64,
    matched: u64,
    fired: bool,
}

impl Script {
    /// `kind` on the `nth` frame (1-based) that matches the filters set with the builders.
    pub fn new(kind: FaultKind, nth: u64) -> Script {
        Script { kind, from: None, dest_qp: None, psn: None, nth: nth.max(1), extra: 0, matched: 0, fired: false }
    }
    /// Drop the `nth` frame carrying BTH dest QP `qp`.
    pub fn drop_nth_to_qp(qp: u32, nth: u64) -> Script {
        Script::new(FaultKind::Drop, nth).to_qp(qp)
    }
    /// Corrupt the `nth` frame sent by NIC `nic`.
    pub fn corrupt_nth_from(nic: usize, nth: u64) -> Script {
        Script::new(FaultKind::Corrupt, nth).from(nic)
    }
    /// Duplicate the first frame with PSN `psn`.
    pub fn duplicate_psn(psn: u32) -> Script {
        Script::new(FaultKind::Duplicate, 1).with_psn(psn)
    }
    /// Only frames from NIC `nic`.
    pub fn from(mut self, nic: usize) -> Script {
        self.from = Some(nic);
        self
    }
    /// Only frames to BTH dest QP `qp`.
    pub fn to_qp(mut self, qp: u32) -> Script {
        self.dest_qp = Some(qp);
        self
    }
    /// Only frames with PSN `psn`.
    pub fn with_psn(mut self, psn: u32) -> Script {
        self.psn = Some(psn);
        self
    }
    /// Extra cycles for a scripted reorder/delay.
    pub fn extra(mut self, cycles: u64) -> Script {
        self.extra = cycles;
        self
    }
    /// Has it fired?
    pub fn fired(&self) -> bool {
        self.fired
    }

    fn matches(&self, from: usize, bth: Option<(u8, u32, u32)>) -> bool {
        self.from.is_none_or(|n| n == from)
            && self.dest_qp.is_none_or(|q| bth.is_some_and(|b| b.1 == q))
            && self.psn.is_none_or(|p| bth.is_some_and(|b| b.2 == p))
    }
}

/// One injected fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultEvent {
    /// Index of the frame among all frames the hook saw (0-based).
    pub frame: u64,
    /// What was done.
    pub kind: FaultKind,
    /// Sending NIC.
    pub from: usize,
    /// Receiving NIC.
    pub to: usize,
    /// BTH opcode, dest QP and PSN, when the frame has a BTH.
    pub bth: Option<(u8, u32, u32)>,
    /// Extra delay (reorder/delay/duplicate copy) in cycles, or bit offsets flipped (corrupt).
    pub detail: Vec<u64>,
    /// Whether a script (not the random model) injected it.
    pub scripted: bool,
}

impl fmt::Display for FaultEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "frame {} NIC {}->{} {:?}", self.frame, self.from, self.to, self.kind)?;
        if let Some((op, qp, psn)) = self.bth {
            write!(f, " opcode {op:#04x} dest QP {qp:#x} PSN {psn:#x}")?;
        }
        if !self.detail.is_empty() {
            let what = if self.kind == FaultKind::Corrupt { "bits" } else { "cycles" };
            write!(f, " {what} {:?}", self.detail)?;
        }
        if self.scripted {
            write!(f, " (scripted)")?;
        }
        Ok(())
    }
}

/// Every fault injected in a run, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultLog(pub Vec<FaultEvent>);

impl fmt::Display for FaultLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.0 {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}

/// What the model has done so far.
#[derive(Clone, Debug, Default)]
pub struct FaultStats {
    /// Frames the hook saw.
    pub frames: u64,
    /// Injected faults per kind, indexed like [`FaultKind::ALL`].
    pub counts: [u64; 5],
    /// Every injected fault.
    pub log: FaultLog,
}

impl FaultStats {
    /// Faults of `kind` injected so far.
    pub fn count(&self, kind: FaultKind) -> u64 {
        self.counts[kind.index()]
    }
    /// All faults injected so far.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Shared view of a [`FaultModel`]'s counters and log.
pub type FaultHandle = Rc<RefCell<FaultStats>>;

/// What happens to one frame.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Decision {
    drop: bool,
    dup: Option<u64>,
    extra: u64,
    corrupt: Vec<u64>,
}

/// The seeded fault model; implements [`FaultHook`].
#[derive(Debug)]
pub struct FaultModel {
    rng: SplitMix64,
    rates: FaultRates,
    scripts: Vec<Script>,
    stats: FaultHandle,
}

impl FaultModel {
    /// A model with `rates`, seeded with `seed`.
    pub fn new(seed: u64, rates: FaultRates) -> FaultModel {
        FaultModel { rng: SplitMix64::new(seed), rates, scripts: Vec::new(), stats: FaultHandle::default() }
    }

    /// Only scripted faults (all rates zero).
    pub fn scripted(scripts: impl IntoIterator<Item = Script>) -> FaultModel {
        let mut m = FaultModel::new(0, FaultRates::default());
        m.scripts.extend(scripts);
        m
    }

    /// Add a scripted fault.
    pub fn with_script(mut self, s: Script) -> FaultModel {
        self.scripts.push(s);
        self
    }

    /// The shared counters and log (keep a clone before handing the model to the fabric).
    pub fn handle(&self) -> FaultHandle {
        Rc::clone(&self.stats)
    }

    /// The scripted faults and whether they fired.
    pub fn scripts(&self) -> &[Script] {
        &self.scripts
    }

    fn flips(&mut self, len: usize) -> Vec<u64> {
        let lo = self.rates.corrupt_from.max(ETH_HDR);
        if len <= lo {
            return Vec::new();
        }
        let n = self.rng.range(1, 3);
        let mut bits = Vec::new();
        while (bits.len() as u64) < n {
            let b = self.rng.range(lo as u64 * 8, len as u64 * 8 - 1);
            if !bits.contains(&b) {
                bits.push(b);
            }
            if bits.len() as u64 >= (len - lo) as u64 * 8 {
                break;
            }
        }
        bits
    }

    fn record(&self, ev: FaultEvent) {
        let mut s = self.stats.borrow_mut();
        s.counts[ev.kind.index()] += 1;
        s.log.0.push(ev);
    }
}

impl FaultHook for FaultModel {
    fn on_frame(&mut self, from: usize, to: usize, mut frame: Vec<u8>) -> Vec<(u64, Vec<u8>)> {
        let index = {
            let mut s = self.stats.borrow_mut();
            s.frames += 1;
            s.frames - 1
        };
        let bth = bth_summary(&frame);
        let mut d = Decision::default();
        let mut events = Vec::new();
        let ev = |kind, detail: Vec<u64>, scripted| FaultEvent { frame: index, kind, from, to, bth, detail, scripted };

        // Random faults: the same five draws for every frame, so decisions depend only on the
        // seed and the frame index (not on which faults happened to be enabled).
        let r = &self.rates;
        let active = r.only_from.is_none_or(|n| n == from);
        let draws: [f64; 5] = std::array::from_fn(|_| self.rng.next_f64());
        let amount = self.rng.next_u64();
        let (pd, pu, pr, pl, pc) = (r.drop, r.duplicate, r.reorder, r.delay, r.corrupt);
        let (rw, dm, gap) = (r.reorder_window.max(1), r.delay_max.max(1), r.dup_gap.max(1));
        if active {
            if draws[0] < pd {
                d.drop = true;
                events.push(ev(FaultKind::Drop, vec![], false));
            } else {
                if draws[1] < pu {
                    d.dup = Some(gap);
                    events.push(ev(FaultKind::Duplicate, vec![gap], false));
                }
                if draws[2] < pr {
                    let x = 1 + amount % rw;
                    d.extra += x;
                    events.push(ev(FaultKind::Reorder, vec![x], false));
                }
                if draws[3] < pl {
                    let x = 1 + (amount >> 32) % dm;
                    d.extra += x;
                    events.push(ev(FaultKind::Delay, vec![x], false));
                }
                if draws[4] < pc {
                    let bits = self.flips(frame.len());
                    if !bits.is_empty() {
                        d.corrupt.extend(&bits);
                        events.push(ev(FaultKind::Corrupt, bits, false));
                    }
                }
            }
        }

        // Scripted faults: each counts its matches and fires once, on the nth.
        for k in 0..self.scripts.len() {
            let s = &mut self.scripts[k];
            if s.fired || !s.matches(from, bth) {
                continue;
            }
            s.matched += 1;
            if s.matched < s.nth {
                continue;
            }
            s.fired = true;
            let (kind, extra) = (s.kind, s.extra);
            match kind {
                FaultKind::Drop => {
                    d.drop = true;
                    events.push(ev(kind, vec![], true));
                }
                FaultKind::Duplicate => {
                    d.dup = Some(gap);
                    events.push(ev(kind, vec![gap], true));
                }
                FaultKind::Reorder | FaultKind::Delay => {
                    let x = if extra > 0 { extra } else if kind == FaultKind::Reorder { rw } else { dm };
                    d.extra += x;
                    events.push(ev(kind, vec![x], true));
                }
                FaultKind::Corrupt => {
                    let bits = self.flips(frame.len());
                    if !bits.is_empty() {
                        d.corrupt.extend(&bits);
                        events.push(ev(kind, bits, true));
                    }
                }
            }
        }

        for e in events {
            self.record(e);
        }
        if d.drop {
            return Vec::new();
        }
        for b in &d.corrupt {
            frame[(*b / 8) as usize] ^= 1 << (*b % 8);
        }
        match d.dup {
            Some(g) => vec![(d.extra, frame.clone()), (d.extra + g, frame)],
            None => vec![(d.extra, frame)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame with a BTH: dest QP `qp`, PSN `psn`, 100 bytes of payload.
    fn frame(qp: u32, psn: u32, fill: u8) -> Vec<u8> {
        let mut f = vec![fill; 54 + 100];
        f[42] = 0x04;
        f[47..50].copy_from_slice(&qp.to_be_bytes()[1..]);
        f[51..54].copy_from_slice(&psn.to_be_bytes()[1..]);
        f
    }

    fn run(m: &mut FaultModel, n: u32) -> Vec<Vec<(u64, Vec<u8>)>> {
        (0..n).map(|i| m.on_frame((i % 2) as usize, 1 - (i % 2) as usize, frame(0x11, i, i as u8))).collect()
    }

    fn busy() -> FaultRates {
        FaultRates { drop: 0.05, duplicate: 0.05, reorder: 0.05, delay: 0.05, corrupt: 0.05, ..FaultRates::default() }
    }

    #[test]
    fn same_seed_same_decisions() {
        let (mut a, mut b, mut c) =
            (FaultModel::new(7, busy()), FaultModel::new(7, busy()), FaultModel::new(8, busy()));
        let (ra, rb, rc) = (run(&mut a, 5000), run(&mut b, 5000), run(&mut c, 5000));
        assert_eq!(ra, rb);
        assert_eq!(a.handle().borrow().log, b.handle().borrow().log);
        assert_ne!(ra, rc, "a different seed should decide differently");
    }

    #[test]
    fn rates_respected_over_100k_frames() {
        let rates = FaultRates { drop: 0.02, duplicate: 0.05, reorder: 0.03, delay: 0.1, corrupt: 0.01, ..FaultRates::default() };
        let mut m = FaultModel::new(0xDEAD_BEEF, rates.clone());
        let h = m.handle();
        let n = 100_000u32;
        let mut delivered = 0u64;
        for i in 0..n {
            delivered += m.on_frame(0, 1, frame(1, i, 0)).len() as u64;
        }
        let s = h.borrow();
        assert_eq!(s.frames, u64::from(n));
        // Duplicate/reorder/delay/corrupt are only drawn for frames not dropped.
        let kept = 1.0 - rates.drop;
        for (kind, p) in [
            (FaultKind::Drop, rates.drop),
            (FaultKind::Duplicate, rates.duplicate * kept),
            (FaultKind::Reorder, rates.reorder * kept),
            (FaultKind::Delay, rates.delay * kept),
            (FaultKind::Corrupt, rates.corrupt * kept),
        ] {
            let want = p * f64::from(n);
            let sigma = (want * (1.0 - p)).sqrt();
            let got = s.count(kind) as f64;
            assert!((got - want).abs() < 5.0 * sigma + 1.0, "{kind:?}: {got} injected, want about {want}");
        }
        assert_eq!(delivered, u64::from(n) - s.count(FaultKind::Drop) + s.count(FaultKind::Duplicate));
        assert_eq!(s.log.0.len() as u64, s.total());
    }

    #[test]
    fn scripted_faults_fire_once_on_the_right_frame() {
        let mut m = FaultModel::scripted([
            Script::drop_nth_to_qp(0x22, 3),
            Script::corrupt_nth_from(1, 2),
            Script::duplicate_psn(40),
        ]);
        let h = m.handle();
        let mut out = Vec::new();
        for i in 0..100u32 {
            let from = (i % 2) as usize;
            let qp = if i % 5 == 0 { 0x22 } else { 0x33 };
            out.push(m.on_frame(from, 1 - from, frame(qp, i % 50, 0xA5)));
        }
        // Frames to QP 0x22: 0, 5, 10 → the third is frame 10. Frames from NIC 1: 1, 3 → 3.
        // PSN 40: frames 40 and 90 → only frame 40.
        for (i, o) in out.iter().enumerate() {
            match i {
                10 => assert!(o.is_empty(), "frame 10 dropped"),
                3 => {
                    assert_eq!(o.len(), 1);
                    assert_ne!(o[0].1, frame(0x33, 3, 0xA5), "frame 3 corrupted");
                }
                40 => assert_eq!(o.len(), 2, "frame 40 duplicated"),
                _ => assert_eq!(o, &vec![(0, frame(if i % 5 == 0 { 0x22 } else { 0x33 }, (i % 50) as u32, 0xA5))], "frame {i}"),
            }
        }
        let s = h.borrow();
        let log: Vec<(u64, FaultKind)> = s.log.0.iter().map(|e| (e.frame, e.kind)).collect();
        assert_eq!(log, vec![(3, FaultKind::Corrupt), (10, FaultKind::Drop), (40, FaultKind::Duplicate)]);
        assert_eq!(s.log.0[1].bth, Some((0x04, 0x22, 10)));
        assert!(s.log.0.iter().all(|e| e.scripted));
        assert!(m.scripts().iter().all(Script::fired));
        assert_eq!((s.count(FaultKind::Drop), s.count(FaultKind::Corrupt), s.count(FaultKind::Duplicate)), (1, 1, 1));
        assert!(!s.log.to_string().is_empty());
    }

    #[test]
    fn corruption_changes_only_bytes_past_the_ethernet_header() {
        let mut m = FaultModel::new(99, FaultRates { corrupt: 1.0, ..FaultRates::default() });
        for i in 0..2000u32 {
            let orig = frame(5, i, (i * 7) as u8);
            let out = m.on_frame(0, 1, orig.clone());
            assert_eq!(out.len(), 1);
            let got = &out[0].1;
            assert_eq!(got.len(), orig.len());
            assert_eq!(got[..ETH_HDR], orig[..ETH_HDR], "Ethernet header touched");
            let flipped: u32 = got.iter().zip(&orig).map(|(a, b)| (a ^ b).count_ones()).sum();
            assert!((1..=3).contains(&flipped), "{flipped} bits flipped");
        }
        assert_eq!(m.handle().borrow().count(FaultKind::Corrupt), 2000);
    }
}
