//! Entry points of the fuzz targets (`fuzz/`, cargo-fuzz on nightly): one per format the
//! VMM reads from a file or a guest. Each takes arbitrary bytes and must return without a
//! panic, a hang or an allocation beyond the format's bounds; where a decoder accepts its
//! input, the target also checks what the decoder promises (an accepted index covers
//! memory, an accepted working set's runs are inside it, ...), so a broken promise is a
//! crash the fuzzer finds.
//!
//! A checksum would stop most mutations at its check, so the targets also decode a copy of
//! the input with its checksums recomputed ([`seal`]): the code behind the check is
//! fuzzed too (the checks themselves are unit-tested with every single-byte change).
//!
//! The entry points live in the library so that the normal test run replays every file of
//! `fuzz/corpus/<target>/` and `fuzz/artifacts/<target>/` through them on stable
//! (`tests/fuzz_replay.rs`): a regression shows up in `cargo test`, not only under a fuzzer.

use crate::loader::GuestImage;
use crate::pool::format::{
    slot_offset, Index, PoolMeta, Superblock, COMMIT_OFFSET, EXTENT, MAX_POOL_SIZE, MIN_POOL_SIZE, SLOT0_OFFSET,
    SLOT_SIZE,
};
use crate::pool::region::{MappedRegion, Region};
use crate::pool::Pool;
use crate::snapshot::working_set::{decode_header, Expected, WorkingSetKind};
use crate::snapshot::{check_mem_size, decode_state_file, ranges_cover, Manifest};
use crate::vstate::exit::{self, CpuState, Exit, GuestRead, Step};
use crate::vstate::memory::{GuestMemory, Mapping, OutOfBounds};
use snapvisor_abi::{layout, mailbox, PAGE_SIZE};
use std::path::Path;

/// A fuzz target: its name (the directory under `fuzz/corpus/`) and its entry point.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("manifest", manifest),
    ("vmstate", vmstate),
    ("ws_reap", ws_reap),
    ("ws_faasnap", ws_faasnap),
    ("ws_write", ws_write),
    ("pool_superblock", pool_superblock),
    ("pool_slot", pool_slot),
    ("pool_index", pool_index),
    ("pool_image", pool_image),
    ("elf", elf),
    ("mailbox", mailbox_exit),
];

/// The entry point of `target`, if it exists.
pub fn target(name: &str) -> Option<fn(&[u8])> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// Stores the CRC-64 of `bytes[covered]` at `bytes[at..at + 8]`, where both are inside.
fn seal(bytes: &mut [u8], at: usize, covered: std::ops::Range<usize>) {
    if at + 8 <= bytes.len() && covered.end <= bytes.len() && covered.start <= covered.end {
        let crc = crate::checksum::crc64(&bytes[covered]);
        bytes[at..at + 8].copy_from_slice(&crc.to_le_bytes());
    }
}

