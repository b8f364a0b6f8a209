//! Small transparent huge pages ("mTHP", 64 KiB folios) for anonymous memory: whether this
//! host gives them to memory advised `MADV_HUGEPAGE`, and a scoped switch that turns them
//! on and puts the setting back.
//!
//! A 64 KiB folio is filled by one host fault, which maps all 16 of its pages writable; on
//! shadow paging KVM then maps up to 8 present neighbours per fault, so memory written
//! densely costs one KVM fault per 32 KiB instead of one per 4 KiB, while a partly used
//! folio wastes at most 60 KiB (a 2 MiB page wastes up to 2 MiB). `pass` uses them where a
//! guest's heap may end (`restore/pass.rs`).
//!
//! The setting is the kernel's `/sys/kernel/mm/transparent_hugepage/hugepages-64kB/enabled`
//! (Linux 6.8+), `never` by default. [`enable`] sets it to `madvise` — which changes only
//! memory some process advised for huge pages — after writing the old value to a record
//! file; the returned guard writes the old value back and removes the record, unless
//! somebody else changed the setting in between. A run killed before that leaves the
//! record, and the next [`enable`] with it puts the setting back first.
//!
//! [`available`] is what `pass` asks when its strategy is made (`Pass::default`). Reading the
//! settings takes ~0.2 ms on this host (nine sysfs files), so it reads them once per process
//! (again after [`enable`] and its guard changed them): a daemon sees a setting changed
//! behind its back when it starts again.

use crate::files::{read_regular, write_atomic, FileError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

const THP_DIR: &str = "/sys/kernel/mm/transparent_hugepage";
const FOLIOS: &str = "/sys/kernel/mm/transparent_hugepage/hugepages-64kB/enabled";
/// What [`enable`] writes.
const ADVISED: &str = "madvise";
/// The values the setting can take (what a record may hold).
const VALUES: [&str; 4] = ["always", "inherit", "madvise", "never"];
/// The reading of [`available`]: 0 none yet, 1 no, 2 yes.
static READING: AtomicU8 = AtomicU8::new(0);

/// The selected value of a sysfs THP setting: the bracketed word of `always [madvise] never`.
fn selected(text: &str) -> Option<&str> {
    let start = text.find('[')? + 1;
    let len = text[start..].find(']')?;
    Some(&text[start..start + len])
}

fn read_selected(path: &Path) -> io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    selected(&text).map(str::to_owned).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{}: no selected value in {text:?}", path.display()))
    })
}

/// Whether memory advised `MADV_HUGEPAGE` gets folios of a size with setting `size`, given
/// the global setting `thp`.
fn advised_gets(size: &str, thp: &str) -> bool {
    match size {
        "always" | "madvise" => true,
        "inherit" => matches!(thp, "always" | "madvise"),
        _ => false,
    }
}

/// Whether advised memory gets 64 KiB folios and no larger size below 2 MiB, given each
/// size's setting (KiB, value) and the global one. A larger size would be taken first.
fn only_64k(sizes: &[(u64, String)], thp: &str) -> bool {
    sizes.iter().any(|(k, v)| *k == 64 && advised_gets(v, thp)) && !larger_allowed(sizes, thp)
}

/// Whether advised memory may get a folio size between 64 KiB and 2 MiB.
fn larger_allowed(sizes: &[(u64, String)], thp: &str) -> bool {
    sizes.iter().any(|(k, v)| *k > 64 && *k < 2048 && advised_gets(v, thp))
}

/// The host's THP settings: the global one, and each folio size's (KiB, selected value).
struct Settings {
    thp: String,
    sizes: Vec<(u64, String)>,
}

