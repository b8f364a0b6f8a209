//! Per-vCPU KVM counters from the binary statistics interface (`KVM_GET_STATS_FD`).
//!
//! The counters that explain restore costs: `pf_fixed` (guest page faults KVM resolved by
//! mapping memory: on shadow paging, one per first guest touch of a host page), `pf_taken`,
//! `exits` and `insn_emulation`. Kernels without the interface report zeros.

use kvm_ioctls::VcpuFd;
use serde::Serialize;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::os::unix::fs::FileExt;
use vmm_sys_util::ioctl::ioctl;

mod ioctls {
    #![allow(missing_docs)]
    use vmm_sys_util::ioctl_io_nr;
    const KVMIO: u32 = 0xae;
    ioctl_io_nr!(KVM_GET_STATS_FD, KVMIO, 0xce);
}
use ioctls::KVM_GET_STATS_FD;

/// Counters of one vCPU (or the difference between two readings).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KvmCounters {
    /// Guest page faults KVM fixed by mapping host memory.
    pub pf_fixed: u64,
    /// Guest page faults KVM handled in total.
    pub pf_taken: u64,
    /// Exits from the guest to KVM.
    pub exits: u64,
    /// Instructions KVM emulated.
    pub insn_emulation: u64,
}

impl KvmCounters {
    /// `self - earlier`, per counter.
    pub fn since(self, earlier: KvmCounters) -> KvmCounters {
        KvmCounters {
            pf_fixed: self.pf_fixed.saturating_sub(earlier.pf_fixed),
            pf_taken: self.pf_taken.saturating_sub(earlier.pf_taken),
            exits: self.exits.saturating_sub(earlier.exits),
            insn_emulation: self.insn_emulation.saturating_sub(earlier.insn_emulation),
        }
    }
}

const NAMES: [&str; 4] = ["pf_fixed", "pf_taken", "exits", "insn_emulation"];

/// An open statistics file of one vCPU with the offsets of the counters we read.
pub struct VcpuStats {
    file: File,
    offsets: [Option<u64>; 4],
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl VcpuStats {
    /// Opens the statistics of `vcpu`.
    pub fn open(vcpu: &VcpuFd) -> std::io::Result<Self> {
        // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new fd or -1.
        let fd = unsafe { ioctl(vcpu, KVM_GET_STATS_FD()) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor we own.
        let file = unsafe { File::from_raw_fd(fd) };
        let mut header = [0u8; 24];
        file.read_exact_at(&mut header, 0)?;
        let bad = || std::io::Error::other("malformed KVM stats header");
        let name_size = u32_at(&header, 4).ok_or_else(bad)? as usize;
        let num_desc = u32_at(&header, 8).ok_or_else(bad)? as usize;
        let desc_offset = u64::from(u32_at(&header, 16).ok_or_else(bad)?);
        let data_offset = u64::from(u32_at(&header, 20).ok_or_else(bad)?);
        let desc_size = 16 + name_size;
        let mut descs = vec![0u8; desc_size * num_desc];
        file.read_exact_at(&mut descs, desc_offset)?;
        let mut offsets = [None; 4];
        for desc in descs.chunks_exact(desc_size) {
            let name = &desc[16..];
            let name = &name[..name.iter().position(|&c| c == 0).unwrap_or(name.len())];
            if let Some(i) = NAMES.iter().position(|n| n.as_bytes() == name) {
                offsets[i] = u32_at(desc, 8).map(|o| data_offset + u64::from(o));
            }
        }
        Ok(VcpuStats { file, offsets })
    }

    /// Reads the counters now.
    pub fn read(&self) -> KvmCounters {
        let value = |i: usize| {
            self.offsets[i]
                .and_then(|at| {
                    let mut b = [0u8; 8];
                    self.file.read_exact_at(&mut b, at).ok().map(|_| u64::from_le_bytes(b))
                })
                .unwrap_or(0)
        };
        KvmCounters { pf_fixed: value(0), pf_taken: value(1), exits: value(2), insn_emulation: value(3) }
    }
}
