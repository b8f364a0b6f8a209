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
//! memory some process advised for huge pages — and the returned guard writes the old value
//! back, unless somebody else changed it in between.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};

const THP: &str = "/sys/kernel/mm/transparent_hugepage/enabled";
const FOLIOS: &str = "/sys/kernel/mm/transparent_hugepage/hugepages-64kB/enabled";
/// What [`enable`] writes.
const ADVISED: &str = "madvise";

/// Cached answer of [`available`]: 0 not read yet, 1 no, 2 yes.
static AVAILABLE: AtomicU8 = AtomicU8::new(0);

/// The selected value of a sysfs THP setting: the bracketed word of `always [madvise] never`.
fn selected(text: &str) -> Option<&str> {
    let start = text.find('[')? + 1;
    let len = text[start..].find(']')?;
    Some(&text[start..start + len])
}

fn read_selected(path: &str) -> io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    selected(&text)
        .map(str::to_owned)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("{path}: no selected value in {text:?}")))
}

/// Whether memory advised `MADV_HUGEPAGE` gets 64 KiB folios, given the two settings.
fn advised_gets_folios(folios: &str, thp: &str) -> bool {
    match folios {
        "always" | "madvise" => true,
        "inherit" => matches!(thp, "always" | "madvise"),
        _ => false,
    }
}

/// Whether this host gives 64 KiB folios to memory advised `MADV_HUGEPAGE` (false on a
/// kernel without the setting). Read once; [`enable`] and its guard update the answer.
pub fn available() -> bool {
    match AVAILABLE.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let yes = read_selected(FOLIOS)
                .ok()
                .is_some_and(|f| advised_gets_folios(&f, &read_selected(THP).unwrap_or_default()));
            AVAILABLE.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
    }
}

/// What [`enable`] found or did.
#[derive(Debug)]
pub enum Folios {
    /// The host already gives them (nothing changed).
    Already,
    /// Turned on for as long as the guard lives.
    Enabled(Enabled),
    /// Not available, with why (an old kernel, or not root).
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

/// The setting as [`enable`] found it; written back on drop.
#[derive(Debug)]
pub struct Enabled {
    previous: String,
}

/// Turns 64 KiB folios on for advised memory if the host does not give them yet (needs root).
pub fn enable() -> Folios {
    let folios = match read_selected(FOLIOS) {
        Ok(f) => f,
        Err(e) => return Folios::Unavailable(format!("{FOLIOS}: {e}")),
    };
    if advised_gets_folios(&folios, &read_selected(THP).unwrap_or_default()) {
        AVAILABLE.store(2, Ordering::Relaxed);
        return Folios::Already;
    }
    match std::fs::write(Path::new(FOLIOS), ADVISED) {
        Ok(()) => {
            AVAILABLE.store(2, Ordering::Relaxed);
            Folios::Enabled(Enabled { previous: folios })
        }
        Err(e) => Folios::Unavailable(format!("cannot set {FOLIOS}: {e}")),
    }
}

impl Drop for Enabled {
    fn drop(&mut self) {
        AVAILABLE.store(0, Ordering::Relaxed);
        // Only our own change is undone.
        match read_selected(FOLIOS) {
            Ok(now) if now == ADVISED => {
                if let Err(e) = std::fs::write(Path::new(FOLIOS), &self.previous) {
                    tracing::warn!("could not put {FOLIOS} back to {}: {e}", self.previous);
                }
            }
            Ok(now) => tracing::warn!("{FOLIOS} was changed to {now} meanwhile; left alone"),
            Err(e) => tracing::warn!("{FOLIOS}: {e}"),
        }
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
    fn advised_memory_gets_folios_when_the_size_or_its_inheritance_allows() {
        assert!(advised_gets_folios("madvise", "never"));
        assert!(advised_gets_folios("always", "never"));
        assert!(advised_gets_folios("inherit", "madvise"));
        assert!(advised_gets_folios("inherit", "always"));
        assert!(!advised_gets_folios("inherit", "never"));
        assert!(!advised_gets_folios("never", "always"));
        assert!(!advised_gets_folios("", ""));
    }
}
