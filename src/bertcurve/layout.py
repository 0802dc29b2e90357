"""Every file name bertcurve reads or writes, in one place.

Stages talk to each other only through these documented files (see
``docs/data-dir.md`` and ``docs/run-dir.md``). Import names from here instead of spelling paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

# ---------------------------------------------------------------- data dir
# Written by `bertcurve prepare`, read by `bertcurve train`.
DATA_META = "meta.json"                  # format DATA_FORMAT
DATA_CARD = "DATASET.md"                 # human-readable dataset card
DATA_FORMAT = "bertcurve.data/1"
SPLITS = ("train", "val")
# Tokenizer files are whatever `PreTrainedTokenizerFast.save_pretrained` writes
# (tokenizer.json, tokenizer_config.json, special_tokens_map.json, vocab.txt);
# `transformers.AutoTokenizer.from_pretrained(data_dir)` loads them offline.
TOKENIZER_JSON = "tokenizer.json"
VOCAB_TXT = "vocab.txt"
VAL_TEXT = "val.txt"                     # cleaned validation sentences, one per line (UTF-8)
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4 in this order


ID_DTYPES = {"uint16": "u16", "uint32": "u32"}  # meta.json "id_dtype" -> ids file suffix


def ids_file(split: str, dtype: str = "uint16") -> str:
    """Flat token ids of every sentence of a split, no special tokens.

    ``uint16`` (``.u16``) while the vocabulary has at most 65,536 tokens,
    ``uint32`` (``.u32``) beyond; meta.json's ``id_dtype`` says which.
    """
    return f"{split}.ids.{ID_DTYPES[dtype]}"


def sentence_offsets_file(split: str) -> str:
    """int64 array, n_sentences + 1 entries: sentence i is ids[off[i]:off[i+1]]."""
    return f"{split}.sentences.i64"


def document_offsets_file(split: str) -> str:
    """int64 array, n_documents + 1 entries: document j is sentences doc[j]:doc[j+1]."""
    return f"{split}.documents.i64"


def word_starts_file(split: str) -> str:
    """uint8 per token (only with --whole-word): 1 where a jieba word starts."""
    return f"{split}.word_starts.u8"


def sentence_sources_file(split: str) -> str:
    """uint16 per sentence: index into meta.json's ``sources`` list."""
    return f"{split}.sources.u16"


# ----------------------------------------------------------------- run dir
# Written by `bertcurve train`, read by every later stage.
RUN_CONFIG = "config.json"               # format RUN_CONFIG_FORMAT
RUN_CONFIG_FORMAT = "bertcurve.run-config/1"
METRICS = "metrics.jsonl"                # one JSON object per line, METRICS_FORMAT
METRICS_FORMAT = "bertcurve.metrics/1"
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_PREFIX = "step-"
FINAL_MODEL_DIR = "final"                # Hugging Face model directory
LOCK_FILE = "train.lock"
EXTEND_INTENT = "extend.json"            # an `--extend-to` in progress (finished by the next train)
BRANCHES_DIR = "branches"                # abandoned cooldowns of extended runs, one folder each
TRACKERS_STATE = "trackers.json"         # --report-to: the tracker run ids a resumed run continues
TRACKERS_STATE_FORMAT = "bertcurve.trackers/1"
ANALYSIS = "analysis.json"               # format ANALYSIS_FORMAT
ANALYSIS_FORMAT = "bertcurve.analysis/2"
COMPARISON = "comparison.json"
COMPARISON_FORMAT = "bertcurve.comparison/1"
FIGURES_DIR = "figures"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
SEED_HISTORY = "training_history.json"   # `bertcurve export-history --format seed`

# Inside checkpoints/step-XXXXXXXX/
CKPT_WEIGHTS = "model.safetensors"
CKPT_TRAINING_STATE = "training_state.pt"   # optimizer/scheduler/RNG; torch.load(weights_only=True)
CKPT_META = "checkpoint.json"               # step, data position, config, tokenizer hash, checksums
CKPT_META_FORMAT = "bertcurve.checkpoint/1"

# ------------------------------------------------------- exported model dir
# Written by `bertcurve export` next to the Hugging Face files and README.md.
EXPORT_INFO = "bertcurve_export.json"    # format EXPORT_FORMAT: run, step, eval accuracy
EXPORT_FORMAT = "bertcurve.stages.export/2"

# ----------------------------------------------------------------- study dir
STUDY_DATA_DIR = "data"
STUDY_RUN_DIR = "run"
STUDY_STATE = "study.json"               # format "bertcurve.study/1": stages done, their inputs


SEED_RUN_PREFIX = "run-seed"   # a study with --seeds: run-seed0/, run-seed1/, ...


def seed_runs_of(folder: Path) -> list[Path]:
    """The per-seed run dirs of a ``study --seeds`` folder, by seed; [] for anything else."""
    if not folder.is_dir() or (folder / METRICS).exists() or (folder / STUDY_RUN_DIR / METRICS).exists():
        return []
    runs = [p for p in folder.glob(f"{SEED_RUN_PREFIX}*")
            if p.name[len(SEED_RUN_PREFIX):].isdigit() and (p / METRICS).exists()]
    return sorted(runs, key=lambda p: int(p.name[len(SEED_RUN_PREFIX):]))


def resolve_runs(sources: Sequence[str | Path]) -> list[Path]:
    """:func:`resolve_run` for each source, a ``study --seeds`` folder standing for all its seed runs."""
    out: list[Path] = []
    for source in sources:
        path = Path(source).expanduser()
        out.extend(seed_runs_of(path) or [resolve_run(path)])
    return out


def resolve_run(source: str | Path) -> Path:
    """A study folder stands for its run: ``studies/demo`` -> ``studies/demo/run``; other paths as given."""
    path = Path(source).expanduser()
    run = path / STUDY_RUN_DIR
    if path.is_dir() and not (path / METRICS).exists() and (run / METRICS).exists():
        return run
    return path


def branch_dir_name(from_max_steps: int) -> str:
    """``branches/max-steps-00000040``: the cooldown a run planned before it was extended."""
    return f"{BRANCHES_DIR}/max-steps-{from_max_steps:08d}"


def checkpoint_dir_name(step: int) -> str:
    """``step-00012000``: zero-padded so names sort by step."""
    return f"{CHECKPOINT_PREFIX}{step:08d}"


def checkpoint_step(path: Path) -> int | None:
    """The step a checkpoint folder name encodes, or None for other names."""
    name = Path(path).name
    if not name.startswith(CHECKPOINT_PREFIX):
        return None
    digits = name[len(CHECKPOINT_PREFIX):]
    return int(digits) if digits.isdigit() else None
