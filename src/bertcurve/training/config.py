"""Training configuration: frozen typed dataclasses, presets and validation.

Settings that change results (model, data, optimisation, evaluation, seed)
live in :class:`TrainConfig`; settings that only change speed (device,
dtype, compile, threads) live apart in :class:`SpeedConfig`, so two runs
that differ only in speed settings are the same experiment.

A config is resolved once (preset -> ``--config`` file -> command-line
overrides), validated with every problem listed at once, and saved into the
run directory (``config.json``) and into every checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from bertcurve import layout
from bertcurve.errors import UserError
from bertcurve.fsutil import read_json

SCHEDULES = ("cosine", "linear", "constant")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the BERT model (``transformers.BertConfig`` fields)."""

    hidden_size: int = 256
    """Width of every layer."""
    num_layers: int = 4
    """Number of Transformer encoder layers."""
    num_heads: int = 4
    """Attention heads per layer; must divide ``hidden_size``."""
    intermediate_size: int = 1024
    """Feed-forward inner width."""
    max_position_embeddings: int = 512
    """Longest sequence the position embeddings allow (>= ``seq_len``)."""
    hidden_dropout: float = 0.1
    """Dropout on hidden states."""
    attention_dropout: float = 0.1
    """Dropout on attention probabilities."""
    tie_word_embeddings: bool = True
    """Share the MLM output matrix with the input embeddings (BERT default)."""


@dataclass(frozen=True)
class DataConfig:
    """How token ids become training sequences and masks."""

    seq_len: int = 128
    """Tokens per sequence, including [CLS] and [SEP]."""
    mask_prob: float = 0.15
    """Fraction of tokens (or whole words) selected for prediction."""
    whole_word: bool = False
    """Mask whole jieba words (needs a data dir prepared with --whole-word)."""
    nsp: bool = False
    """Next-sentence prediction: 50 % adjacent / 50 % random sentence pairs, padded."""


@dataclass(frozen=True)
class OptimConfig:
    """AdamW and the learning-rate schedule."""

    lr: float = 1e-3
    """Peak learning rate."""
    weight_decay: float = 0.01
    """AdamW weight decay (never applied to biases and LayerNorm)."""
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    warmup_steps: int = 100
    """Linear warm-up from 0 to ``lr`` over this many optimizer steps."""
    max_steps: int = 1000
    """Optimizer steps of the whole run."""
    schedule: str = "cosine"
    """After warm-up: ``cosine`` or ``linear`` decay to ``min_lr_ratio * lr``, or ``constant``."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of ``lr``."""
    micro_batch: int = 32
    """Sequences per forward/backward pass."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (effective batch = micro_batch * grad_accum)."""
    clip: float = 1.0
    """Gradient-norm clipping threshold (0 disables clipping)."""


@dataclass(frozen=True)
class EvalConfig:
    """Held-out evaluation on fixed masks, logging and checkpoint cadence."""

    eval_every: int = 0
    """Optimizer steps between evaluations (0: max_steps // 100, at least 1)."""
    eval_tokens: int = 4000
    """Masked tokens in the fixed held-out set (60,000 gives a standard error of ~0.002)."""
    eval_seed: int = 20251017
    """Seed of the held-out masks: same data + same eval_seed = same masked tokens."""
    mask_prob: float = 0.15
    """Fraction of held-out tokens masked. Apart from ``data.mask_prob`` so that runs
    trained at different masking rates are still scored on the same task."""
    log_every: int = 0
    """Optimizer steps between training-metric lines (0: max_steps // 1000, at least 1)."""
    save_every: int = 0
    """Optimizer steps between checkpoints (0: max_steps // 10, at least 1)."""
    save_at: tuple[int, ...] = ()
    """Milestone steps whose checkpoints are never pruned."""
    keep: int = 3
    """Keep this many most recent checkpoints (plus milestones)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that changes the result of a training run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    """Seed of initialisation, data order, masks and dropout."""

    # Cadences with 0 meaning "derive from max_steps" are resolved here so the
    # saved config states the numbers actually used.
    @property
    def eval_every(self) -> int:
        return self.eval.eval_every or max(1, self.optim.max_steps // 100)

    @property
    def log_every(self) -> int:
        return self.eval.log_every or max(1, self.optim.max_steps // 1000)

    @property
    def save_every(self) -> int:
        return self.eval.save_every or max(1, self.optim.max_steps // 10)

    def resolved(self) -> "TrainConfig":
        """The same config with derived cadences written out explicitly."""
        return replace(
            self,
            eval=replace(self.eval, eval_every=self.eval_every, log_every=self.log_every,
                         save_every=self.save_every),
        )


@dataclass(frozen=True)
class SpeedConfig:
    """Settings that change speed only, never the numbers (on a given device)."""

    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``."""
    dtype: str = "auto"
    """``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``fp32`` or ``bf16``."""
    compile: bool = False
    """``torch.compile`` the embeddings and every encoder layer but the last (helps on GPU;
    no gain on CPU)."""
    threads: int = 0
    """CPU threads for torch (0: 1 for models of hidden size <= 64, else torch's default)."""
    prefetch: int = -1
    """Steps of micro-batches built ahead on a background thread, in pinned memory on CUDA
    (-1: 4 on CUDA, 0 on CPU, where the thread would only take a core from the math)."""


