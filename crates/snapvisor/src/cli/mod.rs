//! The command line: one face over the node API ([`crate::node`]); the daemon is the other.
//!
//! [`args`] holds the argument types; each command's handler turns its arguments into a
//! node call — or, in client mode (`--socket PATH` / `SNAPVISOR_SOCKET`), into a request
//! to a running daemon ([`client`]) — and prints the result, as text or as JSON. Both ways
//! give the same JSON report, and [`render`] prints it the same way (safe and bounded).
//! Errors print once, with their causes (a daemon's too), and exit non-zero.

pub mod args;
mod bench;
pub mod client;
mod invoke;
mod pool;
pub mod render;
mod run;
mod serve;

use crate::node::data::DataDir;
use crate::node::functions::{read_file, Image, ImageRef, Input};
use crate::node::{Node, NodeError};
use args::{Cli, Command, ImageChoice, InputChoice};
use client::Client;
use serde::Serialize;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// An error for the user, with its causes.
pub type AnyError = Box<dyn std::error::Error + Send + Sync>;

/// Where a command runs: here, or on a daemon.
enum Target<'a> {
    Here(&'a Node),
    Daemon(&'a Client),
}

/// A command's report: its JSON text (as the daemon sends it) and its value.
struct Reply {
    text: String,
    value: serde_json::Value,
}

impl Reply {
    /// The report of an operation run here.
    fn of(report: &impl Serialize) -> Result<Self, serde_json::Error> {
        Self::parse(serde_json::to_string(report)?)
    }

    /// The report a daemon sent.
    fn parse(text: String) -> Result<Self, serde_json::Error> {
        let value = serde_json::from_str(&text)?;
        Ok(Reply { text, value })
    }

    /// Prints the report as JSON (keys in the order they were sent).
    fn print_json(&self) -> Result<(), AnyError> {
        println!("{}", render::json_text(&self.text)?);
        Ok(())
    }
}

/// Runs a parsed command line: logging, the node, the command; prints any error.
pub fn main(cli: Cli) -> ExitCode {
    let (filter, json_logs) = match (&cli.command, cli.verbose) {
        (Command::Serve(args), 0) => ("info", args.log_json),
        (Command::Serve(args), _) => ("debug", args.log_json),
        (_, 0) => ("warn", false),
        (_, 1) => ("info", false),
        _ => ("debug", false),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| filter.into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json_logs {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::stderr().is_terminal()).init();
    }
    let data = DataDir::new(
        cli.data_dir
            .clone()
            .or_else(|| std::env::var_os("SNAPVISOR_DATA").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("snapvisor-data")),
    );
    let socket = cli.socket.clone().or_else(|| std::env::var_os("SNAPVISOR_SOCKET").map(PathBuf::from));
    let node = Node::new(data);
    match dispatch(cli.command, &node, socket) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Errors can carry guest text (abort messages) and names read from files.
            eprintln!("error: {}", snapvisor_vmm::escape::sanitize(&e.to_string()));
            let mut cause = e.source();
            while let Some(c) = cause {
                eprintln!("  caused by: {}", snapvisor_vmm::escape::sanitize(&c.to_string()));
                cause = c.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command, node: &Node, socket: Option<PathBuf>) -> Result<(), AnyError> {
    let client = match (&command, &socket) {
        (Command::Serve(_) | Command::BenchLoad(_), _) | (_, None) => None,
        (_, Some(path)) => Some(Client::new(path)?),
    };
    let target = match &client {
        Some(client) => Target::Daemon(client),
        None => Target::Here(node),
    };
    match command {
        Command::Functions { json } => run::functions(json, &target),
        Command::Run(args) => run::run(args, &target),
        Command::Snapshot(args) => run::snapshot(args, &target),
        Command::Record(args) => run::record(args, &target),
        Command::Invoke(args) => invoke::invoke(args, &target),
        Command::Pool(cmd) => pool::pool(cmd, &target),
        Command::Bench(args) => bench::bench(args, here(&target, "bench")?),
        Command::BenchLoad(args) => bench::load(args, node),
        Command::Serve(args) => serve::serve(args, node, socket),
    }
}

/// The node, for commands that only run here.
fn here<'a>(target: &Target<'a>, command: &str) -> Result<&'a Node, AnyError> {
    match target {
        Target::Here(node) => Ok(node),
        Target::Daemon(_) => Err(format!("`{command}` runs here only; leave out --socket and SNAPVISOR_SOCKET").into()),
    }
}

/// The name a daemon knows a snapshot by: the last component of the path given.
fn remote_name(path: &Path) -> Result<String, NodeError> {
    let name =
        path.file_name().map_or_else(|| path.to_string_lossy().into_owned(), |n| n.to_string_lossy().into_owned());
    crate::node::store::check_name("snapshot", &name)?;
    Ok(name)
}

/// `--pool` names a file here; a daemon uses its own pool.
fn no_remote_pool(pool: &Option<PathBuf>) -> Result<(), AnyError> {
    match pool {
        Some(_) => Err("with --socket the daemon uses its own pool (`serve --pool`); leave out --pool".into()),
        None => Ok(()),
    }
}

impl ImageChoice {
    /// The guest, loaded here: a function (built in or registered) or an ELF file.
    fn load(&self, node: &Node) -> Result<Image, NodeError> {
        match (&self.function, &self.image) {
            (Some(name), _) => node.image(name),
            (None, Some(path)) => Image::load(&ImageRef::File(path.clone())),
            (None, None) => unreachable!("clap requires --function or --image"),
        }
    }

    /// The function a daemon should boot (an image file must be registered with it first).
    fn remote(&self) -> Result<&str, AnyError> {
        match (&self.function, &self.image) {
            (Some(name), _) => Ok(name),
            _ => Err("with --socket, register the image with the daemon first (PUT /functions/NAME, see docs/api.md) \
                 and give --function NAME"
                .into()),
        }
    }
}

impl InputChoice {
    fn input(&self) -> Input {
        match (&self.input, &self.input_text, &self.input_file) {
            (Some(name), _, _) => Input::Named(name.clone()),
            (None, Some(text), _) => Input::Literal(text.clone().into_bytes()),
            (None, None, Some(path)) => Input::File(path.clone()),
            (None, None, None) => Input::Default,
        }
    }

    /// Adds the request to a daemon request body: `input` (a name), `input_text`, or a
    /// file read here as `input_base64`; nothing for the default.
    fn add_to(&self, body: &mut serde_json::Value) -> Result<(), AnyError> {
        use base64::Engine;
        let (key, value) = match (&self.input, &self.input_text, &self.input_file) {
            (Some(name), _, _) => ("input", name.clone()),
            (None, Some(text), _) => ("input_text", text.clone()),
            (None, None, Some(path)) => {
                ("input_base64", base64::engine::general_purpose::STANDARD.encode(read_file(path)?))
            }
            (None, None, None) => return Ok(()),
        };
        body[key] = serde_json::Value::String(value);
        Ok(())
    }
}

/// Milliseconds from a timeout argument.
fn timeout(ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(ms)
}

/// Bytes of `mib` MiB (the arguments are range-checked, so this cannot overflow).
fn mib_bytes(mib: u64) -> Result<u64, NodeError> {
    crate::node::mem_size(mib)
}
