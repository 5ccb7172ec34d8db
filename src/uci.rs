//! The UCI regression protocol of Hernández-Lobato & Adams (2015) as Gal & Ghahramani (2016) ran
//! it for MC dropout, on any data set in their folder layout, through the library's own training
//! and prediction (`train::train`, `regression::predictive`).
//!
//! Per split: for every (keep, τ) of the grid, train on the first 80% of the split's training
//! indices and score the Monte-Carlo log-likelihood on the last 20%; retrain the best pair on the
//! whole training part and test it. The network is `D,keepK,denseH,relu,keepK,dense1` with
//! Glorot-uniform initialisation and Adam as the published runs had them (Keras 2.2's: lr 1e-3,
//! β 0.9/0.999, ε 1e-7 in the keras form), batch 128, mean squared error on the standardised
//! target and weight decay λ = 2·reg, `reg = l²·keep / (2·N·τ)` (math.md R6). Every training is
//! independent: they run on `threads` long-lived workers, each training serially.

use crate::data::{self, Dataset, LoadOptions};
use crate::error::{file_error, Error, Result};
use crate::files::read_text_bounded;
use crate::limits::{MAX_LAYER_UNITS, MAX_TENSOR_ELEMENTS};
use crate::loss::Loss;
use crate::network::{Architecture, Init, Network};
use crate::optim::{AdamForm, Method, OptimConfig, Optimizer};
use crate::regression::{self, Outputs};
use crate::stack::Stack;
use crate::tensor::Matrix;
use crate::train::{self, EpochReport, Observer, Stop, TrainState};
use crate::Scaling;
use serde::Serialize;
use std::path::Path;

/// The largest `data.txt` read (the UCI sets are kilobytes; this admits a million rows of a few
/// dozen columns).
const MAX_DATA_BYTES: u64 = 256 << 20;
/// The largest index or setting file read.
const MAX_LIST_BYTES: u64 = 64 << 20;

/// A data set in the layout of the UCI folders: the examples, the splits and the grid.
#[derive(Clone, Debug)]
pub struct UciData {
    pub name: String,
    /// The features and the target (one column) of every example.
    pub examples: Dataset,
    /// (training indices, test indices) per split.
    pub splits: Vec<(Vec<usize>, Vec<usize>)>,
    /// Keep probabilities of the grid: 1 − each of `dropout_rates.txt`.
    pub keep: Vec<f64>,
    /// τ values of the grid (`tau_values.txt`).
    pub taus: Vec<f64>,
    /// Hidden units (`n_hidden.txt`).
    pub hidden: usize,
}

/// The protocol's batch size.
const BATCH: usize = 128;

/// How the protocol is run.
#[derive(Clone, Debug)]
pub struct Protocol {
    /// Splits to run (the first N); `None`: all of them.
    pub splits: Option<usize>,
    pub epochs: usize,
    /// Monte-Carlo samples of each score.
    pub mc: u32,
    /// The prior length-scale l of the weight decay.
    pub lengthscale: f64,
    pub seed: u64,
}

/// The numbers of a whitespace-separated file: runs of spaces, tabs and line breaks separate them,
/// so leading blanks and blank lines are nothing. Returns the values of each non-blank line.
fn read_lines(path: &Path, limit: u64) -> Result<Vec<Vec<f64>>> {
    let text = read_text_bounded(path, limit)?;
    let mut lines = Vec::new();
    let mut values = 0usize;
    for (n, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        values += fields.len();
        if values > MAX_TENSOR_ELEMENTS {
            return Err(file_error(path, format!("more than {MAX_TENSOR_ELEMENTS} values")));
        }
        let row = fields
            .iter()
            .map(|f| match f.parse::<f64>() {
                Ok(v) if v.is_finite() && (v as f32).is_finite() => Ok(v),
                _ => Err(file_error(path, format!("line {}: '{}' is not a finite number", n + 1, f.escape_debug()))),
            })
            .collect::<Result<Vec<f64>>>()?;
        lines.push(row);
    }
    Ok(lines)
}

/// Every number of a file, in order.
fn read_list(path: &Path) -> Result<Vec<f64>> {
    Ok(read_lines(path, MAX_LIST_BYTES)?.into_iter().flatten().collect())
}

/// The numbers of a file as indices below `bound`.
fn read_indices(path: &Path, bound: usize) -> Result<Vec<usize>> {
    read_list(path)?
        .into_iter()
        .map(|v| {
            if v < 0.0 || v.fract() != 0.0 || v >= bound as f64 {
                Err(file_error(path, format!("{v} is not an index below {bound}")))
            } else {
                Ok(v as usize)
            }
        })
        .collect()
}

