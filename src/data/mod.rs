//! Data sets: IDX (MNIST family) and CSV files, validation splits, shuffling, batches.

pub mod csv;
pub mod idx;

use crate::error::{file_error, Error, Result};
use crate::rng::{Stream, StreamRng};
use crate::tensor::Matrix;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Examples as rows of `x` (f32 features) with one class label each.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub x: Matrix<f32>,
    pub labels: Vec<usize>,
}

impl Dataset {
    /// A data set of `x` and `labels`; every feature must be finite.
    pub fn new(x: Matrix<f32>, labels: Vec<usize>, origin: &Path) -> Result<Self> {
        if x.rows() != labels.len() {
            return Err(file_error(origin, format!("{} examples but {} labels", x.rows(), labels.len())));
        }
        if let Some(pos) = x.as_slice().iter().position(|v| !v.is_finite()) {
            let (i, k) = (pos / x.cols().max(1), pos % x.cols().max(1));
            return Err(file_error(origin, format!("example {i}, feature {k} is {}", x.as_slice()[pos])));
        }
        Ok(Self { x, labels })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn features(&self) -> usize {
        self.x.cols()
    }

    /// Number of classes the labels need: the largest label + 1.
    pub fn classes(&self) -> usize {
        self.labels.iter().max().map_or(0, |&m| m + 1)
    }

    /// The examples at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut x = Matrix::zeros(indices.len(), self.features());
        let mut labels = Vec::new();
        self.gather(indices, &mut x, &mut labels);
        Dataset { x, labels }
    }

    /// Copy the examples at `indices` into `x` (resized) and `labels` (a batch).
    pub fn gather(&self, indices: &[usize], x: &mut Matrix<f32>, labels: &mut Vec<usize>) {
        x.ensure_shape(indices.len(), self.features());
        labels.clear();
        labels.extend(indices.iter().map(|&i| self.labels[i]));
        // rows in parallel: each is a few cache lines fetched from anywhere in the data set
        let width = self.features().max(1);
        x.as_mut_slice().par_chunks_mut(width).zip(indices).for_each(|(row, &i)| row.copy_from_slice(self.x.row(i)));
    }
}

/// Where a data set comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A folder with `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]` and optionally
    /// the `t10k-` pair (the test set).
    Idx(PathBuf),
    /// A training CSV file, an optional test CSV file, and the label column (index or name).
    Csv { train: PathBuf, test: Option<PathBuf>, label_col: String },
}

impl Source {
    /// A folder is IDX, a file is CSV.
    pub fn from_path(path: &Path, test: Option<&Path>, label_col: &str) -> Self {
        if path.is_dir() {
            Source::Idx(path.to_path_buf())
        } else {
            Source::Csv {
                train: path.to_path_buf(),
                test: test.map(Path::to_path_buf),
                label_col: label_col.to_string(),
            }
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            Source::Idx(dir) => dir,
            Source::Csv { train, .. } => train,
        }
    }
}

/// Training, validation and test sets.
#[derive(Clone, Debug)]
pub struct Splits {
    pub train: Dataset,
    pub val: Option<Dataset>,
    pub test: Option<Dataset>,
    /// The feature scaling fitted on the training set, when standardisation was asked for.
    pub standardization: Option<Standardization>,
}

/// Per-feature `x ← (x − mean) / std`, fitted on a training set and stored in model files so that
/// evaluation sees the same inputs.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Standardization {
    pub mean: Vec<f32>,
    /// 1 where a feature is constant.
    pub std: Vec<f32>,
}

