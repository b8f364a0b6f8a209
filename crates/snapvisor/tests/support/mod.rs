//! Shared by the integration tests: skip lines, scratch directories, the binary, a daemon
//! process, and an API client that checks every exchange against the OpenAPI description.
#![allow(dead_code)]

pub mod openapi;

use hyper::{Method, StatusCode};
use serde_json::Value;
use snapvisor::cli::client::{Client, Response};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn kvm(test: &str) -> bool {
    let present = Path::new("/dev/kvm").exists();
    if !present {
        let _ = writeln!(std::io::stderr(), "skipped: no /dev/kvm ({test})");
    }
    present
}

pub fn root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    if !is_root {
        let _ = writeln!(std::io::stderr(), "skipped: needs root ({test})");
    }
    is_root
}

/// `snapvisor ARGS` run to its end.
pub fn snapvisor_args(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_snapvisor")).env_remove("SNAPVISOR_SOCKET").args(args).output().unwrap()
}

/// `snapvisor --data-dir DATA ARGS` run to its end.
pub fn snapvisor(data: &Path, args: &[&str]) -> Output {
    let data = data.to_str().expect("UTF-8 test paths");
    snapvisor_args(&[&["--data-dir", data][..], args].concat())
}

/// The standard output of a run that must succeed.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The standard error of a run that must fail.
pub fn fails(out: Output) -> String {
    assert!(!out.status.success(), "succeeded unexpectedly: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr).unwrap()
}

/// `text` parsed as JSON.
pub fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A scratch directory, removed when dropped.
pub struct Tmp(pub PathBuf);

impl Tmp {
    pub fn new(parent: &Path, tag: &str) -> Self {
        let dir = parent.join(format!("snapvisor-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Tmp(dir)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A pool of `mib` MiB in a scratch directory on /dev/shm (no root needed), made with
/// `snapvisor pool init`; the directory goes when the returned value is dropped.
pub fn shm_pool(tag: &str, mib: u32) -> (Tmp, PathBuf) {
    let shm = Tmp::new(Path::new("/dev/shm"), tag);
    let pool = shm.0.join("pool");
    let out = snapvisor_args(&["pool", "init", "--size-mib", &mib.to_string(), "--pool", pool.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (shm, pool)
}

pub fn spec() -> &'static openapi::Spec {
    static SPEC: OnceLock<openapi::Spec> = OnceLock::new();
    SPEC.get_or_init(openapi::Spec::load)
}

/// A `snapvisor serve` process on `DATA/snapvisor.sock`, logging to `DATA/daemon.log`;
/// killed (SIGKILL) if still running when dropped.
pub struct Daemon {
    pub child: Child,
    pub data: PathBuf,
    pub socket: PathBuf,
    pub client: Client,
}

impl Daemon {
    pub fn start(data: &Path, args: &[&str]) -> Self {
        let socket = data.join("snapvisor.sock");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(data.join("daemon.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_snapvisor"))
            .arg("--data-dir")
            .arg(data)
            .arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the daemon");
        let client = Client::new(&socket).unwrap();
        let mut daemon = Daemon { child, data: data.to_path_buf(), socket, client };
        let start = Instant::now();
        loop {
            if let Ok(r) = daemon.client.send(Method::GET, "/healthz", "application/json", Vec::new()) {
                if r.status == StatusCode::OK {
                    return daemon;
                }
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("the daemon exited at start ({status}): {}", daemon.log());
            }
            assert!(start.elapsed() < Duration::from_secs(30), "the daemon did not come up: {}", daemon.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("daemon.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on the child this value started and has not reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }

    /// Waits for the process to exit (at most `limit`).
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < limit, "the daemon did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn api(&self) -> Api<'_> {
        Api { client: &self.client }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Requests whose bodies and answers are checked against openapi.yaml.
pub struct Api<'a> {
    pub client: &'a Client,
}

/// A checked answer.
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub response: Response,
}

impl Answer {
    /// The error's kind and message (panics if this is not an error answer).
    pub fn error(&self) -> (String, String) {
        let e = &self.body["error"];
        assert!(e.is_object(), "not an error: {} {}", self.status, self.body);
        (e["kind"].as_str().unwrap().into(), e["message"].as_str().unwrap().into())
    }

    /// The body, after checking the status.
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        self.body
    }
}

impl Api<'_> {
    fn exchange(&self, method: Method, path: &str, ctype: &str, body: Vec<u8>) -> Answer {
        let response = self.client.send(method.clone(), path, ctype, body).expect("the daemon answers");
        spec().check_response(method.as_str(), path, &response);
        let body = if response.body.is_empty() || !response.headers["content-type"].to_str().unwrap().contains("json") {
            Value::Null
        } else {
            serde_json::from_slice(&response.body).unwrap()
        };
        Answer { status: response.status, body, response }
    }

    /// A request that conforms to the description (checked), and its checked answer.
    pub fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        if let Some(b) = &body {
            let errors = spec().request_errors(method.as_str(), path, b);
            assert!(errors.is_empty(), "the test's request does not conform: {errors:?}\n{b}");
        }
        self.exchange(method, path, "application/json", body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
    }

    /// A request that does NOT conform (checked), and its checked answer.
    pub fn call_bad(&self, method: Method, path: &str, body: Value) -> Answer {
        assert!(!spec().request_errors(method.as_str(), path, &body).is_empty(), "this request conforms: {body}");
        self.exchange(method, path, "application/json", body.to_string().into_bytes())
    }

    /// Raw bytes with a content type (uploads, malformed JSON), and the checked answer.
    pub fn raw(&self, method: Method, path: &str, ctype: &str, body: Vec<u8>) -> Answer {
        self.exchange(method, path, ctype, body)
    }

    pub fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None)
    }

    pub fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(body))
    }
}

/// The hostile test guest's ELF.
pub fn hostile_elf() -> Vec<u8> {
    snapvisor_guest_images::get("hostile").unwrap().elf.to_vec()
}

/// The digest the host computes for a built-in function's input (`A`, `B`, `1`..`6`).
pub fn native_digest_of(function: &str, input: &str) -> String {
    let request = snapvisor_functions::input(function, input).unwrap();
    let response = snapvisor_functions::run_native(function, request).unwrap();
    let v: Value = serde_json::from_slice(&response).unwrap();
    v["digest"].as_str().unwrap().to_string()
}

/// The digest of the input a run or invocation sends by default (`B`).
pub fn native_digest(function: &str) -> String {
    native_digest_of(function, "B")
}

/// Resident bytes, open files and threads of a process.
pub fn process(pid: u32) -> (u64, usize, usize) {
    let f = snapvisor::server::metrics::ProcessFigures::of(&pid.to_string());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let threads =
        status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    (f.resident_bytes, f.open_fds, threads)
}

/// Sends a request with a `len`-byte body from another thread while reading the answer, so
/// an answer given before the whole body was read (a body limit) is seen; the writer's
/// EPIPE when the daemon closes the connection is expected and ignored.
pub fn early_answer(socket: &Path, method: &str, path: &str, ctype: &str, len: usize) -> Response {
    use std::io::Read;
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {ctype}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(head.as_bytes()).and_then(|()| writer.write_all(&vec![b'x'; len]));
    });
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    drop(stream);
    let _ = sender.join();
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(body_at) = parsed.parse(&bytes).unwrap() else { panic!("partial answer") };
    let mut map = hyper::HeaderMap::new();
    for h in parsed.headers.iter() {
        let name = hyper::header::HeaderName::from_bytes(h.name.as_bytes()).unwrap();
        map.insert(name, hyper::header::HeaderValue::from_bytes(h.value).unwrap());
    }
    let status = StatusCode::from_u16(parsed.code.unwrap()).unwrap();
    Response { status, headers: map, body: bytes[body_at..].to_vec().into() }
}
