//! The units-per-layer form of `--arch` (`784-1024-10`), with `--keep` per dense layer and
//! `--activation`, as a stack.

use super::{defaults, Options};
use dropnet::activation::Activation;
use dropnet::dropout::{Keep, Scaling};
use dropnet::error::{shorten, Error, Result, QUOTE_CHARS};
use dropnet::stack::Stack;

impl Options {
    /// The stack of the units-per-layer form `784-1024-10`.
    pub(super) fn mlp(&self, text: &str, scaling: Scaling) -> Result<Stack> {
        let v = &self.values;
        let sizes = text
            .split('-')
            .map(|s| s.trim().parse::<usize>().ok().filter(|&n| n > 0 && n <= dropnet::limits::MAX_LAYER_UNITS))
            .collect::<Option<Vec<_>>>()
            .filter(|v| v.len() >= 2)
            .ok_or_else(|| {
                self.error(
                    "arch",
                    format!(
                        "'{}' is not a list of unit counts like 784-1024-10 (each in 1..={}) nor tokens like 784,dense10",
                        shorten(text, QUOTE_CHARS),
                        dropnet::limits::MAX_LAYER_UNITS
                    ),
                )
            })?;
        let layers = sizes.len() - 1;
        let keep: Vec<Vec<f64>> = match &v.keep {
            Some(keep) if keep.len() == layers => keep.iter().map(|&p| vec![p]).collect(),
            Some(keep) => {
                return Err(self.error(
                    "keep",
                    format!(
                        "has {} values for the {layers} dense layers of {} {}",
                        keep.len(),
                        self.name("arch"),
                        shorten(text, QUOTE_CHARS)
                    ),
                ));
            }
            None => {
                (0..layers).map(|l| vec![if l == 0 { defaults::KEEP_INPUT } else { defaults::KEEP_HIDDEN }]).collect()
            }
        };
        for (l, k) in keep.iter().enumerate() {
            Keep::of_layer(k.clone(), l).map_err(|e| Error::Config(format!("{}: {e}", self.name("keep"))))?;
        }
        let hidden = v.activation.unwrap_or(Activation::Relu);
        Stack::mlp(&sizes, hidden, Activation::Identity, &keep, scaling)
    }
}
