//! The command line's arguments (clap). Every number is range-checked here, so a value
//! that would overflow later (a shift, a multiplication) is refused with a clear message.

use clap::{Args, Parser, Subcommand, ValueEnum};
use snapvisor_vmm::pool::medium::EmulatedKind;
use std::path::PathBuf;

/// Pool and copy-on-write sizes accepted, MiB (up to 16 TiB).
const POOL_MIB: std::ops::RangeInclusive<u64> = 0..=16 << 20;
/// Guest timeouts accepted, ms (up to a day).
const TIMEOUT_MS: std::ops::RangeInclusive<u64> = 1..=86_400_000;

/// The command line.
#[derive(Parser)]
#[command(
    name = "snapvisor",
    version,
    about = "A microVM hypervisor for starting serverless functions from memory snapshots"
)]
pub struct Cli {
    /// Directory for snapshots and the emulated pool [env: SNAPVISOR_DATA] [default: ./snapvisor-data]
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// The daemon's Unix socket: `serve` listens there [default: DATA_DIR/snapvisor.sock]; other
    /// commands given it (or SNAPVISOR_SOCKET) are sent to that daemon instead of run here.
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    /// More logging (-v: info, includes guest console lines; -vv: debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand)]
pub enum Command {
    /// List the built-in functions.
    Functions {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Boot a function in a fresh microVM, run its init, invoke it once.
    Run(RunArgs),
    /// Boot a function, run its init, and snapshot it at its ready point.
    Snapshot(SnapshotArgs),
    /// Record the working sets of the prefetching strategies (reap, faasnap) for a snapshot.
    Record(RecordArgs),
    /// Restore VMs from a snapshot (SnapStart) and invoke each once.
    Invoke(InvokeArgs),
    /// Manage the persistent-memory pool (PASS).
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Benchmark every function and strategy: warm vs SnapStart, and concurrency.
    Bench(BenchArgs),
    /// Run the node daemon: an HTTP API on a Unix socket (and optionally TCP).
    Serve(ServeArgs),
    /// The daemon under load from an established HTTP load generator (autocannon).
    #[command(hide = true)]
    BenchLoad(LoadArgs),
}

/// Which guest to boot.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct ImageChoice {
    /// A built-in function (see `snapvisor functions`).
    #[arg(long)]
    pub function: Option<String>,
    /// A guest ELF built outside the tree (static, non-PIE, linked at the guest image base).
    #[arg(long)]
    pub image: Option<PathBuf>,
}

/// The request an invocation gets.
#[derive(Args)]
#[group(multiple = false)]
pub struct InputChoice {
    /// A built-in function's input: A (recorded), B (measured) or 1..6 (see `snapvisor functions`); for your own image, the request text [default: B; A for record].
    #[arg(long)]
    pub input: Option<String>,
    /// A request given as text, for any function.
    #[arg(long)]
    pub input_text: Option<String>,
    /// A request read from a file, for any function.
    #[arg(long)]
    pub input_file: Option<PathBuf>,
}

/// `snapvisor run`.
#[derive(Args)]
pub struct RunArgs {
    /// The guest.
    #[command(flatten)]
    pub image: ImageChoice,
    /// The request.
    #[command(flatten)]
    pub input: InputChoice,
    /// Guest memory in MiB (a multiple of 2, 32..=16384).
    #[arg(long, default_value_t = crate::node::DEFAULT_MEM_MIB, value_parser = mem_mib)]
    pub mem_mib: u64,
    /// Stop the guest if init or the invocation takes longer.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(TIMEOUT_MS))]
    pub timeout_ms: u64,
    /// Print one machine-readable JSON report.
    #[arg(long)]
    pub json: bool,
}

/// `snapvisor snapshot`.
#[derive(Args)]
pub struct SnapshotArgs {
    /// The guest.
    #[command(flatten)]
    pub image: ImageChoice,
    /// Snapshot directory [default: DATA_DIR/snapshots/NAME].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Guest memory in MiB (a multiple of 2, 32..=16384).
    #[arg(long, default_value_t = crate::node::DEFAULT_MEM_MIB, value_parser = mem_mib)]
    pub mem_mib: u64,
    /// Replace an existing snapshot (only once the new one is complete).
    #[arg(long)]
    pub force: bool,
    /// Stop the guest if init takes longer.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(TIMEOUT_MS))]
    pub timeout_ms: u64,
}

/// `snapvisor record`.
#[derive(Args)]
pub struct RecordArgs {
    /// Snapshot directory.
    #[arg(long)]
    pub snapshot: PathBuf,
    /// The request.
    #[command(flatten)]
    pub input: InputChoice,
    /// Stop a guest whose invocation takes longer.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(TIMEOUT_MS))]
    pub timeout_ms: u64,
}

/// `snapvisor invoke`.
#[derive(Args)]
pub struct InvokeArgs {
    /// Snapshot directory; for `--strategy pass`, the snapshot id in the pool (a directory's name is used as the id).
    #[arg(long)]
    pub snapshot: PathBuf,
    /// How guest memory is restored: lazy, uffd, reap, faasnap, cached, pass.
    #[arg(long)]
    pub strategy: String,
    /// The request.
    #[command(flatten)]
    pub input: InputChoice,
    /// VMs restored and invoked at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,
    /// Evict the snapshot files from the page cache first ("SnapStart from disk").
    #[arg(long)]
    pub cold: bool,
    /// Pool for `--strategy pass` [default: DATA_DIR/pool/mnt/snapvisor.pool].
    #[arg(long)]
    pub pool: Option<PathBuf>,
    /// Bytes per userfaultfd fault for `--strategy uffd`, in KiB (4..=2048, a power of two).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=2048))]
    pub uffd_chunk_kib: u64,
    /// Stop a guest whose invocation takes longer.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(TIMEOUT_MS))]
    pub timeout_ms: u64,
    /// Print one machine-readable JSON report.
    #[arg(long)]
    pub json: bool,
}

/// The emulated pool medium.
#[derive(Clone, Copy, ValueEnum)]
pub enum MediumArg {
    /// tmpfs with huge pages (2 MiB reads, 4 KiB copy-on-write); else hugetlbfs, else plain tmpfs.
    Auto,
    /// DRAM file on hugetlbfs (2 MiB pages, 2 MiB copy-on-write).
    Hugetlbfs,
    /// DRAM file on tmpfs (huge=always where allowed).
    Tmpfs,
    /// DRAM file on tmpfs with 4 KiB pages only.
    #[value(name = "tmpfs-4k")]
    Tmpfs4k,
}

impl From<MediumArg> for EmulatedKind {
    fn from(m: MediumArg) -> Self {
        match m {
            MediumArg::Auto => EmulatedKind::Auto,
            MediumArg::Hugetlbfs => EmulatedKind::Hugetlbfs,
            MediumArg::Tmpfs => EmulatedKind::Tmpfs,
            MediumArg::Tmpfs4k => EmulatedKind::TmpfsSmallPages,
        }
    }
}

/// `snapvisor pool ...`.
#[derive(Subcommand)]
pub enum PoolCommand {
    /// Create a pool: on --pool (device-dax or a file on a DAX filesystem), or an emulated one under the data directory.
    Init {
        /// Pool device or file [default: emulated, DATA_DIR/pool/mnt/snapvisor.pool].
        #[arg(long)]
        pool: Option<PathBuf>,
        /// Pool size in MiB.
        #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(POOL_MIB))]
        size_mib: u64,
        /// Emulated hugetlbfs only: extra huge pages, in MiB, for the copy-on-write copies of running VMs (tmpfs needs none).
        #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(POOL_MIB))]
        cow_mib: u64,
        /// Emulated medium.
        #[arg(long, value_enum, default_value_t = MediumArg::Auto)]
        medium: MediumArg,
    },
    /// Import a snapshot directory into the pool.
    Import {
        /// Snapshot directory.
        dir: PathBuf,
        /// Id to find it by [default: the directory's name].
        #[arg(long)]
        id: Option<String>,
        /// Pool [default: DATA_DIR/pool/mnt/snapvisor.pool].
        #[arg(long)]
        pool: Option<PathBuf>,
    },
    /// List the pool and its snapshots.
    Ls {
        /// Pool.
        #[arg(long)]
        pool: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a snapshot from the pool.
    Rm {
        /// Snapshot id.
        id: String,
        /// Pool.
        #[arg(long)]
        pool: Option<PathBuf>,
    },
    /// Check the pool's metadata, indexes and states (--deep: also every snapshot's memory).
    Fsck {
        /// Pool.
        #[arg(long)]
        pool: Option<PathBuf>,
        /// Re-hash every snapshot's memory.
        #[arg(long)]
        deep: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove the emulated pool: unmount it and release its huge pages.
    Destroy,
}

/// `snapvisor bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// The short variant (about 2–3 minutes): json and read-list with 256 MiB guests, one
    /// round, concurrency 1 and 2, a short load run; every section still present.
    #[arg(long)]
    pub quick: bool,
    /// Experiments, comma-separated [default: all].
    #[arg(long, value_delimiter = ',', value_enum)]
    pub experiments: Vec<crate::bench::Experiment>,
    /// Functions of the end-to-end experiment, comma-separated [default: all built-in].
    #[arg(long, value_delimiter = ',')]
    pub functions: Vec<String>,
    /// Functions of the sensitivity experiment [default: those FaaSnap's six-input runs
    /// cover: all but hello, read-list and mmap].
    #[arg(long, value_delimiter = ',')]
    pub sensitivity_functions: Vec<String>,
    /// Rounds of the end-to-end and ablation experiments (slow functions get half).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub reps: Option<u32>,
    /// Rounds per input of the sensitivity experiment.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub sensitivity_reps: Option<u32>,
    /// Output directory for summary.md, the CSV files and concurrency.svg.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Concurrency levels, comma-separated [default: 1,2,4,8,16,32].
    #[arg(long, value_delimiter = ',', value_parser = concurrency_level)]
    pub concurrency: Vec<Option<usize>>,
    /// Functions of the concurrency experiment [default: recognition,video,read-list].
    #[arg(long, value_delimiter = ',')]
    pub concurrency_functions: Vec<String>,
    /// Functions of the ablation [default: recognition,json,read-list].
    #[arg(long, value_delimiter = ',')]
    pub ablation_functions: Vec<String>,
    /// Guest memory in MiB [default: 1024; --quick: 256].
    #[arg(long, value_parser = mem_mib)]
    pub mem_mib: Option<u64>,
    /// Emulated persistent-memory medium.
    #[arg(long, value_enum, default_value_t = MediumArg::Auto)]
    pub pool_medium: MediumArg,
    /// Per-run guest timeout.
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(TIMEOUT_MS))]
    pub timeout_ms: u64,
}

