//! `snapvisor`: start serverless functions from memory snapshots in KVM microVMs.
//!
//! See `snapvisor --help`, the README and `docs/`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use snapvisor::bench::report::{percentile, ConcurrencyRow, Row};
use snapvisor::bench::{self, BenchConfig};
use snapvisor::data::{self, DataDir};
use snapvisor::runner::{self, ms};
use snapvisor_vmm::metrics::{mib, total_memory};
use snapvisor_vmm::pool::medium::EmulatedKind;
use snapvisor_vmm::pool::Pool;
use snapvisor_vmm::restore::{self as vmm_restore, MemoryStrategy, SnapshotSource, Strategy};
use snapvisor_vmm::snapshot::Snapshot;
use snapvisor_vmm::{Hypervisor, MicroVm};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "snapvisor",
    version,
    about = "A microVM hypervisor for starting serverless functions from memory snapshots"
)]
struct Cli {
    /// Directory for snapshots and the emulated pool [env: SNAPVISOR_DATA] [default: ./snapvisor-data]
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// More logging (-v: info, includes guest console lines; -vv: debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct ImageChoice {
    /// A built-in function (see `snapvisor functions`).
    #[arg(long)]
    function: Option<String>,
    /// A guest ELF built outside the tree (static, non-PIE, linked at the guest image base).
    #[arg(long)]
    image: Option<PathBuf>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    image: ImageChoice,
    /// Request (JSON for the built-in functions) [default: the function's default request].
    #[arg(long)]
    input: Option<String>,
    /// Guest memory in MiB (a multiple of 2, at least 16).
    #[arg(long, default_value_t = 256)]
    mem_mib: u64,
    /// Stop the guest if init or the invocation takes longer.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// Print one machine-readable JSON report.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SnapshotArgs {
    #[command(flatten)]
    image: ImageChoice,
    /// Snapshot directory [default: DATA_DIR/snapshots/NAME].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256)]
    mem_mib: u64,
    /// Replace an existing snapshot (only once the new one is complete).
    #[arg(long)]
    force: bool,
    /// Stop the guest if init takes longer.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
}

#[derive(Args)]
struct RecordArgs {
    /// Snapshot directory.
    #[arg(long)]
    snapshot: PathBuf,
    /// Request to record with [default: the function's default request].
    #[arg(long)]
    input: Option<String>,
    /// Stop a guest whose invocation takes longer.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
}

#[derive(Args)]
struct InvokeArgs {
    /// Snapshot directory; for `--strategy pass`, the snapshot id in the pool (a directory's name is used as the id).
    #[arg(long)]
    snapshot: PathBuf,
    /// How guest memory is restored: lazy, uffd, reap, faasnap, cached, pass.
    #[arg(long)]
    strategy: String,
    /// Request [default: the function's default request].
    #[arg(long)]
    input: Option<String>,
    /// VMs restored and invoked at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    concurrency: u32,
    /// Evict the snapshot files from the page cache first ("SnapStart from disk").
    #[arg(long)]
    cold: bool,
    /// Pool for `--strategy pass` [default: DATA_DIR/pool/mnt/snapvisor.pool].
    #[arg(long)]
    pool: Option<PathBuf>,
    /// Bytes per userfaultfd fault for `--strategy uffd`, in KiB (4..=2048, a power of two).
    #[arg(long, default_value_t = 4)]
    uffd_chunk_kib: usize,
    /// Stop a guest whose invocation takes longer.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// Print one machine-readable JSON report.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum MediumArg {
    /// hugetlbfs if the huge pages can be reserved, else tmpfs.
    Auto,
    /// DRAM file on hugetlbfs (2 MiB pages).
    Hugetlbfs,
    /// DRAM file on tmpfs (huge=always where allowed).
    Tmpfs,
}

impl From<MediumArg> for EmulatedKind {
    fn from(m: MediumArg) -> Self {
        match m {
            MediumArg::Auto => EmulatedKind::Auto,
            MediumArg::Hugetlbfs => EmulatedKind::Hugetlbfs,
            MediumArg::Tmpfs => EmulatedKind::Tmpfs,
        }
    }
}

