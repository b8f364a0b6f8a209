//! VM shells the daemon keeps ready, so that a SnapStart it serves only maps memory and
//! loads state (`restore_into`): the KVM VM, its vCPU and the memory slot are made while
//! the node is idle, not on the request's clock.
//!
//! Per guest memory size, up to `per_size` shells wait. A SnapStart takes what is there
//! (a VM without a shell is created as part of its restore, as without a stock) and then
//! asks for a refill, which one background thread per size makes. The first SnapStart of a
//! size finds none. Sizes are bounded ([`MAX_SIZES`]): a new one pushes out the shells of
//! the size used least recently. A shell serves one restore and holds no guest memory
//! while it waits (about 2.6 MiB of KVM's structures for a 1 GiB guest and three
//! descriptors, measured by the benchmark).

use snapvisor_vmm::restore::Shell;
use snapvisor_vmm::Hypervisor;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Guest memory sizes kept at most.
pub const MAX_SIZES: usize = 4;

/// Shells made ahead, per guest memory size.
pub struct ShellStock {
    per_size: usize,
    state: Arc<Mutex<Stock>>,
}

#[derive(Default)]
struct Stock {
    /// Ready shells and the last use, per memory size.
    sizes: HashMap<u64, Size>,
    /// Uses so far (orders the sizes by their last use).
    uses: u64,
}

#[derive(Default)]
struct Size {
    ready: Vec<Shell>,
    last_use: u64,
    refilling: bool,
}

fn lock(state: &Mutex<Stock>) -> MutexGuard<'_, Stock> {
    // A refill thread that panicked leaves consistent data (it only pushes whole shells).
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl ShellStock {
    /// A stock of up to `per_size` shells per memory size (0: none are made).
    pub fn new(per_size: usize) -> Self {
        ShellStock { per_size, state: Arc::default() }
    }

    /// Takes up to `n` ready shells of `mem_size` bytes and marks the size as used.
    pub fn take(&self, mem_size: u64, n: usize) -> Vec<Shell> {
        let mut stock = lock(&self.state);
        stock.uses += 1;
        let uses = stock.uses;
        match stock.sizes.get_mut(&mem_size) {
            Some(size) => {
                size.last_use = uses;
                let keep = size.ready.len().saturating_sub(n);
                size.ready.split_off(keep)
            }
            None => Vec::new(),
        }
    }

    /// Makes shells of `mem_size` bytes in the background until `per_size` are ready (one
    /// thread per size at a time). A failure to make one ends the refill; the next
    /// SnapStart tries again.
    pub fn refill(&self, hv: Arc<Hypervisor>, mem_size: u64) {
        if self.per_size == 0 {
            return;
        }
        {
            let mut stock = lock(&self.state);
            if !stock.sizes.contains_key(&mem_size) && stock.sizes.len() >= MAX_SIZES {
                let oldest = stock.sizes.iter().filter(|(_, s)| !s.refilling).min_by_key(|(_, s)| s.last_use);
                match oldest.map(|(&m, _)| m) {
                    Some(m) => drop(stock.sizes.remove(&m)),
                    None => return,
                }
            }
            let uses = stock.uses;
            let size = stock.sizes.entry(mem_size).or_insert_with(|| Size { last_use: uses, ..Size::default() });
            if size.refilling || size.ready.len() >= self.per_size {
                return;
            }
            size.refilling = true;
        }
        let (state, per_size) = (Arc::clone(&self.state), self.per_size);
        std::thread::spawn(move || {
            loop {
                let shell = match Shell::create(&hv, mem_size) {
                    Ok(shell) => shell,
                    Err(e) => {
                        tracing::warn!(mem_size, error = %e, "could not make a VM shell");
                        break;
                    }
                };
                let mut stock = lock(&state);
                let Some(size) = stock.sizes.get_mut(&mem_size) else { break };
                size.ready.push(shell);
                if size.ready.len() >= per_size {
                    break;
                }
            }
            if let Some(size) = lock(&state).sizes.get_mut(&mem_size) {
                size.refilling = false;
            }
        });
    }

    /// Shells ready now, over all sizes.
    pub fn ready(&self) -> usize {
        lock(&self.state).sizes.values().map(|s| s.ready.len()).sum()
    }
}
