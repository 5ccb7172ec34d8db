//! `dropnet uci DIR`: the UCI regression protocol of Gal & Ghahramani (2016) on a data set in
//! their folder layout (`dropnet::uci`), printed as one JSON object or a short table.

use clap::Args;
use dropnet::error::{Error, Result};
use dropnet::limits::MAX_MC_SAMPLES;
use dropnet::uci::{self, Protocol, UciData};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args)]
pub struct UciArgs {
    /// A data set folder in the UCI layout (data.txt, index_*.txt, n_splits.txt, n_hidden.txt,
    /// dropout_rates.txt, tau_values.txt)
    dir: PathBuf,
    /// Run the first N splits [default: all]
    #[arg(long)]
    splits: Option<usize>,
    /// Epochs of every training (the published table: 4000)
    #[arg(long, default_value_t = 4000)]
    epochs: usize,
    /// Monte-Carlo samples of every score (the published table: 10000)
    #[arg(long, default_value_t = 10_000)]
    mc: u32,
    /// Prior length-scale l of the weight decay l²·keep/(N·τ)
    #[arg(long, default_value_t = 1e-2)]
    lengthscale: f64,
    /// Seed of the trainings (training s·1000 + g of split s uses seed + s·1000 + g)
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

pub fn run(args: UciArgs) -> Result<ExitCode> {
    if args.epochs == 0 {
        return Err(Error::Config("--epochs 0 would train nothing".into()));
    }
    if args.mc == 0 || args.mc > MAX_MC_SAMPLES {
        return Err(Error::Config(format!("--mc {}: give 1 to {MAX_MC_SAMPLES} samples", args.mc)));
    }
    if !(args.lengthscale > 0.0 && args.lengthscale.is_finite()) {
        return Err(Error::Config(format!("--lengthscale {}: it must be positive and finite", args.lengthscale)));
    }
    if args.splits == Some(0) {
        return Err(Error::Config("--splits 0 would run nothing".into()));
    }
    let data = UciData::read(&args.dir)?;
    let protocol = Protocol {
        splits: args.splits,
        epochs: args.epochs,
        mc: args.mc,
        lengthscale: args.lengthscale,
        seed: args.seed,
    };
    let started = Instant::now();
    let show = std::io::stderr().is_terminal();
    let progress = |done: usize, total: usize| {
        if show {
            eprint!("\r{}: {done}/{total} trainings", data.name);
        }
    };
    let table = uci::run(&data, &protocol, &progress)?;
    if show {
        eprintln!();
    }
    let wall_s = started.elapsed().as_secs_f64();
    if args.json {
        let mut report = serde_json::to_value(&table).expect("plain data serialises");
        report["wall_s"] = serde_json::json!(wall_s);
        println!("{report}");
    } else {
        println!(
            "{}: {} splits, {} epochs, {} MC samples, {wall_s:.0} s",
            table.dataset, table.splits, table.epochs, table.mc_samples
        );
        for (name, s) in [("MC RMSE", table.mc_rmse), ("test log-likelihood", table.test_ll), ("RMSE", table.rmse)] {
            println!("  {name:<20} {:.3} ± {:.3}", s.mean, s.stderr);
        }
    }
    Ok(ExitCode::SUCCESS)
}
