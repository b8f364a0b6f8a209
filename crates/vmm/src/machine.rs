//! A microVM running one guest function: boot from an image, wait for `ready`, invoke.
//!
//! This is the life cycle every caller uses, whether the VM was booted fresh
//! ([`MicroVm::boot`]) or restored from a snapshot (`crate::restore`):
//!
//! ```text
//! boot ──run──▶ Ready ──invoke(request)──▶ Responded ──finish──▶ Ready ──▶ …
//!                 │
//!                 └─ snapshot point (vCPU state + memory)
//! ```

use crate::boot;
use crate::loader::GuestImage;
use crate::metrics::ThreadFaults;
use crate::snapshot::{self, LayoutRecord, Manifest, SnapshotInput, VmState};
use crate::vstate::kvm::Hypervisor;
use crate::vstate::memory::{GuestMemory, Mapping};
use crate::vstate::stats::KvmCounters;
use crate::vstate::vcpu::{Console, GuestEvent, VcpuState};
use crate::vstate::vm::Vm;
use crate::Error;
use snapvisor_abi::{layout, mailbox, MailboxHeader};
use std::path::Path;
use std::time::{Duration, Instant};

/// Where the guest is in its request loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Booted, `init` not run yet.
    Booted,
    /// Waiting for a request (at its `ready` hypercall).
    Ready,
    /// Answered; must run on to `ready` before the next request.
    Responded,
    /// Failed; the VM cannot be used any more.
    Failed,
}

/// Times of a fresh boot.
#[derive(Clone, Copy, Debug, Default)]
pub struct BootTimes {
    /// KVM VM + vCPU creation, guest memory allocation and registration.
    pub create: Duration,
    /// Image validation and loading, platform tables, vCPU registers.
    pub load: Duration,
}

/// One completed invocation.
#[derive(Clone, Debug)]
pub struct Invocation {
    /// Response bytes (JSON for the built-in functions).
    pub response: Vec<u8>,
    /// From resuming the guest with the request to its `respond` hypercall.
    pub duration: Duration,
    /// KVM counters of the vCPU during the invocation.
    pub kvm: KvmCounters,
    /// Host page faults taken by the vCPU thread during the invocation.
    pub faults: ThreadFaults,
}

/// A microVM and its guest's position in the request loop.
pub struct MicroVm {
    vm: Vm,
    phase: Phase,
    sequence: u32,
    console: Console,
    layout: LayoutRecord,
}

impl MicroVm {
    /// Creates a VM with `mem_size` bytes of fresh memory and loads `elf` into it. The
    /// guest has not run yet; call [`MicroVm::wait_ready`] to run its init.
    pub fn boot(hv: &Hypervisor, elf: &[u8], mem_size: u64) -> Result<(Self, BootTimes), Error> {
        check_mem_size(mem_size)?;
        let image = GuestImage::parse(elf, mem_size)?;
        let start = Instant::now();
        let mut vm = Vm::create(hv)?;
        let mapping = Mapping::anonymous(mem_size as usize).map_err(Error::GuestMemory)?;
        vm.attach_memory(GuestMemory::new(mapping).map_err(Error::GuestMemory)?)?;
        let created = Instant::now();
        let mem = vm.memory()?;
        image.load(mem)?;
        let info = boot::write_platform(mem, image.end())?;
        vm.vcpu().setup_boot(hv, image.entry())?;
        let layout = LayoutRecord {
            mailbox: info.mailbox,
            image_base: layout::IMAGE_BASE,
            image_end: image.end(),
            heap_start: info.heap_start,
            heap_end: info.heap_end,
            stack_top: layout::STACK_TOP,
        };
        let times = BootTimes { create: created - start, load: created.elapsed() };
        Ok((MicroVm { vm, phase: Phase::Booted, sequence: 0, console: Console::default(), layout }, times))
    }

    /// Wraps a VM whose vCPU state was restored at the guest's `ready` hypercall.
    pub fn restored(vm: Vm, layout: LayoutRecord) -> Self {
        MicroVm { vm, phase: Phase::Ready, sequence: 0, console: Console::default(), layout }
    }

    /// The guest layout.
    pub fn layout(&self) -> LayoutRecord {
        self.layout
    }

    /// Where the guest is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Console lines the guest wrote so far (up to [`Console::LIMIT`] bytes).
    pub fn console(&self) -> &[String] {
        self.console.lines()
    }

    /// The guest's RAM.
    pub fn memory(&self) -> Result<&GuestMemory, Error> {
        Ok(self.vm.memory()?)
    }

    /// The underlying VM.
    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    fn run(&mut self, timeout: Duration) -> Result<GuestEvent, Error> {
        let (vcpu, mem) = self.vm.parts()?;
        let result = vcpu.run(mem, timeout, &mut self.console);
        if result.is_err() {
            self.phase = Phase::Failed;
        }
        Ok(result?)
    }

