//! The daemon's warm VMs and VM shells, run as a separate process on its Unix socket: an
//! idle warm VM is stopped, SnapStarts restore into the shells it keeps ready, and a
//! SnapStart kept warm (trimmed) serves the next request of its snapshot. Every answer is
//! checked against openapi.yaml by the test client.

mod support;

use hyper::Method;
use serde_json::json;
use support::{kvm, native_digest, shm_pool, Daemon, Tmp};

#[test]
fn an_idle_warm_vm_is_stopped_and_the_next_request_boots_a_new_one() {
    if !kvm("an_idle_warm_vm_is_stopped_and_the_next_request_boots_a_new_one") {
        return;
    }
    let tmp = Tmp::new(&std::env::temp_dir(), "api-idle");
    let daemon = Daemon::start(&tmp.0, &["--warm-idle-secs", "1"]);
    let api = daemon.api();
    let warm = json!({ "function": "json", "strategy": "warm" });
    let first = api.post("/invocations", warm.clone()).expect(200);
    assert!(first["boot_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{first}");
    assert_eq!(api.get("/vms").expect(200).as_array().unwrap().len(), 1);
    // Idle for its second, the VM stops on its own (its thread notices within the idle time).
    let start = std::time::Instant::now();
    while !api.get("/vms").expect(200).as_array().unwrap().is_empty() {
        assert!(start.elapsed() < std::time::Duration::from_secs(15), "the idle warm VM was not stopped");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(api.get("/healthz").expect(200)["warm_vms"], 0);
    let again = api.post("/invocations", warm).expect(200);
    assert!(again["boot_ms"].as_f64().is_some_and(|ms| ms > 0.0), "a new warm VM is booted: {again}");
    assert_eq!(again["vms"][0]["digest"], native_digest("json"));
}

#[test]
fn snapstarts_restore_into_the_vm_shells_the_daemon_keeps_ready() {
    if !kvm("snapstarts_restore_into_the_vm_shells_the_daemon_keeps_ready") {
        return;
    }
    let tmp = Tmp::new(&std::env::temp_dir(), "api-shells");
    let daemon = Daemon::start(&tmp.0, &["--shells", "1"]);
    let api = daemon.api();
    let expected = native_digest("json");
    let wait_for_a_shell = || {
        let start = std::time::Instant::now();
        while api.get("/healthz").expect(200)["ready_shells"] != 1 {
            assert!(start.elapsed() < std::time::Duration::from_secs(15), "no shell was made");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    api.post("/snapshots", json!({ "function": "json" })).expect(201);
    assert_eq!(api.get("/healthz").expect(200)["ready_shells"], 0);
    // The first SnapStart of a memory size finds no shell; the daemon then makes one.
    let lazy = json!({ "function": "json", "strategy": "lazy" });
    let first = api.post("/invocations", lazy.clone()).expect(200);
    assert_eq!((first["vms"][0]["in_shell"].as_bool(), &first["vms"][0]["digest"]), (Some(false), &json!(expected)));
    wait_for_a_shell();
    let second = api.post("/invocations", lazy).expect(200);
    assert_eq!((second["vms"][0]["in_shell"].as_bool(), &second["vms"][0]["digest"]), (Some(true), &json!(expected)));
    // Two VMs, one shell: one VM gets it, the other is created in its restore.
    wait_for_a_shell();
    let two = api.post("/invocations", json!({ "function": "json", "strategy": "lazy", "concurrency": 2 })).expect(200);
    let mut in_shell: Vec<bool> =
        two["vms"].as_array().unwrap().iter().map(|v| v["in_shell"].as_bool().unwrap()).collect();
    in_shell.sort();
    assert_eq!(in_shell, [false, true], "{two}");
    assert!(two["vms"].as_array().unwrap().iter().all(|v| v["digest"] == expected));
    wait_for_a_shell();
    let metrics = String::from_utf8(api.get("/metrics").response.body.to_vec()).unwrap();
    assert!(metrics.lines().any(|l| l == "snapvisor_ready_shells 1"), "{metrics}");
}

#[test]
fn a_snapstart_kept_warm_trims_and_serves_the_next_request_of_its_snapshot() {
    if !kvm("a_snapstart_kept_warm_trims_and_serves_the_next_request_of_its_snapshot") {
        return;
    }
    let tmp = Tmp::new(&std::env::temp_dir(), "api-keep");
    let (_shm, pool) = shm_pool("api-keep-pool", 128);
    let daemon = Daemon::start(&tmp.0, &["--pool", pool.to_str().unwrap(), "--warm-max", "2"]);
    let api = daemon.api();
    let (json_digest, hello_digest) = (native_digest("json"), native_digest("hello"));
    api.post("/snapshots", json!({ "function": "json" })).expect(201);
    api.post("/snapshots", json!({ "function": "hello" })).expect(201);
    api.post("/snapshots/json/import", json!({})).expect(200);

    // The SnapStart's VM is kept, trimmed; the next request of that snapshot runs on it.
    let kept = json!({ "function": "json", "strategy": "pass", "keep_warm": true });
    let first = api.post("/invocations", kept.clone()).expect(200);
    assert_eq!(
        (&first["strategy"], &first["kept_warm"], &first["vms"][0]["digest"]),
        (&json!("pass"), &json!(true), &json!(json_digest))
    );
    let (private, trimmed) =
        (first["vms"][0]["private_mib"].as_f64().unwrap(), first["vms"][0]["kept_private_mib"].as_f64().unwrap());
    assert!(trimmed > 0.0 && trimmed <= private, "kept {trimmed} MiB of {private} MiB");
    let vms = api.get("/vms").expect(200);
    assert_eq!((&vms[0]["restored_with"], &vms[0]["function"]), (&json!("pass"), &json!("json")), "{vms}");
    let second = api.post("/invocations", kept).expect(200);
    assert_eq!(
        (&second["strategy"], &second["kept_warm"], &second["vms"][0]["digest"]),
        (&json!("warm"), &json!(true), &json!(json_digest))
    );
    assert_eq!(api.get("/vms").expect(200)[0]["invocations"], 1);

    // Another snapshot gets its own VM; with --warm-max kept, a SnapStart still answers
    // and its VM is not kept.
    let hello =
        api.post("/invocations", json!({ "function": "hello", "strategy": "lazy", "keep_warm": true })).expect(200);
    assert_eq!((&hello["kept_warm"], &hello["vms"][0]["digest"]), (&json!(true), &json!(hello_digest)));
    let full =
        api.post("/invocations", json!({ "function": "json", "strategy": "lazy", "keep_warm": true })).expect(200);
    assert_eq!((&full["strategy"], &full["kept_warm"]), (&json!("lazy"), &json!(false)));
    assert_eq!(api.get("/vms").expect(200).as_array().unwrap().len(), 2);

    // Deleting a snapshot stops the VMs kept from it.
    assert_eq!(api.call(Method::DELETE, "/snapshots/hello", None).status.as_u16(), 204);
    let left = api.get("/vms").expect(200);
    assert_eq!((left.as_array().unwrap().len(), &left[0]["restored_with"]), (1, &json!("pass")), "{left}");
    // Only SnapStarts of one VM are kept.
    let two = json!({ "function": "json", "strategy": "pass", "keep_warm": true, "concurrency": 2 });
    assert_eq!(api.post("/invocations", two).error().0, "bad_request");
    let warm = json!({ "function": "json", "strategy": "warm", "keep_warm": true });
    assert_eq!(api.post("/invocations", warm).error().0, "bad_request");
}
