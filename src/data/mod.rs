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
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A folder with `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]` and optionally
    /// the `t10k-` pair (the test set).
    Idx(PathBuf),
    /// A training CSV file, an optional test CSV file, and the label column (index or name).
    Csv { train: PathBuf, test: Option<PathBuf>, label_col: String },
}

/// The four IDX files of a folder, each under both of the names dropnet reads it by.
const IDX_NAMES: [&str; 4] =
    ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

impl Source {
    /// A folder is IDX, a file is CSV. `--test-data` and `--label-col` describe CSV data, so with
    /// a folder they are an error (its t10k files are the test set, its labels have their files).
    pub fn from_path(path: &Path, test: Option<&Path>, label_col: Option<&str>) -> Result<Self> {
        if path.is_dir() {
            let flag = match (test, label_col) {
                (Some(_), _) => Some("--test-data"),
                (None, Some(_)) => Some("--label-col"),
                (None, None) => None,
            };
            if let Some(flag) = flag {
                return Err(Error::Config(format!(
                    "{flag} applies to CSV data, and {} is a folder of IDX files (its t10k files are the test set)",
                    path.display()
                )));
            }
            return Ok(Source::Idx(path.to_path_buf()));
        }
        Ok(Source::Csv {
            train: path.to_path_buf(),
            test: test.map(Path::to_path_buf),
            label_col: label_col.unwrap_or("0").to_string(),
        })
    }

    pub fn path(&self) -> &Path {
        match self {
            Source::Idx(dir) => dir,
            Source::Csv { train, .. } => train,
        }
    }

    /// Every file this source may read, existing or not: for a folder both the `.gz` and the
    /// plain name of each IDX file. No output may be any of them.
    pub fn input_files(&self) -> Vec<PathBuf> {
        match self {
            Source::Idx(dir) => IDX_NAMES.iter().flat_map(|n| [dir.join(n), dir.join(format!("{n}.gz"))]).collect(),
            Source::Csv { train, test, .. } => std::iter::once(train.clone()).chain(test.clone()).collect(),
        }
    }

    /// The same source with absolute paths, so that a run resumed from another folder finds it.
    /// The paths go into a model file's JSON metadata, so they must be UTF-8.
    pub fn absolute(&self) -> Result<Self> {
        let abs = |p: &Path| {
            let path = std::path::absolute(p).map_err(|e| crate::error::read_error(p, e))?;
            match path.to_str() {
                Some(_) => Ok(path),
                None => Err(file_error(p, "the path is not UTF-8 text, and the model file records it as text")),
            }
        };
        Ok(match self {
            Source::Idx(dir) => Source::Idx(abs(dir)?),
            Source::Csv { train, test, label_col } => Source::Csv {
                train: abs(train)?,
                test: test.as_deref().map(abs).transpose()?,
                label_col: label_col.clone(),
            },
        })
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

    /// Whether this can standardise `inputs` features: one finite mean and one finite, positive
    /// deviation per feature (what a model file's `standardization` must satisfy).
    pub fn validate(&self, inputs: usize) -> std::result::Result<(), String> {
        if self.mean.len() != inputs || self.std.len() != inputs {
            return Err(format!(
                "{} means and {} deviations for {inputs} input features",
                self.mean.len(),
                self.std.len()
            ));
        }
        if let Some(k) = self.mean.iter().position(|m| !m.is_finite()) {
            return Err(format!("the mean of feature {k} is {}", self.mean[k]));
        }
        if let Some(k) = self.std.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(format!("the deviation of feature {k} is {}: it must be finite and positive", self.std[k]));
        }
        Ok(())
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

/// The folders searched, in order, when no `--data` is given (after `$DROPNET_DATA`): the MNIST
/// copy the repository ships, seen from the current folder and in the checkout this binary was
/// built from, then Fashion-MNIST as a local folder and as Debian's `dataset-fashion-mnist`.
pub const SEARCH_PATH: [&str; 4] = [
    "./data/mnist",
    concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist"),
    "./data/fashion-mnist",
    "/usr/share/datasets/fashion-mnist",
];

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
        if let Err(e) = std::fs::metadata(path) {
            return Err(match e.kind() {
                std::io::ErrorKind::NotFound => file_error(path, "no such file or folder"),
                _ => crate::error::read_error(path, e),
            });
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
    let mut x = Matrix::try_zeros(count, pixels)?;
    x.as_mut_slice().iter_mut().zip(&bytes).for_each(|(v, &b)| *v = b as f32 / 255.0);
    drop(bytes);
    Dataset::new(x, label_bytes.iter().map(|&l| l as usize).collect(), &images).map(Some)
}

fn load_csv(path: &Path, label_col: &str) -> Result<Dataset> {
    let data = csv::read(path, label_col)?;
    let x = Matrix::from_vec(data.labels.len(), data.width, data.features)?;
    Dataset::new(x, data.labels, path)
}

/// Load `source`; move `val` seeded-random training examples into a validation set; optionally
/// standardise every feature with the training set's mean and standard deviation. An empty
/// training or test set is an error naming its file.
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
    if train.is_empty() {
        return Err(file_error(source.path(), "the training set has no examples"));
    }
    if let Some(test) = &test {
        let test_path = match source {
            Source::Csv { test: Some(t), .. } => t.clone(),
            _ => source.path().join("t10k-images-idx3-ubyte[.gz]"),
        };
        if test.is_empty() {
            return Err(file_error(&test_path, "the test set has no examples"));
        }
        if test.features() != train.features() {
            return Err(file_error(
                &test_path,
                format!("test examples have {} features, training examples {}", test.features(), train.features()),
            ));
        }
    }
    if val >= train.len() {
        return Err(Error::Config(format!(
            "--val {val} leaves no training examples ({} has {})",
            source.path().display(),
            train.len()
        )));
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
/// (`test`, when given, else `train`). An empty set is an error.
pub fn load_eval(source: &Source) -> Result<Dataset> {
    let (set, path) = match source {
        Source::Idx(dir) => (
            load_idx(dir, "t10k")?
                .ok_or_else(|| file_error(dir, "no t10k-images-idx3-ubyte[.gz] (test set) in this folder"))?,
            dir.join("t10k-images-idx3-ubyte[.gz]"),
        ),
        Source::Csv { train, test, label_col } => {
            let path = test.as_deref().unwrap_or(train);
            (load_csv(path, label_col)?, path.to_path_buf())
        }
    };
    if set.is_empty() {
        return Err(file_error(&path, "no examples to evaluate"));
    }
    Ok(set)
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
