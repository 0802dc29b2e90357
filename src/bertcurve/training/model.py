"""The BERT model and a forward pass that computes only what the losses read.

The weights keep the standard ``BertForMaskedLM`` / ``BertForPreTraining``
layout, so the saved model loads with ``AutoModelForMaskedLM`` and the
fill-mask pipeline. Training skips the full ``(batch, seq, vocab)`` logits
tensor, and more: the losses read the last encoder layer only at the masked
positions (and at ``[CLS]`` for NSP), so that layer runs its queries,
attention output and feed-forward block there alone, with every position
still serving as a key and value. The result is the full model's, up to the
order of floating-point sums.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from bertcurve.errors import UserError
from bertcurve.training.batches import Batch, QueryPositions, query_positions
from bertcurve.training.config import ModelConfig
from bertcurve.training.masking import IGNORE_INDEX


def bert_config(model: ModelConfig, vocab_size: int, pad_token_id: int = 0):
    """A ``transformers.BertConfig`` for these settings."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=model.hidden_size,
        num_hidden_layers=model.num_layers,
        num_attention_heads=model.num_heads,
        intermediate_size=model.intermediate_size,
        max_position_embeddings=model.max_position_embeddings,
        hidden_dropout_prob=model.hidden_dropout,
        attention_probs_dropout_prob=model.attention_dropout,
        tie_word_embeddings=model.tie_word_embeddings,
        initializer_range=model.initializer_range,
        pad_token_id=pad_token_id,
        type_vocab_size=2,
    )


def build_model(model: ModelConfig, vocab_size: int, *, nsp: bool = False, pad_token_id: int = 0):
    """A freshly initialised ``BertForMaskedLM`` (``BertForPreTraining`` with ``nsp``), SDPA attention."""
    from transformers import BertForMaskedLM, BertForPreTraining

    cls = BertForPreTraining if nsp else BertForMaskedLM
    net = cls._from_config(bert_config(model, vocab_size, pad_token_id), attn_implementation="sdpa")
    if nsp:
        net.config.architectures = ["BertForPreTraining"]
    else:
        net.config.architectures = ["BertForMaskedLM"]
    head = _mlm_head(net)
    if head.bias is not head.decoder.bias:
        # Untied, the head's output comes with the decoder's own bias and ``head.bias`` is never
        # read; frozen, so DistributedDataParallel does not wait for a gradient that never comes.
        head.bias.requires_grad_(False)
    return net


def count_parameters(net: torch.nn.Module) -> int:
    """Distinct trainable parameters (a tied matrix counts once)."""
    seen: set[int] = set()
    total = 0
    for p in net.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


@dataclass
class StepOutput:
    """Loss pieces of one micro-batch; sums, so accumulation weights tokens evenly."""

    mlm_loss_sum: torch.Tensor       # summed cross-entropy over masked tokens
    mlm_correct: torch.Tensor        # top-1 hits (no grad)
    mlm_top5: torch.Tensor           # top-5 hits (no grad)
    n_masked: int
    nsp_loss_sum: torch.Tensor | None = None
    nsp_correct: torch.Tensor | None = None
    n_pairs: int = 0
    at_mask_correct: torch.Tensor | None = None  # top-1 hits where the input was [MASK]
    at_mask: torch.Tensor | None = None          # how many inputs were [MASK]


def _mlm_head(net: torch.nn.Module):
    """The prediction head that maps hidden states to vocabulary logits."""
    head = net.cls
    return head.predictions if hasattr(head, "predictions") else head


def _attention_function(self_attention: torch.nn.Module):
    """The attention kernel ``transformers`` would call for this layer (SDPA, or
    :func:`_cpu_attention` once :func:`use_cpu_dropout` ran)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.bert.modeling_bert import eager_attention_forward

    return ALL_ATTENTION_FUNCTIONS.get_interface(self_attention.config._attn_implementation,
                                                 eager_attention_forward)


def hidden_before_last_layer(bert: torch.nn.Module, input_ids: torch.Tensor,
                             attention_mask: torch.Tensor | None = None,
                             token_type_ids: torch.Tensor | None = None):
    """``(hidden, mask)``: the input of a ``BertModel``'s last layer and the attention mask it gets."""
    from transformers.masking_utils import create_bidirectional_mask

    hidden = bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
    mask = None
    if attention_mask is not None:
        mask = create_bidirectional_mask(config=bert.config, inputs_embeds=hidden,
                                         attention_mask=attention_mask)
    for layer in bert.encoder.layer[:-1]:
        hidden = layer(hidden, mask)
    return hidden, mask


