//! The `dropnet` command line: train, eval, predict, gradcheck, info.

use clap::{Args, Parser, Subcommand};
use dropnet::data::{self, Source, Standardization};
use dropnet::error::Error;
use dropnet::eval::{evaluate, predict, Prediction};
use dropnet::gradcheck::{self, CaseResult, TOLERANCE};
use dropnet::io::{self, Saved};
use dropnet::optim::Optimizer;
use dropnet::recipe::{read_keep_file, TrainOptions, DEFAULT_SEED};
use dropnet::train::{self, EpochReport, Observer, Stop, TrainState};
use dropnet::{Activation, Architecture, Init, Keep, Loss, Network, Result, Scaling};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "dropnet",
    version,
    about = "Neural networks with dropout on the CPU: exact gradients, reproducible masks.",
    after_help = "Examples:\n  dropnet train --data ../shared/data/mnist --epochs 5\n  dropnet train --recipe recipes/mnist-quick.toml --out mnist.safetensors\n  dropnet eval --model mnist.safetensors --mc 50\n  dropnet predict --model mnist.safetensors --mc 50 --json --limit 10\n  dropnet gradcheck --json"
)]
struct Cli {
    /// Worker threads for matrix products and parallel passes [default: all cores]
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a network on a data set and write the model file.
    #[command(
        after_help = "Examples:\n  dropnet train --data ../shared/data/mnist --arch 784-1024-1024-10 --keep 0.8,0.5,0.5 --epochs 10\n  dropnet train --recipe recipes/mnist-quick.toml --epochs 3 --json\n  dropnet train --resume model.safetensors --epochs 20"
    )]
    Train(Box<TrainArgs>),
    /// Error and loss of a model on a test set (with --mc T, also the Monte-Carlo dropout error).
    #[command(
        after_help = "Example:\n  dropnet eval --model model.safetensors --data ../shared/data/mnist --mc 50 --json"
    )]
    Eval(EvalArgs),
    /// Class predictions per example; with --mc T, Monte-Carlo dropout mean, spread, entropy and BALD.
    #[command(after_help = "Example:\n  dropnet predict --model model.safetensors --mc 50 --limit 5 --json")]
    Predict(PredictArgs),
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
    /// Run the benchmark workloads of shared/bench/SPEC.md: W1 training epoch on MNIST, W2 dropout
    /// kernel over 2^25 floats against a plain copy, W3 GEMM throughput.
    #[command(
        after_help = "Examples:\n  dropnet bench --workload all --threads 2 --data ../shared/data/mnist --json\n  dropnet bench --workload w2 --threads 1"
    )]
    Bench {
        /// w1, w2, w3 or all
        #[arg(long, default_value = "all")]
        workload: String,
        /// The MNIST folder for W1 [default: as for train; anything but MNIST is refused]
        #[arg(long)]
        data: Option<PathBuf>,
        /// One JSON object per workload, each on its own line
        #[arg(long)]
        json: bool,
    },
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

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    options: TrainOptions,
    /// TOML recipe whose keys are these options' long names; flags override it
    #[arg(long)]
    recipe: Option<PathBuf>,
    /// Continue the run saved in this model file (its architecture, optimizer and seed)
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Print one JSON object at the end (progress goes to stderr)
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DataArgs {
    /// Data: a folder of IDX files (its t10k set is used) or a CSV file [default: as for train]
    #[arg(long)]
    data: Option<PathBuf>,
    /// Test CSV file (with a CSV --data)
    #[arg(long)]
    test_data: Option<PathBuf>,
    /// Label column of CSV data
    #[arg(long, default_value = "0")]
    label_col: String,
}

