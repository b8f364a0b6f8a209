//! The command line: one face over the node API ([`crate::node`]); the daemon is the other.
//!
//! [`args`] holds the argument types; each command's handler turns its arguments into a
//! node call and prints the result, as text or as JSON ([`render`] keeps both safe and
//! bounded). Errors print once, with their causes, and exit non-zero.

pub mod args;
mod bench;
mod invoke;
mod pool;
pub mod render;
mod run;

use crate::node::data::DataDir;
use crate::node::functions::{ImageRef, Input};
use crate::node::{Node, NodeError};
use args::{Cli, Command, ImageChoice, InputChoice};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// An error for the user, with its causes.
pub type AnyError = Box<dyn std::error::Error + Send + Sync>;

/// Runs a parsed command line: logging, the node, the command; prints any error.
pub fn main(cli: Cli) -> ExitCode {
    let filter = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| filter.into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let data = DataDir::new(
        cli.data_dir
            .clone()
            .or_else(|| std::env::var_os("SNAPVISOR_DATA").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("snapvisor-data")),
    );
    let node = Node::new(data);
    match dispatch(cli.command, &node) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Errors can carry guest text (abort messages) and names read from files.
            eprintln!("error: {}", render::escape(&e.to_string()));
            let mut cause = e.source();
            while let Some(c) = cause {
                eprintln!("  caused by: {}", render::escape(&c.to_string()));
                cause = c.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command, node: &Node) -> Result<(), AnyError> {
    match command {
        Command::Functions { json } => run::functions(json),
        Command::Run(args) => run::run(args, node),
        Command::Snapshot(args) => run::snapshot(args, node),
        Command::Record(args) => run::record(args, node),
        Command::Invoke(args) => invoke::invoke(args, node),
        Command::Pool(cmd) => pool::pool(cmd, node),
        Command::Bench(args) => bench::bench(args, node),
    }
}

impl ImageChoice {
    fn image_ref(&self) -> ImageRef {
        match (&self.function, &self.image) {
            (Some(name), _) => ImageRef::Function(name.clone()),
            (None, Some(path)) => ImageRef::File(path.clone()),
            (None, None) => unreachable!("clap requires --function or --image"),
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
}

/// Milliseconds from a timeout argument.
fn timeout(ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(ms)
}

/// Bytes of `mib` MiB (the arguments are range-checked, so this cannot overflow).
fn mib_bytes(mib: u64) -> Result<u64, NodeError> {
    crate::node::mem_size(mib)
}
