//! `pass`: guest memory mapped straight onto the persistent-memory pool (PASS).
//!
//! The snapshot's complete address index gives, for every 2 MiB of guest memory, its
//! pool extent or "zero", and the pages a recorded invocation wrote (the write set). Every
//! pool run is mapped `MAP_PRIVATE` from the pool itself: reads use the pool's own pages
//! (zero-copy, shared by every VM of the snapshot), a write copies the page into the VM's
//! private memory, so no guest ever writes the pool. Zero runs are anonymous memory. Before
//! resume, everything the guest will need is pre-faulted, so that its first touch finds
//! the host's page tables filled. Chunk by chunk:
//!
//! | chunk | mapping | pre-faulted |
//! |---|---|---|
//! | pool, nothing recorded written | private, 2 MiB pages where the medium has them | read (`MADV_POPULATE_READ`): one KVM fault per 2 MiB |
//! | pool, pages recorded written | private, 4 KiB pages | the written pages copied (`MADV_POPULATE_WRITE`); the rest at first touch |
//! | zero, below the highest pool chunk (mailbox, request area, holes) | anonymous, 4 KiB pages | the recorded written pages |
//! | zero, above it (where the heap grows), the recording wrote fewer than 64 pages | anonymous, 4 KiB pages | the recorded written pages |
//! | zero, above it, the chunk just above the highest one the recording wrote | anonymous, 64 KiB folios where the host has them (`vstate/folios.rs`), else huge pages | a page table (one zero page read per chunk) |
//! | zero, above it, otherwise | anonymous, transparent huge pages | nothing: the first write fills 2 MiB |
//!
//! So a VM's private memory is what it writes, at 4 KiB granularity, except where its heap
//! grows by much: requests allocate densely there (whole chunks), and one fault per 2 MiB
//! instead of one per 4 KiB is worth it. Where another input's heap is likely to end — just
//! above the recording's — 64 KiB folios keep a partly used chunk from costing 2 MiB, at
//! one KVM fault per 32 KiB written on shadow paging (measured alternatives in
//! `docs/ARCHITECTURE.md`); and pages the recording saw written cost no copy-on-write fault
//! after resume. After an invocation, [`RestoredVm::trim`](super::RestoredVm::trim) can
//! give back the untouched parts of those fresh huge pages (`restore/trim.rs`). Pages the
//! recording did not see (another input) are copied on demand, 4 KiB at a time. On a
//! medium with only 2 MiB pages (hugetlbfs) a write copies 2 MiB: the ablation's "2 MiB
//! pages" case.
//!
//! Device-dax cannot be mapped privately; a pool there is refused with a clear error
//! rather than silently written to.

use super::{mem_err, MemoryStrategy, OpenedSnapshot, RestoreError, RestoredMemory, Strategy, Trim};
use crate::pool::format::{Index, Run, EXTENT};
use crate::pool::medium::Medium;
use crate::snapshot::PageRange;
use crate::vstate::folios;
use crate::vstate::memory::{Advice, GuestMemory, Mapping};
use snapvisor_abi::PAGE_SIZE;
use std::path::Path;

/// The `pass` strategy.
#[derive(Clone, Copy, Debug)]
pub struct Pass {
    /// Pre-fault before resume (the PASS design; off only for the ablation).
    pub prefault: bool,
    /// Keep the recorded write set apart: 4 KiB pages for the chunks it touches, its pages
    /// copied before resume (off only for the ablation: every pool chunk then maps with
    /// 2 MiB pages and is split by the guest's first write).
    pub write_set: bool,
    /// Map fresh memory (above the highest pool chunk) with 4 KiB pages too: private
    /// memory exactly what is written, at one fault per page (an ablation).
    pub fresh_small_pages: bool,
    /// Map the [`FOLIO_CHUNKS`] chunk(s) above the highest one the recording wrote with
    /// 64 KiB folios (huge pages otherwise). By default: whether the host gives them
    /// (`vstate/folios.rs`, read once per process, so before any restore is timed).
    pub fresh_folios: bool,
}

impl Default for Pass {
    fn default() -> Self {
        Pass { prefault: true, write_set: true, fresh_small_pages: false, fresh_folios: folios::available() }
    }
}

