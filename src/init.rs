//! How a network's initial weights are drawn: the named rules of `--init` and their draws from
//! the weight-initialisation stream.

use crate::activation::Activation;
use crate::rng::StreamRng;
use crate::stack::{Stack, Token};

/// How initial weights are drawn (biases start at 0).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// N(0, 2/fan_in) (He et al. 2015), for the ReLU family.
    He,
    /// N(0, 2/(fan_in + fan_out)) (Glorot & Bengio 2010).
    Glorot,
    /// U(−√(6/(fan_in + fan_out)), +√(6/(fan_in + fan_out))), Glorot & Bengio's own uniform form
    /// (Keras's default, which the published UCI runs used).
    #[serde(rename = "glorot-uniform")]
    GlorotUniform,
    /// N(0, 1/fan_in) (LeCun et al. 1998), which SELU's self-normalisation assumes.
    Lecun,
    /// N(0, σ²) with the given σ.
    Normal(f64),
}

impl Init {
    /// LeCun for SELU, He for the rest of the ReLU family, Glorot otherwise.
    pub fn for_activation(act: Activation) -> Self {
        match act {
            Activation::Selu => Init::Lecun,
            Activation::Relu | Activation::LeakyRelu | Activation::Elu | Activation::Gelu => Init::He,
            _ => Init::Glorot,
        }
    }

    /// The initialisation a stack gets by default: that of its first activation (He if it has
    /// none), for every layer, as for an MLP's hidden activation.
    pub fn for_stack(stack: &Stack) -> Self {
        let first = stack.tokens.iter().find_map(|t| match t {
            Token::Activation { activation } => Some(*activation),
            _ => None,
        });
        first.map_or(Init::He, Init::for_activation)
    }

    /// One initial weight: `σ·n` for a normal draw n, or `limit·(2u − 1)` for the uniform form.
    pub(crate) fn draw(self, fan_in: usize, fan_out: usize, rng: &mut StreamRng) -> f64 {
        match self {
            Init::GlorotUniform => (6.0 / (fan_in + fan_out) as f64).sqrt() * (2.0 * rng.uniform() - 1.0),
            _ => self.sigma(fan_in, fan_out) * rng.normal(),
        }
    }

    fn sigma(self, fan_in: usize, fan_out: usize) -> f64 {
        match self {
            Init::He => (2.0 / fan_in as f64).sqrt(),
            Init::Glorot | Init::GlorotUniform => (2.0 / (fan_in + fan_out) as f64).sqrt(),
            Init::Lecun => (1.0 / fan_in as f64).sqrt(),
            Init::Normal(sigma) => sigma,
        }
    }
}

/// `he`, `glorot`, `glorot-uniform`, `lecun`, or a positive σ for N(0, σ²) (`--init`).
impl std::str::FromStr for Init {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        Ok(match text {
            "he" => Init::He,
            "glorot" => Init::Glorot,
            "glorot-uniform" => Init::GlorotUniform,
            "lecun" => Init::Lecun,
            sigma => match sigma.parse::<f64>() {
                Ok(s) if s > 0.0 && s.is_finite() => Init::Normal(s),
                _ => {
                    return Err(format!(
                        "'{}': expected he, glorot, glorot-uniform, lecun or a positive σ",
                        crate::error::shorten(text, crate::error::QUOTE_CHARS)
                    ))
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Stream;

    #[test]
    fn glorot_uniform_weights_fill_their_interval_with_its_variance() {
        // 300 → 200: limit a = √(6/500) = 0.1095; U(−a, a) has variance a²/3 = 0.004 (the normal
        // form's 2/500 too). X² of a uniform X has variance 4a⁴/45, so the mean of 60,000 squares
        // has standard error √(4a⁴/45/60000) ≈ 1.5e-5: within 4 of them
        let mut rng = StreamRng::new(5, Stream::Init, 0, 0);
        let w: Vec<f64> = (0..60_000).map(|_| Init::GlorotUniform.draw(300, 200, &mut rng)).collect();
        let limit = (6.0f64 / 500.0).sqrt();
        assert!(w.iter().all(|v| v.abs() <= limit), "a weight outside ±{limit}");
        assert!(w.iter().any(|v| v.abs() > 0.99 * limit), "the interval's ends are reached");
        let var = w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64;
        let se = (4.0 * limit.powi(4) / 45.0 / w.len() as f64).sqrt();
        assert!((var - limit * limit / 3.0).abs() < 4.0 * se, "variance {var}");
        assert_eq!("glorot-uniform".parse::<Init>(), Ok(Init::GlorotUniform));
        assert!("glorot-normal".parse::<Init>().unwrap_err().contains("glorot-uniform"));
    }
}
