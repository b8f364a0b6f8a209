//! The daemon's limits and life cycle: 429 under overload, SIGTERM drains, a daemon
//! killed with SIGKILL restarts to an intact state, and a bounded run of invocations
//! leaks neither memory, files nor threads.

mod support;

use hyper::Method;
use serde_json::json;
use std::time::{Duration, Instant};
use support::{hostile_elf, kvm, native_digest, process, shm_pool, snapvisor_args, Daemon, Tmp};

/// Waits until `/healthz` reports `n` VM slots in use.
fn wait_running(daemon: &Daemon, n: u64) {
    let start = Instant::now();
    while daemon.api().get("/healthz").expect(200)["vms_running"] != n {
        assert!(start.elapsed() < Duration::from_secs(20), "never {n} VMs running");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn beyond_the_vm_slots_and_the_queue_requests_get_429_with_retry_after() {
    if !kvm("beyond_the_vm_slots_and_the_queue_requests_get_429_with_retry_after") {
        return;
    }
    let tmp = Tmp::new(&std::env::temp_dir(), "overload");
    let daemon = Daemon::start(&tmp.0, &["--max-vms", "1", "--queue", "1", "--queue-wait-ms", "20000"]);
    daemon.api().raw(Method::PUT, "/functions/hostile", "application/octet-stream", hostile_elf()).expect(201);
    let busy = json!({ "function": "hostile", "input": "loop", "timeout_ms": 3000 });
    std::thread::scope(|s| {
        let looping = s.spawn(|| daemon.api().post("/runs", busy.clone()).error());
        wait_running(&daemon, 1);
        let queued = s.spawn(|| daemon.api().post("/runs", json!({ "function": "json" })).expect(200));
        let start = Instant::now();
        while daemon.api().get("/healthz").expect(200)["queue_depth"] != 1 {
            assert!(start.elapsed() < Duration::from_secs(20), "the second request never queued");
            std::thread::sleep(Duration::from_millis(5));
        }
        // One slot busy, the queue full: refused at once.
        let refused = daemon.api().post("/runs", json!({ "function": "json" }));
        assert_eq!(refused.status.as_u16(), 429, "{}", refused.body);
        assert_eq!(refused.error().0, "busy");
        assert_eq!(refused.response.headers["retry-after"], "1");
        // The busy one times out (a guest error), the queued one then runs.
        let (kind, message) = looping.join().unwrap();
        assert!(kind == "guest" && message.contains("did not answer within"), "{message}");
        assert_eq!(queued.join().unwrap()["digest"], native_digest("json"));
    });
    let metrics = String::from_utf8(daemon.api().get("/metrics").response.body.to_vec()).unwrap();
    assert!(metrics.contains("snapvisor_errors_total{kind=\"busy\"} 1"), "{metrics}");
    daemon.api().post("/runs", json!({ "function": "json" })).expect(200);
}

#[test]
fn sigterm_lets_in_flight_work_finish_refuses_new_work_and_exits_0() {
    if !kvm("sigterm_lets_in_flight_work_finish_refuses_new_work_and_exits_0") {
        return;
    }
    let tmp = Tmp::new(&std::env::temp_dir(), "sigterm");
    let mut daemon = Daemon::start(&tmp.0, &[]);
    std::thread::scope(|s| {
        // recognition's init (45 MiB of weights) keeps a fresh run busy for a while.
        let in_flight = s.spawn(|| daemon.api().post("/runs", json!({ "function": "recognition" })));
        wait_running(&daemon, 1);
        daemon.signal(libc::SIGTERM);
        // Once the daemon has taken the signal (it says `draining`, or no longer accepts
        // connections), new work is refused: no connection, or 503.
        let start = Instant::now();
        while let Ok(r) = daemon.client.send(Method::GET, "/healthz", "application/json", vec![]) {
            if serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["status"] == "draining" {
                break;
            }
            // A hang guard, not a speed check: generous for a loaded 2-CPU host.
            assert!(start.elapsed() < Duration::from_secs(30), "the daemon did not take SIGTERM");
            std::thread::sleep(Duration::from_millis(2));
        }
        for _ in 0..5 {
            let body = br#"{"function":"json"}"#.to_vec();
            if let Ok(answer) = daemon.client.send(Method::POST, "/runs", "application/json", body) {
                support::spec().check_response("POST", "/runs", &answer);
                assert_eq!(answer.status.as_u16(), 503, "new work accepted after SIGTERM: {answer:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let answer = in_flight.join().unwrap();
        assert_eq!(answer.status.as_u16(), 200, "the in-flight run was cut: {}", answer.body);
        assert_eq!(answer.body["digest"], native_digest("recognition"));
    });
    let status = daemon.wait(Duration::from_secs(40));
    assert!(status.success(), "{status}: {}", daemon.log());
    assert!(!daemon.socket.exists(), "the socket was left behind");
    assert!(daemon.log().contains("SIGTERM: draining"));
}

/// OFD locks (pool leases) on the file with inode `ino`, from /proc/locks.
fn leases_on(ino: u64) -> usize {
    let locks = std::fs::read_to_string("/proc/locks").unwrap();
    locks
        .lines()
        .filter(|l| l.contains("OFDLCK") && l.split_whitespace().any(|f| f.ends_with(&format!(":{ino}"))))
        .count()
}

#[test]
fn after_sigkill_a_restarted_daemon_finds_its_snapshots_and_pool_intact() {
    if !kvm("after_sigkill_a_restarted_daemon_finds_its_snapshots_and_pool_intact") {
        return;
    }
    let tmp = Tmp::new(&std::env::temp_dir(), "sigkill");
    let (_shm, pool) = shm_pool("sigkill-pool", 256);
    let pool_arg = pool.to_str().unwrap();
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&pool).unwrap());
    let args = ["--pool", pool_arg, "--max-vms", "2"];
    let mut daemon = Daemon::start(&tmp.0, &args);
    let api = daemon.api();
    api.raw(Method::PUT, "/functions/hostile", "application/octet-stream", hostile_elf()).expect(201);
    for f in ["json", "hostile"] {
        api.post("/snapshots", json!({ "function": f })).expect(201);
        api.post(&format!("/snapshots/{f}/import"), json!({})).expect(200);
    }
    api.post("/vms", json!({ "function": "json" })).expect(201);
    let snapshots = tmp.0.join("snapshots");
    std::thread::scope(|s| {
        // In flight at the kill: a pass VM holding its lease, and a snapshot being written.
        let _lease = s.spawn(|| {
            daemon.client.send(
                Method::POST,
                "/invocations",
                "application/json",
                json!({ "function": "hostile", "strategy": "pass", "input": "loop", "timeout_ms": 20000 })
                    .to_string()
                    .into_bytes(),
            )
        });
        let _writer = s.spawn(|| {
            daemon.client.send(
                Method::POST,
                "/snapshots",
                "application/json",
                json!({ "function": "recognition" }).to_string().into_bytes(),
            )
        });
        let start = Instant::now();
        let partial = || {
            std::fs::read_dir(&snapshots)
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains(".partial-"))
        };
        while !(partial() && leases_on(ino) > 0) {
            assert!(start.elapsed() < Duration::from_secs(30), "the snapshot never started writing");
            std::thread::sleep(Duration::from_millis(1));
        }
        daemon.signal(libc::SIGKILL);
    });
    daemon.wait(Duration::from_secs(10));
    assert_eq!(leases_on(ino), 0, "a lease outlived the daemon");
    assert!(daemon.socket.exists(), "SIGKILL cannot remove the socket: the restart must handle a stale one");

    let daemon = Daemon::start(&tmp.0, &args);
    let api = daemon.api();
    let list = api.get("/snapshots").expect(200);
    let names: Vec<&str> = list["snapshots"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["hostile", "json"], "{list}");
    assert!(list["problems"].as_array().unwrap().is_empty(), "{list}");
    let hidden: Vec<_> = std::fs::read_dir(&snapshots)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "temporary files left: {hidden:?}");
    let fsck = api.get("/pool/fsck?deep=true").expect(200);
    assert!(fsck["problems"].as_array().unwrap().is_empty(), "{fsck}");
    assert!(api.get("/vms").expect(200).as_array().unwrap().is_empty());
    for strategy in ["pass", "lazy"] {
        let report = api.post("/invocations", json!({ "function": "json", "strategy": strategy })).expect(200);
        assert_eq!(report["vms"][0]["digest"], native_digest("json"));
    }
    // Leases are gone, so the pool's extents can be reused: remove and import again.
    assert!(snapvisor_args(&["pool", "rm", "hostile", "--pool", pool_arg]).status.success());
    api.post("/snapshots/hostile/import", json!({ "id": "hostile-2" })).expect(200);
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(tmp.0.to_str().unwrap()), "the daemon left a mount:\n{mounts}");
}

