//! Learning-rate schedules, per epoch e = 0, 1, ...

use serde::{Deserialize, Serialize};

/// The learning rate η of epoch e.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LrSchedule {
    /// η0
    Constant,
    /// η0 · γ^e
    Exponential { gamma: f64 },
    /// η0 / (1 + decay · e)
    InverseT { decay: f64 },
    /// η0 · γ^⌊e / every⌋
    Step { every: usize, gamma: f64 },
}

impl LrSchedule {
    pub fn at(&self, lr0: f64, epoch: usize) -> f64 {
        let e = epoch as f64;
        match *self {
            LrSchedule::Constant => lr0,
            LrSchedule::Exponential { gamma } => lr0 * gamma.powf(e),
            LrSchedule::InverseT { decay } => lr0 / (1.0 + decay * e),
            LrSchedule::Step { every, gamma } => lr0 * gamma.powi((epoch / every.max(1)) as i32),
        }
    }
}