def last_layer_at(layer: torch.nn.Module, hidden: torch.Tensor, mask, pos: QueryPositions):
    """A ``BertLayer``'s output at ``pos`` only: ``(n, hidden)`` rows in ``pos.flat`` order.

    Keys and values still come from every token; the queries, the attention
    output projection and the feed-forward block run only at ``pos``. The
    queries sit in a (rows, per_row) grid so each attends over its own row;
    unused grid slots are zeros whose outputs are dropped. Same arithmetic
    as ``BertLayer.forward``, dropout included (tested for equality).
    """
    attn = layer.attention.self
    rows, width, size = hidden.shape
    heads, head_dim = attn.num_attention_heads, attn.attention_head_size
    at = hidden.reshape(rows * width, size).index_select(0, pos.flat)
    query = attn.query(at)
    grid = query.new_zeros(rows * pos.per_row, query.shape[-1]).index_copy(0, pos.slot, query)
    grid = grid.view(rows, pos.per_row, heads, head_dim).transpose(1, 2)
    key = attn.key(hidden).view(rows, width, heads, head_dim).transpose(1, 2)
    value = attn.value(hidden).view(rows, width, heads, head_dim).transpose(1, 2)
    if mask is not None and mask.dim() == 4:
        mask = mask[:, :, :1, :]  # a bidirectional padding mask is the same for every query of a row
    context, _ = _attention_function(attn)(
        attn, grid, key, value, mask,
        dropout=attn.dropout.p if attn.training else 0.0, scaling=attn.scaling)
    context = context.reshape(rows * pos.per_row, heads * head_dim).index_select(0, pos.slot)
    attended = layer.attention.output(context, at)
    return layer.output(layer.intermediate(attended), attended)


def forward(net: torch.nn.Module, batch: Batch, *, topk: bool = False,
            mask_id: int | None = None) -> StepOutput:
    """Encoder forward where the losses read it, then the MLM head (and NSP if present).

    With ``mask_id`` the hits are also counted apart for positions whose input
    was ``[MASK]``: the other selected positions show the answer (kept) or a
    random character, and copying the kept ones is learnt long before context.
    """
    with_nsp = batch.next_sentence_label is not None
    pos = batch.positions if batch.positions is not None else query_positions(batch.labels,
                                                                              with_first=with_nsp)
    before_last, mask = hidden_before_last_layer(net.bert, batch.input_ids, batch.attention_mask,
                                                 batch.token_type_ids)
    hidden = last_layer_at(net.bert.encoder.layer[-1], before_last, mask, pos)
    masked_flat = pos.flat if pos.mlm is None else pos.flat.index_select(0, pos.mlm)
    masked_hidden = hidden if pos.mlm is None else hidden.index_select(0, pos.mlm)
    targets = batch.labels.reshape(-1).index_select(0, masked_flat)
    logits = _mlm_head(net)(masked_hidden).float()
    loss_sum = F.cross_entropy(logits, targets, reduction="sum")
    with torch.no_grad():
        hits = logits.argmax(-1) == targets
        correct = hits.sum()
        if topk:
            k = min(5, logits.shape[-1])
            top5 = (logits.topk(k, dim=-1).indices == targets[:, None]).any(-1).sum()
        else:
            top5 = torch.zeros((), device=logits.device)
    result = StepOutput(loss_sum, correct, top5, int(targets.numel()))
    if mask_id is not None:
        with torch.no_grad():
            at_mask = batch.input_ids.reshape(-1).index_select(0, masked_flat) == mask_id
            result.at_mask = at_mask.sum()
            result.at_mask_correct = (hits & at_mask).sum()
    if with_nsp and pos.first is not None and hasattr(net.cls, "seq_relationship"):
        pooled = net.bert.pooler(hidden.index_select(0, pos.first)[:, None, :])
        nsp_logits = net.cls.seq_relationship(pooled).float()
        result.nsp_loss_sum = F.cross_entropy(nsp_logits, batch.next_sentence_label, reduction="sum")
        with torch.no_grad():
            result.nsp_correct = (nsp_logits.argmax(-1) == batch.next_sentence_label).sum()
        result.n_pairs = int(batch.next_sentence_label.numel())
    return result