#[derive(Subcommand)]
enum PoolCommand {
    /// Create a pool: on --pool (device-dax or a file on a DAX filesystem), or an emulated one under the data directory.
    Init {
        /// Pool device or file [default: emulated, DATA_DIR/pool/mnt/snapvisor.pool].
        #[arg(long)]
        pool: Option<PathBuf>,
        /// Pool size in MiB.
        #[arg(long, default_value_t = 1024)]
        size_mib: u64,
        /// Emulated hugetlbfs only: extra huge pages, in MiB, for the copy-on-write copies of running VMs.
        #[arg(long, default_value_t = 1024)]
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

#[derive(Args)]
struct BenchArgs {
    /// Functions, comma-separated [default: all built-in].
    #[arg(long, value_delimiter = ',')]
    functions: Vec<String>,
    /// Strategies, comma-separated [default: lazy,uffd,reap,faasnap,cached,pass].
    #[arg(long, value_delimiter = ',')]
    strategies: Vec<String>,
    /// Measured repetitions per configuration.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    reps: u32,
    /// Output directory for results.csv, concurrency.csv, summary.md, concurrency.svg.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// Concurrency levels (empty to skip).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    concurrency: Vec<usize>,
    /// Functions of the concurrency experiment.
    #[arg(long, value_delimiter = ',', default_value = "recognition")]
    concurrency_functions: Vec<String>,
    /// Skip the evicted-page-cache runs.
    #[arg(long)]
    no_cold: bool,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256)]
    mem_mib: u64,
    /// Emulated pool medium.
    #[arg(long, value_enum, default_value_t = MediumArg::Auto)]
    pool_medium: MediumArg,
    /// Per-run guest timeout.
    #[arg(long, default_value_t = 60_000)]
    timeout_ms: u64,
}

/// An error for the user, with its causes.
type AnyError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| filter.into()))
        .with_writer(std::io::stderr)
        .init();
    let data = DataDir::new(
        cli.data_dir
            .clone()
            .or_else(|| std::env::var_os("SNAPVISOR_DATA").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("snapvisor-data")),
    );
    match dispatch(cli.command, &data) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut cause = e.source();
            while let Some(c) = cause {
                eprintln!("  caused by: {c}");
                cause = c.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command, data: &DataDir) -> Result<(), AnyError> {
    match command {
        Command::Functions { json } => functions(json),
        Command::Run(args) => run(args),
        Command::Snapshot(args) => snapshot(args, data),
        Command::Record(args) => record(args),
        Command::Invoke(args) => invoke(args, data),
        Command::Pool(cmd) => pool(cmd, data),
        Command::Bench(args) => bench(args, data),
    }
}

fn functions(json: bool) -> Result<(), AnyError> {
    if json {
        #[derive(Serialize)]
        struct F<'a> {
            name: &'a str,
            description: &'a str,
            default_request: &'a str,
        }
        let list: Vec<F<'_>> = snapvisor_functions::CATALOG
            .iter()
            .map(|i| F { name: i.name, description: i.description, default_request: i.default_request })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        for i in snapvisor_functions::CATALOG {
            println!("{:<12} {}\n{:<12} default request: {}", i.name, i.description, "", i.default_request);
        }
    }
    Ok(())
}

/// A guest image chosen on the command line: (name, ELF bytes, default request).
fn load_image(choice: &ImageChoice) -> Result<(String, Vec<u8>, String), AnyError> {
    if let Some(name) = &choice.function {
        let image = snapvisor_guest_images::get(name)
            .filter(|i| i.function)
            .ok_or_else(|| format!("no built-in function `{name}` (see `snapvisor functions`)"))?;
        let request = snapvisor_functions::info(name).map(|i| i.default_request).unwrap_or_default();
        return Ok((name.clone(), image.elf.to_vec(), request.to_string()));
    }
    let path = choice.image.as_ref().expect("clap requires --function or --image");
    let elf = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let name = path.file_stem().map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
    Ok((name, elf, String::new()))
}

fn mem_size(mib: u64) -> u64 {
    mib << 20
}

