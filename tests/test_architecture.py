"""Architecture contracts (also run by `make check` through import-linter, see pyproject.toml).

- `core` imports no domain, and clinical domains never import the FHIR adapter (import-linter contracts).
- No import cycle between modules (function-level imports included, `TYPE_CHECKING` ones not).
- Surfaces (REST routes, pages, the CLI, FHIR, Nightscout) never write to the database themselves: every
  write goes through an action in its domain. A surface that calls `session.add/flush/commit/delete`,
  builds an `insert`/`update`/`delete` statement or assigns to a loaded row's attribute fails here.
- Every module the domain manifest names exists, and every router the app serves comes from it."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import grimp
import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "telecare"

SURFACE_NAMES = {"api.py", "pages.py", "admin_pages.py", "cli.py", "nightscout.py"}
WRITE_METHODS = {"add", "add_all", "delete", "flush", "commit", "merge", "rollback", "execute_write"}
WRITE_CONSTRUCTS = {"insert", "update", "delete"}
# Names a surface may assign attributes on: framework objects, not ORM rows.
FRAMEWORK_NAMES = {"self", "response", "request", "app", "websocket", "conn", "exc"}


def surface_modules(root: Path = PACKAGE) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if p.name in SURFACE_NAMES or p.parent.name == "fhir")


def surface_writes(path: Path) -> list[str]:
    """Every place in `path` that writes to the database by itself (`file:line: code`)."""
    found: list[str] = []
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            receiver = ast.unparse(node.func.value)
            if node.func.attr in WRITE_METHODS and ("session" in receiver or receiver in {"s", "uow", "db"}):
                found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)[:80]}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            found.extend(
                f"{path.name}:{node.lineno}: imports {alias.name}"
                for alias in node.names
                if alias.name in WRITE_CONSTRUCTS
            )
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id not in FRAMEWORK_NAMES
                ):
                    found.append(f"{path.name}:{node.lineno}: assigns {ast.unparse(target)}")
    return found


def test_surfaces_write_only_through_actions() -> None:
    surfaces = surface_modules()
    assert len(surfaces) >= 12, "the surface list looks wrong: " + ", ".join(p.name for p in surfaces)
    offences = [hit for path in surfaces for hit in surface_writes(path)]
    assert offences == [], "surfaces writing behind an action's back:\n" + "\n".join(offences)


def test_the_write_check_catches_a_route_that_writes(tmp_path: Path) -> None:
    """Sabotage: a route that adds a row, flushes, and renames a user is caught on each line."""
    module = tmp_path / "api.py"
    module.write_text(
        "from sqlalchemy import update\n"
        "async def rename(session, user, name):\n"
        "    user.display_name = name\n"
        "    session.add(user)\n"
        "    await session.flush()\n"
    )
    hits = surface_writes(module)
    assert [h.split(":")[1] for h in hits] == ["1", "3", "4", "5"], hits


def _graph() -> grimp.ImportGraph:
    sys.path.insert(0, str(SRC))
    try:
        return grimp.build_graph("telecare", exclude_type_checking_imports=True, cache_dir=None)
    finally:
        sys.path.remove(str(SRC))


def test_no_import_cycles() -> None:
    graph = _graph()
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if graph.chain_exists(importer=imported, imported=module):
                chain = graph.find_shortest_chain(importer=imported, imported=module) or ()
                cycles.append(f"{module} -> {' -> '.join(chain)}")
    assert cycles == [], "import cycles:\n" + "\n".join(sorted(set(cycles))[:20])


def test_core_imports_no_domain() -> None:
    graph = _graph()
    core = {m for m in graph.modules if m == "telecare.core" or m.startswith("telecare.core.")}
    allowed = core | {"telecare", "telecare.config"}
    offences = sorted(
        f"{m} imports {i}"
        for m in core
        for i in graph.find_modules_directly_imported_by(m)
        if i.startswith("telecare") and i not in allowed
    )
    assert offences == []


def _routes(routes: list[object]) -> set[tuple[str, tuple[str, ...]]]:
    from fastapi.routing import APIRoute, APIWebSocketRoute

    return {
        (route.path, tuple(sorted(getattr(route, "methods", None) or ())))
        for route in routes
        if isinstance(route, APIRoute | APIWebSocketRoute)
    }


def test_manifest_names_every_router_the_app_serves() -> None:
    from telecare import domains
    from telecare.app import create_app
    from tests.conftest import make_settings

    for domain in domains.DOMAINS:
        for spec in (*domain.models, *domain.routers, *domain.pages, *domain.tasks):
            module = spec.partition(":")[0]
            assert (SRC / (module.replace(".", "/") + ".py")).exists(), spec
    declared = _routes([route for router in domains.routers() for route in router.routes])
    app = create_app(make_settings("sqlite+aiosqlite:///:memory:", Path("/nonexistent")))
    own = {"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
    strays = sorted(path for path, _ in _routes(app.routes) - declared if path not in own)
    assert strays == []


def test_registrations_come_from_the_manifest_not_imports() -> None:
    """No module registers into another domain's registry when imported (a top-level call or a decorator);
    `domains.install()` makes every registration the manifest lists."""
    offences = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "domains.py":
            continue
        tree = ast.parse(path.read_text())
        for node in tree.body:
            calls = [node.value] if isinstance(node, ast.Expr) else []
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                calls = list(node.decorator_list)
            for call in calls:
                func = call.func if isinstance(call, ast.Call) else call
                name = ast.unparse(func)
                if name.split(".")[-1].startswith("register"):
                    offences.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {name}")
    assert offences == []


ROLE_TEST = re.compile(
    r"principal\.role\s*(?:is not|is|==|!=|not in|in)\s*\(?\s*Role\.|principal\.role\.is_clinician"
)


def role_tests_outside_access() -> list[str]:
    """`if principal.role is Role.X` outside access/ (and auth/, which enforces a route's declared roles):
    an access rule written where nobody looks for it."""
    hits = []
    package = SRC / "telecare"
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        if rel.startswith(("access/", "auth/")):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if ROLE_TEST.search(line):
                hits.append(f"{rel}:{n}: {line.strip()}")
    return hits


def test_role_rules_live_in_access() -> None:
    assert role_tests_outside_access() == []


def test_the_role_rule_check_catches_a_role_comparison(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "telecare"
    (fake / "visits").mkdir(parents=True)
    (fake / "visits" / "service.py").write_text("if principal.role is Role.COORDINATOR:\n    pass\n")
    (fake / "access").mkdir()
    (fake / "access" / "rules.py").write_text("return principal.role is Role.COORDINATOR\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    assert role_tests_outside_access() == ["visits/service.py:1: if principal.role is Role.COORDINATOR:"]
