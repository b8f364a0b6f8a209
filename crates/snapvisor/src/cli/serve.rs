//! `serve`: the daemon's arguments into its configuration.

use super::args::ServeArgs;
use super::{timeout, AnyError};
use crate::node::Node;
use crate::server::{self, ServeConfig, Token};
use std::path::PathBuf;

pub(super) fn serve(args: ServeArgs, node: &Node, socket: Option<PathBuf>) -> Result<(), AnyError> {
    let token = match args.tcp {
        Some(_) => Some(Token::load(args.token_file.as_deref(), std::env::var("SNAPVISOR_TOKEN").ok())?),
        None => None,
    };
    let config = ServeConfig {
        socket: socket.unwrap_or_else(|| node.data().socket()),
        tcp: args.tcp,
        token,
        max_vms: args.max_vms,
        queue: args.queue as usize,
        queue_wait: timeout(args.queue_wait_ms),
        timeout: timeout(args.timeout_ms),
        upload_bytes: (args.upload_max_mib << 20) as usize,
        warm_max: args.warm_max as usize,
        warm_idle: std::time::Duration::from_secs(args.warm_idle_secs),
        pool: args.pool,
    };
    // The daemon owns its node (shared by its threads); this one has opened nothing yet.
    Ok(server::serve(Node::new(node.data().clone()).with_shells(args.shells as usize), config)?)
}