fn run(args: RunArgs) -> Result<(), AnyError> {
    let hv = Hypervisor::open()?;
    let (name, elf, default_request) = load_image(&args.image)?;
    let request = args.input.unwrap_or(default_request);
    let timeout = Duration::from_millis(args.timeout_ms);
    let report = runner::fresh_run(&hv, &elf, mem_size(args.mem_mib), request.as_bytes(), timeout)?;
    let response = String::from_utf8_lossy(&report.response).into_owned();
    if args.json {
        #[derive(Serialize)]
        struct Out<'a> {
            function: &'a str,
            response: serde_json::Value,
            #[serde(flatten)]
            report: &'a runner::FreshRun,
        }
        let response = serde_json::from_str(&response).unwrap_or(serde_json::Value::String(response));
        println!("{}", serde_json::to_string_pretty(&Out { function: &name, response, report: &report })?);
    } else {
        for line in &report.console {
            println!("[guest] {}", line.trim_end());
        }
        println!("{response}");
        println!(
            "{name}: VM create {:.2} ms, load {:.2} ms, init {:.2} ms, invoke {:.2} ms ({} KVM page faults)",
            report.vm_create_ms, report.load_ms, report.init_ms, report.invoke_ms, report.kvm.pf_fixed
        );
    }
    Ok(())
}

fn snapshot(args: SnapshotArgs, data: &DataDir) -> Result<(), AnyError> {
    let hv = Hypervisor::open()?;
    let (name, elf, _) = load_image(&args.image)?;
    let out = args.out.unwrap_or_else(|| data.snapshot(&name));
    let (mut vm, _) = MicroVm::boot(&hv, &elf, mem_size(args.mem_mib))?;
    let init = vm.wait_ready(Duration::from_millis(args.timeout_ms))?;
    let start = std::time::Instant::now();
    let manifest = vm.snapshot(&hv, &name, &elf, &out, args.force)?;
    println!(
        "{}: snapshot of {name} after init ({:.1} ms): {} MiB memory, {:.1} MiB data, {} zero ranges, written in {:.1} ms",
        out.display(),
        ms(init),
        manifest.mem_size >> 20,
        mib(manifest.memory.data_pages * 4096),
        manifest.memory.zero_ranges.len(),
        ms(start.elapsed())
    );
    Ok(())
}

fn record(args: RecordArgs) -> Result<(), AnyError> {
    let hv = Hypervisor::open()?;
    let snapshot = Snapshot::open(&args.snapshot)?;
    let function = snapshot.manifest().function.clone();
    let request = args.input.unwrap_or_else(|| {
        snapvisor_functions::info(&function).map(|i| i.default_request.to_string()).unwrap_or_default()
    });
    let recorded =
        vmm_restore::record(&hv, &args.snapshot, request.as_bytes(), Duration::from_millis(args.timeout_ms))?;
    for response in &recorded.responses {
        runner::digest_of(response)?;
    }
    println!(
        "{}: recorded the working sets of {function}: reap {} pages ({:.1} MiB), faasnap {} pages ({:.1} MiB)",
        args.snapshot.display(),
        recorded.reap_pages,
        mib(recorded.reap_pages * 4096),
        recorded.faasnap_pages,
        mib(recorded.faasnap_pages * 4096)
    );
    Ok(())
}

fn pool_path(data: &DataDir, pool: Option<PathBuf>) -> PathBuf {
    pool.unwrap_or_else(|| data.default_pool())
}

fn open_pool(data: &DataDir, pool: Option<PathBuf>) -> Result<std::sync::Arc<Pool>, AnyError> {
    let path = pool_path(data, pool);
    if !path.exists() {
        return Err(format!("{}: no pool (create one with `snapvisor pool init`)", path.display()).into());
    }
    Ok(Pool::open(&path)?)
}

