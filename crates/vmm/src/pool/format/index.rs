//! The complete address index of a pool snapshot: every 2 MiB of guest memory → a pool
//! offset or "zero", and the pages a recorded invocation wrote (the write set, which
//! `pass` maps apart: see `restore::pass`).

use super::{FormatError, EXTENT, INDEX_MAGIC};
use crate::snapshot::recording::MAX_LABEL;
use crate::snapshot::PageRange;
use serde::{Deserialize, Serialize};

/// A run of guest pages in the index: either in the pool or all zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// First guest byte (2 MiB aligned).
    pub guest: u64,
    /// Bytes (a multiple of 2 MiB).
    pub len: u64,
    /// Pool offset of the first byte, or `None` for an all-zero run (mapped anonymous).
    pub pool: Option<u64>,
    /// Reserved, 0.
    pub flags: u32,
}

/// The complete address index of a snapshot: runs that cover guest memory from 0 to
/// `mem_size` without gap or overlap, so every guest page has a pool offset or "zero".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// Guest memory bytes.
    pub mem_size: u64,
    /// The runs, ascending.
    pub runs: Vec<Run>,
    /// Pages a recorded invocation wrote (the snapshot's `ws.write` at import), ascending
    /// and disjoint; empty when none was recorded.
    pub written: Vec<PageRange>,
    /// Which input that invocation ran (`A`, ...), when recorded.
    pub recorded_with: Option<String>,
}

impl Index {
    /// Upper bound of an encoded index of a guest with `chunks` 2 MiB chunks and a write
    /// set of `written` ranges (magic, size, at most one run per chunk of at most 32 bytes:
    /// three varint u64s, an option tag, a varint u32; two varint u64s per written range;
    /// a label of at most [`MAX_LABEL`] characters of up to 4 bytes).
    pub fn encoded_max(chunks: u64, written: u64) -> u64 {
        64 + chunks * 48 + written * 24 + 4 * MAX_LABEL as u64 + 16
    }