/// Refuses media the kernel cannot map copy-on-write (device-dax): guests would write the pool.
fn require_private_mappings(medium: Medium, path: &Path) -> Result<(), RestoreError> {
    if medium.allows_private_mappings() {
        return Ok(());
    }
    Err(RestoreError::Unsupported(format!(
        "{}: {medium} cannot be mapped copy-on-write, so guests would write the pool; put the pool on a DAX filesystem or use the emulated pool",
        path.display()
    )))
}

/// Fewer recorded written pages than this in a chunk of fresh memory (256 KiB): the
/// invocation writes little there, so 4 KiB pages keep its private memory exact.
const SPARSE_PAGES: u64 = 64;

fn advise(mapping: &Mapping, start: u64, len: u64, advice: Advice, what: &'static str) -> Result<(), RestoreError> {
    mapping.advise(start as usize, len as usize, advice).map_err(mem_err(what))
}

impl Pass {
    /// The recorded written pages of 2 MiB chunk `chunk` (none when the write set is off).
    fn written(&self, index: &Index, chunk: u64) -> Vec<PageRange> {
        if self.write_set {
            index.written_in(chunk).collect()
        } else {
            Vec::new()
        }
    }

    /// Copies the pages of `ranges` before resume (when pre-faulting); returns the bytes.
    fn copy_ahead(&self, mapping: &Mapping, ranges: &[PageRange]) -> Result<u64, RestoreError> {
        if !self.prefault {
            return Ok(0);
        }
        for r in ranges {
            advise(mapping, r.start(), r.count * PAGE_SIZE, Advice::PopulateWrite, "copying written pages ahead")?;
        }
        Ok(ranges.iter().map(|r| r.count * PAGE_SIZE).sum())
    }

    /// A pool run: 4 KiB pages for its chunks with recorded writes, their written pages
    /// copied; the other chunks read-mapped with 2 MiB pages. Returns the bytes pre-faulted.
    ///
    /// The unwritten pages of a 4 KiB chunk are not read-mapped ahead: the guest's first
    /// touch of a 4 KiB host mapping costs a KVM fault whether or not the host's page table
    /// was filled (filling it saves only the host's minor fault inside), and filling 512
    /// entries costs ~0.25 ms per chunk for the few pages an invocation reads there.
    fn prepare_pool_run(&self, mapping: &Mapping, index: &Index, run: &Run) -> Result<u64, RestoreError> {
        let mut prepared = 0;
        // Neighbouring chunks without recorded writes are read-mapped in one call.
        let mut unwritten: Option<(u64, u64)> = None;
        for chunk in run.guest / EXTENT..(run.guest + run.len) / EXTENT {
            let (start, end) = (chunk * EXTENT, (chunk + 1) * EXTENT);
            let written = self.written(index, chunk);
            if written.is_empty() {
                unwritten = Some(unwritten.map_or((start, end), |(first, _)| (first, end)));
                continue;
            }
            prepared += self.populate_read(mapping, unwritten.take())?;
            advise(mapping, start, EXTENT, Advice::NoHugePage, "advising small pages for written chunks")?;
            prepared += self.copy_ahead(mapping, &written)?;
        }
        prepared += self.populate_read(mapping, unwritten)?;
        Ok(prepared)
    }

    /// Read-maps `[start, end)` of the pool ahead (when pre-faulting); returns the bytes.
    fn populate_read(&self, mapping: &Mapping, range: Option<(u64, u64)>) -> Result<u64, RestoreError> {
        match range {
            Some((start, end)) if self.prefault => {
                advise(mapping, start, end - start, Advice::PopulateRead, "pre-faulting pool extents")?;
                Ok(end - start)
            }
            _ => Ok(0),
        }
    }

    /// How the zero chunk at `start` with `written` recorded pages is backed.
    fn backing(&self, start: u64, written: &[PageRange], fresh: &Fresh) -> Backing {
        let pages: u64 = written.iter().map(|r| r.count).sum();
        if start < fresh.start || self.fresh_small_pages || (pages > 0 && pages < SPARSE_PAGES) {
            Backing::Small
        } else if fresh.folios.contains(&start) {
            Backing::Folios
        } else {
            Backing::Huge
        }
    }

