//! Giving back the untouched parts of fresh huge pages after an invocation.
//!
//! `pass` maps fresh memory (above the snapshot's highest pool chunk, where the guest's heap
//! grows) with transparent huge pages: on shadow paging one KVM fault per 2 MiB instead of
//! one per 4 KiB page. The price is the partly used huge pages — at the top of the heap,
//! and wherever an allocation reserved more than it wrote: each counts 2 MiB of private
//! memory, however little of it the guest wrote. Those pages are needed only while the
//! guest fills them. Once an invocation has answered, [`Trim::run`] goes over the fresh
//! huge chunks that are resident, and for each that holds at least [`MIN_ZERO_PAGES`]
//! all-zero 4 KiB pages: copies its other pages out, drops the whole chunk (which frees the
//! huge page at once; dropping only the zero pages would split it but keep all 2 MiB
//! allocated until the kernel's deferred split runs), marks it for small pages and writes
//! the saved pages back. The guest sees the same bytes (a dropped page reads as zero, which
//! it was); what stays private is what the guest wrote, at 4 KiB granularity.
//!
//! The chunks `pass` mapped with 64 KiB folios (where the heap may end) are marked for
//! small pages and trimmed alike: that keeps the kernel's background collapsing
//! (khugepaged) from making them huge pages while the VM lives, and gives back the unused
//! tails of their folios. After a trim, the guest's later writes there take 4 KiB pages.
//!
//! Run only while no vCPU runs (between invocations); KVM drops its mappings of the chunk
//! through its MMU notifier, so the next touch faults them in again, 4 KiB at a time. A VM
//! that is torn down right after its invocation gains nothing from a trim; one kept alive
//! for the next request (a warm VM) holds the smaller footprint for as long as it lives.

use crate::vstate::memory::{Advice, GuestMemory};
use snapvisor_abi::{HUGE_PAGE_SIZE, PAGE_SIZE};
use std::io;
use std::time::{Duration, Instant};

/// A chunk with fewer all-zero pages than this (256 KiB) keeps its huge page.
pub const MIN_ZERO_PAGES: usize = 64;

/// The fresh memory a restore mapped with huge pages, and with 64 KiB folios: guest byte
/// ranges, 2 MiB aligned.
#[derive(Clone, Debug, Default)]
pub struct Trim {
    ranges: Vec<(u64, u64)>,
    folios: Vec<(u64, u64)>,
}

/// What a trim did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Resident huge chunks looked at.
    pub chunks_scanned: u64,
    /// Chunks given back and refilled with small pages.
    pub chunks_trimmed: u64,
    /// Bytes of all-zero pages dropped from the trimmed chunks (private ones are freed; a
    /// chunk the guest only read maps the shared zero page, and frees nothing).
    pub zero_bytes_dropped: u64,
    /// Time taken.
    pub duration: Duration,
}

impl Trim {
    /// Adds the range `[start, end)` (2 MiB aligned), merging it with the previous one when
    /// they touch.
    pub fn add(&mut self, start: u64, end: u64) {
        push_range(&mut self.ranges, start, end);
    }

    /// Adds a range mapped with 64 KiB folios: a trim marks it for small pages first, so that
    /// the kernel's background collapsing (khugepaged) does not turn its partly used chunks
    /// into huge pages while the VM lives, then trims its chunks like the others.
    pub fn add_folios(&mut self, start: u64, end: u64) {
        push_range(&mut self.folios, start, end);
    }

