//! `dropnet train`: a new run from flags and a recipe, or a saved run resumed from its file.
//!
//! Order of work: every option is checked, then every output (folder exists and takes files, no
//! output is an input or another output), and only then is data read and training begun. The
//! model file is written atomically at the end, at each checkpoint, and on SIGINT/SIGTERM; a run
//! that diverges writes nothing and says what the output file holds.

use crate::observer::{CliObserver, ModelOutput, Written};
use crate::options::{defaults, Options, Tau, TrainOptions};
use crate::signals::{self, Signals};
use clap::Args;
use dropnet::data::{self, Source, Standardization};
use dropnet::error::{Error, Result};
use dropnet::files::{check_outputs, same_file, NamedPath};
use dropnet::model_file::{self, Regression, Saved};
use dropnet::optim::Optimizer;
use dropnet::regression::{choose_tau, Outputs};
use dropnet::train::{self, first_non_finite, Divergence, PerTarget, Stop, TrainState};
use dropnet::{Loss, Network};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    options: TrainOptions,
    /// TOML recipe whose keys are these options' long names; flags override it
    #[arg(long)]
    recipe: Option<PathBuf>,
    /// Continue the run saved in this model file (written back to it unless --out says otherwise).
    /// The file defines the run: only --epochs, --patience, --checkpoint-every, --out, --log,
    /// --plot, --json and --threads may be given with it
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Print one JSON object at the end (progress goes to stderr)
    #[arg(long)]
    json: bool,
}

/// Everything a run needs, checked, before any data is read.
struct Run {
    net: Network<f32>,
    opt: Optimizer,
    state: TrainState,
    loss: Loss,
    source: Source,
    epochs: usize,
    out: PathBuf,
    /// The standardisation saved with a resumed run (the data must give it again).
    saved_standardization: Option<Standardization>,
    /// The target standardisation saved with a resumed regression run (the data must give it again).
    saved_target_standardization: Option<Standardization>,
    /// The observation precision of a regression model: a new run's `--tau T`, or the resumed file's.
    tau: Option<f64>,
    /// Whether the output file existed before the run, and what it held if it is the resumed run.
    out_before: Option<String>,
}

pub fn run(args: TrainArgs) -> Result<ExitCode> {
    let options = Options::new(args.options.clone(), args.recipe.as_deref())?;
    let mut run = match &args.resume {
        Some(path) => resumed_run(&options, path)?,
        None => new_run(&options, args.recipe.as_deref())?,
    };
    let log = options.values.log.as_deref();
    let plot = options.values.plot.as_deref();
    let signals = Signals::install()?;
    let load = data::LoadOptions {
        val: run.state.val,
        seed: run.net.seed(),
        standardize: run.state.standardize,
        standardize_targets: run.state.standardize_targets,
    };
    let splits = data::load(&run.source, load).map_err(|e| match e {
        Error::ValidationSplit { val, origin, examples } => {
            let (what, remedy) = match &args.resume {
                Some(path) => (format!("{}: its training state's val = {val}", path.display()), "the file is damaged"),
                None => (format!("{} {val}", options.name("val")), "give a smaller one"),
            };
            Error::Config(format!("{what} leaves no training examples ({} has {examples}): {remedy}", origin.display()))
        }
        e => e,
    })?;
    let regression = regression_of(&splits, run.tau);
    if args.resume.is_some()
        && (splits.standardization != run.saved_standardization
            || splits.target_standardization != run.saved_target_standardization)
    {
        return Err(Error::Config(format!(
            "the data in {} no longer gives the standardisation the run was trained with: it has changed",
            run.source.path().display()
        )));
    }
    let header = match splits.csv_header {
        Some(true) => " (its first line a header)",
        Some(false) => " (no header: its first line is an example)",
        None => "",
    };
    eprintln!(
        "data {}{header}: {} training, {} validation, {} test examples",
        run.source.path().display(),
        splits.train.len(),
        splits.val.as_ref().map_or(0, |v| v.len()),
        splits.test.as_ref().map_or(0, |t| t.len())
    );
    eprintln!("{}", run.net);
    let c = &run.opt.config;
    eprintln!(
        "optimizer {:?}, lr {}, momentum {}, batch {}, epochs {}/{}, seed {}",
        c.method,
        c.lr,
        c.momentum,
        run.state.batch,
        run.state.epochs_done,
        run.epochs,
        run.net.seed()
    );
    let model = ModelOutput {
        path: run.out.clone(),
        loss: run.loss,
        standardization: splits.standardization.clone(),
        regression,
    };
    let checkpoint_every = options.values.checkpoint_every;
    let mut observer = CliObserver::new(model, log, plot, checkpoint_every, run.state.batch, &signals)?;
    let step_at_start = run.state.step;
    let started = Instant::now();
    let stop = train::train(&mut run.net, &mut run.opt, run.loss, &splits, run.epochs, &mut run.state, &mut observer)?;
    let wall_s = started.elapsed().as_secs_f64();
    observer.finish();
    if run.state.choose_tau && matches!(stop, Stop::Finished | Stop::EarlyStopped) {
        let val = splits.val.as_ref().ok_or_else(|| Error::Config("--tau auto needs --val N".into()))?;
        let regression = observer.model.regression.as_mut().ok_or_else(|| {
            Error::Config("--tau auto applies to regression: give the target columns with --target-col".into())
        })?;
        let outputs = Outputs::of(&run.net, run.loss, regression.target_standardization.as_ref())?;
        let tau = choose_tau(&mut run.net, val, outputs, TAU_SAMPLES)?;
        eprintln!("τ chosen on the validation set ({TAU_SAMPLES} Monte-Carlo samples): {tau:.6}");
        regression.tau = Some(tau);
    }
    let status = conclude(&stop, &mut run, &mut observer, step_at_start, &signals, &options)?;
    if status == 0 {
        // The final model file supersedes any checkpoint that failed.
        observer.unwritten.retain(|u| u.what != "checkpoint");
    }
    report(args.json, &run, &stop, &observer, wall_s, splits.train.len());
    for u in &observer.unwritten {
        crate::print_error(&format!("the {} {} was not written completely: {}", u.what, u.path.display(), u.reason));
    }
    Ok(ExitCode::from(if status == 0 && !observer.unwritten.is_empty() { 1 } else { status }))
}

