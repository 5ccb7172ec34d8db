//! What a run needs in memory, estimated from the network's plan before anything is allocated,
//! and checked against what the machine has (docs/reliability.md). Every tensor can be within
//! [`crate::limits`] while the whole run is not: the activations of a batch, a convolution's
//! workspaces, the optimizer's slots and the evaluation passes add up. The estimate counts the
//! buffers the layers keep (an undercount of small ones is fine: it exists to refuse runs that
//! could never fit, with the figure, instead of failing half a minute in).

use crate::error::{Error, Result};
use crate::layer::{Plan, PlanKind};
use crate::limits::{MAX_BATCH, MAX_TENSOR_ELEMENTS};
use crate::stack::{NoiseKind, Shape};

/// Bytes of one f32 value.
const F32: u64 = 4;

/// Bytes each worker thread is given for its product workspaces (packed panels, partial sums).
const PER_THREAD: u64 = 16 << 20;

/// A run's memory, in bytes, by what holds it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Estimate {
    /// Weights and biases, their gradients and (training) two optimizer slots.
    pub parameters: u64,
    /// The activations and workspaces of one training batch.
    pub batch: u64,
    /// The activations of one evaluation pass.
    pub evaluation: u64,
    /// The worker threads' workspaces.
    pub threads: u64,
}

impl Estimate {
    /// The memory of `n` such runs at once.
    pub fn times(&self, n: u64) -> Self {
        let scale = |bytes: u64| bytes.saturating_mul(n);
        Self {
            parameters: scale(self.parameters),
            batch: scale(self.batch),
            evaluation: scale(self.evaluation),
            threads: scale(self.threads),
        }
    }

    pub fn total(&self) -> u64 {
        self.parameters.saturating_add(self.batch).saturating_add(self.evaluation).saturating_add(self.threads)
    }
}

/// The padded input of a convolution, in values per example.
fn padded_input(plan: &Plan) -> u64 {
    match (&plan.kind, plan.input) {
        (PlanKind::Conv(g), Shape::Map { c, h, w }) => {
            let p = 2 * g.padding as u64;
            c as u64 * (h as u64 + p) * (w as u64 + p)
        }
        _ => plan.input.units() as u64,
    }
}

/// Values one example keeps in `plan`'s buffers in a training step (forward and backward).
fn training_values(plan: &Plan) -> u64 {
    let (input, output) = (plan.input.units() as u64, plan.output.units() as u64);
    match plan.kind {
        // x̃, dx̃ and the padded input; z, a, dz and the dilated and widened dz
        PlanKind::Conv(_) => 2 * input + padded_input(plan) + 5 * output,
        // ã (and its gradient); z, a, dz
        PlanKind::Dense { .. } => 2 * input + 3 * output,
        _ => input + 2 * output,
    }
}

/// Values one example keeps in `plan`'s buffers in an evaluation pass.
fn evaluation_values(plan: &Plan) -> u64 {
    padded_input(plan).max(plan.input.units() as u64) + 2 * plan.output.units() as u64
}

/// Values of the parameters of `plan`, and of a DropConnect weight mask applied to a copy.
fn parameter_values(plan: &Plan) -> (u64, u64) {
    let params = plan.params() as u64;
    let dropconnect = plan.noise.as_ref().is_some_and(|(spec, _, _)| spec.noise == NoiseKind::DropConnect);
    let weights = plan.file_shapes().map_or(0, |(w, _)| w.iter().map(|&d| d as u64).product());
    (params, if dropconnect { weights } else { 0 })
}

/// The widest input or output of the plan: the network's buffers between layers.
fn widest(plans: &[Plan]) -> u64 {
    plans.iter().map(|p| p.input.units().max(p.output.units()) as u64).max().unwrap_or(0)
}

/// What training `plans` in batches of `batch` examples needs, evaluating `eval_rows` examples a
/// pass, on `threads` worker threads.
pub fn training(plans: &[Plan], batch: usize, eval_rows: usize, threads: usize) -> Estimate {
    let (mut params, mut copies, mut per_example) = (0u64, 0u64, 2 * widest(plans));
    for p in plans {
        let (values, dropconnect) = parameter_values(p);
        params = params.saturating_add(values);
        copies = copies.saturating_add(dropconnect);
        per_example = per_example.saturating_add(training_values(p));
    }
    Estimate {
        // value, gradient, two optimizer slots
        parameters: F32.saturating_mul(params.saturating_mul(4).saturating_add(copies)),
        batch: F32.saturating_mul(per_example).saturating_mul(batch as u64),
        evaluation: evaluation(plans, eval_rows, threads).evaluation,
        threads: PER_THREAD.saturating_mul(threads as u64),
    }
}

