//! `manifest.json`: what a snapshot is (function, memory size, layout, digests, zero
//! ranges, the state file's size and CRC), sealed with its own CRC-64.
//!
//! The CRC covers a canonical encoding of every other field (postcard, in declaration
//! order), so any change to any field is detected on open, whatever the JSON looks like.
//! [`Manifest::decode`] checks, in this order: JSON, format version, CRC, then each field
//! against the bounds of the format (memory size, names, zero ranges, digest).

use super::error::{corrupt, in_range};
use super::{SnapshotError, FORMAT_VERSION, MEMORY, STATE};
use crate::checksum::{crc64, parse_digest};
use serde::{Deserialize, Serialize};
use snapvisor_abi::{layout, HUGE_PAGE_SIZE, PAGE_SIZE};
use std::path::Path;

/// Largest manifest accepted: the fixed fields plus the most zero ranges a guest of
/// `layout::MAX_MEM_SIZE` can have (every other page zero), at most [`RANGE_JSON_MAX`]
/// bytes each as written.
pub const MANIFEST_MAX: u64 = (64 << 10) + (layout::MAX_MEM_SIZE / PAGE_SIZE / 2 + 1) * RANGE_JSON_MAX;
/// Bytes one zero range takes in the written manifest, at most (checked by a test).
pub const RANGE_JSON_MAX: u64 = 80;
/// Longest function name and digest text accepted.
pub const NAME_MAX: usize = 256;

/// The guest layout recorded with a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutRecord {
    /// Mailbox address.
    pub mailbox: u64,
    /// First byte of the image.
    pub image_base: u64,
    /// One past the image.
    pub image_end: u64,
    /// First heap byte.
    pub heap_start: u64,
    /// One past the heap.
    pub heap_end: u64,
    /// Initial stack top.
    pub stack_top: u64,
}

/// A run of all-zero guest pages: `[first, first + count)` in 4 KiB pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRange {
    /// First page index.
    pub first: u64,
    /// Number of pages.
    pub count: u64,
}

impl PageRange {
    /// First byte.
    pub fn start(&self) -> u64 {
        self.first * PAGE_SIZE
    }

    /// One past the last byte.
    pub fn end(&self) -> u64 {
        (self.first + self.count) * PAGE_SIZE
    }
}

/// What `manifest.json` says about the memory image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryRecord {
    /// File name inside the snapshot directory.
    pub file: String,
    /// `xxh3:<hex>` of the whole image (zero pages included).
    pub digest: String,
    /// Pages that are not all zero (stored in the file).
    pub data_pages: u64,
    /// All-zero pages, as sorted, non-overlapping ranges (holes in the file).
    pub zero_ranges: Vec<PageRange>,
}

/// What `manifest.json` says about the state file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRecord {
    /// File name inside the snapshot directory.
    pub file: String,
    /// CRC-64/XZ stored at the end of the state file.
    pub crc64: u64,
    /// Bytes of the state file.
    pub bytes: u64,
}

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Guest ABI version the snapshot was taken under.
    pub abi_version: u32,
    /// Function (or image) name.
    pub function: String,
    /// `xxh3:<hex>` of the guest ELF image the VM booted.
    pub image_digest: String,
    /// Guest memory bytes.
    pub mem_size: u64,
    /// Guest layout.
    pub layout: LayoutRecord,
    /// Memory image.
    pub memory: MemoryRecord,
    /// State file.
    pub state: StateRecord,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
    /// CRC-64/XZ of the canonical encoding of all the fields above ([`Manifest::checksum`]).
    pub crc64: u64,
}

impl Manifest {
    /// The CRC-64 of the fields other than `crc64`, postcard-encoded in declaration order.
    pub fn checksum(&self) -> u64 {
        let fields = (
            self.format_version,
            self.abi_version,
            &self.function,
            &self.image_digest,
            self.mem_size,
            &self.layout,
            &self.memory,
            &self.state,
            self.created_unix,
        );
        // Encoding plain integers, strings and vectors into memory cannot fail.
        crc64(&postcard::to_stdvec(&fields).expect("postcard encodes manifest fields"))
    }

