"""atheris harness: ``bertcurve prepare`` on fuzzer-made files must succeed or raise UserError.

The first byte picks the reader (t: .txt, l: .jsonl, j: .json, g: .txt.gz); the rest
is the file. Any other exception is a crash that atheris reports (non-zero exit).
Run:  python tests/reliability/fuzz_prepare.py SEED_DIR -runs=1000
"""

from __future__ import annotations

import gzip
import os
import shutil
import sys
import tempfile
from pathlib import Path

import atheris

# Coverage feedback from bertcurve's own code only: instrumenting numpy/tokenizers costs
# tens of seconds of start-up and tells the fuzzer nothing about our readers.
with atheris.instrument_imports(include=["bertcurve"]):
    from bertcurve.data import cleaning, corpus  # noqa: F401  (instrumented for coverage feedback)
    from bertcurve.errors import UserError
    from bertcurve.stages.prepare import prepare

SUFFIX = {ord("t"): ".txt", ord("l"): ".jsonl", ord("j"): ".json", ord("g"): ".txt.gz"}
WORK = Path(tempfile.mkdtemp(prefix="bertcurve-fuzz-"))


def one_input(data: bytes) -> None:
    if not data:
        return
    suffix = SUFFIX.get(data[0], ".txt")
    body = data[1:]
    if suffix == ".txt.gz":
        body = gzip.compress(body)
    folder = Path(tempfile.mkdtemp(dir=WORK))
    try:
        path = folder / f"input{suffix}"
        path.write_bytes(body)
        try:
            prepare([path], folder / "out", min_chars=2, val_fraction=0.5, progress=False)
        except UserError as exc:
            if "\n" in str(exc).strip():
                raise AssertionError(f"multi-line error message: {exc!r}") from None
            if (folder / "out").exists():
                raise AssertionError("a refused input left an output directory") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    # prepare's warnings go to sys.stderr; libFuzzer's report goes to file descriptor 2 directly.
    sys.stderr = open(os.devnull, "w")
    atheris.Setup(sys.argv, one_input)
    try:
        atheris.Fuzz()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
