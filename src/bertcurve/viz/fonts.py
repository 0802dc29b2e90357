"""A CJK font for matplotlib, so Chinese labels never render as empty boxes.

Order of preference:

1. the font file named by the environment variable ``BERTCURVE_CJK_FONT``;
2. a CJK font installed on the system that matplotlib's font manager knows
   (Noto Sans CJK, Source Han Sans, WenQuanYi, Microsoft YaHei, PingFang, ...);
3. Noto Sans SC, shipped by the ``pylopdf-fonts-zh-cn`` dependency, so a
   fresh ``pip install`` can always draw Chinese.

Each candidate is checked for the glyphs we actually draw before it is used.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from bertcurve.errors import UserError

ENV_FONT = "BERTCURVE_CJK_FONT"

# Characters every bilingual label needs: if a font lacks one of them it is not a CJK font for us.
_PROBE = "训练步数准确率损失学习预测残差对比"

# Well-known CJK sans-serif families, best first. Serif (Song/Ming) faces come last: they read
# worse at small sizes on screen.
_PREFERRED_FAMILIES = (
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "Source Han Sans SC",
    "Source Han Sans CN",
    "Sarasa Gothic SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Microsoft YaHei",
    "PingFang SC",
    "Hiragino Sans GB",
    "Heiti SC",
    "SimHei",
    "Noto Sans CJK JP",
    "Noto Sans CJK TC",
    "Droid Sans Fallback",
    "Noto Serif CJK SC",
    "AR PL UMing CN",
    "SimSun",
)


@dataclass(frozen=True)
class CJKFont:
    """The font chosen for Chinese text."""

    family: str     # the family name matplotlib knows it by
    path: Path      # the font file
    source: str     # "env", "system" or "package"


def _covers(path: str | Path, text: str = _PROBE) -> bool:
    """True when the font file has a glyph for every character of ``text``."""
    from matplotlib.ft2font import FT2Font

    try:
        charmap = FT2Font(str(path)).get_charmap()
    except (OSError, RuntimeError, ValueError):
        return False
    return all(ord(ch) in charmap for ch in text)


def _register(path: Path) -> str:
    """Add a font file to matplotlib's font manager; return its family name."""
    from matplotlib import font_manager

    font_manager.fontManager.addfont(str(path))
    return font_manager.FontProperties(fname=str(path)).get_name()


def _system_font() -> CJKFont | None:
    from matplotlib import font_manager

    by_name: dict[str, list[str]] = {}
    for entry in font_manager.fontManager.ttflist:
        by_name.setdefault(entry.name, []).append(entry.fname)
    for family in _PREFERRED_FAMILIES:
        for fname in by_name.get(family, ()):
            if _covers(fname):
                return CJKFont(family, Path(fname), "system")
    return None


def _package_font() -> CJKFont | None:
    spec = importlib.util.find_spec("pylopdf_fonts_zh_cn")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "NotoSansSC-Regular.otf"
    if not path.is_file() or not _covers(path):
        return None
    return CJKFont(_register(path), path, "package")


@lru_cache(maxsize=1)
def find_cjk_font() -> CJKFont:
    """The CJK font to draw Chinese with (see the module docstring for the order).

    Raises UserError when there is none, rather than drawing empty boxes.
    """
    override = os.environ.get(ENV_FONT)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise UserError(f"{ENV_FONT}={override} is not a font file; unset it or point it at a .ttf/.otf/.ttc")
        if not _covers(path):
            raise UserError(f"{ENV_FONT}={override} has no Chinese glyphs; point it at a CJK font")
        return CJKFont(_register(path), path, "env")
    found = _system_font() or _package_font()
    if found is None:
        raise UserError(
            "no font with Chinese glyphs found; install one (`pip install pylopdf-fonts-zh-cn` or "
            "`apt-get install fonts-noto-cjk`) or use --lang en"
        )
    return found


def configure_matplotlib() -> CJKFont:
    """Make matplotlib draw Chinese with the CJK font; return the font used.

    The CJK face comes first so Latin and Chinese in one label share a look;
    DejaVu Sans stays as a per-glyph fallback (matplotlib >= 3.6) for symbols
    the CJK face lacks.
    """
    import matplotlib

    font = find_cjk_font()
    matplotlib.rcParams["font.family"] = "sans-serif"
    matplotlib.rcParams["font.sans-serif"] = [font.family, "DejaVu Sans"]
    # Noto/Source Han have U+2212, but many system CJK fonts do not: a hyphen is always safe.
    matplotlib.rcParams["axes.unicode_minus"] = _covers(font.path, "\u2212")
    matplotlib.rcParams["svg.fonttype"] = "path"  # SVGs render the same without the font installed
    return font


def has_bold(family: str) -> bool:
    """True when matplotlib knows a bold face of ``family`` (else bold would be faked as regular
    with a warning per text)."""
    from matplotlib import font_manager

    return any(
        entry.name == family and (entry.weight == "bold" or (isinstance(entry.weight, int) and entry.weight >= 600))
        for entry in font_manager.fontManager.ttflist
    )