    /// A zero run, chunk by chunk (see the module docs for the table): below `fresh.start`
    /// 4 KiB pages with the recorded written pages made ahead; above it, where the heap grows
    /// into memory the snapshot never had, transparent huge pages — except where the
    /// recording wrote only a few pages (4 KiB pages, those made ahead), just above the
    /// highest chunk the recording wrote (64 KiB folios, where the host has them), or with
    /// `fresh_small_pages`. Returns the bytes pre-faulted.
    fn prepare_zero_run(
        &self,
        mapping: &Mapping,
        index: &Index,
        run: &Run,
        fresh: &Fresh,
        trim: &mut Trim,
    ) -> Result<u64, RestoreError> {
        let mut prepared = 0;
        // Neighbouring chunks with the same backing get one call: (backing, first byte, end).
        let mut pending: Option<(Backing, u64, u64)> = None;
        // Returns the bytes pre-faulted (a folio chunk's page-table page).
        let mut flush = |(backing, start, end): (Backing, u64, u64)| match backing {
            Backing::Huge => {
                trim.add(start, end);
                advise(mapping, start, end - start, Advice::HugePage, "advising huge pages for fresh memory").map(|_| 0)
            }
            Backing::Small => {
                advise(mapping, start, end - start, Advice::NoHugePage, "advising small pages for zero ranges")
                    .map(|_| 0)
            }
            Backing::Folios => {
                trim.add_folios(start, end);
                prepare_folios(mapping, start, end)
            }
        };
        for chunk in run.guest / EXTENT..(run.guest + run.len) / EXTENT {
            let start = chunk * EXTENT;
            let written = self.written(index, chunk);
            let backing = self.backing(start, &written, fresh);
            match pending {
                Some((b, first, end)) if b == backing && end == start => pending = Some((b, first, start + EXTENT)),
                _ => {
                    if let Some(p) = pending.replace((backing, start, start + EXTENT)) {
                        prepared += flush(p)?;
                    }
                }
            }
            if backing == Backing::Small {
                prepared += self.copy_ahead(mapping, &written)?;
            }
        }
        if let Some(p) = pending {
            prepared += flush(p)?;
        }
        Ok(prepared)
    }

    /// Where fresh memory starts, and which of its chunks take 64 KiB folios: the
    /// [`FOLIO_CHUNKS`] above the highest chunk the recording wrote, where another input's
    /// heap is likely to end (with `fresh_folios`).
    fn fresh(&self, index: &Index) -> Fresh {
        let start = index.runs.iter().filter(|r| r.pool.is_some()).map(|r| r.guest + r.len).max().unwrap_or(0);
        if !self.fresh_folios || self.fresh_small_pages {
            return Fresh { start, folios: 0..0 };
        }
        let reach = index.written.last().map_or(0, |r| (r.first + r.count) * PAGE_SIZE);
        let first = reach.div_ceil(EXTENT).saturating_mul(EXTENT).max(start);
        Fresh { start, folios: first..first.saturating_add(FOLIO_CHUNKS * EXTENT) }
    }
}

/// How a chunk of zero memory is backed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backing {
    /// 4 KiB pages.
    Small,
    /// 64 KiB folios: one host fault per 64 KiB, on shadow paging one KVM fault per 32 KiB.
    Folios,
    /// Transparent huge pages: one fault per 2 MiB.
    Huge,
}

/// Fresh memory of a restore: where it starts (the end of the highest pool run) and the
/// guest bytes whose unrecorded chunks take 64 KiB folios.
struct Fresh {
    start: u64,
    folios: std::ops::Range<u64>,
}

/// Chunks above the recording's highest written chunk that take 64 KiB folios: the one
/// where an input a little larger than the recording's ends, partly used. An input that
/// fills it instead costs 64 more KVM faults (~1 ms on shadow paging), the bound on what
/// folios can cost a restore; more chunks were measured to cost more than they saved
/// (`docs/ARCHITECTURE.md`, "Where the heap ends").
pub const FOLIO_CHUNKS: u64 = 1;