#[test]
fn a_bounded_run_of_invocations_leaks_no_memory_files_or_threads() {
    if !kvm("a_bounded_run_of_invocations_leaks_no_memory_files_or_threads") {
        return;
    }
    let tmp = Tmp::new(&std::env::temp_dir(), "leak");
    let daemon = Daemon::start(&tmp.0, &[]);
    let api = daemon.api();
    api.post("/snapshots", json!({ "function": "json" })).expect(201);
    let round = |n: usize| {
        for i in 0..n {
            let strategy = ["lazy", "uffd", "cached", "warm"][i % 4];
            api.post("/invocations", json!({ "function": "json", "strategy": strategy })).expect(200);
            api.post("/invocations", json!({ "function": "nope", "strategy": strategy })).error();
        }
    };
    round(40);
    std::thread::sleep(Duration::from_millis(300));
    let (rss, fds, threads) = process(daemon.pid());
    round(200);
    std::thread::sleep(Duration::from_millis(300));
    let (rss_after, fds_after, threads_after) = process(daemon.pid());
    assert_eq!(fds_after, fds, "open files {fds} -> {fds_after}");
    assert!(threads_after <= threads + 2, "threads {threads} -> {threads_after}");
    let tolerance = 16 << 20;
    assert!(rss_after <= rss + tolerance, "resident memory {} -> {} MiB", rss >> 20, rss_after >> 20);
}