class _DropoutWithMask(torch.autograd.Function):
    """Inverted dropout whose keep-mask comes from 16-bit slices of 64-bit random draws."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:  # type: ignore[override]
        n = x.numel()
        dropped = round(p * 65536)  # dropped lanes out of 2**16: p to within 1 / 131,072
        lanes = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
        keep = lanes.view(torch.int16)[:n].view(x.shape) >= dropped - 32768
        ctx.save_for_backward(keep)
        ctx.scale = 65536 / (65536 - dropped)  # 1 / the exact keep probability: unbiased
        # where() reads the bool mask as is; x * keep would first convert it to floats
        return torch.where(keep, x, 0.0).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad, 0.0).mul_(ctx.scale), None


def _uses_drawn_mask(x: torch.Tensor, p: float, training: bool) -> bool:
    return training and 0 < p < 1 and x.device.type == "cpu"


class CpuDropout(torch.nn.Dropout):
    """``nn.Dropout`` that, on a CPU, draws its mask 16 bits at a time.

    Same probability and scaling; a different random stream. On a CPU torch
    draws one Bernoulli number per element, which made dropout about a tenth
    of a ``seed-48m`` training step. Elsewhere it is ``nn.Dropout``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _uses_drawn_mask(x, self.p, self.training):
            return _DropoutWithMask.apply(x, self.p)
        return super().forward(x)


CPU_ATTENTION = "bertcurve_cpu"


def _cpu_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """SDPA, except when training on a CPU with attention dropout: then softmax and
    :class:`CpuDropout`'s mask (SDPA's CPU fallback for dropout draws elementwise)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if not _uses_drawn_mask(query, dropout, module.training):
        return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask,
                                      scaling=scaling, dropout=dropout, **kwargs)
    rows, heads, width, head_dim = query.shape
    scaling = head_dim ** -0.5 if scaling is None else scaling
    q, k = query.reshape(-1, width, head_dim), key.reshape(-1, key.shape[2], head_dim)
    # the scaling rides in the matrix product instead of a pass over the (rows, heads, T, T) scores
    weights = torch.baddbmm(q.new_empty(q.shape[0], width, k.shape[1]), q, k.transpose(1, 2),
                            beta=0.0, alpha=scaling).view(rows, heads, width, -1)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # True: may attend (the SDPA mask convention)
            weights = weights.masked_fill(~attention_mask, torch.finfo(weights.dtype).min)
        else:
            weights = weights + attention_mask
    weights = _DropoutWithMask.apply(torch.softmax(weights, dim=-1), dropout)
    return torch.matmul(weights, value).transpose(1, 2), None


def use_cpu_dropout(net: torch.nn.Module) -> None:
    """Swap every ``nn.Dropout`` for :class:`CpuDropout` and attention for :func:`_cpu_attention`.

    Parameters and saved files are unchanged (the attention choice is not
    written to ``config.json``). Numbers then differ from stock dropout's
    only by the random masks drawn; ``train`` does this on CPUs only.
    """
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(CPU_ATTENTION, _cpu_attention)
    AttentionMaskInterface.register(CPU_ATTENTION, sdpa_mask)  # the padding mask SDPA gets
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if type(child) is torch.nn.Dropout:
                setattr(module, name, CpuDropout(child.p, child.inplace))
    net.set_attn_implementation(CPU_ATTENTION)


def compile_encoder(net: torch.nn.Module) -> None:
    """``torch.compile`` the encoder layers that run at every position, in place.

    Parameter names (and so checkpoints) stay the same. The last layer runs
    eager: its number of positions changes with every batch's masks.
    """
    net.bert.embeddings.compile()
    for layer in net.bert.encoder.layer[:-1]:
        layer.compile()


class TrainingModule(torch.nn.Module):
    """Wraps a BERT model so ``forward(batch)`` is :func:`forward` (for DistributedDataParallel)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, batch: Batch, topk: bool = False) -> StepOutput:  # type: ignore[override]
        return forward(self.net, batch, topk=topk)


