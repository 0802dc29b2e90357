"""Training configuration: frozen typed dataclasses, presets and validation.

Settings that change results (model, data, optimisation, evaluation, seed)
live in :class:`TrainConfig`; settings that only change speed (device,
dtype, compile, threads) live apart in :class:`SpeedConfig`, so two runs
that differ only in speed settings are the same experiment.

A config is resolved once (preset -> ``--config`` file, JSON or YAML ->
command-line overrides), validated with every problem listed at once, and
saved into the run directory (``config.json``) and into every checkpoint.
:func:`load_run_config` reads a run directory's ``config.json`` back as a
typed :class:`RunConfig`.

Every field below is a setting: its docstring is its ``--help`` text and its
flag is ``--field-name`` unless ``metadata={"flag": ...}`` names another, so a
new setting is one new field (see :func:`settings`).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import json
import re
import reprlib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

from bertcurve import layout
from bertcurve.errors import UserError
from bertcurve.training.schedule import DECAY_SHAPES, SCHEDULES

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the BERT model (``transformers.BertConfig`` fields)."""

    hidden_size: int = 256
    """Width of every layer."""
    num_layers: int = field(default=4, metadata={"flag": "--layers"})
    """Number of Transformer encoder layers."""
    num_heads: int = field(default=4, metadata={"flag": "--heads"})
    """Attention heads per layer; must divide ``hidden_size``."""
    intermediate_size: int = field(default=1024, metadata={"flag": "--ffn"})
    """Feed-forward inner width."""
    max_position_embeddings: int = 512
    """Longest sequence the position embeddings allow (>= ``seq_len``)."""
    hidden_dropout: float = 0.1
    """Dropout on hidden states."""
    attention_dropout: float = 0.1
    """Dropout on attention probabilities."""
    tie_word_embeddings: bool = field(default=True, metadata={"flag": "--untied", "const": False})
    """Share the MLM output matrix with the input embeddings (BERT default; the flag
    ``--untied`` sets false: a separate output matrix)."""
    initializer_range: float = 0.02
    """Standard deviation of the normal initial weights (``BertConfig.initializer_range``)."""


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
    short_seq_prob: float = 0.0
    """Share of training sequences cut short at a random length, padded (BERT's
    ``short_seq_prob``, 0.1): without it a [SEP] early in a packed sequence only ever
    follows a document's end, and the model learns to predict punctuation before it."""


