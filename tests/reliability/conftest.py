"""Helpers for the reliability suite (crash safety, damaged files, hostile input).

Shared pieces live here as fixtures and plain functions so that both the
tests and ``bench/reliability.py`` (which imports this file by path) use the
same fault injectors and checks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # reltools, also used by bench/reliability.py
    sys.path.insert(0, str(HERE))

# Real Chinese sentences (reviews and news) used to build hostile files that can still succeed.
REAL_SENTENCES = [
    "这家酒店的位置非常好，离地铁站只有五分钟的路程，房间干净整洁，服务员态度也很热情。",
    "早餐的种类比较少，而且味道一般，不过价格还算合理，下次出差可能还会选择这里入住。",
    "这本书的内容很充实，作者用通俗易懂的语言讲述了复杂的历史事件，值得推荐给大家阅读。",
    "新华社北京一月一日电，国家主席在新年讲话中回顾了过去一年经济社会发展取得的成就。",
    "手机的电池续航能力不错，正常使用可以坚持一整天，但是充电速度稍微有点慢，希望改进。",
    "今天天气很好，我们一家人一起去公园散步，孩子们在草地上放风筝，玩得非常开心快乐。",
    "会议指出，要进一步加强农村基础设施建设，提高农民收入水平，推动城乡经济协调发展。",
    "快递送货速度很快，包装也很结实，打开后发现商品和图片上的一模一样，质量非常满意。",
    "据统计，去年全市共接待国内外游客一千多万人次，旅游总收入比前年增长了百分之十五。",
    "房间的隔音效果太差了，晚上能清楚地听到隔壁房间的说话声，整夜都没有睡好，很失望。",
    "这部电影的故事情节紧凑，演员的表演也很自然，特别是结尾部分让人感动得流下了眼泪。",
    "专家认为，随着科学技术的不断进步，人工智能将在医疗教育交通等领域发挥越来越大作用。",
]

# Characters that trip naive text handling.
RTL_AND_FORMAT = ["\u200f", "\u202e", "\u202d", "\u200b", "\u200d", "\ufeff", "\u2066", "\u2069"]
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇨🇳", "🀄", "\U0001F9E7"]
ODD_SEPARATORS = ["\r", "\u2028", "\u2029", "\u0085", "\x0b", "\x0c", "\x1c"]


def valid_data_dir(path: Path) -> dict[str, Any]:
    """Assert that ``path`` is a complete, self-consistent data directory; return meta."""
    from bertcurve import layout
    from bertcurve.datadir import DataDir

    data = DataDir(path)
    meta = data.meta
    assert meta["vocab_size"] == len(data.tokenizer())
    for split in layout.SPLITS:
        arrays = data.split(split)
        assert arrays.n_sentences == meta["splits"][split]["sentences"] > 0
        assert int(arrays.ids.max()) < meta["vocab_size"]
        assert np.all(np.diff(arrays.sentence_offsets) > 0)
    text = (path / layout.VAL_TEXT).read_bytes().decode("utf-8")  # strict: valid UTF-8
    assert "\x00" not in text
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    leftovers = [p.name for p in path.parent.iterdir() if ".staging-" in p.name]
    assert leftovers == [], f"staging folders left behind: {leftovers}"
    return meta


def run_cli(*args: str, timeout: float = 120, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m bertcurve ARGS`` in a fresh process (text output, not checked)."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="Agg", **(env or {}))
    return subprocess.run([sys.executable, "-m", "bertcurve", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd)


def assert_clean_failure(proc: subprocess.CompletedProcess, *, code: int | None = None) -> str:
    """A refused input: non-zero exit, no traceback, one error line. Returns the error line."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    if code is not None:
        assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("bertcurve: error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


@pytest.fixture(scope="session")
def hostile_ok_corpus(tmp_path_factory) -> Path:
    """A small real-Chinese .txt that prepare accepts, to mutate in tests."""
    path = tmp_path_factory.mktemp("hostile") / "ok.txt"
    path.write_text("\n".join(REAL_SENTENCES) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def reference_run_dir(tiny_data_dir, tmp_path_factory) -> Path:
    """An uninterrupted tiny run (reltools.TINY_RUN) on the tiny data dir (read only)."""
    import reltools

    out = tmp_path_factory.mktemp("reference") / "run"
    outcome = reltools.run_child(reltools.train_argv(tiny_data_dir, out))
    assert outcome.exitcode == 0, outcome
    return out
