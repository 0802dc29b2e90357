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
    "prepare": "bertcurve.stages.prepare",
    "train": "bertcurve.stages.train",
    "analyze": "bertcurve.stages.analyze",
    "compare": "bertcurve.stages.compare",
    "plot": "bertcurve.stages.plot",
    "report": "bertcurve.stages.report",
    "study": "bertcurve.stages.study",
    "dashboard": "bertcurve.stages.dashboard",
    "fill_mask": "bertcurve.stages.fillmask",
    "export": "bertcurve.stages.export",
    "export_history": "bertcurve.stages.history",
    "sweep": "bertcurve.stages.sweep",
    "load_log": "bertcurve.curves.logs",
}

__all__ = ["__version__", "UserError", *_API]

from bertcurve.errors import UserError  # noqa: E402


def __getattr__(name: str) -> Any:
    if name in _API:
        function = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = function  # later lookups skip this hook
        return function
    raise AttributeError(f"module 'bertcurve' has no attribute {name!r}")