@dataclass(frozen=True)
class OptimConfig:
    """AdamW and the learning-rate schedule."""

    lr: float = 1e-3
    """Peak learning rate."""
    weight_decay: float = 0.01
    """AdamW weight decay (never applied to biases and LayerNorm)."""
    beta1: float = 0.9
    """AdamW decay rate of the gradient's running mean."""
    beta2: float = 0.999
    """AdamW decay rate of the squared gradient's running mean."""
    eps: float = 1e-8
    """AdamW term added to the denominator for numerical stability."""
    warmup_steps: int = 100
    """Linear warm-up from 0 to ``lr`` over this many optimizer steps."""
    max_steps: int = 1000
    """Optimizer steps of the whole run."""
    schedule: str = field(default="cosine", metadata={"choices": SCHEDULES})
    """After warm-up: ``cosine`` or ``linear`` decay to ``min_lr_ratio * lr``, ``constant``, ``wsd``
    (warmup-stable-decay: the peak, then a cooldown over the last ``decay_fraction`` of the steps),
    or ``inverse_sqrt``."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of ``lr``."""
    decay_fraction: float = 0.2
    """Share of all steps spent in a ``wsd`` schedule's cooldown."""
    decay_shape: str = field(default="linear", metadata={"choices": DECAY_SHAPES})
    """Shape of a ``wsd`` schedule's cooldown: ``linear``, ``cosine`` or ``1-sqrt``."""
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
    mask_prob: float = field(default=0.15, metadata={"flag": "--eval-mask-prob"})
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

    device: str = field(default="auto", metadata={"choices": DEVICES})
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``."""
    dtype: str = field(default="auto", metadata={"choices": DTYPES})
    """``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``fp32`` or ``bf16``."""
    compile: bool = False
    """``torch.compile`` the embeddings and every encoder layer but the last (helps on GPU;
    no gain on CPU)."""
    threads: int = 0
    """CPU threads for torch (0: 1 for models of hidden size <= 64, else torch's default)."""
    prefetch: int = -1
    """Steps of micro-batches built ahead on a background thread, in pinned memory on CUDA
    (-1: 4 on CUDA, 0 on CPU, where the thread would only take a core from the math)."""
    dist_timeout: int = 1800
    """Seconds a process waits in a collective for the others (torchrun runs) before it stops
    with an error; must cover rank 0's evaluation and checkpoint."""


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
    # Initial weights at std 0.05 instead of BERT's 0.02 (tuned for width 768; 128 is this
    # model's): at 0.02 the model reads no context at [MASK] for 1,000-1,600 steps, at
    # 0.05 it leaves that plateau hundreds of steps sooner; 0.088 never learnt at all. WSD
    # holds the peak rate through that transition, where cosine is already decaying. A
    # 300-step warm-up ended higher than 150, and 50 left a run at the constant guess.
    # A quarter of the training windows cut short (BERT's short sequences): in full packed
    # windows an early [SEP] only ever follows a document's end, so "中华人民共和[MASK]" got "。".
    # 30 % of the tokens masked instead of BERT's 15 % (Wettig et al., 2023): twice the
    # predictions per step for about 9 % more time per step; held-out accuracy (scored at 15 %)
    # +0.035-0.046 on each of five seeds (+0.040 at 1,400 steps, the old time), 40 % no better.
    # bench/demo_recipe.py measures them (docs/run-dir.md, "Measurements").
    "demo": {
        "model": dict(hidden_size=128, num_layers=4, num_heads=2, intermediate_size=512,
                      max_position_embeddings=128, hidden_dropout=0.0, attention_dropout=0.0,
                      initializer_range=0.05),
        "data": dict(seq_len=16, short_seq_prob=0.25, mask_prob=0.3),
        "optim": dict(lr=2e-3, beta2=0.98, warmup_steps=300, max_steps=1600, micro_batch=128,
                      grad_accum=1, schedule="wsd"),
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
    "base": {
        "model": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072,
                      max_position_embeddings=512, tie_word_embeddings=True),
        "optim": dict(lr=1e-4, weight_decay=0.01, warmup_steps=10_000, max_steps=1_000_000,
                      micro_batch=32, grad_accum=8),
        "eval": dict(_FULL_EVAL, eval_every=10_000, log_every=100, save_every=10_000),
    },
}

# Another name for a preset: the same settings, not a copy that could drift.
PRESET_ALIASES: dict[str, str] = {
    # The seed's run named by its length, beside seed-50k.
    "seed-100k": "seed-48m",
}


def preset_names() -> list[str]:
    """Every name ``--preset`` accepts: the presets, then their aliases."""
    return [*PRESETS, *PRESET_ALIASES]


def resolve_preset(name: str) -> str:
    """The preset a name stands for (an alias's target, else the name itself)."""
    name = PRESET_ALIASES.get(name, name)
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(preset_names())}")
    return name


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "eval": EvalConfig}
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60


def _field_types(cls: type) -> dict[str, Any]:
    return {f.name: f.type for f in fields(cls)}


def _coerce(cls: type, where: str, key: str, value: Any, problems: list[str]) -> Any:
    """Check one value's type against the field ``key`` of ``cls``, collecting problems."""
    default = getattr(cls(), key)
    shown = _SHORT.repr(value)  # bounded: a hostile value may nest thousands deep
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        problems.append(f"{where} must be true or false, got {shown}")
        return default
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            problems.append(f"{where} must be an integer, got {shown}")
            return default
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{where} must be a number, got {shown}")
            return default
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            problems.append(f"{where} must be a list of integers, got {shown}")
            return default
        return tuple(sorted(set(value)))
    if isinstance(default, str):
        if not isinstance(value, str):
            problems.append(f"{where} must be a string, got {shown}")
            return default
        return value
    return value


