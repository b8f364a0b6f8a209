//! `snapvisor`: start serverless functions from memory snapshots in KVM microVMs.
//!
//! See `snapvisor --help`, the README and `docs/`. The commands live in `snapvisor::cli`.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    snapvisor::cli::main(snapvisor::cli::args::Cli::parse())
}
