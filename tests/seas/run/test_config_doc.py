"""config/README.md is generated from the schema (python -m seas.run.config_doc) and documents every key."""
from __future__ import annotations

from seas.run.config import load_schema
from seas.run.config_doc import README_PATH, main, render


def _keys(props: dict, prefix: str = "") -> list[str]:
    out = []
    for name, node in props.items():
        out.append(prefix + name)
        if "properties" in node:
            out += _keys(node["properties"], f"{prefix}{name}.")
        elif "$ref" in node:  # the per-model segmentation sections
            ref = load_schema()["definitions"][node["$ref"].rsplit("/", 1)[1]]
            out += _keys(ref["properties"], f"{prefix}{name}.")
    return out


def test_readme_is_up_to_date_with_the_schema():
    assert README_PATH.read_text(encoding="utf-8") == render(), \
        "config/README.md is out of date: regenerate it with `python -m seas.run.config_doc`"


def test_every_key_has_a_row():
    text = render()
    keys = _keys(load_schema()["properties"])
    assert len(keys) > 100
    # a top-level section is a heading, every other key a row
    assert [k for k in keys if f"| `{k}` |" not in text and f"\n## `{k}`\n" not in text] == []


def test_check_mode(tmp_path, capsys):
    out = tmp_path / "README.md"
    assert main(["--out", str(out), "--check"]) == 1 and "out of date" in capsys.readouterr().err
    assert main(["--out", str(out)]) == 0 and main(["--out", str(out), "--check"]) == 0