/// The one positive integer of a setting file.
fn read_count(path: &Path, max: usize) -> Result<usize> {
    match read_list(path)?.as_slice() {
        [v] if *v >= 1.0 && v.fract() == 0.0 && *v <= max as f64 => Ok(*v as usize),
        other => Err(file_error(path, format!("expected one whole number in 1..={max}, found {other:?}"))),
    }
}

/// A split's test rows are not training rows, and neither file names a row twice: a test score
/// of rows the network was trained on is no test.
fn check_disjoint(train: &Path, test: &Path, train_idx: &[usize], test_idx: &[usize], rows: usize) -> Result<()> {
    let mut seen = vec![0u8; rows];
    for (path, indices, mark) in [(train, train_idx, 1u8), (test, test_idx, 2u8)] {
        for &i in indices {
            match seen[i] {
                0 => seen[i] = mark,
                m if m == mark => return Err(file_error(path, format!("row {i} is listed twice"))),
                _ => {
                    return Err(file_error(
                        path,
                        format!(
                            "row {i} is also a training row (in {}): a split's test rows must be new",
                            train.display()
                        ),
                    ))
                }
            }
        }
    }
    Ok(())
}

impl UciData {
    /// Read the folder `dir` (see ../README of the layout: `data.txt`, `index_features.txt`,
    /// `index_target.txt`, `index_train_S.txt`, `index_test_S.txt`, `n_splits.txt`, `n_hidden.txt`,
    /// `dropout_rates.txt`, `tau_values.txt`).
    pub fn read(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(file_error(dir, "not a folder (expected one in the UCI layout, with data.txt)"));
        }
        let file = |name: &str| dir.join(name);
        let rows = read_lines(&file("data.txt"), MAX_DATA_BYTES)?;
        let columns = rows.first().map_or(0, Vec::len);
        if rows.is_empty() {
            return Err(file_error(&file("data.txt"), "no examples"));
        }
        if let Some(i) = rows.iter().position(|r| r.len() != columns) {
            return Err(file_error(
                &file("data.txt"),
                format!("example {i} has {} numbers, the first {columns}", rows[i].len()),
            ));
        }
        let features = read_indices(&file("index_features.txt"), columns)?;
        let target = read_indices(&file("index_target.txt"), columns)?;
        let [target] = target.as_slice() else {
            return Err(file_error(&file("index_target.txt"), "expected exactly one target column"));
        };
        if features.is_empty() || features.contains(target) {
            return Err(file_error(&file("index_features.txt"), "no features, or the target among them"));
        }
        let n = rows.len();
        let x: Vec<f32> = rows.iter().flat_map(|r| features.iter().map(|&c| r[c] as f32)).collect();
        let y: Vec<f32> = rows.iter().map(|r| r[*target] as f32).collect();
        let splits = (0..read_count(&file("n_splits.txt"), 10_000)?)
            .map(|s| {
                let (train, test) = (file(&format!("index_train_{s}.txt")), file(&format!("index_test_{s}.txt")));
                let (train_idx, test_idx) = (read_indices(&train, n)?, read_indices(&test, n)?);
                if train_idx.len() < 5 || test_idx.is_empty() {
                    return Err(file_error(&train, "a split needs at least 5 training and 1 test example"));
                }
                check_disjoint(&train, &test, &train_idx, &test_idx, n)?;
                Ok((train_idx, test_idx))
            })
            .collect::<Result<Vec<_>>>()?;
        let rates = read_list(&file("dropout_rates.txt"))?;
        if rates.is_empty() || rates.iter().any(|r| !(0.0..1.0).contains(r)) {
            return Err(file_error(&file("dropout_rates.txt"), "expected dropout rates in [0, 1)"));
        }
        let taus = read_list(&file("tau_values.txt"))?;
        if taus.is_empty() || taus.iter().any(|t| *t <= 0.0) {
            return Err(file_error(&file("tau_values.txt"), "expected positive τ values"));
        }
        let examples = Dataset::regression(
            Matrix::from_vec(n, features.len(), x)?,
            Matrix::from_vec(n, 1, y)?,
            &file("data.txt"),
        )?;
        Ok(Self {
            name: dir.file_name().map_or("data".into(), |n| n.to_string_lossy().into_owned()),
            examples,
            splits,
            // 1 − rate, rounded to 12 digits so that 0.995 is written as 0.995
            keep: rates.iter().map(|r| ((1.0 - r) * 1e12).round() / 1e12).collect(),
            taus,
            hidden: read_count(&file("n_hidden.txt"), MAX_LAYER_UNITS)?,
        })
    }
}

/// Mean and standard error over the splits (the population deviation ÷ √splits, as the
/// published table).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Summary {
    pub mean: f64,
    pub stderr: f64,
}

impl Summary {
    pub fn of(values: &[f64]) -> Self {
        let n = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        Self { mean, stderr: (var / n).sqrt() }
    }
}