#[derive(Args)]
struct EvalArgs {
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Also report the error of the mean of T Monte-Carlo dropout samples
    #[arg(long)]
    mc: Option<u32>,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct PredictArgs {
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Monte-Carlo dropout samples per example (none: one evaluation pass)
    #[arg(long)]
    mc: Option<u32>,
    /// Predict only the first N examples
    #[arg(long)]
    limit: Option<usize>,
    /// One JSON object per example, then a summary object
    #[arg(long)]
    json: bool,
}

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

fn main() -> ExitCode {
    #[cfg(unix)]
    end_quietly_on_broken_pipe();
    let cli = Cli::parse();
    // The command runs on one of the pool's own threads: each parallel region is then a fork on a
    // thread that takes part in it, rather than a job handed from outside to sleeping workers
    // (which cost W1 a few percent in wake-ups, perf).
    let pool = match rayon::ThreadPoolBuilder::new().num_threads(cli.threads.unwrap_or(0)).build() {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("dropnet: error: cannot start {} threads: {e}", cli.threads.unwrap_or(0));
            return ExitCode::FAILURE;
        }
    };
    let outcome = pool.install(|| match cli.command {
        Command::Train(args) => run_train(*args),
        Command::Eval(args) => run_eval(args),
        Command::Predict(args) => run_predict(args),
        Command::Gradcheck { json, seed } => run_gradcheck(json, seed),
        Command::Info { model, json } => run_info(&model, json),
        Command::Bench { workload, data, json } => run_bench(&workload, data.as_deref(), json),
    });
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dropnet: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A new network from the options: architecture, keep probabilities, init.
fn new_network(options: &TrainOptions, seed: u64) -> Result<Network<f32>> {
    let sizes = options.sizes()?;
    let layers = sizes.len() - 1;
    let keep: Vec<Vec<f64>> = match (&options.keep_file, &options.keep) {
        (Some(file), _) => read_keep_file(file, &sizes)?,
        (None, Some(keep)) if keep.len() == layers => keep.iter().zip(&sizes).map(|(&p, &n)| vec![p; n]).collect(),
        (None, Some(keep)) => {
            return Err(Error::Config(format!("--keep has {} values for {layers} dense layers", keep.len())));
        }
        (None, None) => (0..layers).map(|l| vec![if l == 0 { 0.8 } else { 0.5 }; sizes[l]]).collect(),
    };
    let keep = keep.into_iter().enumerate().map(|(l, values)| Keep::of_layer(values, l)).collect::<Result<Vec<_>>>()?;
    let hidden = options.activation.unwrap_or(Activation::Relu);
    let mut activations = vec![hidden; layers];
    activations[layers - 1] = Activation::Identity;
    let init = match options.init.as_deref() {
        None => Init::for_activation(hidden),
        Some("he") => Init::He,
        Some("glorot") => Init::Glorot,
        Some(sigma) => match sigma.parse::<f64>() {
            Ok(s) if s > 0.0 && s.is_finite() => Init::Normal(s),
            _ => return Err(Error::Config(format!("--init '{sigma}': expected he, glorot or a positive σ"))),
        },
    };
    let arch = Architecture { sizes, activations, keep, scaling: options.scaling.unwrap_or(Scaling::Inverted), init };
    Network::new(&arch, seed)
}

fn run_train(args: TrainArgs) -> Result<ExitCode> {
    let options = match &args.recipe {
        Some(recipe) => TrainOptions::from_recipe(recipe)?.overlay(args.options),
        None => args.options,
    };
    let out = options.out.clone().unwrap_or_else(|| PathBuf::from("model.safetensors"));
    let (mut net, mut opt, mut state, loss) = match &args.resume {
        Some(path) => resume(path)?,
        None => {
            let seed = options.seed.unwrap_or(DEFAULT_SEED);
            let net = new_network(&options, seed)?;
            let opt = Optimizer::new(options.optim_config()?)?;
            let state = TrainState::new(
                options.batch.unwrap_or(128),
                options.val.unwrap_or(0),
                options.standardize.unwrap_or(false),
                options.patience,
                opt.config.clone(),
            );
            (net, opt, state, options.loss.unwrap_or_default())
        }
    };
    let epochs = options.epochs.unwrap_or(10);
    let data_dir = data::discover(options.data.as_deref())?;
    let source =
        Source::from_path(&data_dir, options.test_data.as_deref(), options.label_col.as_deref().unwrap_or("0"));
    let splits = data::load(&source, state.val, net.seed(), state.standardize)?;
    eprintln!(
        "data {}: {} training, {} validation, {} test examples",
        data_dir.display(),
        splits.train.len(),
        splits.val.as_ref().map_or(0, |v| v.len()),
        splits.test.as_ref().map_or(0, |t| t.len())
    );
    eprintln!("{net}");
    eprintln!(
        "optimizer {:?}, lr {}, momentum {}, batch {}, epochs {}/{epochs}, seed {}",
        opt.config.method,
        opt.config.lr,
        opt.config.momentum,
        state.batch,
        state.epochs_done,
        net.seed()
    );
    let mut extra = vec![];
    if let Some(s) = &splits.standardization {
        extra.push(("standardization", serde_json::to_string(s).expect("serialisable")));
    }
    let mut observer = CliObserver::new(&options, &out, loss, extra.clone(), state.batch)?;
    let started = Instant::now();
    let stop = train::train(&mut net, &mut opt, loss, &splits, epochs, &mut state, &mut observer)?;
    let wall_s = started.elapsed().as_secs_f64();
    observer.finish();
    extra.push(("training", serde_json::to_string(&state).expect("serialisable")));
    io::save(&out, &net, loss, &extra, &opt.slots)?;
    let last = state.history.last();
    let trained_samples = splits.train.len() as f64 * state.history.iter().filter(|r| r.epoch_s > 0.0).count() as f64;
    let train_time: f64 = state.history.iter().map(|r| r.epoch_s).sum();
    let summary = serde_json::json!({
        "test_error": last.and_then(|r| r.test_error),
        "val_error": last.and_then(|r| r.val_error),
        "train_loss": last.map(|r| r.train_loss),
        "epochs": state.epochs_done,
        "stopped": if stop == Stop::EarlyStopped { "early" } else { "finished" },
        "wall_s": wall_s,
        "samples_per_s": if train_time > 0.0 { trained_samples / train_time } else { 0.0 },
        "seed": net.seed(),
        "out": out.display().to_string(),
    });
    if args.json {
        println!("{summary}");
    } else {
        if let Some(err) = last.and_then(|r| r.test_error) {
            println!(
                "test error {:.2}% after {} epochs ({wall_s:.1} s); model written to {}",
                100.0 * err,
                state.epochs_done,
                out.display()
            );
        } else {
            println!("trained {} epochs ({wall_s:.1} s); model written to {}", state.epochs_done, out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Network, optimizer, state and loss of a saved run.
fn resume(path: &Path) -> Result<(Network<f32>, Optimizer, TrainState, Loss)> {
    let Saved { net, loss, training, slots, .. } = io::load(path)?;
    let training = training.ok_or_else(|| Error::File {
        path: path.into(),
        message: "no training state: not written by dropnet train".into(),
    })?;
    let state: TrainState = serde_json::from_str(&training)
        .map_err(|e| Error::File { path: path.into(), message: format!("training state is invalid ({e})") })?;
    let mut opt = Optimizer::new(state.optimizer.clone())?;
    opt.slots = slots;
    opt.t = state.step;
    Ok((net, opt, state, loss))
}

/// Progress on the terminal (a bar) or as plain lines, a JSON-lines log, an SVG plot, checkpoints.
struct CliObserver {
    bar: Option<indicatif::ProgressBar>,
    log: Option<std::fs::File>,
    plot: Option<PathBuf>,
    checkpoint: Option<usize>,
    out: PathBuf,
    loss: Loss,
    extra: Vec<(&'static str, String)>,
    batch: usize,
    batch_started: Instant,
}

impl CliObserver {
    fn new(
        options: &TrainOptions,
        out: &Path,
        loss: Loss,
        extra: Vec<(&'static str, String)>,
        batch: usize,
    ) -> Result<Self> {
        let log = match &options.log {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| Error::Io { path: path.clone(), source: e })?,
            ),
            None => None,
        };
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} steps {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar
        });
        Ok(Self {
            bar,
            log,
            plot: options.plot.clone(),
            checkpoint: options.checkpoint_every.filter(|&k| k > 0),
            out: out.to_path_buf(),
            loss,
            extra,
            batch,
            batch_started: Instant::now(),
        })
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Observer for CliObserver {
    fn step(&mut self, epoch: usize, done: usize, total: usize, loss: f64) {
        if let Some(bar) = &self.bar {
            if done == 1 {
                bar.reset();
                bar.set_length(total as u64);
                bar.set_prefix(epoch.to_string());
                self.batch_started = Instant::now();
            }
            bar.set_position(done as u64);
            if done.is_multiple_of(10) || done == total {
                let rate = (done * self.batch) as f64 / self.batch_started.elapsed().as_secs_f64();
                bar.set_message(format!("loss {loss:.4}  {rate:.0} samples/s"));
            }
        }
    }

    fn epoch(&mut self, r: &EpochReport, net: &Network<f32>, opt: &Optimizer, state: &TrainState) -> Result<()> {
        let pct = |e: Option<f64>| e.map_or("-".to_string(), |e| format!("{:.2}%", 100.0 * e));
        let line = format!(
            "epoch {:>3}  loss {:.4}  train err {:.2}%  val err {}  test err {}  {:.1} s  {:.0} samples/s",
            r.epoch,
            r.train_loss,
            100.0 * r.train_error,
            pct(r.val_error),
            pct(r.test_error),
            r.epoch_s,
            r.samples_per_s
        );
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
        if let Some(log) = &mut self.log {
            writeln!(log, "{}", serde_json::to_string(r).expect("serialisable"))
                .map_err(|e| Error::Config(format!("cannot write the log: {e}")))?;
        }
        if let Some(plot) = &self.plot {
            plot_curves(plot, &state.history)?;
        }
        if let Some(k) = self.checkpoint {
            if state.epochs_done.is_multiple_of(k) {
                let mut extra = self.extra.clone();
                extra.push(("training", serde_json::to_string(state).expect("serialisable")));
                io::save(&self.out, net, self.loss, &extra, &opt.slots)?;
            }
        }
        Ok(())
    }
}

/// Training curves (error per epoch) as an SVG file.
fn plot_curves(path: &Path, history: &[EpochReport]) -> Result<()> {
    use plotters::prelude::*;
    let plot_error = |e: String| Error::Config(format!("cannot plot to {}: {e}", path.display()));
    type Series = (&'static str, RGBColor, Vec<(f64, f64)>);
    let series: [Series; 3] = [
        ("train (with dropout)", BLUE, history.iter().map(|r| (r.epoch as f64, 100.0 * r.train_error)).collect()),
        (
            "validation",
            GREEN,
            history.iter().filter_map(|r| r.val_error.map(|e| (r.epoch as f64, 100.0 * e))).collect(),
        ),
        ("test", RED, history.iter().filter_map(|r| r.test_error.map(|e| (r.epoch as f64, 100.0 * e))).collect()),
    ];
    let y_max = series.iter().flat_map(|s| s.2.iter().map(|p| p.1)).fold(1.0f64, f64::max) * 1.05;
    let x_max = history.len().max(2) as f64;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("dropnet training", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(1.0..x_max, 0.0..y_max)
        .map_err(|e| plot_error(e.to_string()))?;
    chart.configure_mesh().x_desc("epoch").y_desc("error (%)").draw().map_err(|e| plot_error(e.to_string()))?;
    for (name, color, points) in series {
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| plot_error(e.to_string()))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| plot_error(e.to_string()))?;
    root.present().map_err(|e| plot_error(e.to_string()))
}

/// The model, and the evaluation examples standardised as the model's training data was.
fn model_and_data(model: &Path, args: &DataArgs) -> Result<(Saved, data::Dataset)> {
    let saved = io::load(model)?;
    let dir = data::discover(args.data.as_deref())?;
    let mut set = data::load_eval(&Source::from_path(&dir, args.test_data.as_deref(), &args.label_col))?;
    if let Some(json) = saved.metadata.get("standardization") {
        let s: Standardization = serde_json::from_str(json).map_err(|e| Error::File {
            path: model.into(),
            message: format!("standardization metadata is invalid ({e})"),
        })?;
        s.apply(&mut set)?;
    }
    if set.features() != saved.net.inputs() {
        return Err(Error::Config(format!(
            "{} has {} features, the model {} takes {}",
            dir.display(),
            set.features(),
            model.display(),
            saved.net.inputs()
        )));
    }
    Ok((saved, set))
}

fn run_eval(args: EvalArgs) -> Result<ExitCode> {
    let (mut saved, set) = model_and_data(&args.model, &args.data)?;
    let (error, loss) = evaluate(&mut saved.net, &set, saved.loss)?;
    let mc_error = match args.mc {
        Some(t) => Some(misclassified(&predict(&mut saved.net, &set.x, saved.loss, Some(t))?, &set.labels)),
        None => None,
    };
    if args.json {
        let mut report = serde_json::json!({ "error": error, "loss": loss, "n": set.len() });
        if let (Some(t), Some(e)) = (args.mc, mc_error) {
            report["mc_error"] = serde_json::json!(e);
            report["mc_samples"] = serde_json::json!(t);
        }
        println!("{report}");
    } else {
        println!("error {:.2}%  loss {loss:.4}  on {} examples", 100.0 * error, set.len());
        if let (Some(t), Some(e)) = (args.mc, mc_error) {
            println!("Monte-Carlo dropout ({t} samples): error {:.2}%", 100.0 * e);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn misclassified(predictions: &[Prediction], labels: &[usize]) -> f64 {
    let wrong = predictions.iter().zip(labels).filter(|(p, &y)| p.class != y).count();
    wrong as f64 / labels.len().max(1) as f64
}

fn run_predict(args: PredictArgs) -> Result<ExitCode> {
    let (mut saved, mut set) = model_and_data(&args.model, &args.data)?;
    if let Some(n) = args.limit {
        set = set.subset(&(0..n.min(set.len())).collect::<Vec<_>>());
    }
    let started = Instant::now();
    let predictions = predict(&mut saved.net, &set.x, saved.loss, args.mc)?;
    let seconds = started.elapsed().as_secs_f64();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let write_error = |e: std::io::Error| Error::Config(format!("cannot write to stdout: {e}"));
    for (i, (p, &label)) in predictions.iter().zip(&set.labels).enumerate() {
        if args.json {
            let mut line = serde_json::to_value(p).expect("serialisable");
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
    let summary = serde_json::json!({
        "summary": true,
        "examples": predictions.len(),
        "mc_samples": args.mc,
        "error": misclassified(&predictions, &set.labels),
        "seconds": seconds,
        "examples_per_s": predictions.len() as f64 / seconds.max(1e-9),
    });
    if args.json {
        writeln!(out, "{summary}").map_err(write_error)?;
    } else {
        writeln!(
            out,
            "{} examples, error {:.2}%, {:.0} examples/s",
            predictions.len(),
            100.0 * misclassified(&predictions, &set.labels),
            predictions.len() as f64 / seconds.max(1e-9)
        )
        .map_err(write_error)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn run_info(model: &Path, json: bool) -> Result<ExitCode> {
    let saved = io::load(model)?;
    let state: Option<TrainState> = saved.training.as_deref().and_then(|t| serde_json::from_str(t).ok());
    if json {
        let layers: Vec<_> = saved
            .net
            .layers()
            .iter()
            .map(|l| {
                serde_json::json!({
                    "inputs": l.inputs(), "outputs": l.outputs(), "activation": l.activation.name(),
                    "keep": l.dropout.keep().values(),
                })
            })
            .collect();
        let report = serde_json::json!({
            "layers": layers,
            "params": saved.net.param_count(),
            "scaling": saved.net.layers()[0].dropout.scaling().to_string(),
            "seed": saved.net.seed(),
            "loss": saved.loss.name(),
            "epochs_done": state.as_ref().map(|s| s.epochs_done),
            "history": state.as_ref().map(|s| &s.history),
        });
        println!("{report}");
    } else {
        println!("{}", saved.net);
        println!("loss: {}", saved.loss);
        if let Some(s) = state {
            println!("trained {} epochs ({} steps, batch {})", s.epochs_done, s.step, s.batch);
            if let Some(r) = s.history.last() {
                let pct = |e: Option<f64>| e.map_or("-".to_string(), |e| format!("{:.2}%", 100.0 * e));
                println!("last epoch: test error {}, validation error {}", pct(r.test_error), pct(r.val_error));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_bench(workload: &str, data: Option<&Path>, json: bool) -> Result<ExitCode> {
    let (w1, w2, w3) = match workload {
        "w1" => (true, false, false),
        "w2" => (false, true, false),
        "w3" => (false, false, true),
        "all" => (true, true, true),
        other => return Err(Error::Config(format!("--workload '{other}': expected w1, w2, w3 or all"))),
    };
    let threads = rayon::current_num_threads();
    if w1 {
        let dir = data::discover(data)?;
        let r = dropnet::bench::w1(&dir)?;
        if json {
            println!("{}", serde_json::to_string(&r).expect("serialisable"));
        } else {
            println!(
                "W1 ({threads} threads): {:.0} samples/s ({:.2} s epoch), test error {:.4}; GEMM limit {:.0} samples/s, {:.2} of it; masks {} bytes/step",
                r.samples_per_s, r.epoch_s, r.test_error, r.limit_samples_per_s, r.fraction_of_limit, r.mask_bytes_per_step
            );
            let t = &r.step_ms;
            println!("   steps: min {:.2} ms, median {:.2}, p90 {:.2}, max {:.2}", t.min, t.median, t.p90, t.max);
        }
    }
    if w2 {
        let r = dropnet::bench::w2()?;
        if json {
            println!("{}", serde_json::to_string(&r).expect("serialisable"));
        } else {
            println!(
                "W2 ({threads} threads): forward {:.2} GB/s, backward {:.2} GB/s, copy {:.2} GB/s",
                r.fwd_gbps, r.bwd_gbps, r.copy_gbps
            );
        }
    }
    if w3 {
        let r = dropnet::bench::w3()?;
        if json {
            println!("{}", serde_json::to_string(&r).expect("serialisable"));
        } else {
            for (shape, g) in &r.gflops {
                println!("W3 ({threads} threads): {shape:>16}  {g:.1} GFLOP/s");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_gradcheck(json: bool, seed: u64) -> Result<ExitCode> {
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
