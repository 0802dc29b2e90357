"""Config: presets, precedence, validation listing every problem."""

from __future__ import annotations

import json

import pytest

from bertcurve.training.config import PRESETS, build_config, from_dict, to_dict, validate
from bertcurve.errors import UserError


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_valid(name):
    cfg = build_config(name)
    assert validate(cfg) == []
    assert cfg.eval_every >= 1 and cfg.save_every >= 1 and cfg.log_every >= 1


def test_seed_presets_carry_the_seed_schedule():
    for name in ("seed-48m", "seed-50k", "seed-100k"):
        o = build_config(name).optim
        assert (o.lr, o.weight_decay, o.warmup_steps, o.schedule, o.micro_batch, o.grad_accum,
                o.clip) == (5e-5, 0.01, 2000, "cosine", 32, 4, 1.0)
    assert build_config("seed-50k").optim.max_steps == 50_000
    assert build_config("seed-100k").optim.max_steps == 100_000
    assert build_config("seed-48m").eval.eval_tokens >= 60_000


def test_seed_48m_parameter_count():
    from bertcurve.training.model import build_model, count_parameters

    cfg = build_config("seed-48m")
    net = build_model(cfg.model, 10_054)
    n = count_parameters(net)
    # 48.40M in the seed (no MLM transform layer) + BERT's 0.26M head transform.
    assert 48.3e6 < n < 48.8e6
    assert net.config.tie_word_embeddings is False
    assert net.config._attn_implementation == "sdpa"


def test_precedence_preset_file_overrides(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"optim": {"lr": 3e-4, "max_steps": 500}, "seq_len": 96}))
    cfg = build_config("demo", path, {"lr": 7e-4, "data.mask_prob": 0.2, "seed": 3})
    assert cfg.optim.lr == 7e-4            # override beats file
    assert cfg.optim.max_steps == 500      # file beats preset
    assert cfg.data.seq_len == 96
    assert cfg.data.mask_prob == 0.2
    assert cfg.seed == 3
    assert cfg.model.hidden_size == PRESETS["demo"]["model"]["hidden_size"]


def test_round_trip_through_dict():
    cfg = build_config("seed-48m")
    assert from_dict(json.loads(json.dumps(to_dict(cfg)))) == cfg


def test_invalid_config_lists_every_problem():
    with pytest.raises(UserError) as info:
        build_config("tiny", overrides={"lr": -1.0, "hidden_size": 30, "num_heads": 4,
                                        "mask_prob": 1.5, "warmup_steps": 1000, "max_steps": 10,
                                        "bogus_key": 1, "micro_batch": "big"})
    text = str(info.value)
    for needle in ("optim.lr", "divisible", "mask_prob", "warmup_steps", "bogus_key",
                   "micro_batch must be an integer"):
        assert needle in text, needle
    assert "6 problems" in text or "7 problems" in text


def test_unknown_preset_and_bad_file(tmp_path):
    with pytest.raises(UserError, match="unknown preset"):
        build_config("huge")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        build_config("tiny", bad)
    with pytest.raises(UserError, match="max_position_embeddings"):
        build_config("tiny", overrides={"seq_len": 128})


def test_initializer_range_sets_the_initial_weights_and_is_validated():
    from bertcurve.training.model import build_model

    for std in (0.02, 0.05):
        cfg = build_config("demo", overrides={"initializer_range": std})
        net = build_model(cfg.model, 3000)
        assert net.config.initializer_range == std       # saved with the model, HF's own field
        query = net.bert.encoder.layer[0].attention.self.query.weight
        assert abs(float(query.std()) - std) < 0.1 * std
    assert build_config("demo").model.initializer_range == 0.05
    with pytest.raises(UserError, match=r"model.initializer_range must be > 0, got 0"):
        build_config("demo", overrides={"initializer_range": 0.0})
    with pytest.raises(UserError, match=r"model.initializer_range inf is far too large"):
        build_config("demo", overrides={"initializer_range": float("inf")})


def test_short_seq_prob_is_a_share_and_not_for_nsp():
    assert build_config("tiny").data.short_seq_prob == 0.0   # runs saved before it read as 0
    assert build_config("tiny", overrides={"short_seq_prob": 0.1}).data.short_seq_prob == 0.1
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(UserError, match=r"data.short_seq_prob must be in \[0, 1\]"):
            build_config("tiny", overrides={"short_seq_prob": bad})
    with pytest.raises(UserError, match="NSP pairs already vary"):
        build_config("tiny", overrides={"short_seq_prob": 0.1, "nsp": True})
