"""seas.run.resume: the one resume helper (fingerprint comparison, the restart command)."""
from __future__ import annotations

import pytest

from seas.run.resume import StaleStateError, changed_keys, check_fingerprint, restart_command, work_dir


def test_changed_keys_and_refusal(tmp_path):
    old = {"rmp": {"lr": 1e-3, "mrm": True}, "seed": 0, "types": ["a", "b"]}
    assert changed_keys(old, old) == []
    assert changed_keys(old, {**old, "rmp": {"lr": 2e-3, "mrm": True}, "types": ["a"]}) == ["rmp.lr", "types"]
    check_fingerprint(tmp_path, old, dict(old))
    with pytest.raises(StaleStateError, match=r"other settings \(seed\)"):
        check_fingerprint(tmp_path, old, {**old, "seed": 1})
    assert work_dir(tmp_path / "rmp" / "all") == tmp_path / "rmp" / "all.work"


def test_restart_command_quotes_and_appends():
    cmd = restart_command("seas.method.train_generator", ["--config", "my cfg.yaml", "--restart", "--out", "g/P/all"])
    assert cmd == "python -m seas.method.train_generator --config 'my cfg.yaml' --out g/P/all --restart"
