//! FFN activations (`hidden_act`), as scalar f32 functions computed in f64 and rounded once.
//!
//! Below the model layer so that the kernels' CPU references (FFN1 epilogues) and the model's
//! reference forward pass share one definition.

/// The activation of the feed-forward network (`hidden_act`, DistilBERT's `activation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HiddenAct {
    /// `gelu`, `gelu_python`: exact GELU, `0.5 x (1 + erf(x / sqrt 2))`.
    Gelu,
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`, `gelu_accurate`: the tanh approximation
    /// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
    GeluTanh,
    /// `relu`.
    Relu,
    /// `silu` / `swish`: `x sigmoid(x)`.
    Silu,
}

/// Every `hidden_act` name [`HiddenAct::parse`] accepts (for error messages).
pub const HIDDEN_ACT_NAMES: &str =
    "gelu, gelu_python, gelu_new, gelu_pytorch_tanh, gelu_fast, gelu_accurate, relu, silu, swish";

impl HiddenAct {
    /// Parses a `hidden_act` string; `None` for names we do not implement.
    pub fn parse(name: &str) -> Option<HiddenAct> {
        Some(match name {
            "gelu" | "gelu_python" => HiddenAct::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" | "gelu_accurate" => HiddenAct::GeluTanh,
            "relu" => HiddenAct::Relu,
            "silu" | "swish" => HiddenAct::Silu,
            _ => return None,
        })
    }

    /// The activation applied to one value.
    pub fn apply(self, x: f32) -> f32 {
        match self {
            HiddenAct::Gelu => gelu_erf(x),
            HiddenAct::GeluTanh => gelu_tanh(x),
            HiddenAct::Relu => x.max(0.0),
            HiddenAct::Silu => silu(x),
        }
    }
}

/// Exact GELU, `0.5 x (1 + erf(x / sqrt 2))`, computed in f64 (as `0.5 x erfc(-x / sqrt 2)`,
/// which stays accurate for large negative `x`) and rounded once to f32.
pub fn gelu_erf(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * super::erf::erfc(-x * std::f64::consts::FRAC_1_SQRT_2)) as f32
}

/// The tanh approximation of GELU (`gelu_new`, `gelu_pytorch_tanh`), in f64.
pub fn gelu_tanh(x: f32) -> f32 {
    let x = x as f64;
    let c = (2.0 / std::f64::consts::PI).sqrt();
    (0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())) as f32
}

/// SiLU, `x sigmoid(x)`, in f64.
pub fn silu(x: f32) -> f32 {
    let x = x as f64;
    (x / (1.0 + (-x).exp())) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // PyTorch: F.gelu(1.0) = 0.8413447, F.gelu(1.0, approximate="tanh") = 0.8411920, F.silu(1.0) = 0.7310586
        assert!((gelu_erf(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu_tanh(1.0) - 0.841_192).abs() < 1e-6);
        assert!((silu(1.0) - 0.731_058_6).abs() < 1e-6);
        assert_eq!(HiddenAct::Relu.apply(-2.5), 0.0);
        assert_eq!(HiddenAct::Relu.apply(2.5), 2.5);
        assert_eq!(HiddenAct::parse("gelu_pytorch_tanh"), Some(HiddenAct::GeluTanh));
        assert_eq!(HiddenAct::parse("mish"), None);
    }
}
