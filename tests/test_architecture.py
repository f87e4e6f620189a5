"""The shape of the house: imports only run downward (no circles), no module over 500 lines, per-model facts live in
the profiles and the organism, and every name of the flat API carries a runnable example."""
from __future__ import annotations

import ast
import doctest
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "thinklens"

# the layers, bottom up: a module may import modules of its own layer or below (longest prefix wins)
LAYERS: dict[str, int] = {
    "thinklens.errors": 0, "thinklens.progress": 0,
    "thinklens.options": 1, "thinklens.profiles": 1, "thinklens.jsonl": 1, "thinklens.stats": 1,
    "thinklens.validate": 1, "thinklens.cache": 1, "thinklens.hints": 1,
    "thinklens.distributed": 1,
    "thinklens.gguf": 2,
    "thinklens.toy": 2, "thinklens.toy.tasks": 2, "thinklens.toy.tokenizer": 2, "thinklens.toy.config": 2,
    "thinklens.traces": 3, "thinklens.modules": 3, "thinklens.models": 3,
    "thinklens.empirical": 4,
    "thinklens.attention": 5,
    "thinklens.patching": 6,
    "thinklens.steps": 7,
    "thinklens.faithfulness": 8,
    "thinklens.toy.train": 8, "thinklens.toy.gates": 8, "thinklens.toy.recipe": 8, "thinklens.toy.card": 8,
    "thinklens.toy.hint_gates": 8,
    "thinklens.rundir": 9,
    "thinklens.results": 10,
    "thinklens.report": 11,
    "thinklens.stages": 12,
    "thinklens.pipeline": 13,
    "thinklens.cli": 14, "thinklens.__main__": 15,
}
MAX_LINES = 500
# names of model families and datasets: comparing against them belongs in the profile and organism modules
FAMILY_NAMES = {"tiny-r1", "arithmetic", "math500", "wildbench", "qwen3", "qwq", "deepseek-r1-distill-qwen",
                "deepseek-r1-distill-llama"}
MAY_NAME_FAMILIES = ("thinklens.profiles", "thinklens.toy", "thinklens.empirical.datasets")


def _modules() -> dict[str, Path]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        parts = list(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _layer(name: str) -> int:
    best = max((k for k in LAYERS if name == k or name.startswith(k + ".")), key=len, default=None)
    assert best is not None, f"{name} is in no layer: add it to LAYERS"
    return LAYERS[best]


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
                break
    return out


def test_imports_only_run_downward_and_never_in_circles():
    mods = _modules()
    known = set(mods)
    graph = {m: _imports(m, p, known) for m, p in mods.items() if m != "thinklens"}  # the flat API face is lazy
    upward = [f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})" for a, ts in graph.items() for b in ts
              if b != "thinklens" and _layer(b) > _layer(a)]
    assert not upward, "imports that run upward:\n" + "\n".join(upward)
    # no circles among modules of the same layer either (Tarjan would be shorter to state than to write; DFS)
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in graph.get(m, ()):
            if state.get(t) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(t):] + [m, t]))
            if t not in state:
                visit(t, stack + [m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


def test_no_module_is_over_500_lines():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split by concern: {long}"


def _family_comparisons(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            consts = []
            for o in operands:
                if isinstance(o, ast.Constant):
                    consts.append(o.value)
                elif isinstance(o, (ast.Tuple, ast.List, ast.Set)):
                    consts += [e.value for e in o.elts if isinstance(e, ast.Constant)]
            if any(isinstance(c, str) and c in FAMILY_NAMES for c in consts):
                lines.append(node.lineno)
    return lines


def test_per_model_facts_live_in_the_profiles_and_the_organism():
    bad = []
    for name, path in _modules().items():
        if name.startswith(MAY_NAME_FAMILIES):
            continue
        for line in _family_comparisons(ast.parse(path.read_text(encoding="utf-8"))):
            bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}")
    assert not bad, "compare against a profile or dataset field instead: " + ", ".join(bad)


def test_the_checks_can_fail():
    """The checks above see what they are meant to see."""
    assert _family_comparisons(ast.parse('if model == "tiny-r1": pass')) == [1]
    assert _family_comparisons(ast.parse('if d in ("arithmetic", "x"): pass')) == [1]
    assert _family_comparisons(ast.parse('if spec.math_instruction: pass')) == []
    assert _layer("thinklens.cli.run") > _layer("thinklens.pipeline") > _layer("thinklens.stages.registry")


@pytest.mark.slow
def test_every_public_name_has_a_runnable_example(tmp_path, monkeypatch):
    """Each name of ``thinklens.__all__`` carries a ``>>>`` example in its docstring, and the examples run."""
    import thinklens as tl

    monkeypatch.chdir(tmp_path)
    missing, failed = [], []
    finder, runner = doctest.DocTestFinder(recurse=False), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for name in sorted(tl.__all__):
        if name in ("__version__",):
            continue
        obj = getattr(tl, name)
        if ">>>" not in (obj.__doc__ or ""):
            missing.append(name)
            continue
        for test in finder.find(obj, name, globs={"tl": tl}):
            result = runner.run(test, out=lambda s: failed.append(s))
            assert result.attempted > 0 or name in ("RunResult", "run", "build_report"), name
    assert not missing, f"public names without a runnable example: {missing}"
    assert not failed, "\n".join(failed)
