"""Metric names other tools write, mapped to bertcurve's normalised names (docs/CONTRACTS.md).

Shared by the log readers (``logs``) and the readers of other tools' formats (``logformats``).
"""

# TensorBoard tags (HF Trainer and common conventions) -> normalised names.
TB_NAMES = {
    "train/loss": "train_loss",
    "train/learning_rate": "lr",
    "train/grad_norm": "grad_norm",
    "train/epoch": "epoch",
    "eval/loss": "eval_loss",
    "eval/accuracy": "eval_mlm_accuracy",
    "train/mlm_accuracy": "train_mlm_accuracy",
    "eval/mlm_accuracy": "eval_mlm_accuracy",
    "loss": "train_loss",
    "lr": "lr",
    "learning_rate": "lr",
}
