"""bertcurve export: a Hugging Face model dir + model card that the fill-mask pipeline loads offline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bertcurve import layout
from bertcurve.cli import main
from bertcurve.errors import UserError
from bertcurve.stages.export import EvalPoint, curve_summary, eval_curve, export, read_metrics
from bertcurve.stages.fillmask import fill_mask
from test_fillmask import make_run_dir

TEXTS = ["今天天气很[MASK]。", "北京是中国的[MASK]都，人民生活幸福。", "我们去公园散[MASK]。"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_data_dir) -> Path:
    evals = {10: 0.05, 20: 0.12, 30: 0.2, 40: 0.24, 50: 0.256}
    return make_run_dir(tmp_path_factory.mktemp("exp") / "run", tiny_data_dir, steps=(10, 50), evals=evals)


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory) -> Path:
    return export(run_dir, tmp_path_factory.mktemp("out") / "zh-bert")


def test_export_is_a_complete_hf_model_dir(exported):
    names = {p.name for p in exported.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md",
            layout.EXPORT_INFO} <= names
    assert not any(n.startswith(".") for n in names)
    cfg = json.loads((exported / "config.json").read_text())
    assert cfg["architectures"] == ["BertForMaskedLM"]
    tok_cfg = json.loads((exported / "tokenizer_config.json").read_text())
    assert tok_cfg["model_max_length"] <= cfg["max_position_embeddings"]


def test_pipeline_offline_gives_our_top_k(exported, run_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    from transformers import pipeline

    fill = pipeline("fill-mask", model=str(exported), device="cpu")
    theirs = fill(TEXTS, top_k=5)
    ours = fill_mask(exported, TEXTS, top_k=5)
    from_run = fill_mask(run_dir, TEXTS, top_k=5)
    for t, o, r in zip(theirs, ours, from_run):
        assert [c["token"] for c in t] == [c.token_id for c in o.masks[0].candidates]
        assert [c["token_str"].replace(" ", "") for c in t] == [c.token for c in o.masks[0].candidates]
        np.testing.assert_allclose([c["score"] for c in t], [c.probability for c in o.masks[0].candidates],
                                   rtol=1e-4)
        assert [c.token_id for c in r.masks[0].candidates] == [c.token_id for c in o.masks[0].candidates]


def test_model_card_states_data_steps_accuracy_and_curve(exported, tiny_data_dir):
    card = (exported / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlanguage: zh\n")
    assert "pipeline_tag: fill-mask" in card
    assert "25.6 % ± 1.0 % (standard error) at step 50, 2,000 masked characters" in card
    assert "50 of 50 planned optimizer steps" in card
    meta = json.loads((tiny_data_dir / layout.DATA_META).read_text(encoding="utf-8"))
    assert f"{meta['splits']['train']['sentences']:,} training sentences" in card
    assert meta["sources"][0]["name"] in card
    assert "rose from 5.0 % at step 10 to 25.6 % at step 50" in card
    assert 'pipeline("fill-mask"' in card and "bertcurve fill-mask" in card
    assert "\nlicense:" not in card.split("\n---\n")[0]  # no licence claimed unless given
    info = json.loads((exported / layout.EXPORT_INFO).read_text(encoding="utf-8"))
    assert info["format"] == layout.EXPORT_FORMAT and info["step"] == 50
    assert info["eval"]["mlm_accuracy"] == pytest.approx(0.256)


def test_card_metadata_has_model_index_dataset_and_the_licence_given(run_dir, tiny_data_dir, tmp_path):
    from huggingface_hub import ModelCard

    out = tmp_path / "zh-bert-licensed"
    assert main(["export", str(run_dir), "--out", str(out), "--license", "Apache-2.0"]) == 0
    data = ModelCard.load(out / "README.md").data
    assert data.license == "apache-2.0" and data.language == "zh" and data.pipeline_tag == "fill-mask"
    results = {r.metric_name: r for r in data.eval_results}
    assert set(results) == {"Held-out MLM accuracy", "Held-out MLM top-5 accuracy", "Held-out MLM loss"}
    acc = results["Held-out MLM accuracy"]
    assert acc.metric_type == "accuracy" and acc.metric_value == pytest.approx(0.256)
    assert results["Held-out MLM loss"].metric_value == pytest.approx(6.5)
    assert acc.task_type == "fill-mask" and acc.dataset_split == "validation"
    meta = json.loads((tiny_data_dir / layout.DATA_META).read_text(encoding="utf-8"))
    assert acc.dataset_name == ", ".join(s["name"] for s in meta["sources"])
    assert acc.dataset_type == tiny_data_dir.name and data.model_name == out.name
    info = json.loads((out / layout.EXPORT_INFO).read_text(encoding="utf-8"))
    assert info["license"] == "apache-2.0" and info["run_name"] == run_dir.name


def test_no_absolute_path_of_the_exporting_machine_in_any_exported_file(exported, run_dir, tiny_data_dir):
    machine_paths = {str(run_dir.resolve()), str(tiny_data_dir.resolve()), str(run_dir.resolve().parent),
                     str(Path.home())}
    for path in exported.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            for where in machine_paths:
                assert where.encode() not in content, f"{path.name} records {where}"


def test_training_batch_accuracy_never_enters_the_model_index(tmp_path, tiny_data_dir):
    from huggingface_hub import ModelCard

    run = make_run_dir(tmp_path / "run", tiny_data_dir, steps=(10, 20), evals={10: 0.1, 20: 0.2})
    rows = [json.loads(line) for line in (run / layout.METRICS).read_text().splitlines()]
    (run / layout.METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows if r["split"] == "train"))
    card = ModelCard.load(export(run, tmp_path / "out") / "README.md")
    assert not card.data.eval_results
    assert "MLM accuracy on training batches" in card.text


def test_a_bad_licence_is_a_one_line_error(run_dir, tmp_path, capsys):
    assert main(["export", str(run_dir), "--out", str(tmp_path / "x"), "--license", "MIT License"]) == 2
    err = capsys.readouterr().err
    assert "--license" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_export_of_a_checkpoint_step(run_dir, tmp_path):
    out = export(run_dir, tmp_path / "step10", step=10)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "5.0 % ± 1.0 % (standard error) at step 10" in card
    a = fill_mask(out, TEXTS[0])[0].masks[0].candidates
    b = fill_mask(run_dir, TEXTS[0], step=10)[0].masks[0].candidates
    assert [c.token_id for c in a] == [c.token_id for c in b]
    # the exported dir remembers the step it came from
    from bertcurve.inference import load_masked_lm

    assert load_masked_lm(out, device="cpu").step == 10


def test_existing_output_is_kept_unless_forced(run_dir, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(UserError, match="--force"):
        export(run_dir, out)
    with pytest.raises(UserError, match="did not write.*even with --force"):
        export(run_dir, out, force=True)  # not an earlier export: never replaced
    assert (out / "precious.txt").read_text() == "keep me"
    earlier = export(run_dir, tmp_path / "earlier")
    (earlier / "stale.txt").write_text("old")
    with pytest.raises(UserError, match="earlier exported model; pass --force"):
        export(run_dir, earlier)
    with pytest.raises(UserError, match="no checkpoint for step 7"):
        export(run_dir, earlier, step=7, force=True)
    assert (earlier / "stale.txt").read_text() == "old"
    export(run_dir, earlier, force=True)
    assert not (earlier / "stale.txt").exists() and (earlier / "model.safetensors").is_file()


def test_bad_paths_are_one_line_errors(run_dir, tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    for argv in (["export", str(tmp_path / "plain"), "--out", str(tmp_path / "x")],
                 ["export", str(run_dir), "--out", str(run_dir / "inside")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("bertcurve: error: ") and len(err.strip().splitlines()) == 1, err


def test_metrics_reader_tolerates_a_torn_last_line_and_keeps_resumed_values(tmp_path):
    rows = [
        {"format": layout.METRICS_FORMAT, "step": 10, "split": "eval", "mlm_accuracy": 0.1, "masked_tokens": 100},
        {"format": layout.METRICS_FORMAT, "step": 20, "split": "eval", "mlm_accuracy": 0.3},
        {"format": layout.METRICS_FORMAT, "step": 20, "split": "eval", "mlm_accuracy": 0.2},  # after resume
    ]
    (tmp_path / layout.METRICS).write_text("\n".join(json.dumps(r) for r in rows) + '\n{"step": 30, "spl')
    curve = eval_curve(read_metrics(tmp_path))
    assert [(p.step, p.mlm_accuracy) for p in curve] == [(10, 0.1), (20, 0.2)]
    assert curve[0].mlm_accuracy_se == pytest.approx((0.1 * 0.9 / 100) ** 0.5)  # binomial SE
    (tmp_path / layout.METRICS).write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(UserError, match="line 2"):
        read_metrics(tmp_path)


def test_curve_summary_says_whether_the_curve_flattens():
    def pts(accs):
        return [EvalPoint(100 * i, a, None, None, None, None) for i, a in enumerate(accs)]

    flat = curve_summary(pts([0.0, 0.2, 0.3, 0.35, 0.37]))
    assert "rose from 0.0 % at step 0 to 37.0 % at step 400" in flat and "flattening" in flat
    straight = curve_summary(pts([0.0, 0.1, 0.2, 0.3, 0.4]))
    assert "still rising" in straight
    assert "too few" in curve_summary(pts([0.1]))
    assert "step 200" in curve_summary(pts([0.0, 0.2, 0.3, 0.35, 0.37]), upto=200)
    assert "stayed at 0.0 %" in curve_summary(pts([0.0, 0.0]))


def test_card_of_a_continued_run_names_the_starting_model(tmp_path, tiny_data_dir):
    run = make_run_dir(tmp_path / "run", tiny_data_dir, steps=(10,), evals={10: 0.3})
    cfg = json.loads((run / layout.RUN_CONFIG).read_text())
    cfg["init_from"] = {"name": "bert-base-chinese", "path": str(tmp_path / "bert-base-chinese")}
    (run / layout.RUN_CONFIG).write_text(json.dumps(cfg))
    out = export(run, tmp_path / "adapted")
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "continued pretraining of an existing BERT model" in card
    assert "continued from `bert-base-chinese`" in card
    assert str(tmp_path).encode() not in b"".join(p.read_bytes() for p in out.iterdir() if p.is_file())
