//! snapvisor's library side: the node API ([`node`]) that both faces call — the command
//! line ([`cli`]) and the daemon — and the benchmark ([`bench`]).

pub mod bench;
pub mod cli;
pub mod node;

pub use node::{data, runner};