    fn expect_ready(&mut self, timeout: Duration) -> Result<(), Error> {
        match self.run(timeout)? {
            GuestEvent::Ready => {
                self.phase = Phase::Ready;
                Ok(())
            }
            GuestEvent::Response(_) => {
                self.phase = Phase::Failed;
                Err(Error::Protocol("responded without a request"))
            }
        }
    }

    /// Runs a freshly booted guest through its init to its first `ready`.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Duration, Error> {
        self.require(Phase::Booted)?;
        let start = Instant::now();
        self.expect_ready(timeout)?;
        Ok(start.elapsed())
    }

    /// Runs a guest that has responded on to its next `ready` (its clean-up after a response).
    pub fn finish(&mut self, timeout: Duration) -> Result<(), Error> {
        self.require(Phase::Responded)?;
        self.expect_ready(timeout)
    }

    fn require(&self, phase: Phase) -> Result<(), Error> {
        if self.phase == phase {
            Ok(())
        } else {
            Err(Error::WrongPhase { expected: phase, actual: self.phase })
        }
    }

    /// Hands `request` to the ready guest and runs it until it responds.
    ///
    /// The request is written whole into the mailbox's request area, where the guest reads
    /// it in place. One longer than the area (`mailbox::REQUEST_MAX`, 12 MiB) is refused
    /// with [`Error::RequestTooLarge`] before anything is written: never truncated, and the
    /// VM stays ready.
    pub fn invoke(&mut self, request: &[u8], timeout: Duration) -> Result<Invocation, Error> {
        self.require(Phase::Ready)?;
        if request.len() as u64 > mailbox::REQUEST_MAX {
            return Err(Error::RequestTooLarge { len: request.len(), max: mailbox::REQUEST_MAX });
        }
        // The clock starts before the request is written: delivering it (and any page fault
        // that causes in a restored guest's mailbox) is part of the invocation.
        let counters = self.vm.vcpu().counters();
        let faults = ThreadFaults::now();
        let start = Instant::now();
        self.sequence = self.sequence.wrapping_add(1);
        let mem = self.vm.memory()?;
        mem.write(layout::MAILBOX + mailbox::REQUEST, request)?;
        let header = MailboxHeader { request_len: request.len() as u32, sequence: self.sequence };
        mem.write_u32(layout::MAILBOX + mailbox::HEADER, header.request_len)?;
        mem.write_u32(layout::MAILBOX + mailbox::HEADER + 4, header.sequence)?;
        let event = self.run(timeout)?;
        let duration = start.elapsed();
        let faults = ThreadFaults::now().since(faults);
        let kvm = self.vm.vcpu().counters().since(counters);
        let len = match event {
            GuestEvent::Response(len) => len,
            GuestEvent::Ready => {
                self.phase = Phase::Failed;
                return Err(Error::Protocol("was ready again without responding"));
            }
        };
        self.phase = Phase::Responded;
        let response = self.vm.memory()?.read_vec(layout::MAILBOX + mailbox::RESPONSE, len as usize)?;
        Ok(Invocation { response, duration, kvm, faults })
    }

    /// Completes the pending `ready` exit and saves the vCPU state (the snapshot point).
    pub fn save_vcpu(&mut self, hv: &Hypervisor) -> Result<VcpuState, Error> {
        self.require(Phase::Ready)?;
        let (vcpu, _) = self.vm.parts()?;
        vcpu.complete_io()?;
        Ok(vcpu.save_state(hv)?)
    }

    /// Snapshots the ready guest into `dir` (see [`crate::snapshot`]). `image` is the ELF
    /// the VM booted, recorded by digest. The VM stays usable afterwards.
    pub fn snapshot(
        &mut self,
        hv: &Hypervisor,
        function: &str,
        image: &[u8],
        dir: &Path,
        force: bool,
    ) -> Result<Manifest, Error> {
        let vcpu = self.save_vcpu(hv)?;
        let state = VmState {
            abi_version: snapvisor_abi::ABI_VERSION,
            mem_size: self.vm.memory()?.size(),
            layout: self.layout,
            vcpu,
        };
        let input = SnapshotInput { function, image, state, memory: self.vm.memory()? };
        Ok(snapshot::write(dir, input, force)?)
    }
}

/// Checks a guest memory size against the layout.
pub fn check_mem_size(mem_size: u64) -> Result<(), Error> {
    if !(layout::MIN_MEM_SIZE..=layout::MAX_MEM_SIZE).contains(&mem_size)
        || !mem_size.is_multiple_of(snapvisor_abi::HUGE_PAGE_SIZE)
    {
        return Err(Error::MemSize { size: mem_size, min: layout::MIN_MEM_SIZE, max: layout::MAX_MEM_SIZE });
    }
    Ok(())
}