/// What evaluating `plans` (a saved model) `eval_rows` examples a pass needs on `threads` threads.
pub fn evaluation(plans: &[Plan], eval_rows: usize, threads: usize) -> Estimate {
    let params: u64 = plans.iter().map(|p| p.params() as u64).fold(0, u64::saturating_add);
    let per_example = plans.iter().map(evaluation_values).fold(2 * widest(plans), u64::saturating_add);
    Estimate {
        parameters: F32.saturating_mul(params),
        batch: 0,
        evaluation: F32.saturating_mul(per_example).saturating_mul(eval_rows as u64),
        threads: PER_THREAD.saturating_mul(threads as u64),
    }
}

/// The memory available to a run: `MemAvailable` of /proc/meminfo (the kernel's own
/// estimate of what can be had without swapping); `None` where that is not known.
pub fn available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `bytes` as a person reads it: `3.2 GiB`, `512 MiB`.
pub fn show_bytes(bytes: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    if bytes as f64 >= GIB {
        format!("{:.1} GiB", bytes as f64 / GIB)
    } else {
        format!("{:.0} MiB", (bytes as f64 / MIB).ceil())
    }
}

/// An error when `estimate` exceeds `available` bytes: the figure by part and the limit, and
/// `change`, what the user can change (the flags or file that set the sizes).
pub fn check(estimate: &Estimate, available: Option<u64>, change: &str) -> Result<()> {
    let Some(limit) = available else { return Ok(()) };
    let total = estimate.total();
    if total <= limit {
        return Ok(());
    }
    let Estimate { parameters, batch, evaluation, threads } = *estimate;
    Err(Error::Config(format!(
        "the run needs about {} of memory ({} parameters and optimizer state, {} per training batch, {} per \
         evaluation pass, {} thread workspaces), but there are {} available: {change}",
        show_bytes(total),
        show_bytes(parameters),
        show_bytes(batch),
        show_bytes(evaluation),
        show_bytes(threads),
        show_bytes(limit)
    )))
}

/// Refuse a training run of `plans` in batches of `batch` examples that cannot work on this
/// machine, before anything is allocated: a batch size out of range, a batch whose widest layer
/// is past one tensor's limit, or a run whose [`training`] estimate exceeds [`available`].
/// `batch_name` names where the batch size came from (`--batch`, a file's training state),
/// `change` what the user can change.
pub fn check_training(plans: &[Plan], batch: usize, batch_name: &str, change: &str) -> Result<()> {
    if batch == 0 || batch > MAX_BATCH {
        return Err(Error::Config(format!("{batch_name} {batch}: the batch size must be in 1..={MAX_BATCH}")));
    }
    let widest = plans.iter().map(Plan::values_per_example).max().unwrap_or(0);
    if batch.saturating_mul(widest) > MAX_TENSOR_ELEMENTS {
        return Err(Error::Config(format!(
            "{batch_name} {batch}: a layer that needs {widest} values per example would need more than \
             {MAX_TENSOR_ELEMENTS} for the batch: {change}"
        )));
    }
    let estimate = training(plans, batch, crate::eval::eval_rows(plans), rayon::current_num_threads());
    check(&estimate, available(), change)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::Stack;
    use crate::Scaling;

    fn plans(arch: &str) -> Vec<Plan> {
        crate::layer::plan(&Stack::parse(arch, Scaling::Inverted).unwrap()).unwrap()
    }

    #[test]
    fn an_mlp_counts_its_parameters_four_times_and_its_units_per_example() {
        // 784 → 100 → 10: 78,500 + 1,010 parameters; per example 2·784 (widest) + dense 1
        // (2·784 + 3·100) + relu fused + dense 2 (2·100 + 3·10)
        let p = plans("784,dense100,relu,dense10");
        let e = training(&p, 128, 1000, 2);
        assert_eq!(e.parameters, 4 * 4 * 79_510);
        assert_eq!(e.batch, 4 * 128 * (2 * 784 + 2 * 784 + 300 + 200 + 30));
        assert_eq!(e.threads, 2 * PER_THREAD);
        assert_eq!(e.total(), e.parameters + e.batch + e.evaluation + e.threads);
    }

    #[test]
    fn a_wide_padded_convolution_is_refused_with_its_figure() {
        // 16 channels of 828x828 (padding 400) per example: 11 M values, ×5 buffers ×128 examples
        let p = plans("1x28x28,conv16k1p400,relu,flatten,dense10");
        let e = training(&p, 128, 1000, 2);
        assert!(e.batch > 20 << 30, "{e:?}");
        let err = check(&e, Some(8 << 30), "lower --batch").unwrap_err().to_string();
        assert!(err.contains("8.0 GiB available") && err.contains("lower --batch"), "{err}");
        assert!(check(&e, None, "").is_ok(), "unknown memory: no check");
        assert!(check(&training(&plans("784,dense10"), 128, 1000, 2), Some(8 << 30), "").is_ok());
    }

    #[test]
    fn the_machine_s_memory_is_read_where_the_kernel_says_it() {
        // Linux always has MemAvailable (since 3.14); elsewhere the check is skipped, as documented
        if std::path::Path::new("/proc/meminfo").exists() {
            assert!(available().is_some_and(|b| b > 1 << 20));
        } else {
            eprintln!("no /proc/meminfo: the memory check is skipped on this system");
        }
    }
}
