"""`bertcurve dashboard`: the page, its status JSON and figure follow a growing metrics.jsonl."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest

from bertcurve import layout
from bertcurve.stages.dashboard import make_server
from bertcurve.training.config import RunConfig, build_config
from bertcurve.errors import UserError


def _line(step: int, split: str, **values) -> str:
    return json.dumps({"format": layout.METRICS_FORMAT, "step": step, "split": split, **values}) + "\n"


def _train_line(step: int) -> str:
    return _line(step, "train", loss=8.0 - step / 20, mlm_accuracy=0.01 * step / 5, lr=1e-3, grad_norm=1.0,
                 tokens_seen=step * 512, elapsed_s=step * 0.5, tokens_per_s=1024.0)


@pytest.fixture()
def served(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    saved = RunConfig(train=build_config("tiny", overrides={"max_steps": 100}))
    (run / layout.RUN_CONFIG).write_text(json.dumps(saved.to_dict()), encoding="utf-8")
    lines = [_train_line(s) for s in range(10, 30, 10)]
    lines.append(_line(20, "eval", loss=7.1, mlm_accuracy=0.05, mlm_accuracy_se=0.01, masked_tokens=400))
    (run / layout.METRICS).write_text("".join(lines), encoding="utf-8")
    waiting = tmp_path / "not-started"
    waiting.mkdir()
    server = make_server([run, waiting], port=0, refresh_s=2)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield base, run
    finally:
        server.shutdown()
        server.server_close()


def _get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=60) as res:
        return res.status, res.headers["Content-Type"], res.read()


def test_page_status_and_figure_follow_the_log(served):
    base, run = served
    status, ctype, page = _get(base + "/")
    assert status == 200 and ctype.startswith("text/html") and b"status.json" in page
    first = json.loads(_get(base + "/status.json")[2])
    main, waiting = first["runs"]
    assert main["step"] == 20 and main["max_steps"] == 100 and main["eval_mlm_accuracy"] == 0.05
    assert main["eta_s"] == pytest.approx(40.0)            # 80 steps left at 2 steps/s
    assert waiting["state"] == "waiting"
    status, ctype, png = _get(base + "/figure.png")
    assert ctype == "image/png" and png.startswith(b"\x89PNG")

    with open(run / layout.METRICS, "a", encoding="utf-8") as handle:
        handle.write(_train_line(30))
    second = json.loads(_get(base + "/status.json")[2])
    assert second["runs"][0]["step"] == 30 and second["version"] != first["version"]
    assert _get(base + "/figure.png")[2] != png            # re-drawn because the log grew


def test_only_its_own_paths_are_served(served):
    base, _run = served
    for path in ("/../../etc/passwd", "/metrics.jsonl", "/config.json"):
        with pytest.raises(urllib.error.HTTPError) as err:
            _get(base + path)
        assert err.value.code == 404


def test_bad_arguments(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        make_server([tmp_path / "nope"], port=0)
    with pytest.raises(UserError, match="--refresh"):
        make_server([tmp_path], port=0, refresh_s=0)