/// Monte-Carlo samples `--tau auto` scores each candidate τ with.
const TAU_SAMPLES: u32 = 100;

/// The regression targets of a run on `splits` (`None` for classification), with precision `tau`.
fn regression_of(splits: &data::Splits, tau: Option<f64>) -> Option<Regression> {
    matches!(splits.train.y, data::Targets::Values(_)).then(|| Regression {
        targets: splits.target_names.clone(),
        target_standardization: splits.target_standardization.clone(),
        tau,
    })
}

/// The inputs of a run, named by the flags that gave them (no output may be one of them).
fn inputs(source: &Source, recipe: Option<&Path>, keep_file: Option<&Path>) -> Vec<NamedPath> {
    let mut inputs: Vec<NamedPath> = match source {
        Source::Csv { train, test, .. } => std::iter::once(NamedPath::new("--data", train))
            .chain(test.iter().map(|t| NamedPath::new("--test-data", t)))
            .collect(),
        Source::Idx(_) => source.input_files().into_iter().map(|p| NamedPath::new("--data", p)).collect(),
    };
    inputs.extend(recipe.map(|r| NamedPath::new("--recipe", r)));
    inputs.extend(keep_file.map(|k| NamedPath::new("--keep-file", k)));
    inputs
}

/// The outputs of a run; `implied` names the model file when `--out` is not given.
fn outputs(options: &Options, out: &Path, implied: &str) -> Vec<NamedPath> {
    let v = &options.values;
    let mut outputs = vec![NamedPath::new(if v.out.is_some() { "--out" } else { implied }, out)];
    outputs.extend(v.log.as_ref().map(|l| NamedPath::new("--log", l)));
    outputs.extend(v.plot.as_ref().map(|p| NamedPath::new("--plot", p)));
    outputs
}

fn new_run(options: &Options, recipe: Option<&Path>) -> Result<Run> {
    options.check_new_run()?;
    let v = &options.values;
    let dir = data::discover(v.data.as_deref())?;
    // Read and named in messages as the user gave it; recorded with absolute paths for --resume.
    let source = Source::from_path(&dir, v.test_data.as_deref(), v.label_col.as_deref(), v.target_col.as_deref())?
        .with_header(v.header.unwrap_or_default())?;
    let out = v.out.clone().unwrap_or_else(|| PathBuf::from(defaults::OUT));
    check_outputs(&outputs(options, &out, "the model file"), &inputs(&source, recipe, v.keep_file.as_deref()))?;
    let mut state = options.train_state()?;
    let plans = dropnet::layer::plan(&options.stack()?)?;
    let change = format!("lower {} or make {} smaller", options.name("batch"), options.name("arch"));
    dropnet::memory::check_training(&plans, state.batch, &options.name("batch"), &change)?;
    let net = options.network()?;
    if !net.learned_keep().is_empty() {
        state.concrete = Some(options.concrete_prior()?);
    }
    let tau = options.tau()?;
    state.choose_tau = tau == Some(Tau::Auto);
    let opt = Optimizer::new(state.optimizer.clone())?;
    let epochs = v.epochs.unwrap_or(defaults::EPOCHS);
    state.target_epochs = Some(epochs);
    state.data = Some(source.absolute()?);
    let out_before = std::fs::metadata(&out).is_ok().then(|| "what it held before".to_string());
    Ok(Run {
        net,
        opt,
        state,
        loss: options.loss(),
        source,
        epochs,
        out,
        saved_standardization: None,
        saved_target_standardization: None,
        tau: match tau {
            Some(Tau::Given(t)) => Some(t),
            _ => None,
        },
        out_before,
    })
}

