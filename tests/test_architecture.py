"""The package's shape (docs/ARCHITECTURE.md): data flows down. Every module has a layer, imports
only from layers below its own or from its own layer without a cycle, and stays under 400 lines."""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

from s2d_utils import paths

PACKAGE = paths.ROOT / "s2d_utils"
MAX_LINES = 400

# bottom to top; a module may import from its own layer (no cycle) and from any layer below
LAYERS = (
    ("paths", "files", "stats", "claims", "registry", "paper", "schedule"),
    ("tasks", "tasks.*", "traces", "cache", "memory"),
    ("embedded", "models", "backends.base", "simdata", "simdata.*"),
    ("decoder", "engine", "backends.local", "backends.responses", "backends.servers", "backends.adapters", "backends.vllm_launch", "backends.openai", "backends.serve", "backends.simulated", "backends"),
    ("generation",),
    ("system2", "evaluate", "filters", "records"),
    ("findings", "tables", "figures"),
    ("system2.*", "lora", "distill", "train", "profiles"),
    ("notes", "students", "pipeline", "preflight", "summary", "routing", "readme", "benchblocks", "simulate", "show", "compare", "executed"),
)


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def layer_of(name: str) -> int:
    for i, layer in enumerate(LAYERS):
        for pattern in layer:
            if name == pattern or (pattern.endswith(".*") and name.startswith(pattern[:-1])):
                return i
    raise AssertionError(f"s2d_utils.{name} has no layer: add it to LAYERS and docs/ARCHITECTURE.md")


def imports(path: Path) -> set[str]:
    """The package modules a module imports (relative or absolute), wherever in the file."""
    me = module_name(path).split(".") if module_name(path) else []
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = me if is_package else me[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.startswith("s2d_utils"):
                target = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:  # `from . import x` may name a module
                sub = target + [alias.name]
                if (PACKAGE.joinpath(*sub).with_suffix(".py")).exists() or PACKAGE.joinpath(*sub).is_dir():
                    out.add(".".join(sub))
                elif target:
                    out.add(".".join(target))
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".", 1)[1] for a in node.names if a.name.startswith("s2d_utils.")}
    return out - {module_name(path), ""}


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if module_name(p)}
GRAPH = {name: imports(path) for name, path in MODULES.items()}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_a_module_imports_nothing_above_its_layer(name):
    mine = layer_of(name)
    upward = sorted(t for t in GRAPH[name] if layer_of(t) > mine)
    assert not upward, f"s2d_utils.{name} (layer {mine}) imports {upward} from above"


def test_the_import_graph_has_no_cycle():
    state = defaultdict(int)  # 0 new, 1 on the path, 2 done

    def visit(node, trail):
        state[node] = 1
        for nxt in GRAPH.get(node, ()):
            if state[nxt] == 1:
                raise AssertionError(" -> ".join([*trail, node, nxt]))
            if state[nxt] == 0:
                visit(nxt, [*trail, node])
        state[node] = 2

    for name in GRAPH:
        if state[name] == 0:
            visit(name, [])


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_400_lines(name):
    n = len(MODULES[name].read_text().splitlines())
    assert n <= MAX_LINES, f"s2d_utils.{name}: {n} lines; split it along a seam"


def test_the_architecture_document_lists_every_module():
    doc = (paths.ROOT / "docs" / "ARCHITECTURE.md").read_text()
    missing = [name for name in MODULES if f"`{name}`" not in doc and f"`{name.split('.')[-1]}`" not in doc]
    assert not missing, f"docs/ARCHITECTURE.md does not describe {missing}"