/// One split's outcome: the chosen grid point, its validation score, and the test figures.
#[derive(Clone, Debug, Serialize)]
pub struct SplitResult {
    pub split: usize,
    pub keep: f64,
    pub tau: f64,
    /// The Monte-Carlo log-likelihood of the chosen pair on the held-out 20%.
    pub val_ll: f64,
    /// Evaluation-mode RMSE on the test part.
    pub rmse: f64,
    pub mc_rmse: f64,
    pub test_ll: f64,
}

/// The whole table of one data set.
#[derive(Clone, Debug, Serialize)]
pub struct Table {
    pub dataset: String,
    pub splits: usize,
    pub epochs: usize,
    pub mc_samples: u32,
    pub mc_rmse: Summary,
    pub test_ll: Summary,
    pub rmse: Summary,
    pub per_split: Vec<SplitResult>,
}

/// Hears nothing: the protocol's trainings run silently.
struct Quiet;

impl Observer for Quiet {
    fn epoch(&mut self, _: &EpochReport, _: &Network<f32>, _: &Optimizer, _: &TrainState) -> Result<()> {
        Ok(())
    }
}

/// A trained network with the scalings of its training set.
struct Trained {
    net: Network<f32>,
    features: data::Standardization,
    targets: data::Standardization,
}

/// Train the protocol's network on the examples at `indices` with `keep` and `tau`.
fn train_on(data: &UciData, indices: &[usize], keep: f64, tau: f64, p: &Protocol, seed: u64) -> Result<Trained> {
    let options = LoadOptions { val: 0, seed, standardize: true, standardize_targets: true };
    let splits = data::split(Path::new(&data.name), data.examples.subset(indices), None, vec!["y".into()], options)?;
    let text = format!("{},keep{keep},dense{},relu,keep{keep},dense1", data.examples.features(), data.hidden);
    let stack = Stack::parse(&text, Scaling::Inverted)?;
    let mut net = Network::new(&Architecture { stack, init: Init::GlorotUniform }, seed)?;
    // R6: reg·Σw² in the loss is λ·w in the gradient with λ = 2·reg = l²·keep / (N·τ)
    let n = indices.len() as f64;
    let weight_decay = p.lengthscale * p.lengthscale * keep / (n * tau);
    let config = OptimConfig {
        method: Method::Adam,
        lr: 1e-3,
        eps: 1e-7,
        adam_form: AdamForm::Keras,
        weight_decay,
        ..OptimConfig::default()
    };
    let mut opt = Optimizer::new(config.clone())?;
    let mut state = TrainState::new(BATCH, 0, true, None, config);
    state.standardize_targets = true;
    match train::train(&mut net, &mut opt, Loss::MeanSquaredError, &splits, p.epochs, &mut state, &mut Quiet)? {
        Stop::Finished => {}
        other => {
            return Err(Error::Config(format!("{}: keep {keep}, τ {tau}: training stopped: {other:?}", data.name)))
        }
    }
    let features = splits.standardization.expect("standardize was asked for");
    let targets = splits.target_standardization.expect("standardize_targets was asked for");
    Ok(Trained { net, features, targets })
}

/// (evaluation-mode RMSE, MC RMSE, MC log-likelihood) of `t` on the examples at `indices`.
fn score(t: &mut Trained, data: &UciData, indices: &[usize], tau: f64, p: &Protocol) -> Result<(f64, f64, f64)> {
    let mut set = data.examples.subset(indices);
    t.features.apply(&mut set)?;
    let outputs = Outputs::of(&t.net, Loss::MeanSquaredError, Some(&t.targets))?;
    let rmse = regression::rmse(&mut t.net, &set, outputs)?[0];
    let y = set.values()?;
    let mc = regression::predictive(&mut t.net, &set.x, Some(y), outputs, Some(p.mc), &[tau])?;
    Ok((rmse, mc.rmse(y)[0], mc.log_likelihood[0]))
}

/// `jobs` run on `workers` long-lived threads, each of which trains serially (a rayon pool of one
/// thread: the products of a 50-unit network are far too small to share, and the protocol's
/// parallelism is across trainings); results in job order. Every job is independent, so the
/// results do not depend on the number of workers.
fn on_workers<R: Send>(workers: usize, jobs: usize, job: &(dyn Fn(usize) -> Result<R> + Sync)) -> Result<Vec<R>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<R>>>> = (0..jobs).map(|_| std::sync::Mutex::new(None)).collect();
    let pools = (0..workers.clamp(1, jobs.max(1)))
        .map(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("cannot start a worker thread: {e}")))?;
    let failed = std::sync::atomic::AtomicBool::new(false);
    let work = || loop {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if i >= jobs || failed.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let outcome = job(i);
        failed.fetch_or(outcome.is_err(), std::sync::atomic::Ordering::Relaxed);
        *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
    };
    std::thread::scope(|scope| {
        for pool in &pools {
            scope.spawn(|| pool.install(work));
        }
    });
    let mut out = Vec::with_capacity(jobs);
    for slot in results {
        if let Some(outcome) = slot.into_inner().unwrap_or_else(|e| e.into_inner()) {
            out.push(outcome?);
        }
    }
    if out.len() != jobs {
        return Err(Error::Config("a training of the protocol did not finish".into()));
    }
    Ok(out)
}

