"""The bf16 autocast path of a GPU run, exercised on the CPU (slow there, but the same code).

Only pinned memory and the CUDA kernels themselves stay untested without a GPU.
"""

from __future__ import annotations

import math

from safetensors.torch import load_file

from bertcurve import layout
from bertcurve.cli import main
from bertcurve.training.metrics_log import read_records

STEPS = ["--max-steps", "4", "--warmup-steps", "2", "--eval-every", "2", "--save-every", "2", "--quiet"]


def _train(tiny_data_dir, out, *flags: str) -> list[dict]:
    code = main(["train", "--data", str(tiny_data_dir), "--out", str(out), "--preset", "tiny",
                 "--device", "cpu", *STEPS, *flags])
    assert code == 0
    return read_records(out / layout.METRICS)


def test_bf16_autocast_trains_on_cpu(tiny_data_dir, tmp_path):
    bf16 = _train(tiny_data_dir, tmp_path / "bf16", "--dtype", "bf16")
    fp32 = _train(tiny_data_dir, tmp_path / "fp32", "--dtype", "fp32")
    train_bf16 = [r for r in bf16 if r["split"] == "train"]
    train_fp32 = [r for r in fp32 if r["split"] == "train"]
    assert [r["step"] for r in train_bf16] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in train_bf16)
    # Autocast really ran in bf16 (about 3 significant digits), close to fp32 but not equal.
    assert train_bf16[0]["loss"] != train_fp32[0]["loss"]
    assert abs(train_bf16[-1]["loss"] - train_fp32[-1]["loss"]) < 0.05 * train_fp32[-1]["loss"]
    # The weights stay fp32 (autocast, not a bf16 model), in the checkpoint and final model.
    final = load_file(str(tmp_path / "bf16" / layout.FINAL_MODEL_DIR / "model.safetensors"))
    assert {str(t.dtype) for t in final.values()} == {"torch.float32"}
