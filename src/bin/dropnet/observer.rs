//! What the user sees and keeps while a run trains: a progress bar (or a line per epoch), the
//! JSON-lines log, the SVG plot and the checkpoints. A log or plot write that fails is a warning
//! at once and a note for the end: training goes on, the model is saved, and the run exits 1
//! naming what was not written.

use crate::signals::Signals;
use dropnet::data::Standardization;
use dropnet::error::{write_error, Result};
use dropnet::model_file::{self, Extras, Regression};
use dropnet::optim::Optimizer;
use dropnet::train::{EpochReport, Observer, PerTarget, TrainState};
use dropnet::{Loss, Network};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where the last model file this run wrote stands.
#[derive(Clone, Copy, Debug)]
pub struct Written {
    pub epochs_done: usize,
    pub step: u64,
}

/// An output the run could not write, with why.
pub struct Unwritten {
    pub what: String,
    pub path: PathBuf,
    pub reason: String,
}

/// The model file and what goes into it besides the network.
pub struct ModelOutput {
    pub path: PathBuf,
    pub loss: Loss,
    pub standardization: Option<Standardization>,
    /// The targets of a regression run.
    pub regression: Option<Regression>,
}

impl ModelOutput {
    /// Save `net` with its optimizer state and the run's state.
    pub fn save(&self, net: &Network<f32>, opt: &Optimizer, state: &TrainState) -> Result<Written> {
        let extras = Extras {
            loss: self.loss,
            training: Some(state),
            standardization: self.standardization.as_ref(),
            slots: &opt.slots,
            regression: self.regression.as_ref(),
        };
        model_file::save(&self.path, net, &extras)?;
        Ok(Written { epochs_done: state.epochs_done, step: state.step })
    }
}

pub struct CliObserver<'a> {
    bar: Option<indicatif::ProgressBar>,
    log: Option<(PathBuf, std::fs::File)>,
    plot: Option<PathBuf>,
    checkpoint_every: Option<usize>,
    pub model: ModelOutput,
    signals: &'a Signals,
    batch: usize,
    batch_started: Instant,
    /// The last model file written by this run, if any.
    pub written: Option<Written>,
    /// Outputs that failed, first failure of each.
    pub unwritten: Vec<Unwritten>,
}

impl<'a> CliObserver<'a> {
    /// `log` is opened (created, or appended to) here.
    pub fn new(
        model: ModelOutput,
        log: Option<&Path>,
        plot: Option<&Path>,
        checkpoint_every: Option<usize>,
        batch: usize,
        signals: &'a Signals,
    ) -> Result<Self> {
        let log = match log {
            Some(path) => Some((
                path.to_path_buf(),
                std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| write_error(path, e))?,
            )),
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
            plot: plot.map(Path::to_path_buf),
            checkpoint_every,
            model,
            signals,
            batch,
            batch_started: Instant::now(),
            written: None,
            unwritten: Vec::new(),
        })
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// A line for the user, above the progress bar when there is one.
    pub fn say(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Record a failed write: warn now (the first time for this output), report at the end.
    fn failed(&mut self, what: &str, path: &Path, reason: String) {
        if self.unwritten.iter().any(|u| u.path == path && u.what == what) {
            return;
        }
        let warning = format!("cannot write the {what} {}: {reason}; training goes on", path.display());
        match &self.bar {
            Some(bar) => bar.suspend(|| crate::print_warning(&warning)),
            None => crate::print_warning(&warning),
        }
        self.unwritten.push(Unwritten { what: what.to_string(), path: path.to_path_buf(), reason });
    }

    fn write_log(&mut self, report: &EpochReport) {
        let Some((path, file)) = &mut self.log else { return };
        let line = format!("{}\n", serde_json::to_string(report).expect("plain data serialises"));
        if let Err(e) = file.write_all(line.as_bytes()) {
            let path = path.clone();
            self.failed("log", &path, e.to_string());
        }
    }
}

impl Observer for CliObserver<'_> {
    fn step(&mut self, epoch: usize, done: usize, total: usize, loss: f64) {
        if let Some(bar) = &self.bar {
            if bar.length() != Some(total as u64) || bar.prefix() != epoch.to_string() {
                bar.reset();
                bar.set_length(total as u64);
                bar.set_prefix(epoch.to_string());
                self.batch_started = Instant::now();
            }
            bar.set_position(done as u64);
            if done.is_multiple_of(10) || done == total {
                let rate = (done * self.batch) as f64 / self.batch_started.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!("loss {loss:.4}  {rate:.0} samples/s"));
            }
        }
    }

    fn epoch(&mut self, r: &EpochReport, net: &Network<f32>, opt: &Optimizer, state: &TrainState) -> Result<()> {
        let pct = |e: Option<f64>| e.map_or("-".to_string(), |e| format!("{:.2}%", 100.0 * e));
        let figures = |e: &Option<PerTarget>| {
            e.as_ref().map_or("-".to_string(), |e| e.0.iter().map(|v| format!("{v:.4}")).collect::<Vec<_>>().join(","))
        };
        let scores = match r.train_error {
            Some(train) => {
                format!("train err {:.2}%  val err {}  test err {}", 100.0 * train, pct(r.val_error), pct(r.test_error))
            }
            None => format!("val rmse {}  test rmse {}", figures(&r.val_rmse), figures(&r.test_rmse)),
        };
        self.say(&format!(
            "epoch {:>3}  loss {:.4}  {scores}  {:.1} s  {:.0} samples/s",
            r.epoch, r.train_loss, r.epoch_s, r.samples_per_s
        ));
        self.write_log(r);
        if let Some(plot) = self.plot.clone() {
            if let Err(e) = crate::plot::write_curves(&plot, &state.history) {
                self.failed("plot", &plot, e.to_string());
            }
        }
        if let Some(k) = self.checkpoint_every {
            if state.epochs_done.is_multiple_of(k) {
                match self.model.save(net, opt, state) {
                    Ok(w) => self.written = Some(w),
                    Err(e) => {
                        let path = self.model.path.clone();
                        self.failed("checkpoint", &path, e.to_string());
                    }
                }
            }
        }
        Ok(())
    }

    fn interrupted(&self) -> bool {
        self.signals.received().is_some()
    }
}