fn invoke(args: InvokeArgs, data: &DataDir) -> Result<(), AnyError> {
    let strategy_kind: Strategy = args.strategy.parse()?;
    let hv = Hypervisor::open()?;
    let (source, function, medium) = if strategy_kind.uses_pool() {
        let pool = open_pool(data, args.pool)?;
        let id = if args.snapshot.is_dir() || args.snapshot.components().count() > 1 {
            args.snapshot.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
        } else {
            args.snapshot.to_string_lossy().into_owned()
        };
        let opened = pool.open_snapshot(&id)?;
        let medium = pool.medium().short().to_string();
        (SnapshotSource::Pool { pool: pool.clone(), id }, opened.function().to_string(), medium)
    } else {
        let snapshot = Snapshot::open(&args.snapshot)?;
        if args.cold {
            snapshot.evict_page_cache()?;
        }
        let medium = bench::disk_medium(args.cold).to_string();
        (SnapshotSource::Dir(args.snapshot.clone()), snapshot.manifest().function.clone(), medium)
    };
    if args.cold && strategy_kind.uses_pool() {
        return Err(
            "--cold evicts snapshot files from the page cache; a pool has none (pass reads the pool's memory directly)"
                .into(),
        );
    }
    let strategy: Box<dyn MemoryStrategy> = match strategy_kind {
        Strategy::Uffd => Box::new(vmm_restore::Uffd::new(args.uffd_chunk_kib.saturating_mul(1024))),
        other => vmm_restore::strategy(other),
    };
    let request = args.input.unwrap_or_else(|| {
        snapvisor_functions::info(&function).map(|i| i.default_request.to_string()).unwrap_or_default()
    });
    let n = args.concurrency as usize;
    let samples = runner::snapstart(
        &hv,
        &source,
        strategy.as_ref(),
        request.as_bytes(),
        n,
        Duration::from_millis(args.timeout_ms),
    )?;
    let expected = samples[0].digest.clone();
    let rows: Vec<Row> =
        samples.iter().map(|s| Row::new(&function, strategy_kind.name(), &medium, n, 0, s, &expected)).collect();
    let summary = ConcurrencyRow::new(&function, strategy_kind.name(), &medium, n, &samples);
    if args.json {
        #[derive(Serialize)]
        struct Out<'a> {
            function: &'a str,
            strategy: &'a str,
            medium: &'a str,
            concurrency: usize,
            p50_ms: f64,
            p99_ms: f64,
            total_mib: f64,
            vms: &'a [Row],
        }
        let out = Out {
            function: &function,
            strategy: strategy_kind.name(),
            medium: &medium,
            concurrency: n,
            p50_ms: summary.p50_ms,
            p99_ms: summary.p99_ms,
            total_mib: summary.total_mib,
            vms: &rows,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        if n == 1 {
            println!("{}", String::from_utf8_lossy(&samples[0].response));
        }
        println!("{function} via {strategy_kind} ({medium}), {n} VM(s):");
        println!("  vm  restore (create+state+memory) ms   invoke ms  total ms  host faults  KVM faults  uffd faults  private MiB  shared MiB");
        for r in &rows {
            println!(
                "  {:>2}  {:>8.2} ({:.2}+{:.2}+{:.2})  {:>9.2}  {:>8.2}  {:>11}  {:>10}  {:>11}  {:>11.1}  {:>10.1}",
                r.vm,
                r.restore_ms,
                r.vm_create_ms,
                r.state_load_ms,
                r.memory_setup_ms,
                r.invoke_ms,
                r.total_ms,
                r.host_faults,
                r.kvm_faults,
                r.uffd_faults,
                r.private_mib,
                r.shared_mib
            );
        }
        let totals: Vec<f64> = rows.iter().map(|r| r.total_ms).collect();
        let usages: Vec<_> = samples.iter().map(|s| &s.memory).collect();
        println!(
            "  p50 {:.2} ms, p99 {:.2} ms, total guest memory {:.1} MiB (shared pages counted once)",
            percentile(&totals, 50.0),
            percentile(&totals, 99.0),
            mib(total_memory(&usages))
        );
    }
    if rows.iter().any(|r| r.digest != rows[0].digest) {
        return Err("the VMs did not all give the same answer".into());
    }
    Ok(())
}

