"""bertcurve: pretrain Chinese BERT masked language models and study their learning curves.

Every CLI verb is also a Python function::

    import bertcurve
    data = bertcurve.prepare(["demo"], out="data/demo")
    bertcurve.train(data="data/demo", out="runs/demo", preset="demo")
    result = bertcurve.analyze("runs/demo")

Functions are imported lazily, so ``import bertcurve`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public function -> module that defines it
_API = {
    "prepare": "bertcurve.prepare",
    "train": "bertcurve.train",
    "analyze": "bertcurve.analyze",
    "compare": "bertcurve.compare",
    "plot": "bertcurve.plot",
    "report": "bertcurve.report",
    "study": "bertcurve.study",
    "dashboard": "bertcurve.dashboard",
    "fill_mask": "bertcurve.fillmask",
    "export": "bertcurve.export",
    "export_history": "bertcurve.history",
    "load_log": "bertcurve.sources",
}

__all__ = ["__version__", "UserError", *_API]

from bertcurve.errors import UserError  # noqa: E402


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'bertcurve' has no attribute {name!r}")
