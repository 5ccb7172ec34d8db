//! The `dropnet` command line: train, eval, predict, info, gradcheck, bench. A thin client of the
//! library: it parses flags, checks the outputs before any work, shows progress, and turns every
//! outcome into a message and an exit status (0 only when everything asked for was done).

mod bench;
mod inspect;
mod observer;
mod options;
mod plot;
mod predict;
mod regress;
mod signals;
mod train;
mod uci;

use clap::{Parser, Subcommand};
use dropnet::error::escape_control;
use dropnet::tensor::WorkspaceOutOfMemory;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "dropnet",
    version,
    about = "Neural networks with dropout on the CPU: exact gradients, reproducible masks.",
    after_help = "Examples:\n  dropnet train --epochs 5\n  dropnet train --recipe recipes/mnist-quick.toml --out mnist.safetensors\n  dropnet eval --model mnist.safetensors --mc 50\n  dropnet predict --model mnist.safetensors --mc 50 --json --limit 10\n  dropnet gradcheck --json\n\nKernels: DROPNET_KERNELS=auto|portable|avx2|avx512 (default auto)."
)]
struct Cli {
    /// Worker threads for matrix products and parallel passes (1 to 1024) [default: all cores]
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a network on a data set and write the model file.
    #[command(
        after_help = "Examples:\n  dropnet train --data data/mnist --arch 784-1024-1024-10 --keep 0.8,0.5,0.5 --epochs 10\n  dropnet train --recipe recipes/mnist-quick.toml --epochs 3 --json\n  dropnet train --resume model.safetensors --epochs 20\n\nSIGINT or SIGTERM (Ctrl-C) finishes the current step, saves a checkpoint that --resume continues\nbit for bit, and exits 130 or 143; a second signal exits at once."
    )]
    Train(Box<train::TrainArgs>),
    /// Error and loss of a model on a test set (with --mc T, also the Monte-Carlo dropout error).
    #[command(after_help = "Example:\n  dropnet eval --model model.safetensors --data data/mnist --mc 50 --json")]
    Eval(predict::EvalArgs),
    /// Class predictions per example; with --mc T, Monte-Carlo dropout mean, spread, entropy and BALD.
    #[command(after_help = "Example:\n  dropnet predict --model model.safetensors --mc 50 --limit 5 --json")]
    Predict(predict::PredictArgs),
    /// Check every layer's backward pass against central finite differences (f64, frozen masks).
    ///
    /// Runs each activation under inverted and standard dropout with per-unit keep, batch sizes 1
    /// and >1, every loss, softmax as a hidden and an output activation, and evaluation mode.
    /// Exits non-zero when any case's relative error exceeds 1e-6.
    #[command(after_help = "Example:\n  dropnet gradcheck --json")]
    Gradcheck {
        /// Print one JSON object instead of a table
        #[arg(long)]
        json: bool,
        /// Seed the cases are drawn from
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Run the benchmark workloads of SPEC.md: W1 training epoch on MNIST, W2 dropout kernel over
    /// 2^25 floats against a plain copy, W3 GEMM throughput, W4 dropout CNN epoch, W5 Monte-Carlo
    /// prediction.
    #[command(
        after_help = "Examples:\n  dropnet --threads 2 bench --workload all --json\n  dropnet bench --workload w2 --threads 1\n  dropnet bench --workload w1 --steps 30   (a partial W1, for tests)"
    )]
    Bench(bench::BenchArgs),
    /// Run the UCI regression protocol of Gal & Ghahramani (2016) on a data set in its folder
    /// layout: grid search of keep and τ per split, MC dropout test RMSE and log-likelihood.
    #[command(
        after_help = "Examples:\n  dropnet --threads 2 uci UCI_Datasets/yacht --json\n  dropnet uci DIR --splits 2 --epochs 400 --mc 1000"
    )]
    Uci(uci::UciArgs),
    /// Describe a model file: layers, keep probabilities, seed, training history.
    #[command(after_help = "Example:\n  dropnet info --model model.safetensors --json")]
    Info {
        #[arg(long)]
        model: PathBuf,
        /// Print one JSON object
        #[arg(long)]
        json: bool,
    },
}

/// The most threads `--threads` may ask for.
const MAX_THREADS: usize = 1024;

/// Lets the process end quietly, as other command-line tools do, when its output goes to a reader
/// that stops early (`dropnet predict --json … | head`). Rust starts programs with SIGPIPE
/// ignored, which turns the next write into an error that `println!` reports as a panic; with the
/// default action the kernel ends the process instead. Model files are written to a temporary
/// name and renamed, so this cannot leave a half-written one.
#[cfg(unix)]
fn end_quietly_on_broken_pipe() {
    unsafe extern "C" {
        fn signal(signum: i32, handler: usize) -> usize;
    }
    const SIGPIPE: i32 = 13;
    const SIG_DFL: usize = 0;
    // SAFETY: `signal` from the C library, which every Rust program on unix links; restoring the
    // default action installs no handler of ours.
    unsafe { signal(SIGPIPE, SIG_DFL) };
}

/// Print an error as one line on stderr, control characters escaped.
pub fn print_error(message: &str) {
    eprintln!("dropnet: error: {}", escape_control(message));
}

/// Print a warning as one line on stderr, control characters escaped.
pub fn print_warning(message: &str) {
    eprintln!("dropnet: warning: {}", escape_control(message));
}

/// A layer workspace that could not be allocated mid-run (what the memory estimate missed) ends
/// the run as an error, exit status 1, not as a panic; every other panic stays one (a bug).
fn report_workspace_failures() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| match info.payload().downcast_ref::<WorkspaceOutOfMemory>() {
        Some(failure) => {
            print_error(&failure.to_string());
            std::process::exit(1);
        }
        None => default(info),
    }));
}

fn main() -> ExitCode {
    #[cfg(unix)]
    end_quietly_on_broken_pipe();
    report_workspace_failures();
    let cli = Cli::parse();
    if let Err(e) = dropnet::cpu::init_from_env() {
        print_error(&e.to_string());
        return ExitCode::FAILURE;
    }
    let threads = match cli.threads {
        Some(n) if n == 0 || n > MAX_THREADS => {
            print_error(&format!("--threads {n}: give 1 to {MAX_THREADS}"));
            return ExitCode::FAILURE;
        }
        other => other.unwrap_or(0),
    };
    // The command runs on one of the pool's own threads: each parallel region is then a fork on a
    // thread that takes part in it, rather than a job handed from outside to sleeping workers.
    let pool = match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(pool) => pool,
        Err(e) => {
            print_error(&format!("cannot start {threads} threads: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let outcome = pool.install(|| match cli.command {
        Command::Train(args) => train::run(*args),
        Command::Eval(args) => predict::run_eval(args),
        Command::Predict(args) => predict::run_predict(args),
        Command::Gradcheck { json, seed } => inspect::run_gradcheck(json, seed),
        Command::Info { model, json } => inspect::run_info(&model, json),
        Command::Bench(args) => bench::run(args),
        Command::Uci(args) => uci::run(args),
    });
    match outcome {
        Ok(code) => code,
        Err(e) => {
            print_error(&e.to_string());
            ExitCode::FAILURE
        }
    }
}
