"""Serve a live web page of one or more runs' learning curves (stdlib http.server).

    bertcurve dashboard runs/demo [runs/other ...] [--port 8765]

Open the printed address in a browser: a status table (step, progress, held-out
accuracy, loss, speed, time left) and a figure of every run, refreshed as
metrics.jsonl grows. Each poll parses only the lines appended to a metrics.jsonl
since the last one (a truncated or replaced log is read again from the start), and
the figure is re-drawn only when a log changed. The server listens on 127.0.0.1 by
default, answers only requests whose Host header names it (127.0.0.1, localhost,
[::1] or the --host given: a DNS-rebinding page gets 421), and serves nothing but
the page, its status JSON and its figure; stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import io
import ipaddress
import json
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlsplit

from bertcurve import layout
from bertcurve.errors import UserError

DEFAULT_PORT = 8765


def _metrics_path(source: Path) -> Path:
    return source / layout.METRICS if source.is_dir() else source


@dataclass
class Dashboard:
    """The state behind the page: which logs, and the last figure drawn (with the logs' version)."""

    sources: list[Path]
    lang: str = "both"
    refresh_s: float = 5.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _figure: tuple[str, bytes] | None = None
    _read_lock: threading.Lock = field(default_factory=threading.Lock)
    _tails: dict = field(default_factory=dict)    # source -> RunMetricsTail
    _other: dict = field(default_factory=dict)    # source -> ((inode, size, mtime), TrainingLog)

    def version(self) -> str:
        """Changes whenever any log (or a run's config) changes: size and mtime of each file."""
        h = hashlib.sha256()
        for src in self.sources:
            for path in (_metrics_path(src), src / layout.RUN_CONFIG if src.is_dir() else None):
                if path is not None and path.exists():
                    st = path.stat()
                    h.update(f"{path}:{st.st_size}:{st.st_mtime_ns};".encode())
                else:
                    h.update(f"{path}:missing;".encode())
        return h.hexdigest()[:16]

    def _load(self, src: Path) -> Any:
        """The log of ``src``: a metrics.jsonl is followed (only appended bytes are parsed); other
        logs are read again only when their size or mtime changed."""
        from bertcurve.curves.logs import RunMetricsTail, load_log

        path = _metrics_path(src)
        if path.suffix == ".jsonl" and path.is_file():
            tail = self._tails.get(src)
            if tail is None:
                tail = self._tails[src] = RunMetricsTail(path, src if src.is_dir() else None)
            return tail.read()
        try:
            st = path.stat()
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = None
        cached = self._other.get(src)
        if cached is not None and stamp is not None and cached[0] == stamp:
            return cached[1]
        log = load_log(src)
        self._other[src] = (stamp, log)
        return log

    def _logs(self) -> list[tuple[Path, Any]]:
        out = []
        with self._read_lock:  # the page's two requests share the tails
            for src in self.sources:
                try:
                    out.append((src, self._load(src)))
                except UserError as exc:  # e.g. a run that has not written its first line yet
                    out.append((src, exc))
        return out

    def status(self) -> dict[str, Any]:
        """What the page's table shows, per run (JSON-able)."""
        from bertcurve.training.checkpoint import RunLock
        from bertcurve.training.config import run_config_in
        from bertcurve.viz.figures import unique_names

        runs = []
        loaded = self._logs()
        good = [log for _s, log in loaded if not isinstance(log, UserError)]
        display = dict(zip(map(id, good), unique_names(good)))
        for src, log in loaded:
            entry: dict[str, Any] = {"name": src.name if src.is_dir() else src.stem, "path": str(src)}
            if isinstance(log, UserError):
                entry["state"] = "waiting"
                entry["message"] = str(log)
                runs.append(entry)
                continue
            entry["name"] = display[id(log)]
            ser = log.series
            step = int(max((s.last_step for s in ser.values() if len(s)), default=0))
            entry["step"] = step
            cfg = run_config_in(log.meta)
            max_steps = cfg.train.optim.max_steps if cfg is not None else None
            entry["max_steps"] = max_steps
            for key in ("eval_mlm_accuracy", "eval_mlm_accuracy_se", "eval_loss", "train_loss",
                        "train_mlm_accuracy", "tokens_per_s", "lr", "elapsed_s"):
                s = ser.get(key)
                entry[key] = float(s.values[-1]) if s is not None and len(s) else None
            eta = None
            el = ser.get("elapsed_s")
            if max_steps and el is not None and len(el) >= 2 and el.values[-1] > el.values[0]:
                rate = (el.steps[-1] - el.steps[0]) / (el.values[-1] - el.values[0])
                eta = max(0.0, (max_steps - step) / rate) if rate > 0 else None
            entry["eta_s"] = eta
            run_dir = src if src.is_dir() else None
            if run_dir is not None and (run_dir / layout.FINAL_MODEL_DIR).is_dir() and (
                    max_steps is None or step >= max_steps):
                entry["state"] = "finished"
            elif run_dir is not None and RunLock.is_held(run_dir):
                entry["state"] = "training"       # a live process holds the run's lock
            else:   # killed, Ctrl-C or crashed: the lock file may remain, but nobody holds it
                entry["state"] = "interrupted" if run_dir is not None else "log"
            runs.append(entry)
        return {"version": self.version(), "time": time.time(), "refresh_s": self.refresh_s, "runs": runs}

    def figure_png(self) -> bytes:
        """The overview figure, drawn again only when a log changed since the last drawing."""
        version = self.version()
        with self._lock:
            if self._figure is not None and self._figure[0] == version:
                return self._figure[1]
            import matplotlib

            from bertcurve.viz import figures as F

            logs = [log for _src, log in self._logs() if not isinstance(log, UserError)]
            with matplotlib.rc_context(F.style()):
                if logs:
                    fig = F.live_overview(logs, lang=self.lang)
                else:
                    fig, axes = F.new_figure(8, 3)
                    F._empty(axes[0, 0], F.label("waiting for the first metrics line", "等待第一条训练记录",
                                                 self.lang))
                buffer = io.BytesIO()
                fig.savefig(buffer, format="png", dpi=100)
            self._figure = (version, buffer.getvalue())
            return self._figure[1]


_PAGE = """<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bertcurve dashboard · 训练看板</title>
<style>
body { margin: 0; font-family: -apple-system, "Segoe UI", "Noto Sans SC", "Noto Sans CJK SC", "PingFang SC",
  "Microsoft YaHei", sans-serif; background: #f4f6f8; color: #1d2430; }
main { max-width: 1320px; margin: 0 auto; padding: 18px 28px; background: #fff; min-height: 100vh; }
h1 { font-size: 1.4em; margin: .2em 0 .6em; }
table { border-collapse: collapse; width: 100%; font-size: .92em; margin-bottom: 1em; }
th, td { border-bottom: 1px solid #dde1e6; padding: .35em .6em; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #eef2f6; }
.bar { background: #e6ebf0; height: 8px; width: 120px; display: inline-block; vertical-align: middle; }
.bar span { background: #0072B2; height: 8px; display: block; }
.state-training { color: #009E73; font-weight: 600; } .state-finished { color: #0072B2; }
.state-interrupted, .state-waiting { color: #D55E00; }
img { width: 100%; border: 1px solid #dde1e6; }
#updated { color: #5b6472; font-size: .85em; }
</style></head><body><main>
<h1>bertcurve 训练看板 · training dashboard</h1>
<table><thead><tr><th>run 运行</th><th>state 状态</th><th>step 步数</th><th>progress 进度</th>
<th>held-out acc. 验证准确率</th><th>loss 损失</th><th>tokens/s</th><th>lr</th><th>time left 剩余</th></tr></thead>
<tbody id="runs"></tbody></table>
<img id="figure" alt="learning curves">
<p id="updated"></p>
</main>
<script>
"use strict";
let version = null;
const REFRESH_MS = __REFRESH_MS__;
function fmt(x, digits) { return (x === null || x === undefined) ? "—" : Number(x).toFixed(digits); }
function pct(x) { return (x === null || x === undefined) ? "—" : (100 * x).toFixed(2) + "%"; }
function hms(s) {
  if (s === null || s === undefined) return "—";
  s = Math.round(s); const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return (h ? h + "h " : "") + m + "m " + (s % 60) + "s";
}
function cell(row, text, cls) { const td = document.createElement("td"); td.textContent = text;
  if (cls) td.className = cls; row.appendChild(td); return td; }
function render(status) {
  const body = document.getElementById("runs");
  body.replaceChildren();
  for (const r of status.runs) {
    const tr = document.createElement("tr");
    cell(tr, r.name).title = r.path;
    cell(tr, r.state, "state-" + r.state).title = r.message || "";
    cell(tr, r.step === undefined ? "—" : r.step.toLocaleString() + (r.max_steps ? " / " + r.max_steps.toLocaleString() : ""));
    const td = cell(tr, "");
    if (r.max_steps) { const bar = document.createElement("span"); bar.className = "bar";
      const fill = document.createElement("span"); fill.style.width = Math.min(100, 100 * r.step / r.max_steps) + "%";
      bar.appendChild(fill); td.appendChild(bar); }
    cell(tr, r.eval_mlm_accuracy === null || r.eval_mlm_accuracy === undefined ? pct(r.train_mlm_accuracy) + " (batch)"
      : pct(r.eval_mlm_accuracy) + (r.eval_mlm_accuracy_se ? " ± " + pct(r.eval_mlm_accuracy_se) : ""));
    cell(tr, fmt(r.eval_loss !== null && r.eval_loss !== undefined ? r.eval_loss : r.train_loss, 4));
    cell(tr, r.tokens_per_s ? Math.round(r.tokens_per_s).toLocaleString() : "—");
    cell(tr, r.lr === null || r.lr === undefined ? "—" : Number(r.lr).toExponential(2));
    cell(tr, r.state === "finished" ? "done 完成" : hms(r.eta_s));
    body.appendChild(tr);
  }
  if (status.version !== version) {
    version = status.version;
    document.getElementById("figure").src = "figure.png?v=" + encodeURIComponent(version);
  }
  document.getElementById("updated").textContent =
    "updated 更新于 " + new Date(status.time * 1000).toLocaleTimeString() + " · every " + (REFRESH_MS / 1000) + " s";
}
async function poll() {
  try { const res = await fetch("status.json", {cache: "no-store"}); if (res.ok) render(await res.json()); }
  catch (e) { document.getElementById("updated").textContent = "server not reachable 服务器无响应 (" + e + ")"; }
  setTimeout(poll, REFRESH_MS);
}
poll();
</script></body></html>
"""


_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def allowed_hosts(host: str) -> frozenset[str]:
    """The Host header names a request may carry: loopback names and the --host given.

    Listening on every interface (0.0.0.0, ::) also allows this machine's names; any IP
    literal is fine there too (DNS rebinding needs a host *name* the attacker controls).
    """
    names = {*_LOOPBACK_NAMES, host.strip("[]").lower()}
    if host in ("0.0.0.0", "::", ""):
        names |= {socket.gethostname().lower(), socket.getfqdn().lower(), "*ip*"}
    return frozenset(names)


def host_allowed(header: str | None, allowed: frozenset[str]) -> bool:
    """Whether a request's Host header (``name``, ``name:port``, ``[v6]:port``) names this server."""
    if not header:
        return False
    value = header.strip().lower()
    if value.startswith("["):
        name = value[1:value.find("]")] if "]" in value else value
    else:
        name = value.rsplit(":", 1)[0] if value.count(":") == 1 else value
    name = name.rstrip(".")
    if name in allowed:
        return True
    if "*ip*" in allowed:
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return False
    return False


def _handler(board: Dashboard, host: str = "127.0.0.1") -> type[BaseHTTPRequestHandler]:
    allowed = allowed_hosts(host)
    page = _PAGE.replace("__REFRESH_MS__", str(int(board.refresh_s * 1000))).encode("utf-8")

    class Handler(BaseHTTPRequestHandler):
        server_version = "bertcurve-dashboard"

        def _send(self, body: bytes, ctype: str, status: HTTPStatus = HTTPStatus.OK) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = urlsplit(self.path).path
            try:
                if not host_allowed(self.headers.get("Host"), allowed):
                    # DNS rebinding: a web page whose name now points here must not read the runs
                    self._send(b"unknown Host header; open the address bertcurve dashboard printed\n",
                               "text/plain; charset=utf-8", HTTPStatus.MISDIRECTED_REQUEST)
                    return
                if path in ("/", "/index.html"):
                    self._send(page, "text/html; charset=utf-8")
                elif path == "/status.json":
                    body = json.dumps(board.status(), ensure_ascii=False).encode("utf-8")
                    self._send(body, "application/json; charset=utf-8")
                elif path == "/figure.png":
                    self._send(board.figure_png(), "image/png")
                else:
                    self._send(b"not found\n", "text/plain; charset=utf-8", HTTPStatus.NOT_FOUND)
            except (BrokenPipeError, ConnectionResetError):
                pass

        do_HEAD = do_GET

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the page polls every few seconds
            pass

    return Handler


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def make_server(sources: Sequence[str | Path], *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                lang: str = "both", refresh_s: float = 5.0) -> ThreadingHTTPServer:
    """A ready HTTP server for the dashboard (``port=0`` picks a free port); call ``serve_forever``."""
    from bertcurve.viz.figures import check_lang

    check_lang(lang)
    if not sources:
        raise UserError("give at least one run directory (or metrics.jsonl) to watch")
    if not 1 <= refresh_s <= 3600:
        raise UserError(f"--refresh {refresh_s} is out of range; use 1..3600 seconds")
    from bertcurve.layout import resolve_runs

    paths = []
    for p in resolve_runs(sources):
        if not p.exists():
            raise UserError(f"{p} does not exist; give a run directory (it may still be empty) or a log file")
        paths.append(p)
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port} is out of range; use 1..65535 (0 picks a free one)")
    board = Dashboard(paths, lang=lang, refresh_s=refresh_s)
    try:
        server_class = _IPv6Server if ":" in host else ThreadingHTTPServer
        server = server_class((host, port), _handler(board, host))
    except socket.gaierror as exc:
        raise UserError(f"--host {host} is not an address or name this machine knows ({exc.strerror or exc}); "
                        "use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)") from None
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:
            raise UserError(f"cannot listen on {host}: it is not an address of this machine; give one of its "
                            "own addresses with --host (127.0.0.1 or 0.0.0.0)") from None
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                        f"choose another --port (0 picks a free one)") from None
    server.daemon_threads = True
    server.board = board  # type: ignore[attr-defined]
    return server


