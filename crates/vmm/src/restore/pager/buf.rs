//! A page-aligned buffer (`UFFDIO_COPY` needs a page-aligned source).

use snapvisor_abi::PAGE_SIZE;

/// A page-aligned, zero-filled heap buffer.
pub(crate) struct AlignedBuf {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

// SAFETY: the buffer is owned memory with no thread affinity; `&mut self` guards writes.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// A buffer of `len` bytes (at least one page); `None` if the allocation fails.
    pub(crate) fn new(len: usize) -> Option<Self> {
        let len = len.max(PAGE_SIZE as usize);
        let layout = std::alloc::Layout::from_size_align(len, PAGE_SIZE as usize).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        (!ptr.is_null()).then_some(AlignedBuf { ptr, layout })
    }

    /// The first `len` bytes (at most the buffer's size).
    pub(crate) fn slice(&mut self, len: usize) -> &mut [u8] {
        // SAFETY: `ptr` owns `layout.size()` bytes and the length never exceeds it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, len.min(self.layout.size())) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}
