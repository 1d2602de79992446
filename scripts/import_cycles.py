#!/usr/bin/env python3
"""Import cycles between soko's packages (``soko.registry``, ``soko.gc``…; a top-level module is its own package).

Reads the import statements of every module under src/soko (also those inside functions and ``TYPE_CHECKING``
blocks: they are dependencies all the same) and prints each pair of packages that import each other, with the
modules that do it, then the strongly connected groups of packages.
    scripts/import_cycles.py        exit status 0 always: a report, not a gate
"""

from __future__ import annotations

import ast
import pathlib
from collections import defaultdict

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"


def modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in (SRC / "soko").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: pathlib.Path, known: dict[str, pathlib.Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `from x import name` names a module or something in x
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def main() -> None:
    known = modules()
    edges: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for name, path in known.items():
        for target in imports(name, path, known):
            a, b = package(name), package(target)
            if a != b:
                edges[(a, b)].append((name, target))
    pairs = sorted((a, b) for (a, b) in edges if a < b and (b, a) in edges)
    print(f"package pairs importing each other: {len(pairs)}")
    for a, b in pairs:
        print(f"  {a} <-> {b}")
        for importer, imported in sorted(edges[(a, b)] + edges[(b, a)]):
            print(f"      {importer} -> {imported}")
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    groups = [g for g in _strongly_connected(sorted({package(m) for m in known}), graph) if len(g) > 1]
    print(f"package cycles (strongly connected groups): {len(groups)}")
    for group in groups:
        print("  " + ", ".join(sorted(group)))


def _strongly_connected(nodes: list[str], graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                groups.append(group)
    return groups


if __name__ == "__main__":
    main()
