//! The daemon's API, run as a separate process on its Unix socket: every resource, with
//! every request and answer checked against openapi.yaml; the error model; a hostile
//! guest through the API; and the command line's client mode.

mod support;

use hyper::Method;
use serde_json::{json, Value};
use snapvisor::cli::client::Client;
use std::path::Path;
use std::process::Command;
use support::{
    early_answer, hostile_elf, kvm, native_digest, native_digest_of, shm_pool, snapvisor_args, spec, Daemon, Tmp,
};

#[test]
fn the_openapi_file_is_valid_openapi_3_and_the_checks_bite() {
    // Parsed by openapiv3, every $ref resolves, every path parameter is declared.
    let spec = spec();
    // The checks reject what does not conform.
    assert!(spec.request_errors("POST", "/runs", &json!({ "function": "json", "timeout_ms": 5 })).is_empty());
    for bad in [json!({}), json!({ "function": 1 }), json!({ "function": "a/b" }), json!({ "function": "j", "x": 1 })] {
        assert!(!spec.request_errors("POST", "/runs", &bad).is_empty(), "{bad}");
    }
    let answer = |status: u16, body: &str| snapvisor::cli::client::Response {
        status: hyper::StatusCode::from_u16(status).unwrap(),
        headers: [(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"))]
            .into_iter()
            .collect(),
        body: body.to_string().into(),
    };
    let healthy =
        r#"{"status":"ok","version":"0","vms_running":0,"max_vms":1,"queue_depth":0,"warm_vms":0,"ready_shells":0}"#;
    spec.check_response("GET", "/healthz", &answer(200, healthy));
    spec.check_response(
        "GET",
        "/snapshots/x",
        &answer(404, r#"{"error":{"kind":"not_found","message":"m","causes":[]}}"#),
    );
    for (status, body) in [
        (200, r#"{"status":"ok"}"#),
        (200, &healthy.replace("\"ok\"", "\"fine\"")),
        (404, r#"{"error":{"kind":"nope","message":"m","causes":[]}}"#),
        (429, r#"{"error":{"kind":"busy","message":"m","causes":[]}}"#),
    ] {
        let checked = std::panic::catch_unwind(|| spec.check_response("GET", "/healthz", &answer(status, body)));
        assert!(checked.is_err(), "{status} {body} passed");
    }
}

#[test]
fn every_resource_answers_as_the_openapi_file_describes() {
    if !kvm("every_resource_answers_as_the_openapi_file_describes") {
        return;
    }
    let tmp = Tmp::new(&std::env::temp_dir(), "api");
    let (_shm, pool) = shm_pool("api-pool", 128);
    let daemon = Daemon::start(&tmp.0, &["--pool", pool.to_str().unwrap(), "--upload-max-mib", "1"]);
    let api = daemon.api();
    let expected = native_digest("json");

    // Small resources.
    assert_eq!(api.get("/healthz").expect(200)["status"], "ok");
    let openapi = api.get("/openapi.yaml");
    assert_eq!(openapi.response.body, snapvisor::server::OPENAPI.as_bytes());
    let names: Vec<Value> =
        api.get("/functions").expect(200).as_array().unwrap().iter().map(|f| f["name"].clone()).collect();
    assert!(names.contains(&json!("json")) && names.contains(&json!("recognition")), "{names:?}");

    // Images: register, show, refuse bad ones, remove.
    let entry = api.raw(Method::PUT, "/functions/evil", "application/octet-stream", hostile_elf()).expect(201);
    assert_eq!(
        (entry["builtin"].as_bool(), entry["image_bytes"].as_u64()),
        (Some(false), Some(hostile_elf().len() as u64))
    );
    assert_eq!(api.get("/functions/evil").expect(200)["name"], "evil");
    let not_elf = api.raw(Method::PUT, "/functions/bad", "application/octet-stream", b"#!/bin/sh\n".to_vec());
    assert_eq!(not_elf.status.as_u16(), 400);
    assert!(not_elf.body["error"]["causes"][0].as_str().unwrap().contains("not an ELF"), "{}", not_elf.body);
    let too_big = early_answer(&daemon.socket, "PUT", "/functions/big", "application/octet-stream", 2 << 20);
    spec().check_response("PUT", "/functions/big", &too_big);
    assert_eq!(too_big.status.as_u16(), 413);
    assert_eq!(
        api.raw(Method::PUT, "/functions/json", "application/octet-stream", hostile_elf()).error().0,
        "conflict"
    );
    assert_eq!(api.raw(Method::PUT, "/functions/..", "application/octet-stream", hostile_elf()).status.as_u16(), 400);
    assert_eq!(api.call(Method::DELETE, "/functions/evil", None).status.as_u16(), 204);
    assert_eq!(api.get("/functions/evil").error().0, "not_found");

    // A fresh run.
    let run = api.post("/runs", json!({ "function": "json" })).expect(200);
    assert_eq!((run["digest"].as_str(), run["response"]["digest"].as_str()), (Some(&*expected), Some(&*expected)));

    // Snapshots: take, list, show, record, import.
    api.post("/snapshots", json!({ "function": "json" })).expect(201);
    assert_eq!(api.post("/snapshots", json!({ "function": "json" })).error().0, "conflict");
    api.post("/snapshots", json!({ "function": "json", "name": "json-2", "mem_mib": 64 })).expect(201);
    let list = api.get("/snapshots").expect(200);
    assert_eq!(list["snapshots"].as_array().unwrap().len(), 2, "{list}");
    assert!(api.get("/snapshots/json").expect(200)["reap_pages"].is_null());
    let recorded = api.post("/snapshots/json/record", json!({})).expect(200);
    assert!(recorded["reap_pages"].as_u64().unwrap() > 0);
    assert!(api.get("/snapshots/json").expect(200)["reap_pages"].as_u64().unwrap() > 0);
    let imported = api.post("/snapshots/json/import", json!({})).expect(200);
    assert_eq!(imported["entry"]["id"], "json");
    assert_eq!(api.get("/pool").expect(200)["snapshots"][0]["id"], "json");
    let fsck = api.get("/pool/fsck?deep=true").expect(200);
    assert!(fsck["problems"].as_array().unwrap().is_empty(), "{fsck}");

    // SnapStarts with every strategy, and N VMs at once.
    for strategy in ["lazy", "uffd", "reap", "faasnap", "cached", "pass"] {
        let report = api.post("/invocations", json!({ "function": "json", "strategy": strategy })).expect(200);
        assert_eq!(report["vms"][0]["digest"], expected, "{strategy}");
        assert_eq!(report["response"]["digest"], expected, "{strategy}");
    }
    let cold =
        json!({ "snapshot": "json-2", "strategy": "uffd", "concurrency": 2, "cold": true, "uffd_chunk_kib": 64 });
    let report = api.post("/invocations", cold).expect(200);
    assert_eq!(report["vms"].as_array().unwrap().len(), 2);
    assert_eq!(report["medium"], "disk-cold");

    // Warm VMs: the first warm request boots one, the next reuses it.
    let first = api.post("/invocations", json!({ "function": "json", "strategy": "warm" })).expect(200);
    assert!(first["boot_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{first}");
    let again = api.post("/invocations", json!({ "function": "json", "strategy": "warm" })).expect(200);
    assert!(again.get("boot_ms").is_none() && again["vms"][0]["digest"] == expected, "{again}");
    let vms = api.get("/vms").expect(200);
    assert_eq!(vms.as_array().unwrap().len(), 1);
    let started = api.post("/vms", json!({ "function": "compression" })).expect(201);
    let id = started["id"].as_u64().unwrap();
    assert_eq!(api.get("/vms").expect(200).as_array().unwrap().len(), 2);
    assert_eq!(api.call(Method::DELETE, &format!("/vms/{id}"), None).status.as_u16(), 204);
    assert_eq!(api.call(Method::DELETE, &format!("/vms/{id}"), None).error().0, "not_found");

    // Errors: unknown things, bad requests, limits, routes.
    assert_eq!(api.post("/invocations", json!({ "snapshot": "nope", "strategy": "lazy" })).error().0, "not_found");
    assert_eq!(api.post("/invocations", json!({ "snapshot": "nope", "strategy": "pass" })).error().0, "not_found");
    assert_eq!(api.post("/runs", json!({ "function": "nope" })).error().0, "not_found");
    assert_eq!(
        api.post("/invocations", json!({ "function": "json", "strategy": "warm", "concurrency": 2 })).error().0,
        "bad_request"
    );
    assert_eq!(
        api.post("/invocations", json!({ "function": "json", "strategy": "lazy", "concurrency": 99 })).error().0,
        "bad_request"
    );
    assert_eq!(api.post("/runs", json!({ "function": "json", "timeout_ms": 999_999_999 })).error().0, "bad_request");
    assert_eq!(api.post("/runs", json!({ "function": "json", "mem_mib": 33 })).error().0, "bad_request");
    assert_eq!(
        api.call_bad(Method::POST, "/runs", json!({ "function": "json", "mem_mib": 30 })).error().0,
        "bad_request"
    );
    let bad = api.call_bad(Method::POST, "/invocations", json!({ "function": "json", "strategy": "mmap" }));
    assert!(bad.error().1.contains("unknown restore strategy `mmap`"), "{}", bad.body);
    assert_eq!(api.call_bad(Method::POST, "/runs", json!({ "function": "json", "bogus": 1 })).error().0, "bad_request");
    assert_eq!(api.raw(Method::POST, "/runs", "application/json", b"{\"function\":".to_vec()).error().0, "bad_request");
    assert_eq!(api.raw(Method::POST, "/runs", "text/plain", b"{}".to_vec()).error().0, "unsupported_media_type");
    let huge = early_answer(&daemon.socket, "POST", "/runs", "application/json", 21 << 20);
    spec().check_response("POST", "/runs", &huge);
    assert_eq!(huge.status.as_u16(), 413);
    // A request over the mailbox's 12 MiB, an input name the function does not have, two inputs at once.
    let request_too_big = json!({ "function": "json", "input_text": "x".repeat((12 << 20) + 1) });
    let answer = api.post("/runs", request_too_big);
    assert!(
        answer.error().0 == "bad_request" && answer.error().1.contains("does not fit the mailbox"),
        "{}",
        answer.body
    );
    let answer = api.post("/runs", json!({ "function": "json", "input": "7" }));
    assert!(answer.error().1.contains("json has no input `7`"), "{}", answer.body);
    let answer = api.post("/runs", json!({ "function": "json", "input": "A", "input_text": "{}" }));
    assert_eq!(answer.error().0, "bad_request");
    assert_eq!(api.client.send(Method::GET, "/nope", "application/json", vec![]).unwrap().status.as_u16(), 404);
    assert_eq!(api.client.send(Method::PATCH, "/runs", "application/json", vec![]).unwrap().status.as_u16(), 405);

    // Delete.
    assert_eq!(api.call(Method::DELETE, "/snapshots/json-2", None).status.as_u16(), 204);
    assert_eq!(api.get("/snapshots/json-2").error().0, "not_found");

    // Metrics: latency per strategy and phase, faults, errors, queue.
    let metrics = String::from_utf8(api.get("/metrics").response.body.to_vec()).unwrap();
    for needle in [
        "snapvisor_invocation_seconds_count{strategy=\"pass\",phase=\"memory_setup\"} 1",
        "snapvisor_invocation_seconds_count{strategy=\"warm\",phase=\"total\"} 2",
        "snapvisor_invocation_seconds_count{strategy=\"fresh\",phase=\"init\"} 1",
        "snapvisor_page_faults_total{strategy=\"uffd\",source=\"uffd\"}",
        "snapvisor_guest_memory_bytes_count{strategy=\"lazy\",kind=\"private\"} 1",
        "snapvisor_errors_total{kind=\"not_found\"}",
        "snapvisor_queue_depth 0",
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }
}

#[test]
fn a_hostile_guest_gets_an_error_answer_and_the_daemon_goes_on() {
    if !kvm("a_hostile_guest_gets_an_error_answer_and_the_daemon_goes_on") {
        return;
    }
    let tmp = Tmp::new(&std::env::temp_dir(), "hostile");
    let daemon = Daemon::start(&tmp.0, &[]);
    let api = daemon.api();
    api.raw(Method::PUT, "/functions/hostile", "application/octet-stream", hostile_elf()).expect(201);
    let failing = [
        ("panic", "hostile guest panics on purpose"),
        ("loop", "did not answer within 300ms"),
        ("respond-too-long", "response length"),
        ("null", "#PF page fault"),
    ];
    for (input, expect) in failing {
        let answer = api.post("/runs", json!({ "function": "hostile", "input": input, "timeout_ms": 300 }));
        assert_eq!(answer.status.as_u16(), 422, "{input}: {}", answer.body);
        let (kind, message) = answer.error();
        assert!(kind == "guest" && message.contains(expect), "{input}: {message}");
    }
    // Guest text with terminal controls: escaped by the VMM in the error message (and so
    // in the JSON answer and the log), never raw.
    let text = "\u{1b}]52;c;aGk=\u{7}\r\nerror: forged";
    let answer = api.post("/runs", json!({ "function": "hostile", "input": format!("die:{text}") }));
    assert!(answer.error().1.ends_with(&snapvisor_vmm::escape::escape(text)), "{}", answer.body);
    // The same through a snapshot and a warm VM; a failed warm VM is dropped, not reused.
    api.post("/snapshots", json!({ "function": "hostile" })).expect(201);
    let answer = api.post("/invocations", json!({ "function": "hostile", "strategy": "uffd", "input": "panic" }));
    assert_eq!(answer.error().0, "guest");
    let answer = api.post("/invocations", json!({ "function": "hostile", "strategy": "warm", "input": "panic" }));
    assert_eq!(answer.error().0, "guest");
    assert!(api.get("/vms").expect(200).as_array().unwrap().is_empty());
    let echo =
        api.post("/invocations", json!({ "function": "hostile", "strategy": "warm", "input": "echo" })).expect(200);
    assert_eq!(echo["response"], "echo");
    // The daemon goes on.
    let run = api.post("/runs", json!({ "function": "json" })).expect(200);
    assert_eq!(run["digest"], native_digest("json"));
    assert_eq!(api.get("/healthz").expect(200)["status"], "ok");
    let log = daemon.log();
    assert!(!log.contains('\u{1b}') && !log.contains('\u{7}'), "raw guest text in the log:\n{log}");
    assert!(log.contains(r"\x1b]52;c;aGk=\x07\r\nerror: forged"), "{log}");
}

fn cli(data: &Path, socket: Option<&Path>, args: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_snapvisor"));
    cmd.arg("--data-dir").arg(data).env_remove("SNAPVISOR_SOCKET");
    if let Some(socket) = socket {
        cmd.env("SNAPVISOR_SOCKET", socket);
    }
    let out = cmd.args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The keys of a JSON report's top level, in the order printed.
fn keys(text: &str) -> Vec<String> {
    text.lines().filter_map(|l| l.strip_prefix("  \"")?.split_once('"').map(|(k, _)| k.to_string())).collect()
}

#[test]
fn client_mode_prints_what_the_command_prints_here() {
    if !kvm("client_mode_prints_what_the_command_prints_here") {
        return;
    }
    let tmp = Tmp::new(&std::env::temp_dir(), "client");
    let (_shm, pool) = shm_pool("client-pool", 128);
    let pool = pool.to_str().unwrap();
    let daemon = Daemon::start(&tmp.0, &["--pool", pool]);
    let (data, sock) = (&tmp.0, Some(daemon.socket.as_path()));
    for args in [&["functions"][..], &["functions", "--json"]] {
        assert_eq!(cli(data, sock, args), cli(data, None, args), "{args:?}");
    }
    let expected = native_digest("json");
    let remote = cli(data, sock, &["run", "--function", "json", "--json"]);
    let here = cli(data, None, &["run", "--function", "json", "--json"]);
    assert_eq!(keys(&remote), keys(&here));
    assert!(remote.contains(&expected) && here.contains(&expected));
    let text = cli(data, sock, &["run", "--function", "json"]);
    assert!(text.contains("VM create") && text.contains(&expected), "{text}");
    // A named input, and a binary file (sent as base64), either way.
    let photo = tmp.0.join("photo.jpg");
    std::fs::write(&photo, snapvisor_functions::input("image", "A").unwrap()).unwrap();
    let photo = photo.to_str().unwrap();
    for args in [
        &["run", "--function", "image", "--input", "A", "--json"][..],
        &["run", "--function", "image", "--input-file", photo, "--json"],
    ] {
        for target in [sock, None] {
            let report: Value = serde_json::from_str(&cli(data, target, args)).unwrap();
            assert_eq!(report["digest"], native_digest_of("image", "A"), "{args:?}");
        }
    }

    let out = cli(data, sock, &["snapshot", "--function", "json"]);
    assert!(out.contains("snapshot of json after init"), "{out}");
    let snap = data.join("snapshots").join("json");
    let out = cli(data, sock, &["record", "--snapshot", snap.to_str().unwrap()]);
    assert!(out.contains("recorded the working sets of json"), "{out}");
    for strategy in ["lazy", "reap"] {
        let args = ["invoke", "--snapshot", snap.to_str().unwrap(), "--strategy", strategy, "--json"];
        let (remote, here) = (cli(data, sock, &args), cli(data, None, &args));
        assert_eq!(keys(&remote), keys(&here), "{strategy}");
        let report: Value = serde_json::from_str(&remote).unwrap();
        assert_eq!(report["vms"][0]["digest"], expected);
        let text = cli(data, sock, &["invoke", "--snapshot", snap.to_str().unwrap(), "--strategy", strategy]);
        let recorded = if strategy == "reap" { " (working sets recorded with A)" } else { "" };
        assert!(text.contains(&format!("json input B{recorded} via {strategy} (disk-warm), 1 VM(s):")), "{text}");
    }
    // The pool: import through the daemon, then the same listing and check either way.
    let out = cli(data, sock, &["pool", "import", snap.to_str().unwrap()]);
    assert!(out.contains("imported") && out.contains("as `json`"), "{out}");
    for args in [&["pool", "ls"][..], &["pool", "ls", "--json"], &["pool", "fsck"], &["pool", "fsck", "--json"]] {
        let here: Vec<&str> = args.iter().copied().chain(["--pool", pool]).collect();
        assert_eq!(cli(data, sock, args), cli(data, None, &here), "{args:?}");
    }
    let report: Value =
        serde_json::from_str(&cli(data, sock, &["invoke", "--snapshot", "json", "--strategy", "pass", "--json"]))
            .unwrap();
    assert_eq!(report["vms"][0]["digest"], expected);
    // The daemon's errors print like local ones; commands that only run here say so.
    let remote = |args: &[&str]| {
        let mut all = vec!["--data-dir", data.to_str().unwrap(), "--socket", daemon.socket.to_str().unwrap()];
        all.extend_from_slice(args);
        snapvisor_args(&all)
    };
    let out = remote(&["invoke", "--snapshot", "nope", "--strategy", "lazy"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.starts_with("error: no snapshot `nope`"), "{err}");
    let out = remote(&["pool", "ls", "--pool", pool]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("leave out --pool"));
    let out = remote(&["pool", "destroy"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("runs here only"));
}

#[test]
fn tcp_requires_the_bearer_token_which_is_never_logged() {
    let tmp = Tmp::new(&std::env::temp_dir(), "tcp");
    let data = tmp.0.to_str().unwrap();
    let out = snapvisor_args(&["--data-dir", data, "serve", "--tcp", "127.0.0.1:1"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("needs a bearer token"));
    let token = "loopback-only-token-0123456789";
    let token_file = tmp.0.join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let daemon = Daemon::start(&tmp.0, &["--tcp", &addr.to_string(), "--token-file", token_file.to_str().unwrap()]);
    for given in [None, Some("loopback-only-token-012345678X"), Some("x")] {
        let client = Client::tcp(addr, given.map(str::to_string)).unwrap();
        let answer = client.send(Method::GET, "/healthz", "application/json", vec![]).unwrap();
        spec().check_response("GET", "/healthz", &answer);
        assert_eq!(answer.status.as_u16(), 401, "{given:?}");
        assert_eq!(answer.headers["www-authenticate"], "Bearer");
    }
    let client = Client::tcp(addr, Some(token.into())).unwrap();
    let answer = client.send(Method::GET, "/healthz", "application/json", vec![]).unwrap();
    spec().check_response("GET", "/healthz", &answer);
    assert_eq!(answer.status.as_u16(), 200);
    // The Unix socket needs no token (its mode, 0600, guards it).
    daemon.api().get("/healthz").expect(200);
    assert!(!daemon.log().contains(token), "the token was logged");
}
