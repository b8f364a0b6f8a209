//! `recorded.json`: which input recorded a snapshot's working sets.
//!
//! `restore::record` writes it (atomically) after the working sets, so a later invocation
//! — by default with another input: FaaSnap's two-input method records with `A` and
//! measures `B` — can say what its working sets came from, and `pool import` can carry
//! the label with the write set into the pool's index. It is a note for reports: nothing
//! a restore maps or loads depends on it, and a missing or unreadable note only means the
//! label is unknown.

use super::SnapshotError;
use crate::files::{read_regular, write_atomic};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// File name inside a snapshot directory.
pub const FILE: &str = "recorded.json";
/// Largest note read.
const MAX_BYTES: u64 = 4096;
/// Longest input label kept (labels are `A`, `B`, `1`..`6` or a short description).
pub const MAX_LABEL: usize = 256;

/// What the recording ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recording {
    /// The input: `A`, `B`, `1`..`6`, or a description of a literal request.
    pub input: String,
    /// Bytes of the request.
    pub request_bytes: u64,
}

impl Recording {
    /// A note for `input` (cut to [`MAX_LABEL`] characters) and a request of `request_bytes`.
    pub fn new(input: &str, request_bytes: u64) -> Self {
        Recording { input: input.chars().take(MAX_LABEL).collect(), request_bytes }
    }

    /// Writes the note into the snapshot directory `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), SnapshotError> {
        let json = serde_json::to_vec(self).expect("a string and a number encode");
        write_atomic(&dir.join(FILE), |file| std::io::Write::write_all(file, &json))?;
        Ok(())
    }

    /// The note of the snapshot in `dir`, if it has a readable one.
    pub fn read(dir: &Path) -> Option<Self> {
        let bytes = read_regular(&dir.join(FILE), MAX_BYTES).ok()?;
        serde_json::from_slice::<Recording>(&bytes).ok().filter(|r| r.input.chars().count() <= MAX_LABEL)
    }
}