# ------------------------------------------------------------- config files
class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader reading ``1e-3`` as a number (YAML 1.2), not as a string."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def read_settings_file(path: str | Path, what: str = "training config file") -> dict[str, Any]:
    """A JSON or YAML file (by its ``.yaml``/``.yml`` suffix) holding one mapping, as a dict.

    Every failure (missing, unreadable, malformed, nested too deeply, not a
    mapping) is a one-line :class:`UserError`.
    """
    path = Path(path)
    is_yaml = path.suffix.lower() in (".yaml", ".yml")
    kind = "YAML" if is_yaml else "JSON"
    try:
        text = path.read_text(encoding="utf-8")
        obj = yaml.load(text, Loader=_YamlLoader) if is_yaml else json.loads(text)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{what} {path} is a directory; give a {kind} file") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except RecursionError:
        raise UserError(f"{what} {path} nests too deeply to be a config (settings are at most "
                        "two levels deep: section, then setting)") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{what} {path} is not valid JSON ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise UserError(f"{what} {path} is not valid YAML ({problem}{where})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{what} {path} must hold a {kind} mapping of settings "
                        f"(like {{\"optim\": {{\"lr\": 0.001}}}}), not {type(obj).__name__}")
    return obj


def _known(cls: type) -> str:
    return ", ".join(f.name for f in fields(cls))


def build_config(
    preset: str | None = "demo",
    config_file: str | Path | Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Resolve preset -> config file -> overrides into a validated :class:`TrainConfig`.

    ``config_file`` is a JSON or YAML file (or a mapping) of settings, nested
    (``{"optim": {"lr": 1e-3}}``), dotted or plain; a run's ``config.json``
    works too. ``overrides`` maps dotted names (``"optim.lr"``) or
    section-less field names (``"lr"``) to values; ``None`` values are
    ignored. Every problem is collected and reported in a single
    :class:`UserError`.
    """
    problems: list[str] = []
    values: dict[str, dict[str, Any]] = {s: {} for s in _SECTIONS}
    seed: int | None = None
    if preset is not None:
        for section, vals in PRESETS[resolve_preset(preset)].items():
            values[section].update(vals)

    def apply(source: str, mapping: Mapping[str, Any]) -> None:
        nonlocal seed
        for key, value in mapping.items():
            if value is None:
                continue
            if key == "seed":
                if isinstance(value, bool) or not isinstance(value, int):
                    problems.append(f"seed must be an integer, got {_SHORT.repr(value)} ({source})")
                else:
                    seed = value
                continue
            if key in _SECTIONS:
                if not isinstance(value, Mapping):
                    problems.append(f"unknown setting {key!r} ({source}): {key} is a section, give it a "
                                    f"mapping of its settings ({_known(_SECTIONS[key])}), not {_SHORT.repr(value)}")
                    continue
                for sub, subval in value.items():
                    apply(source, {f"{key}.{sub}": subval})
                continue
            if key in {"format"}:
                continue
            if "." in str(key):
                section, name = str(key).split(".", 1)
            else:
                owners = [s for s, cls in _SECTIONS.items() if key in _field_types(cls)]
                section, name = (owners[0], key) if owners else ("", key)
            if section in _SECTIONS and name not in _field_types(_SECTIONS[section]):
                problems.append(f"unknown setting {key!r} ({source}); {section} settings are "
                                f"{_known(_SECTIONS[section])}")
                continue
            if section not in _SECTIONS:
                problems.append(f"unknown setting {_SHORT.repr(key)} ({source}); known: the sections "
                                f"{', '.join(_SECTIONS)} and seed, or any setting name: "
                                + ", ".join(dict.fromkeys(s.key.split(".")[-1] for s in settings()
                                                          if s.section != "speed")))
                continue
            values[section][name] = _coerce(_SECTIONS[section], f"{section}.{name}", name, value, problems)

    if config_file is not None:
        if isinstance(config_file, Mapping):
            mapping = config_file
        else:
            mapping = read_settings_file(config_file)
            # A run dir's config.json nests the results settings under "train".
            if "train" in mapping and isinstance(mapping["train"], dict):
                mapping = mapping["train"]
        apply(f"from {config_file if not isinstance(config_file, Mapping) else 'config'}", mapping)
    if overrides:
        apply("command line", overrides)

    for section, vals in values.items():
        for name, value in list(vals.items()):
            vals[name] = _coerce(_SECTIONS[section], f"{section}.{name}", name, value, problems)
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
    if not m.initializer_range > 0:
        p.append(f"model.initializer_range must be > 0, got {m.initializer_range}")
    elif m.initializer_range > 1.0:
        p.append(f"model.initializer_range {m.initializer_range} is far too large "
                 "(BERT uses 0.02, the demo preset 0.05)")
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
    if not 0.0 <= d.short_seq_prob <= 1.0:
        p.append(f"data.short_seq_prob must be in [0, 1], got {d.short_seq_prob}")
    elif d.short_seq_prob > 0 and d.nsp:
        p.append("data.short_seq_prob applies to packed sequences; NSP pairs already vary in "
                 "length, so leave it at 0 with --nsp")
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
    if not 0.0 < o.decay_fraction <= 1.0:
        p.append(f"optim.decay_fraction must be in (0, 1], got {o.decay_fraction}")
    if o.decay_shape not in DECAY_SHAPES:
        p.append(f"optim.decay_shape must be one of {', '.join(DECAY_SHAPES)}, got {o.decay_shape!r}")
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
    if speed.dist_timeout <= 0:
        p.append(f"dist_timeout must be > 0 seconds, got {speed.dist_timeout}")
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


# ------------------------------------------------------------ run config
@dataclass(frozen=True)
class EvalSetInfo:
    """What a run's fixed held-out set turned out to be (``config.json``'s ``eval_set``)."""

    masked_tokens: int | None = None
    sequences: int | None = None
    fingerprint: str | None = None
    """sha256 of the set's inputs and labels: equal fingerprints, same masked tokens."""
    constant_guess_accuracy: float | None = None
    """Accuracy of always predicting the set's most frequent token."""


