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
    "seas.data.demo_data": [[]],
    "seas.models.tiny_sd": [[]],
    "seas.models.tiny_prior": [[]],
    "seas.method.train_generator": [[]],
    "seas.method.train_rmp": [[]],
    "seas.method.generate": [[]],
    "downstream.gen_metrics": [[]],
    "seas.run.layout": [[]],
    "downstream.baselines": [[]],
    "downstream.train_seg": [[]],
    "downstream.evaluate": [[]],
    "downstream.report.tables": [[]],
    "downstream.report.study": [[]],
    "downstream.report.md_table": [[]],
    "downstream.report.sample_grid": [[]],
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
