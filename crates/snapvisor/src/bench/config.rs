//! What `snapvisor bench` runs (the experiments, their sizes, the load plan) and how it
//! fails ([`BenchError`]).

use super::load;
use crate::node::data::DataDir;
use crate::node::runner::RunError;
use snapvisor_vmm::pool::medium::EmulatedKind;
use std::path::PathBuf;
use std::time::Duration;

/// The experiments that run (the derived sections follow from `e2e` and `concurrency`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Experiment {
    /// 1. every function × every configuration (4, 5 and 8 derive from it).
    E2e,
    /// 2. recorded with input 2, measured with the other five.
    Sensitivity,
    /// 3. N VMs of one snapshot at once (7 derives from it).
    Concurrency,
    /// 6. pass with one technique taken away at a time.
    Ablation,
    /// Restore phases, from scratch and into VM shells.
    Restore,
    /// The daemon under autocannon's load, and its leak check.
    Load,
}

impl Experiment {
    /// Every experiment, in the order they run.
    pub const ALL: [Experiment; 6] = [
        Experiment::E2e,
        Experiment::Concurrency,
        Experiment::Ablation,
        Experiment::Restore,
        Experiment::Sensitivity,
        Experiment::Load,
    ];
}

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Functions of the end-to-end experiment (built-in names).
    pub functions: Vec<String>,
    /// Functions of the sensitivity experiment.
    pub sensitivity_functions: Vec<String>,
    /// Functions of the concurrency experiment.
    pub concurrency_functions: Vec<String>,
    /// Functions of the ablation.
    pub ablation_functions: Vec<String>,
    /// Function of the restore-phase experiment.
    pub restore_function: String,
    /// Concurrency levels.
    pub concurrency: Vec<usize>,
    /// Rounds of the end-to-end and ablation experiments.
    pub reps: usize,
    /// Rounds per input of the sensitivity experiment.
    pub sensitivity_reps: usize,
    /// The load experiment (function, levels, requests, leak check).
    pub load: LoadPlan,
    /// Experiments to run.
    pub experiments: Vec<Experiment>,
    /// Output directory.
    pub out: PathBuf,
    /// Data directory (the benchmark works under `DATA/bench`).
    pub data: DataDir,
    /// Guest memory bytes.
    pub mem_size: u64,
    /// Emulated persistent-memory medium.
    pub pool_medium: EmulatedKind,
    /// Per-run guest timeout.
    pub timeout: Duration,
    /// Whether this is the `--quick` variant (said in the header).
    pub quick: bool,
}

/// The load experiment's size.
#[derive(Clone, Debug)]
pub struct LoadPlan {
    /// Function invoked.
    pub function: String,
    /// Client concurrency levels.
    pub clients: Vec<u32>,
    /// Requests per strategy and level.
    pub requests: u32,
    /// Invocations of the leak check.
    pub leak_invocations: u32,
}

impl BenchConfig {
    /// Whether `e` runs.
    pub fn runs(&self, e: Experiment) -> bool {
        self.experiments.contains(&e)
    }

    /// Every function some experiment uses (each gets fixtures).
    pub fn all_functions(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        let mut add = |list: &[String]| {
            for f in list {
                if !all.contains(f) {
                    all.push(f.clone());
                }
            }
        };
        if self.runs(Experiment::E2e) {
            add(&self.functions);
        }
        if self.runs(Experiment::Sensitivity) {
            add(&self.sensitivity_functions);
        }
        if self.runs(Experiment::Concurrency) {
            add(&self.concurrency_functions);
        }
        if self.runs(Experiment::Ablation) {
            add(&self.ablation_functions);
        }
        if self.runs(Experiment::Restore) {
            add(std::slice::from_ref(&self.restore_function));
        }
        all
    }
}

/// Why the benchmark failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A run failed.
    #[error("{function} / {what}")]
    Run {
        /// Function.
        function: String,
        /// Configuration.
        what: String,
        /// The failure.
        #[source]
        source: RunError,
    },
    /// The VMM failed outside a run.
    #[error(transparent)]
    Vmm(#[from] snapvisor_vmm::Error),
    /// The pool failed.
    #[error(transparent)]
    Pool(#[from] snapvisor_vmm::pool::PoolError),
    /// A function is not built in.
    #[error("no built-in function `{0}` (see `snapvisor functions`)")]
    UnknownFunction(String),
    /// A file could not be written or read.
    #[error("{}: cannot write or read", .0.display())]
    Write(PathBuf, #[source] std::io::Error),
    /// The load experiment failed.
    #[error("the load experiment")]
    Load(#[from] load::LoadError),
    /// SIGINT or SIGTERM: the run stopped after undoing what it set up.
    #[error("interrupted; the benchmark's medium and fixtures were removed")]
    Interrupted,
    /// Another benchmark runs on the same data directory.
    #[error("{}: another `snapvisor bench` is running on this data directory", .0.display())]
    Busy(PathBuf),
    /// A guest answered differently from the host's computation.
    #[error("{0} responses did not match the host's computation (see digest_ok in results.csv)")]
    DigestMismatch(usize),
}

impl BenchError {
    /// A VMM failure of `function` while doing `what`.
    pub fn run(function: &str, what: &str, e: snapvisor_vmm::Error) -> Self {
        BenchError::Run { function: function.into(), what: what.into(), source: e.into() }
    }
}