# ------------------------------------------------------------------ presets
# Each preset lists only what differs from the dataclass defaults.
_SEED_OPTIM = dict(lr=5e-5, weight_decay=0.01, warmup_steps=2000, schedule="cosine",
                   micro_batch=32, grad_accum=4, clip=1.0)
_SEED_MODEL = dict(hidden_size=512, num_layers=12, num_heads=8, intermediate_size=2048,
                   max_position_embeddings=512, tie_word_embeddings=False)
_FULL_EVAL = dict(eval_tokens=60_000, keep=3)

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "model": dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                      max_position_embeddings=64),
        "data": dict(seq_len=32),
        "optim": dict(lr=2e-3, warmup_steps=5, max_steps=40, micro_batch=8, grad_accum=2),
        "eval": dict(eval_every=10, eval_tokens=200, log_every=1, save_every=10, keep=2),
    },
    # Picked for held-out accuracy per CPU minute on the built-in demo corpus
    # (docs/run-dir.md): a small model, no dropout, and 16-token windows. Longer
    # windows kept the model guessing frequent characters at [MASK] (it only
    # learnt to copy the kept tokens) for the whole five minutes; in short
    # windows it starts reading its neighbours within a few hundred steps.
    # lr 2e-3 beat 1.5e-3 and 3e-3 there; 5e-3 diverged.
    "demo": {
        "model": dict(hidden_size=128, num_layers=4, num_heads=2, intermediate_size=512,
                      max_position_embeddings=128, hidden_dropout=0.0, attention_dropout=0.0),
        "data": dict(seq_len=16),
        "optim": dict(lr=2e-3, beta2=0.98, warmup_steps=150, max_steps=1600, micro_batch=128,
                      grad_accum=1),
        "eval": dict(eval_every=50, eval_tokens=3000, log_every=10, save_every=250, keep=2),
    },
    "seed-48m": {
        "model": _SEED_MODEL,
        "optim": dict(_SEED_OPTIM, max_steps=100_000),
        "eval": dict(_FULL_EVAL, eval_every=1000, log_every=100, save_every=5000,
                     save_at=(50_000,)),
    },
    "seed-50k": {
        "model": _SEED_MODEL,
        "optim": dict(_SEED_OPTIM, max_steps=50_000),
        "eval": dict(_FULL_EVAL, eval_every=500, log_every=100, save_every=5000),
    },
    "seed-100k": {
        "model": _SEED_MODEL,
        "optim": dict(_SEED_OPTIM, max_steps=100_000),
        "eval": dict(_FULL_EVAL, eval_every=1000, log_every=100, save_every=5000,
                     save_at=(50_000,)),
    },
    "base": {
        "model": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072,
                      max_position_embeddings=512, tie_word_embeddings=True),
        "optim": dict(lr=1e-4, weight_decay=0.01, warmup_steps=10_000, max_steps=1_000_000,
                      micro_batch=32, grad_accum=8),
        "eval": dict(_FULL_EVAL, eval_every=10_000, log_every=100, save_every=10_000),
    },
}

_SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "eval": EvalConfig}


def _field_types(cls: type) -> dict[str, Any]:
    return {f.name: f.type for f in fields(cls)}


def _coerce(section: str, key: str, value: Any, problems: list[str]) -> Any:
    """Check one value's type against the dataclass field, collecting problems."""
    cls = _SECTIONS[section]
    default = getattr(cls(), key)
    where = f"{section}.{key}"
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        problems.append(f"{where} must be true or false, got {value!r}")
        return default
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            problems.append(f"{where} must be an integer, got {value!r}")
            return default
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{where} must be a number, got {value!r}")
            return default
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            problems.append(f"{where} must be a list of integers, got {value!r}")
            return default
        return tuple(sorted(set(value)))
    if isinstance(default, str):
        if not isinstance(value, str):
            problems.append(f"{where} must be a string, got {value!r}")
            return default
        return value
    return value