    /// Whether there is nothing to trim.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.folios.is_empty()
    }

    /// Trims the chunks of `memory` in the ranges (see the module docs). The caller makes
    /// sure no vCPU runs meanwhile.
    pub fn run(&self, memory: &GuestMemory) -> io::Result<Trimmed> {
        let started = Instant::now();
        let mapping = memory.mapping();
        let mut done = Trimmed::default();
        let (chunk, page) = (HUGE_PAGE_SIZE as usize, PAGE_SIZE as usize);
        let mut buf = vec![0u8; page];
        for &(start, end) in &self.folios {
            mapping.advise(start as usize, (end - start) as usize, Advice::NoHugePage)?;
        }
        // Folio chunks are scanned too: khugepaged may have made one a huge page meanwhile,
        // and a folio's unused tail pages are given back alike.
        for &(start, end) in self.ranges.iter().chain(&self.folios) {
            let resident = mapping.resident_pages(start as usize, (end - start) as usize)?;
            for (i, pages) in resident.chunks(chunk / page).enumerate() {
                if !pages.iter().any(|&r| r) {
                    continue;
                }
                let at = start + (i * chunk) as u64;
                done.chunks_scanned += 1;
                let mut zero = Vec::with_capacity(pages.len());
                for p in 0..pages.len() {
                    zero.push(page_is_zero(memory, at + (p * page) as u64, &mut buf)?);
                }
                let zeros = zero.iter().filter(|&&z| z).count();
                if zeros < MIN_ZERO_PAGES {
                    continue;
                }
                let mut kept = Vec::with_capacity((pages.len() - zeros) * page);
                for p in (0..pages.len()).filter(|&p| !zero[p]) {
                    memory.read(at + (p * page) as u64, &mut buf).map_err(io::Error::other)?;
                    kept.extend_from_slice(&buf);
                }
                // An all-zero chunk (read, or written with zeros) is only dropped: it may
                // take a huge page again when the guest fills it.
                if zeros < pages.len() {
                    mapping.advise(at as usize, chunk, Advice::NoHugePage)?;
                }
                mapping.advise(at as usize, chunk, Advice::DontNeed)?;
                for (p, bytes) in (0..pages.len()).filter(|&p| !zero[p]).zip(kept.chunks_exact(page)) {
                    memory.write(at + (p * page) as u64, bytes).map_err(io::Error::other)?;
                }
                done.chunks_trimmed += 1;
                done.zero_bytes_dropped += zeros as u64 * PAGE_SIZE;
            }
        }
        done.duration = started.elapsed();
        Ok(done)
    }
}

/// Appends `[start, end)` (2 MiB aligned) to `ranges`, merged with the last when they touch.
fn push_range(ranges: &mut Vec<(u64, u64)>, start: u64, end: u64) {
    debug_assert!(start.is_multiple_of(HUGE_PAGE_SIZE) && end.is_multiple_of(HUGE_PAGE_SIZE));
    match ranges.last_mut() {
        Some((_, last_end)) if *last_end == start => *last_end = end,
        _ => ranges.push((start, end)),
    }
}