impl Settings {
    fn read() -> io::Result<Self> {
        let thp = read_selected(&Path::new(THP_DIR).join("enabled"))?;
        let mut sizes = Vec::new();
        for entry in std::fs::read_dir(THP_DIR)? {
            let name = entry?.file_name();
            let Some(kib) = name.to_str().and_then(|n| n.strip_prefix("hugepages-")?.strip_suffix("kB")?.parse().ok())
            else {
                continue;
            };
            // Some sizes have a setting for shared memory only (8 KiB here): not for anonymous.
            match read_selected(&Path::new(THP_DIR).join(&name).join("enabled")) {
                Ok(value) => sizes.push((kib, value)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Settings { thp, sizes })
    }

    /// The 64 KiB size's setting.
    fn folios(&self) -> Option<&str> {
        self.sizes.iter().find(|(kib, _)| *kib == 64).map(|(_, v)| v.as_str())
    }

    fn only_64k(&self) -> bool {
        only_64k(&self.sizes, &self.thp)
    }

    /// Whether a size between 64 KiB and 2 MiB is allowed for advised memory.
    fn larger_allowed(&self) -> bool {
        larger_allowed(&self.sizes, &self.thp)
    }
}

/// Whether the host gives memory advised `MADV_HUGEPAGE` transparent huge pages (2 MiB).
pub fn huge_pages_advised() -> bool {
    read_selected(&Path::new(THP_DIR).join("enabled")).is_ok_and(|thp| matches!(thp.as_str(), "always" | "madvise"))
}

/// Whether this host gives 64 KiB folios (and no larger ones below 2 MiB) to memory advised
/// `MADV_HUGEPAGE`; false on a kernel without the setting. Read once per process.
pub fn available() -> bool {
    match READING.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let yes = Settings::read().is_ok_and(|s| s.only_64k());
            READING.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
    }
}

/// Forgets the reading (after the setting was changed here).
fn forget() {
    READING.store(0, Ordering::Relaxed);
}

/// What [`enable`] found or did.
#[derive(Debug)]
pub enum Folios {
    /// The host already gives them (nothing changed).
    Already,
    /// Turned on for as long as the guard lives.
    Enabled(Enabled),
    /// Not available, with why (an old kernel, larger folios allowed too, or not root).
    Unavailable(String),
}

impl std::fmt::Display for Folios {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Folios::Already => write!(f, "on (the host's setting)"),
            Folios::Enabled(e) => write!(f, "on for this run (`{ADVISED}`; was `{}`, put back after)", e.previous),
            Folios::Unavailable(why) => write!(f, "off ({why})"),
        }
    }
}

/// The setting as [`enable`] found it, and its record; written back on drop.
#[derive(Debug)]
pub struct Enabled {
    previous: String,
    record: PathBuf,
}

