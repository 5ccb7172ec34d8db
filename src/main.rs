//! The `dropnet` command line.

use clap::{Parser, Subcommand};
use dropnet::gradcheck::{self, CaseResult, TOLERANCE};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "dropnet",
    version,
    about = "Neural networks with dropout on the CPU: exact gradients, reproducible masks."
)]
struct Cli {
    /// Worker threads for matrix products and parallel passes (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check every layer's backward pass against central finite differences (f64, frozen masks).
    ///
    /// Runs each activation under inverted and standard dropout with per-unit keep, batch sizes 1
    /// and >1, every loss, softmax as a hidden and an output activation, and evaluation mode.
    /// Exits non-zero when any case's relative error exceeds 1e-6.
    ///
    /// Example: dropnet gradcheck --json
    Gradcheck {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Seed the cases are drawn from.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(threads) = cli.threads {
        if let Err(e) = rayon::ThreadPoolBuilder::new().num_threads(threads).build_global() {
            eprintln!("dropnet: error: cannot start {threads} threads: {e}");
            return ExitCode::FAILURE;
        }
    }
    let outcome = match cli.command {
        Command::Gradcheck { json, seed } => run_gradcheck(json, seed),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dropnet: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_gradcheck(json: bool, seed: u64) -> dropnet::Result<ExitCode> {
    let results = gradcheck::run_all(seed)?;
    let worst = results.iter().map(|r| r.max_rel_error).fold(0.0, f64::max);
    let passed = results.iter().all(CaseResult::passed);
    if json {
        let cases: Vec<_> = results
            .iter()
            .map(|r| {
                let tensors: serde_json::Map<String, serde_json::Value> =
                    r.tensors.iter().map(|(name, err)| (name.clone(), serde_json::json!(err))).collect();
                serde_json::json!({
                    "name": r.name, "max_rel_error": r.max_rel_error, "passed": r.passed(),
                    "seed": r.seed, "tensors": tensors,
                })
            })
            .collect();
        let report = serde_json::json!({
            "max_rel_error": worst, "tolerance": TOLERANCE, "passed": passed, "cases": cases,
        });
        println!("{report}");
    } else {
        println!("{:<46} {:>14}  result", "case", "max rel error");
        for r in &results {
            println!("{:<46} {:>14.3e}  {}", r.name, r.max_rel_error, if r.passed() { "ok" } else { "FAILED" });
        }
        let verdict = if passed { "all passed" } else { "FAILED" };
        println!("{} cases, worst relative error {worst:.3e} (tolerance {TOLERANCE:e}): {verdict}", results.len());
    }
    Ok(if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
