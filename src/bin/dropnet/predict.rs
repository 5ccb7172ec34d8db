//! `dropnet eval` and `dropnet predict`: a model on a data set, in evaluation mode or as the mean
//! of Monte-Carlo dropout samples; `eval` also scores the probabilities' calibration and, with a
//! second data set, how well the MC uncertainty tells the two apart.

use clap::Args;
use dropnet::calibration::{auroc, calibration, Calibration};
use dropnet::data::{self, Dataset, Source};
use dropnet::error::{Error, Result};
use dropnet::eval::{evaluate, predict, Prediction};
use dropnet::files::{check_outputs, NamedPath};
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
    /// Label column of CSV data: index from 0, or a header name [default: 0; a regression model
    /// reads the target columns it was trained on]
    #[arg(long)]
    label_col: Option<String>,
    /// Whether the first line of CSV data is a header: auto, yes or no [default: auto]
    #[arg(long, value_enum)]
    header: Option<dropnet::data::csv::Header>,
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
    /// Draw the reliability diagram (accuracy against confidence in 15 bins; with --mc, of the MC
    /// mean too) to this SVG file
    #[arg(long)]
    reliability: Option<PathBuf>,
    /// Out-of-distribution data (an IDX folder, its t10k set, or a CSV file): report the AUROC of
    /// the MC predictive entropy and of the mutual information for telling it from --data (needs --mc)
    #[arg(long)]
    ood_data: Option<PathBuf>,
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

/// The model, the evaluation examples standardised as the model's training data was, the checked
/// number of Monte-Carlo samples, and the files read (which no output may overwrite).
fn model_and_data(run: &ModelArgs) -> Result<(Saved, Dataset, Option<u32>, Vec<NamedPath>)> {
    check_mc(run.mc)?;
    let (model, args) = (&run.model, &run.data);
    let saved = model_file::load(model)?;
    let plans = saved.net.plans();
    let estimate = dropnet::memory::evaluation(plans, dropnet::eval::eval_rows(plans), rayon::current_num_threads());
    let change = format!("the network of {} is larger than the memory available can evaluate", model.display());
    dropnet::memory::check(&estimate, dropnet::memory::available(), &change)?;
    let dir = data::discover(args.data.as_deref())?;
    let targets = saved.regression.as_ref().map(|r| r.targets.clone());
    if let (Some(targets), true) = (&targets, args.label_col.is_some() || dir.is_dir()) {
        return Err(Error::Config(format!(
            "{} is a regression model: it evaluates a CSV file with its target column(s) {}, and takes no --label-col",
            model.display(),
            targets.join(",")
        )));
    }
    let source = Source::from_path(&dir, args.test_data.as_deref(), args.label_col.as_deref(), targets.as_deref())?
        .with_header(args.header.unwrap_or_default())?;
    let set = examples_for(&saved, &dir, &source, model)?;
    let mut inputs = vec![NamedPath::new("--model", model)];
    inputs.extend(source.input_files().into_iter().map(|p| NamedPath::new("--data", p)));
    Ok((saved, set, run.mc, inputs))
}

/// The evaluation examples of `source` (at `dir`), checked against and standardised for the model.
fn examples_for(saved: &Saved, dir: &std::path::Path, source: &Source, model: &std::path::Path) -> Result<Dataset> {
    let mut set = data::load_eval(source, saved.net.stack().input)?;
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
    Ok(set)
}

/// U4 (math.md) of the MC entropy and mutual information, `inside` the model's data against `outside`.
fn ood_aurocs(inside: &[Prediction], outside: &[Prediction]) -> Result<(f64, f64)> {
    let scores = |ps: &[Prediction], f: fn(&Prediction) -> f64| ps.iter().map(f).collect::<Vec<f64>>();
    let entropy = auroc(&scores(inside, |p| p.entropy), &scores(outside, |p| p.entropy))?;
    let mi = auroc(&scores(inside, |p| p.mutual_information), &scores(outside, |p| p.mutual_information))?;
    Ok((entropy, mi))
}

fn calibration_of(predictions: &[Prediction], labels: &[usize]) -> Result<Calibration> {
    calibration(predictions.iter().map(|p| p.mean.as_slice()), labels)
}