    /// Encodes the index (magic + postcard).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = INDEX_MAGIC.to_vec();
        // Plain integers and a vector: encoding into memory cannot fail.
        out.extend(postcard::to_stdvec(self).expect("postcard encodes an index"));
        out
    }

    /// Decodes an index and checks it is complete for `mem_size` and inside a pool of `pool_size`.
    pub fn decode(bytes: &[u8], mem_size: u64, pool_size: u64) -> Result<Self, FormatError> {
        if bytes.len() < 8 {
            return Err(FormatError::Short { what: "index", len: bytes.len() as u64, need: 8 });
        }
        if &bytes[..8] != INDEX_MAGIC {
            return Err(FormatError::Magic("index"));
        }
        let index: Index = postcard::from_bytes(&bytes[8..]).map_err(|e| FormatError::Decode("the index", e))?;
        index.check(mem_size, pool_size)?;
        Ok(index)
    }

    /// Checks completeness: runs are 2 MiB aligned, contiguous from 0 to `mem_size`, and
    /// pool runs lie inside the pool's data extents.
    pub fn check(&self, mem_size: u64, pool_size: u64) -> Result<(), FormatError> {
        if self.mem_size != mem_size {
            return Err(FormatError::Coverage { found: self.mem_size, expected: mem_size });
        }
        let mut next = 0u64;
        for &run in &self.runs {
            let end = run.guest.checked_add(run.len).filter(|&end| end <= mem_size);
            if run.guest != next || run.len == 0 || end.is_none() || run.guest % EXTENT != 0 || run.len % EXTENT != 0 {
                return Err(FormatError::Run {
                    run,
                    problem: "leaves a gap, overlaps, is not 2 MiB aligned or ends past memory",
                });
            }
            if let Some(at) = run.pool {
                if at % EXTENT != 0 || at < EXTENT || at.checked_add(run.len).is_none_or(|end| end > pool_size) {
                    return Err(FormatError::Run { run, problem: "points outside the pool's data extents" });
                }
            }
            next += run.len;
        }
        if next != mem_size {
            return Err(FormatError::Coverage { found: next, expected: mem_size });
        }
        let pages = mem_size / snapvisor_abi::PAGE_SIZE;
        let mut next_page = 0;
        for r in &self.written {
            let problem = if r.count == 0 {
                Some("are empty")
            } else if r.first < next_page {
                Some("are unsorted or overlap")
            } else if r.first.checked_add(r.count).is_none_or(|end| end > pages) {
                Some("lie outside memory")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(FormatError::Written { first: r.first, count: r.count, problem });
            }
            next_page = r.first + r.count;
        }
        if let Some(label) = &self.recorded_with {
            let len = label.chars().count() as u64;
            if len > MAX_LABEL as u64 {
                return Err(FormatError::OutOfRange {
                    what: "recording label length",
                    value: len,
                    min: 0,
                    max: MAX_LABEL as u64,
                });
            }
        }
        Ok(())
    }

    /// The pages of 2 MiB chunk `chunk` the recorded invocation wrote, as ranges.
    pub fn written_in(&self, chunk: u64) -> impl Iterator<Item = PageRange> + '_ {
        let per_chunk = EXTENT / snapvisor_abi::PAGE_SIZE;
        let (lo, hi) = (chunk * per_chunk, (chunk + 1) * per_chunk);
        let start = self.written.partition_point(|r| r.first + r.count <= lo);
        self.written[start..].iter().take_while(move |r| r.first < hi).map(move |r| {
            let first = r.first.max(lo);
            PageRange { first, count: (r.first + r.count).min(hi) - first }
        })
    }

    /// Pool offset of guest page `page` (4 KiB index), or `None` if it is zero.
    pub fn lookup(&self, page: u64) -> Option<u64> {
        let addr = page.checked_mul(snapvisor_abi::PAGE_SIZE)?;
        let i = self.runs.partition_point(|r| r.guest + r.len <= addr);
        let run = self.runs.get(i)?;
        run.pool.map(|p| p + (addr - run.guest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_must_be_complete() {
        let index = Index {
            mem_size: 3 * EXTENT,
            runs: vec![
                Run { guest: 0, len: EXTENT, pool: Some(EXTENT), flags: 0 },
                Run { guest: EXTENT, len: 2 * EXTENT, pool: None, flags: 0 },
            ],
            written: vec![PageRange { first: 3, count: 2 }, PageRange { first: 510, count: 4 }],
            recorded_with: Some("A".into()),
        };
        assert!(index.check(3 * EXTENT, 4 * EXTENT).is_ok());
        assert_eq!(index.lookup(1), Some(EXTENT + 4096));
        assert_eq!(index.lookup(600), None);
        assert!(index.check(4 * EXTENT, 4 * EXTENT).is_err());
        let mut gap = index.clone();
        gap.runs[1].guest += EXTENT;
        assert!(gap.check(3 * EXTENT, 4 * EXTENT).is_err());
        let mut outside = index.clone();
        outside.runs[0].pool = Some(4 * EXTENT);
        assert!(outside.check(3 * EXTENT, 4 * EXTENT).is_err());
        let bytes = index.encode();
        assert_eq!(Index::decode(&bytes, 3 * EXTENT, 4 * EXTENT).unwrap(), index);
        // The write set, per chunk; and its rules.
        assert_eq!(
            index.written_in(0).collect::<Vec<_>>(),
            vec![PageRange { first: 3, count: 2 }, PageRange { first: 510, count: 2 }]
        );
        assert_eq!(index.written_in(1).collect::<Vec<_>>(), vec![PageRange { first: 512, count: 2 }]);
        assert_eq!(index.written_in(2).count(), 0);
        for written in [
            vec![PageRange { first: 3, count: 0 }],
            vec![PageRange { first: 5, count: 2 }, PageRange { first: 6, count: 1 }],
            vec![PageRange { first: 3 * 512 - 1, count: 2 }],
        ] {
            let bad = Index { written, ..index.clone() };
            assert!(matches!(bad.check(3 * EXTENT, 4 * EXTENT), Err(FormatError::Written { .. })));
        }
        let long = Index { recorded_with: Some("x".repeat(MAX_LABEL + 1)), ..index.clone() };
        assert!(long.check(3 * EXTENT, 4 * EXTENT).is_err());
    }
}
