"""Load a trained masked language model and predict masked tokens fast.

Shared by ``bertcurve fill-mask``, ``bertcurve export`` and the benchmark.
Speed comes from four things (see ``docs/inference.md``):

* ``torch.inference_mode`` (no autograd bookkeeping);
* length-bucketed batches (sentences sorted by length, so little padding);
* the output layer only at ``[MASK]`` positions: the encoder runs on every
  token, but the vocabulary projection (hidden x vocab, the largest matrix of
  a small model) runs only where a prediction is wanted;
* optional int8 dynamic quantization of the Linear layers on the CPU.
"""

from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bertcurve import layout
from bertcurve.errors import UserError
from bertcurve.fsutil import read_json
from bertcurve.training.config import NotARunConfig, load_run_config

QUANTIZE_CHOICES = ("int8",)


# ------------------------------------------------------------------ loading
@dataclass(frozen=True)
class MaskedLM:
    """A model ready for prediction, with its tokenizer and where it came from."""

    model: Any                  # a transformers *ForMaskedLM module, in eval mode
    tokenizer: Any              # a transformers PreTrainedTokenizerFast
    source: str                 # the path the user gave
    step: int | None            # optimizer step of the weights, when known
    device: str                 # "cpu" or "cuda"
    quantize: str | None        # None or "int8"
    max_length: int             # positions the model can see, special tokens included
    prefix: tuple[int, ...] = ()  # special ids the tokenizer puts before a text ([CLS])
    suffix: tuple[int, ...] = ()  # and after it ([SEP])
    tokenizer_dir: str = ""       # folder the tokenizer files were read from

    @property
    def mask_token(self) -> str:
        return self.tokenizer.mask_token

    def with_specials(self, content_ids: Sequence[int]) -> list[int]:
        """A model input from a text's token ids: ``[CLS] ids [SEP]`` for BERT."""
        return [*self.prefix, *content_ids, *self.suffix]


def _is_run_dir(path: Path) -> bool:
    if (path / layout.METRICS).is_file() or (path / layout.CHECKPOINTS_DIR).is_dir():
        return True
    try:
        return load_run_config(path, missing_ok=True) is not None
    except NotARunConfig:  # a Hugging Face model dir has a config.json too
        return False
    except UserError:  # a damaged run config: loading the run says what is wrong with it
        return True


def available_steps(run_dir: Path) -> list[int]:
    """Steps of the complete checkpoints of a run (those with weights), sorted."""
    ckpt_root = Path(run_dir) / layout.CHECKPOINTS_DIR
    if not ckpt_root.is_dir():
        return []
    steps = []
    for child in ckpt_root.iterdir():
        step = layout.checkpoint_step(child)
        if step is not None and (child / layout.CKPT_WEIGHTS).is_file():
            steps.append(step)
    return sorted(steps)


def _steps_hint(run_dir: Path) -> str:
    steps = available_steps(run_dir)
    if not steps:
        return "the run has no checkpoints yet"
    shown = ", ".join(str(s) for s in steps[-8:])
    more = f" (and {len(steps) - 8} earlier)" if len(steps) > 8 else ""
    return f"checkpoints exist for steps {shown}{more}"


@dataclass(frozen=True)
class ModelLocation:
    """Where the pieces of a model live on disk (resolved from what the user gave)."""

    hf_dir: Path                 # a Hugging Face model dir (final/, a checkpoint, an export)
    tokenizer_dir: Path          # dir AutoTokenizer.from_pretrained can read
    step: int | None
    run_dir: Path | None


def _has_hf_model(path: Path) -> bool:
    if not (path / "config.json").is_file():
        return False
    return any((path / name).is_file() for name in (
        "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"))


def _has_tokenizer(path: Path) -> bool:
    return (path / layout.TOKENIZER_JSON).is_file() or (path / layout.VOCAB_TXT).is_file()


