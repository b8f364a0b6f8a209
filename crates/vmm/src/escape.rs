//! Making untrusted text safe to show: guest console lines, responses, abort messages,
//! names read from files.
//!
//! [`escape`] keeps printable text as it is and makes everything that could change how a
//! terminal or a log shows it visible instead: control characters (`\n`, `\r`, `\t`, ESC
//! and the rest of C0, DEL, C1), Unicode format characters (bidirectional overrides and
//! isolates, zero-width characters, BOM, tags, ...) and the line and paragraph separators.
//! A backslash is doubled, so the escaped text is unambiguous. With it, a guest cannot
//! forge an `error:` line, move the cursor, set a window title, write the clipboard (OSC
//! 52) or reorder what a reader sees.

use std::borrow::Cow;
use std::fmt::{self, Write};

/// Whether `c` is shown as an escape rather than as itself.
pub fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\\' || is_format_or_separator(c)
}

/// Unicode's format characters (general category Cf) and the line/paragraph separators.
fn is_format_or_separator(c: char) -> bool {
    matches!(
        c as u32,
        0x00ad
            | 0x0600..=0x0605
            | 0x061c
            | 0x06dd
            | 0x070f
            | 0x0890..=0x0891
            | 0x08e2
            | 0x180e
            | 0x200b..=0x200f
            | 0x2028..=0x202e
            | 0x2060..=0x2064
            | 0x2066..=0x206f
            | 0xfeff
            | 0xfff9..=0xfffb
            | 0x110bd
            | 0x110cd
            | 0x13430..=0x1343f
            | 0x1bca0..=0x1bca3
            | 0x1d173..=0x1d17a
            | 0xe0001
            | 0xe0020..=0xe007f
    )
}

fn write_escaped(out: &mut impl Write, c: char) -> fmt::Result {
    match c {
        '\n' => out.write_str("\\n"),
        '\r' => out.write_str("\\r"),
        '\t' => out.write_str("\\t"),
        '\\' => out.write_str("\\\\"),
        c if (c as u32) < 0x80 => write!(out, "\\x{:02x}", c as u32),
        c => write!(out, "\\u{{{:x}}}", c as u32),
    }
}

/// `text` with every character [`needs_escape`] names replaced by a visible escape
/// (`\n`, `\r`, `\t`, `\\`, `\x1b`, `\u{202e}`, ...).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if needs_escape(c) {
            let _ = write_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

/// `text` made safe for a terminal without making escaped text ambiguous twice: like
/// [`escape`], but backslashes stay as they are. For a last pass over text that may already
/// hold escaped parts (an error message quoting a guest): applied to escaped text, it
/// changes nothing.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c != '\\' && needs_escape(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c != '\\' && needs_escape(c) {
            let _ = write_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Like [`escape`] for bytes that may not be UTF-8: invalid bytes are shown as `\xNN`.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(&escape(chunk.valid()));
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Displays text escaped and cut after `max` characters of input (with a note of how
/// many bytes were left out), for error messages and logs that quote a guest.
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a> {
    text: &'a str,
    max: usize,
}

impl<'a> Escaped<'a> {
    /// At most [`Escaped::DEFAULT_MAX`] characters of `text`.
    pub fn new(text: &'a str) -> Self {
        Escaped { text, max: Self::DEFAULT_MAX }
    }

    /// At most `max` characters of `text`.
    pub fn with_max(text: &'a str, max: usize) -> Self {
        Escaped { text, max }
    }

    /// Characters shown by default.
    pub const DEFAULT_MAX: usize = 2048;
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (shown, (i, c)) in self.text.char_indices().enumerate() {
            if shown == self.max {
                return write!(f, "… ({} more bytes)", self.text.len() - i);
            }
            if needs_escape(c) {
                write_escaped(f, c)?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_escapes_and_line_forgery_become_visible() {
        assert_eq!(escape("plain text, ünïcode ✓"), "plain text, ünïcode ✓");
        assert_eq!(escape("ok\nerror: forged\r"), "ok\\nerror: forged\\r");
        // OSC 52 (clipboard write), a window title, hidden text, a bell.
        assert_eq!(escape("\x1b]52;c;aGk=\x07"), "\\x1b]52;c;aGk=\\x07");
        assert_eq!(escape("\x1b]0;title\x1b\\"), "\\x1b]0;title\\x1b\\\\");
        assert_eq!(escape("\x1b[8mhidden\x1b[0m"), "\\x1b[8mhidden\\x1b[0m");
        assert_eq!(escape("\u{9b}31m\u{7f}\0"), "\\u{9b}31m\\x7f\\x00");
        // Bidirectional overrides, zero-width characters, tags, separators.
        assert_eq!(escape("a\u{202e}b\u{2066}c\u{200b}d\u{feff}"), "a\\u{202e}b\\u{2066}c\\u{200b}d\\u{feff}");
        assert_eq!(escape("\u{e0041}\u{2028}\u{2029}"), "\\u{e0041}\\u{2028}\\u{2029}");
        // Unambiguous: an escaped text never contains a raw control character, and a
        // backslash in the input cannot imitate an escape.
        assert_eq!(escape("\\n"), "\\\\n");
        let all: String = (0u32..0x11_0000).filter_map(char::from_u32).collect();
        assert!(!escape(&all).chars().any(|c| c != '\\' && needs_escape(c)));
    }

    #[test]
    fn sanitizing_escaped_text_changes_nothing() {
        let escaped = escape("\x1b]0;t\x07\nerror: x\\");
        assert_eq!(sanitize(&escaped), escaped);
        assert_eq!(sanitize("a\x1b[2Jb\\n"), "a\\x1b[2Jb\\n");
    }

    #[test]
    fn bytes_and_long_texts() {
        assert_eq!(escape_bytes(b"ok\xff\xfe\n"), "ok\\xff\\xfe\\n");
        assert_eq!(escape_bytes("é".as_bytes()), "é");
        assert_eq!(Escaped::with_max("abc\ndef", 4).to_string(), "abc\\n… (3 more bytes)");
        assert_eq!(Escaped::new("short").to_string(), "short");
    }
}
