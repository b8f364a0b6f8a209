//! The SnapStart configurations the benchmark compares — a strategy, where its snapshot
//! lives, and a defined page-cache state — with the papers' names for them, and how each
//! is prepared (and checked) before a run.
//!
//! | name | strategy | snapshot | page cache before the restore | the papers' name |
//! |---|---|---|---|---|
//! | `lazy written` | lazy | `W` on disk | as its writer left it (resident, 2 MiB folios) | (lazy's best state) |
//! | `lazy reread` | lazy | `S` on disk | evicted, then its data read through once (holes are not read) | DRAM-Cached |
//! | `lazy cold` | lazy | `S` on disk | evicted | Firecracker from disk |
//! | `vanilla` | lazy | `P` on the PMem medium | (no page cache: the medium is memory) | Vanilla |
//! | `uffd warm`, `uffd cold` | uffd, faults served 512 KiB at a time | `S` | reread / evicted | –, Lambda SnapStart |
//! | `reap warm`, `reap cold` | reap | `S` | reread / evicted | REAP |
//! | `faasnap warm`, `faasnap cold` | faasnap | `S` | reread / evicted | FaaSnap |
//! | `cached warm` | cached | `S` | reread | Full loading |
//! | `pass` | pass | the pool | (the pool is memory) | PASS |

use super::fixture::FunctionFixture;
use super::pagecache::{self, Residency};
use super::BenchError;
use snapvisor_vmm::pool::Pool;
use snapvisor_vmm::restore::{strategy as make, MemoryStrategy, Pass, SnapshotSource, Strategy, Uffd};
use snapvisor_vmm::snapshot::working_set::WorkingSetKind;
use snapvisor_vmm::snapshot::MEMORY;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The piece of the snapshot a `uffd` fault loads: 512 KiB, the chunk AWS Lambda's
/// on-demand loader uses, and uffd's best realistic case here (4 KiB, Firecracker's example
/// handler, is `uffd`'s default elsewhere; on read-list it takes ~15× longer).
pub const UFFD_CHUNK: usize = 512 << 10;

/// Where a configuration's snapshot is.
#[derive(Clone)]
pub enum Place {
    /// `S`, on the data directory's disk.
    Disk,
    /// `W`, the copy as written.
    Written,
    /// `P`, on the emulated persistent-memory medium.
    Medium,
    /// In this pool.
    Pool(Arc<Pool>),
}

/// The page cache a configuration starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cache {
    /// As the writer left it (`W`).
    Written,
    /// Evicted, then read through once.
    Reread,
    /// Evicted.
    Cold,
    /// None to prepare (memory: the PMem medium, the pool).
    Memory,
}

impl Cache {
    /// Name in tables and CSV.
    pub fn name(self) -> &'static str {
        match self {
            Cache::Written => "written",
            Cache::Reread => "reread",
            Cache::Cold => "cold",
            Cache::Memory => "memory",
        }
    }
}

/// One SnapStart configuration.
#[derive(Clone)]
pub struct Setup {
    /// Name in tables and CSV (`lazy written`, `pass`, ...).
    pub name: String,
    /// What the PASS and FaaSnap papers call it ("–" where they have no such row).
    pub paper: &'static str,
    /// The strategy.
    pub strategy: Strategy,
    /// The strategy object (ablations vary `pass`'s options).
    pub memory: Arc<dyn MemoryStrategy>,
    /// Where the snapshot is.
    pub place: Place,
    /// The page cache it starts from.
    pub cache: Cache,
    /// Restore into VM shells made ahead.
    pub shells: bool,
}

impl Setup {
    fn new(name: &str, paper: &'static str, strategy: Strategy, place: Place, cache: Cache) -> Self {
        Setup { name: name.into(), paper, strategy, memory: Arc::from(make(strategy)), place, cache, shells: false }
    }

    /// `uffd` serving each fault with the [`UFFD_CHUNK`] around it.
    fn uffd(name: &str, paper: &'static str, cache: Cache) -> Self {
        let memory = Arc::new(Uffd::new(UFFD_CHUNK));
        Setup { memory, ..Setup::new(name, paper, Strategy::Uffd, Place::Disk, cache) }
    }

    /// `pass` with `options`, named `name`, on `pool`.
    pub fn pass(name: &str, pool: Arc<Pool>, options: Pass) -> Self {
        Setup {
            memory: Arc::new(options),
            ..Setup::new(name, "PASS", Strategy::Pass, Place::Pool(pool), Cache::Memory)
        }
    }