pub fn run_eval(args: EvalArgs) -> Result<ExitCode> {
    if args.ood_data.is_some() && args.run.mc.is_none() {
        return Err(Error::Config(
            "--ood-data needs --mc T: its scores are the Monte-Carlo entropy and mutual information".into(),
        ));
    }
    let (mut saved, set, mc, mut inputs) = model_and_data(&args.run)?;
    if let Some(regression) = saved.regression.take() {
        if let Some(flag) = [("--reliability", args.reliability.is_some()), ("--ood-data", args.ood_data.is_some())]
            .into_iter()
            .find_map(|(flag, given)| given.then_some(flag))
        {
            return Err(Error::Config(format!(
                "{flag} applies to classification models, and this one is a regression model"
            )));
        }
        return crate::regress::eval(&mut saved, &regression, &set, mc, args.json);
    }
    let ood_source = match &args.ood_data {
        Some(dir) => Some((dir, Source::from_path(dir, None, None, None)?)),
        None => None,
    };
    if let Some((_, source)) = &ood_source {
        inputs.extend(source.input_files().into_iter().map(|p| NamedPath::new("--ood-data", p)));
    }
    if let Some(path) = &args.reliability {
        check_outputs(&[NamedPath::new("--reliability", path)], &inputs)?;
    }
    let (error, loss) = evaluate(&mut saved.net, &set, saved.loss)?;
    let eval_calibration = calibration_of(&predict(&mut saved.net, &set.x, saved.loss, None)?, set.labels()?)?;
    let mc_predictions = match mc {
        Some(t) => Some(predict(&mut saved.net, &set.x, saved.loss, Some(t))?),
        None => None,
    };
    let mc_calibration = match &mc_predictions {
        Some(p) => Some(calibration_of(p, set.labels()?)?),
        None => None,
    };
    let ood = match (&ood_source, &mc_predictions) {
        (Some((dir, source)), Some(inside)) => {
            let outside_set = examples_for(&saved, dir, source, &args.run.model)?;
            let outside = predict(&mut saved.net, &outside_set.x, saved.loss, mc)?;
            Some((ood_aurocs(inside, &outside)?, outside.len()))
        }
        _ => None,
    };
    if let Some(path) = &args.reliability {
        let mut series = vec![("evaluation mode", &eval_calibration)];
        series.extend(mc_calibration.as_ref().map(|c| ("Monte-Carlo mean", c)));
        crate::plot::write_reliability(path, &series)?;
    }
    if args.json {
        let mut report = serde_json::json!({
            "error": error, "loss": loss, "n": set.len(),
            "nll": eval_calibration.nll, "brier": eval_calibration.brier, "ece": eval_calibration.ece,
        });
        if let (Some(t), Some(p), Some(c)) = (mc, &mc_predictions, &mc_calibration) {
            report["mc_error"] = serde_json::json!(misclassified(p, set.labels()?));
            report["mc_samples"] = serde_json::json!(t);
            report["mc_nll"] = serde_json::json!(c.nll);
            report["mc_brier"] = serde_json::json!(c.brier);
            report["mc_ece"] = serde_json::json!(c.ece);
        }
        if let Some(((entropy, mi), n)) = ood {
            report["ood_auroc_entropy"] = serde_json::json!(entropy);
            report["ood_auroc_mi"] = serde_json::json!(mi);
            report["ood_n"] = serde_json::json!(n);
        }
        println!("{report}");
    } else {
        println!("error {:.2}%  loss {loss:.4}  on {} examples", 100.0 * error, set.len());
        let c = &eval_calibration;
        println!("calibration: nll {:.4}  brier {:.4}  ece {:.4}", c.nll, c.brier, c.ece);
        if let (Some(t), Some(p), Some(c)) = (mc, &mc_predictions, &mc_calibration) {
            println!("Monte-Carlo dropout ({t} samples): error {:.2}%", 100.0 * misclassified(p, set.labels()?));
            println!("Monte-Carlo calibration: nll {:.4}  brier {:.4}  ece {:.4}", c.nll, c.brier, c.ece);
        }
        if let Some(((entropy, mi), n)) = ood {
            println!("out-of-distribution ({n} examples): AUROC entropy {entropy:.4}  mutual information {mi:.4}");
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
    let (mut saved, mut set, mc, _) = model_and_data(&args.run)?;
    if let Some(n) = args.limit {
        set = set.subset(&(0..n.min(set.len())).collect::<Vec<_>>());
    }
    if let Some(regression) = saved.regression.take() {
        return crate::regress::predict(&mut saved, &regression, &set, mc, args.json);
    }
    let started = Instant::now();
    let predictions = predict(&mut saved.net, &set.x, saved.loss, mc)?;
    let seconds = started.elapsed().as_secs_f64();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let write_error = |e: std::io::Error| Error::Config(format!("cannot write to stdout: {e}"));
    for (i, (p, &label)) in predictions.iter().zip(set.labels()?).enumerate() {
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
    let error = misclassified(&predictions, set.labels()?);
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
