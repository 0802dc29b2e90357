"""The CLI dispatcher: verbs, help, and the one-line error contract."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bertcurve import cli
from bertcurve.errors import UserError, say_now


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bertcurve", *args], capture_output=True, text=True, timeout=120
    )


def test_overview_lists_every_verb(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    for verb in cli.VERBS:
        assert verb in out


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("bertcurve ")


def test_unknown_verb_is_one_line_with_suggestion(capsys):
    assert cli.main(["analyse"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "did you mean 'analyze'" in err


@pytest.mark.parametrize("verb", sorted(cli.VERBS))
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([verb, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"bertcurve {verb}" in out
    assert "--help" in out


def test_user_error_becomes_one_line_without_traceback(monkeypatch, capsys):
    class FakeVerb:
        __doc__ = "fake"

        @staticmethod
        def add_arguments(parser):
            parser.add_argument("x")

        @staticmethod
        def run(args):
            raise UserError(f"bad thing {args.x}; do the other thing")

    monkeypatch.setattr(cli, "_load_verb", lambda verb: (FakeVerb, "fake"))
    assert cli.main(["prepare", "7"]) == 2
    err = capsys.readouterr().err
    assert err == "bertcurve: error: bad thing 7; do the other thing\n"


def test_an_error_said_early_is_not_said_twice(monkeypatch, capsys):
    # A torchrun worker whose peer died says its line before torchrun's SIGTERM can kill it
    # (say_now); the CLI then exits 2 without repeating the line.
    class FakeVerb:
        __doc__ = "fake"

        @staticmethod
        def add_arguments(parser):
            pass

        @staticmethod
        def run(args):
            raise say_now(UserError("another process of this run stopped"))

    monkeypatch.setattr(cli, "_load_verb", lambda verb: (FakeVerb, "fake"))
    assert cli.main(["train"]) == 2
    assert capsys.readouterr().err == "bertcurve: error: another process of this run stopped\n"


def test_disk_full_is_one_line(monkeypatch, capsys):
    import errno

    class FakeVerb:
        @staticmethod
        def add_arguments(parser):
            pass

        @staticmethod
        def run(args):
            raise OSError(errno.ENOSPC, "No space left on device", "/x/metrics.jsonl")

    monkeypatch.setattr(cli, "_load_verb", lambda verb: (FakeVerb, "fake"))
    assert cli.main(["train"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "disk is full" in err and "Traceback" not in err


def test_python_dash_m_entry_point():
    proc = run_cli("--help")
    assert proc.returncode == 0
    assert "prepare" in proc.stdout


def test_public_functions_stay_functions_after_their_modules_load():
    # A stage module that shares its function's name must never replace it on the package.
    import importlib

    import bertcurve

    for verb, (module_name, _) in cli.VERBS.items():
        importlib.import_module(module_name)
    for name in ("prepare", "train", "analyze", "compare", "plot", "report", "study", "export",
                 "fill_mask", "export_history", "load_log"):
        assert callable(getattr(bertcurve, name)), name
        assert not isinstance(getattr(bertcurve, name), type(bertcurve)), name


def test_public_api_names_resolve_lazily():
    import bertcurve

    assert callable(bertcurve.UserError)
    with pytest.raises(AttributeError):
        bertcurve.no_such_function  # noqa: B018
