"""Settings from the command line and files, and the typed reading of a run's config.json."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from bertcurve import layout
from bertcurve.cli import main
from bertcurve.errors import UserError
from bertcurve.stages import train as train_stage
from bertcurve.training.config import (
    PRESET_ALIASES,
    PRESETS,
    DataConfig,
    EvalConfig,
    EvalSetInfo,
    ModelConfig,
    OptimConfig,
    RunConfig,
    SpeedConfig,
    build_config,
    load_run_config,
    parse_run_config,
    preset_names,
    settings,
    to_dict,
)

# The flags `bertcurve train` had before they were generated, with the settings they set.
LEGACY_FLAGS = {
    "--max-steps": "optim.max_steps", "--lr": "optim.lr", "--warmup-steps": "optim.warmup_steps",
    "--schedule": "optim.schedule", "--min-lr-ratio": "optim.min_lr_ratio",
    "--weight-decay": "optim.weight_decay", "--micro-batch": "optim.micro_batch",
    "--grad-accum": "optim.grad_accum", "--clip": "optim.clip", "--seq-len": "data.seq_len",
    "--mask-prob": "data.mask_prob", "--hidden-size": "model.hidden_size", "--layers": "model.num_layers",
    "--heads": "model.num_heads", "--ffn": "model.intermediate_size", "--eval-every": "eval.eval_every",
    "--eval-tokens": "eval.eval_tokens", "--eval-seed": "eval.eval_seed",
    "--eval-mask-prob": "eval.mask_prob", "--log-every": "eval.log_every",
    "--save-every": "eval.save_every", "--keep": "eval.keep", "--seed": "seed",
    "--save-at": "eval.save_at", "--whole-word": "data.whole_word", "--nsp": "data.nsp",
    "--untied": "model.tie_word_embeddings", "--device": "speed.device", "--dtype": "speed.dtype",
    "--compile": "speed.compile", "--threads": "speed.threads", "--prefetch": "speed.prefetch",
}


def parse(*argv: str) -> tuple[dict, SpeedConfig]:
    parser = argparse.ArgumentParser()
    train_stage.add_arguments(parser)
    args = parser.parse_args(["--data", "d", "--out", "o", *argv])
    from bertcurve.training.config import settings_from_args

    return settings_from_args(args)


def test_every_field_of_every_config_dataclass_has_exactly_one_flag():
    keys = {s.key: s.flag for s in settings()}
    for section, cls in (("model", ModelConfig), ("data", DataConfig), ("optim", OptimConfig),
                         ("eval", EvalConfig), ("speed", SpeedConfig)):
        for f in dataclasses.fields(cls):
            assert f"{section}.{f.name}" in keys, f"{section}.{f.name} has no flag"
    assert keys["seed"] == "--seed"
    flags = list(keys.values())
    assert len(flags) == len(set(flags))
    assert all(s.help for s in settings()), [s.key for s in settings() if not s.help]


def test_legacy_flags_keep_their_names_and_settings():
    keys = {s.flag: s.key for s in settings()}
    for flag, key in LEGACY_FLAGS.items():
        assert keys.get(flag) == key, flag


def test_legacy_flags_set_what_they_set_before():
    overrides, speed = parse("--max-steps", "7", "--lr", "3e-4", "--schedule", "linear", "--layers", "3",
                             "--heads", "1", "--ffn", "96", "--eval-mask-prob", "0.2", "--mask-prob", "0.3",
                             "--save-at", "5, 10", "--whole-word", "--untied", "--seed", "9",
                             "--device", "cpu", "--threads", "2", "--compile")
    assert overrides == {"optim.max_steps": 7, "optim.lr": 3e-4, "optim.schedule": "linear",
                         "model.num_layers": 3, "model.num_heads": 1, "model.intermediate_size": 96,
                         "eval.mask_prob": 0.2, "data.mask_prob": 0.3, "eval.save_at": [5, 10],
                         "data.whole_word": True, "model.tie_word_embeddings": False, "seed": 9}
    assert speed == SpeedConfig(device="cpu", threads=2, compile=True)
    assert parse() == ({}, SpeedConfig())  # nothing given: the preset decides, speed defaults


def test_settings_that_needed_a_json_file_now_have_flags():
    overrides, _ = parse("--beta1", "0.8", "--beta2", "0.95", "--eps", "1e-6", "--hidden-dropout", "0",
                         "--attention-dropout", "0.05", "--max-position-embeddings", "256",
                         "--no-whole-word", "--no-nsp")
    cfg = build_config("tiny", overrides=overrides)
    assert (cfg.optim.beta1, cfg.optim.beta2, cfg.optim.eps) == (0.8, 0.95, 1e-6)
    assert (cfg.model.hidden_dropout, cfg.model.attention_dropout) == (0.0, 0.05)
    assert cfg.model.max_position_embeddings == 256
    assert cfg.data.whole_word is False and cfg.data.nsp is False


def test_bad_flag_values_are_one_line_errors(capsys):
    with pytest.raises(UserError, match="--save-at must be comma-separated step numbers, got 'x,2'"):
        parse("--save-at", "x,2")
    with pytest.raises(SystemExit):
        parse("--schedule", "step")
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("content, needles", [
    ({"optim": "fast"}, ["unknown setting 'optim'", "optim is a section", "lr, weight_decay", "'fast'"]),
    ({"optim": {"fast": 1}}, ["unknown setting 'optim.fast'", "optim settings are lr, weight_decay"]),
    ({"bogus": 1}, ["unknown setting 'bogus'", "model, data, optim, eval and seed", "hidden_size"]),
])
def test_unknown_keys_in_a_config_file_name_the_known_ones(tmp_path, content, needles):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(content))
    with pytest.raises(UserError) as info:
        build_config("tiny", path)
    text = str(info.value)
    assert "\n" not in text and str(path) in text
    for needle in needles:
        assert needle in text, (needle, text)


def test_yaml_config_files_read_like_json(tmp_path):
    path = tmp_path / "cfg.yaml"
    # `1e-3` without a dot is a string to YAML 1.1; a config reader must take it as a number.
    path.write_text("optim:\n  lr: 1e-3\n  max_steps: 60\n  beta2: 0.98\ndata:\n  seq_len: 24\nseed: 4\n",
                    encoding="utf-8")
    cfg = build_config("tiny", path)
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)
    assert (cfg.optim.max_steps, cfg.optim.beta2, cfg.data.seq_len, cfg.seed) == (60, 0.98, 24, 4)
    same = tmp_path / "cfg.json"
    same.write_text(json.dumps({"optim": {"lr": 1e-3, "max_steps": 60, "beta2": 0.98},
                                "data": {"seq_len": 24}, "seed": 4}))
    assert build_config("tiny", same) == cfg
    yml = tmp_path / "cfg.yml"
    yml.write_text("optim.lr: 2.0e-4\n", encoding="utf-8")
    assert build_config("tiny", yml).optim.lr == 2e-4


@pytest.mark.parametrize("name, text, needle", [
    ("bad.yaml", "optim: [1, 2\n", "not valid YAML"),
    ("list.yaml", "- lr: 1\n", "must hold a YAML mapping"),
    ("empty.yaml", "", "must hold a YAML mapping"),
    ("bad.json", "{not json", "not valid JSON"),
    ("deep.json", "[" * 200_000 + "]" * 200_000, "nests too deeply"),
    ("deep.yaml", "[" * 200_000 + "]" * 200_000, "nests too deeply"),
    ("deepvalue.json", '{"optim": {"lr": ' + "[" * 900 + "]" * 900 + "}}", "optim.lr must be a number"),
])
def test_broken_config_files_are_one_line_errors(tmp_path, name, text, needle):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError) as info:
        build_config("tiny", path)
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert len(str(info.value)) < 600


def test_preset_aliases_are_the_same_settings_and_listed_as_aliases(capsys):
    assert PRESET_ALIASES == {"seed-100k": "seed-48m"}
    assert "seed-100k" not in PRESETS and "seed-100k" in preset_names()
    assert build_config("seed-100k") == build_config("seed-48m")
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "seed-100k is an alias of seed-48m" in out


def _saved(**changes) -> dict:
    return RunConfig(train=build_config("tiny"), **changes).to_dict()


def test_run_config_reads_back_typed_and_lossless(tmp_path):
    original = RunConfig(train=build_config("seed-48m", overrides={"eval.mask_prob": 0.2, "mask_prob": 0.4}),
                         speed=SpeedConfig(device="cpu", threads=3), preset="seed-100k", data_dir="/d",
                         tokenizer_sha256="ab", vocab_size=5000, parameters=123, architecture="BertForMaskedLM",
                         eval_set=EvalSetInfo(4000, 90, "ff", 0.04), world_size=2, extra={"future": [1]})
    (tmp_path / layout.RUN_CONFIG).write_text(json.dumps(original.to_dict()))
    assert load_run_config(tmp_path) == original
    # The sections are read by name, not by their order in the file.
    obj = original.to_dict()
    obj["train"] = dict(reversed(list(obj["train"].items())))
    loaded = parse_run_config(json.loads(json.dumps(obj)))
    assert (loaded.train.data.mask_prob, loaded.train.eval.mask_prob) == (0.4, 0.2)


def test_run_config_problems_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="has no config.json, so it is not a run directory"):
        load_run_config(tmp_path)
    assert load_run_config(tmp_path, missing_ok=True) is None
    path = tmp_path / layout.RUN_CONFIG
    cases = [
        ("{torn", "not valid JSON"),
        (json.dumps({"architectures": ["BertForMaskedLM"], "hidden_size": 32}), "not a bertcurve run config"),
        (json.dumps({"format": layout.RUN_CONFIG_FORMAT}), "\"train\" settings are missing"),
        (json.dumps(_saved() | {"vocab_size": "many"}), "vocab_size must be an integer"),
        (json.dumps(dict(_saved(), train={"optim": {"lr": -1}})), "optim.lr must be > 0"),
    ]
    for text, needle in cases:
        path.write_text(text)
        with pytest.raises(UserError) as info:
            load_run_config(tmp_path)
        assert needle in str(info.value) and "\n" not in str(info.value), (needle, str(info.value))


def test_a_real_run_config_reads_back_exactly(tiny_data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--data", str(tiny_data_dir), "--out", str(out), "--preset", "tiny", "--max-steps", "2",
               "--warmup-steps", "1", "--beta2", "0.95", "--eps", "1e-7", "--hidden-dropout", "0",
               "--eval-tokens", "50", "--quiet"])
    assert rc == 0
    written = json.loads((out / layout.RUN_CONFIG).read_text())
    loaded = load_run_config(out)
    assert loaded.to_dict() == written
    assert (loaded.train.optim.beta2, loaded.train.optim.eps, loaded.train.model.hidden_dropout) == (0.95, 1e-7, 0.0)
    assert to_dict(loaded.train) == written["train"]


def test_cli_reports_a_bad_config_file_in_one_line(tiny_data_dir, tmp_path, capsys):
    cfg = tmp_path / "x.yaml"
    cfg.write_text("optim: fast\n", encoding="utf-8")
    rc = main(["train", "--data", str(tiny_data_dir), "--out", str(tmp_path / "run"), "--config", str(cfg)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "optim is a section, give it a mapping of its settings" in err and "max_steps" in err
    assert not (tmp_path / "run" / layout.RUN_CONFIG).exists()


def test_a_stage_reading_a_damaged_run_config_stops_with_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"format": layout.METRICS_FORMAT, "step": s, "split": "eval", "loss": 7 - s / 100,
             "mlm_accuracy": 0.01 * s / 10} for s in range(0, 200, 10)]
    (run / layout.METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / layout.RUN_CONFIG).write_text(json.dumps(dict(_saved(), train={"optim": {"lr": -1}})))
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "config.json is damaged" in err and "optim.lr" in err
    assert not (run / layout.REPORT_HTML).exists()


def test_every_flag_is_documented_in_run_dir_md():
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "run-dir.md").read_text(encoding="utf-8")
    missing = [s.flag for s in settings() if f"`{s.flag}" not in doc]
    assert not missing, f"add these flags to the options table of docs/run-dir.md: {missing}"
