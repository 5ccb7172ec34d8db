//! Data sets: IDX (MNIST family) and CSV files, validation splits, shuffling, batches.

pub mod csv;
pub mod idx;
mod standardize;

pub use standardize::Standardization;

use crate::error::{file_error, Error, Result};
use crate::rng::{Stream, StreamRng};
use crate::stack::Shape;
use crate::tensor::Matrix;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// What each example is to be mapped to.
#[derive(Clone, Debug)]
pub enum Targets {
    /// One class index per example (classification).
    Labels(Vec<usize>),
    /// One row of continuous values per example (regression).
    Values(Matrix<f32>),
}

/// Examples as rows of `x` (f32 features) with their targets: a class label each, or a row of
/// continuous values.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub x: Matrix<f32>,
    pub y: Targets,
}

/// A mini-batch gathered from a [`Dataset`]: the buffers are sized on the first batch and reused.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub x: Matrix<f32>,
    /// The batch's labels (classification; empty otherwise).
    pub labels: Vec<usize>,
    /// The batch's target rows (regression; 0×0 otherwise).
    pub values: Matrix<f32>,
}

/// Copying rows in parallel pays only above this many values (a small batch is copied in less
/// time than a fork of the pool takes).
const PARALLEL_GATHER_VALUES: usize = 1 << 15;

/// The first value of `m` that is not finite, as (row, column, value).
fn first_non_finite(m: &Matrix<f32>) -> Option<(usize, usize, f32)> {
    let pos = m.as_slice().iter().position(|v| !v.is_finite())?;
    Some((pos / m.cols().max(1), pos % m.cols().max(1), m.as_slice()[pos]))
}

impl Dataset {
    /// A classification set of `x` and `labels`; every feature must be finite.
    pub fn new(x: Matrix<f32>, labels: Vec<usize>, origin: &Path) -> Result<Self> {
        if x.rows() != labels.len() {
            return Err(file_error(origin, format!("{} examples but {} labels", x.rows(), labels.len())));
        }
        Self::checked(x, Targets::Labels(labels), origin)
    }

    /// A regression set of `x` and target rows `values`; every feature and target must be finite.
    pub fn regression(x: Matrix<f32>, values: Matrix<f32>, origin: &Path) -> Result<Self> {
        if x.rows() != values.rows() {
            return Err(file_error(origin, format!("{} examples but {} target rows", x.rows(), values.rows())));
        }
        if let Some((i, d, v)) = first_non_finite(&values) {
            return Err(file_error(origin, format!("example {i}, target {d} is {v}")));
        }
        Self::checked(x, Targets::Values(values), origin)
    }

    fn checked(x: Matrix<f32>, y: Targets, origin: &Path) -> Result<Self> {
        if let Some((i, k, v)) = first_non_finite(&x) {
            return Err(file_error(origin, format!("example {i}, feature {k} is {v}")));
        }
        Ok(Self { x, y })
    }

    pub fn len(&self) -> usize {
        self.x.rows()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn features(&self) -> usize {
        self.x.cols()
    }

    /// The class labels, or an error for a regression set.
    pub fn labels(&self) -> Result<&[usize]> {
        match &self.y {
            Targets::Labels(labels) => Ok(labels),
            Targets::Values(_) => {
                Err(Error::Config("the data has continuous targets (regression), not class labels".into()))
            }
        }
    }

    /// The target rows, or an error for a classification set.
    pub fn values(&self) -> Result<&Matrix<f32>> {
        match &self.y {
            Targets::Values(values) => Ok(values),
            Targets::Labels(_) => Err(Error::Config("the data has class labels, not continuous targets".into())),
        }
    }

    /// Targets per example: 0 for class labels, the width of the target rows otherwise.
    pub fn target_width(&self) -> usize {
        match &self.y {
            Targets::Labels(_) => 0,
            Targets::Values(v) => v.cols(),
        }
    }

    /// Number of classes the labels need: the largest label + 1 (0 for a regression set).
    pub fn classes(&self) -> usize {
        match &self.y {
            Targets::Labels(labels) => labels.iter().max().map_or(0, |&m| m + 1),
            Targets::Values(_) => 0,
        }
    }

    /// The examples at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut batch = Batch::default();
        self.gather(indices, &mut batch);
        let y = match &self.y {
            Targets::Labels(_) => Targets::Labels(batch.labels),
            Targets::Values(_) => Targets::Values(batch.values),
        };
        Dataset { x: batch.x, y }
    }

