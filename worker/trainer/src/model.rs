//! The seed's CNN: two conv blocks (conv 3×3 → batch norm → ReLU → 2×2 max
//! pool), dropout, two fully connected layers and log-softmax over 10 classes.
//!
//! Initialisation follows PyTorch's defaults so that a run here and a run of
//! the reference PyTorch script start from the same distribution: conv and
//! linear weights and biases are uniform in ±1/√fan_in, batch-norm weights are
//! 1 and biases 0 (tch's own default for batch-norm weights is uniform(0, 1)).
//! The forward pass uses `flatten(1, -1)`, so a traced TorchScript keeps a
//! dynamic batch dimension.

use mnist_common::config::TrainConfig;
use tch::nn::{self, Init, ModuleT};
use tch::{Kind, Tensor};

/// The network. Build it with [`Net::new`] on a `VarStore` path.
#[derive(Debug)]
pub struct Net {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    dropout_conv: f64,
    dropout_fc: f64,
}

/// PyTorch's default bound for weights and biases: 1/√fan_in.
fn uniform(fan_in: i64) -> Init {
    let b = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform { lo: -b, up: b }
}

fn conv(p: nn::Path, c_in: i64, c_out: i64) -> nn::Conv2D {
    let fan_in = c_in * 9;
    let cfg = nn::ConvConfig { padding: 1, ws_init: uniform(fan_in), bs_init: uniform(fan_in), ..Default::default() };
    nn::conv2d(p, c_in, c_out, 3, cfg)
}

fn bn(p: nn::Path, c: i64) -> nn::BatchNorm {
    let cfg = nn::BatchNormConfig { ws_init: Init::Const(1.0), bs_init: Init::Const(0.0), ..Default::default() };
    nn::batch_norm2d(p, c, cfg)
}

fn linear(p: nn::Path, d_in: i64, d_out: i64) -> nn::Linear {
    let cfg = nn::LinearConfig { ws_init: uniform(d_in), bs_init: Some(uniform(d_in)), bias: true };
    nn::linear(p, d_in, d_out, cfg)
}

impl Net {
    /// Create the layers under `p` with the sizes from `cfg`.
    pub fn new(p: &nn::Path, cfg: &TrainConfig) -> Net {
        let flat = cfg.conv2_channels * 7 * 7;
        Net {
            conv1: conv(p / "conv1", 1, cfg.conv1_channels),
            bn1: bn(p / "bn1", cfg.conv1_channels),
            conv2: conv(p / "conv2", cfg.conv1_channels, cfg.conv2_channels),
            bn2: bn(p / "bn2", cfg.conv2_channels),
            fc1: linear(p / "fc1", flat, cfg.fc_width),
            fc2: linear(p / "fc2", cfg.fc_width, 10),
            dropout_conv: cfg.dropout_conv,
            dropout_fc: cfg.dropout_fc,
        }
    }
}

impl ModuleT for Net {
    /// `xs`: N×1×28×28 normalised images; returns N×10 log-probabilities.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.apply(&self.conv1)
            .apply_t(&self.bn1, train)
            .relu()
            .max_pool2d_default(2)
            .apply(&self.conv2)
            .apply_t(&self.bn2, train)
            .relu()
            .max_pool2d_default(2)
            .dropout(self.dropout_conv, train)
            .flatten(1, -1)
            .apply(&self.fc1)
            .relu()
            .dropout(self.dropout_fc, train)
            .apply(&self.fc2)
            .log_softmax(-1, Kind::Float)
    }
}

/// Number of trainable parameters for a config.
pub fn parameter_count(cfg: &TrainConfig) -> i64 {
    let (c1, c2, f) = (cfg.conv1_channels, cfg.conv2_channels, cfg.fc_width);
    (9 * c1 + c1) + 2 * c1 + (9 * c1 * c2 + c2) + 2 * c2 + (c2 * 49 * f + f) + (f * 10 + 10)
}
