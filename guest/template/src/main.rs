//! A template snapvisor function: counts the lines, words and bytes of the request text
//! and how many of its words a small dictionary knows.
//!
//! It shows the parts of a function: state built once by `init` (it is in the snapshot,
//! so every SnapStart finds it ready), a handler per request, errors, logging, the heap.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

snapvisor_sdk::function!(init, handle);

/// What init builds once, before the snapshot.
struct State {
    dictionary: BTreeSet<&'static str>,
    invocations: u64,
}

fn init() -> State {
    let dictionary: BTreeSet<&'static str> =
        ["a", "the", "of", "and", "function", "memory", "snapshot", "restore", "page", "start"].into_iter().collect();
    snapvisor_sdk::println!("init: {} words, {} MiB of heap", dictionary.len(), snapvisor_sdk::heap_size() >> 20);
    State { dictionary, invocations: 0 }
}

/// One request: UTF-8 text. An `Err` becomes the response `{"error": "..."}`.
fn handle(state: &mut State, request: &[u8]) -> Result<Vec<u8>, String> {
    if request.is_empty() {
        return Err(String::from("empty request: send some text"));
    }
    let text = core::str::from_utf8(request).map_err(|e| format!("the request is not UTF-8 text: {e}"))?;
    state.invocations += 1;
    let words: Vec<String> = text.split_whitespace().map(|w| w.to_lowercase()).collect();
    let known = words.iter().filter(|w| state.dictionary.contains(w.as_str())).count();
    let response = format!(
        r#"{{"lines":{},"words":{},"known":{},"bytes":{},"invocation":{}}}"#,
        text.lines().count(),
        words.len(),
        known,
        request.len(),
        state.invocations
    );
    Ok(response.into_bytes())
}
