//! What the command line prints: guest and file text made safe for a terminal, and JSON
//! reports whose rendering is bounded.
//!
//! Guest responses, console lines, abort messages and names read from a pool are untrusted:
//! a control character could move the cursor, set the window title, write the clipboard
//! (OSC 52) or forge an `error:` line. Everything human-readable goes through [`escape`];
//! JSON output is escaped by the JSON encoder itself.

use serde::Serialize;
use std::io::Write;

/// Most bytes of a guest response shown in human-readable output.
pub const RESPONSE_SHOWN: usize = 64 << 10;

pub use snapvisor_vmm::escape::escape;

/// Bytes from a guest as escaped text, at most `limit` bytes of it, with a note on the rest.
pub fn guest_text(bytes: &[u8], limit: usize) -> String {
    let shown = &bytes[..bytes.len().min(limit)];
    let mut text = snapvisor_vmm::escape::escape_bytes(shown);
    if bytes.len() > limit {
        text.push_str(&format!(" … ({} more bytes)", bytes.len() - limit));
    }
    text
}

/// A writer that fails once more than `limit` bytes went into it.
struct Capped {
    buf: Vec<u8>,
    limit: usize,
}

impl Write for Capped {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + b.len() > self.limit {
            return Err(std::io::Error::other("rendering limit"));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `value` as JSON: pretty-printed when that stays within a few times its compact size
/// (deeply nested guest output can make indentation grow without bound), compact otherwise.
pub fn json(value: &impl Serialize) -> Result<String, serde_json::Error> {
    json_text(&serde_json::to_string(value)?)
}

/// JSON text pretty-printed like [`json`], keys in the order they come (a daemon's report
/// prints exactly as the same report made here).
pub fn json_text(compact: &str) -> Result<String, serde_json::Error> {
    let mut pretty = Capped { buf: Vec::new(), limit: 2 * compact.len() + (64 << 10) };
    let mut from = serde_json::Deserializer::from_str(compact);
    let mut to = serde_json::Serializer::pretty(&mut pretty);
    if serde_transcode::transcode(&mut from, &mut to).is_ok() {
        if let Ok(text) = String::from_utf8(pretty.buf) {
            return Ok(text);
        }
    }
    // Not pretty-printable within bounds: the compact text, once checked to be JSON.
    serde_json::from_str::<serde::de::IgnoredAny>(compact)?;
    Ok(compact.to_string())
}

/// Prints `value` as JSON on stdout.
pub fn print_json(value: &impl Serialize) -> Result<(), serde_json::Error> {
    println!("{}", json(value)?);
    Ok(())
}

/// Fields of a JSON report, read for text output (a missing field reads as 0 or "").
pub trait Fields {
    /// A number.
    fn num(&self, key: &str) -> f64;
    /// An integer.
    fn int(&self, key: &str) -> u64;
    /// A string.
    fn text(&self, key: &str) -> &str;
    /// An array's items.
    fn items(&self, key: &str) -> &[serde_json::Value];
}

impl Fields for serde_json::Value {
    fn num(&self, key: &str) -> f64 {
        self.get(key).and_then(serde_json::Value::as_f64).unwrap_or(0.0)
    }

    fn int(&self, key: &str) -> u64 {
        self.get(key).and_then(serde_json::Value::as_u64).unwrap_or(0)
    }

    fn text(&self, key: &str) -> &str {
        self.get(key).and_then(serde_json::Value::as_str).unwrap_or("")
    }

    fn items(&self, key: &str) -> &[serde_json::Value] {
        self.get(key).and_then(serde_json::Value::as_array).map_or(&[], Vec::as_slice)
    }
}

/// A guest's response as a report holds it (its JSON, or its text) for a terminal:
/// escaped, at most [`RESPONSE_SHOWN`] bytes.
pub fn response_text(response: &serde_json::Value) -> String {
    match response {
        serde_json::Value::String(text) => guest_text(text.as_bytes(), RESPONSE_SHOWN),
        other => guest_text(other.to_string().as_bytes(), RESPONSE_SHOWN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_guest_text_is_cut_with_a_note() {
        assert_eq!(guest_text(b"abcdef", 3), "abc … (3 more bytes)");
        assert_eq!(guest_text(b"ab\x1b\xff", 10), "ab\\x1b\\xff");
    }

    #[test]
    fn deeply_nested_json_is_not_pretty_printed_without_bound() {
        // 2,000 zeros 120 arrays deep: ~4 KB compact, ~0.5 MB indented.
        let mut value = serde_json::Value::Array(vec![serde_json::json!(0); 2000]);
        for _ in 0..120 {
            value = serde_json::json!([value]);
        }
        let small = json(&serde_json::json!({"a": [1, 2]})).unwrap();
        assert!(small.contains('\n'), "small values are pretty-printed");
        assert_eq!(json(&value).unwrap(), serde_json::to_string(&value).unwrap());
    }

    #[test]
    fn json_text_keeps_the_order_of_keys() {
        let text = json_text(r#"{"z":1,"a":{"y":[1,2],"b":"\u001b"}}"#).unwrap();
        assert!(text.find("\"z\"").unwrap() < text.find("\"a\"").unwrap(), "{text}");
        assert!(text.contains("\\u001b") && text.contains('\n'), "{text}");
        assert!(json_text("{not json").is_err());
    }
}
