//! `dropnet eval` and `dropnet predict`: a model on a data set, in evaluation mode or as the mean
//! of Monte-Carlo dropout samples.

use clap::Args;
use dropnet::data::{self, Dataset, Source};
use dropnet::error::{Error, Result};
use dropnet::eval::{evaluate, predict, Prediction};
use dropnet::limits::MAX_MC_SAMPLES;
use dropnet::model_file::{self, Saved};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args)]
pub struct DataArgs {
    /// Data: a folder of IDX files (its t10k set is used) or a CSV file [default: as for train]
    #[arg(long)]
    data: Option<PathBuf>,
    /// Test CSV file (with a CSV --data)
    #[arg(long)]
    test_data: Option<PathBuf>,
    /// Label column of CSV data: index from 0, or a header name [default: 0]
    #[arg(long)]
    label_col: Option<String>,
}

/// The model, the data, and how many Monte-Carlo samples to average.
#[derive(Args)]
pub struct ModelArgs {
    /// The model file
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Monte-Carlo dropout samples per example, T ≥ 1 (none: one evaluation pass)
    #[arg(long)]
    mc: Option<u32>,
}

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    run: ModelArgs,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct PredictArgs {
    #[command(flatten)]
    run: ModelArgs,
    /// Predict only the first N examples (N ≥ 1)
    #[arg(long)]
    limit: Option<usize>,
    /// One JSON object per example, then a summary object
    #[arg(long)]
    json: bool,
}

/// `--mc T` checked: at least 1, at most [`MAX_MC_SAMPLES`].
fn check_mc(mc: Option<u32>) -> Result<()> {
    match mc {
        Some(t) if t == 0 || t > MAX_MC_SAMPLES => {
            Err(Error::Config(format!("--mc {t}: give 1 to {MAX_MC_SAMPLES} Monte-Carlo samples")))
        }
        _ => Ok(()),
    }
}

/// The model, the evaluation examples standardised as the model's training data was, and the
/// checked number of Monte-Carlo samples.
fn model_and_data(run: &ModelArgs) -> Result<(Saved, Dataset, Option<u32>)> {
    check_mc(run.mc)?;
    let (model, args) = (&run.model, &run.data);
    let saved = model_file::load(model)?;
    let dir = data::discover(args.data.as_deref())?;
    let source = Source::from_path(&dir, args.test_data.as_deref(), args.label_col.as_deref())?;
    let mut set = data::load_eval(&source)?;
    if set.features() != saved.net.inputs() {
        return Err(Error::Config(format!(
            "{} has {} features, the model {} takes {}",
            dir.display(),
            set.features(),
            model.display(),
            saved.net.inputs()
        )));
    }
    if let Some(s) = &saved.standardization {
        s.apply(&mut set)?;
    }
    Ok((saved, set, run.mc))
}

pub fn run_eval(args: EvalArgs) -> Result<ExitCode> {
    let (mut saved, set, mc) = model_and_data(&args.run)?;
    let (error, loss) = evaluate(&mut saved.net, &set, saved.loss)?;
    let mc_error = match mc {
        Some(t) => Some(misclassified(&predict(&mut saved.net, &set.x, saved.loss, Some(t))?, &set.labels)),
        None => None,
    };
    if args.json {
        let mut report = serde_json::json!({ "error": error, "loss": loss, "n": set.len() });
        if let (Some(t), Some(e)) = (mc, mc_error) {
            report["mc_error"] = serde_json::json!(e);
            report["mc_samples"] = serde_json::json!(t);
        }
        println!("{report}");
    } else {
        println!("error {:.2}%  loss {loss:.4}  on {} examples", 100.0 * error, set.len());
        if let (Some(t), Some(e)) = (mc, mc_error) {
            println!("Monte-Carlo dropout ({t} samples): error {:.2}%", 100.0 * e);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn misclassified(predictions: &[Prediction], labels: &[usize]) -> f64 {
    let wrong = predictions.iter().zip(labels).filter(|(p, &y)| p.class != y).count();
    wrong as f64 / labels.len().max(1) as f64
}

pub fn run_predict(args: PredictArgs) -> Result<ExitCode> {
    if args.limit == Some(0) {
        return Err(Error::Config("--limit 0 would predict nothing: give 1 or more".into()));
    }
    let (mut saved, mut set, mc) = model_and_data(&args.run)?;
    if let Some(n) = args.limit {
        set = set.subset(&(0..n.min(set.len())).collect::<Vec<_>>());
    }
    let started = Instant::now();
    let predictions = predict(&mut saved.net, &set.x, saved.loss, mc)?;
    let seconds = started.elapsed().as_secs_f64();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let write_error = |e: std::io::Error| Error::Config(format!("cannot write to stdout: {e}"));
    for (i, (p, &label)) in predictions.iter().zip(&set.labels).enumerate() {
        if args.json {
            let mut line = serde_json::to_value(p).expect("plain data serialises");
            line["index"] = serde_json::json!(i);
            line["label"] = serde_json::json!(label);
            writeln!(out, "{line}").map_err(write_error)?;
        } else {
            writeln!(
                out,
                "{i:>6}  class {}  p {:.4}  label {label}  entropy {:.4}  mutual information {:.4}",
                p.class, p.mean[p.class], p.entropy, p.mutual_information
            )
            .map_err(write_error)?;
        }
    }
    let error = misclassified(&predictions, &set.labels);
    let rate = predictions.len() as f64 / seconds.max(1e-9);
    if args.json {
        let summary = serde_json::json!({
            "summary": true,
            "examples": predictions.len(),
            "mc_samples": mc,
            "error": error,
            "seconds": seconds,
            "examples_per_s": rate,
        });
        writeln!(out, "{summary}").map_err(write_error)?;
    } else {
        writeln!(out, "{} examples, error {:.2}%, {rate:.0} examples/s", predictions.len(), 100.0 * error)
            .map_err(write_error)?;
    }
    out.flush().map_err(write_error)?;
    Ok(ExitCode::SUCCESS)
}