fn pool(cmd: PoolCommand, data: &DataDir) -> Result<(), AnyError> {
    match cmd {
        PoolCommand::Init { pool, size_mib, cow_mib, medium } => {
            let pool =
                data::init_pool(pool.as_deref(), &data.pool_root(), size_mib << 20, cow_mib << 20, medium.into())?;
            let info = pool.info()?;
            println!(
                "{}: pool of {} MiB on {} (uuid {})",
                info.path.display(),
                info.size >> 20,
                info.medium,
                info.uuid
            );
        }
        PoolCommand::Import { dir, id, pool } => {
            let pool = open_pool(data, pool)?;
            let id =
                id.unwrap_or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            let bar = indicatif::ProgressBar::new(0);
            let start = std::time::Instant::now();
            let entry = pool.import(&dir, &id, &mut |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })?;
            bar.finish_and_clear();
            println!(
                "imported {} as `{}`: {} extents of 2 MiB ({} MiB memory) in {:.1} ms, into {}",
                dir.display(),
                entry.id,
                entry.extents.len(),
                entry.mem_size >> 20,
                ms(start.elapsed()),
                pool.medium()
            );
        }
        PoolCommand::Ls { pool, json } => {
            let info = open_pool(data, pool)?.info()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                println!(
                    "{}: {} MiB on {}, {}/{} extents used, generation {}",
                    info.path.display(),
                    info.size >> 20,
                    info.medium,
                    info.used_extents,
                    info.extents,
                    info.generation
                );
                for s in &info.snapshots {
                    println!(
                        "  {:<20} {:<12} {:>5} MiB memory, {:>4} extents, {}",
                        s.id,
                        s.function,
                        s.mem_size >> 20,
                        s.extents.len(),
                        s.memory_digest
                    );
                }
            }
        }
        PoolCommand::Rm { id, pool } => {
            let entry = open_pool(data, pool)?.remove(&id)?;
            println!("removed `{}` ({} extents freed)", entry.id, entry.extents.len());
        }
        PoolCommand::Fsck { pool, deep, json } => {
            let path = pool_path(data, pool);
            let report = match Pool::open(&path) {
                Ok(pool) => pool.fsck(deep),
                Err(e) => snapvisor_vmm::pool::FsckReport { problems: vec![error_chain(&e)], ..Default::default() },
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for note in &report.notes {
                    println!("note: {note}");
                }
                for problem in &report.problems {
                    println!("problem: {problem}");
                }
                println!(
                    "{}: {} (generation {}, {} snapshots, {} extents in use)",
                    path.display(),
                    if report.is_clean() { "clean" } else { "NOT clean" },
                    report.generation.map_or_else(|| "?".into(), |g| g.to_string()),
                    report.snapshots,
                    report.used_extents
                );
            }
            if !report.is_clean() {
                return Err(format!("{}: fsck found {} problem(s)", path.display(), report.problems.len()).into());
            }
        }
        PoolCommand::Destroy => match data::destroy_pool(&data.pool_root())? {
            Some(record) => println!(
                "unmounted the emulated pool at {} ({}) and released {} huge pages",
                record.mount.display(),
                record.fstype,
                record.hugepages_added
            ),
            None => println!("{}: no emulated pool", data.pool_root().display()),
        },
    }
    Ok(())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

fn bench(args: BenchArgs, data: &DataDir) -> Result<(), AnyError> {
    let hv = Hypervisor::open()?;
    let functions = if args.functions.is_empty() {
        snapvisor_functions::CATALOG.iter().map(|i| i.name.to_string()).collect()
    } else {
        args.functions
    };
    let strategies = if args.strategies.is_empty() {
        Strategy::ALL.to_vec()
    } else {
        args.strategies.iter().map(|s| s.parse()).collect::<Result<Vec<Strategy>, _>>()?
    };
    let concurrency: Vec<usize> = args.concurrency.into_iter().filter(|&n| n > 0).collect();
    let config = BenchConfig {
        functions,
        strategies,
        reps: args.reps as usize,
        out: args.out.clone(),
        data: data.clone(),
        mem_size: mem_size(args.mem_mib),
        concurrency_functions: if concurrency.is_empty() { Vec::new() } else { args.concurrency_functions },
        concurrency,
        cold: !args.no_cold,
        pool_medium: args.pool_medium.into(),
        timeout: Duration::from_millis(args.timeout_ms),
    };
    let summary = bench::run(&hv, &config)?;
    println!("{summary}");
    println!("results: {}", display(&args.out));
    Ok(())
}

fn display(p: &Path) -> String {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf()).display().to_string()
}