    /// The snapshot directory of this configuration for `fx` (`None` for the pool).
    fn dir<'a>(&self, fx: &'a FunctionFixture) -> Option<&'a Path> {
        match self.place {
            Place::Disk => Some(&fx.disk),
            Place::Written => Some(&fx.written),
            Place::Medium => Some(&fx.pmem),
            Place::Pool(_) => None,
        }
    }

    /// Where a restore reads `function`'s snapshot.
    pub fn source(&self, function: &str, fx: &FunctionFixture) -> SnapshotSource {
        match (&self.place, self.dir(fx)) {
            (Place::Pool(pool), _) => SnapshotSource::Pool { pool: pool.clone(), id: function.into() },
            (_, Some(dir)) => SnapshotSource::Dir(dir.to_path_buf()),
            (_, None) => unreachable!("every place but the pool is a directory"),
        }
    }

    /// The files this configuration reads: the memory file, and the working set its
    /// strategy loads.
    pub fn files(&self, fx: &FunctionFixture) -> Vec<PathBuf> {
        let Some(dir) = self.dir(fx) else { return Vec::new() };
        let mut files = vec![dir.join(MEMORY)];
        match self.strategy {
            Strategy::Reap => files.push(dir.join(WorkingSetKind::Reap.file_name())),
            Strategy::Faasnap => files.push(dir.join(WorkingSetKind::Faasnap.file_name())),
            _ => {}
        }
        files
    }

    /// Whether its files are on the emulated persistent-memory medium (their pages are
    /// PMem, not DRAM).
    pub fn on_medium(&self) -> bool {
        matches!(self.place, Place::Medium | Place::Pool(_))
    }

    /// Puts the page cache into this configuration's state and checks it; returns the
    /// memory file's residency then. A written copy found evicted (memory pressure) is
    /// written again.
    pub fn prepare(&self, fx: &FunctionFixture) -> Result<Residency, BenchError> {
        let files = self.files(fx);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |e| BenchError::Write(path, e)
        };
        for file in &files {
            match self.cache {
                Cache::Cold => {
                    pagecache::evict(file).map_err(io(file))?;
                }
                Cache::Reread => {
                    let r = pagecache::residency(file).map_err(io(file))?;
                    if r.resident < r.pages {
                        pagecache::reread(file).map_err(io(file))?;
                    }
                }
                Cache::Written => {
                    let r = pagecache::residency(file).map_err(io(file))?;
                    let data = snapvisor_vmm::snapshot::Snapshot::open(&fx.written)
                        .map_err(|e| BenchError::Vmm(e.into()))?
                        .manifest()
                        .memory
                        .data_pages;
                    if r.resident < data {
                        let tmp = file.with_extension("again");
                        let _ = std::fs::remove_file(&tmp);
                        pagecache::sparse_copy(&fx.disk.join(MEMORY), &tmp).map_err(io(&tmp))?;
                        std::fs::rename(&tmp, file).map_err(io(file))?;
                    }
                }
                Cache::Memory => {}
            }
        }
        match files.first() {
            Some(memory) => pagecache::residency(memory).map_err(io(memory)),
            None => Ok(Residency::default()),
        }
    }
}

/// The end-to-end configurations, in table order (see the module documentation).
pub fn all(pool: &Arc<Pool>) -> Vec<Setup> {
    use Cache::{Cold, Memory, Reread, Written};
    use Strategy::{Cached, Faasnap, Lazy, Reap};
    vec![
        Setup::new("lazy written", "–", Lazy, Place::Written, Written),
        Setup::new("lazy reread", "DRAM-Cached", Lazy, Place::Disk, Reread),
        Setup::new("lazy cold", "Firecracker (disk)", Lazy, Place::Disk, Cold),
        Setup::new("vanilla", "Vanilla", Lazy, Place::Medium, Memory),
        Setup::uffd("uffd warm", "–", Reread),
        Setup::uffd("uffd cold", "Lambda SnapStart", Cold),
        Setup::new("reap warm", "REAP", Reap, Place::Disk, Reread),
        Setup::new("reap cold", "REAP (cold)", Reap, Place::Disk, Cold),
        Setup::new("faasnap warm", "FaaSnap", Faasnap, Place::Disk, Reread),
        Setup::new("faasnap cold", "FaaSnap (cold)", Faasnap, Place::Disk, Cold),
        Setup::new("cached warm", "Full loading", Cached, Place::Disk, Reread),
        Setup::pass("pass", pool.clone(), Pass::default()),
    ]
}

/// The configurations named `names`, from [`all`].
pub fn named(pool: &Arc<Pool>, names: &[&str]) -> Vec<Setup> {
    all(pool).into_iter().filter(|s| names.contains(&s.name.as_str())).collect()
}
