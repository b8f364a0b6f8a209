//! Every built-in function × every built-in input, run natively: each answers with a
//! digest (no error), the same digest twice in a row on one state and from a fresh state
//! (deterministic, no state leaks between invocations), and the digest recorded in
//! `tests/digests.txt` (so a change to a function's output is a visible, reviewed change).
//!
//! To record new digests after a deliberate change:
//! `SNAPVISOR_BLESS=1 cargo test -p snapvisor-functions --test native`.

use snapvisor_functions::catalog::INPUT_NAMES;
use snapvisor_functions::{native, CATALOG};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

fn digest(function: &str, input: &str, response: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(response)
        .unwrap_or_else(|e| panic!("{function} {input}: not JSON ({e}): {}", String::from_utf8_lossy(response)));
    assert!(v.get("error").is_none(), "{function} {input}: {v}");
    v["digest"].as_str().unwrap_or_else(|| panic!("{function} {input}: no digest in {v}")).to_string()
}

fn recorded() -> BTreeMap<(String, String), String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/digests.txt"))
        .expect("tests/digests.txt");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 3, "bad line in digests.txt: {l}");
            ((f[0].to_string(), f[1].to_string()), f[2].to_string())
        })
        .collect()
}

#[test]
fn every_function_answers_every_input_deterministically() {
    let expected = recorded();
    let mut table = String::from("# function input digest (SHA-256 of the output), from tests/native.rs\n");
    let mut times = String::new();
    let mut mismatches = Vec::new();
    for info in CATALOG {
        let mut warm = native(info.name).expect("a native runner");
        assert_eq!(info.inputs.iter().map(|i| i.name).collect::<Vec<_>>(), INPUT_NAMES, "{}", info.name);
        for input in info.inputs {
            let start = Instant::now();
            let first = digest(info.name, input.name, &warm.invoke(input.request));
            let elapsed = start.elapsed();
            let again = digest(info.name, input.name, &warm.invoke(input.request));
            assert_eq!(first, again, "{} {}: a second invocation differs", info.name, input.name);
            let _ = writeln!(table, "{} {} {first}", info.name, input.name);
            let _ = writeln!(
                times,
                "{:<12} {:>2} {:>9} bytes {:>9.1} ms",
                info.name,
                input.name,
                input.size(),
                elapsed.as_secs_f64() * 1e3
            );
            match expected.get(&(info.name.to_string(), input.name.to_string())) {
                Some(want) if *want == first => {}
                other => mismatches.push(format!("{} {}: {first}, recorded {other:?}", info.name, input.name)),
            }
        }
        // Inputs that share a request answer alike; a fresh state answers like a warm one.
        let b = info.input("B").expect("B").request;
        let fresh = digest(info.name, "B", &native(info.name).expect("runner").invoke(b));
        assert_eq!(fresh, digest(info.name, "B", &warm.invoke(b)), "{}: fresh and warm states differ", info.name);
    }
    eprintln!("native run times (first invocation on a warm state; noisy shared host):\n{times}");
    if std::env::var_os("SNAPVISOR_BLESS").is_some() {
        std::fs::write(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/digests.txt"), table).expect("write");
        return;
    }
    assert!(mismatches.is_empty(), "digests differ from tests/digests.txt:\n{}", mismatches.join("\n"));
}

#[test]
fn malformed_requests_are_function_errors() {
    let cases: &[(&str, &[u8])] = &[
        ("json", b"{\"unterminated\": [1, 2"),
        ("json", b"\xff\xfe not utf-8"),
        ("compression", b""),
        ("pyaes", b"{\"length\": -1}"),
        ("pyaes", b"{\"length\": 0}"),
        ("pyaes", b"{\"length\": 100, \"colour\": 1}"),
        ("image", b"GIF89a..."),
        ("image", &[0xff, 0xd8, 0xff, 0xe0, 0x00]),
        ("chameleon", b"{\"rows\": 100000, \"cols\": 100000}"),
        ("matmul", b"{\"n\": 0}"),
        ("matmul", b"{\"n\": \"large\"}"),
        ("pagerank", b"{\"nodes\": 1}"),
        ("video", b""),
        ("video", &[0xff, 0xd8, 0xff, 0xd9, 0x00]),
        ("recognition", b"not a photo"),
        ("read-list", b"{\"steps\": 0}"),
        ("read-list", b"{\"steps\": 100000000}"),
        ("mmap", b"{\"mib\": 0}"),
        ("mmap", b"{\"mib\": 1000000}"),
    ];
    for (function, request) in cases {
        let response = native(function).expect("runner").invoke(request);
        let v: serde_json::Value = serde_json::from_slice(&response).expect("JSON");
        let error = v["error"].as_str().unwrap_or_else(|| panic!("{function} {request:?}: no error in {v}"));
        assert!(!error.is_empty(), "{function}");
    }
    // The truncated inputs of the file functions are errors too, never a panic.
    for (function, input) in [("image", "A"), ("video", "1"), ("recognition", "A"), ("json", "A")] {
        let request = snapvisor_functions::input(function, input).expect("input");
        let response = native(function).expect("runner").invoke(&request[..request.len() / 2]);
        let v: serde_json::Value = serde_json::from_slice(&response).expect("JSON");
        assert!(v["error"].is_string(), "{function} half of {input}: {v}");
    }
}

#[test]
fn the_catalog_looks_up_names_and_refuses_unknown_ones() {
    assert_eq!(CATALOG.len(), 12);
    for info in CATALOG {
        assert!(snapvisor_functions::info(info.name).is_some());
        assert!(native(info.name).is_some());
        for name in INPUT_NAMES {
            assert_eq!(snapvisor_functions::input(info.name, name), info.input(name).map(|i| i.request));
        }
        assert!(info.input("C").is_none() && info.input("7").is_none() && info.input("a").is_none());
    }
    assert!(snapvisor_functions::info("nope").is_none());
    assert!(snapvisor_functions::input("json", "Z").is_none());
    assert!(native("nope").is_none() && snapvisor_functions::run_native("nope", b"").is_none());
}
