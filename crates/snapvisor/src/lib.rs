//! The snapvisor command line's library side: measured runs ([`runner`]), the data
//! directory and its pool ([`data`]), and the benchmark ([`bench`]). `main.rs` is the
//! command-line surface over them; the integration tests use both.

pub mod bench;
pub mod data;
pub mod runner;
