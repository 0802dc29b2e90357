"""Run under torchrun: train each case of a JSON {name: overrides} into ROOT/name, tiny preset.

One start-up of torch for several distributed runs (tests/training/test_train_ddp.py).
    python -m torch.distributed.run --nproc_per_node=2 ddp_worker.py DATA_DIR ROOT CASES_JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bertcurve.stages.train import train


def main(data: str, root: str, cases: str) -> None:
    for name, overrides in json.loads(cases).items():
        result = train(data, Path(root) / name, preset="tiny", quiet=True, overrides=overrides)
        assert result.completed, name


if __name__ == "__main__":
    main(*sys.argv[1:4])
