"""The dashboard refuses foreign Host headers (DNS rebinding) and parses only appended log lines."""

from __future__ import annotations

import http.client
import json
import threading

import pytest

from bertcurve.curves import logs as L
from bertcurve.errors import UserError
from bertcurve.stages.dashboard import allowed_hosts, host_allowed, make_server


def _line(step: int, acc: float) -> str:
    return json.dumps({"format": "bertcurve.metrics/1", "step": step, "split": "eval", "mlm_accuracy": acc,
                       "loss": 5.0}) + "\n"


@pytest.fixture()
def served(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(_line(10, 0.1) + _line(20, 0.2))
    server = make_server([run], port=0, refresh_s=2)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield server, run
    server.shutdown()
    server.server_close()


def _get(server, path: str, host: str | None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    conn.putrequest("GET", path, skip_host=True)
    if host is not None:
        conn.putheader("Host", host)
    conn.endheaders()
    res = conn.getresponse()
    body = res.read()
    conn.close()
    return res.status, body


@pytest.mark.parametrize("host", ["evil.example.com", "evil.example.com:8765", "127.0.0.1.evil.example", None,
                                  "localhost.attacker.net", "[::2]:80"])
def test_foreign_host_headers_get_nothing(served, host):
    server, run = served
    for path in ("/", "/status.json", "/figure.png"):
        status, body = _get(server, path, host)
        assert status == 421, (host, path)
        assert str(run).encode() not in body and b"mlm" not in body


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST:{port}", "127.0.0.1:{port}", "[::1]:{port}",
                                  "localhost."])
def test_own_names_are_served(served, host):
    server, run = served
    status, body = _get(server, "/status.json", host.format(port=server.server_address[1]))
    assert status == 200 and json.loads(body)["runs"][0]["step"] == 20


def test_allowed_hosts_follow_the_host_option():
    assert host_allowed("192.168.1.5:80", allowed_hosts("192.168.1.5"))
    assert not host_allowed("evil.example.com", allowed_hosts("192.168.1.5"))
    every = allowed_hosts("0.0.0.0")  # every interface: IP literals are fine, foreign names are not
    assert host_allowed("10.1.2.3:8765", every) and host_allowed("[fe80::1]:8765", every)
    assert not host_allowed("evil.example.com:8765", every)


def test_port_and_host_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="--port 80000 is out of range"):
        make_server([tmp_path], port=80000)
    with pytest.raises(UserError, match="not an address of this machine|not an address or name"):
        make_server([tmp_path], host="8.8.8.8", port=0)


def test_tail_parses_only_appended_lines(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(_line(s, s / 1000) for s in range(10, 110, 10)))
    tail = L.RunMetricsTail(path, None)
    assert tail.read().metric("eval_mlm_accuracy").steps.tolist()[-1] == 100
    parsed: list[int] = []
    real = L.RunMetricsParser._row
    monkeypatch.setattr(L.RunMetricsParser, "_row", lambda self, row, n: (parsed.append(row["step"]),
                                                                          real(self, row, n))[1])
    assert tail.read() is tail.read() and parsed == []          # unchanged: nothing parsed at all
    with open(path, "a") as handle:
        handle.write(_line(110, 0.11) + '{"format": "bertcurve.metrics/1", "step": 12')  # torn last line
    assert tail.read().metric("eval_mlm_accuracy").steps.tolist()[-1] == 110
    assert parsed == [110]                                       # only the new complete line
    with open(path, "a") as handle:
        handle.write('0, "split": "eval", "mlm_accuracy": 0.12}\n')
    assert tail.read().metric("eval_mlm_accuracy").steps.tolist()[-1] == 120 and parsed == [110, 120]


def test_tail_rereads_a_truncated_or_replaced_log(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(_line(s, 0.5) for s in range(10, 60, 10)))
    tail = L.RunMetricsTail(path, None)
    assert len(tail.read().metric("eval_mlm_accuracy")) == 5
    path.write_text(_line(1, 0.1))                               # truncated: a new run in the same place
    assert tail.read().metric("eval_mlm_accuracy").steps.tolist() == [1]
    new = tmp_path / "rotated"
    new.write_text(_line(7, 0.7) + _line(8, 0.8) + _line(9, 0.9))
    new.replace(path)                                            # rotated: another file under the same name
    assert tail.read().metric("eval_mlm_accuracy").steps.tolist() == [7, 8, 9]


def test_tail_of_a_zero_filled_log_is_one_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(_line(10, 0.1))
    tail = L.RunMetricsTail(path, None)
    tail.read()
    with open(path, "ab") as handle:
        handle.write(b"\0" * 4096 + b"\n")                       # a crash left a zero-filled tail
    with pytest.raises(UserError, match="NUL bytes"):
        tail.read()


def test_tail_notices_a_log_rewritten_in_place_that_grew_past_the_offset(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(_line(10, 0.1) + _line(20, 0.2))
    tail = L.RunMetricsTail(path, None)
    assert tail.read().metric("eval_mlm_accuracy").steps.tolist() == [10, 20]
    with open(path, "w") as handle:  # same inode, new run: longer than before by the next poll
        handle.write("".join(_line(s, 0.3) for s in range(1, 6)))
    assert tail.read().metric("eval_mlm_accuracy").steps.tolist() == [1, 2, 3, 4, 5]
