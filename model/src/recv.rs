// SPDX-License-Identifier: Apache-2.0
//! RX task: receive checks (contract section 7) and routing to the responder or completer.

use rnic_regs::{counter, qp_state};

use crate::{wire, HostMemory, ModelError, Nic};

impl Nic {
    /// Process one received frame.
    pub(crate) fn run_rx(
        &mut self,
        frame: &[u8],
        mem: &mut dyn HostMemory,
    ) -> Result<(), ModelError> {
        self.count(counter::RX_PKTS);
        let ports = self.rx_ports();
        let p = match wire::parse_for_functions(frame, &ports) {
            Ok(p) => p,
            Err(e) => {
                log::debug!("rx drop: {e}");
                self.count(e.counter());
                return Ok(());
            }
        };
        let qpn = p.hdr.bth.dqpn;
        // A frame for a QP of another function than the one its addresses selected is dropped.
        if qpn >= self.cfg.num_qp || !self.qpc[qpn as usize].valid || self.qpc[qpn as usize].func != p.func {
            self.count(counter::RX_DROP_QP);
            return Ok(());
        }
        let state = self.qpc[qpn as usize].state;
        let response = wire::is_response(p.hdr.bth.opcode);
        let state_ok = if response {
            state == qp_state::RTS
        } else {
            state == qp_state::RTR || state == qp_state::RTS
        };
        if !state_ok {
            self.count(counter::RX_DROP_STATE);
            return Ok(());
        }
        if response {
            self.completer(qpn, &p, mem)
        } else {
            self.responder(qpn, &p, mem)
        }
    }
}
