//! The hypervisor: `/dev/kvm`, checked once and shared by every VM of the process.
//!
//! [`Hypervisor::open`] is the explicit "is a hypervisor present" check: it fails with a
//! clear [`KvmError`] when `/dev/kvm` is missing, not accessible, or lacks a capability
//! snapvisor needs, and it records what kind of KVM this is (KVM-PVM or hardware).

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Cap, Kvm};
use std::fmt;
use std::path::Path;

/// Why the hypervisor cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    /// `/dev/kvm` does not exist.
    #[error(
        "/dev/kvm does not exist: snapvisor needs Linux KVM (a kernel with kvm and kvm_intel, kvm_amd or kvm_pvm)"
    )]
    Missing,
    /// `/dev/kvm` could not be opened.
    #[error("cannot open /dev/kvm (run as root or join the `kvm` group)")]
    Open(#[source] kvm_ioctls::Error),
    /// The KVM API version is not 12.
    #[error("KVM API version {0} is not the stable version 12")]
    ApiVersion(i32),
    /// A required capability is missing.
    #[error("KVM lacks the {0} capability")]
    MissingCap(&'static str),
    /// A KVM system ioctl failed.
    #[error("KVM {what} failed")]
    Ioctl {
        /// Which call.
        what: &'static str,
        /// The error.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// The kind of KVM underneath; it decides what guest code costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HypervisorKind {
    /// KVM-PVM: shadow paging, CPL0 guest code emulated, CPL3 native.
    Pvm,
    /// KVM on Intel VT-x.
    Vmx,
    /// KVM on AMD-V.
    Svm,
    /// KVM of an unrecognised kind.
    Unknown,
}

impl fmt::Display for HypervisorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HypervisorKind::Pvm => "KVM-PVM (shadow paging)",
            HypervisorKind::Vmx => "KVM (Intel VT-x)",
            HypervisorKind::Svm => "KVM (AMD-V)",
            HypervisorKind::Unknown => "KVM (unknown kind)",
        })
    }
}

/// An open, checked `/dev/kvm` and what every VM needs from it.
pub struct Hypervisor {
    kvm: Kvm,
    kind: HypervisorKind,
    needs_rmode_tss: bool,
    cpuid: CpuId,
    xcr0: u64,
    msr_list: Vec<u32>,
}

impl fmt::Debug for Hypervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hypervisor").field("kind", &self.kind).field("xcr0", &self.xcr0).finish()
    }
}

/// XCR0 bits snapvisor enables when the CPU has them: x87, SSE, AVX.
const WANTED_XCR0: u64 = 0b111;

impl Hypervisor {
    /// Whether `/dev/kvm` exists (tests use this to print "skipped: no /dev/kvm").
    pub fn available() -> bool {
        Path::new("/dev/kvm").exists()
    }

    /// Opens `/dev/kvm` and checks that it can run snapvisor guests.
    pub fn open() -> Result<Self, KvmError> {
        if !Self::available() {
            return Err(KvmError::Missing);
        }
        let kvm = Kvm::new().map_err(KvmError::Open)?;
        let version = kvm.get_api_version();
        if version != 12 {
            return Err(KvmError::ApiVersion(version));
        }
        for (cap, name) in [
            (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
            (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
            (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
            (Cap::Xcrs, "KVM_CAP_XCRS"),
            (Cap::VcpuEvents, "KVM_CAP_VCPU_EVENTS"),
            (Cap::Debugregs, "KVM_CAP_DEBUGREGS"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(KvmError::MissingCap(name));
            }
        }
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|source| KvmError::Ioctl { what: "KVM_GET_SUPPORTED_CPUID", source })?;
        // Leaf 0xD sub-leaf 0: EAX/EDX = the XCR0 bits the guest may enable.
        let supported_xcr0 = cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == 0xd && e.index == 0)
            .map_or(1, |e| u64::from(e.eax) | (u64::from(e.edx) << 32));
        let msr_list = kvm
            .get_msr_index_list()
            .map_err(|source| KvmError::Ioctl { what: "KVM_GET_MSR_INDEX_LIST", source })?
            .as_slice()
            .to_vec();
        let kind = detect_kind();
        // VT-x without unrestricted guest emulates the vCPU's reset-time real mode with a TSS
        // that KVM needs an address for; everywhere else the guest never leaves long mode.
        let needs_rmode_tss = kind == HypervisorKind::Vmx
            && std::fs::read_to_string("/sys/module/kvm_intel/parameters/unrestricted_guest")
                .is_ok_and(|v| v.trim() == "N");
        Ok(Hypervisor { kvm, kind, needs_rmode_tss, cpuid, xcr0: supported_xcr0 & WANTED_XCR0, msr_list })
    }

    /// The KVM handle.
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    /// What kind of KVM this is.
    pub fn kind(&self) -> HypervisorKind {
        self.kind
    }

    /// CPUID the guests get (KVM's supported set).
    pub fn cpuid(&self) -> &CpuId {
        &self.cpuid
    }

    /// XCR0 the guests run with (x87, and SSE/AVX where available).
    pub fn xcr0(&self) -> u64 {
        self.xcr0
    }

    /// Whether VMs need `KVM_SET_TSS_ADDR` (VT-x without unrestricted guest).
    pub fn needs_rmode_tss(&self) -> bool {
        self.needs_rmode_tss
    }

    /// Whether KVM can save and restore the MSR `index`.
    pub fn has_msr(&self, index: u32) -> bool {
        self.msr_list.contains(&index)
    }
}

fn detect_kind() -> HypervisorKind {
    if Path::new("/sys/module/kvm_pvm").exists() {
        return HypervisorKind::Pvm;
    }
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = flags.lines().find(|l| l.starts_with("flags")).unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    if has("vmx") {
        HypervisorKind::Vmx
    } else if has("svm") {
        HypervisorKind::Svm
    } else {
        HypervisorKind::Unknown
    }
}

/// The host CPU's model name (for benchmark headers).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
