//! The global allocator: two heaps, one for what `init` builds and one for what requests
//! allocate, so that a SnapStart's writes land in memory that was zero in the snapshot.
//!
//! Until the guest first reports `ready` (the snapshot point), every allocation comes from
//! the *init heap*, at the start of the heap range. At that point the init heap stops
//! growing and the *request arena* starts at the next 2 MiB boundary above it: memory that
//! is all zero in the snapshot. From then on:
//!
//! - allocations come from the arena (its allocator keeps its own bookkeeping there too);
//! - freeing or shrinking an arena block works as usual;
//! - freeing an init-heap block does nothing, and growing one copies it into the arena: the
//!   allocator never writes to the init heap again, so the snapshot's pages stay as they
//!   were (read-only pages that N VMs of one snapshot share, where a restore can map them
//!   with 2 MiB pages). What an init object occupied is not reused — a bounded cost, at most
//!   the init heap's size.
//!
//! Memory the function writes through its state (`&mut S`) is still written, of course:
//! keep what a request changes in the state small.

use crate::heap::GrowingHeap;
use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use talc::sync::TalcLock;

type Heap = TalcLock<spinning_top::RawSpinlock, GrowingHeap, talc::DefaultBinning>;

/// The two heaps and which one serves new allocations.
pub struct PhasedHeap {
    init: Heap,
    arena: Heap,
    /// Set once the arena serves allocations.
    serving: AtomicBool,
    /// `[start, end)` of the init heap (end fixed when serving starts).
    init_start: AtomicUsize,
    init_end: AtomicUsize,
}

impl PhasedHeap {
    /// No memory yet.
    pub const fn empty() -> Self {
        PhasedHeap {
            init: TalcLock::new(GrowingHeap::empty()),
            arena: TalcLock::new(GrowingHeap::empty()),
            serving: AtomicBool::new(false),
            init_start: AtomicUsize::new(0),
            init_end: AtomicUsize::new(usize::MAX),
        }
    }

    /// Gives the heap range `base..limit` to the init heap.
    ///
    /// # Safety
    /// The range must be RAM that only the allocator uses; call once, before any allocation.
    pub unsafe fn start(&self, base: *mut u8, limit: *mut u8) {
        self.init_start.store(base as usize, Ordering::Relaxed);
        // SAFETY: forwarded from the caller.
        self.init.lock().source = unsafe { GrowingHeap::new(base, limit) };
    }

    /// Freezes the init heap and moves new allocations to the arena above it. Idempotent.
    pub fn start_serving(&self) {
        if self.serving.load(Ordering::Relaxed) {
            return;
        }
        let (end, limit) = {
            let init = self.init.lock();
            (init.source.claimed_end(), init.source.limit())
        };
        let base = end.div_ceil(crate::abi::HUGE_PAGE_SIZE as usize) * crate::abi::HUGE_PAGE_SIZE as usize;
        self.init_end.store(end, Ordering::Relaxed);
        // SAFETY: base..limit lies above everything the init heap claimed and inside the heap
        // range the VMM gave the guest; only the arena uses it from now on.
        self.arena.lock().source = unsafe { GrowingHeap::new(base.min(limit) as *mut u8, limit as *mut u8) };
        self.serving.store(true, Ordering::Release);
    }

    fn in_init(&self, ptr: *mut u8) -> bool {
        (self.init_start.load(Ordering::Relaxed)..self.init_end.load(Ordering::Relaxed)).contains(&(ptr as usize))
    }
}

// SAFETY: each block is handed out by exactly one of the two talc heaps and returned to the
// same one (by address: the init heap's range never overlaps the arena's); init blocks
// freed while serving are never handed out again.
unsafe impl GlobalAlloc for PhasedHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        unsafe {
            if self.serving.load(Ordering::Acquire) {
                self.arena.alloc(layout)
            } else {
                self.init.alloc(layout)
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let serving = self.serving.load(Ordering::Acquire);
        // SAFETY: `ptr` came from the heap its address belongs to, with `layout`.
        unsafe {
            match (self.in_init(ptr), serving) {
                (true, false) => self.init.dealloc(ptr, layout),
                (true, true) => {} // keep the snapshot's pages unwritten
                (false, _) => self.arena.dealloc(ptr, layout),
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let serving = self.serving.load(Ordering::Acquire);
        // SAFETY: `ptr` came from the heap its address belongs to, with `layout`; the new
        // layout has the same alignment and a non-zero size (GlobalAlloc's contract).
        unsafe {
            match (self.in_init(ptr), serving) {
                (true, false) => self.init.realloc(ptr, layout, new_size),
                (false, _) => self.arena.realloc(ptr, layout, new_size),
                (true, true) => {
                    let new = self.arena.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
                    if !new.is_null() {
                        core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    }
                    new
                }
            }
        }
    }
}