def build_config(
    preset: str | None = "demo",
    config_file: str | Path | Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Resolve preset -> config file -> overrides into a validated :class:`TrainConfig`.

    ``overrides`` maps dotted names (``"optim.lr"``) or section-less field
    names (``"lr"``) to values; ``None`` values are ignored. Every problem is
    collected and reported in a single :class:`UserError`.
    """
    problems: list[str] = []
    values: dict[str, dict[str, Any]] = {s: {} for s in _SECTIONS}
    seed: int | None = None
    if preset is not None:
        if preset not in PRESETS:
            raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        for section, vals in PRESETS[preset].items():
            values[section].update(vals)

    def apply(source: str, mapping: Mapping[str, Any]) -> None:
        nonlocal seed
        for key, value in mapping.items():
            if value is None:
                continue
            if key == "seed":
                if isinstance(value, bool) or not isinstance(value, int):
                    problems.append(f"seed must be an integer, got {value!r} ({source})")
                else:
                    seed = value
                continue
            if key in _SECTIONS and isinstance(value, Mapping):
                for sub, subval in value.items():
                    apply(source, {f"{key}.{sub}": subval})
                continue
            if key in _SECTIONS:
                problems.append(f"unknown setting {key!r} ({source}): {key!r} is a section, so give its settings "
                                f"as an object, e.g. {{\"{key}\": {{\"name\": value}}}}, not {value!r}")
                continue
            if key in {"format"}:
                continue
            if "." in key:
                section, name = key.split(".", 1)
            else:
                owners = [s for s, cls in _SECTIONS.items() if key in _field_types(cls)]
                section, name = (owners[0], key) if owners else ("", key)
            if section not in _SECTIONS or name not in _field_types(_SECTIONS[section]):
                problems.append(f"unknown setting {key!r} ({source})")
                continue
            values[section][name] = _coerce(section, name, value, problems)

    if config_file is not None:
        if isinstance(config_file, Mapping):
            mapping = config_file
        else:
            mapping = read_json(Path(config_file), "training config file")
            if not isinstance(mapping, dict):
                raise UserError(f"{config_file} must hold a JSON object of settings")
            # A run dir's config.json nests the results settings under "train".
            if "train" in mapping and isinstance(mapping["train"], dict):
                mapping = mapping["train"]
        apply(f"from {config_file if not isinstance(config_file, Mapping) else 'config'}", mapping)
    if overrides:
        apply("command line", overrides)

    for section, vals in values.items():
        for name, value in list(vals.items()):
            vals[name] = _coerce(section, name, value, problems)
    cfg = TrainConfig(
        model=ModelConfig(**values["model"]),
        data=DataConfig(**values["data"]),
        optim=OptimConfig(**values["optim"]),
        eval=EvalConfig(**values["eval"]),
        seed=seed if seed is not None else 0,
    )
    problems += validate(cfg)
    if problems:
        raise UserError(_format_problems(problems))
    return cfg.resolved()


def _format_problems(problems: list[str]) -> str:
    n = len(problems)
    return f"invalid training config ({n} problem{'s' if n > 1 else ''}): " + "; ".join(problems)


def validate(cfg: TrainConfig, vocab_size: int | None = None) -> list[str]:
    """Every problem of ``cfg`` as a list of one-line messages (empty when valid)."""
    p: list[str] = []
    m, d, o, e = cfg.model, cfg.data, cfg.optim, cfg.eval
    for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size",
                 "max_position_embeddings"):
        if getattr(m, name) < 1:
            p.append(f"model.{name} must be >= 1, got {getattr(m, name)}")
    if m.num_heads >= 1 and m.hidden_size % m.num_heads:
        p.append(f"model.hidden_size ({m.hidden_size}) must be divisible by "
                 f"model.num_heads ({m.num_heads})")
    for name in ("hidden_dropout", "attention_dropout"):
        if not 0.0 <= getattr(m, name) < 1.0:
            p.append(f"model.{name} must be in [0, 1), got {getattr(m, name)}")
    if d.seq_len < 8:
        p.append(f"data.seq_len must be >= 8, got {d.seq_len}")
    if d.seq_len > m.max_position_embeddings:
        p.append(f"data.seq_len ({d.seq_len}) exceeds model.max_position_embeddings "
                 f"({m.max_position_embeddings}); lower --seq-len or raise max_position_embeddings")
    if d.nsp and d.whole_word:
        p.append("data.whole_word and data.nsp cannot be combined yet; choose one")
    if not 0.0 < d.mask_prob < 1.0:
        p.append(f"data.mask_prob must be in (0, 1), got {d.mask_prob}")
    if not 0.0 < e.mask_prob < 1.0:
        p.append(f"eval.mask_prob must be in (0, 1), got {e.mask_prob}")
    if not o.lr > 0 or o.lr != o.lr:
        p.append(f"optim.lr must be > 0, got {o.lr}")
    if o.lr > 1.0:
        p.append(f"optim.lr {o.lr} is far too large (BERT uses 1e-5 .. 1e-2)")
    if o.weight_decay < 0:
        p.append(f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    for name in ("beta1", "beta2"):
        if not 0.0 <= getattr(o, name) < 1.0:
            p.append(f"optim.{name} must be in [0, 1), got {getattr(o, name)}")
    if o.eps <= 0:
        p.append(f"optim.eps must be > 0, got {o.eps}")
    if o.max_steps < 1:
        p.append(f"optim.max_steps must be >= 1, got {o.max_steps}")
    if o.warmup_steps < 0:
        p.append(f"optim.warmup_steps must be >= 0, got {o.warmup_steps}")
    elif o.max_steps >= 1 and o.warmup_steps > o.max_steps:
        p.append(f"optim.warmup_steps ({o.warmup_steps}) exceeds optim.max_steps ({o.max_steps}); "
                 f"lower it too, e.g. --warmup-steps {max(0, o.max_steps // 10)}")
    if o.schedule not in SCHEDULES:
        p.append(f"optim.schedule must be one of {', '.join(SCHEDULES)}, got {o.schedule!r}")
    if not 0.0 <= o.min_lr_ratio <= 1.0:
        p.append(f"optim.min_lr_ratio must be in [0, 1], got {o.min_lr_ratio}")
    if o.micro_batch < 1:
        p.append(f"optim.micro_batch must be >= 1, got {o.micro_batch}")
    if o.grad_accum < 1:
        p.append(f"optim.grad_accum must be >= 1, got {o.grad_accum}")
    if o.clip < 0:
        p.append(f"optim.clip must be >= 0 (0 disables), got {o.clip}")
    for name in ("eval_every", "log_every", "save_every"):
        if getattr(e, name) < 0:
            p.append(f"eval.{name} must be >= 0 (0: automatic), got {getattr(e, name)}")
    if e.eval_tokens < 1:
        p.append(f"eval.eval_tokens must be >= 1, got {e.eval_tokens}")
    if e.keep < 1:
        p.append(f"eval.keep must be >= 1, got {e.keep}")
    bad = [s for s in e.save_at if s < 1]
    if bad:
        p.append(f"eval.save_at steps must be >= 1, got {bad}")
    for name, value in (("seed", cfg.seed), ("eval.eval_seed", e.eval_seed)):
        if not 0 <= value < 2**32:  # numpy's and torch's generators take 0 .. 2**32 - 1
            p.append(f"{name} must be in 0 .. 4294967295, got {value}")
    if vocab_size is not None and vocab_size < len(layout.SPECIAL_TOKENS) + 1:
        p.append(f"vocabulary of {vocab_size} tokens is too small")
    return p


def validate_speed(speed: SpeedConfig) -> list[str]:
    p: list[str] = []
    if speed.device not in DEVICES:
        p.append(f"device must be one of {', '.join(DEVICES)}, got {speed.device!r}")
    if speed.dtype not in DTYPES:
        p.append(f"dtype must be one of {', '.join(DTYPES)}, got {speed.dtype!r}")
    if speed.threads < 0:
        p.append(f"threads must be >= 0, got {speed.threads}")
    if speed.prefetch < -1:
        p.append(f"prefetch must be >= 0 (or -1 for automatic), got {speed.prefetch}")
    return p


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain JSON-able dict of a config dataclass (tuples become lists)."""
    def conv(v: Any) -> Any:
        if isinstance(v, tuple):
            return list(v)
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v
    return conv(dataclasses.asdict(cfg))


def from_dict(obj: Mapping[str, Any]) -> TrainConfig:
    """Inverse of :func:`to_dict` for a saved :class:`TrainConfig` (validated)."""
    return build_config(preset=None, config_file=dict(obj))


def shape_of(cfg: TrainConfig) -> dict[str, Any]:
    """The settings a checkpoint's weights depend on (resume refuses a change)."""
    return dict(to_dict(cfg.model), nsp=cfg.data.nsp)
