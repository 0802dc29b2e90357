"""Write report.md and a self-contained report.html for one or more training runs.

The report gathers what a reader needs to judge a run: the dataset card, the
model and training configuration, throughput and hardware, the learning-curve
figures, the statistics with plain-words verdicts, the forecast, and (with
several runs) a comparison; runs that differ only in seed are also aggregated
(mean curve with its across-seed band, spread of the final value). report.html embeds every figure (base64 PNG) and
its style sheet, so it opens offline and can be mailed as one file.

The first SOURCE is the main run; any further ones are compared with it.
Missing pieces are computed on the way: analysis (as `bertcurve analyze`
would, without writing it) and figures (into RUN_DIR/figures, as `bertcurve
plot` would).
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import html
import io
import platform
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from bertcurve import __version__, layout
from bertcurve.curves import policy
from bertcurve.curves.fits import FROM_KNEE
from bertcurve.errors import UserError
from bertcurve.progress import more_time
from bertcurve.fsutil import atomic_write_text, guard_output_file, markdown_cell, read_json
from bertcurve.training.config import RunConfig, load_run_config

REPORT_FORMAT = "bertcurve.stages.report/1"   # written into report.html's <meta name="generator">

SECTIONS = ("summary", "dataset", "model", "throughput", "curves", "analysis", "forecast", "comparison", "notes")


# ------------------------------------------------------------------ a tiny document model
@dataclass
class Doc:
    """Blocks rendered both as Markdown and as HTML, so the two files never drift apart."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def h2(self, text: str, anchor: str) -> None:
        self.blocks.append(("h2", (text, anchor)))

    def h3(self, text: str) -> None:
        self.blocks.append(("h3", text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def bullets(self, items: Sequence[str]) -> None:
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]], *, align: str | None = None) -> None:
        if rows:
            self.blocks.append(("table", (list(header), [[_cell(c) for c in r] for r in rows], align)))

    def kv(self, rows: Sequence[tuple[str, Any]]) -> None:
        """A two-column table of settings or facts; rows whose value is None are left out."""
        kept = [(k, v) for k, v in rows if v is not None]
        if kept:
            self.table(["", ""], kept, align="kv")

    def figure(self, path: Path, caption: str, rel: str) -> None:
        self.blocks.append(("figure", (Path(path), caption, rel)))

    def pre(self, text: str) -> None:
        self.blocks.append(("pre", text))

    def note(self, text: str) -> None:
        self.blocks.append(("note", text))

    # -- rendering ----------------------------------------------------------------
    def markdown(self) -> str:
        def text(s: str) -> str:  # user names in prose: "<!--" must not hide the rest of the report
            return str(s).replace("<", "&lt;")

        out = [f"# {text(self.title)}", ""]
        for kind, data in self.blocks:
            if kind == "h2":
                out += [f"## {text(data[0])}", ""]
            elif kind == "h3":
                out += [f"### {text(data)}", ""]
            elif kind == "p":
                out += [text(data), ""]
            elif kind == "note":
                out += [f"> {text(data)}", ""]
            elif kind == "ul":
                out += [f"- {text(item)}" for item in data] + [""]
            elif kind == "table":
                header, rows, align = data
                if align == "kv":
                    header = ["", ""]
                out.append("| " + " | ".join(_md_escape(h) for h in header) + " |")
                out.append("|" + "|".join("---" for _ in header) + "|")
                out += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
                out.append("")
            elif kind == "figure":
                path, caption, rel = data
                out += [f"![{caption}]({rel})", "", f"*{caption}*", ""]
            elif kind == "pre":
                out += ["```", data, "```", ""]
        return "\n".join(out).rstrip() + "\n"

    def html(self) -> str:
        body: list[str] = []
        toc: list[str] = []
        for kind, data in self.blocks:
            if kind == "h2":
                text, anchor = data
                toc.append(f'<a href="#{anchor}">{html.escape(text)}</a>')
                body.append(f'<h2 id="{anchor}">{html.escape(text)}</h2>')
            elif kind == "h3":
                body.append(f"<h3>{html.escape(data)}</h3>")
            elif kind == "p":
                body.append(f"<p>{_inline(data)}</p>")
            elif kind == "note":
                body.append(f'<p class="note">{_inline(data)}</p>')
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in data) + "</ul>")
            elif kind == "table":
                header, rows, align = data
                cls = ' class="kv"' if align == "kv" else ""
                head = "" if align == "kv" else "<thead><tr>" + "".join(
                    f"<th>{_inline(h)}</th>" for h in header) + "</tr></thead>"
                rows_html = "".join(
                    "<tr>" + "".join(
                        (f"<th>{_inline(c)}</th>" if (align == "kv" and j == 0) else
                         f'<td{" class=num" if (align != "kv" and _numeric(c)) else ""}>{_inline(c)}</td>')
                        for j, c in enumerate(row)) + "</tr>"
                    for row in rows)
                body.append(f'<div class="tablewrap"><table{cls}>{head}<tbody>{rows_html}</tbody></table></div>')
            elif kind == "figure":
                path, caption, _rel = data
                mime = "image/svg+xml" if path.suffix == ".svg" else "image/png"
                encoded = base64.b64encode(path.read_bytes()).decode("ascii")
                body.append(f'<figure><img src="data:{mime};base64,{encoded}" alt="{html.escape(caption)}">'
                            f"<figcaption>{html.escape(caption)}</figcaption></figure>")
            elif kind == "pre":
                body.append(f"<pre>{html.escape(data)}</pre>")
        nav = '<nav class="toc">' + " · ".join(toc) + "</nav>"
        text = self.title + "\n".join(body)
        return (
            "<!DOCTYPE html>\n"
            '<html lang="zh-CN">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<meta name="generator" content="bertcurve {__version__} ({REPORT_FORMAT})">\n'
            f"<title>{html.escape(self.title)}</title>\n<style>{cjk_font_face(text)}{_CSS}</style>\n</head>\n"
            "<body>\n<main>\n"
            f"<h1>{html.escape(self.title)}</h1>\n{nav}\n" + "\n".join(body) + "\n</main>\n</body>\n</html>\n"
        )


