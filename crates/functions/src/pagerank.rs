//! `pagerank`: PageRank by power iteration on a seeded Barabási–Albert graph (SeBS's
//! `501.graph-pagerank`, which runs igraph's `pagerank` on `Graph.Barabasi(size, 10)`).
//!
//! The graph grows from one vertex; every new vertex links to `EDGES_PER_NODE` distinct
//! earlier vertices chosen with probability proportional to their degree + 1 (igraph's
//! defaults: linear preferential attachment, zero appeal 1, undirected, no multi-edges).
//! PageRank uses damping 0.85 and stops when the L1 change falls below `nodes × 1e-6` (the
//! tolerance networkx uses) or after 100 iterations.

use crate::util::{below, digest_numbers, rng};
use crate::{params, Env, Function};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// Marker type of the `pagerank` function.
pub struct Pagerank;

/// Edges each new vertex adds (SeBS's `Graph.Barabasi(size, 10)`).
pub const EDGES_PER_NODE: usize = 10;
/// Largest graph a request may ask for.
pub const MAX_NODES: usize = 2_000_000;
const DAMPING: f64 = 0.85;
const MAX_ITERATIONS: usize = 100;

/// Request: `{"nodes": n, "seed": n}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Vertices of the graph.
    pub nodes: usize,
    /// Seed of the graph (default 1).
    #[serde(default = "crate::util::default_seed")]
    pub seed: u64,
}

/// Response.
#[derive(Serialize)]
pub struct Response {
    /// SHA-256 of the ranks (little-endian `f64`, by vertex).
    pub digest: String,
    /// Vertices.
    pub nodes: usize,
    /// Undirected edges.
    pub edges: usize,
    /// Power iterations run.
    pub iterations: usize,
    /// The vertex with the highest rank.
    pub top: usize,
}

/// Undirected adjacency in compressed rows: the neighbours of `v` are
/// `targets[offsets[v]..offsets[v + 1]]`.
struct Graph {
    offsets: Vec<usize>,
    targets: Vec<u32>,
}

fn barabasi_albert(nodes: usize, seed: u64) -> (Graph, usize) {
    let mut rng = rng(seed, 6);
    let mut edges: Vec<(u32, u32)> = Vec::with_capacity(nodes * EDGES_PER_NODE);
    // Every vertex once (its zero appeal), plus once more per edge end it holds.
    let mut bag: Vec<u32> = Vec::with_capacity(nodes * (2 * EDGES_PER_NODE + 1));
    let mut chosen: Vec<u32> = Vec::with_capacity(EDGES_PER_NODE);
    bag.push(0);
    for v in 1..nodes as u32 {
        chosen.clear();
        let want = EDGES_PER_NODE.min(v as usize);
        while chosen.len() < want {
            let u = bag[below(&mut rng, bag.len() as u64) as usize];
            if !chosen.contains(&u) {
                chosen.push(u);
            }
        }
        for &u in &chosen {
            edges.push((v, u));
            bag.push(u);
            bag.push(v);
        }
        bag.push(v);
    }
    let mut offsets = vec![0usize; nodes + 1];
    for &(a, b) in &edges {
        offsets[a as usize + 1] += 1;
        offsets[b as usize + 1] += 1;
    }
    for v in 0..nodes {
        offsets[v + 1] += offsets[v];
    }
    let mut fill = offsets.clone();
    let mut targets = vec![0u32; 2 * edges.len()];
    for &(a, b) in &edges {
        targets[fill[a as usize]] = b;
        fill[a as usize] += 1;
        targets[fill[b as usize]] = a;
        fill[b as usize] += 1;
    }
    (Graph { offsets, targets }, edges.len())
}

/// Ranks and the number of iterations run.
fn pagerank(graph: &Graph) -> (Vec<f64>, usize) {
    let n = graph.offsets.len() - 1;
    let mut rank = vec![1.0 / n as f64; n];
    let mut share = vec![0.0f64; n];
    let mut iterations = 0;
    while iterations < MAX_ITERATIONS {
        iterations += 1;
        for (v, s) in share.iter_mut().enumerate() {
            let degree = graph.offsets[v + 1] - graph.offsets[v];
            // Every vertex has an edge once the graph has two vertices.
            *s = if degree == 0 { 0.0 } else { rank[v] / degree as f64 };
        }
        let mut change = 0.0;
        for (v, r) in rank.iter_mut().enumerate() {
            let neighbours = &graph.targets[graph.offsets[v]..graph.offsets[v + 1]];
            let sum: f64 = neighbours.iter().map(|&u| share[u as usize]).sum();
            let new = (1.0 - DAMPING) / n as f64 + DAMPING * sum;
            change += libm::fabs(new - *r);
            *r = new;
        }
        if change < n as f64 * 1e-6 {
            break;
        }
    }
    (rank, iterations)
}

impl Function for Pagerank {
    const NAME: &'static str = "pagerank";
    type State = ();
    type Response = Response;

    fn init(_: &Env) {}

    fn invoke(_: &mut (), request: &[u8]) -> Result<Response, String> {
        let req: Request = params(Self::NAME, request)?;
        if req.nodes < 2 || req.nodes > MAX_NODES {
            return Err(format!("nodes {} is not in 2..={MAX_NODES}", req.nodes));
        }
        let (graph, edges) = barabasi_albert(req.nodes, req.seed);
        let (rank, iterations) = pagerank(&graph);
        let top = (0..rank.len()).fold(0, |best, v| if rank[v] > rank[best] { v } else { best });
        Ok(Response { digest: digest_numbers(&rank, f64::to_le_bytes), nodes: req.nodes, edges, iterations, top })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_graph_has_the_barabasi_shape_and_ranks_sum_to_one() {
        let (graph, edges) = barabasi_albert(2000, 1);
        assert_eq!(edges, (1..2000).map(|v| EDGES_PER_NODE.min(v)).sum::<usize>());
        for v in 0..2000 {
            let mut neighbours = graph.targets[graph.offsets[v]..graph.offsets[v + 1]].to_vec();
            assert!(!neighbours.is_empty() && !neighbours.contains(&(v as u32)), "vertex {v}");
            neighbours.sort_unstable();
            neighbours.dedup();
            assert_eq!(neighbours.len(), graph.offsets[v + 1] - graph.offsets[v], "multi-edge at {v}");
        }
        let (rank, _) = pagerank(&graph);
        let total: f64 = rank.iter().sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        // Preferential attachment: the oldest vertices rank highest.
        let best = (0..rank.len()).fold(0, |b, v| if rank[v] > rank[b] { v } else { b });
        assert!(best < 20, "{best}");
    }
}