fn u64_at(data: &[u8], at: usize) -> u64 {
    data.get(at..at + 8).map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// `manifest.json` ([`Manifest::decode`]), as given and re-sealed.
pub fn manifest(data: &[u8]) {
    check_manifest(data);
    if let Ok(mut m) = serde_json::from_slice::<Manifest>(data) {
        m.seal();
        check_manifest(&m.encode());
    }
}

fn check_manifest(data: &[u8]) {
    let Ok(m) = Manifest::decode(data, Path::new("manifest.json")) else { return };
    assert!(check_mem_size(Path::new(""), m.mem_size).is_ok());
    let pages = m.mem_size / PAGE_SIZE;
    let zero: u64 = m.memory.zero_ranges.iter().map(|r| r.count).sum();
    assert_eq!(zero + m.memory.data_pages, pages);
    for r in m.memory.zero_ranges.iter().take(64) {
        assert!(ranges_cover(&m.memory.zero_ranges, r.start(), r.count * PAGE_SIZE));
    }
}

/// `vmstate.bin` (the state-file decoder), as given and with its length and CRC fixed.
pub fn vmstate(data: &[u8]) {
    let mut fixed = data.to_vec();
    if fixed.len() >= 32 {
        let body = fixed.len() as u64 - 32;
        fixed[16..24].copy_from_slice(&body.to_le_bytes());
        let end = fixed.len() - 8;
        seal(&mut fixed, end, 0..end);
    }
    for input in [data, &fixed] {
        if let Ok((state, _)) = decode_state_file(input, Path::new("vmstate.bin")) {
            assert!(check_mem_size(Path::new(""), state.mem_size).is_ok());
        }
    }
}

/// A working set's header and run table, as given and with its CRC fixed, for a snapshot
/// whose memory size and digest the input's header names (so that the fuzzer gets past the
/// cross-checks) and a file as long as the header says (when that does not overflow).
fn working_set(data: &[u8], kind: WorkingSetKind) {
    let mut fixed = data.to_vec();
    let n = u64_at(data, 32);
    if let Some(table_end) = n.checked_mul(16).and_then(|t| t.checked_add(72)).filter(|&e| e <= data.len() as u64) {
        let mut covered = fixed[..64].to_vec();
        covered.extend_from_slice(&fixed[72..table_end as usize]);
        fixed[64..72].copy_from_slice(&crate::checksum::crc64(&covered).to_le_bytes());
    }
    working_set_once(data, kind);
    working_set_once(&fixed, kind);
}

fn working_set_once(data: &[u8], kind: WorkingSetKind) {
    let mem_size = u64_at(data, 16);
    let mem_size = if check_mem_size(Path::new(""), mem_size).is_ok() { mem_size } else { layout::MIN_MEM_SIZE };
    let expected = Expected { kind, mem_size, memory_digest: u64_at(data, 24) };
    let data_pages = if kind.has_data() { u64_at(data, 40) } else { 0 };
    let claimed = data_pages.checked_mul(PAGE_SIZE).and_then(|b| b.checked_add(u64_at(data, 48)));
    let file_len = claimed.unwrap_or(data.len() as u64);
    let Ok(header) = decode_header(data, expected, file_len, Path::new(kind.file_name())) else { return };
    assert_eq!(header.file_len(kind), file_len);
    assert_eq!(header.runs.iter().map(|r| r.count).sum::<u64>(), header.pages);
    assert!(header.runs.windows(2).all(|w| w[0].first + w[0].count <= w[1].first));
    assert!(header.runs.last().is_none_or(|r| r.end() <= mem_size));
}

/// `ws.write` (pages only, no page data).
pub fn ws_write(data: &[u8]) {
    working_set(data, WorkingSetKind::Write);
}

/// `ws.reap`.
pub fn ws_reap(data: &[u8]) {
    working_set(data, WorkingSetKind::Reap);
}

/// `ws.faasnap`.
pub fn ws_faasnap(data: &[u8]) {
    working_set(data, WorkingSetKind::Faasnap);
}

/// A pool's superblock, as given and with its CRC fixed.
pub fn pool_superblock(data: &[u8]) {
    let mut fixed = data.to_vec();
    seal(&mut fixed, 4088, 0..4088);
    for input in [data, &fixed] {
        if let Ok(sb) = Superblock::decode(input) {
            assert!((MIN_POOL_SIZE..=MAX_POOL_SIZE).contains(&sb.size) && sb.size % EXTENT == 0);
        }
    }
}

/// A slot with its body's CRC fixed (where its length field fits the bytes).
fn sealed_slot(data: &[u8]) -> Vec<u8> {
    let mut fixed = data.to_vec();
    let body_end = u64_at(data, 16).checked_add(32).map_or(usize::MAX, |e| e.min(usize::MAX as u64) as usize);
    seal(&mut fixed, 24, 32..body_end);
    fixed
}

/// A metadata slot (the generation it must hold is the one it names), as given and with its
/// CRC fixed, and the table's rules for a pool just large enough for its bitmap.
pub fn pool_slot(data: &[u8]) {
    pool_slot_once(data);
    pool_slot_once(&sealed_slot(data));
}

fn pool_slot_once(data: &[u8]) {
    let Ok(meta) = PoolMeta::decode_slot(data, u64_at(data, 8)) else { return };
    let pool_size = (meta.allocated.len() as u64 * 64 * EXTENT).clamp(MIN_POOL_SIZE, MAX_POOL_SIZE);
    if meta.check(pool_size).is_ok() {
        let extents = pool_size / EXTENT;
        assert_eq!(meta.derived(extents), PoolMeta { snapshots: Vec::new(), ..meta.clone() });
    }
}

/// A snapshot's index, for the memory size it claims and a pool of the size the input's
/// first 8 bytes name (bounded).
pub fn pool_index(data: &[u8]) {
    let pool_size = u64_at(data, 0).clamp(MIN_POOL_SIZE, MAX_POOL_SIZE);
    let Some(body) = data.get(8..) else { return };
    let mem_size = postcard::take_from_bytes::<u64>(body.get(8..).unwrap_or_default()).map_or(0, |(v, _)| v);
    let Ok(index) = Index::decode(body, mem_size, pool_size) else { return };
    let covered: u64 = index.runs.iter().map(|r| r.len).sum();
    assert_eq!(covered, mem_size);
    for page in [0, 1, mem_size / PAGE_SIZE / 2, (mem_size / PAGE_SIZE).saturating_sub(1), u64::MAX] {
        if let Some(at) = index.lookup(page) {
            assert!(at < pool_size);
        }
    }
}

/// Bytes of the in-memory pool of [`pool_image`].
const IMAGE_POOL: u64 = 8 * EXTENT;

/// A whole pool image in memory, from three parts of the input (their lengths in its first
/// four bytes): the head (superblock and commit record) at offset 0, a metadata slot where
/// the commit record points, and a snapshot's state and index at extent 1. The superblock's
/// and the slot's CRCs are fixed, and so are the CRCs of the blobs the table names. The
/// pool is opened, listed and checked.
pub fn pool_image(data: &[u8]) {
    let len = |at: usize| {
        usize::from(u16::from_le_bytes([data.get(at).copied().unwrap_or(0), data.get(at + 1).copied().unwrap_or(0)]))
    };
    let rest = data.get(4..).unwrap_or_default();
    let (head, rest) = rest.split_at(len(0).min(rest.len()).min(SLOT0_OFFSET as usize));
    let (slot, extent) = rest.split_at(len(2).min(rest.len()));
    let Ok(region) = MappedRegion::anonymous(IMAGE_POOL as usize) else { return };
    let mut head = head.to_vec();
    seal(&mut head, 4088, 0..4088);
    region.store(0, &head);
    let generation = if head.len() >= (COMMIT_OFFSET + 8) as usize { region.load_u64(COMMIT_OFFSET) } else { 0 };
    region.store(EXTENT, &extent[..extent.len().min(EXTENT as usize)]);
    let mut slot = sealed_slot(slot);
    if let Ok(mut meta) = PoolMeta::decode_slot(&slot, generation) {
        for blob in meta.snapshots.iter_mut().flat_map(|e| [&mut e.state, &mut e.index]) {
            if blob.offset.checked_add(blob.len).is_some_and(|end| end <= IMAGE_POOL) {
                blob.crc64 = crate::checksum::crc64(region.bytes(blob.offset, blob.len));
            }
        }
        slot = meta.encode_slot(generation).unwrap_or(slot);
    }
    region.store(slot_offset(generation % 2), &slot[..slot.len().min(SLOT_SIZE as usize)]);
    let Ok(pool) = Pool::open_in_memory(Box::new(region)) else { return };
    let report = pool.fsck(false);
    if let Ok(info) = pool.info() {
        assert!(info.used_extents <= info.extents);
        assert_eq!(report.snapshots, info.snapshots.len());
    }
}

thread_local! {
    /// The guest memory the `elf` target loads images into (created once per thread).
    static ELF_MEMORY: Option<GuestMemory> =
        Mapping::anonymous(layout::MIN_MEM_SIZE as usize).ok().and_then(|m| GuestMemory::new(m).ok());
}

/// A guest ELF image: validation, then loading into a 16 MiB guest.
pub fn elf(data: &[u8]) {
    let Ok(image) = GuestImage::parse(data, layout::MIN_MEM_SIZE) else { return };
    assert!(image.entry() >= layout::IMAGE_BASE && image.end() <= layout::MIN_MEM_SIZE);
    ELF_MEMORY.with(|mem| {
        if let Some(mem) = mem {
            let _ = image.load(mem);
        }
    });
}

/// Guest memory for the `mailbox` target: the input's bytes at one guest address.
struct Window<'a> {
    base: u64,
    bytes: &'a [u8],
}