impl Standardization {
    pub fn fit(x: &Matrix<f32>) -> Self {
        let n = x.rows() as f64;
        let mut sum = vec![0.0f64; x.cols()];
        let mut sq = vec![0.0f64; x.cols()];
        for i in 0..x.rows() {
            for (k, &v) in x.row(i).iter().enumerate() {
                sum[k] += v as f64;
                sq[k] += (v as f64) * (v as f64);
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let std = sq.iter().zip(&mean).map(|(s, m)| (s / n - m * m).max(0.0).sqrt());
        Self {
            mean: mean.iter().map(|&m| m as f32).collect(),
            std: std.map(|s| if s > 1e-12 { s as f32 } else { 1.0 }).collect(),
        }
    }

    pub fn apply(&self, set: &mut Dataset) -> Result<()> {
        if set.features() != self.mean.len() {
            return Err(Error::Config(format!(
                "the standardisation has {} features, the data {}",
                self.mean.len(),
                set.features()
            )));
        }
        for i in 0..set.len() {
            for ((v, m), s) in set.x.row_mut(i).iter_mut().zip(&self.mean).zip(&self.std) {
                *v = (*v - m) / s;
            }
        }
        Ok(())
    }
}

/// The folders searched, in order, when no `--data` is given (after `$DROPNET_DATA`).
pub const SEARCH_PATH: [&str; 3] = ["./data/mnist", "./data/fashion-mnist", "/usr/share/datasets/fashion-mnist"];

/// The data folder to use: `explicit` if given, else the first of `$DROPNET_DATA` and
/// [`SEARCH_PATH`] that holds a training set.
pub fn discover(explicit: Option<&Path>) -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(env) = std::env::var_os("DROPNET_DATA") {
        candidates.push(PathBuf::from(env));
    }
    candidates.extend(SEARCH_PATH.iter().map(PathBuf::from));
    discover_in(explicit, &candidates)
}

/// [`discover`] with the list of folders to try given.
pub fn discover_in(explicit: Option<&Path>, candidates: &[PathBuf]) -> Result<PathBuf> {
    if let Some(path) = explicit {
        if !path.exists() {
            return Err(file_error(path, "no such file or folder"));
        }
        return Ok(path.to_path_buf());
    }
    let tried = candidates;
    for dir in tried {
        if dir.is_file() || find_idx(dir, "train", "images-idx3-ubyte").is_some() {
            return Ok(dir.clone());
        }
    }
    let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    Err(Error::Config(format!(
        "no data set found (looked in {}; $DROPNET_DATA adds a folder). Pass --data DIR (a folder of MNIST-style IDX \
         files, or a CSV file), or install Fashion-MNIST: apt-get install dataset-fashion-mnist",
        list.join(", ")
    )))
}

/// `dir/prefix-kind.gz` or `dir/prefix-kind`, whichever exists.
fn find_idx(dir: &Path, prefix: &str, kind: &str) -> Option<PathBuf> {
    let base = dir.join(format!("{prefix}-{kind}"));
    let gz = dir.join(format!("{prefix}-{kind}.gz"));
    [gz, base].into_iter().find(|p| p.is_file())
}

/// One IDX split, pixels scaled to [0, 1].
fn load_idx(dir: &Path, prefix: &str) -> Result<Option<Dataset>> {
    let images = find_idx(dir, prefix, "images-idx3-ubyte");
    let labels = find_idx(dir, prefix, "labels-idx1-ubyte");
    let (images, labels) = match (images, labels) {
        (Some(i), Some(l)) => (i, l),
        (None, None) if prefix != "train" => return Ok(None),
        (None, _) => return Err(file_error(dir, format!("no {prefix}-images-idx3-ubyte[.gz] in this folder"))),
        (_, None) => return Err(file_error(dir, format!("no {prefix}-labels-idx1-ubyte[.gz] in this folder"))),
    };
    let (count, pixels, bytes) = idx::read_images(&images)?;
    let label_bytes = idx::read_labels(&labels)?;
    if label_bytes.len() != count {
        return Err(file_error(
            &labels,
            format!("{} labels, but {} holds {count} images", label_bytes.len(), images.display()),
        ));
    }
    let x = Matrix::from_vec(count, pixels, bytes.iter().map(|&b| b as f32 / 255.0).collect())?;
    Dataset::new(x, label_bytes.iter().map(|&l| l as usize).collect(), &images).map(Some)
}

fn load_csv(path: &Path, label_col: &str) -> Result<Dataset> {
    let data = csv::read(path, label_col)?;
    let x = Matrix::from_vec(data.labels.len(), data.width, data.features)?;
    Dataset::new(x, data.labels, path)
}

/// Load `source`; move `val` seeded-random training examples into a validation set; optionally
/// standardise every feature with the training set's mean and standard deviation.
pub fn load(source: &Source, val: usize, seed: u64, standardize: bool) -> Result<Splits> {
    let (train, test) = match source {
        Source::Idx(dir) => {
            let train = load_idx(dir, "train")?.ok_or_else(|| file_error(dir, "no training set in this folder"))?;
            (train, load_idx(dir, "t10k")?)
        }
        Source::Csv { train, test, label_col } => {
            (load_csv(train, label_col)?, test.as_deref().map(|t| load_csv(t, label_col)).transpose()?)
        }
    };
    if let Some(test) = &test {
        if test.features() != train.features() {
            return Err(file_error(
                source.path(),
                format!("training examples have {} features, test examples {}", train.features(), test.features()),
            ));
        }
    }
    if val >= train.len() {
        return Err(Error::Config(format!("--val {val} leaves no training examples (the set has {})", train.len())));
    }
    let (train_idx, val_idx) = split_indices(train.len(), val, seed);
    let mut splits = Splits {
        val: (val > 0).then(|| train.subset(&val_idx)),
        train: if val > 0 { train.subset(&train_idx) } else { train },
        test,
        standardization: None,
    };
    if standardize {
        let fitted = Standardization::fit(&splits.train.x);
        for set in [Some(&mut splits.train), splits.val.as_mut(), splits.test.as_mut()].into_iter().flatten() {
            fitted.apply(set)?;
        }
        splits.standardization = Some(fitted);
    }
    Ok(splits)
}

/// The examples to evaluate a model on: the `t10k` set of an IDX folder, or a whole CSV file
/// (`test`, when given, else `train`).
pub fn load_eval(source: &Source) -> Result<Dataset> {
    match source {
        Source::Idx(dir) => load_idx(dir, "t10k")?
            .ok_or_else(|| file_error(dir, "no t10k-images-idx3-ubyte[.gz] (test set) in this folder")),
        Source::Csv { train, test, label_col } => load_csv(test.as_deref().unwrap_or(train), label_col),
    }
}

/// A uniformly random permutation of `0..n` (Fisher–Yates) from stream (seed, `stream`, 0, `step`).
pub fn permutation(n: usize, seed: u64, stream: Stream, step: u32) -> Vec<usize> {
    let mut rng = StreamRng::new(seed, stream, 0, step);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u32 + 1) as usize;
        order.swap(i, j);
    }
    order
}

/// The order of training examples in `epoch` (0-based).
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    permutation(n, seed, Stream::Shuffle, epoch as u32)
}

/// Training and validation indices: the first `val` of a seeded permutation validate; both lists
/// are returned in their original order.
fn split_indices(n: usize, val: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let order = permutation(n, seed, Stream::Split, 0);
    let mut val_idx = order[..val].to_vec();
    let mut train_idx = order[val..].to_vec();
    val_idx.sort_unstable();
    train_idx.sort_unstable();
    (train_idx, val_idx)
}