/// Reads a record: none, or one of the setting's values and nothing else.
fn read_record(record: &Path) -> Result<Option<String>, String> {
    let bytes = match read_regular(record, 64) {
        Ok(bytes) => bytes,
        Err(FileError::Missing(_)) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let value = String::from_utf8_lossy(&bytes).trim().to_string();
    if VALUES.contains(&value.as_str()) {
        Ok(Some(value))
    } else {
        Err(format!("{}: not a THP setting: {value:?}", record.display()))
    }
}

/// Puts the setting back to `previous` if it still holds what [`enable`] wrote; returns why
/// not otherwise.
fn put_back(previous: &str) -> Result<(), String> {
    match read_selected(Path::new(FOLIOS)) {
        Ok(now) if now == ADVISED => {
            std::fs::write(FOLIOS, previous).map_err(|e| format!("could not put {FOLIOS} back to {previous}: {e}"))
        }
        Ok(now) => Err(format!("{FOLIOS} was changed to {now} meanwhile; left alone")),
        Err(e) => Err(format!("{FOLIOS}: {e}")),
    }
}

/// Turns 64 KiB folios on for advised memory if the host does not give them yet (needs
/// root), recording the old value in `record` first. A record left by a killed run is
/// undone before anything else.
pub fn enable(record: &Path) -> Folios {
    match read_record(record) {
        Ok(Some(previous)) => {
            if let Err(why) = put_back(&previous) {
                tracing::warn!("{why}");
            }
            let _ = std::fs::remove_file(record);
        }
        Ok(None) => {}
        Err(why) => return Folios::Unavailable(format!("a damaged record, left alone: {why}")),
    }
    forget();
    let settings = match Settings::read() {
        Ok(s) => s,
        Err(e) => return Folios::Unavailable(format!("{THP_DIR}: {e}")),
    };
    if settings.only_64k() {
        READING.store(2, Ordering::Relaxed);
        return Folios::Already;
    }
    if settings.larger_allowed() {
        return Folios::Unavailable("larger folios than 64 KiB are allowed too".into());
    }
    // Not allowed for advised memory (else the checks above had answered): `never`, or
    // `inherit` from a global `never`.
    let Some(folios) = settings.folios().filter(|v| VALUES.contains(v)).map(str::to_owned) else {
        return Folios::Unavailable(format!("{FOLIOS}: missing or unknown (a kernel before 6.8?)"));
    };
    if let Err(e) = write_atomic(record, |f| writeln!(f, "{folios}")) {
        return Folios::Unavailable(format!("cannot record the setting: {e}"));
    }
    forget();
    match std::fs::write(FOLIOS, ADVISED) {
        Ok(()) => Folios::Enabled(Enabled { previous: folios, record: record.to_path_buf() }),
        Err(e) => {
            let _ = std::fs::remove_file(record);
            Folios::Unavailable(format!("cannot set {FOLIOS}: {e}"))
        }
    }
}

impl Drop for Enabled {
    fn drop(&mut self) {
        if let Err(why) = put_back(&self.previous) {
            tracing::warn!("{why}");
        }
        let _ = std::fs::remove_file(&self.record);
        forget();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_selected_value_is_the_bracketed_word() {
        assert_eq!(selected("always inherit madvise [never]\n"), Some("never"));
        assert_eq!(selected("[always] madvise never"), Some("always"));
        assert_eq!(selected("always madvise never"), None);
        assert_eq!(selected("always [madvise"), None);
    }

    #[test]
    fn advised_memory_gets_a_size_when_it_or_its_inheritance_allows() {
        assert!(advised_gets("madvise", "never"));
        assert!(advised_gets("always", "never"));
        assert!(advised_gets("inherit", "madvise"));
        assert!(advised_gets("inherit", "always"));
        assert!(!advised_gets("inherit", "never"));
        assert!(!advised_gets("never", "always"));
        assert!(!advised_gets("", ""));
    }

    #[test]
    fn only_64k_means_no_larger_size_below_2_mib() {
        let sizes = |v: &[(u64, &str)]| v.iter().map(|(k, s)| (*k, s.to_string())).collect::<Vec<_>>();
        let host = [(16, "never"), (64, "madvise"), (128, "never"), (1024, "never"), (2048, "inherit")];
        assert!(only_64k(&sizes(&host), "madvise"));
        assert!(!only_64k(&sizes(&[(64, "never"), (2048, "inherit")]), "madvise"));
        assert!(!only_64k(&sizes(&[(64, "madvise"), (128, "inherit")]), "madvise"), "128 KiB would be taken");
        assert!(only_64k(&sizes(&[(64, "madvise"), (128, "inherit")]), "never"));
        assert!(only_64k(&sizes(&[(32, "always"), (64, "madvise")]), "never"), "smaller sizes do not matter");
        assert!(!only_64k(&[], "always"), "a kernel without the setting");
    }

    #[test]
    fn a_record_holds_one_of_the_settings_values_or_is_refused() {
        let dir = std::env::temp_dir().join(format!("snapvisor-folios-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let record = dir.join("folios");
        std::fs::write(&record, "never\n").unwrap();
        assert_eq!(read_record(&record).unwrap().as_deref(), Some("never"));
        std::fs::write(&record, "[never] always\n").unwrap();
        assert!(read_record(&record).is_err());
        std::fs::write(&record, vec![b'x'; 100]).unwrap();
        assert!(read_record(&record).is_err(), "longer than any value");
        std::fs::remove_file(&record).unwrap();
        assert_eq!(read_record(&record), Ok(None));
        std::fs::remove_dir(&dir).unwrap();
    }
}