/// Whether the 4 KiB page at `addr` is all zero: its first 64 bytes decide for nearly every
/// page in use, the rest is read only when they are zero.
fn page_is_zero(memory: &GuestMemory, addr: u64, buf: &mut [u8]) -> io::Result<bool> {
    memory.read(addr, &mut buf[..64]).map_err(io::Error::other)?;
    if buf[..64].iter().any(|&b| b != 0) {
        return Ok(false);
    }
    memory.read(addr, buf).map_err(io::Error::other)?;
    Ok(buf.iter().all(|&b| b == 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MemoryUsage;
    use crate::vstate::memory::Mapping;

    fn fresh_memory(len: u64) -> GuestMemory {
        let mapping = Mapping::reserve(len as usize).expect("reserve");
        mapping.map_anonymous(0, len as usize).expect("anonymous");
        mapping.advise(0, len as usize, Advice::HugePage).expect("huge pages");
        GuestMemory::new(mapping).expect("view")
    }

    fn private(memory: &GuestMemory) -> u64 {
        let mapping = memory.mapping();
        MemoryUsage::scan(mapping.as_ptr(), mapping.len()).expect("pagemap").private_bytes
    }

    #[test]
    fn a_trim_keeps_every_byte_and_frees_the_zero_pages_of_sparse_chunks() {
        let memory = fresh_memory(8 * HUGE_PAGE_SIZE);
        let mut trim = Trim::default();
        trim.add(0, 4 * HUGE_PAGE_SIZE);
        trim.add(4 * HUGE_PAGE_SIZE, 8 * HUGE_PAGE_SIZE);
        // Chunk 0: every page written (dense, stays); chunk 1: ten pages; chunk 2: one byte
        // near its end; chunk 3 never touched; chunk 5: a page written with zeros.
        let dense: Vec<u8> = (0..HUGE_PAGE_SIZE).map(|i| (i % 251) as u8 + 1).collect();
        memory.write(0, &dense).unwrap();
        for p in 0..10u64 {
            memory.write(HUGE_PAGE_SIZE + p * 3 * PAGE_SIZE + 17, &[p as u8 + 1; 100]).unwrap();
        }
        memory.write(3 * HUGE_PAGE_SIZE - 5, &[0xAB]).unwrap();
        memory.write(5 * HUGE_PAGE_SIZE, &[0u8; PAGE_SIZE as usize]).unwrap();
        let written = [0, 1, 2, 5];
        let read = |memory: &GuestMemory| -> Vec<Vec<u8>> {
            written
                .iter()
                .map(|&c| {
                    let mut bytes = vec![0u8; HUGE_PAGE_SIZE as usize];
                    memory.read(c * HUGE_PAGE_SIZE, &mut bytes).unwrap();
                    bytes
                })
                .collect()
        };
        let before = read(&memory);
        let private_before = private(&memory);

        let done = trim.run(&memory).expect("trim");

        assert!(before == read(&memory), "a trim changed guest memory");
        let mut untouched = vec![0xFFu8; HUGE_PAGE_SIZE as usize];
        memory.read(3 * HUGE_PAGE_SIZE, &mut untouched).unwrap();
        assert!(untouched.iter().all(|&b| b == 0));
        let private_after = private(&memory);
        // Chunks 1, 2 and 5 are trimmed (whether the kernel gave them huge pages or not);
        // chunk 0 is dense and the others were never resident.
        assert_eq!(done.chunks_scanned, 4, "{done:?}");
        assert_eq!(done.chunks_trimmed, 3, "{done:?}");
        assert_eq!(done.zero_bytes_dropped, (3 * 512 - 10 - 1) * PAGE_SIZE, "{done:?}");
        // What stays private: the dense chunk, ten pages and one page.
        let kept = HUGE_PAGE_SIZE + 11 * PAGE_SIZE;
        assert!(
            private_after == kept && private_after < private_before,
            "private {private_before} → {private_after} bytes, expected {kept}"
        );
        // Trimming again finds nothing more to give back (chunk 3, read above, maps only
        // the zero page and is dropped, which frees nothing private).
        let again = trim.run(&memory).expect("trim");
        assert_eq!(private(&memory), kept, "{again:?}");
    }

    /// The `VmFlags` of the mapping holding `addr`.
    fn vm_flags(addr: usize) -> String {
        let entries = crate::metrics::smaps();
        let entry = entries.iter().find(|e| e.range.contains(&addr)).expect("a mapping holds the address");
        format!("VmFlags: {}", entry.field("VmFlags").unwrap_or_default())
    }

    #[test]
    fn a_trim_marks_folio_chunks_for_small_pages_and_keeps_their_bytes() {
        let memory = fresh_memory(4 * HUGE_PAGE_SIZE);
        let mut trim = Trim::default();
        assert!(trim.is_empty());
        trim.add_folios(0, HUGE_PAGE_SIZE);
        trim.add_folios(HUGE_PAGE_SIZE, 2 * HUGE_PAGE_SIZE);
        assert!(!trim.is_empty());
        memory.write(HUGE_PAGE_SIZE + 5, b"kept").unwrap();
        let base = memory.mapping().as_ptr() as usize;
        assert!(!vm_flags(base).contains(" nh"), "{}", vm_flags(base));

        let done = trim.run(&memory).expect("trim");

        // khugepaged may not collapse them any more: advised for small pages.
        for chunk in 0..2 {
            let flags = vm_flags(base + (chunk * HUGE_PAGE_SIZE) as usize);
            assert!(flags.contains(" nh") && !flags.contains(" hg"), "{flags}");
        }
        assert!(vm_flags(base + (3 * HUGE_PAGE_SIZE) as usize).contains(" hg"));
        let mut bytes = [0u8; 4];
        memory.read(HUGE_PAGE_SIZE + 5, &mut bytes).unwrap();
        assert_eq!(&bytes, b"kept");
        // Chunk 1 (a huge page here, as if khugepaged had collapsed it) is trimmed to its one
        // written page; chunk 0 was never resident.
        assert_eq!((done.chunks_scanned, done.chunks_trimmed), (1, 1), "{done:?}");
        assert_eq!(private(&memory), PAGE_SIZE);
    }
}