def _tokenizer_dir_for_run(run_dir: Path, extra: Sequence[Path] = ()) -> Path:
    candidates = [*extra, run_dir / layout.FINAL_MODEL_DIR, run_dir]
    cfg = load_run_config(run_dir, missing_ok=True)
    if cfg is not None and cfg.data_dir:
        data_path = Path(cfg.data_dir)
        if not data_path.is_absolute():
            # relative paths in a run config are relative to where train ran;
            # try the run dir's parent as well
            candidates += [data_path, run_dir.parent / data_path]
        else:
            candidates.append(data_path)
    for cand in candidates:
        if cand.is_dir() and _has_tokenizer(cand):
            return cand
    raise UserError(
        f"no tokenizer found for run {run_dir} (looked in {', '.join(str(c) for c in candidates)}); "
        "keep the run's data directory where training read it, or pass a Hugging Face model dir"
    )


def locate_model(model: str | Path, step: int | None = None) -> ModelLocation:
    """Resolve a run dir (final model or checkpoint ``step``), a checkpoint dir or an HF dir."""
    path = Path(model).expanduser()
    if not path.exists():
        raise UserError(f"{path} does not exist; give a run directory or a Hugging Face model directory")
    if not path.is_dir():
        raise UserError(f"{path} is a file; give a run directory or a Hugging Face model directory")

    # a checkpoint folder given directly: RUN/checkpoints/step-XXXXXXXX
    if step is None and layout.checkpoint_step(path) is not None and (path / layout.CKPT_WEIGHTS).is_file():
        step = layout.checkpoint_step(path)
        path = path.parent.parent

    if _is_run_dir(path):
        if step is None:
            final = path / layout.FINAL_MODEL_DIR
            if _has_hf_model(final):
                return ModelLocation(final, _tokenizer_dir_for_run(path), _final_step(path), path)
            raise UserError(
                f"run {path} has no final model yet ({final} missing); {_steps_hint(path)}: "
                "pick one with --step N"
            )
        ckpt = path / layout.CHECKPOINTS_DIR / layout.checkpoint_dir_name(step)
        if not (ckpt / layout.CKPT_WEIGHTS).is_file():
            raise UserError(f"run {path} has no checkpoint for step {step}; {_steps_hint(path)}")
        if not _has_hf_model(ckpt):
            raise UserError(f"checkpoint {ckpt} has weights but no config.json; it was not written "
                            "by this bertcurve's train and cannot be loaded")
        return ModelLocation(ckpt, _tokenizer_dir_for_run(path, [ckpt]), step, path)

    if step is not None:
        raise UserError(f"--step needs a run directory, but {path} is not one (no {layout.RUN_CONFIG})")
    if _has_hf_model(path):
        if not _has_tokenizer(path) and not (path / "tokenizer_config.json").is_file():
            raise UserError(f"{path} holds a model but no tokenizer files; save the tokenizer next to it")
        return ModelLocation(path, path, _export_step(path), None)
    raise UserError(
        f"{path} holds no model: expected a run directory (with {layout.RUN_CONFIG} and "
        f"{layout.FINAL_MODEL_DIR}/ or {layout.CHECKPOINTS_DIR}/) or a Hugging Face model directory "
        "(config.json + model.safetensors)"
    )


def _final_step(run_dir: Path) -> int | None:
    """The step of a run's final model: written when training reached ``max_steps``."""
    try:
        cfg = load_run_config(run_dir, missing_ok=True)
    except UserError:
        cfg = None
    if cfg is not None:
        return cfg.train.optim.max_steps
    steps = available_steps(run_dir)
    return steps[-1] if steps else None


def _export_step(path: Path) -> int | None:
    """The training step recorded by `bertcurve export`, for an exported model dir."""
    info = path / layout.EXPORT_INFO
    if info.is_file():
        try:
            step = read_json(info).get("step")
        except (UserError, AttributeError):
            return None
        return step if isinstance(step, int) else None
    return None


def _pick_device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device} asked for, but no CUDA GPU is visible; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise UserError(f"unknown device {device!r}; use cpu, cuda or auto")
    return device


