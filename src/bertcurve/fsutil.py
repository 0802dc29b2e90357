"""Small file-system helpers shared by every stage: atomic writes and JSON."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from bertcurve import layout
from bertcurve.errors import UserError


def fsync_dir(path: Path) -> None:
    """Flush a directory entry so a rename inside it survives a power cut."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; give the file the permissions an ordinary open() would (umask).
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    """Atomically write pretty, UTF-8 (not \\u-escaped) JSON."""
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def write_result_json(path: Path, result: dict, inputs: Iterable[str | Path] = ()) -> None:
    """Write a result document, creating its folder; records where it went in ``result["path"]``.

    :func:`guard_output_file` first: ``path`` may replace only an earlier result of the same
    ``format``, never one of ``inputs`` or a file a run or data directory reads back.
    """
    fmt = result.get("format")
    given = Path(path)
    path = guard_output_file(given, inputs=inputs, what=f"{fmt} result" if fmt else "result",
                             replaceable=lambda p: bool(fmt) and json_format_is(p, fmt))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {path.parent}: {exc.strerror or exc}") from None
    result["path"] = str(given)
    write_json(path, result)


def read_json(path: Path, what: str = "file") -> Any:
    """Read a JSON file, turning every failure into a one-line UserError."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{what} {path} is not valid JSON ({exc}); regenerate it") from None
    except RecursionError:
        raise UserError(f"{what} {path} is nested too deeply to be a settings file; regenerate it") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise UserError(f"{what} {path} is not usable JSON ({exc}); regenerate it") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


@contextmanager
def staged_directory(final: Path) -> Iterator[Path]:
    """Yield a hidden sibling folder to fill; on success it replaces ``final``.

    On any error the staging folder is removed and an existing ``final`` is
    left exactly as it was, so an output directory is never half-written.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.staging-", dir=final.parent))
    try:
        yield staging
        # mkdtemp makes the folder 0700; give it the permissions an ordinary mkdir would (umask).
        os.chmod(staging, 0o777 & ~_umask())
        fsync_dir(staging)
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(staging, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, final)
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# ------------------------------------------------------------ output guards
# Files a run directory or a data directory owns: bertcurve reads them back, so no
# other verb's --out may ever replace them (they are written only by train/prepare).
_RUN_OWNED = (layout.RUN_CONFIG, layout.METRICS, layout.LOCK_FILE, layout.CHECKPOINTS_DIR, layout.FINAL_MODEL_DIR)
_DATA_OWNED_SUFFIXES = (".u16", ".u32", ".i64", ".u8")
_DATA_OWNED = (layout.DATA_META, layout.DATA_CARD, layout.TOKENIZER_JSON, layout.VOCAB_TXT, layout.VAL_TEXT,
               "tokenizer_config.json", "special_tokens_map.json")


def folder_kind(path: Path) -> str | None:
    """What bertcurve wrote ``path`` as ("run directory", "data directory", ...), or None."""
    path = Path(path)
    if not path.is_dir():
        return None
    # An export holds a (Hugging Face) config.json too: a run is known by its log, lock,
    # checkpoints or a config.json of the run format.
    if any((path / name).exists() for name in (layout.METRICS, layout.LOCK_FILE, layout.CHECKPOINTS_DIR)) \
            or json_format_is(path / layout.RUN_CONFIG, layout.RUN_CONFIG_FORMAT):
        return "run directory"
    if (path / layout.DATA_META).is_file():
        return "data directory"
    if (path / layout.STUDY_STATE).is_file():
        return "study folder"
    if json_format_is(path / layout.EXPORT_INFO, layout.EXPORT_FORMAT):
        return "exported model"
    return None


def _owned_by_folder(path: Path) -> str | None:
    """If ``path`` is a file its folder (a run or data dir) reads back, say whose it is."""
    kind = folder_kind(path.parent)
    name = path.name
    if kind == "run directory" and name in _RUN_OWNED:
        return kind
    if kind == "data directory" and (name in _DATA_OWNED or name.endswith(_DATA_OWNED_SUFFIXES)):
        return kind
    if kind == "study folder" and name in (layout.STUDY_STATE, layout.STUDY_DATA_DIR, layout.STUDY_RUN_DIR):
        return kind
    if kind == "exported model" and name == layout.EXPORT_INFO:
        return kind
    return None


