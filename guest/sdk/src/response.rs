//! What a handler may return, and the error convention: `Err(e)` becomes the response
//! `{"error": "<e>"}` (a JSON object with one string), which the VMM reports as the
//! function's error while the guest goes on serving.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{Display, Write};

/// A handler's return value, turned into response bytes.
pub trait IntoResponse {
    /// The bytes to hand to the VMM.
    fn into_response(self) -> Vec<u8>;
}

impl IntoResponse for Vec<u8> {
    fn into_response(self) -> Vec<u8> {
        self
    }
}

impl IntoResponse for String {
    fn into_response(self) -> Vec<u8> {
        self.into_bytes()
    }
}

impl IntoResponse for &[u8] {
    fn into_response(self) -> Vec<u8> {
        self.to_vec()
    }
}

impl IntoResponse for &str {
    fn into_response(self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
}

impl<T: IntoResponse, E: Display> IntoResponse for Result<T, E> {
    fn into_response(self) -> Vec<u8> {
        match self {
            Ok(response) => response.into_response(),
            Err(error) => error_response(&error),
        }
    }
}

/// `{"error": "<message>"}`, with the message escaped as a JSON string (RFC 8259).
pub fn error_response(message: &impl Display) -> Vec<u8> {
    let mut escaped = JsonString(String::from("{\"error\":\""));
    let _ = write!(escaped, "{message}");
    let mut out = escaped.0;
    out.push_str("\"}");
    out.into_bytes()
}

/// Appends text to a JSON string literal's body, escaping what RFC 8259 requires.
struct JsonString(String);

impl Write for JsonString {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for c in s.chars() {
            match c {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
                '\n' => self.0.push_str("\\n"),
                '\r' => self.0.push_str("\\r"),
                '\t' => self.0.push_str("\\t"),
                c if u32::from(c) < 0x20 => write!(self.0, "\\u{:04x}", u32::from(c))?,
                c => self.0.push(c),
            }
        }
        Ok(())
    }
}