impl GuestRead for Window<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        let oob =
            || OutOfBounds { addr, len: buf.len() as u64, size: self.base.saturating_add(self.bytes.len() as u64) };
        let start = addr.checked_sub(self.base).ok_or_else(oob)? as usize;
        let end = start.checked_add(buf.len()).filter(|&e| e <= self.bytes.len()).ok_or_else(oob)?;
        buf.copy_from_slice(&self.bytes[start..end]);
        Ok(())
    }
}

/// One guest exit through the VMM's decoder: the input picks the exit (kind, port,
/// argument), the vCPU state an exception report is checked against, and guest memory (the
/// rest of the input, placed at the mailbox's message area or at the exception stack
/// pointer).
pub fn mailbox_exit(data: &[u8]) {
    if data.len() < 32 {
        return;
    }
    let (kind, port) = (data[0], u16::from_le_bytes([data[1], data[2]]));
    let arg = u32::from_le_bytes([data[3], data[4], data[5], data[6]]);
    let cpu = CpuState { cpl: data[7] & 3, rip: u64_at(data, 8), rsp: u64_at(data, 16), cr2: u64_at(data, 24) };
    let exit = match kind % 4 {
        0 | 1 => Exit::Out { port, arg },
        2 => Exit::In { port },
        _ => Exit::Interrupted,
    };
    let base = if kind & 0x80 != 0 { cpu.rsp } else { layout::MAILBOX + mailbox::MESSAGE };
    let memory = Window { base, bytes: &data[32..] };
    match exit::decode(exit, &memory, &mut || Ok(cpu)) {
        Ok(Step::Console(line)) => assert!(line.len() as u64 <= 3 * mailbox::MESSAGE_MAX),
        Ok(Step::Event(crate::vstate::vcpu::GuestEvent::Response(len))) => {
            assert!(u64::from(len) <= mailbox::RESPONSE_MAX)
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_survives_empty_and_short_inputs() {
        for (name, run) in TARGETS {
            for input in [&[][..], &[0u8; 1], &[0xffu8; 64], &[0u8; 4096]] {
                run(input);
            }
            assert_eq!(target(name).map(|f| f as usize), Some(*run as usize));
        }
    }
}
