//! Defined page-cache states for the file-based strategies, checked before every run.
//!
//! "Warm" must mean the same thing on every run: which pages are resident, and in which
//! folio sizes (a kernel that keeps a freshly written file in 2 MiB folios lets a private
//! mapping of it take one KVM fault per 2 MiB; after eviction and a re-read the same file
//! comes back in small folios and costs one fault per 4 KiB). The states:
//!
//! | state | how it is made | what it stands for |
//! |---|---|---|
//! | `written` | the memory file as its writer left it (a sparse copy written by the benchmark, never evicted) | a snapshot taken moments ago: lazy's best realistic case |
//! | `reread` | evicted, then its data read through once (holes hold no data: not read) | a snapshot read back after memory pressure |
//! | `cold` | evicted (`posix_fadvise(DONTNEED)`), checked with `mincore` | SnapStart from disk |
//!
//! [`residency`] reports resident pages (`mincore`) and, where the process may read
//! `/proc/kpageflags` (root), how many of them sit in 2 MiB folios.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

const PAGE: u64 = 4096;

/// How many of a file's pages are in the page cache, and in what folios.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Residency {
    /// 4 KiB pages of the file.
    pub pages: u64,
    /// Of which in the page cache.
    pub resident: u64,
    /// Of the resident ones, how many sit in 2 MiB folios (which a mapping can map with one
    /// 2 MiB entry); `None` where `/proc/kpageflags` cannot be read.
    pub in_2m_folios: Option<u64>,
}

impl Residency {
    /// Share of resident pages in 2 MiB folios (0 when unknown or none resident).
    pub fn share_2m(&self) -> f64 {
        match self.in_2m_folios {
            Some(n) if self.resident > 0 => n as f64 / self.resident as f64,
            _ => 0.0,
        }
    }
}

/// A read-only shared mapping of a whole file, unmapped on drop.
struct FileMap {
    addr: *mut libc::c_void,
    len: usize,
}

impl FileMap {
    fn new(file: &File, len: usize) -> io::Result<Self> {
        // SAFETY: a new read-only shared mapping chosen by the kernel; checked below and
        // unmapped on drop. Nothing writes through it.
        let addr =
            unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0) };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(FileMap { addr, len })
    }
}

impl Drop for FileMap {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping created in `new`, once.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

/// The page-cache residency of `path` (a regular file).
pub fn residency(path: &Path) -> io::Result<Residency> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let pages = len.div_ceil(PAGE);
    if len == 0 {
        return Ok(Residency::default());
    }
    let map = FileMap::new(&file, len as usize)?;
    let mut vec = vec![0u8; pages as usize];
    // SAFETY: `vec` has one byte per page of the mapping.
    if unsafe { libc::mincore(map.addr, map.len, vec.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let resident_pages: Vec<u64> = (0..pages).filter(|&p| vec[p as usize] & 1 != 0).collect();
    let in_2m_folios = pages_in_2m_folios(&map, &resident_pages).ok();
    Ok(Residency { pages, resident: resident_pages.len() as u64, in_2m_folios })
}

/// Of `pages` (resident pages of the mapped file, ascending), how many are in 2 MiB
/// folios: each is mapped into this process (a read of a resident page does no I/O), its
/// frame looked up in pagemap and its flags in `/proc/kpageflags` (needs root); a folio is
/// a head page and the tail pages that follow it in the file and in memory.
fn pages_in_2m_folios(map: &FileMap, pages: &[u64]) -> io::Result<u64> {
    const PRESENT: u64 = 1 << 63;
    const PFN_MASK: u64 = (1 << 55) - 1;
    const KPF_COMPOUND_HEAD: u64 = 1 << 15;
    const KPF_COMPOUND_TAIL: u64 = 1 << 16;
    const HUGE: u64 = 512;
    let kpageflags = File::open("/proc/kpageflags")?;
    let pagemap = File::open("/proc/self/pagemap")?;
    let base = map.addr as u64 / PAGE;
    // (file page, frame, flags) of every resident page.
    let mut frames = Vec::with_capacity(pages.len());
    for &p in pages {
        // SAFETY: the page is inside the live read-only mapping; a volatile read maps it.
        unsafe { std::ptr::read_volatile(map.addr.cast::<u8>().add((p * PAGE) as usize)) };
        let mut entry = [0u8; 8];
        pagemap.read_exact_at(&mut entry, (base + p) * 8)?;
        let entry = u64::from_le_bytes(entry);
        let pfn = entry & PFN_MASK;
        if entry & PRESENT == 0 || pfn == 0 {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "frame numbers are hidden"));
        }
        let mut flags = [0u8; 8];
        kpageflags.read_exact_at(&mut flags, pfn * 8)?;
        frames.push((p, pfn, u64::from_le_bytes(flags)));
    }
    let mut in_2m = 0;
    let mut i = 0;
    while i < frames.len() {
        let (p, pfn, flags) = frames[i];
        let mut len = 1;
        if flags & KPF_COMPOUND_HEAD != 0 {
            while frames
                .get(i + len as usize)
                .is_some_and(|&(q, qpfn, qflags)| q == p + len && qpfn == pfn + len && qflags & KPF_COMPOUND_TAIL != 0)
            {
                len += 1;
            }
            if len >= HUGE {
                in_2m += len;
            }
        }
        i += len as usize;
    }
    Ok(in_2m)
}

