//! Definitions shared by the model, the driver and the testbench, generated from
//! `spec/rnic.toml` (the same file generates `rtl/rnic_reg_pkg.sv`).
//!
//! Layout fields are little-endian bit ranges inside a host-memory structure; use
//! [`Field::get`] and [`Field::set`] on a byte slice holding the structure.

mod generated;
pub use generated::*;

/// A bit field inside a little-endian host-memory structure (WQE, CQE, command image).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Field name as written in the spec.
    pub name: &'static str,
    /// Absolute bit offset of the least significant bit (byte offset * 8 + bit).
    pub bit: u32,
    /// Width in bits (1..=64).
    pub width: u32,
}

impl Field {
    /// Byte offset of the byte holding the field's least significant bit.
    pub const fn byte(&self) -> usize {
        (self.bit / 8) as usize
    }

    /// Mask of the field's value (width low bits set).
    pub const fn mask(&self) -> u64 {
        if self.width >= 64 {
            u64::MAX
        } else {
            (1u64 << self.width) - 1
        }
    }

    /// Read the field from `buf`, which holds the whole structure.
    ///
    /// # Panics
    /// If `buf` is shorter than the field's last byte.
    pub fn get(&self, buf: &[u8]) -> u64 {
        let mut v: u128 = 0;
        let first = self.byte();
        let last = ((self.bit + self.width - 1) / 8) as usize;
        for (i, b) in buf[first..=last].iter().enumerate() {
            v |= (*b as u128) << (8 * i);
        }
        ((v >> (self.bit % 8)) as u64) & self.mask()
    }

    /// Write `value` (truncated to the field's width) into `buf`, leaving other bits alone.
    ///
    /// # Panics
    /// If `buf` is shorter than the field's last byte.
    pub fn set(&self, buf: &mut [u8], value: u64) {
        let first = self.byte();
        let last = ((self.bit + self.width - 1) / 8) as usize;
        let shift = self.bit % 8;
        let mask = (self.mask() as u128) << shift;
        let val = ((value & self.mask()) as u128) << shift;
        for (i, b) in buf[first..=last].iter_mut().enumerate() {
            let m = (mask >> (8 * i)) as u8;
            let v = (val >> (8 * i)) as u8;
            *b = (*b & !m) | (v & m);
        }
    }
}

/// Bytes of a path MTU encoded as in `ibv_mtu` (1 = 256 ... 5 = 4096).
pub const fn mtu_bytes(mtu: u8) -> u32 {
    128u32 << mtu
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_roundtrip_unaligned() {
        let mut b = [0u8; 48];
        cmd_qp_args::RNR_RETRY.set(&mut b, 5);
        cmd_qp_args::RETRY_CNT.set(&mut b, 7);
        assert_eq!(cmd_qp_args::RNR_RETRY.get(&b), 5);
        assert_eq!(cmd_qp_args::RETRY_CNT.get(&b), 7);
        assert_eq!(b[11], 0x57);
        cmd_qp_args::DEST_MAC.set(&mut b, 0x1122_3344_5566);
        assert_eq!(&b[32..38], &[0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
        assert_eq!(cmd_qp_args::DEST_MAC.get(&b), 0x1122_3344_5566);
    }

    #[test]
    fn layouts_fit_and_do_not_overlap() {
        for (size, fields) in [
            (send_wqe::SIZE, send_wqe::FIELDS),
            (recv_wqe::SIZE, recv_wqe::FIELDS),
            (cqe::SIZE, cqe::FIELDS),
            (cmd_qp_args::SIZE, cmd_qp_args::FIELDS),
            (cmd_create_qp::SIZE, cmd_create_qp::FIELDS),
            (cmd_reg_mr::SIZE, cmd_reg_mr::FIELDS),
        ] {
            let mut used = vec![false; size * 8];
            for f in fields {
                for b in f.bit..f.bit + f.width {
                    assert!(!used[b as usize], "{} overlaps", f.name);
                    used[b as usize] = true;
                }
            }
        }
    }

    #[test]
    fn generated_files_are_fresh() {
        // One source of truth: the checked-in SV package, Rust module and doc must match the spec.
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let out = std::process::Command::new("python3")
            .arg(format!("{root}/spec/gen.py"))
            .arg("--check")
            .output()
            .expect("python3 is needed to check the generated files (apt-get install python3)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
