"""Chinese labels render with real glyphs: no empty boxes, no missing-glyph warnings."""

from __future__ import annotations

import io
import logging
import warnings

import matplotlib
import pytest
from matplotlib.figure import Figure

from bertcurve.errors import UserError
from bertcurve.viz.fonts import ENV_FONT, configure_matplotlib, find_cjk_font

LABELS = "训练步数 | Training step — MLM 准确率（验证集）−0.5"


def _render(fmt: str, caplog) -> list[str]:
    """Draw a bilingual figure; return every missing-glyph / font-fallback complaint."""
    fig = Figure(figsize=(4, 3))
    ax = fig.subplots()
    ax.set_title(LABELS)
    ax.set_xlabel("训练步数")
    ax.plot([0, 1], [-0.5, 0.5], label="学习曲线拟合")
    ax.legend()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, logger="matplotlib"):
        warnings.simplefilter("always")
        fig.savefig(io.BytesIO(), format=fmt)
    complaints = [str(w.message) for w in caught if "Glyph" in str(w.message) or "missing" in str(w.message)]
    complaints += [r.getMessage() for r in caplog.records if "findfont" in r.getMessage() or "Glyph" in r.getMessage()]
    return complaints


@pytest.mark.parametrize("fmt", ["png", "svg"])
def test_chinese_renders_without_missing_glyphs(fmt, caplog):
    with matplotlib.rc_context():
        font = configure_matplotlib()
        assert font.path.is_file()
        assert _render(fmt, caplog) == []


def test_without_a_cjk_font_the_check_does_fail(caplog):
    # The control: DejaVu Sans alone has no Chinese glyphs, and the check above notices.
    with matplotlib.rc_context({"font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans"]}):
        assert any("missing" in c or "Glyph" in c for c in _render("png", caplog))


def test_env_override_must_be_a_cjk_font(monkeypatch, tmp_path):
    find_cjk_font.cache_clear()
    try:
        monkeypatch.setenv(ENV_FONT, str(tmp_path / "nope.ttf"))
        with pytest.raises(UserError, match="not a font file"):
            find_cjk_font()
        find_cjk_font.cache_clear()
        import matplotlib.font_manager as fm

        dejavu = fm.findfont("DejaVu Sans")
        monkeypatch.setenv(ENV_FONT, dejavu)
        with pytest.raises(UserError, match="no Chinese glyphs"):
            find_cjk_font()
    finally:
        monkeypatch.delenv(ENV_FONT, raising=False)
        find_cjk_font.cache_clear()