@dataclass(frozen=True)
class RunConfig:
    """A run directory's ``config.json`` (format ``bertcurve.run-config/1``), typed."""

    train: TrainConfig
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    preset: str | None = None
    """The preset named on the command line (an alias stays as given), or None."""
    data_dir: str | None = None
    tokenizer_sha256: str | None = None
    vocab_size: int | None = None
    parameters: int | None = None
    architecture: str | None = None
    eval_set: EvalSetInfo = field(default_factory=EvalSetInfo)
    world_size: int = 1
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Keys this version does not know (written by a newer bertcurve), kept as read."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON object ``config.json`` holds."""
        out: dict[str, Any] = {"format": layout.RUN_CONFIG_FORMAT, "train": to_dict(self.train),
                               "speed": to_dict(self.speed)}
        for f in fields(self):
            if f.name not in ("train", "speed", "extra"):
                value = getattr(self, f.name)
                out[f.name] = to_dict(value) if dataclasses.is_dataclass(value) else value
        out.update(self.extra)
        return out


class NotARunConfig(UserError):
    """A ``config.json`` that bertcurve did not write (a Hugging Face model's, say)."""


_RUN_SCALARS = {"preset": str, "data_dir": str, "tokenizer_sha256": str, "vocab_size": int,
                "parameters": int, "architecture": str, "world_size": int}


