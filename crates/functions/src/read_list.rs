//! `read-list`: walk a linked list spread over most of guest memory (FaaSnap's
//! `read-list`, a working set as large and as scattered as memory allows).
//!
//! Init gives three quarters of the heap to nodes 512 bytes apart (the stride) and links
//! them in a seeded random order, so consecutive steps land on unrelated pages; the list
//! therefore grows with the VM's memory. A request walks `steps` nodes from the head.
//! Node `k` of the walk holds a value computed from `k` alone, so the digest depends on
//! the walk length only — the same on any VM large enough for it — while any page of
//! the list that came back wrong changes it.

use crate::util::{below, digest, mix64, rng};
use crate::{params, Env, Function};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// Marker type of the `read-list` function.
pub struct ReadList;

/// Bytes between two nodes.
pub const STRIDE: usize = 512;
/// Fewest nodes init builds, whatever the memory.
pub const MIN_NODES: usize = 1024;

/// One node: the link and the value in its first 16 bytes, the rest of the stride empty.
#[derive(Clone, Copy)]
#[repr(C, align(512))]
struct Node {
    next: u64,
    value: u64,
}

const _: () = assert!(core::mem::size_of::<Node>() == STRIDE);

/// Nodes init builds for a heap of `heap_bytes`: three quarters of it.
pub fn nodes_for(heap_bytes: u64) -> usize {
    ((heap_bytes / 4 * 3) as usize / STRIDE).max(MIN_NODES)
}

/// The value of the walk's node `k`.
fn value(k: u64) -> u64 {
    mix64(k ^ 0x7265_6164_6c69_7374)
}

/// Request: `{"steps": n}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Nodes to visit, from the head.
    pub steps: usize,
}

/// Response.
#[derive(Serialize)]
pub struct Response {
    /// SHA-256 of the walk's checksum and length.
    pub digest: String,
    /// Nodes visited.
    pub steps: usize,
    /// Nodes in the list (depends on the VM's memory).
    pub nodes: usize,
}

/// The list built by init.
pub struct State {
    nodes: Vec<Node>,
    head: usize,
}

impl Function for ReadList {
    const NAME: &'static str = "read-list";
    type State = State;
    type Response = Response;

    fn init(env: &Env) -> State {
        let count = nodes_for(env.heap_bytes);
        let mut order: Vec<u32> = (0..count as u32).collect();
        let mut rng = rng(0x6c69_7374, 7);
        for i in (1..count).rev() {
            order.swap(i, below(&mut rng, i as u64 + 1) as usize);
        }
        let mut nodes = vec![Node { next: 0, value: 0 }; count];
        for (k, pair) in order.windows(2).enumerate() {
            nodes[pair[0] as usize] = Node { next: u64::from(pair[1]), value: value(k as u64) };
        }
        let last = order[count - 1] as usize;
        nodes[last] = Node { next: u64::from(order[0]), value: value(count as u64 - 1) };
        State { nodes, head: order[0] as usize }
    }

    fn invoke(state: &mut State, request: &[u8]) -> Result<Response, String> {
        let req: Request = params(Self::NAME, request)?;
        let count = state.nodes.len();
        if req.steps == 0 || req.steps > count {
            return Err(format!(
                "a walk of {} steps does not fit the list of {count} nodes (it grows with the VM's memory)",
                req.steps
            ));
        }
        let (mut at, mut sum) = (state.head, 0u64);
        for _ in 0..req.steps {
            let node = state.nodes.get(at).ok_or_else(|| format!("a link points outside the list: {at}"))?;
            sum = mix64(sum ^ node.value);
            at = node.next as usize;
        }
        let facts = [sum.to_le_bytes(), (req.steps as u64).to_le_bytes()].concat();
        Ok(Response { digest: digest([facts.as_slice()]), steps: req.steps, nodes: count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_depends_on_the_walk_not_the_memory() {
        let walk = |heap: u64, steps: usize| {
            let mut state = ReadList::init(&Env { heap_bytes: heap });
            let request = alloc::format!("{{\"steps\":{steps}}}");
            ReadList::invoke(&mut state, request.as_bytes()).map(|r| r.digest)
        };
        assert_eq!(walk(8 << 20, 5000).unwrap(), walk(16 << 20, 5000).unwrap());
        assert_ne!(walk(8 << 20, 5000).unwrap(), walk(8 << 20, 5001).unwrap());
        assert!(walk(1 << 20, 5000).is_err(), "a walk longer than the list is refused");
        // The whole cycle visits every node once.
        let state = ReadList::init(&Env { heap_bytes: 8 << 20 });
        let mut seen = vec![false; state.nodes.len()];
        let mut at = state.head;
        for _ in 0..state.nodes.len() {
            assert!(!seen[at]);
            seen[at] = true;
            at = state.nodes[at].next as usize;
        }
        assert_eq!(at, state.head);
    }
}