fn resumed_run(options: &Options, path: &Path) -> Result<Run> {
    options.check_resume()?;
    let v = &options.values;
    let Saved { net, loss, training, slots, standardization, regression, .. } = model_file::load(path)?;
    let file_error = |message: String| Error::File { path: path.to_path_buf(), message };
    let mut state =
        training.ok_or_else(|| file_error("no training state: it was not written by dropnet train".into()))?;
    if slots.is_empty() {
        return Err(file_error("no optimizer state: it cannot be resumed".into()));
    }
    let source = state.data.clone().ok_or_else(|| {
        file_error(
            "its training state does not record the data (written by an older dropnet): it cannot be resumed".into(),
        )
    })?;
    let epochs = v.epochs.or(state.target_epochs).ok_or_else(|| {
        Error::Config(format!(
            "{} does not record how many epochs to train: give --epochs N (the total)",
            path.display()
        ))
    })?;
    if epochs <= state.epochs_done {
        return Err(Error::Config(format!(
            "--epochs {epochs}: the run in {} has done {} epochs already; --epochs is the new total",
            path.display(),
            state.epochs_done
        )));
    }
    if let Some(p) = v.patience {
        if state.val == 0 {
            return Err(Error::Config(format!(
                "--patience needs a validation split, and the run in {} has none (it was started without --val)",
                path.display()
            )));
        }
        state.patience = Some(p);
    }
    state.target_epochs = Some(epochs);
    let change =
        format!("{} was trained with batch {}, more than the memory available holds", path.display(), state.batch);
    let batch_name = format!("{}: its training state's batch", path.display());
    dropnet::memory::check_training(net.plans(), state.batch, &batch_name, &change)?;
    let out = v.out.clone().unwrap_or_else(|| path.to_path_buf());
    // The resumed file may be written back (the one exception), but not by the log or the plot.
    let data_inputs = inputs(&source, None, None);
    check_outputs(&outputs(options, &out, "--resume"), &data_inputs)?;
    let side_outputs: Vec<NamedPath> = outputs(options, &out, "--resume").into_iter().skip(1).collect();
    check_outputs(&side_outputs, &[NamedPath::new("--resume", path)])?;
    let mut opt = Optimizer::new(state.optimizer.clone())?;
    opt.slots = slots;
    opt.t = state.step;
    let out_before = if same_file(&out, path) {
        Some(format!("the run as it was after epoch {} (step {})", state.epochs_done, state.step))
    } else {
        std::fs::metadata(&out).is_ok().then(|| "what it held before".to_string())
    };
    Ok(Run {
        net,
        opt,
        state,
        loss,
        source,
        epochs,
        out,
        saved_standardization: standardization,
        saved_target_standardization: regression.as_ref().and_then(|r| r.target_standardization.clone()),
        tau: regression.and_then(|r| r.tau),
        out_before,
    })
}

/// Save what the stop calls for and say what happened; the exit status (0, 1, or 128 + the
/// signal for an interrupted run).
fn conclude(
    stop: &Stop,
    run: &mut Run,
    observer: &mut CliObserver<'_>,
    step_at_start: u64,
    signals: &Signals,
    options: &Options,
) -> Result<u8> {
    match stop {
        Stop::Finished | Stop::EarlyStopped => {
            observer.written = Some(observer.model.save(&run.net, &run.opt, &run.state)?);
            Ok(0)
        }
        Stop::Interrupted => {
            let signal = signals.received().unwrap_or(signal_hook::consts::SIGINT);
            let code = 128 + signal as u8;
            let name = signals::name(signal);
            if run.state.step == step_at_start {
                eprintln!("{name}: stopped before the first step; nothing was written");
                return Ok(code);
            }
            if let Some(reason) = first_non_finite(&run.net, &run.opt) {
                let stop = Divergence { epoch: run.state.epochs_done + 1, step: run.state.step, reason };
                crate::print_error(&diverged_message(&stop, run, observer));
                return Ok(1);
            }
            observer.written = Some(observer.model.save(&run.net, &run.opt, &run.state)?);
            let at = match &run.state.partial_epoch {
                Some(p) => format!("in epoch {}, after step {} of it", run.state.epochs_done + 1, p.steps_done),
                None => format!("after epoch {}", run.state.epochs_done),
            };
            let v = &options.values;
            let mut again = format!("dropnet train --resume {}", run.out.display());
            for (flag, value) in [("--log", &v.log), ("--plot", &v.plot)] {
                if let Some(path) = value {
                    again.push_str(&format!(" {flag} {}", path.display()));
                }
            }
            eprintln!("{name}: stopped {at}; the checkpoint is in {}. Continue with: {again}", run.out.display());
            Ok(code)
        }
        Stop::Diverged(d) => {
            crate::print_error(&diverged_message(d, run, observer));
            Ok(1)
        }
    }
}