def parse_run_config(obj: Any, source: str | Path = layout.RUN_CONFIG) -> RunConfig:
    """A :class:`RunConfig` from the JSON object of a ``config.json`` (read from ``source``).

    A foreign file (no ``"format": "bertcurve.run-config/1"``) or a damaged
    one (wrong types, invalid settings) is a one-line :class:`UserError`.
    """
    if not isinstance(obj, dict) or obj.get("format") != layout.RUN_CONFIG_FORMAT:
        raise NotARunConfig(f"{source} is not a bertcurve run config (no \"format\": "
                        f"\"{layout.RUN_CONFIG_FORMAT}\"); give the --out folder of `bertcurve train`")
    problems: list[str] = []
    train = obj.get("train")
    if not isinstance(train, dict):
        raise UserError(f"{source} is damaged: its \"train\" settings are missing")
    try:
        train_cfg = from_dict(train)
    except UserError as exc:
        raise UserError(f"{source} is damaged: {exc}") from None
    speed_values = obj.get("speed") or {}
    speed_kwargs: dict[str, Any] = {}
    if isinstance(speed_values, dict):
        for key, value in speed_values.items():
            if key in _field_types(SpeedConfig) and value is not None:
                speed_kwargs[key] = _coerce(SpeedConfig, f"speed.{key}", key, value, problems)
    else:
        problems.append(f"speed must be a mapping, got {_SHORT.repr(speed_values)}")
    scalars: dict[str, Any] = {}
    for key, typ in _RUN_SCALARS.items():
        value = obj.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, typ):
            problems.append(f"{key} must be {'an integer' if typ is int else 'a string'}, "
                            f"got {_SHORT.repr(value)}")
            continue
        scalars[key] = value
    eval_kwargs: dict[str, Any] = {}
    eval_values = obj.get("eval_set") or {}
    if isinstance(eval_values, dict):
        for f in fields(EvalSetInfo):
            value = eval_values.get(f.name)
            ok = (isinstance(value, str) if f.name == "fingerprint" else
                  isinstance(value, (int, float)) and not isinstance(value, bool))
            if value is not None and not ok:
                problems.append(f"eval_set.{f.name} has the wrong type: {_SHORT.repr(value)}")
            elif value is not None:
                eval_kwargs[f.name] = value
    else:
        problems.append(f"eval_set must be a mapping, got {_SHORT.repr(eval_values)}")
    if problems:
        raise UserError(f"{source} is damaged: " + "; ".join(problems))
    known = {"format", "train", "speed", "eval_set", *_RUN_SCALARS}
    return RunConfig(train=train_cfg, speed=SpeedConfig(**speed_kwargs),
                     eval_set=EvalSetInfo(**eval_kwargs),
                     extra={k: v for k, v in obj.items() if k not in known}, **scalars)


def load_run_config(run_dir: str | Path, *, missing_ok: bool = False) -> RunConfig | None:
    """The typed ``config.json`` of the run directory ``run_dir``.

    A missing file is a :class:`UserError` (``None`` with ``missing_ok``); a
    corrupt or foreign one always is. Every stage reads saved run settings
    through this function.
    """
    path = Path(run_dir) / layout.RUN_CONFIG
    if not path.is_file():
        if missing_ok:
            return None
        raise UserError(f"{run_dir} has no {layout.RUN_CONFIG}, so it is not a run directory; give "
                        "the --out folder of `bertcurve train`")
    return parse_run_config(read_settings_file(path, "run config"), path)


def run_config_in(meta: Mapping[str, Any], notes: list[str] | None = None) -> RunConfig | None:
    """The typed run config a log reader attached to a log (``meta["config"]``), if any.

    Used where the config is only context (analysis of a log): a foreign or
    damaged one is added to ``notes`` and ignored instead of stopping the stage.
    """
    obj = meta.get("config") if isinstance(meta, Mapping) else None
    if obj is None:
        return None
    try:
        return parse_run_config(obj)
    except UserError as exc:
        if notes is not None:
            notes.append(f"run settings ignored: {exc}")
        return None


# ------------------------------------------------------------ CLI flags
@dataclass(frozen=True)
class Setting:
    """One setting as the command line sees it, made from a config dataclass field."""

    key: str
    """Dotted name (``optim.lr``, ``seed``; speed settings: ``speed.threads``)."""
    flag: str
    kind: type
    """``bool``, ``int``, ``float``, ``str`` or ``tuple`` (a list of integers)."""
    help: str
    choices: tuple[str, ...] | None = None
    const: Any = None
    """For a flag that sets a fixed value (``--untied`` sets False)."""

    @property
    def section(self) -> str:
        return self.key.split(".")[0] if "." in self.key else ""

    @property
    def dest(self) -> str:
        return "ov_" + self.key.replace(".", "__")