def guard_output_file(
    target: str | Path,
    *,
    inputs: Iterable[str | Path] = (),
    replaceable: Callable[[Path], bool] | None = None,
    what: str = "output",
) -> Path:
    """Check that writing ``target`` destroys nothing the user owns; return it resolved.

    Refused: one of ``inputs`` (after resolving ``.``, ``..`` and symbolic links), a
    file a run/data directory reads back (metrics.jsonl, config.json, meta.json, ...),
    a folder, and an existing non-empty file that ``replaceable`` does not recognise
    as an earlier output of the same kind. Every verb that writes a file calls this.
    """
    raw = Path(target).expanduser()
    resolved = raw.resolve()
    for source in inputs:
        src = Path(source).expanduser().resolve()
        if resolved == src or src.is_dir() and resolved in (src / layout.METRICS, src / layout.RUN_CONFIG):
            raise UserError(f"--out {target} is an input of this command ({src}); writing it would destroy "
                            "that input. Choose another --out")
    owner = _owned_by_folder(resolved)
    if owner:
        raise UserError(f"--out {target} is {resolved.name} of the {owner} {resolved.parent}, which bertcurve "
                        "reads back; it is never overwritten. Choose another --out")
    kind = folder_kind(resolved.parent)
    sources = {Path(s).expanduser().resolve() for s in inputs}
    if kind in ("run directory", "data directory") and not any(
            src == resolved.parent or src.parent == resolved.parent for src in sources):
        # e.g. run A's analysis written as analysis.json of run B: a wrong result where B's belongs
        raise UserError(f"--out {target} is inside the {kind} {resolved.parent}, which is not an input of "
                        "this command; write there only results of that folder. Choose another --out")
    if resolved.is_dir():
        raise UserError(f"--out {target} is a folder; give a file name (e.g. {raw / 'result.json'})")
    if resolved.exists():
        if not resolved.is_file():
            raise UserError(f"--out {target} exists and is not a regular file; choose another --out")
        if resolved.stat().st_size and (replaceable is None or not replaceable(resolved)):
            raise UserError(f"--out {target} exists and is not an earlier {what}; bertcurve replaces only "
                            "its own output. Choose another --out or delete that file first")
    return resolved


def json_format_is(path: Path, *formats: str, keys: Sequence[str] = ()) -> bool:
    """True when ``path`` is a small JSON object whose ``format`` is one of ``formats`` (or has all ``keys``)."""
    try:
        if path.stat().st_size > 256 * 2**20:
            return False
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError, RecursionError):
        return False
    if not isinstance(data, dict):
        return False
    if formats and data.get("format") in formats:
        return True
    return bool(keys) and all(k in data for k in keys)


def guard_output_dir(target: str | Path, *, marker: str, marker_format: str, force: bool,
                     inputs: Iterable[str | Path] = (), what: str = "output") -> Path:
    """Check a folder a verb fills (via :func:`staged_directory`); return it resolved.

    A missing or empty folder is fine; with ``force`` a folder holding ``marker``
    (with ``format`` ``marker_format``: an earlier output of the same verb) is
    replaced. Refused, even with ``force``: any other folder (run, data dir, ``.``
    or one of its parents, a folder holding an input), a file, and -- after
    resolving symbolic links -- anything these rules refuse at the link's target.
    """
    raw = Path(target).expanduser()
    resolved = raw.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise UserError(f"--out {target} is the current folder or one of its parents; choose a new folder")
    for source in inputs:
        src = Path(source).expanduser().resolve()
        if resolved == src or resolved in src.parents or src in resolved.parents:
            raise UserError(f"--out {target} overlaps {src}, an input of this command; choose a folder outside it")
    if resolved.exists() and not resolved.is_dir():
        raise UserError(f"--out {target} exists and is not a folder; choose another --out")
    if resolved.is_dir() and any(resolved.iterdir()):
        kind = folder_kind(resolved)
        if kind not in ("run directory", "data directory", "study folder") and json_format_is(
                resolved / marker, marker_format):
            if not force:
                raise UserError(f"{target} holds an earlier {what}; pass --force to replace it, or choose "
                                "another --out")
            return resolved
        named = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}" if kind else "a folder bertcurve did not write"
        raise UserError(f"--out {target} is {named}; bertcurve replaces only an earlier {what} "
                        f"(a folder with {marker}), even with --force. Choose another --out")
    return resolved


def markdown_cell(text: Any) -> str:
    """User text (names, domain labels) safe inside a Markdown table cell of a file we write.

    ``|`` would end the cell and a newline the row; ``<`` could open raw HTML (``<!--`` hides the
    rest of the document); a backslash is doubled first so ``\\|`` cannot undo the escape.
    """
    out = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")
    return " ".join(out.splitlines()) if "\n" in out or "\r" in out else out
