// SPDX-License-Identifier: Apache-2.0
//! The link between NICs: a delay line per direction with a fault-injection hook.
//!
//! Every frame a NIC sends enters the link with the cycle it left the MAC; it is delivered to the
//! peer after `delay` cycles. A [`FaultHook`] sees each frame first and decides what the wire does
//! with it (the reliability work plugs seeded drop/duplicate/reorder/corrupt models in here); the
//! default hook passes every frame through unchanged.

use std::collections::VecDeque;

/// What the wire does to one frame.
pub trait FaultHook {
    /// Called once per frame entering the link from `from` to `to`. Returns the copies to deliver,
    /// each with an extra delay in cycles (empty = dropped). Must be deterministic for replay.
    fn on_frame(&mut self, from: usize, to: usize, frame: Vec<u8>) -> Vec<(u64, Vec<u8>)>;
}

/// The fault-free wire.
#[derive(Debug, Default)]
pub struct NoFaults;

impl FaultHook for NoFaults {
    fn on_frame(&mut self, _from: usize, _to: usize, frame: Vec<u8>) -> Vec<(u64, Vec<u8>)> {
        vec![(0, frame)]
    }
}

/// A wire that leaves the simulator (see `docs/interop.md`): a fabric built with
/// `Fabric::with_external_port` hands every frame NIC 0 sends to the port instead of the link,
/// and delivers every frame the port yields to NIC 0.
pub trait ExternalPort {
    /// A frame left NIC 0.
    fn transmit(&mut self, frame: Vec<u8>);
    /// Frames that arrived from outside since the last call. `wait` is how long the call may block
    /// when nothing is there: the fabric passes `Some(..)` only while the NIC is idle, so a
    /// simulator waiting for a slow outside peer sleeps instead of running clock cycles (the
    /// simulated clock stands still meanwhile).
    fn receive(&mut self, wait: Option<std::time::Duration>) -> Vec<Vec<u8>>;
}

/// A frame in flight.
#[derive(Debug, Clone)]
struct InFlight {
    deliver_at: u64,
    seq: u64,
    to: usize,
    frame: Vec<u8>,
}

/// Point-to-point links between NIC `i` and NIC `i ^ 1` (two NICs back to back), with a fixed
/// delay and a fault hook.
pub struct Link {
    delay: u64,
    hook: Box<dyn FaultHook>,
    queue: VecDeque<InFlight>,
    seq: u64,
    /// Frames that entered the link.
    pub sent: u64,
    /// Frames delivered.
    pub delivered: u64,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("delay", &self.delay)
            .field("in_flight", &self.queue.len())
            .field("sent", &self.sent)
            .field("delivered", &self.delivered)
            .finish()
    }
}

impl Link {
    /// A link with `delay` cycles of latency and the given fault hook.
    pub fn new(delay: u64, hook: Box<dyn FaultHook>) -> Link {
        Link { delay, hook, queue: VecDeque::new(), seq: 0, sent: 0, delivered: 0 }
    }

    /// The peer of NIC `nic` on this back-to-back link.
    pub fn peer(nic: usize) -> usize {
        nic ^ 1
    }

    /// A frame left NIC `from` at `cycle`.
    pub fn send(&mut self, from: usize, cycle: u64, frame: Vec<u8>) {
        self.sent += 1;
        let to = Link::peer(from);
        for (extra, f) in self.hook.on_frame(from, to, frame) {
            let item = InFlight { deliver_at: cycle + self.delay + extra, seq: self.seq, to, frame: f };
            self.seq += 1;
            // Keep the queue sorted by (deliver_at, seq) so equal delays keep send order.
            let pos = self
                .queue
                .iter()
                .rposition(|q| (q.deliver_at, q.seq) <= (item.deliver_at, item.seq))
                .map_or(0, |p| p + 1);
            self.queue.insert(pos, item);
        }
    }

    /// Remove and return every frame due at or before `cycle`, as (destination NIC, frame).
    pub fn due(&mut self, cycle: u64) -> Vec<(usize, Vec<u8>)> {
        let mut out = Vec::new();
        while self.queue.front().is_some_and(|q| q.deliver_at <= cycle) {
            let q = self.queue.pop_front().expect("checked non-empty");
            self.delivered += 1;
            out.push((q.to, q.frame));
        }
        out
    }

    /// Remove every frame in flight regardless of time (transaction-level backends have no clock).
    pub fn drain_all(&mut self) -> Vec<(usize, Vec<u8>)> {
        self.due(u64::MAX)
    }

    /// Frames still in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct DropSecond(u32);
    impl FaultHook for DropSecond {
        fn on_frame(&mut self, _f: usize, _t: usize, frame: Vec<u8>) -> Vec<(u64, Vec<u8>)> {
            self.0 += 1;
            if self.0 == 2 { vec![] } else { vec![(0, frame)] }
        }
    }

    #[test]
    fn delay_order_and_direction() {
        let mut l = Link::new(10, Box::new(NoFaults));
        l.send(0, 0, vec![1]);
        l.send(1, 1, vec![2]);
        l.send(0, 1, vec![3]);
        assert!(l.due(9).is_empty());
        assert_eq!(l.due(10), vec![(1, vec![1])]);
        assert_eq!(l.due(11), vec![(0, vec![2]), (1, vec![3])]);
        assert_eq!(l.in_flight(), 0);
    }

    #[test]
    fn hook_can_drop() {
        let mut l = Link::new(0, Box::new(DropSecond(0)));
        for i in 0..3u8 {
            l.send(0, 0, vec![i]);
        }
        assert_eq!(l.drain_all(), vec![(1, vec![0]), (1, vec![2])]);
        assert_eq!((l.sent, l.delivered), (3, 2));
    }
}
