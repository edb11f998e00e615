"""One CLI shape: every command-line tool of seas/ and downstream/ is ``python -m <package>.<module>`` with argparse
(``--help`` exits 0), ``-v/--verbose``, ``--config`` exactly where the module reads the run config (declares
CONFIG_KEYS), and ``main`` wrapped by seas.run.runtime.cli. Run in-process through ``main([..., "--help"])``.
(workflow/scripts/gpu_claim.py is the one script: it wraps other commands; tests/workflow/test_gpu_claim.py.)
"""
from __future__ import annotations

import importlib

import pytest

from helpers import REPO

#: module -> the argv prefixes whose --help is checked (subcommands separately)
CLIS = {
    "seas.run.config_doc": [[]],
    "seas.data.convert": [["visa"], ["mvtec3d"]],
    "seas.data.split": [[]],
    "seas.data.import_pairs": [[]],
    "seas.data.demo_data": [[]],
    "seas.models.tiny_sd": [[]],
    "seas.models.tiny_prior": [[]],
    "seas.models.train_prior": [[]],
    "seas.method.train_generator": [[]],
    "seas.method.train_rmp": [[]],
    "seas.method.generate": [[]],
    "downstream.gen_metrics": [[]],
    "seas.run.layout": [[]],
    "downstream.baselines": [[]],
    "downstream.leakage": [[]],
    "downstream.train_seg": [[]],
    "downstream.evaluate": [[]],
    "downstream.train_detector": [[]],
    "downstream.report.tables": [[]],
    "downstream.report.study": [[]],
    "downstream.report.md_table": [[]],
    "downstream.report.sample_grid": [[]],
    "downstream.report.html_table": [[]],
    "downstream.report.plots": [[]],
    "downstream.report.front_page": [[]],
    "downstream.report.compare_grid": [[]],
}


def test_every_cli_is_listed():
    """A module with an argument parser is a CLI: listed here, so it gets the checks below."""
    found = {".".join(path.relative_to(REPO).with_suffix("").parts) for pkg in ("seas", "downstream")
             for path in (REPO / pkg).rglob("*.py") if "ArgumentParser(" in path.read_text(encoding="utf-8")}
    assert found == set(CLIS)


@pytest.mark.parametrize("module", sorted(CLIS))
def test_cli_shape(module, capsys):
    mod = importlib.import_module(module)
    source = (REPO / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8")
    assert 'if __name__ == "__main__":\n    raise SystemExit(main())' in source
    assert getattr(mod.main, "__wrapped__", None) is not None, "main is not wrapped by seas.run.runtime.cli"
    reads_config = hasattr(mod, "CONFIG_KEYS")
    for prefix in CLIS[module]:
        with pytest.raises(SystemExit) as exc:
            mod.main([*prefix, "--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        assert f"python -m {module}" in text
        assert "-v, --verbose" in text
        assert ("--config" in text) == reads_config, f"{module} {' '.join(prefix)}: --config iff it reads the config"


# ----------------------------------------------------------------------------- numeric options (issue 25, item 3)
class _Parsed(Exception):
    def __init__(self, parser):
        self.parser = parser


def _parsers(module, monkeypatch) -> list:
    """The argument parsers of a CLI (its subcommands' too), caught where ``main`` parses its argv."""
    import argparse

    def catch(self, *a, **k):
        raise _Parsed(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    with pytest.raises(_Parsed) as exc:
        importlib.import_module(module).main([])
    monkeypatch.undo()
    found, todo = [], [exc.value.parser]
    while todo:
        p = todo.pop()
        found.append(p)
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                todo.extend(a.choices.values())
    return found


@pytest.mark.parametrize("module", sorted(CLIS))
def test_numeric_options_are_checked(module, monkeypatch):
    """No option of a CLI is a bare int or float: every count, size, step number, seed or threshold has a checked
    type of seas.run.cli_types (and is then refused below its floor)."""
    from seas.run import cli_types

    for parser in _parsers(module, monkeypatch):
        for a in parser._actions:
            assert a.type not in (int, float), f"{module} {'/'.join(a.option_strings)}: a bare {a.type.__name__}"
            if a.type is not None and getattr(a.type, "__module__", "") == cli_types.__name__:
                with pytest.raises(__import__("argparse").ArgumentTypeError):
                    a.type("-1")  # every numeric option of the project refuses a negative value


def test_cli_types_known_answers():
    import argparse

    from seas.run.cli_types import int_at_least, nonneg_int, positive_float, positive_int, unit_float

    assert positive_int("3") == 3 and nonneg_int("0") == 0 and int_at_least(32)("32") == 32
    assert unit_float("0") == 0.0 and unit_float("1") == 1.0 and positive_float("1e-4") == 1e-4
    for parse, bad in [(positive_int, "0"), (positive_int, "-3"), (positive_int, "2.5"), (nonneg_int, "-1"),
                       (int_at_least(32), "31"), (unit_float, "1.01"), (unit_float, "-0.1"), (unit_float, "nan"),
                       (positive_float, "0"), (positive_float, "inf")]:
        with pytest.raises(argparse.ArgumentTypeError, match=repr(bad).replace(".", r"\.")):
            parse(bad)


@pytest.mark.parametrize("count", ["0", "-3"])
def test_generate_refuses_a_bad_count(count, tmp_path, capsys):
    """`python -m seas.method.generate ... --count 0` wrote the config's count and marked the folder complete;
    `--count -3` wrote a pair named -00004.png: both are refused naming --count, exit 2, nothing written."""
    from seas.method import generate

    out = tmp_path / "methods" / "seas" / "weave" / "scratch"
    with pytest.raises(SystemExit) as exc:
        generate.main(["--config", str(REPO / "config.yaml"), "--split", str(tmp_path / "split.json"),
                       "--generator", str(tmp_path / "gen"), "--rmp", str(tmp_path / "rmp"), "--type", "scratch",
                       "--out", str(out), "--count", count])
    assert exc.value.code == 2
    assert f"argument --count: must be an integer >= 1, got '{count}'" in capsys.readouterr().err
    assert not out.exists() and not any(tmp_path.rglob("manifest.csv"))
    # the Python entry point refuses it too, before reading anything
    from seas.run.config import load_config
    from seas.run.errors import ConfigError

    with pytest.raises(ConfigError, match="--count"):
        generate.generate(load_config(REPO / "config.yaml"), tmp_path / "split.json", tmp_path / "gen",
                          tmp_path / "rmp", "scratch", out, count=int(count))
    assert not out.exists()