def dashboard(sources: Sequence[str | Path], *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
              lang: str = "both", refresh_s: float = 5.0, open_browser: bool = False) -> None:
    """Serve the live dashboard of ``sources`` until Ctrl-C."""
    server = make_server(sources, host=host, port=port, lang=lang, refresh_s=refresh_s)
    h, p = server.server_address[:2]
    url = f"http://{'localhost' if h in ('127.0.0.1', '::1') else h}:{p}/"
    print(f"bertcurve dashboard: {url}  (Ctrl-C to stop)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print("bertcurve dashboard: listening beyond this machine; anyone who can reach it sees the runs",
              file=sys.stderr)
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", metavar="RUN_DIR",
                        help="run directories (or metrics.jsonl / other logs) to watch; a run that has not "
                             "started yet is shown as waiting")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--refresh", type=float, default=5.0, help="seconds between page updates (default 5)")
    parser.add_argument("--lang", choices=("zh", "en", "both"), default="both",
                        help="language of the figure labels (default: both)")
    parser.add_argument("--open", action="store_true", help="open the page in the default browser")


def run(args: argparse.Namespace) -> int:
    dashboard(args.sources, host=args.host, port=args.port, lang=args.lang, refresh_s=args.refresh,
              open_browser=args.open)
    return 0