def load_masked_lm(
    model: str | Path,
    step: int | None = None,
    *,
    quantize: str | None = None,
    device: str | None = None,
) -> MaskedLM:
    """Load the model (and tokenizer) behind a run dir, checkpoint or HF model dir.

    ``step`` picks a checkpoint of a run instead of its final model.
    ``quantize="int8"`` applies dynamic int8 quantization to every Linear
    layer (CPU only). The model is returned in eval mode.
    """
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise UserError(f"unknown --quantize {quantize!r}; choose one of {', '.join(QUANTIZE_CHOICES)}")
    loc = locate_model(model, step)
    # dynamic int8 quantization is a CPU feature: "auto" means the CPU then
    dev = _pick_device("cpu" if quantize and device in (None, "auto") else device)
    if quantize and dev != "cpu":
        raise UserError("--quantize int8 is dynamic CPU quantization; use it with --device cpu")

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bars in CLI output
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # we report a bad load ourselves, in one line
    try:
        return _load(model, loc, dev, quantize)
    finally:
        hf_logging.set_verbosity(verbosity)


def _tied_or_buffer(key: str) -> bool:
    return key in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias") or key.endswith("position_ids")


def _load(model: str | Path, loc: ModelLocation, dev: str, quantize: str | None) -> MaskedLM:
    from safetensors import SafetensorError
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(loc.tokenizer_dir), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load the tokenizer in {loc.tokenizer_dir}: {_one_line(exc)}") from None
        try:
            # safetensors only: a pickled pytorch_model.bin from a user's path is never loaded
            net, info = AutoModelForMaskedLM.from_pretrained(
                str(loc.hf_dir), local_files_only=True, output_loading_info=True, use_safetensors=True)
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError, pickle.UnpicklingError) as exc:
            raise UserError(f"cannot load the model in {loc.hf_dir}: {_one_line(exc)}") from None
    # a pre-training (MLM + NSP) model leaves its NSP head and pooler unused,
    # which is fine; a masked-LM weight that is missing is not
    missing = [k for k in info.get("missing_keys", ()) if not _tied_or_buffer(k)]
    if missing:
        raise UserError(
            f"{loc.hf_dir} lacks {len(missing)} weights of a masked language model "
            f"(e.g. {sorted(missing)[0]}); it is not a masked-LM checkpoint"
        )
    if tokenizer.mask_token is None:
        raise UserError(f"the tokenizer in {loc.tokenizer_dir} has no mask token; it cannot fill masks")
    vocab = net.config.vocab_size
    if len(tokenizer) > vocab:
        raise UserError(
            f"tokenizer in {loc.tokenizer_dir} has {len(tokenizer)} tokens but the model only {vocab}; "
            "they do not belong together"
        )
    trained = _trained_length(loc.run_dir) if loc.run_dir is not None else None
    if trained is not None and trained < getattr(tokenizer, "model_max_length", trained + 1):
        # positions past the training length were never trained: window long texts instead
        tokenizer.model_max_length = trained
    return wrap_model(net, tokenizer, str(model), step=loc.step, device=dev, quantize=quantize,
                      tokenizer_dir=str(loc.tokenizer_dir))


def _trained_length(run_dir: Path) -> int | None:
    """The sequence length a run trained on (its config.json), if readable."""
    try:
        cfg = load_run_config(run_dir, missing_ok=True)
    except UserError:
        return None
    return cfg.train.data.seq_len if cfg is not None else None


def wrap_model(
    net: Any,
    tokenizer: Any,
    source: str = "(in memory)",
    *,
    step: int | None = None,
    device: str = "cpu",
    quantize: str | None = None,
    tokenizer_dir: str = "",
) -> MaskedLM:
    """A :class:`MaskedLM` from a model and tokenizer already in memory (eval mode, on ``device``)."""
    net.eval()
    if quantize == "int8":
        net = quantize_int8(net)
    net.to(device)
    max_length = int(getattr(net.config, "max_position_embeddings", 512))
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < max_length:
        max_length = tok_max
    # transformers 5 tokenizers have no build_inputs_with_special_tokens; learn the
    # template from how the tokenizer wraps a lone mask token
    wrapped = tokenizer(tokenizer.mask_token)["input_ids"]
    at = wrapped.index(tokenizer.mask_token_id)
    return MaskedLM(net, tokenizer, source, step, device, quantize, max_length,
                    tuple(wrapped[:at]), tuple(wrapped[at + 1:]), tokenizer_dir)


