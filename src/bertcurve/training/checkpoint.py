"""Checkpoints (atomic, checksummed, pickle-free) and the run directory's writer lock.

A checkpoint is ``checkpoints/step-XXXXXXXX/`` holding

- ``model.safetensors`` + ``config.json``: the weights in Hugging Face
  layout (``save_pretrained``), so a checkpoint also loads with
  ``AutoModelForMaskedLM.from_pretrained``;
- ``training_state.pt``: optimizer state and RNG states, only tensors and
  plain containers, read back with ``torch.load(weights_only=True)``;
- ``checkpoint.json``: step, data position, resolved config, tokenizer
  hash, eval-set fingerprint and the sha256 of every other file.

It is written into a hidden temporary folder and renamed into place, so a
crash never leaves a half-written ``step-*`` folder; on resume each file's
checksum is verified and a damaged checkpoint is skipped (with a one-line
warning) in favour of the previous good one.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from bertcurve import layout
from bertcurve.errors import UserError
from bertcurve.fsutil import fsync_dir, write_json

HF_CONFIG = "config.json"  # written by save_pretrained next to model.safetensors
_TMP_PREFIX = ".tmp-"


class CorruptCheckpoint(Exception):
    """A checkpoint folder failed verification; the message says why, in one line."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def checkpoints_root(run_dir: Path) -> Path:
    return Path(run_dir) / layout.CHECKPOINTS_DIR


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every visible checkpoint folder, newest first (unverified)."""
    root = checkpoints_root(run_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        step = layout.checkpoint_step(child)
        if step is not None and child.is_dir():
            found.append((step, child))
    return sorted(found, reverse=True)


def remove_temporary(run_dir: Path) -> list[Path]:
    """Delete half-written checkpoint folders left by a crash (call while holding the lock).

    Also the hidden staging/old copies of ``final/`` that fsutil.staged_directory
    leaves when the process is killed while writing the final model.
    """
    root = checkpoints_root(run_dir)
    removed = []
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith(_TMP_PREFIX):
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
    final_prefixes = (f".{layout.FINAL_MODEL_DIR}.staging-", f".{layout.FINAL_MODEL_DIR}.old-")
    for child in Path(run_dir).iterdir():
        if child.name.startswith(final_prefixes) and child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
    return removed


def _as_os_error(exc: Exception, path: Path) -> OSError:
    """safetensors (SafetensorError) and torch.save (RuntimeError) report a full disk or a
    read-only file system as their own exception types; turn them into the OSError callers
    handle, keeping the errno when the message carries one ("os error 28")."""
    import re

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    found = re.search(r"os error (\d+)", text)
    return OSError(int(found.group(1)) if found else errno.EIO, text, str(path))


def save_weights(net: torch.nn.Module, folder: Path) -> None:
    """``net.save_pretrained(folder)`` as safetensors; a write failure is raised as OSError."""
    from safetensors import SafetensorError

    try:
        net.save_pretrained(str(folder), safe_serialization=True)
    except SafetensorError as exc:
        raise _as_os_error(exc, Path(folder) / layout.CKPT_WEIGHTS) from None
    # safetensors creates the file 0600 whatever the umask; make it as readable as its neighbours.
    mask = os.umask(0o022)
    os.umask(mask)
    for weights in Path(folder).glob("*.safetensors"):
        os.chmod(weights, 0o666 & ~mask)


def save_checkpoint(
    run_dir: Path,
    step: int,
    net: torch.nn.Module,
    training_state: dict[str, Any],
    meta: dict[str, Any],
    *,
    before_rename: Callable[[Path], None] | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically and return its folder.

    ``training_state`` must hold only tensors and plain Python containers
    (it is read back with ``weights_only=True``). ``meta`` goes into
    ``checkpoint.json`` together with the file checksums.
    """
    root = checkpoints_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / layout.checkpoint_dir_name(step)
    tmp = root / f"{_TMP_PREFIX}{layout.checkpoint_dir_name(step)}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        save_weights(net, tmp)
        for extra in tmp.iterdir():  # keep only what we checksum
            if extra.name not in (layout.CKPT_WEIGHTS, HF_CONFIG):
                extra.unlink()
        try:
            torch.save(training_state, tmp / layout.CKPT_TRAINING_STATE)
        except RuntimeError as exc:  # torch's zip writer reports a failed write this way
            raise _as_os_error(exc, tmp / layout.CKPT_TRAINING_STATE) from None
        files = {}
        for name in (layout.CKPT_WEIGHTS, HF_CONFIG, layout.CKPT_TRAINING_STATE):
            path = tmp / name
            with open(path, "rb+") as handle:
                os.fsync(handle.fileno())
            files[name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        write_json(tmp / layout.CKPT_META, dict(meta, format=layout.CKPT_META_FORMAT,
                                                step=step, files=files))
        fsync_dir(tmp)
        if before_rename is not None:
            before_rename(tmp)
        if final.exists():  # same step written again (e.g. after a resume): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


@dataclass
class LoadedCheckpoint:
    """A verified checkpoint: its metadata, weights and training state."""

    path: Path
    step: int
    meta: dict[str, Any]
    weights: dict[str, torch.Tensor]
    training_state: dict[str, Any]


def verify_checkpoint(folder: Path) -> dict[str, Any]:
    """Check metadata and checksums; return ``checkpoint.json`` or raise :class:`CorruptCheckpoint`."""
    folder = Path(folder)
    meta_path = folder / layout.CKPT_META
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorruptCheckpoint(f"{layout.CKPT_META} is missing") from None
    except (OSError, ValueError) as exc:
        raise CorruptCheckpoint(f"{layout.CKPT_META} is unreadable ({exc.__class__.__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != layout.CKPT_META_FORMAT:
        raise CorruptCheckpoint(f"{layout.CKPT_META} has an unknown format")
    files = meta.get("files")
    if not isinstance(files, dict) or layout.CKPT_WEIGHTS not in files \
            or layout.CKPT_TRAINING_STATE not in files:
        raise CorruptCheckpoint(f"{layout.CKPT_META} lists no checksums")
    for name, info in files.items():
        path = folder / name
        if not path.is_file():
            raise CorruptCheckpoint(f"{name} is missing")
        if path.stat().st_size != info.get("bytes"):
            raise CorruptCheckpoint(f"{name} has {path.stat().st_size} bytes, expected {info.get('bytes')}")
        if sha256_file(path) != info.get("sha256"):
            raise CorruptCheckpoint(f"{name} fails its sha256 checksum")
    return meta


def load_checkpoint(folder: Path) -> LoadedCheckpoint:
    """Verify and load one checkpoint; any damage raises :class:`CorruptCheckpoint`.

    Weights load only through safetensors and the training state only with
    ``torch.load(weights_only=True)``: a crafted pickle is refused unexecuted.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta = verify_checkpoint(folder)
    try:
        weights = load_file(str(Path(folder) / layout.CKPT_WEIGHTS))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CorruptCheckpoint(f"{layout.CKPT_WEIGHTS} is not valid safetensors ({exc})") from None
    try:
        state = torch.load(Path(folder) / layout.CKPT_TRAINING_STATE, map_location="cpu",
                           weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError ... all mean "damaged"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise CorruptCheckpoint(
            f"{layout.CKPT_TRAINING_STATE} was refused by torch.load(weights_only=True): {first[:160]}"
        ) from None
    if not isinstance(state, dict):
        raise CorruptCheckpoint(f"{layout.CKPT_TRAINING_STATE} does not hold a dict")
    return LoadedCheckpoint(Path(folder), int(meta["step"]), meta, weights, state)


def latest_good_checkpoint(
    run_dir: Path, warn: Callable[[str], None] = print
) -> LoadedCheckpoint | None:
    """The newest checkpoint that verifies, warning (one line each) about damaged newer ones."""
    for step, folder in list_checkpoints(run_dir):
        try:
            return load_checkpoint(folder)
        except CorruptCheckpoint as exc:
            warn(f"warning: checkpoint {folder.name} is damaged ({exc}); trying the previous one")
    return None


def prune_checkpoints(run_dir: Path, keep: int, milestones: tuple[int, ...] | list[int]) -> list[Path]:
    """Delete all but the ``keep`` newest checkpoints and the milestone steps."""
    removed = []
    milestone_set = set(milestones)
    recent = 0
    for step, folder in list_checkpoints(run_dir):
        if step in milestone_set:
            continue
        recent += 1
        if recent > keep:
            # Hide it first (one atomic rename), so a crash while deleting never leaves a
            # half-deleted step-* folder that looks like a damaged checkpoint.
            hidden = folder.with_name(f"{_TMP_PREFIX}pruned-{folder.name}")
            try:
                os.replace(folder, hidden)
            except OSError:
                hidden = folder
            shutil.rmtree(hidden, ignore_errors=True)
            removed.append(folder)
    return removed


def tokenizer_hash(data_dir: Path) -> str:
    """sha256 of the data dir's vocabulary (what the token ids mean)."""
    data_dir = Path(data_dir)
    for name in (layout.VOCAB_TXT, layout.TOKENIZER_JSON):
        path = data_dir / name
        if path.is_file():
            return sha256_file(path)
    raise UserError(f"no tokenizer found in {data_dir}; re-run `bertcurve prepare --force`")


# -------------------------------------------------------------------- lock
class RunLock:
    """One writer per run directory: ``train.lock`` with the owner's pid.

    The lock is an ``flock`` on the file, which the kernel drops when its
    process dies (even on SIGKILL), so a lock left by a dead process is
    detected reliably and taken over with a warning; pid reuse cannot fool
    it. The file holds ``{"pid", "host", "started"}`` for people to read.
    """

    def __init__(self, run_dir: Path, warn: Callable[[str], None] = print):
        self.path = Path(run_dir) / layout.LOCK_FILE
        self.warn = warn
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                owner = self._read_owner()
                who = f"process {owner.get('pid')} on {owner.get('host')}" if owner else "another process"
                raise UserError(
                    f"run directory {self.path.parent} is in use by {who} (lock {self.path}); "
                    "wait for it to finish or choose another --out"
                ) from None
            raise
        previous = self._read_owner()
        if previous and previous.get("pid") != os.getpid():
            self.warn(f"warning: taking over the stale lock of process {previous.get('pid')} "
                      f"(no longer running) in {self.path.parent}")
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        self._fd = fd
        return self

    def _read_owner(self) -> dict[str, Any]:
        try:
            obj = json.loads(self.path.read_text(encoding="utf-8") or "{}")
            return obj if isinstance(obj, dict) else {}
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self._fd is None:
            return
        # Emptied rather than deleted: deleting would let a process that opened
        # the old file lock a different inode than a newcomer creating a new one.
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    @staticmethod
    def is_held(run_dir: Path) -> bool:
        """True while a live process trains in ``run_dir``: its flock is taken (a lock file left
        by a killed or crashed process is not). Probes with a shared lock, released at once."""
        path = Path(run_dir) / layout.LOCK_FILE
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            return exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