def param_groups(net: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and LayerNorm weights.

    Frozen parameters are listed too: they never get a gradient, so AdamW
    leaves them alone, and the optimizer state of every checkpoint fits.
    """
    decay, no_decay = [], []
    seen: set[int] = set()
    for name, p in net.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if p.ndim < 2 or "LayerNorm" in name or "layernorm" in name.lower() or name.endswith(".bias"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


# ------------------------------------------------------ continued pretraining
# BertConfig fields -> ModelConfig fields: the shape an --init-from model imposes on the run.
_PRETRAINED_SHAPE = {
    "hidden_size": "hidden_size",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "intermediate_size": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings",
    "hidden_dropout_prob": "hidden_dropout",
    "attention_probs_dropout_prob": "attention_dropout",
    "tie_word_embeddings": "tie_word_embeddings",
}
# Settings bert_config() leaves at BertConfig's defaults: a model must have these values for a
# resumed run (which rebuilds the model from the config) to be the same network.
_PRETRAINED_FIXED = {"model_type": "bert", "hidden_act": "gelu", "layer_norm_eps": 1e-12,
                     "type_vocab_size": 2, "position_embedding_type": "absolute",
                     "is_decoder": False, "add_cross_attention": False}


@dataclass(frozen=True)
class PretrainedBert:
    """A Hugging Face BERT masked-LM directory checked against a data dir (:func:`inspect_pretrained`)."""

    path: Path
    name: str                      # the folder's name (recorded in the run config and model card)
    settings: dict                 # ``{"model.hidden_size": 768, ...}``: the run's model shape
    vocab_size: int


def _pretrained_error(path: Path, why: str) -> UserError:
    return UserError(f"--init-from {path}: {why}")


def inspect_pretrained(path: str | Path, data_tokenizer) -> PretrainedBert:
    """Check that ``path`` is a BERT masked-LM directory this data dir can continue training.

    Refused with a reason (:class:`~bertcurve.errors.UserError`): no ``config.json``, not a
    BERT masked-LM (or pre-training) model, settings this trainer does not reproduce,
    weights only in a pickled file, no tokenizer, or a vocabulary other than the data
    dir's (token by token: same ids for the same tokens). Nothing is loaded but JSON and
    the tokenizer; the weights are read by :func:`load_pretrained`.
    """
    from transformers import AutoConfig, AutoTokenizer

    path = Path(path).expanduser()
    if not (path / "config.json").is_file():
        raise _pretrained_error(path, "no config.json here; give a Hugging Face model directory "
                                      "(save_pretrained output, e.g. a downloaded bert-base-chinese)")
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise _pretrained_error(path, f"config.json cannot be read ({str(exc).splitlines()[0]})") from None
    archs = set(getattr(config, "architectures", None) or [])
    if config.model_type != "bert" or not archs & {"BertForMaskedLM", "BertForPreTraining"}:
        kind = ", ".join(sorted(archs)) or config.model_type
        raise _pretrained_error(path, f"{kind} is not a BERT masked language model (BertForMaskedLM "
                                      "or BertForPreTraining); only those can continue MLM pretraining")
    for key, want in _PRETRAINED_FIXED.items():
        have = getattr(config, key, want)
        if have != want:
            raise _pretrained_error(path, f"{key} is {have!r}; bertcurve trains BERT with {key}={want!r}")
    if not any(path.glob("*.safetensors")):
        raise _pretrained_error(path, "no .safetensors weights (pickled pytorch_model.bin files are "
                                      "never loaded); convert them with save_pretrained(safe_serialization=True)")
    no_tokenizer = _pretrained_error(path, "no tokenizer files (vocab.txt or tokenizer.json), so its "
                                           "vocabulary cannot be checked against the data dir")
    # transformers 5 builds a 5-token tokenizer from nothing rather than failing: look first
    if not any((path / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
        raise no_tokenizer
    try:
        model_tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, TypeError):
        raise no_tokenizer from None
    ours, theirs = data_tokenizer.get_vocab(), model_tokenizer.get_vocab()
    if ours != theirs or config.vocab_size != len(data_tokenizer):
        differ = sum(1 for token, i in ours.items() if theirs.get(token) != i)
        raise _pretrained_error(
            path, f"its vocabulary ({config.vocab_size:,} tokens) is not the data dir's "
                  f"({len(data_tokenizer):,} tokens, {differ:,} with another id or missing); prepare the "
                  "corpus with this model's tokenizer (`bertcurve prepare ... --tokenizer DIR`)")
    settings = {f"model.{ours_name}": getattr(config, theirs_name)
                for theirs_name, ours_name in _PRETRAINED_SHAPE.items()}
    return PretrainedBert(path, path.resolve().name, settings, int(config.vocab_size))


def load_pretrained(pretrained: PretrainedBert, net: torch.nn.Module) -> None:
    """Copy the weights of an :func:`inspect_pretrained` directory into ``net``, the run's
    :func:`build_model` network (so checkpoints are written exactly as a fresh run's).

    ``transformers`` reads the directory (legacy names such as ``LayerNorm.gamma`` included).
    Refused when a weight of the encoder or the MLM head is missing or mis-shaped: a bare
    ``BertModel`` or a model whose head was dropped would silently train a random head.
    With ``--nsp`` a ``BertForMaskedLM`` directory's NSP head (and pooler) start from scratch.
    """
    import warnings

    from transformers import BertForMaskedLM, BertForPreTraining
    from transformers.utils import logging as hf_logging

    cls = BertForPreTraining if hasattr(net.cls, "seq_relationship") else BertForMaskedLM
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the unused-weights report is judged below instead
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            source, info = cls.from_pretrained(str(pretrained.path), local_files_only=True,
                                               use_safetensors=True, output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise _pretrained_error(pretrained.path, f"weights cannot be loaded ({str(exc).splitlines()[0]})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    optional = ("cls.seq_relationship.", "bert.pooler.")  # the NSP head, new when a MaskedLM dir meets --nsp
    bad = [k for k in info.get("missing_keys", []) if not k.startswith(optional)]
    bad += [str(k) for k in info.get("mismatched_keys", [])]
    if not bad:
        try:
            missing, unexpected = net.load_state_dict(source.state_dict(), strict=False)
        except RuntimeError as exc:  # a shape that differs
            bad = [str(exc).splitlines()[-1].strip()]
        else:
            bad = [k for k in missing if not k.startswith(optional)
                   and k not in set(getattr(net, "_tied_weights_keys", None) or {})] + list(unexpected)
    if bad:
        raise _pretrained_error(pretrained.path, f"weights do not fit a BERT masked LM of its config "
                                                 f"(missing or mis-shaped: {', '.join(bad[:3])}"
                                                 f"{', ...' if len(bad) > 3 else ''})")
    net.tie_weights()


def with_pretrained_shape(overrides: dict | None, pretrained: PretrainedBert | None) -> dict:
    """``overrides`` plus the model shape of ``pretrained``; a shape option given too is refused."""
    overrides = dict(overrides or {})
    if pretrained is None:
        return overrides
    fields = {key.split(".")[-1] for key in pretrained.settings}
    clash = sorted(k for k, v in overrides.items() if v is not None and k.split(".")[-1] in fields)
    if clash:
        raise _pretrained_error(pretrained.path, f"the model's shape comes from its config.json; drop "
                                                 f"{', '.join(clash)}")
    overrides.update(pretrained.settings)
    return overrides