@functools.lru_cache(maxsize=None)
def _field_docs() -> dict[tuple[str, str], str]:
    """Attribute docstrings of this module's dataclasses: ``(class, field) -> text``."""
    try:
        tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    except (OSError, SyntaxError):  # no source shipped: flags still work, without help text
        return {}
    docs: dict[tuple[str, str], str] = {}
    for cls in tree.body:
        if not isinstance(cls, ast.ClassDef):
            continue
        for node, after in zip(cls.body, cls.body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[(cls.name, node.target.id)] = " ".join(after.value.value.split()).replace("``", "")
    return docs


def _settings_of(cls: type, prefix: str) -> list[Setting]:
    out = []
    defaults = cls()
    for f in fields(cls):
        if f.name in _SECTIONS and prefix == "":
            continue
        default = getattr(defaults, f.name)
        kind = type(default) if isinstance(default, (bool, int, float, str, tuple)) else str
        out.append(Setting(key=f"{prefix}{f.name}",
                           flag=f.metadata.get("flag", "--" + f.name.replace("_", "-")),
                           kind=kind, help=_field_docs().get((cls.__name__, f.name), ""),
                           choices=f.metadata.get("choices"), const=f.metadata.get("const")))
    return out


@functools.lru_cache(maxsize=None)
def settings() -> tuple[Setting, ...]:
    """Every setting of :class:`TrainConfig` and :class:`SpeedConfig`, in field order."""
    out: list[Setting] = []
    for section, cls in _SECTIONS.items():
        out += _settings_of(cls, f"{section}.")
    out += _settings_of(TrainConfig, "")
    out += _settings_of(SpeedConfig, "speed.")
    flags = [s.flag for s in out]
    duplicated = sorted({f for f in flags if flags.count(f) > 1})
    if duplicated:  # a programming error: two fields would share one flag
        raise RuntimeError(f"config fields share the flags {duplicated}; give one a metadata flag")
    return tuple(out)


def _help_text(s: Setting) -> str:
    text = s.help.replace("%", "%%")  # argparse formats help with %
    if s.kind is tuple:
        text += " Comma-separated on the command line."
    return f"{text} [{s.key}]"


_METAVARS = {int: "N", float: "X", str: "NAME", tuple: "STEPS"}
_GROUP_TITLES = {
    "model": "model settings (change results; override the preset)",
    "data": "data settings (change results)",
    "optim": "optimisation settings (change results)",
    "eval": "evaluation, logging and checkpoint settings (change results)",
    "": "seed (changes results)",
    "speed": "settings that change speed only",
}


def add_setting_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting (:func:`settings`), grouped by section; every default is None."""
    groups: dict[str, Any] = {}
    for s in settings():
        if s.section not in groups:
            groups[s.section] = parser.add_argument_group(_GROUP_TITLES.get(s.section, s.section))
        kwargs: dict[str, Any] = {"dest": s.dest, "default": None, "help": _help_text(s)}
        if s.kind is bool and s.const is not None:
            kwargs.update(action="store_const", const=s.const)
        elif s.kind is bool:
            kwargs.update(action=argparse.BooleanOptionalAction)
        elif s.choices:
            kwargs.update(choices=list(s.choices))
        else:
            kwargs.update(type=str if s.kind is tuple else s.kind, metavar=_METAVARS[s.kind])
        groups[s.section].add_argument(s.flag, **kwargs)


def _int_list(flag: str, text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise UserError(f"{flag} must be comma-separated step numbers, got {text!r}") from None


def settings_from_args(args: argparse.Namespace) -> tuple[dict[str, Any], SpeedConfig]:
    """The results overrides (dotted names) and the speed settings given on the command line."""
    overrides: dict[str, Any] = {}
    speed: dict[str, Any] = {}
    for s in settings():
        value = getattr(args, s.dest, None)
        if value is None:
            continue
        if s.kind is tuple:
            value = _int_list(s.flag, value)
        if s.section == "speed":
            speed[s.key.split(".", 1)[1]] = value
        else:
            overrides[s.key] = value
    return overrides, SpeedConfig(**speed)