/// `snapvisor serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Also listen on this TCP address (e.g. 127.0.0.1:7070); requests there need the bearer token.
    #[arg(long)]
    pub tcp: Option<std::net::SocketAddr>,
    /// File holding the bearer token for TCP [default: the SNAPVISOR_TOKEN environment variable].
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// VMs running at once, over all requests (a request of N VMs takes N); more wait in the queue.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub max_vms: u32,
    /// Requests that may wait for VMs; beyond them the answer is 429 with Retry-After.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(0..=1024))]
    pub queue: u32,
    /// Longest a request waits in the queue before it gets 429.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(TIMEOUT_MS))]
    pub queue_wait_ms: u64,
    /// Longest one guest run may take (a request may ask for less); also bounds the drain on SIGTERM.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(TIMEOUT_MS))]
    pub timeout_ms: u64,
    /// Largest guest image accepted by `PUT /functions/NAME`, MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub upload_max_mib: u64,
    /// Warm VMs kept at most (0: no warm invocations).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=256))]
    pub warm_max: u32,
    /// A warm VM idle this long is stopped, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub warm_idle_secs: u64,
    /// Pool for `pass` invocations and imports [default: DATA_DIR/pool/mnt/snapvisor.pool].
    #[arg(long)]
    pub pool: Option<PathBuf>,
    /// VM shells (KVM VM, vCPU, memory slot) kept ready per guest memory size, so that a
    /// SnapStart only maps memory and loads state (0: create each VM in its restore).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=64))]
    pub shells: u32,
    /// Log JSON lines instead of text.
    #[arg(long)]
    pub log_json: bool,
}