_CSS = """
:root { --fg:#1d2430; --muted:#5b6472; --line:#dde1e6; --accent:#0072B2; --warn:#8B1A1A; --bg:#ffffff; }
* { box-sizing: border-box; }
body { margin:0; background:#f4f6f8; color:var(--fg);
  font-family: -apple-system, "Segoe UI", "Noto Sans SC", "Noto Sans CJK SC", "Source Han Sans SC",
  "PingFang SC", "Microsoft YaHei", "WenQuanYi Micro Hei", "bertcurve CJK", sans-serif; line-height:1.6; font-size:16px; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 40px 60px; background: var(--bg);
  box-shadow: 0 0 24px rgba(0,0,0,.06); }
h1 { font-size: 1.9em; margin: .2em 0 .3em; line-height:1.25; }
h2 { font-size: 1.35em; margin: 1.8em 0 .6em; padding-bottom: .25em; border-bottom: 2px solid var(--accent); }
h3 { font-size: 1.1em; margin: 1.3em 0 .4em; color: #333; }
nav.toc { font-size: .92em; color: var(--muted); padding: .5em 0 .9em; border-bottom: 1px solid var(--line); }
nav.toc a { color: var(--accent); text-decoration: none; }
p.note { background:#fff8e6; border-left: 4px solid #E69F00; padding:.55em .9em; margin: .8em 0; }
ul { padding-left: 1.3em; } li { margin: .25em 0; }
.tablewrap { overflow-x: auto; margin: .6em 0 1em; }
table { border-collapse: collapse; font-size: .92em; min-width: 50%; }
th, td { border-bottom: 1px solid var(--line); padding: .35em .8em; text-align: left; vertical-align: top; }
thead th { background: #eef2f6; border-bottom: 2px solid #c9d1da; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv th { font-weight: 600; color: #333; white-space: nowrap; background: #f7f9fb; width: 1%; }
figure { margin: 1em 0 1.6em; } figure img { width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: .9em; margin-top: .3em; }
pre { background: #f6f8fa; border: 1px solid var(--line); padding: .8em; overflow-x: auto; font-size: .85em;
  white-space: pre-wrap; }
code { background:#f0f2f4; padding: 0 .25em; border-radius: 3px; font-size: .92em; }
"""


def cjk_font_face(text: str) -> str:
    """An @font-face rule embedding just the CJK glyphs ``text`` uses (a subset of the font
    :mod:`bertcurve.viz.fonts` picked), so Chinese renders offline on machines without a CJK font.

    Returns "" when there is nothing to embed or the font cannot be subset.
    """
    chars = sorted({ch for ch in text if ord(ch) > 0x2E7F})
    if not chars:
        return ""
    try:
        from fontTools import subset
        from fontTools.ttLib import TTFont

        from bertcurve.viz.fonts import find_cjk_font

        path = find_cjk_font().path
        font = TTFont(str(path), fontNumber=0, lazy=False)
        options = subset.Options()
        options.flavor = "woff"          # zlib-compressed; woff2 would need the brotli package
        options.layout_features = ["*"]
        options.name_IDs = []
        options.hinting = False
        subsetter = subset.Subsetter(options)
        subsetter.populate(unicodes=[ord(c) for c in chars])
        subsetter.subset(font)
        buffer = io.BytesIO()
        font.flavor = "woff"
        font.save(buffer)
    except Exception:  # fontTools raises many types on odd fonts; the report is still readable without it
        return ""
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return ('@font-face { font-family: "bertcurve CJK"; font-display: swap; '
            f'src: url(data:font/woff;base64,{data}) format("woff"); }}\n')


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return _num(value)
    return str(value)


def _num(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "—"
    if x != x:
        return "—"
    if abs(x) >= 1e5 or (abs(x) < 1e-3 and x != 0):
        return f"{x:.3g}"
    return f"{x:.{digits}g}"


def _numeric(text: str) -> bool:
    return bool(re.fullmatch(r"[−\-+]?[\d,.]+(e[−\-+]?\d+)?%?( ?[a-zA-Z/%]+)?", text.strip()))


def _md_escape(text: str) -> str:
    return markdown_cell(text)


def _inline(text: str) -> str:
    """Escape, then turn `code` and **bold** into tags (the only inline markup the report uses)."""
    out = html.escape(str(text))
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.2%}"


def _step(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}"


def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _title(en: str, zh: str, lang: str) -> str:
    return en if lang == "en" else zh if lang == "zh" else f"{en} · {zh}"


# ------------------------------------------------------------------ gathering inputs
@dataclass
class RunInfo:
    """Everything the report knows about one source."""

    source: Path
    log: Any                         # sources.TrainingLog
    analysis: dict | None
    run_dir: Path | None             # a bertcurve run directory, or None for foreign logs
    config: RunConfig | None         # the run's config.json
    data_meta: dict | None           # meta.json of its data dir
    data_dir: Path | None
    study: dict | None               # study.json beside the run (hardware, stage times)


def _run_dir_of(source: Path) -> Path | None:
    if source.is_dir() and (source / layout.METRICS).is_file():
        return source
    if source.name == layout.METRICS:
        return source.parent
    return None


def _fresh(path: Path, *inputs: Path) -> bool:
    """``path`` exists and is at least as new as every existing input."""
    if not path.is_file():
        return False
    mtime = path.stat().st_mtime
    return all(mtime >= p.stat().st_mtime for p in inputs if p.exists())