    /// Copy the examples at `indices` into `batch` (resized).
    pub fn gather(&self, indices: &[usize], batch: &mut Batch) {
        gather_rows(&self.x, indices, &mut batch.x);
        batch.labels.clear();
        match &self.y {
            Targets::Labels(labels) => batch.labels.extend(indices.iter().map(|&i| labels[i])),
            Targets::Values(values) => gather_rows(values, indices, &mut batch.values),
        }
    }
}

/// Rows `indices` of `from` into `to` (resized): in parallel for a large batch, each row being a
/// few cache lines fetched from anywhere in the data set.
fn gather_rows(from: &Matrix<f32>, indices: &[usize], to: &mut Matrix<f32>) {
    to.ensure_shape(indices.len(), from.cols());
    let width = from.cols().max(1);
    let copy = |(row, &i): (&mut [f32], &usize)| row.copy_from_slice(from.row(i));
    if indices.len() * width < PARALLEL_GATHER_VALUES {
        to.as_mut_slice().chunks_mut(width).zip(indices).for_each(copy);
    } else {
        to.as_mut_slice().par_chunks_mut(width).zip(indices).for_each(copy);
    }
}

/// Where a data set comes from.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A folder with `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]` and optionally
    /// the `t10k-` pair (the test set).
    Idx(PathBuf),
    /// A training CSV file, an optional test CSV file, and the label column (index or name), or,
    /// for regression, the target columns (each an index or a name; then `label_col` is unused).
    Csv {
        train: PathBuf,
        test: Option<PathBuf>,
        label_col: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target_cols: Option<Vec<String>>,
        /// Whether each file's first record is a header (`--header`).
        #[serde(default, skip_serializing_if = "csv::Header::is_auto")]
        header: csv::Header,
    },
}

/// The four IDX files of a folder, each under both of the names dropnet reads it by.
const IDX_NAMES: [&str; 4] =
    ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

impl Source {
    /// A folder is IDX, a file is CSV. `--test-data`, `--label-col` and `--target-col` describe CSV
    /// data, so with a folder they are an error (its t10k files are the test set, its labels have
    /// their files); a label column and target columns together are an error too.
    pub fn from_path(
        path: &Path,
        test: Option<&Path>,
        label_col: Option<&str>,
        target_cols: Option<&[String]>,
    ) -> Result<Self> {
        if label_col.is_some() && target_cols.is_some() {
            return Err(Error::Config(
                "--label-col and --target-col both say what to predict: give --label-col for classification or \
                 --target-col for regression"
                    .into(),
            ));
        }
        if path.is_dir() {
            let flag = match (test, label_col, target_cols) {
                (Some(_), _, _) => Some("--test-data"),
                (None, Some(_), _) => Some("--label-col"),
                (None, None, Some(_)) => Some("--target-col"),
                (None, None, None) => None,
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
            target_cols: target_cols.map(<[String]>::to_vec),
            header: csv::Header::Auto,
        })
    }

