//! A guest's console output, kept within bounds: a guest that prints without end — long
//! lines or millions of empty ones — cannot grow the VMM's memory or its logs without end.
//! Lines are logged escaped (`crate::escape`): guest text never reaches a terminal raw.

use crate::escape::Escaped;

/// Console output of a guest, kept up to [`Console::LIMIT`] bytes and
/// [`Console::WRITES_LIMIT`] writes (every write counts, empty ones too).
#[derive(Clone, Debug, Default)]
pub struct Console {
    lines: Vec<String>,
    bytes: usize,
    dropped: u64,
    dropped_writes: u64,
}

impl Console {
    /// Bytes kept per VM.
    pub const LIMIT: usize = 1 << 20;
    /// Writes (lines) kept per VM.
    pub const WRITES_LIMIT: usize = 4096;

    /// Keeps (and logs) one console write, unless a limit is reached.
    pub fn push(&mut self, text: String) {
        if self.lines.len() >= Self::WRITES_LIMIT || self.bytes + text.len() > Self::LIMIT {
            if self.dropped_writes == 0 {
                tracing::warn!(
                    target: "guest",
                    "console output beyond {} writes or {} bytes is dropped",
                    Self::WRITES_LIMIT,
                    Self::LIMIT
                );
            }
            self.dropped += text.len() as u64;
            self.dropped_writes += 1;
            return;
        }
        tracing::info!(target: "guest", "{}", Escaped::new(text.trim_end()));
        self.bytes += text.len();
        self.lines.push(text);
    }

    /// The lines kept (raw guest text: escape before showing it, see `crate::escape`).
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Bytes dropped after a limit.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Writes dropped after a limit.
    pub fn dropped_writes(&self) -> u64 {
        self.dropped_writes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_writes_count_against_the_limit() {
        let mut console = Console::default();
        for _ in 0..1_000_000 {
            console.push(String::new());
        }
        assert_eq!(console.lines().len(), Console::WRITES_LIMIT);
        assert_eq!(console.dropped_writes(), 1_000_000 - Console::WRITES_LIMIT as u64);
        let mut console = Console::default();
        console.push("x".repeat(Console::LIMIT));
        console.push("y".into());
        assert_eq!((console.lines().len(), console.dropped(), console.dropped_writes()), (1, 1, 1));
    }
}