/// Drops `path`'s clean pages from the page cache and checks that none stayed.
pub fn evict(path: &Path) -> io::Result<Residency> {
    let file = File::open(path)?;
    // SAFETY: posix_fadvise on an open descriptor; offset 0 / len 0 = the whole file.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    let after = residency(path)?;
    if after.resident > 0 {
        return Err(io::Error::other(format!(
            "{}: {} of {} pages stayed in the page cache after eviction (a filesystem that cannot evict, e.g. tmpfs, has no cold state)",
            path.display(),
            after.resident,
            after.pages
        )));
    }
    Ok(after)
}

/// Evicts `path`, then reads its data through once (holes hold no data and are not read:
/// the page cache a reader of the snapshot's data leaves, as `cat` of a sparse-aware tool
/// or a previous run would).
pub fn reread(path: &Path) -> io::Result<Residency> {
    evict(path)?;
    let file = File::open(path)?;
    let mut buf = vec![0u8; 4 << 20];
    for_each_data_chunk(&file, &mut buf, |_, _| Ok(()))?;
    residency(path)
}

/// Copies `from` to a new file `to` by writing only its data ranges (holes stay holes),
/// so that `to`'s page cache is as a writer leaves it; fsyncs it.
pub fn sparse_copy(from: &Path, to: &Path) -> io::Result<()> {
    let src = File::open(from)?;
    let dst = std::fs::OpenOptions::new().write(true).create_new(true).open(to)?;
    dst.set_len(src.metadata()?.len())?;
    let mut buf = vec![0u8; 4 << 20];
    for_each_data_chunk(&src, &mut buf, |chunk, pos| dst.write_all_at(chunk, pos))?;
    dst.sync_all()
}

/// Reads `file`'s data ranges (`SEEK_DATA`/`SEEK_HOLE`) in pieces of `buf`'s size, handing
/// each piece and its offset to `each`.
fn for_each_data_chunk(
    file: &File,
    buf: &mut [u8],
    mut each: impl FnMut(&[u8], u64) -> io::Result<()>,
) -> io::Result<()> {
    let len = file.metadata()?.len();
    let mut at = 0;
    while at < len {
        let Some(data) = seek_data(file, at)? else { break };
        let hole = seek_hole(file, data)?.min(len);
        let mut pos = data;
        while pos < hole {
            let n = buf.len().min((hole - pos) as usize);
            file.read_exact_at(&mut buf[..n], pos)?;
            each(&buf[..n], pos)?;
            pos += n as u64;
        }
        at = hole;
    }
    Ok(())
}

fn lseek(file: &File, at: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    // SAFETY: lseek on an open descriptor with SEEK_DATA/SEEK_HOLE.
    let r = unsafe { libc::lseek(file.as_raw_fd(), at as libc::off_t, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENXIO) { Ok(None) } else { Err(e) };
    }
    Ok(Some(r as u64))
}

fn seek_data(file: &File, at: u64) -> io::Result<Option<u64>> {
    lseek(file, at, libc::SEEK_DATA)
}

fn seek_hole(file: &File, at: u64) -> io::Result<u64> {
    Ok(lseek(file, at, libc::SEEK_HOLE)?.unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn states_are_what_they_say() {
        // On the data directory's kind of filesystem (not tmpfs, which cannot evict).
        let dir = std::env::current_dir().unwrap().join(format!("target/pagecache-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a");
        let data = vec![7u8; 1 << 20];
        let f = std::fs::OpenOptions::new().write(true).create_new(true).open(&a).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(&data, 2 << 20).unwrap();
        f.write_all_at(&data, 6 << 20).unwrap();
        f.sync_all().unwrap();
        let cold = match evict(&a) {
            Ok(r) => r,
            Err(e) => {
                // To the real stderr, which libtest does not capture: a visible skip.
                let _ = writeln!(std::io::stderr(), "skipped: this filesystem cannot evict ({e})");
                return;
            }
        };
        assert_eq!((cold.pages, cold.resident), (2048, 0));
        let warm = reread(&a).unwrap();
        assert!(warm.resident >= 512, "{warm:?}");
        let b = dir.join("b");
        sparse_copy(&a, &b).unwrap();
        let copy = std::fs::read(&b).unwrap();
        assert_eq!(copy, std::fs::read(&a).unwrap());
        use std::os::unix::fs::MetadataExt;
        assert!(std::fs::metadata(&b).unwrap().blocks() * 512 <= 3 << 20, "holes were filled");
        assert!(residency(&b).unwrap().resident >= 512);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
