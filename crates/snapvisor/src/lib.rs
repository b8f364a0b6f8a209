//! snapvisor's library side: the node API ([`node`]) that both faces call — the command
//! line ([`cli`]) and the daemon ([`server`]) — and the benchmark ([`bench`]).

pub mod bench;
pub mod cli;
pub mod node;
pub mod server;

pub use node::{data, runner};
