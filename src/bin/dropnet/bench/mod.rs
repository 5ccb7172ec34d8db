//! `dropnet bench`: the workloads of SPEC.md (`workloads`), printed as a line each or as JSON
//! lines.

mod workloads;

use clap::Args;
use dropnet::data;
use dropnet::error::{Error, Result};
use dropnet::stack::NoiseKind;
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct BenchArgs {
    /// w1, w2, w3, w4, w5 or all
    #[arg(long, default_value = "all")]
    workload: String,
    /// The MNIST folder for W1, W4 and W5 [default: the copy in data/mnist; anything but MNIST is refused]
    #[arg(long)]
    data: Option<PathBuf>,
    /// Time only the first N steps of W1's and W4's epoch (a check of the workload, not SPEC.md's
    /// figure; the JSON then says "steps": N)
    #[arg(long)]
    steps: Option<usize>,
    /// W2's noise: bernoulli, gaussian or alpha (SPEC.md) [default: bernoulli]
    #[arg(long)]
    variant: Option<String>,
    /// One JSON object per workload, each on its own line
    #[arg(long)]
    json: bool,
}

pub fn run(args: BenchArgs) -> Result<ExitCode> {
    let known = ["w1", "w2", "w3", "w4", "w5"];
    if args.workload != "all" && !known.contains(&args.workload.as_str()) {
        return Err(Error::Config(format!("--workload '{}': expected w1, w2, w3, w4, w5 or all", args.workload)));
    }
    let runs = |w: &str| args.workload == "all" || args.workload == w;
    let (w1, w2, w3, w4, w5) = (runs("w1"), runs("w2"), runs("w3"), runs("w4"), runs("w5"));
    if args.data.is_some() && !(w1 || w4 || w5) {
        return Err(Error::Config(format!(
            "--data applies to W1, W4 and W5 only, and --workload {} runs none of them",
            args.workload
        )));
    }
    if args.steps.is_some() && !(w1 || w4) {
        return Err(Error::Config(format!(
            "--steps applies to W1 and W4 only, and --workload {} runs neither",
            args.workload
        )));
    }
    let variant = match args.variant.as_deref() {
        _ if args.variant.is_some() && !w2 => {
            return Err(Error::Config(format!("--variant applies to W2, and --workload {} does not run it", args.workload)))
        }
        None | Some("bernoulli") => NoiseKind::Bernoulli,
        Some("gaussian") => NoiseKind::Gaussian,
        Some("alpha") => NoiseKind::Alpha,
        Some(other) => {
            return Err(Error::Config(format!(
                "--variant '{other}': expected bernoulli, gaussian or alpha (DropConnect's noise is on weights: no W2 form)"
            )))
        }
    };
    let threads = rayon::current_num_threads();
    if w1 {
        let dir = data::discover(args.data.as_deref())?;
        let r = workloads::w1(&dir, args.steps)?;
        report(args.json, &r, |r| {
            println!(
                "W1 ({threads} threads){}: {:.0} samples/s ({:.2} s), test error {:.4}; GEMM limit {:.0} samples/s, {:.2} of it; masks {} bytes/step",
                partial(r.steps), r.samples_per_s, r.epoch_s, r.test_error, r.limit_samples_per_s, r.fraction_of_limit, r.mask_bytes_per_step
            );
            print_steps(&r.step_ms);
        });
    }
    if w4 {
        let dir = data::discover(args.data.as_deref())?;
        let r = workloads::w4(&dir, args.steps)?;
        report(args.json, &r, |r| {
            println!(
                "W4 ({threads} threads){}: {:.0} samples/s, {:.1} GFLOP/s ({:.2} s), test error {:.4}; limit {:.0} samples/s, {:.2} of it",
                partial(r.steps), r.samples_per_s, r.gflops, r.epoch_s, r.test_error, r.limit_samples_per_s, r.fraction_of_limit
            );
            print_steps(&r.step_ms);
        });
    }
    if w5 {
        let dir = data::discover(args.data.as_deref())?;
        let r = workloads::w5(&dir)?;
        report(args.json, &r, |r| {
            println!(
                "W5 ({threads} threads): {:.0} examples/s ({} examples x {} samples in {:.2} s); limit {:.0} examples/s, {:.2} of it",
                r.examples_per_s, r.examples, r.mc_samples, r.wall_s, r.limit_examples_per_s, r.fraction_of_limit
            );
        });
    }
    if w2 {
        let r = workloads::w2(variant)?;
        report(args.json, &r, |r| {
            println!(
                "W2 {} ({threads} threads): forward {:.2} GB/s ({:.2} of copy), backward {:.2} GB/s ({:.2}), copy {:.2} GB/s",
                r.variant, r.fwd_gbps, r.fwd_of_copy, r.bwd_gbps, r.bwd_of_copy, r.copy_gbps
            );
        });
    }
    if w3 {
        let r = workloads::w3()?;
        report(args.json, &r, |r| {
            for (shape, g) in &r.gflops {
                println!("W3 ({threads} threads): {shape:>16}  {g:.1} GFLOP/s");
            }
        });
    }
    Ok(ExitCode::SUCCESS)
}

/// One workload's result: its JSON line, or the text `describe` prints.
fn report<R: Serialize>(json: bool, r: &R, describe: impl FnOnce(&R)) {
    if json {
        println!("{}", serde_json::to_string(r).expect("plain data serialises"));
    } else {
        describe(r);
    }
}

/// " [partial: N steps]" after a workload's name when only N steps were timed.
fn partial(steps: Option<usize>) -> String {
    steps.map_or(String::new(), |n| format!(" [partial: {n} steps]"))
}

/// The second line of W1's and W4's table output: the spread of the timed steps.
fn print_steps(t: &workloads::StepTimes) {
    println!("   steps: min {:.2} ms, median {:.2}, p90 {:.2}, max {:.2}", t.min, t.median, t.p90, t.max);
}
