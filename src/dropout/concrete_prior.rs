//! The prior behind concrete dropout's regulariser and the coefficients it gives each loss
//! (math.md N6): the paper's objective, mean NLL + KL/N, divided by the factor κ that turns the
//! loss as dropnet computes it into the mean negative log-likelihood of an example.

use crate::loss::Loss;

/// The coefficients of the concrete regulariser (math.md N6): `c_w = l²/(2κN)` on the weight term
/// and `c_e = 1/(κN)` on the entropy term (0 and 0: no regulariser).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ConcreteRegularizer {
    pub weight: f64,
    pub entropy: f64,
}

impl ConcreteRegularizer {
    /// The coefficients for length-scale `l`, `examples` training examples N and the loss's
    /// likelihood scale κ ([`likelihood_scale`]): the paper's objective, mean NLL + KL/N, divided
    /// by κ so that the loss keeps its own scale.
    pub fn new(lengthscale: f64, examples: usize, likelihood_scale: f64) -> Self {
        let n = examples.max(1) as f64 * likelihood_scale;
        Self { weight: lengthscale * lengthscale / (2.0 * n), entropy: 1.0 / n }
    }
}

/// κ of math.md N6: the mean negative log-likelihood of an example is κ·J (plus a constant) for
/// the loss J as dropnet computes it, with `outputs` the network's output units and `tau` the
/// precision of mse's Gaussian likelihood in the units trained on. Cross-entropy is a mean NLL
/// already (κ = 1); bce-with-logits and gaussian-nll average over the output units (κ = the units
/// per example); mse is the mean of (y − ŷ)² over D outputs, whose NLL is τ/2·Σ_d (y − ŷ)²
/// (κ = τD/2).
pub fn likelihood_scale(loss: Loss, outputs: usize, tau: f64) -> f64 {
    let units = outputs.max(1) as f64;
    match loss {
        Loss::SoftmaxCrossEntropy => 1.0,
        Loss::BinaryCrossEntropyWithLogits => units,
        Loss::GaussianNll => (outputs / 2).max(1) as f64,
        Loss::MeanSquaredError => tau * units / 2.0,
    }
}

/// The prior behind a run's concrete regulariser: the length-scale `l` and the observation
/// precision τ of mse (in the targets' original units; `None`: 1). Stored in a run's training
/// state.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcretePrior {
    pub lengthscale: f64,
    pub tau: Option<f64>,
}

impl ConcretePrior {
    /// The default length-scale, the one `dropnet uci` uses too.
    pub const LENGTHSCALE: f64 = 1e-2;

    pub fn validate(&self) -> std::result::Result<(), String> {
        let positive = |v: f64| v > 0.0 && v.is_finite();
        if !positive(self.lengthscale) || self.tau.is_some_and(|t| !positive(t)) {
            return Err(format!("the concrete prior {self:?} needs a positive, finite length-scale and τ"));
        }
        Ok(())
    }

    /// The coefficients for `examples` training examples of a network with `outputs` output
    /// units trained with `loss`. τ is the precision of the outputs the network is trained on:
    /// with targets standardised to deviations σ_d, τ·mean(σ_d²).
    pub fn regularizer(
        &self,
        examples: usize,
        loss: Loss,
        outputs: usize,
        target_variances: Option<&[f64]>,
    ) -> ConcreteRegularizer {
        let scale = target_variances.filter(|v| !v.is_empty()).map_or(1.0, |v| v.iter().sum::<f64>() / v.len() as f64);
        let tau = self.tau.map_or(1.0, |t| t * scale);
        ConcreteRegularizer::new(self.lengthscale, examples, likelihood_scale(loss, outputs, tau))
    }
}

impl Default for ConcretePrior {
    fn default() -> Self {
        Self { lengthscale: Self::LENGTHSCALE, tau: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_loss_gets_the_coefficients_of_the_paper_s_objective() {
        // math.md N6: J + KL/(κN), KL = Σ l²/(2q)·S + Σ (q ln q + (1−q) ln(1−q)); the coefficients
        // written out per loss from that formula, not from the code's κ
        let (l, n) = (0.03, 500usize);
        let nf = n as f64;
        let prior = ConcretePrior { lengthscale: l, tau: Some(4.0) };
        type Case<'a> = (Loss, usize, Option<&'a [f64]>, f64, f64);
        let cases: [Case; 6] = [
            // cross-entropy is a mean NLL: c_w = l²/(2N), c_e = 1/N (τ plays no part)
            (Loss::SoftmaxCrossEntropy, 10, None, l * l / (2.0 * nf), 1.0 / nf),
            // BCE over 3 outputs: the mean NLL is 3·J
            (Loss::BinaryCrossEntropyWithLogits, 3, None, l * l / (6.0 * nf), 1.0 / (3.0 * nf)),
            // the Gaussian NLL over 2 targets (4 outputs): 2·J
            (Loss::GaussianNll, 4, None, l * l / (4.0 * nf), 1.0 / (2.0 * nf)),
            // mse, one output, τ = 4: the authors' l²/(τN) and 2/(τN)
            (Loss::MeanSquaredError, 1, None, l * l / (4.0 * nf), 2.0 / (4.0 * nf)),
            // mse, two outputs standardised with variances 0.5 and 1.5: τ·1 = 4, l²/(τDN), 2/(τDN)
            (Loss::MeanSquaredError, 2, Some(&[0.5, 1.5]), l * l / (8.0 * nf), 2.0 / (8.0 * nf)),
            // one output of variance 2: the trained-on precision is 4·2 = 8
            (Loss::MeanSquaredError, 1, Some(&[2.0]), l * l / (8.0 * nf), 2.0 / (8.0 * nf)),
        ];
        for (loss, outputs, variances, weight, entropy) in cases {
            let r = prior.regularizer(n, loss, outputs, variances);
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-15 * b;
            assert!(close(r.weight, weight) && close(r.entropy, entropy), "{loss}, {outputs} outputs: {r:?}");
        }
        // without --tau, mse's τ is 1: one output gives l²/N and 2/N
        let r = ConcretePrior { lengthscale: l, tau: None }.regularizer(n, Loss::MeanSquaredError, 1, None);
        assert_eq!((r.weight, r.entropy), (l * l / nf, 2.0 / nf));
    }
}
