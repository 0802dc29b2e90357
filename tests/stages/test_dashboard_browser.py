"""The dashboard page in a real browser (headless Chromium): the numbers its JavaScript draws
are the numbers in metrics.jsonl. Skipped where no Chromium is installed (.ci/run installs one)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading

import pytest

from bertcurve import layout
from bertcurve.stages.dashboard import make_server
from bertcurve.training.config import RunConfig, build_config

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome", "chrome")
                if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no headless Chromium installed")


def _line(step, split, **values):
    return json.dumps({"format": layout.METRICS_FORMAT, "step": step, "split": split, **values}) + "\n"


def test_the_page_shows_the_logs_numbers(tmp_path):
    run = tmp_path / "训练-run"
    run.mkdir()
    saved = RunConfig(train=build_config("tiny", overrides={"max_steps": 200}))
    (run / layout.RUN_CONFIG).write_text(json.dumps(saved.to_dict()), encoding="utf-8")
    lines = [_line(s, "train", loss=8.0 - s / 40, mlm_accuracy=0.02, lr=7.5e-4, tokens_per_s=4321.0,
                   elapsed_s=s * 0.5) for s in (10, 20, 30, 40)]
    lines.append(_line(40, "eval", loss=6.1234, mlm_accuracy=0.1875, mlm_accuracy_se=0.0125, masked_tokens=400))
    (run / layout.METRICS).write_text("".join(lines), encoding="utf-8")
    server = make_server([run], port=0, refresh_s=1)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        dom = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                              "--virtual-time-budget=8000", "--dump-dom", url],
                             capture_output=True, text=True, timeout=120).stdout
    finally:
        server.shutdown()
        server.server_close()
    row = re.search(r'<tbody id="runs">(.*?)</tbody>', dom, re.S)
    assert row, dom[:2000]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)
    assert cells[0] == "训练-run"
    assert cells[1] == "interrupted"                 # nobody holds the run's lock
    assert cells[2] == "40 / 200"
    assert cells[4] == "18.75% ± 1.25%"              # held-out accuracy ± SE from the eval line
    assert cells[5] == "6.1234"                      # held-out loss
    assert cells[6] == "4,321"                       # tokens/s of the last training line
    assert cells[7] == "7.50e-4"                     # learning rate
