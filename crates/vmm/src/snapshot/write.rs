//! Writing a snapshot directory atomically: temporary directory, fsync, rename (with the
//! helpers of `crate::files`).

use super::{
    io_err, state_file, LayoutRecord, Manifest, MemoryRecord, PageRange, SnapshotError, StateRecord, VmState,
    FORMAT_VERSION, MANIFEST, MEMORY, STATE,
};
use crate::checksum::digest_bytes;
use crate::files::{parent_of, remove_stale_partials, rename2, sync_dir, Partial};
use crate::vstate::memory::GuestMemory;
use snapvisor_abi::PAGE_SIZE;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// What a snapshot is made of.
pub struct SnapshotInput<'a> {
    /// Function (or image) name.
    pub function: &'a str,
    /// The guest ELF the VM booted.
    pub image: &'a [u8],
    /// VM state at the `ready` hypercall.
    pub state: VmState,
    /// Guest RAM (no vCPU may run while the snapshot is written).
    pub memory: &'a GuestMemory,
}

/// Writes the snapshot to `dir`. Without `force`, an existing `dir` is an error; with it,
/// an existing snapshot is swapped for the new one in one atomic exchange once the new one
/// is complete (a directory that is not a snapshot is never replaced).
pub fn write(dir: &Path, input: SnapshotInput<'_>, force: bool) -> Result<Manifest, SnapshotError> {
    let parent = parent_of(dir);
    std::fs::create_dir_all(&parent).map_err(io_err(&parent, "create directory"))?;
    // Another thread writing this snapshot finishes first (they share the temporary name).
    let partial = Partial::claim(dir)?;
    let tmp = partial.path();
    let existing = dir.exists();
    if existing && !force {
        return Err(SnapshotError::Exists(dir.to_path_buf()));
    }
    if existing && !super::is_snapshot(dir) {
        return Err(SnapshotError::NotASnapshot(dir.to_path_buf()));
    }
    if let Some(name) = dir.file_name() {
        remove_stale_partials(&parent, &name.to_string_lossy());
    }
    if tmp.exists() {
        std::fs::remove_dir_all(tmp).map_err(io_err(tmp, "remove stale temporary directory"))?;
    }
    std::fs::create_dir(tmp).map_err(io_err(tmp, "create directory"))?;

    let manifest = match write_files(tmp, input).and_then(|m| sync_dir(tmp).map(|_| m).map_err(Into::into)) {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(tmp);
            return Err(e);
        }
    };
    // Into place: without force, only if nothing is there (another writer may have won);
    // with force, exchanged atomically with the old snapshot, which then goes.
    let exchanged = if existing {
        match rename2(tmp, dir, libc::RENAME_EXCHANGE) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                let _ = std::fs::remove_dir_all(tmp);
                return Err(io_err(dir, "exchange with the old snapshot")(e));
            }
        }
    } else {
        false
    };
    if !exchanged {
        if let Err(e) = rename2(tmp, dir, libc::RENAME_NOREPLACE) {
            let _ = std::fs::remove_dir_all(tmp);
            return Err(if e.kind() == std::io::ErrorKind::AlreadyExists {
                SnapshotError::Exists(dir.to_path_buf())
            } else {
                io_err(dir, "rename into place")(e)
            });
        }
    }
    sync_dir(&parent)?;
    if exchanged {
        // `tmp` now holds the old snapshot; a crash before this leaves it as a stale partial.
        std::fs::remove_dir_all(tmp).map_err(io_err(tmp, "remove the old snapshot"))?;
    }
    Ok(manifest)
}

fn write_files(tmp: &Path, input: SnapshotInput<'_>) -> Result<Manifest, SnapshotError> {
    let mem_size = input.memory.size();
    let memory_path = tmp.join(MEMORY);
    // SAFETY: the caller guarantees no vCPU runs while the snapshot is written.
    let bytes = unsafe { input.memory.as_slice() };
    let (zero_ranges, data_pages) = write_memory(&memory_path, bytes)?;
    let digest = digest_bytes(bytes);

    let state_path = tmp.join(STATE);
    let layout: LayoutRecord = input.state.layout;
    let (encoded, crc64) = state_file::encode(&input.state)
        .map_err(|e| super::corrupt(&state_path, format!("cannot encode state: {e}")))?;
    write_synced(&state_path, &encoded)?;

    let mut manifest = Manifest {
        format_version: FORMAT_VERSION,
        abi_version: snapvisor_abi::ABI_VERSION,
        function: input.function.to_string(),
        image_digest: digest_bytes(input.image),
        mem_size,
        layout,
        memory: MemoryRecord { file: MEMORY.into(), digest, data_pages, zero_ranges },
        state: StateRecord { file: STATE.into(), crc64, bytes: encoded.len() as u64 },
        created_unix: crate::pool::now_unix(),
        crc64: 0,
    };
    manifest.seal();
    // The manifest goes last: a directory without one is never a snapshot.
    write_synced(&tmp.join(MANIFEST), &manifest.encode())?;
    Ok(manifest)
}

/// Writes the non-zero pages of `bytes` to a sparse file; returns the zero ranges and the
/// number of data pages.
fn write_memory(path: &Path, bytes: &[u8]) -> Result<(Vec<PageRange>, u64), SnapshotError> {
    let file = OpenOptions::new().write(true).create_new(true).open(path).map_err(io_err(path, "create"))?;
    file.set_len(bytes.len() as u64).map_err(io_err(path, "set length"))?;
    let page = PAGE_SIZE as usize;
    let mut zero_ranges: Vec<PageRange> = Vec::new();
    let mut data_pages = 0;
    let mut run_start: Option<usize> = None;
    for (index, chunk) in bytes.chunks_exact(page).enumerate() {
        if is_zero(chunk) {
            if let Some(start) = run_start.take() {
                file.write_all_at(&bytes[start * page..index * page], (start * page) as u64)
                    .map_err(io_err(path, "write"))?;
            }
            match zero_ranges.last_mut() {
                Some(r) if r.first + r.count == index as u64 => r.count += 1,
                _ => zero_ranges.push(PageRange { first: index as u64, count: 1 }),
            }
        } else {
            data_pages += 1;
            run_start.get_or_insert(index);
        }
    }
    if let Some(start) = run_start {
        file.write_all_at(&bytes[start * page..], (start * page) as u64).map_err(io_err(path, "write"))?;
    }
    file.sync_all().map_err(io_err(path, "fsync"))?;
    Ok((zero_ranges, data_pages))
}

/// Whether a page is all zero (word at a time).
pub fn is_zero(page: &[u8]) -> bool {
    // SAFETY: u64 has no invalid bit patterns; align_to splits off any unaligned ends.
    let (head, words, tail) = unsafe { page.align_to::<u64>() };
    head.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path).map_err(io_err(path, "create"))?;
    file.write_all(bytes).map_err(io_err(path, "write"))?;
    file.sync_all().map_err(io_err(path, "fsync"))
}
