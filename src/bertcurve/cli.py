"""The `bertcurve` command line: a dispatch table and nothing else.

Each verb lives in its own module, which defines ``add_arguments(parser)``
and ``run(args) -> int`` next to the documented Python function it calls.
Only the module of the verb being run is imported, so ``bertcurve --help``
is instant and does not load torch.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from bertcurve import __version__
from bertcurve.errors import UserError, error_line

# verb -> (module, one-line summary). The order is the order of a study.
VERBS: dict[str, tuple[str, str]] = {
    "prepare": ("bertcurve.stages.prepare", "clean, split and tokenize a Chinese corpus into a data directory"),
    "train": ("bertcurve.stages.train", "pretrain a BERT masked language model on a data directory"),
    "analyze": ("bertcurve.stages.analyze", "learning-curve statistics, fits and forecasts of a training log"),
    "compare": ("bertcurve.stages.compare", "compare the headline figures of several runs or logs"),
    "plot": ("bertcurve.stages.plot", "draw the learning-curve figures of one or more logs"),
    "report": ("bertcurve.stages.report", "write report.md and a self-contained report.html for a run"),
    "study": ("bertcurve.stages.study", "prepare -> train -> analyze -> plot -> report, resumable"),
    "fill-mask": ("bertcurve.stages.fillmask", "predict the characters behind [MASK] with a trained model"),
    "export": ("bertcurve.stages.export", "export a run as a Hugging Face model directory with a model card"),
    "export-history": ("bertcurve.stages.history", "write a run's metrics in another format (e.g. the seed's JSON)"),
    "sweep": ("bertcurve.stages.sweep", "hyperparameter search on Optuna, pruning hopeless trials by forecast"),
    "dashboard": ("bertcurve.stages.dashboard", "serve a live web page of one or more runs' learning curves"),
}

_IO_HINTS = {
    errno.ENOSPC: "the disk is full; free space or choose another --out",
    errno.EROFS: "the file system is read-only; choose a writable --out",
    errno.EACCES: "permission denied; choose a path you can write",
    errno.EDQUOT: "disk quota exceeded; free space or choose another --out",
    errno.EFBIG: "a file outgrew the allowed size (ulimit -f or the file system); raise the limit or choose another --out",
}


def _overview() -> str:
    width = max(len(v) for v in VERBS)
    lines = [
        f"bertcurve {__version__} - pretrain Chinese BERT models and study their learning curves",
        "",
        "usage: bertcurve VERB [options]     (bertcurve VERB --help for a verb's options)",
        "",
        "verbs:",
    ]
    lines += [f"  {verb:<{width}}  {summary}" for verb, (_, summary) in VERBS.items()]
    lines += ["", "A first run:  bertcurve study      (demo study on the built-in corpus)"]
    return "\n".join(lines)


def _load_verb(verb: str):
    module_name, summary = VERBS[verb]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise UserError(f"verb {verb!r} is not available in this version of bertcurve") from None
        raise UserError(
            f"verb {verb!r} needs the package {exc.name!r}; install it with `pip install {exc.name}`"
        ) from None
    return module, summary


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_overview())
        return 0
    if argv[0] in {"-V", "--version"}:
        print(f"bertcurve {__version__}")
        return 0
    verb = argv[0]
    try:
        if verb not in VERBS:
            close = [v for v in VERBS if v.startswith(verb[:3])]
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"unknown verb {verb!r}{hint} (run `bertcurve --help` for the list)")
        module, summary = _load_verb(verb)
        parser = argparse.ArgumentParser(
            prog=f"bertcurve {verb}",
            description=(module.__doc__ or summary).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(parser)
        args = parser.parse_args(argv[1:])
        return int(module.run(args) or 0)
    except UserError as exc:
        if not exc.said:
            print(error_line(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bertcurve: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno in _IO_HINTS and not os.environ.get("BERTCURVE_DEBUG"):
            where = f" ({exc.filename})" if exc.filename else ""
            print(error_line(f"{exc.strerror}{where}: {_IO_HINTS[exc.errno]}"), file=sys.stderr)
            return 1
        raise