def gather(source: str | Path, *, metric: str | None = None, target: float | None = None) -> RunInfo:
    """Load a source with its analysis, config, data card and study record (what exists)."""
    from bertcurve.stages.analyze import analyze
    from bertcurve.curves.logs import load_log

    path = layout.resolve_run(source)
    log = load_log(path)
    run_dir = _run_dir_of(path)
    analysis = None
    if run_dir is not None and target is None:
        saved = run_dir / layout.ANALYSIS
        if _fresh(saved, run_dir / layout.METRICS):
            try:
                candidate = read_json(saved, "analysis")
            except UserError:
                candidate = None
            if (isinstance(candidate, dict) and candidate.get("format") == layout.ANALYSIS_FORMAT
                    and (metric is None or candidate.get("metric", {}).get("name") == metric)):
                analysis = candidate
    if analysis is None:
        try:
            analysis = analyze(path, metric=metric, target=target, write=False)
        except UserError as exc:
            log.notes.append(f"no analysis: {exc}")
            # `analyze` refuses this log (exit 2); the report is still written, but never silently without it
            print(f"bertcurve: warning: the report of {path} has no analysis section: {exc}", file=sys.stderr)
    config = data_meta = study_rec = None
    data_dir = None
    if run_dir is not None:
        config = load_run_config(run_dir, missing_ok=True)
        candidates = []
        if config is not None and config.data_dir:
            candidates.append(Path(config.data_dir))
        candidates.append(run_dir.parent / layout.STUDY_DATA_DIR)   # a study keeps data/ beside run/
        for cand in candidates:
            if (cand / layout.DATA_META).is_file():
                data_dir = cand
                data_meta = read_json(cand / layout.DATA_META, "data set metadata")
                break
        if (run_dir.parent / layout.STUDY_STATE).is_file():
            try:
                study_rec = read_json(run_dir.parent / layout.STUDY_STATE, "study record")
            except UserError:
                study_rec = None
    return RunInfo(path, log, analysis, run_dir, config, data_meta, data_dir, study_rec)


