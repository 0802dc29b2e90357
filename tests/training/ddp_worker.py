"""Run under torchrun: train each case of a JSON {name: overrides} into ROOT/name, tiny preset.

One start-up of torch for several distributed runs (tests/training/test_train_ddp.py).
    python -m torch.distributed.run --nproc_per_node=2 ddp_worker.py DATA_DIR ROOT CASES_JSON [FAULT]

FAULT ``RANK:STEP:POINT:SIGNAL`` (e.g. ``1:4:after-backward:SIGTERM``) makes process RANK send
itself SIGNAL at the trainer's fault point POINT of optimizer step STEP, as a user's
``kill`` or a crash would; a run it stops exits with the run's exit code (130 interrupted).
With BERTCURVE_TEST_SLOW_EXIT=S every process lingers S seconds after the trainer gives
back the signal handlers, as on a loaded machine, where torchrun's SIGTERM for the
survivors of a crash may arrive before their error line is printed.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from contextlib import nullcontext
from pathlib import Path

from bertcurve.stages.train import train
from bertcurve.training.trainer import StopRequest, inject_faults


def fault_hook(spec: str):
    rank, step, point, name = spec.split(":")
    mine = int(os.environ.get("RANK", "0")) == int(rank)

    def hook(where: str, at: int) -> None:
        if mine and where == point and at == int(step):
            os.kill(os.getpid(), getattr(signal, name))

    return hook


def linger_after_handlers(seconds: float) -> None:
    import time

    give_back = StopRequest.__exit__

    def slow_exit(self, *exc) -> None:
        give_back(self, *exc)
        time.sleep(seconds)

    StopRequest.__exit__ = slow_exit


def main(data: str, root: str, cases: str, fault: str = "") -> int:
    if os.environ.get("BERTCURVE_TEST_SLOW_EXIT"):
        linger_after_handlers(float(os.environ["BERTCURVE_TEST_SLOW_EXIT"]))
    with inject_faults(fault_hook(fault)) if fault else nullcontext():
        for name, overrides in json.loads(cases).items():
            result = train(data, Path(root) / name, preset="tiny", quiet=True, overrides=overrides)
            if not result.completed:
                return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