    /// The same source with `header` (`--header`), which only CSV data has.
    pub fn with_header(self, given: csv::Header) -> Result<Self> {
        match self {
            Source::Csv { train, test, label_col, target_cols, .. } => {
                Ok(Source::Csv { train, test, label_col, target_cols, header: given })
            }
            Source::Idx(dir) if given.is_auto() => Ok(Source::Idx(dir)),
            Source::Idx(dir) => Err(Error::Config(format!(
                "--header applies to CSV data, and {} is a folder of IDX files",
                dir.display()
            ))),
        }
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
            Source::Csv { train, test, label_col, target_cols, header } => Source::Csv {
                train: abs(train)?,
                test: test.as_deref().map(abs).transpose()?,
                label_col: label_col.clone(),
                target_cols: target_cols.clone(),
                header: *header,
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
    /// The target scaling fitted on the training set (regression, when asked for). Only `train`'s
    /// targets are standardised (what the loss sees); `val` and `test` keep theirs in the original
    /// units, the units of every reported figure.
    pub target_standardization: Option<Standardization>,
    /// The target columns by name (regression; empty for classification).
    pub target_names: Vec<String>,
    /// The height and width the IDX images file declares (`None` for CSV data), which a network
    /// whose input is a feature map must have.
    pub image: Option<(usize, usize)>,
    /// Whether the CSV training file had a header (`None` for IDX data).
    pub csv_header: Option<bool>,
}

/// How [`load`] prepares the data.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// Training examples moved, seeded-random, into a validation set.
    pub val: usize,
    /// Seed of the validation split.
    pub seed: u64,
    /// Standardise every feature with the training set's mean and deviation.
    pub standardize: bool,
    /// Standardise every target (regression) with the training set's mean and deviation.
    pub standardize_targets: bool,
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
    // any entry: one that is not a regular file (a link to a device, a FIFO) is then refused by
    // the reader, which says what it is, rather than reported missing
    [gz, base].into_iter().find(|p| std::fs::symlink_metadata(p).is_ok())
}

/// The height and width an IDX images file declares.
type ImageShape = (usize, usize);

/// One IDX split, pixels scaled to [0, 1], and the images' declared height and width.
fn load_idx(dir: &Path, prefix: &str) -> Result<Option<(Dataset, ImageShape)>> {
    if !dir.is_dir() {
        return Err(file_error(
            dir,
            "is not a folder: the IDX data sets (MNIST, Fashion-MNIST) are folders of IDX files",
        ));
    }
    let images = find_idx(dir, prefix, "images-idx3-ubyte");
    let labels = find_idx(dir, prefix, "labels-idx1-ubyte");
    let (images, labels) = match (images, labels) {
        (Some(i), Some(l)) => (i, l),
        (None, None) if prefix != "train" => return Ok(None),
        (None, _) => return Err(file_error(dir, format!("no {prefix}-images-idx3-ubyte[.gz] in this folder"))),
        (_, None) => return Err(file_error(dir, format!("no {prefix}-labels-idx1-ubyte[.gz] in this folder"))),
    };
    let (count, (height, width), bytes) = idx::read_images(&images)?;
    let pixels = height * width;
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
    let set = Dataset::new(x, label_bytes.iter().map(|&l| l as usize).collect(), &images)?;
    Ok(Some((set, (height, width))))
}

/// A CSV file as a data set (classification with `target_cols` `None`), its target names and its
/// header, when it has one.
fn load_csv(
    path: &Path,
    label_col: &str,
    target_cols: Option<&[String]>,
    header: csv::Header,
) -> Result<(Dataset, Vec<String>, Option<Vec<String>>)> {
    let columns = match target_cols {
        Some(cols) => csv::Columns::Targets(cols),
        None => csv::Columns::Label(label_col),
    };
    let data = csv::read(path, columns, header)?;
    let x = Matrix::from_vec(data.rows, data.width, data.features)?;
    let set = match target_cols {
        Some(_) => Dataset::regression(x, Matrix::from_vec(data.rows, data.target_width, data.targets)?, path)?,
        None => Dataset::new(x, data.labels, path)?,
    };
    Ok((set, data.target_names, data.header))
}

/// A test file's columns are the training file's, in the same order: its features are read by
/// position, so another order would feed the network the wrong feature in each input.
fn check_same_columns(
    train: &Path,
    header: Option<&[String]>,
    test: &Path,
    test_header: Option<&[String]>,
) -> Result<()> {
    let (Some(header), Some(test_header)) = (header, test_header) else { return Ok(()) };
    if header == test_header {
        return Ok(());
    }
    let at = header.iter().zip(test_header).position(|(a, b)| a != b).unwrap_or(header.len().min(test_header.len()));
    let name =
        |h: &[String]| h.get(at).map_or("nothing".to_string(), |c| format!("'{}'", crate::error::shorten(c, 40)));
    Err(file_error(
        test,
        format!(
            "column {at} is {}, but in {} it is {}: the test file needs the training file's columns in its order",
            name(test_header),
            train.display(),
            name(header)
        ),
    ))
}

/// Load `source` and prepare it as `options` say (see [`LoadOptions`]). An empty training or test
/// set is an error naming its file.
pub fn load(source: &Source, options: LoadOptions) -> Result<Splits> {
    let (mut image, mut csv_header) = (None, None);
    let (train, test, target_names) = match source {
        Source::Idx(dir) => {
            let train = load_idx(dir, "train")?.ok_or_else(|| file_error(dir, "no training set in this folder"))?;
            image = Some(train.1);
            (train.0, load_idx(dir, "t10k")?.map(|t| t.0), Vec::new())
        }
        Source::Csv { train: train_path, test, label_col, target_cols, header: given } => {
            let (train, names, header) = load_csv(train_path, label_col, target_cols.as_deref(), *given)?;
            csv_header = Some(header.is_some());
            let test = match test.as_deref() {
                Some(t) => {
                    let (set, _, test_header) = load_csv(t, label_col, target_cols.as_deref(), *given)?;
                    check_same_columns(train_path, header.as_deref(), t, test_header.as_deref())?;
                    Some(set)
                }
                None => None,
            };
            (train, test, names)
        }
    };
    let test_path = match source {
        Source::Csv { test: Some(t), .. } => t.clone(),
        _ => source.path().join("t10k-images-idx3-ubyte[.gz]"),
    };
    let mut splits = split(source.path(), train, test.map(|t| (t, test_path)), target_names, options)?;
    (splits.image, splits.csv_header) = (image, csv_header);
    Ok(splits)
}

/// [`load`] on data sets already read: checks, the validation split, the standardisations.
/// `origin` names the training data in messages, the test set's path its own.
pub fn split(
    origin: &Path,
    train: Dataset,
    test: Option<(Dataset, PathBuf)>,
    target_names: Vec<String>,
    options: LoadOptions,
) -> Result<Splits> {
    let LoadOptions { val, seed, standardize, standardize_targets } = options;
    if train.is_empty() {
        return Err(file_error(origin, "the training set has no examples"));
    }
    if let Some((test, test_path)) = &test {
        if test.is_empty() {
            return Err(file_error(test_path, "the test set has no examples"));
        }
        if test.features() != train.features() {
            return Err(file_error(
                test_path,
                format!("test examples have {} features, training examples {}", test.features(), train.features()),
            ));
        }
    }
    if val >= train.len() {
        return Err(Error::ValidationSplit { val, origin: origin.to_path_buf(), examples: train.len() });
    }
    let (train_idx, val_idx) = split_indices(train.len(), val, seed);
    let mut splits = Splits {
        val: (val > 0).then(|| train.subset(&val_idx)),
        train: if val > 0 { train.subset(&train_idx) } else { train },
        test: test.map(|t| t.0),
        standardization: None,
        target_standardization: None,
        target_names,
        image: None,
        csv_header: None,
    };
    if standardize {
        let fitted = Standardization::fit(&splits.train.x);
        for set in [Some(&mut splits.train), splits.val.as_mut(), splits.test.as_mut()].into_iter().flatten() {
            fitted.apply(set)?;
        }
        splits.standardization = Some(fitted);
    }
    if let (true, Targets::Values(values)) = (standardize_targets, &mut splits.train.y) {
        let fitted = Standardization::fit(values);
        fitted.apply_to(values)?;
        splits.target_standardization = Some(fitted);
    }
    Ok(splits)
}

/// The examples to evaluate a model on: the `t10k` set of an IDX folder, or a whole CSV file
/// (`test`, when given, else `train`), for a network whose input is `input`. An empty set is an
/// error, and so are images of another shape than a feature-map input ([`check_image_input`]).
pub fn load_eval(source: &Source, input: Shape) -> Result<Dataset> {
    let (set, path) = match source {
        Source::Idx(dir) => {
            let (set, image) = load_idx(dir, "t10k")?
                .ok_or_else(|| file_error(dir, "no t10k-images-idx3-ubyte[.gz] (test set) in this folder"))?;
            check_image_input(Some(image), input)?;
            (set, dir.join("t10k-images-idx3-ubyte[.gz]"))
        }
        Source::Csv { train, test, label_col, target_cols, header } => {
            let path = test.as_deref().unwrap_or(train);
            (load_csv(path, label_col, target_cols.as_deref(), *header)?.0, path.to_path_buf())
        }
    };
    if set.is_empty() {
        return Err(file_error(&path, "no examples to evaluate"));
    }
    Ok(set)
}

/// A network whose input is a feature map reads IDX images of the height and width the file
/// declares, one channel: the same number of values in another shape would be scrambled images.
pub fn check_image_input(image: Option<ImageShape>, input: Shape) -> Result<()> {
    match (image, input) {
        (Some((height, width)), Shape::Map { c, h, w }) if (c, h, w) != (1, height, width) => {
            Err(Error::Config(format!(
                "the IDX images are {height}x{width} with one channel, but the network's input is {c}x{h}x{w}: \
                 give --arch 1x{height}x{width},... (or {} for a vector)",
                height * width
            )))
        }
        _ => Ok(()),
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