/// The protocol's batch of 128 on the data's network fits in memory, on every worker at once.
fn check_memory(data: &UciData) -> Result<()> {
    let text = format!("{},keep0.5,dense{},relu,keep0.5,dense1", data.examples.features(), data.hidden);
    let plans = crate::layer::plan(&Stack::parse(&text, Scaling::Inverted)?)?;
    let one = crate::memory::training(&plans, BATCH, crate::eval::eval_rows(&plans), 1);
    let all = one.times(rayon::current_num_threads() as u64);
    let change =
        format!("n_hidden.txt of {} asks for {} hidden units; give fewer, or fewer --threads", data.name, data.hidden);
    crate::memory::check(&all, crate::memory::available(), &change)
}

/// Run the protocol on `data`. `progress` hears each finished training (done, total).
pub fn run(data: &UciData, p: &Protocol, progress: &(dyn Fn(usize, usize) + Sync)) -> Result<Table> {
    let splits = p.splits.unwrap_or(data.splits.len());
    if splits == 0 || splits > data.splits.len() {
        return Err(Error::Config(format!("--splits {splits}: {} has {} splits", data.name, data.splits.len())));
    }
    check_memory(data)?;
    let grid: Vec<(f64, f64)> = data.keep.iter().flat_map(|&k| data.taus.iter().map(move |&t| (k, t))).collect();
    let total = splits * (grid.len() + 1);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let tick = || progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1, total);
    let workers = rayon::current_num_threads();
    // every (split, grid point): train on the first 80% of the training part, score the rest
    let val_ll = on_workers(workers, splits * grid.len(), &|job| {
        let (s, g) = (job / grid.len(), job % grid.len());
        let train_idx = &data.splits[s].0;
        let cut = (train_idx.len() * 4) / 5;
        let (keep, tau) = grid[g];
        let seed = p.seed + (s * 1000 + g) as u64;
        let mut t = train_on(data, &train_idx[..cut], keep, tau, p, seed)?;
        let ll = score(&mut t, data, &train_idx[cut..], tau, p)?.2;
        tick();
        Ok(ll)
    })?;
    let per_split = on_workers(workers, splits, &|s| {
        let scores = &val_ll[s * grid.len()..(s + 1) * grid.len()];
        let best = (0..grid.len()).max_by(|&a, &b| scores[a].total_cmp(&scores[b])).expect("a non-empty grid");
        let (keep, tau) = grid[best];
        let (train_idx, test_idx) = &data.splits[s];
        let seed = p.seed + (s * 1000 + 999) as u64;
        let mut t = train_on(data, train_idx, keep, tau, p, seed)?;
        let (rmse, mc_rmse, test_ll) = score(&mut t, data, test_idx, tau, p)?;
        tick();
        Ok(SplitResult { split: s, keep, tau, val_ll: scores[best], rmse, mc_rmse, test_ll })
    })?;
    let column = |f: fn(&SplitResult) -> f64| per_split.iter().map(f).collect::<Vec<f64>>();
    Ok(Table {
        dataset: data.name.clone(),
        splits,
        epochs: p.epochs,
        mc_samples: p.mc,
        mc_rmse: Summary::of(&column(|r| r.mc_rmse)),
        test_ll: Summary::of(&column(|r| r.test_ll)),
        rmse: Summary::of(&column(|r| r.rmse)),
        per_split,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_in_order_on_as_many_long_lived_threads_as_workers() {
        let threads = std::sync::Mutex::new(std::collections::HashSet::new());
        let squares = on_workers(2, 40, &|i| {
            threads.lock().unwrap().insert(std::thread::current().id());
            Ok(i * i)
        })
        .unwrap();
        assert_eq!(squares, (0..40).map(|i| i * i).collect::<Vec<_>>());
        // 40 jobs on 2 workers: 2 threads (at most; one can take every job), not one per job
        let used = threads.lock().unwrap().len();
        assert!((1..=2).contains(&used), "{used} threads");
        // inside a job the pool has one thread: the products of a training run serially there
        assert_eq!(on_workers(2, 3, &|_| Ok(rayon::current_num_threads())).unwrap(), [1, 1, 1]);
        // the first failure (in job order) is the result
        let err = on_workers(2, 10, &|i| if i >= 4 { Err(Error::Config(format!("job {i}"))) } else { Ok(i) });
        assert!(err.unwrap_err().to_string().starts_with("job "));
    }
}
