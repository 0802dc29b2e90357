"""Checkpoints: checksums, corruption fallback, pickle refusal, pruning, write failures."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from bertcurve import layout
from bertcurve.training.checkpoint import (
    CorruptCheckpoint,
    latest_good_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from bertcurve.training.config import build_config
from bertcurve.errors import UserError
from bertcurve.training.metrics_log import read_records
from bertcurve.training.model import build_model


@pytest.fixture()
def saved_training(tmp_path):
    """Checkpoints at steps 10, 20, 30 of a tiny model whose optimizer has taken a step,
    and the model, optimizer state and RNG state they were written from."""
    cfg = build_config("tiny")
    torch.manual_seed(0)
    net = build_model(cfg.model, 50)
    opt = torch.optim.AdamW(net.parameters())
    net(input_ids=torch.randint(5, 50, (2, 8)), labels=torch.randint(5, 50, (2, 8))).loss.backward()
    opt.step()  # so the optimizer state holds moments and a step count
    state = {"optimizer": opt.state_dict(), "rng": {"torch": torch.get_rng_state()}}
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, step, net, state, {"note": "test"})
    return tmp_path, net, state


@pytest.fixture()
def three_checkpoints(saved_training) -> Path:
    return saved_training[0]


def _folder(run: Path, step: int) -> Path:
    return run / layout.CHECKPOINTS_DIR / layout.checkpoint_dir_name(step)


def _tensors(tree, prefix: str = "") -> dict[str, torch.Tensor | object]:
    """Every leaf of nested dicts/lists, keyed by its path."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _tensors(sub, f"{prefix}{key}/").items()}
    if isinstance(tree, (list, tuple)):
        return {k: v for i, sub in enumerate(tree) for k, v in _tensors(sub, f"{prefix}{i}/").items()}
    return {prefix: tree}


def test_round_trip_restores_every_tensor(saved_training):
    run, net, state = saved_training
    loaded = load_checkpoint(_folder(run, 30))
    assert loaded.step == 30 and loaded.meta["note"] == "test"
    # Every weight, bit for bit; only the tied output matrix is left to re-tying.
    original = net.state_dict()
    tied = {k for k in original if k not in loaded.weights}
    assert tied <= {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}, tied
    assert set(loaded.weights) == set(original) - tied
    for name, tensor in loaded.weights.items():
        assert tensor.dtype == original[name].dtype and torch.equal(tensor, original[name]), name
    # Every optimizer moment, step count and hyper-parameter, and the RNG state.
    want, got = _tensors(state), _tensors(loaded.training_state)
    assert set(got) == set(want) and any("exp_avg_sq" in k for k in got)
    for key, value in want.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(got[key], value) and got[key].dtype == value.dtype, key
        else:
            assert got[key] == value, key


@pytest.mark.parametrize("damage", ["truncate", "bitflip", "missing", "checksum", "meta"])
def test_damaged_newest_checkpoint_falls_back_to_previous(three_checkpoints, damage):
    folder = _folder(three_checkpoints, 30)
    weights = folder / layout.CKPT_WEIGHTS
    if damage == "truncate":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "bitflip":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0x10
        weights.write_bytes(bytes(data))
    elif damage == "missing":
        (folder / layout.CKPT_TRAINING_STATE).unlink()
    elif damage == "checksum":
        meta = json.loads((folder / layout.CKPT_META).read_text())
        meta["files"][layout.CKPT_WEIGHTS]["sha256"] = "0" * 64
        (folder / layout.CKPT_META).write_text(json.dumps(meta))
    else:
        (folder / layout.CKPT_META).write_text("{broken")
    with pytest.raises(CorruptCheckpoint):
        load_checkpoint(folder)
    warnings: list[str] = []
    good = latest_good_checkpoint(three_checkpoints, warn=warnings.append)
    assert good is not None and good.step == 20
    assert len(warnings) == 1 and "step-00000030" in warnings[0] and "\n" not in warnings[0]