/// What diverged, and truthfully what the output file now holds.
fn diverged_message(d: &Divergence, run: &Run, observer: &CliObserver<'_>) -> String {
    let out = run.out.display();
    let on_disk = match (observer.written, &run.out_before) {
        (Some(Written { epochs_done, step }), _) => {
            format!("{out} keeps the last good weights: the checkpoint after epoch {epochs_done} (step {step})")
        }
        (None, Some(before)) => format!("{out} was not changed: it holds {before}"),
        (None, None) => "nothing was written".to_string(),
    };
    format!("training diverged in epoch {}, at step {}: {}; {on_disk}", d.epoch, d.step, d.reason)
}

/// The closing line (or JSON object) of a run.
fn report(json: bool, run: &Run, stop: &Stop, observer: &CliObserver<'_>, wall_s: f64, train_len: usize) {
    let state = &run.state;
    let last = state.history.last();
    let timed: Vec<_> = state.history.iter().filter(|r| r.epoch_s > 0.0).collect();
    let train_time: f64 = timed.iter().map(|r| r.epoch_s).sum();
    let stopped = match stop {
        Stop::Finished => "finished",
        Stop::EarlyStopped => "early",
        Stop::Interrupted => "interrupted",
        Stop::Diverged(_) => "diverged",
    };
    let written = observer.written.is_some();
    let rmse = |r: Option<&PerTarget>| r.map(|r| PerTarget::json(&r.0));
    if json {
        let mut summary = serde_json::json!({
            "test_error": last.and_then(|r| r.test_error),
            "val_error": last.and_then(|r| r.val_error),
            "train_loss": last.map(|r| r.train_loss),
            "epochs": state.epochs_done,
            "stopped": stopped,
            "wall_s": wall_s,
            "samples_per_s": if train_time > 0.0 { (train_len * timed.len()) as f64 / train_time } else { 0.0 },
            "seed": run.net.seed(),
            "out": run.out.display().to_string(),
            "written": written,
            "unwritten": observer.unwritten.iter().map(|u| u.path.display().to_string()).collect::<Vec<_>>(),
        });
        if let Some(regression) = &observer.model.regression {
            summary["test_rmse"] = serde_json::json!(rmse(last.and_then(|r| r.test_rmse.as_ref())));
            summary["val_rmse"] = serde_json::json!(rmse(last.and_then(|r| r.val_rmse.as_ref())));
            summary["tau"] = serde_json::json!(regression.tau);
            for key in ["test_error", "val_error"] {
                summary.as_object_mut().expect("an object").remove(key);
            }
        }
        println!("{summary}");
        return;
    }
    if !matches!(stop, Stop::Finished | Stop::EarlyStopped) {
        return;
    }
    let how = if *stop == Stop::EarlyStopped { " (stopped early)" } else { "" };
    if let Some(test_rmse) = last.and_then(|r| r.test_rmse.as_ref()) {
        let figures: Vec<String> = test_rmse.0.iter().map(|v| format!("{v:.4}")).collect();
        println!(
            "test RMSE {} after {} epochs{how} ({wall_s:.1} s); model written to {}",
            figures.join(", "),
            state.epochs_done,
            run.out.display()
        );
        return;
    }
    match last.and_then(|r| r.test_error) {
        Some(err) => println!(
            "test error {:.2}% after {} epochs{how} ({wall_s:.1} s); model written to {}",
            100.0 * err,
            state.epochs_done,
            run.out.display()
        ),
        None => {
            println!(
                "trained {} epochs{how} ({wall_s:.1} s); model written to {}",
                state.epochs_done,
                run.out.display()
            )
        }
    }
}