/// Maps `[start, end)` (2 MiB aligned) for 64 KiB folios: a page table in each chunk, made
/// by reading its last page while huge pages are off (the zero page is mapped), so that
/// the guest's first write there cannot take a whole 2 MiB page; then advised again, for
/// the folios. (A kernel allocates folios of an advised size only for advised memory; the
/// chunk's last 64 KiB, holding that page, take 4 KiB pages.) Done also without
/// pre-faulting: it is how the chunk is mapped. Returns the bytes read-mapped.
fn prepare_folios(mapping: &Mapping, start: u64, end: u64) -> Result<u64, RestoreError> {
    advise(mapping, start, end - start, Advice::NoHugePage, "advising small pages for folio chunks")?;
    for chunk in (start..end).step_by(EXTENT as usize) {
        advise(
            mapping,
            chunk + EXTENT - PAGE_SIZE,
            PAGE_SIZE,
            Advice::PopulateRead,
            "mapping a page table per folio chunk",
        )?;
    }
    advise(mapping, start, end - start, Advice::HugePage, "advising 64 KiB folios")?;
    Ok((end - start) / EXTENT * PAGE_SIZE)
}

impl MemoryStrategy for Pass {
    fn strategy(&self) -> Strategy {
        Strategy::Pass
    }

    fn restore_memory(&self, snapshot: &OpenedSnapshot, mapping: Mapping) -> Result<RestoredMemory, RestoreError> {
        let OpenedSnapshot::Pool(snapshot) = snapshot else {
            return Err(RestoreError::WrongSource {
                strategy: Strategy::Pass,
                needs: "a pool snapshot",
                got: "a snapshot directory",
            });
        };
        let pool = snapshot.pool();
        require_private_mappings(pool.medium(), pool.path())?;
        let index = snapshot.index();
        let fd = pool.fd()?;
        // Where the guest's heap grows into memory the snapshot never had.
        let fresh = self.fresh(index);
        let mut prepared = 0;
        let mut trim = Trim::default();
        for run in &index.runs {
            let (at, len) = (run.guest as usize, run.len as usize);
            prepared += match run.pool {
                Some(offset) => {
                    mapping.map_file(at, len, fd, offset, false).map_err(|e| {
                        if e.raw_os_error() == Some(libc::ENOMEM) && pool.medium().huge_pages() {
                            RestoreError::Unsupported(format!(
                                "{}: not enough free huge pages to reserve copy-on-write room for this VM ({} MiB); initialise the pool with more --cow-mib",
                                pool.path().display(),
                                run.len >> 20
                            ))
                        } else {
                            RestoreError::Memory { what: "mapping pool extents", source: e }
                        }
                    })?;
                    self.prepare_pool_run(&mapping, index, run)?
                }
                None => {
                    mapping.map_anonymous(at, len).map_err(mem_err("mapping zero ranges"))?;
                    self.prepare_zero_run(&mapping, index, run, &fresh, &mut trim)?
                }
            };
        }
        let memory = GuestMemory::new(mapping).map_err(mem_err("creating the guest memory view"))?;
        // The VM keeps the lease on its extents: no import may reuse them while it runs.
        Ok(RestoredMemory {
            memory,
            pager: None,
            prepared_bytes: prepared,
            keep_alive: Some(Box::new(snapshot.lease())),
            trim,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_dax_is_refused_with_a_clear_error() {
        let err = require_private_mappings(Medium::DevDax, Path::new("/dev/dax0.0")).unwrap_err();
        assert!(err.to_string().contains("cannot be mapped copy-on-write"), "{err}");
        for ok in [Medium::FsDax, Medium::EmulatedHugetlbfs, Medium::EmulatedTmpfs { huge: true }] {
            assert!(require_private_mappings(ok, Path::new("/p")).is_ok());
        }
    }

    #[test]
    fn zero_chunks_take_small_pages_folios_or_huge_pages_by_where_they_lie() {
        let pass = Pass::default();
        let fresh = Fresh { start: 4 * EXTENT, folios: 6 * EXTENT..8 * EXTENT };
        let few = [PageRange { first: 0, count: SPARSE_PAGES - 1 }];
        let many = [PageRange { first: 0, count: 512 }];
        assert_eq!(pass.backing(2 * EXTENT, &[], &fresh), Backing::Small, "below fresh memory");
        assert_eq!(pass.backing(4 * EXTENT, &few, &fresh), Backing::Small, "a few recorded pages");
        assert_eq!(pass.backing(5 * EXTENT, &many, &fresh), Backing::Huge, "recorded dense");
        assert_eq!(pass.backing(5 * EXTENT, &[], &fresh), Backing::Huge, "below the folio chunks");
        assert_eq!(pass.backing(6 * EXTENT, &[], &fresh), Backing::Folios);
        assert_eq!(pass.backing(7 * EXTENT, &[], &fresh), Backing::Folios);
        assert_eq!(pass.backing(8 * EXTENT, &[], &fresh), Backing::Huge, "above the folio chunks");
        let small = Pass { fresh_small_pages: true, ..pass };
        assert_eq!(small.backing(6 * EXTENT, &[], &fresh), Backing::Small);
    }

    #[test]
    fn folio_chunks_start_above_the_highest_recorded_write_and_not_below_fresh_memory() {
        let run = |guest, len, pool| Run { guest, len, pool, flags: 0 };
        let mut index = Index {
            mem_size: 64 * EXTENT,
            runs: vec![run(0, 10 * EXTENT, Some(0)), run(10 * EXTENT, 54 * EXTENT, None)],
            // The highest write ends inside chunk 12.
            written: vec![PageRange { first: 3, count: 2 }, PageRange { first: 12 * 512 + 7, count: 1 }],
            recorded_with: Some("A".into()),
        };
        let pass = Pass { fresh_folios: true, ..Pass::default() };
        let fresh = pass.fresh(&index);
        assert_eq!(fresh.start, 10 * EXTENT);
        assert_eq!(fresh.folios, 13 * EXTENT..(13 + FOLIO_CHUNKS) * EXTENT);
        // Nothing recorded in fresh memory: the folios start where it does.
        index.written.truncate(1);
        assert_eq!(pass.fresh(&index).folios, 10 * EXTENT..(10 + FOLIO_CHUNKS) * EXTENT);
        // No folios (on this host, or turned off), or 4 KiB pages everywhere: none.
        assert!(Pass { fresh_folios: false, ..pass }.fresh(&index).folios.is_empty());
        assert!(Pass { fresh_small_pages: true, ..pass }.fresh(&index).folios.is_empty());
    }

    /// `AnonHugePages` (bytes) of the mappings that start inside `[addr, addr + len)`
    /// (neighbouring chunks with the same advice are one mapping).
    fn anon_huge_bytes(addr: usize, len: usize) -> u64 {
        let inside = addr..addr + len;
        crate::metrics::smaps()
            .iter()
            .filter(|e| inside.contains(&e.range.start))
            .map(|e| e.bytes("AnonHugePages"))
            .sum()
    }

    #[test]
    fn a_folio_chunk_never_takes_a_huge_page_and_its_neighbour_does() {
        if !folios::huge_pages_advised() {
            eprintln!("skipped: transparent huge pages are off here");
            return;
        }
        // Chunks 1 (folios) and 2 (the control), between two inaccessible chunks that keep
        // other tests' memory from merging into their mapping.
        let mapping = Mapping::reserve(4 * EXTENT as usize).expect("reserve");
        mapping.map_anonymous(EXTENT as usize, 2 * EXTENT as usize).expect("anonymous");
        advise(&mapping, EXTENT, 2 * EXTENT, Advice::HugePage, "test").unwrap();
        assert_eq!(prepare_folios(&mapping, EXTENT, 2 * EXTENT).unwrap(), PAGE_SIZE);
        let memory = GuestMemory::new(mapping).expect("view");
        for chunk in 1..3 {
            memory.write(chunk * EXTENT + 8192, &[1]).unwrap();
        }
        // Both chunks were written; only the control may hold a huge page.
        let base = memory.mapping().as_ptr() as usize;
        match anon_huge_bytes(base + EXTENT as usize, 2 * EXTENT as usize) {
            huge if huge == EXTENT => {}
            0 => eprintln!("skipped: the control chunk got no huge page either (memory fragmented?)"),
            huge => panic!("{huge} bytes of huge pages: the folio chunk took one"),
        }
    }
}