/// `snapvisor bench-load`.
#[derive(Args)]
pub struct LoadArgs {
    /// Output directory for load.csv and load.md.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Function invoked.
    #[arg(long, default_value = "json")]
    pub function: String,
    /// Strategies, comma-separated: warm and restore strategies [default: warm,lazy,uffd,reap,faasnap,cached,pass].
    #[arg(long, value_delimiter = ',')]
    pub strategies: Vec<String>,
    /// Client concurrency levels, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrency: Vec<u32>,
    /// Requests per strategy and level.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub requests: u32,
    /// Longest one strategy and level may run, seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub max_secs: u64,
    /// Invocations of the leak check (daemon RSS and open files before and after).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub leak_invocations: u32,
}

/// One concurrency level: 1..=256 VMs, or nothing (an empty list item).
fn concurrency_level(s: &str) -> Result<Option<usize>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    match s.parse::<usize>() {
        Ok(n @ 1..=256) => Ok(Some(n)),
        _ => Err(format!("`{s}` is not a number of VMs between 1 and 256")),
    }
}

/// Guest memory in MiB: what the guest layout supports (a multiple of 2 MiB, 32 MiB..16 GiB).
fn mem_mib(s: &str) -> Result<u64, String> {
    let (min, max) = (snapvisor_abi::layout::MIN_MEM_SIZE >> 20, snapvisor_abi::layout::MAX_MEM_SIZE >> 20);
    match s.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) && n % 2 == 0 => Ok(n),
        _ => Err(format!("guest memory size of `{s}` MiB is not a multiple of 2 between {min} and {max}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("snapvisor").chain(args.iter().copied()))
    }

    #[test]
    fn numbers_that_would_overflow_are_refused() {
        for args in [
            &["run", "--function", "json", "--mem-mib", "18446744073709551615"][..],
            &["run", "--function", "json", "--mem-mib", "17592186044416"],
            &["run", "--function", "json", "--mem-mib", "17"],
            &["pool", "init", "--size-mib", "17592186044416"],
            &["pool", "init", "--cow-mib", "18446744073709551615"],
            &["invoke", "--snapshot", "s", "--strategy", "uffd", "--uffd-chunk-kib", "9007199254740993"],
            &["run", "--function", "json", "--timeout-ms", "18446744073709551615"],
            &["bench", "--concurrency", "1,0"],
        ] {
            assert!(parse(args).is_err(), "{args:?} was accepted");
        }
        assert!(parse(&["run", "--function", "json", "--mem-mib", "16384"]).is_ok());
    }

    #[test]
    fn empty_concurrency_items_are_skipped_and_experiments_are_named() {
        let Ok(Cli { command: Command::Bench(args), .. }) = parse(&["bench", "--concurrency", "1,,4"]) else {
            panic!("`1,,4` was refused");
        };
        assert_eq!(args.concurrency.into_iter().flatten().collect::<Vec<_>>(), vec![1, 4]);
        let Ok(Cli { command: Command::Bench(args), .. }) = parse(&["bench", "--experiments", "e2e,load"]) else {
            panic!("`--experiments e2e,load` was refused");
        };
        assert_eq!(args.experiments, [crate::bench::Experiment::E2e, crate::bench::Experiment::Load]);
        assert!(parse(&["bench", "--experiments", "e2e,everything"]).is_err());
        assert!(parse(&["bench", "--reps", "0"]).is_err());
    }
}