    /// Stores [`Manifest::checksum`] in `crc64` (after the fields are final).
    pub fn seal(&mut self) {
        self.crc64 = self.checksum();
    }

    /// The manifest as written: pretty JSON.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest is plain data")
    }

    /// Decodes and checks the manifest read from `path` (see the module documentation).
    pub fn decode(bytes: &[u8], path: &Path) -> Result<Self, SnapshotError> {
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| corrupt(path, e.to_string()))?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(SnapshotError::Version {
                path: path.to_path_buf(),
                found: manifest.format_version,
                expected: FORMAT_VERSION,
            });
        }
        let computed = manifest.checksum();
        if computed != manifest.crc64 {
            return Err(SnapshotError::Checksum { path: path.to_path_buf(), stored: manifest.crc64, computed });
        }
        manifest.check(path)?;
        Ok(manifest)
    }

    /// Checks the fields against the format's bounds.
    fn check(&self, path: &Path) -> Result<(), SnapshotError> {
        check_abi(path, self.abi_version)?;
        if self.state.file != STATE || self.memory.file != MEMORY {
            return Err(corrupt(path, format!("file names must be `{STATE}` and `{MEMORY}`")));
        }
        if self.function.len() > NAME_MAX || self.image_digest.len() > NAME_MAX {
            return Err(corrupt(path, format!("function name or image digest longer than {NAME_MAX} bytes")));
        }
        if parse_digest(&self.memory.digest).is_none() {
            return Err(corrupt(path, "the memory digest is not `xxh3:` and 16 hex digits"));
        }
        check_mem_size(path, self.mem_size)?;
        in_range(path, "state file size", self.state.bytes, 1, super::state_file::STATE_MAX)?;
        self.check_zero_ranges(path)
    }

    /// Zero ranges: non-empty, sorted, disjoint, inside memory, and with the data pages
    /// they add up to the memory's pages.
    fn check_zero_ranges(&self, path: &Path) -> Result<(), SnapshotError> {
        let pages = self.mem_size / PAGE_SIZE;
        let mut next = 0;
        let mut zero = 0u64;
        for r in &self.memory.zero_ranges {
            let end = r.first.checked_add(r.count);
            if r.count == 0 || r.first < next || end.is_none_or(|end| end > pages) {
                return Err(corrupt(path, format!("zero range {r:?} is empty, unsorted or outside memory")));
            }
            next = r.first + r.count;
            zero += r.count;
        }
        if zero.checked_add(self.memory.data_pages) != Some(pages) {
            return Err(corrupt(
                path,
                format!("{zero} zero + {} data pages is not the memory's {pages} pages", self.memory.data_pages),
            ));
        }
        Ok(())
    }

    /// The memory digest's value.
    pub fn memory_digest(&self) -> u64 {
        parse_digest(&self.memory.digest).unwrap_or_default()
    }
}

/// Checks a guest ABI version read from `path`: the one this snapvisor speaks.
pub(crate) fn check_abi(path: &Path, abi_version: u32) -> Result<(), SnapshotError> {
    if abi_version != snapvisor_abi::ABI_VERSION {
        let speaks = snapvisor_abi::ABI_VERSION;
        return Err(corrupt(path, format!("guest ABI version {abi_version} (this snapvisor speaks {speaks})")));
    }
    Ok(())
}

/// Checks a guest memory size read from `path`: a multiple of 2 MiB within the layout's
/// `MIN_MEM_SIZE..=MAX_MEM_SIZE`.
pub fn check_mem_size(path: &Path, mem_size: u64) -> Result<u64, SnapshotError> {
    in_range(path, "guest memory size", mem_size, layout::MIN_MEM_SIZE, layout::MAX_MEM_SIZE)?;
    if !mem_size.is_multiple_of(HUGE_PAGE_SIZE) {
        return Err(corrupt(path, format!("guest memory size {mem_size} is not a multiple of 2 MiB")));
    }
    Ok(mem_size)
}

