//! Memory from the host's view: what the machine spends while VMs run, read from
//! `/proc/meminfo` before a run and again with every VM alive.
//!
//! Per-VM pagemap figures (`metrics::MemoryUsage`) see only a VM's own mappings; they miss
//! the page cache behind `uffd`, `reap` and `cached` (the file was read, not mapped), the huge
//! pages a hugetlbfs `MAP_PRIVATE` mapping reserves for copy-on-write, and the kernel's page
//! tables. The deltas here count all of it, split by kind:
//!
//! - `anon`: anonymous memory (the VMs' private pages, copies, the VMM's buffers);
//! - `page_cache`: file pages that are not shmem (memory files, working sets);
//! - `shmem`: tmpfs pages (an emulated pool on tmpfs grows here only if something writes it);
//! - `hugetlb`: huge pages in use or reserved (an emulated pool on hugetlbfs and its
//!   copy-on-write reservations);
//! - `page_tables`: host page tables and KVM's secondary/shadow page tables.
//!
//! The emulated pool itself is allocated before the baseline and so is not in any delta: on
//! the paper's machine it is persistent memory, not DRAM. [`pool_bytes`] reports it apart.

use serde::Serialize;
use std::collections::BTreeMap;
use std::io;

/// A reading of `/proc/meminfo`, in bytes.
#[derive(Clone, Debug, Default)]
pub struct MemInfo {
    fields: BTreeMap<String, u64>,
}

impl MemInfo {
    /// Reads `/proc/meminfo` now.
    pub fn read() -> io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string("/proc/meminfo")?))
    }

    /// Parses the text of `/proc/meminfo` (`Key: value [kB]` lines; counts without a unit).
    pub fn parse(text: &str) -> Self {
        let mut fields = BTreeMap::new();
        for line in text.lines() {
            let Some((key, rest)) = line.split_once(':') else { continue };
            let mut parts = rest.split_whitespace();
            let Some(Ok(value)) = parts.next().map(str::parse::<u64>) else { continue };
            let bytes = if parts.next() == Some("kB") { value.saturating_mul(1024) } else { value };
            fields.insert(key.trim().to_string(), bytes);
        }
        MemInfo { fields }
    }

    /// A field (bytes, or a count for the `HugePages_*` fields); 0 if absent.
    pub fn get(&self, key: &str) -> u64 {
        self.fields.get(key).copied().unwrap_or(0)
    }

    /// Bytes of huge pages in use or reserved.
    fn hugetlb(&self) -> u64 {
        let pages = (self.get("HugePages_Total") - self.get("HugePages_Free").min(self.get("HugePages_Total")))
            + self.get("HugePages_Rsvd");
        pages * self.get("Hugepagesize")
    }

    /// Bytes available to new work.
    pub fn available(&self) -> u64 {
        self.get("MemAvailable")
    }

    /// Bytes a process and the kernel hold for it that no file or cache explains:
    /// anonymous memory, unreclaimable slab, vmalloc (KVM's per-slot arrays), page tables
    /// (host and KVM's), kernel stacks and per-CPU data. What an idle VM shell costs shows
    /// here; `MemAvailable` also moves with the page cache of everything else on the host.
    pub fn held(&self) -> u64 {
        ["AnonPages", "SUnreclaim", "VmallocUsed", "PageTables", "SecPageTables", "KernelStack", "Percpu"]
            .iter()
            .map(|k| self.get(k))
            .sum()
    }
}

/// What a run cost the host, by kind, in MiB (negative deltas clamp to 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct HostMemory {
    /// Anonymous memory.
    pub anon_mib: f64,
    /// Page cache (file pages that are not shmem).
    pub page_cache_mib: f64,
    /// shmem (tmpfs).
    pub shmem_mib: f64,
    /// Huge pages in use or reserved.
    pub hugetlb_mib: f64,
    /// Host and KVM page tables.
    pub page_tables_mib: f64,
    /// The sum: DRAM the run spent.
    pub dram_mib: f64,
}

fn mib(bytes: i128) -> f64 {
    bytes.max(0) as f64 / f64::from(1 << 20)
}

impl HostMemory {
    /// The difference `after - before`.
    pub fn delta(before: &MemInfo, after: &MemInfo) -> Self {
        let d = |f: &dyn Fn(&MemInfo) -> u64| i128::from(f(after)) - i128::from(f(before));
        let anon = d(&|m| m.get("AnonPages"));
        let shmem = d(&|m| m.get("Shmem"));
        let page_cache = d(&|m| m.get("Cached").saturating_sub(m.get("Shmem")));
        let hugetlb = d(&|m| m.hugetlb());
        let page_tables = d(&|m| m.get("PageTables") + m.get("SecPageTables"));
        let parts = [anon, page_cache, shmem, hugetlb, page_tables];
        HostMemory {
            anon_mib: mib(anon),
            page_cache_mib: mib(page_cache),
            shmem_mib: mib(shmem),
            hugetlb_mib: mib(hugetlb),
            page_tables_mib: mib(page_tables),
            dram_mib: parts.iter().map(|&p| mib(p)).sum(),
        }
    }
}

/// Bytes a file occupies in memory (allocated blocks: the emulated pool's DRAM).
pub fn pool_bytes(path: &std::path::Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.blocks() * 512)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "MemTotal: 1000 kB\nMemAvailable: 900 kB\nCached: 400 kB\nShmem: 100 kB\nAnonPages: 50 kB\nPageTables: 10 kB\nSecPageTables: 0 kB\nHugePages_Total: 10\nHugePages_Free: 10\nHugePages_Rsvd: 0\nHugepagesize: 2048 kB\n";
    const AFTER: &str = "MemTotal: 1000 kB\nMemAvailable: 100 kB\nCached: 1424 kB\nShmem: 100 kB\nAnonPages: 2098 kB\nPageTables: 1034 kB\nSecPageTables: 1024 kB\nHugePages_Total: 10\nHugePages_Free: 8\nHugePages_Rsvd: 1\nHugepagesize: 2048 kB\n";

    #[test]
    fn deltas_split_by_kind() {
        let d = HostMemory::delta(&MemInfo::parse(BEFORE), &MemInfo::parse(AFTER));
        assert_eq!(d.anon_mib, 2.0);
        assert_eq!(d.page_cache_mib, 1.0);
        assert_eq!(d.shmem_mib, 0.0);
        assert_eq!(d.hugetlb_mib, 6.0, "two huge pages in use and one reserved");
        assert_eq!(d.page_tables_mib, 2.0);
        assert_eq!(d.dram_mib, 11.0);
        // Memory given back never counts as negative spending.
        assert_eq!(HostMemory::delta(&MemInfo::parse(AFTER), &MemInfo::parse(BEFORE)).dram_mib, 0.0);
        // Held: anonymous + page tables here (the page cache is not), in bytes.
        let held = MemInfo::parse(AFTER).held() - MemInfo::parse(BEFORE).held();
        assert_eq!(held, (2048 + 1024 + 1024) * 1024);
    }

    #[test]
    fn the_real_meminfo_parses() {
        let m = MemInfo::read().unwrap();
        assert!(m.get("MemTotal") > 0 && m.available() > 0);
    }
}