def quantize_int8(net: Any) -> Any:
    """Dynamic int8 quantization of every ``nn.Linear`` (weights int8, activations per batch)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        return torch.ao.quantization.quantize_dynamic(net, {torch.nn.Linear}, dtype=torch.qint8)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


# --------------------------------------------------------------- prediction
def length_buckets(lengths: Sequence[int], batch_size: int, max_tokens: int | None = None) -> list[list[int]]:
    """Group indices into batches of similar length (sorted, longest first).

    Each batch has at most ``batch_size`` sequences and, when ``max_tokens``
    is given, at most that many padded tokens (a long batch gets fewer rows).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = lengths[current[0]] if current else lengths[i]
        if current and (len(current) >= batch_size or (max_tokens and (len(current) + 1) * width > max_tokens)):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _is_plain_bert_layer(layer: Any) -> bool:
    return (type(layer).__name__ == "BertLayer" and not getattr(layer, "is_decoder", False)
            and not getattr(layer, "add_cross_attention", False))


def mask_logits(lm: MaskedLM, input_ids: Any, attention_mask: Any, rows: Any, cols: Any) -> Any:
    """Logits (n_masks x vocab) at positions ``(rows[i], cols[i])`` of a padded batch.

    For BERT models every encoder layer but the last runs on the whole batch;
    the last layer and the MLM head run only at the mask positions
    (:func:`bertcurve.training.model.last_layer_at`). Other models run whole and their
    logits are gathered.
    """
    from bertcurve.training.batches import positions_at
    from bertcurve.training.model import hidden_before_last_layer, last_layer_at

    net = lm.model
    encoder = getattr(net, "bert", None)
    head = getattr(net, "cls", None)
    if encoder is None or head is None:
        return net(input_ids=input_ids, attention_mask=attention_mask).logits[rows, cols]
    layers = encoder.encoder.layer
    last = layers[-1] if len(layers) else None
    if last is None or not _is_plain_bert_layer(last) or net.training:
        hidden = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return head(hidden[rows, cols])
    hidden, mask = hidden_before_last_layer(encoder, input_ids, attention_mask)
    pos = positions_at(rows, cols, *input_ids.shape)
    return head(last_layer_at(last, hidden, mask, pos))


def predict_top_k(
    lm: MaskedLM,
    sequences: Sequence[Sequence[int]],
    top_k: int = 5,
    batch_size: int = 64,
    max_tokens: int = 4096,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Top-k token ids and probabilities at every mask of every id sequence.

    ``sequences`` are complete model inputs (special tokens included). Returns,
    in input order, one ``(ids, probs)`` pair of ``n_masks x top_k`` arrays per
    sequence; masks appear in the order they occur in the sequence.
    """
    import torch

    mask_id = lm.tokenizer.mask_token_id
    pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    k = min(top_k, int(lm.model.config.vocab_size))
    empty = (np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32))
    out: list[tuple[np.ndarray, np.ndarray]] = [empty] * len(sequences)
    lengths = [len(s) for s in sequences]
    with torch.inference_mode():
        for batch in length_buckets(lengths, batch_size, max_tokens):
            width = max(lengths[i] for i in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            att = torch.zeros((len(batch), width), dtype=torch.long)
            for r, i in enumerate(batch):
                ids[r, : lengths[i]] = torch.as_tensor(sequences[i], dtype=torch.long)
                att[r, : lengths[i]] = 1
            rows, cols = (ids == mask_id).nonzero(as_tuple=True)
            if len(rows) == 0:
                continue
            logits = mask_logits(lm, ids.to(lm.device), att.to(lm.device), rows.to(lm.device), cols.to(lm.device))
            probs, top = torch.softmax(logits.float(), dim=-1).topk(k, dim=-1)
            probs_np, top_np = probs.cpu().numpy(), top.cpu().numpy()
            counts = np.bincount(rows.numpy(), minlength=len(batch))
            start = 0
            for r, i in enumerate(batch):
                out[i] = (top_np[start: start + counts[r]], probs_np[start: start + counts[r]])
                start += counts[r]
    return out


def token_text(tokenizer: Any, token_id: int) -> str:
    """How a vocabulary entry reads in Chinese text: no WordPiece '##', no spaces."""
    tok = tokenizer.convert_ids_to_tokens(int(token_id))
    if tok is None:
        return ""
    if tok.startswith("##"):
        tok = tok[2:]
    return tok.replace("\u2581", "").replace("Ġ", "")
