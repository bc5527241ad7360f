//! The names of the metrics a trial reports after every epoch, shared by the
//! worker that sends them and the coordinator that logs them to MLflow as
//! per-epoch histories.

/// Per-epoch metric names, in the order of `mnist_trainer::EpochMetrics`'
/// fields that carry them.
pub const EPOCH_METRICS: [&str; 6] = ["train_loss", "train_accuracy", "val_loss", "val_accuracy", "learning_rate", "epoch_seconds"];