/// Whether the sorted `ranges` cover `[offset, offset + len)` entirely.
pub fn ranges_cover(ranges: &[PageRange], offset: u64, len: u64) -> bool {
    let end = offset + len;
    let i = ranges.partition_point(|r| r.end() <= offset);
    ranges.get(i).is_some_and(|r| r.start() <= offset && r.end() >= end)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        let pages = layout::MIN_MEM_SIZE / PAGE_SIZE;
        let mut m = Manifest {
            format_version: FORMAT_VERSION,
            abi_version: snapvisor_abi::ABI_VERSION,
            function: "json".into(),
            image_digest: crate::checksum::digest_string(1),
            mem_size: layout::MIN_MEM_SIZE,
            layout: LayoutRecord { mailbox: 1, image_base: 2, image_end: 3, heap_start: 4, heap_end: 5, stack_top: 6 },
            memory: MemoryRecord {
                file: MEMORY.into(),
                digest: crate::checksum::digest_string(2),
                data_pages: pages - 10,
                zero_ranges: vec![PageRange { first: 3, count: 10 }],
            },
            state: StateRecord { file: STATE.into(), crc64: 3, bytes: 4000 },
            created_unix: 7,
            crc64: 0,
        };
        m.seal();
        m
    }

    #[test]
    fn every_field_is_sealed() {
        let path = Path::new("manifest.json");
        let good = sample();
        assert_eq!(Manifest::decode(&good.encode(), path).unwrap(), good);
        let changes: [fn(&mut Manifest); 9] = [
            |m| m.function.push('x'),
            |m| m.image_digest = crate::checksum::digest_string(9),
            |m| m.layout.mailbox += 1,
            |m| m.memory.digest = crate::checksum::digest_string(9),
            |m| m.memory.zero_ranges[0].first += 1,
            |m| m.state.crc64 += 1,
            |m| m.state.bytes += 1,
            |m| m.created_unix += 1,
            |m| m.mem_size *= 2,
        ];
        for change in changes {
            let mut m = good.clone();
            change(&mut m);
            assert!(matches!(Manifest::decode(&m.encode(), path), Err(SnapshotError::Checksum { .. })));
        }
    }

    #[test]
    fn sealed_fields_are_still_bounded() {
        let path = Path::new("manifest.json");
        let bad: [fn(&mut Manifest); 6] = [
            |m| m.mem_size = 1 << 40,
            |m| m.mem_size = layout::MIN_MEM_SIZE + 4096,
            |m| m.memory.zero_ranges[0].count = u64::MAX,
            |m| m.memory.digest = "sha:1".into(),
            |m| m.state.bytes = 1 << 40,
            |m| m.function = "x".repeat(NAME_MAX + 1),
        ];
        for change in bad {
            let mut m = sample();
            change(&mut m);
            m.seal();
            let err = Manifest::decode(&m.encode(), path).unwrap_err();
            assert!(matches!(err, SnapshotError::OutOfRange { .. } | SnapshotError::Corrupt { .. }), "{err}");
        }
    }

    #[test]
    fn the_manifest_bound_holds_for_the_largest_range_numbers() {
        let mut m = sample();
        let last = layout::MAX_MEM_SIZE / PAGE_SIZE;
        let one = m.encode().len();
        m.memory.zero_ranges = vec![PageRange { first: last - 2, count: 1 }, PageRange { first: last - 1, count: 1 }];
        let two = m.encode().len();
        m.memory.zero_ranges.truncate(1);
        let per_range = (two - m.encode().len()) as u64;
        assert!(per_range <= RANGE_JSON_MAX, "{per_range} bytes per range");
        assert!((one as u64) < 64 << 10);
    }

    #[test]
    fn ranges_cover_works_at_edges() {
        let ranges = [PageRange { first: 2, count: 3 }, PageRange { first: 10, count: 1 }];
        assert!(ranges_cover(&ranges, 2 * PAGE_SIZE, 3 * PAGE_SIZE));
        assert!(ranges_cover(&ranges, 4 * PAGE_SIZE, PAGE_SIZE));
        assert!(!ranges_cover(&ranges, 4 * PAGE_SIZE, 2 * PAGE_SIZE));
        assert!(!ranges_cover(&ranges, PAGE_SIZE, PAGE_SIZE));
        assert!(ranges_cover(&ranges, 10 * PAGE_SIZE, PAGE_SIZE));
        assert!(!ranges_cover(&ranges, 11 * PAGE_SIZE, PAGE_SIZE));
    }
}
