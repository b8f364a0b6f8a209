//! The heap: talc over the range the boot info describes, claimed 64 KiB at a time.
//!
//! Growing the heap on demand (instead of claiming all of it at boot) keeps the
//! allocator's boundary tags next to the memory in use: untouched heap stays all-zero, so
//! snapshots store it as holes and a restored guest never writes to (and copies) a page
//! far away from its data. The step is small so that the tag at the heap's end lands in
//! the 2 MiB chunk the data reached, not in the next one: a restore that maps fresh memory
//! with 2 MiB pages (`pass`) would otherwise spend a whole huge page on that one tag
//! (measured: 2 MiB more private memory for chameleon, image and recognition with 2 MiB
//! steps). Growing costs one `extend` per 64 KiB, a few hundred nanoseconds.

use core::alloc::Layout;
use core::ptr::NonNull;
use talc::base::binning::Binning;
use talc::base::Talc;
use talc::source::Source;

/// Heap growth step.
const STEP: usize = 64 << 10;

/// A talc [`Source`] that claims `base..limit` in [`STEP`]-sized pieces as allocations need them.
#[derive(Debug)]
pub struct GrowingHeap {
    base: *mut u8,
    limit: *mut u8,
    end: Option<NonNull<u8>>,
}

// SAFETY: the guest is single-threaded; the pointers describe guest RAM reserved for the heap.
unsafe impl Send for GrowingHeap {}

impl GrowingHeap {
    /// No memory yet (before [`crate::start`]).
    pub const fn empty() -> Self {
        GrowingHeap { base: core::ptr::null_mut(), limit: core::ptr::null_mut(), end: None }
    }

    /// The heap `base..limit`.
    ///
    /// # Safety
    /// The range must be RAM that only the allocator uses.
    pub unsafe fn new(base: *mut u8, limit: *mut u8) -> Self {
        GrowingHeap { base, limit, end: None }
    }

    /// One past the memory claimed so far (a multiple of the step, or the limit), or the base
    /// when nothing is claimed yet.
    pub fn claimed_end(&self) -> usize {
        self.end.map_or(self.base as usize, |e| e.as_ptr() as usize)
    }

    /// The end of the range the heap may grow into.
    pub fn limit(&self) -> usize {
        self.limit as usize
    }
}

fn round_up(v: usize) -> usize {
    v.div_ceil(STEP) * STEP
}

// SAFETY: `acquire` only uses the `talc` it is given (claim/extend) and allocates nothing.
unsafe impl Source for GrowingHeap {
    fn acquire<B: Binning>(talc: &mut Talc<Self, B>, layout: Layout) -> Result<(), ()> {
        let (base, limit) = (talc.source.base as usize, talc.source.limit as usize);
        if base == 0 {
            return Err(());
        }
        // Room for the allocation, its alignment and the allocator's tags.
        let want = layout.size() + layout.align() + 4096;
        match talc.source.end {
            None => {
                let end = round_up(base + want).min(limit);
                // SAFETY: base..end is heap RAM (constructor contract), claimed once.
                let heap_end = unsafe { talc.claim(base as *mut u8, end - base) }.ok_or(())?;
                talc.source.end = Some(heap_end);
            }
            Some(heap_end) => {
                let current = heap_end.as_ptr() as usize;
                let end = round_up(current + want).min(limit);
                if end <= current {
                    return Err(());
                }
                // SAFETY: heap_end came from this allocator; current..end is unclaimed heap RAM.
                let new_end = unsafe { talc.extend(heap_end, end as *mut u8) };
                if new_end == heap_end {
                    return Err(());
                }
                talc.source.end = Some(new_end);
            }
        }
        Ok(())
    }
}
