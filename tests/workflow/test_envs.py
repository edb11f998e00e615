"""Each rule's conda env (envs/<env>.yaml) holds what its CLI module imports: the module's import-time closure
(module-level imports of it and of the project modules it imports, transitively) is checked against the env
file's package list. Lazy imports inside functions are the modules' own declared optional paths (torch in the
light modules' tensor helpers, bitsandbytes, ...), named by a comment where they are."""
from __future__ import annotations

import ast
import re
import sys

import pytest
import yaml

from helpers import REPO
from seas.run.stages import STAGES

#: import name -> the conda / pip package that provides it
PROVIDER = {"PIL": "pillow", "yaml": "pyyaml", "sklearn": "scikit-learn", "torch": "pytorch", "mmseg": "mmsegmentation",
            "torch_fidelity": "torch-fidelity", "cv2": "opencv"}


def rule_envs() -> dict[str, str]:
    envs = {}
    for f in (REPO / "workflow" / "rules").glob("*.smk"):
        cur = None
        for line in f.read_text().splitlines():
            m = re.match(r"\s*(?:rule|checkpoint) (\w+):", line)
            cur = m.group(1) if m else cur
            m = re.match(r'\s*"\.\./\.\./envs/(\w+)\.yaml"', line)
            if m and cur:
                envs[cur] = m.group(1)
    return envs


def env_packages(env: str) -> set[str]:
    deps = yaml.safe_load((REPO / "envs" / f"{env}.yaml").read_text())["dependencies"]
    names = set()
    for d in deps:
        for item in (d["pip"] if isinstance(d, dict) else [d]):
            if not item.startswith("-"):
                names.add(re.split(r"[<>=\s\[]", item, maxsplit=1)[0].lower())
    return names


def _module_level_imports(tree: ast.Module):
    """Imports executed when the module is imported (module level, including its if / try blocks)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.If, ast.Try)):
            stack += node.body + node.orelse + getattr(node, "finalbody", []) + \
                [s for h in getattr(node, "handlers", []) for s in h.body]


def import_closure(module: str) -> set[str]:
    third, seen, todo = set(), set(), [module]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        path = REPO / (mod.replace(".", "/") + ".py")
        if not path.is_file():
            path = REPO / mod.replace(".", "/") / "__init__.py"
            if not path.is_file():
                continue
        for node in _module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names] if node.level == 0 else []
            else:
                names = [a.name for a in node.names]
            for n in names:
                top = n.split(".")[0]
                if top in ("seas", "downstream"):
                    todo.append(n)
                elif top not in sys.stdlib_module_names and top != "__future__":
                    third.add(top)
    return third


@pytest.mark.parametrize("rule, env", sorted(rule_envs().items()))
def test_rule_env_holds_what_its_module_imports(rule, env):
    have = env_packages(env)
    need = {PROVIDER.get(t, t).lower() for t in import_closure(STAGES[rule].module)}
    assert need <= have, f"rule {rule}: envs/{env}.yaml lacks {sorted(need - have)}"


def test_every_rule_with_a_module_has_an_env():
    envs = rule_envs()
    assert set(envs) == {s.name for s in STAGES.values()}, sorted(set(envs) ^ {s.name for s in STAGES.values()})


def test_the_closure_sees_a_heavy_import():
    """The check can fail: the generator's module pulls in diffusers at import time."""
    assert "diffusers" in import_closure("seas.method.train_generator")