def test_crafted_pickle_is_refused_without_running(three_checkpoints, tmp_path):
    folder = _folder(three_checkpoints, 30)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    import pickle

    state = folder / layout.CKPT_TRAINING_STATE
    state.write_bytes(pickle.dumps({"optimizer": Evil()}))
    # An attacker who also fixes the checksum still gets nowhere: weights_only refuses.
    from bertcurve.training.checkpoint import sha256_file

    meta = json.loads((folder / layout.CKPT_META).read_text())
    meta["files"][layout.CKPT_TRAINING_STATE] = {"sha256": sha256_file(state),
                                                 "bytes": state.stat().st_size}
    (folder / layout.CKPT_META).write_text(json.dumps(meta))
    with pytest.raises(CorruptCheckpoint, match="weights_only"):
        load_checkpoint(folder)
    assert not marker.exists()


def test_prune_keeps_latest_and_milestones(three_checkpoints):
    prune_checkpoints(three_checkpoints, keep=1, milestones=(10,))
    left = sorted(p.name for p in (three_checkpoints / layout.CHECKPOINTS_DIR).iterdir())
    assert left == ["step-00000010", "step-00000030"]


def test_crash_before_rename_leaves_no_visible_checkpoint(three_checkpoints):
    cfg = build_config("tiny")
    net = build_model(cfg.model, 50)

    def crash(tmp):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(three_checkpoints, 40, net, {}, {}, before_rename=crash)
    names = sorted(p.name for p in (three_checkpoints / layout.CHECKPOINTS_DIR).iterdir())
    assert names == ["step-00000010", "step-00000020", "step-00000030"]


def test_disk_full_while_checkpointing_stops_cleanly(tiny_data_dir, tmp_path, monkeypatch):
    """ENOSPC during a checkpoint write: clear message, earlier checkpoint and metrics intact."""
    import bertcurve.training.checkpoint as ckpt_mod
    from bertcurve.stages.train import train

    real_save = torch.save
    calls = {"n": 0}

    def full_disk(obj, f, *a, **kw):
        calls["n"] += 1
        if calls["n"] >= 2:  # the second checkpoint (step 20)
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(ckpt_mod.torch, "save", full_disk)
    out = tmp_path / "full"
    with pytest.raises(UserError, match=r"No space left on device.*step-00000010.*intact"):
        train(tiny_data_dir, out, preset="tiny", quiet=True)
    monkeypatch.setattr(ckpt_mod.torch, "save", real_save)
    names = [p.name for p in (out / layout.CHECKPOINTS_DIR).iterdir()]
    assert names == ["step-00000010"]
    load_checkpoint(out / layout.CHECKPOINTS_DIR / "step-00000010")
    raw = (out / layout.METRICS).read_bytes()
    assert raw.endswith(b"\n")
    assert max(r["step"] for r in read_records(out / layout.METRICS)) == 20
    # Space is back: the run resumes and finishes.
    assert train(tiny_data_dir, out, quiet=True).completed


def test_read_only_metrics_stops_cleanly(tiny_data_dir, tmp_path, monkeypatch):
    import bertcurve.training.metrics_log as ml
    from bertcurve.stages.train import train

    real_write = os.write
    state = {"n": 0}

    def failing_write(fd, data):
        if data.startswith(b'{"format": "bertcurve.metrics/1", "step": 15,'):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_write(fd, data)

    monkeypatch.setattr(ml.os, "write", failing_write)
    out = tmp_path / "ro"
    with pytest.raises(UserError, match=r"metrics.jsonl.*Read-only.*step-00000010"):
        train(tiny_data_dir, out, preset="tiny", quiet=True)
    records = list(read_records(out / layout.METRICS))
    assert max(r["step"] for r in records) == 14
    assert (out / layout.METRICS).read_bytes().endswith(b"\n")
