"""The parts stand on each other in one direction only (docs/architecture.md): checked on every module's imports,
function-level imports included, so a forbidden edge fails the fast tier instead of waiting for a review."""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
OURS = ("agentd", "bake", "collector", "deploy", "host")

# part -> the modules of ours it must not import (a name forbids the package and everything under it)
FORBIDDEN = {
    "host": ("bake", "deploy", "agentd", "collector"),
    "bake": ("deploy", "collector"),
    "agentd": ("bake", "deploy", "host", "collector"),
}
# part -> modules of another part it may import, and nothing else of that part
ONLY_FROM = {"collector": {"agentd": ("agentd.protocol",)}}


def imported_modules(source: str, package: str) -> set[str]:
    """Every module a source imports, relative imports resolved against `package` (its dotted package name)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def violations(part: str, modules: set[str]) -> list[str]:
    bad = []
    for module in sorted(modules):
        top = module.split(".")[0]
        if top == part or top not in OURS:
            continue
        if top in FORBIDDEN.get(part, ()):
            bad.append(f"{part} imports {module}")
        allowed = ONLY_FROM.get(part, {}).get(top)
        if allowed is not None and not any(module == a or module.startswith(a + ".") or a.startswith(module + ".")
                                           for a in allowed):
            bad.append(f"{part} imports {module} (only {', '.join(allowed)} of {top})")
    return bad


def _modules_of(part: str):
    for path in sorted((REPO / part).rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        package = ".".join(rel.parts[:-1])  # a module's package, and an __init__'s own
        yield pytest.param(part, path, package, id=str(path.relative_to(REPO)))


@pytest.mark.parametrize("part,path,package", [p for part in (*FORBIDDEN, *ONLY_FROM) for p in _modules_of(part)])
def test_each_part_imports_only_what_the_architecture_allows(part, path, package):
    assert violations(part, imported_modules(path.read_text(), package)) == []


@pytest.mark.parametrize("part,source,package,expected", [
    ("bake", "from deploy.images import find_image", "bake", "bake imports deploy.images"),
    ("bake", "def f():\n    import deploy\n", "bake", "bake imports deploy"),
    ("host", "from bake.errors import BakeError", "host", "bake.errors"),
    ("agentd", "from host import accel", "agentd", "agentd imports host"),
    ("agentd", "import collector.app", "agentd.checks", "agentd imports collector"),
    ("collector", "from agentd.config import Config", "collector", "only agentd.protocol of agentd"),
    ("collector", "from agentd import config", "collector", "agentd.config (only agentd.protocol"),
])
def test_the_check_catches_a_forbidden_import(part, source, package, expected):
    assert any(expected in v for v in violations(part, imported_modules(source, package)))


def test_the_check_lets_the_allowed_edges_through():
    assert violations("collector", imported_modules("from agentd.protocol import agent_token\n"
                                                    "from agentd import protocol", "collector")) == []
    assert violations("agentd", imported_modules("from .config import Config\nfrom . import protocol",
                                                 "agentd")) == []
    assert violations("bake", imported_modules("from host.run import run", "bake")) == []
