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
    /// A schedule's factors are finite and non-negative, and γ is positive: γ = 0 would set the
    /// learning rate to 0 after the first epoch (or the first `every`), which stops training
    /// without a word.
    pub fn validate(&self) -> Result<(), String> {
        let (what, factor) = match *self {
            LrSchedule::Constant => return Ok(()),
            LrSchedule::Exponential { gamma } => ("exp:GAMMA", gamma),
            LrSchedule::Step { every: 0, .. } => return Err("step:EVERY:GAMMA needs EVERY ≥ 1".into()),
            LrSchedule::Step { gamma, .. } => ("step:EVERY:GAMMA", gamma),
            LrSchedule::InverseT { decay } if decay >= 0.0 && decay.is_finite() => return Ok(()),
            LrSchedule::InverseT { decay } => return Err(format!("inv:DECAY needs a finite DECAY ≥ 0, not {decay}")),
        };
        if !(factor > 0.0 && factor.is_finite()) {
            return Err(format!(
                "{what} needs a positive, finite GAMMA, not {factor}: 0 would stop training after the first epoch"
            ));
        }
        Ok(())
    }

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

/// `constant`, `exp:GAMMA`, `inv:DECAY` or `step:EVERY:GAMMA`, checked by [`LrSchedule::validate`].
impl std::str::FromStr for LrSchedule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let num = |s: &str| s.parse::<f64>().ok();
        let schedule = match parts.as_slice() {
            ["constant"] => Some(LrSchedule::Constant),
            ["exp", g] => num(g).map(|gamma| LrSchedule::Exponential { gamma }),
            ["inv", d] => num(d).map(|decay| LrSchedule::InverseT { decay }),
            ["step", e, g] => e.parse().ok().zip(num(g)).map(|(every, gamma)| LrSchedule::Step { every, gamma }),
            _ => None,
        };
        let shown = crate::error::shorten(text, crate::error::QUOTE_CHARS);
        let schedule = schedule
            .ok_or_else(|| format!("'{shown}': expected constant, exp:GAMMA, inv:DECAY or step:EVERY:GAMMA"))?;
        schedule.validate().map_err(|e| format!("'{shown}': {e}"))?;
        Ok(schedule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_factor_that_stops_training_is_refused() {
        for text in ["exp:0", "step:3:0", "exp:-0.5", "step:0:0.5", "inv:-1", "exp:inf", "exp:NaN"] {
            let err = text.parse::<LrSchedule>().unwrap_err();
            assert!(err.contains(text), "{text}: {err}");
        }
        assert_eq!("exp:0.5".parse(), Ok(LrSchedule::Exponential { gamma: 0.5 }));
        assert_eq!("step:3:0.1".parse(), Ok(LrSchedule::Step { every: 3, gamma: 0.1 }));
        assert_eq!("inv:0".parse(), Ok(LrSchedule::InverseT { decay: 0.0 }));
    }
}