# ------------------------------------------------------------------ sections
def _summary(doc: Doc, info: RunInfo, lang: str) -> None:
    doc.h2(_title("Summary", "摘要", lang), "summary")
    a = info.analysis
    facts: list[str] = []
    ser = info.log.series
    if "eval_mlm_accuracy" in ser:
        s = ser["eval_mlm_accuracy"]
        se = ser.get("eval_mlm_accuracy_se")
        se_txt = f" ± {se.values[-1]:.2%} (standard error)" if se is not None and len(se) else ""
        facts.append(f"**Held-out MLM accuracy** at step {_step(s.steps[-1])}: **{s.values[-1]:.2%}**{se_txt}, "
                     f"from {s.values[0]:.2%} at step {_step(s.steps[0])}.")
    at_mask = ser.get("eval_mlm_accuracy_at_mask")
    if at_mask is not None and len(at_mask):
        facts.append(f"Where the input was `[MASK]` (about 80 % of the scored tokens; the rest show the answer "
                     f"or a random character): **{at_mask.values[-1]:.2%}** — the part that needs context.")
    if "train_mlm_accuracy" in ser:
        s = ser["train_mlm_accuracy"]
        k = max(1, len(s) // 20)
        facts.append(f"Training-batch MLM accuracy over the last 5 % of the log: {sum(s.values[-k:]) / k:.2%} "
                     f"(one batch per point, so noisy; the held-out value is the one to trust).")
    loss = ser.get("eval_loss") or ser.get("train_loss")
    if loss is not None and len(loss):
        facts.append(f"Loss {loss.values[0]:.3f} → {loss.values[-1]:.3f}.")
    if info.config is not None:
        facts.append(f"Model: {info.config.architecture or 'BERT'}, "
                     f"{(info.config.parameters or 0) / 1e6:.2f}M parameters.")
    elapsed = ser.get("elapsed_s")
    if elapsed is not None and len(elapsed):
        facts.append(f"Training wall time: {_hours(float(elapsed.values[-1]))}.")
    max_steps = info.config.train.optim.max_steps if info.config is not None else None
    last = max((s.last_step for s in ser.values() if len(s)), default=0)
    if max_steps and last < max_steps:
        facts.insert(0, f"**This run is unfinished**: step {_step(last)} of {_step(max_steps)} "
                        f"({last / max_steps:.0%}); the figures and statistics describe it so far.")
    doc.bullets(facts)
    if a and a.get("verdict"):
        doc.h3(_title("Verdict in plain words", "结论", lang))
        doc.bullets(a["verdict"])


def _dataset(doc: Doc, info: RunInfo, lang: str) -> None:
    doc.h2(_title("Dataset card", "数据集", lang), "dataset")
    meta = info.data_meta
    if meta is None:
        doc.p("No bertcurve data directory is recorded for this log (it was not written by `bertcurve train`, "
              "or its data directory has moved), so there is no dataset card.")
        return
    splits = meta.get("splits", {})
    rows: list[tuple[str, Any]] = [("Data directory", f"`{info.data_dir}`")]
    for name in ("train", "val"):
        sp = splits.get(name) or {}
        if sp:
            parts = [f"{sp.get('sentences', 0):,} sentences"]
            if sp.get("documents") is not None:
                parts.append(f"{sp['documents']:,} documents")
            if sp.get("tokens") is not None:
                parts.append(f"{sp['tokens']:,} tokens")
            rows.append((f"{name} split", ", ".join(parts)))
    rows.append(("Vocabulary", f"{meta.get('vocab_size', 0):,} tokens (characters + 5 specials)"
                 if meta.get("vocab_size") else None))
    sources = meta.get("sources") or meta.get("inputs")
    if isinstance(sources, list) and sources:
        names = [s.get("name") or s.get("path") or str(s) if isinstance(s, dict) else str(s) for s in sources]
        rows.append(("Sources", ", ".join(str(n) for n in names[:8]) + (" …" if len(names) > 8 else "")))
    doc.kv(rows)
    card = info.data_dir / layout.DATA_CARD if info.data_dir else None
    if card is not None and card.is_file():
        text = card.read_text(encoding="utf-8")
        doc.h3(_title(f"{layout.DATA_CARD} (as written by `bertcurve prepare`)", f"{layout.DATA_CARD}（数据卡）", lang))
        _embed_markdown(doc, text)


def _embed_markdown(doc: Doc, text: str) -> None:
    """Add a Markdown file (the dataset card) as blocks: headings, tables, lists, paragraphs."""
    lines = text.splitlines()
    i = 0
    para: list[str] = []

    def flush() -> None:
        if para:
            doc.p(" ".join(para))
            para.clear()

    while i < len(lines):
        line = lines[i].rstrip()
        if not line.strip():
            flush()
        elif line.startswith("#"):
            flush()
            title = line.lstrip("#").strip()
            if not line.startswith("# "):  # the card's own title is already our heading
                doc.h3(title)
        elif line.startswith("|"):
            flush()
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-{2,}:?", c) for c in cells if c):
                    rows.append(cells)
                i += 1
            if rows:
                doc.table(rows[0], rows[1:])
            continue
        elif re.match(r"^\s*[-*] ", line):
            flush()
            items = []
            while i < len(lines) and re.match(r"^\s*[-*] ", lines[i]):
                items.append(re.sub(r"^\s*[-*] ", "", lines[i]).strip())
                i += 1
            doc.bullets(items)
            continue
        elif line.startswith("```"):
            flush()
            block = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                block.append(lines[i])
                i += 1
            doc.pre("\n".join(block))
        else:
            para.append(line.strip())
        i += 1
    flush()


def _model(doc: Doc, info: RunInfo, lang: str) -> None:
    doc.h2(_title("Model and training configuration", "模型与训练配置", lang), "model")
    cfg = info.config
    if cfg is None:
        meta = {k: v for k, v in (info.log.meta or {}).items() if isinstance(v, (int, float, str, bool))}
        doc.p(f"This log was read as **{info.log.kind}** from `{info.source}`; it carries no bertcurve run "
              "configuration." + (" What it does say:" if meta else ""))
        if meta:
            doc.kv(list(meta.items())[:20])
        return
    t = cfg.train
    m, d, o, e = t.model, t.data, t.optim, t.eval
    eff_batch = o.micro_batch * o.grad_accum * cfg.world_size
    eval_tokens = cfg.eval_set.masked_tokens or e.eval_tokens
    guess = cfg.eval_set.constant_guess_accuracy
    doc.kv([
        ("Architecture", cfg.architecture),
        ("Parameters", f"{cfg.parameters:,} ({cfg.parameters / 1e6:.2f}M)" if cfg.parameters else None),
        ("Layers × hidden × heads", f"{m.num_layers} × {m.hidden_size} × {m.num_heads}"),
        ("Feed-forward width", m.intermediate_size),
        ("Output layer tied to embeddings", m.tie_word_embeddings),
        ("Initial weights", f"normal, std {m.initializer_range:g}"),
        ("Vocabulary", f"{cfg.vocab_size:,}" if cfg.vocab_size else None),
        ("Sequence length", f"{d.seq_len}" + (f" ({d.short_seq_prob:.0%} of training sequences cut short)"
                                              if d.short_seq_prob else "")),
        ("Masking", f"{d.mask_prob:.0%} of tokens" + (", whole words" if d.whole_word else "")),
        ("Next-sentence prediction", d.nsp),
        ("Optimizer", f"AdamW, lr {o.lr}, weight decay {o.weight_decay}"),
        ("Schedule", f"{o.warmup_steps} warm-up steps, then {o.schedule} to {o.min_lr_ratio:g} × lr"
                     + (f" (cooldown over the last {o.decay_fraction:.0%} of the steps)"
                        if o.schedule == "wsd" else "")),
        ("Steps", f"{o.max_steps:,}"),
        ("Batch", f"{o.micro_batch} × {o.grad_accum} accumulation"
                  + (f" × {cfg.world_size} processes" if cfg.world_size > 1 else "")
                  + f" = {eff_batch} sequences per step"),
        ("Gradient clipping", o.clip),
        ("Held-out evaluation", f"every {e.eval_every} steps on {eval_tokens:,} fixed masked tokens"),
        ("Constant-guess accuracy", _pct(guess) if guess is not None else None),
        ("Seed", t.seed),
        ("Preset", cfg.preset),
    ])


def _throughput(doc: Doc, info: RunInfo, lang: str) -> None:
    import numpy as np

    doc.h2(_title("Throughput and hardware", "吞吐量与硬件", lang), "throughput")
    ser = info.log.series
    rows: list[tuple[str, Any]] = []
    tps = ser.get("tokens_per_s")
    if tps is not None and len(tps):
        later = tps.values[len(tps) // 2:]
        rows.append(("Tokens per second (median of the later half)", f"{float(np.median(later)):,.0f}"))
    a = info.analysis or {}
    speed = a.get("throughput")
    if speed and speed.get("steps_per_second"):
        rows.append(("Optimizer steps per second", f"{speed['steps_per_second']:.3g}"))
    el = ser.get("elapsed_s")
    if el is not None and len(el):
        rows.append(("Training wall time", _hours(float(el.values[-1]))))
    tok = ser.get("tokens_seen")
    if tok is not None and len(tok):
        rows.append(("Tokens seen", f"{tok.values[-1]:,.0f}"))
    if info.config is not None:
        sp = info.config.speed
        rows.append(("Device setting", f"{sp.device} ({sp.dtype}"
                     + (", torch.compile" if sp.compile else "") + ")"))
    hw = (info.study or {}).get("hardware")
    if hw:
        for key, label in (("device_name", "Device"), ("gpu", "GPU"), ("cpu", "CPU"), ("cpu_count", "CPU cores"),
                           ("torch", "torch"), ("python", "Python"), ("platform", "Platform")):
            if hw.get(key):
                rows.append((label, hw[key]))
    if not rows:
        doc.p("The log records no timing (no `elapsed_s` or `tokens_per_s`), so throughput is unknown.")
        return
    doc.kv(rows)
    st = info.study
    if st and st.get("history"):
        # Time actually spent per stage over every call of `bertcurve study` (skips cost ~0).
        spent: dict[str, float] = {}
        for h in st["history"]:
            if h.get("status") in ("done", "interrupted"):
                spent[h["stage"]] = spent.get(h["stage"], 0.0) + float(h.get("seconds") or 0.0)
        resumed = sum(1 for h in st["history"] if h.get("stage") == "train" and h.get("status") == "interrupted")
        doc.h3(_title("Time per study stage", "各阶段耗时", lang))
        doc.table(["Stage", "Time spent"], [[name, _hours(sec)] for name, sec in spent.items()]
                  + [["total", _hours(sum(spent.values()))]])
        if resumed:
            doc.p(f"Training was interrupted {resumed} time(s) and resumed from its newest checkpoint.")


def _figure(doc: Doc, figures: dict[str, Path], key: str, caption: str, base: Path) -> None:
    path = figures.get(key)
    if path is not None and path.is_file():
        try:
            rel = path.relative_to(base).as_posix()
        except ValueError:
            rel = path.as_posix()
        doc.figure(path, caption, rel)


def _curves(doc: Doc, info: RunInfo, figures: dict[str, Path], base: Path, lang: str) -> None:
    doc.h2(_title("Learning curves", "学习曲线", lang), "curves")
    _figure(doc, figures, "training_curves",
            "Training curves: MLM accuracy (held-out and training batch), NSP accuracy or held-out loss, "
            "loss, learning rate.", base)
    nsp = info.log.series.get("train_nsp_accuracy") or info.log.series.get("eval_nsp_accuracy")
    if nsp is not None and len(nsp) >= 10:
        import numpy as np

        late = nsp.values[len(nsp) // 2:]
        if abs(float(np.mean(late)) - 0.5) < 0.03:
            doc.note(f"The next-sentence-prediction accuracy stays at chance level ({np.mean(late):.1%} over the "
                     "second half of training): the NSP head learned nothing, as in the seed study.")
    _figure(doc, figures, "loss_analysis",
            "Loss analysis: the loss and its moving average; on a log-step axis with the fitted curve; "
            "how fast it still falls, beside the learning rate.", base)


def _analysis(doc: Doc, info: RunInfo, figures: dict[str, Path], base: Path, lang: str) -> None:
    doc.h2(_title("Statistics of the learning curve", "统计分析", lang), "analysis")
    a = info.analysis
    if not a:
        doc.p("No analysis could be made of this log (see the notes at the end).")
        return
    m = a["metric"]
    p = a["correlation"]["pearson"]
    sp = a["correlation"]["spearman"]
    kt = a["correlation"]["kendall"]
    dep = a["dependence"]
    lt = a["linear_trend"]["per_1k_steps"]
    d = a["descriptive"]
    doc.p(f"Metric **{m['name']}**: {m['n']:,} points from step {_step(m['first_step'])} to "
          f"{_step(m['last_step'])}; mean {_num(d['mean'])}, max {_num(d['max'])}, min {_num(d['min'])}.")
    rows = [
        ["Pearson r (the seed's number)", _num(p["statistic"]), f"naive p = {_num(p['pvalue'])}",
         f"[{_num(p['ci_low'], 3)}, {_num(p['ci_high'], 3)}] assuming independent points"],
        ["R² of the straight line", _num(p["statistic"] ** 2), "", ""],
        ["Spearman ρ", _num(sp["statistic"]), f"p = {_num(sp['pvalue'])}", "monotonic association"],
        ["Kendall τ-b", _num(kt["statistic"]), f"p = {_num(kt['pvalue'])}", ""],
        ["Slope per 1,000 steps", _num(lt["slope"]), f"± {_num(lt['se'])} naive",
         f"± {_num(lt['se_hac'])} Newey–West (autocorrelation-robust)"],
        ["Durbin–Watson of the line's residuals", _num(dep["durbin_watson"], 3), "2 = independent", ""],
        ["Lag-1 residual autocorrelation", _num(dep["lag1_autocorrelation"], 3),
         f"Ljung–Box p = {_num(dep['ljung_box_pvalue'])}", ""],
        ["Effective sample size", f"{dep['effective_sample_size']:.0f} of {dep['n']:,}", "", ""],
        ["Pearson r interval at the effective n", "", f"p = {_num(dep.get('adjusted_pvalue'))}",
         f"[{_num(dep['adjusted_fisher_ci'][0], 3)}, {_num(dep['adjusted_fisher_ci'][1], 3)}]"],
    ]
    boot = dep.get("block_bootstrap")
    if boot:
        rows.append(["Moving-block bootstrap interval of r", "", f"block {boot['block_length']}, "
                     f"{boot['n_resamples']} resamples", f"[{_num(boot['ci_low'], 3)}, {_num(boot['ci_high'], 3)}]"])
    doc.table(["Statistic", "Value", "Test", "Interval / meaning"], rows)
    if dep.get("explanation"):
        doc.note(dep["explanation"])
    _figure(doc, figures, "correlation_analysis",
            "Correlation analysis: the seed's straight line against the best learning curve; their residuals; "
            "and the residual autocorrelation that makes the naive p-value far too confident.", base)
    doc.h3(_title("Learning-curve fits", "学习曲线拟合", lang))
    ranking = {r["model"]: r for r in a.get("backtests", {}).get("ranking", [])}
    chosen = (a.get("chosen_model") or {}).get("model")
    fit_rows = []
    for f in a.get("fits", []):
        bt = ranking.get(f["model"], {}).get("mean_rmse")
        name = f["model"] + (" (chosen)" if f["model"] == chosen else "")
        if f["model"].endswith(FROM_KNEE) and f.get("converged") and f.get("first_step") is not None:
            name += f", {f['n']} points from step {f['first_step']:,.0f}"   # its R² and AIC are of those
        if f.get("converged"):
            params = ", ".join(
                f"{k} = {_num(v['value'])}" + (f" ± {_num(v['se'], 2)}" if v.get("se") is not None else "")
                for k, v in (f.get("params") or {}).items())
            fit_rows.append([name, f["formula"], params, _num(f["r_squared"]), _num(f["aic"], 6), _num(bt)])
        else:
            fit_rows.append([name, f["formula"], f"no fit: {f.get('message', '')}", "—", "—", "—"])
    doc.table(["Model", "Formula (t = steps / 1000)", "Parameters (± SE)", "R²", "AIC", "Backtest RMSE"],
              fit_rows)
    if a.get("chosen_model", {}).get("reason"):
        doc.p(f"Forecasts are led by **{chosen}**: {a['chosen_model']['reason']}. In-sample R² is not used to "
              "choose: it rewards flexible curves that extrapolate badly. The forecast intervals are calibrated on "
              "the same backtests' errors (see docs/analysis.md).")
    phases = [q for q in a.get("phases", []) if q.get("slope_per_1k_steps") is not None]
    if phases:
        doc.h3(_title("Phases of training", "训练阶段", lang))
        doc.table(["Quarter", "Steps", "Mean", "Change per 1,000 steps"],
                  [[q["quarter"], f"{_step(q['start_step'])}–{_step(q['end_step'])}", _num(q.get("mean")),
                    _num(q["slope_per_1k_steps"])] for q in phases])
    lr = a.get("lr_schedule")
    if lr and lr.get("note"):
        doc.note(lr["note"])


def _forecast(doc: Doc, info: RunInfo, figures: dict[str, Path], base: Path, lang: str) -> None:
    doc.h2(_title("Forecast", "预测", lang), "forecast")
    _figure(doc, figures, "forecast",
            "Forecast: the backtest-weighted combination of learning curves extrapolated with its calibrated "
            "interval, the target and when it is reached; beside it, a backtest of the leading family.", base)
    a = info.analysis
    if not a or not a.get("forecasts"):
        doc.p("No forecast: no learning-curve model converged on this log.")
        return
    level = a["metric"].get("level", policy.DEFAULT_LEVEL)
    rows = []
    for f in a["forecasts"]:
        if f.get("value") is None:
            continue
        rows.append([_step(f["step"]), _num(f["value"]),
                     f"{_num(f['pi'][0])} – {_num(f['pi'][1])}", _num(f.get("by_model", {}).get("linear")),
                     "yes" if f.get("beyond_lr_schedule") else "no"])
    doc.table(["Step", f"Forecast (led by {a['chosen_model']['model']})", f"{level:.0%} forecast interval",
               "Straight line would say", "Beyond the LR schedule"], rows)
    t = a.get("target") or _default_target(info)
    if t:
        if t.get("step") is not None:
            rng = t.get("step_range") or [None, None]
            hours = t.get("hours_from_last_step")
            doc.p(f"Target **{t['value']}**: reached by the fitted curve at step **{_step(t['step'])}** "
                  f"(plausible range {_step(rng[0])}–{_step(rng[1])})"
                  + (f", about {more_time(hours)} at the measured speed" if hours is not None else "") + ".")
        else:
            doc.p(f"Target **{t['value']}**: not reached — {t.get('note', 'the fitted curve levels off below it')}.")
    if a.get("what_if"):
        _what_if(doc, a, level, lang)


def _what_if(doc: Doc, a: dict, level: float, lang: str) -> None:
    """The schedule-aware answer to "what would N steps buy?" beside the step extrapolation."""
    w = a["what_if"]
    doc.h3(_title(f"What would {w['max_steps']:,} steps buy?", f"训练 {w['max_steps']:,} 步能得到什么？", lang))
    doc.p(f"A new run of {w['max_steps']:,} steps with a {w['schedule']} decay, predicted by the "
          f"learning-rate annealing law fitted to this run's schedule and curve ({w['assumptions']}; "
          "see docs/what-if.md).")
    rows = [[name, _num(p["value"]), f"{_num(p['pi'][0])} – {_num(p['pi'][1])}"]
            for name, p in w["predictions"].items()]
    c = w.get("compared") or {}
    if (c.get("step_extrapolation") or {}).get("value") is not None:
        pi = c["step_extrapolation"].get("pi") or [None, None]
        rows.append([f"{c['metric']} (step extrapolation, ignores the schedule)",
                     _num(c["step_extrapolation"]["value"]), f"{_num(pi[0])} – {_num(pi[1])}"])
    if c.get("seed_linear") is not None:
        rows.append([f"{c['metric']} (the seed's straight line)", _num(c["seed_linear"]), ""])
    doc.table(["Metric", f"At step {w['max_steps']:,}", f"{level:.0%} interval"], rows)
    doc.bullets([n for n in w.get("notes", [])] + ([f"Accuracy: {w['accuracy_method']}."]
                                                   if w.get("accuracy_method") else []))


def _default_target(info: RunInfo) -> dict | None:
    """The forecast figure's default target, answered with the analysis's forecast (so text and
    figure agree when no --target was given)."""
    import numpy as np

    from bertcurve.curves.forecast import CurveForecast

    a = info.analysis or {}
    name = (a.get("metric") or {}).get("name")
    if not a.get("forecaster") or not (a.get("chosen_model") or {}).get("model") or name not in info.log.series:
        return None
    fc = CurveForecast.from_dict(a["forecaster"], a.get("fits", []))
    s = info.log.series[name]
    level = a["metric"].get("level", policy.DEFAULT_LEVEL)
    target = policy.default_target(name, float(np.mean(s.values[-max(1, round(len(s) * 0.05)):])),
                                   int(a["metric"]["direction"]))
    at = fc.steps_to_reach(target, horizon_factor=policy.HORIZON_FACTOR)
    early, late = fc.steps_to_reach_band(target, level, horizon_factor=policy.HORIZON_FACTOR)
    out: dict[str, Any] = {"value": round(target, 6), "step": at, "step_range": [early, late]}
    speed = a.get("throughput") or {}
    if at is not None and speed.get("steps_per_second"):
        out["hours_from_last_step"] = max(0.0, at - float(s.steps[-1])) / speed["steps_per_second"] / 3600
    if at is None:
        asym, at_bound = policy.forecast_asymptote(fc)
        word = policy.asymptote_word(fc.direction)[0]
        out["note"] = (f"within {policy.HORIZON_FACTOR:g}× the logged steps the forecast levels off"
                       + (f" at a {word} of {asym:.4g}" if asym is not None and not at_bound else ""))
    return out


def _comparison(doc: Doc, infos: Sequence[RunInfo], figures: dict[str, Path], base: Path, lang: str,
                names: Sequence[str], metric: str | None) -> None:
    """The comparison figure and `bertcurve compare`'s table: values, differences against the
    first run, the same figures over the window every run covers, and what is not like for like."""
    from bertcurve.stages.compare import ROWS, SEED_FIGURE, compare

    doc.h2(_title("Comparison of runs", "多次训练对比", lang), "comparison")
    _figure(doc, figures, "comparison", "The runs side by side: metric and loss over steps, and where each ended.",
            base)
    from bertcurve.viz.figures import common_metric

    try:
        # The metric every run has (as in the comparison figure), so the table is like for like.
        res = compare([i.source for i in infos], metric=metric or common_metric([i.log for i in infos]),
                      write=False, lang=lang,
                      seed_figure=(figures["comparison"].parent / SEED_FIGURE) if "comparison" in figures else None)
    except UserError as exc:
        doc.p(f"No comparison table: {exc}")
        return
    rows = res["rows"]
    header = ["", *names[: len(rows)]] + [f"Δ {n}" for n in names[1: len(rows)]]
    table = [["metric", *[r["metric"] for r in rows]] + [""] * (len(rows) - 1),
             ["steps", *[f"{_step(r['first_step'])}–{_step(r['last_step'])}" for r in rows]] + [""] * (len(rows) - 1)]
    for key, label_, _fmt in ROWS:
        if all(r.get(key) is None for r in rows):
            continue
        if key == "forecast":
            label_ = f"forecast @ step {_step(res['common_step'])}"
        elif key.startswith("window_"):
            label_ = f"{label_.split(' over')[0]} over steps ≤ {_step(res['common_window_end'])}"
        line = [re.sub(r"^\S*[^\x00-\x7f]\S* ", "", label_), *[_num(r.get(key)) for r in rows]]
        for d in res["differences"]:
            cell = d.get(key)
            line.append("—" if cell is None else _num(cell["difference"]) + (
                f" ({cell['percent']:+.1f}%)" if cell.get("percent") is not None else ""))
        table.append(line)
    doc.table(header, table)
    if res.get("seed_groups"):
        if res.get("seed_figure"):
            figures["seed_bands"] = Path(res["seed_figure"])
        _across_seeds(doc, res["seed_groups"], figures, base, lang)
    if res.get("notes"):
        doc.h3(_title("Not like for like", "不可直接比较之处", lang))
        doc.bullets(res["notes"])


def _across_seeds(doc: Doc, sg: dict, figures: dict[str, Path], base: Path, lang: str) -> None:
    """Runs that differ only in seed: the band figure, the spread of the final value per
    configuration, and each difference stated against that spread."""
    doc.h3(_title("Across seeds", "多种子汇总", lang))
    level = f"{sg['level']:.0%}"
    metric = sg["groups"][0]["metric"]
    doc.p(f"Runs whose settings differ only in the seed are one configuration (named by the settings that "
          f"differ). Shaded: the {level} t interval of the mean curve across seeds; the table gives the "
          f"spread of {metric} at each run's end.")
    _figure(doc, figures, "seed_bands", "Mean curve and across-seed band of each configuration; every seed's "
            "final value.", base)
    rows = []
    for g in sg["groups"]:
        f = g["final"]
        rows.append([g["name"], f["n"], ", ".join("?" if s is None else str(s) for s in g["seeds"]),
                     _num(f["mean"]), _num(f["sd"]), _num(f["se"]),
                     "—" if f["ci_low"] is None else f"{_num(f['ci_low'])}–{_num(f['ci_high'])}"])
    doc.table(["configuration", "n", "seeds", "mean", "SD", "SE", f"{level} CI of the mean"], rows)
    doc.bullets([d["text"] for d in sg["differences"]])


def _notes(doc: Doc, infos: Sequence[RunInfo], names: Sequence[str], lang: str, commands: Sequence[str]) -> None:
    doc.h2(_title("Notes and reproduction", "说明与复现", lang), "notes")
    items = []
    for info, name in zip(infos, names):
        items += [f"{name}: {n}" for n in info.log.notes]
    doc.bullets(items or ["The logs were read without any correction."])
    doc.p("Regenerate this report with:")
    doc.pre("\n".join(commands))
    doc.p(f"Generated by bertcurve {__version__} on {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC "
          f"(Python {platform.python_version()}).")


# ------------------------------------------------------------------ the verb
@dataclass
class ReportResult:
    markdown: Path
    html: Path
    figures: list[Path]
    sections: list[str]


def _ensure_figures(infos: Sequence[RunInfo], fig_dir: Path, lang: str, metric: str | None,
                    target: float | None) -> dict[str, Path]:
    """The figures of the main run (and the comparison), drawn unless up to date."""
    from bertcurve.stages.plot import SINGLE_FIGURES, plot

    main = infos[0]
    inputs = [main.source / layout.METRICS if main.run_dir is not None and main.source.is_dir() else main.source]
    if main.run_dir is not None:
        inputs.append(main.run_dir / layout.ANALYSIS)
    wanted = {name: fig_dir / f"{name}.png" for name in SINGLE_FIGURES}
    existing = [p for p in wanted.values() if p.is_file()]
    # A figure the log cannot support (e.g. a forecast from 5 points) stays missing; only stale
    # figures, or none at all, mean drawing again.
    if target is not None or not existing or not all(_fresh(p, *inputs) for p in existing):
        plot([main.source], out=fig_dir, lang=lang, metric=metric, target=target, figures=SINGLE_FIGURES)
    figures = {k: v for k, v in wanted.items() if v.is_file()}
    if len(infos) > 1:
        plot([i.source for i in infos], out=fig_dir / "comparison", lang=lang, metric=metric, figures=["comparison"])
        figures["comparison"] = fig_dir / "comparison" / "comparison.png"
    return figures


def _is_report(path: Path) -> bool:
    """An earlier report.md/report.html: it names the command that regenerates it."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return "bertcurve report " in handle.read(4 * 2**20)
    except OSError:
        return False


def report(
    sources: Sequence[str | Path],
    *,
    out: str | Path | None = None,
    lang: str = "both",
    metric: str | None = None,
    target: float | None = None,
) -> ReportResult:
    """Write ``report.md`` and ``report.html`` for ``sources`` (the first is the main run).

    ``out`` defaults to the main run directory (``./report`` for a log that is not a
    run). ``lang`` sets the figure labels and section titles (zh, en, both); ``metric``
    and ``target`` are passed to the analysis and forecast. Returns the paths written.
    """
    from bertcurve.viz.figures import check_lang, unique_names

    check_lang(lang)
    if not sources:
        raise UserError("give the run directory to report on (and optionally more runs to compare with)")
    if out is None and len(sources) == 1 and layout.seed_runs_of(Path(sources[0]).expanduser()):
        out = Path(sources[0]).expanduser()   # a study with --seeds: its report lives in the study folder
    sources = layout.resolve_runs(sources)
    infos = [gather(s, metric=metric, target=target) for s in sources]
    main = infos[0]
    if out is not None:
        out_dir = Path(out).expanduser()
    elif main.run_dir is not None:
        out_dir = main.run_dir
    else:
        out_dir = Path("report")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; give a folder for report.md, report.html and figures/")
    for name in (layout.REPORT_MD, layout.REPORT_HTML):  # replace only an earlier report, never another file
        guard_output_file(out_dir / name, what="bertcurve report", replaceable=_is_report,
                          inputs=[i.run_dir or i.source for i in infos])
    out_dir.mkdir(parents=True, exist_ok=True)
    fig_dir = (main.run_dir / layout.FIGURES_DIR) if (main.run_dir is not None and out is None) \
        else out_dir / layout.FIGURES_DIR
    figures = _ensure_figures(infos, fig_dir, lang, metric, target)
    names = unique_names([i.log for i in infos])

    title = _title(f"Learning-curve report: {names[0]}", f"学习曲线报告：{names[0]}", lang)
    doc = Doc(title)
    sections = ["summary", "dataset", "model", "throughput", "curves", "analysis", "forecast"]
    _summary(doc, main, lang)
    _dataset(doc, main, lang)
    _model(doc, main, lang)
    _throughput(doc, main, lang)
    _curves(doc, main, figures, out_dir, lang)
    _analysis(doc, main, figures, out_dir, lang)
    _forecast(doc, main, figures, out_dir, lang)
    if len(infos) > 1:
        _comparison(doc, infos, figures, out_dir, lang, names, metric)
        sections.append("comparison")
    cmd = "bertcurve report " + " ".join(shlex.quote(str(i.source)) for i in infos) + (f" --lang {lang}" if lang != "both" else "")
    cmd += f" --metric {metric}" if metric else ""
    cmd += f" --target {target}" if target is not None else ""
    cmd += f" --out {shlex.quote(str(out))}" if out is not None else ""
    _notes(doc, infos, names, lang, [cmd])
    sections.append("notes")

    md_path = out_dir / layout.REPORT_MD
    html_path = out_dir / layout.REPORT_HTML
    atomic_write_text(md_path, doc.markdown())
    atomic_write_text(html_path, doc.html())
    return ReportResult(md_path, html_path, list(figures.values()), sections)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", metavar="RUN_DIR",
                        help="the run to report on (a run directory, or any log `bertcurve analyze` reads); "
                             "further runs are compared with it")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for report.md, report.html and figures/ (default: the run directory, "
                             "or ./report for a log that is not a run)")
    parser.add_argument("--lang", choices=("zh", "en", "both"), default="both",
                        help="language of figure labels and section titles (default: both)")
    parser.add_argument("--metric", default=None,
                        help="metric to analyse (default: held-out MLM accuracy, else the training-batch one)")
    parser.add_argument("--target", type=float, default=None,
                        help="metric value to forecast the step for, e.g. 0.6")


def run(args: argparse.Namespace) -> int:
    result = report(args.sources, out=args.out, lang=args.lang, metric=args.metric, target=args.target)
    print(result.html)
    print(result.markdown)
    return 0
