#!/usr/bin/env python3
"""Fail, naming each cycle, when modules of a package import each other in a cycle.

import-linter has no general cycle contract, so ``scripts/check`` runs this on ``kumo``:
grimp (import-linter's own graph builder) reads every import statement of the package, and
any direct import ``a -> b`` with a chain back from ``b`` to ``a`` is a cycle.

Imports under ``if TYPE_CHECKING:`` count: they do not run, but a module that names another's
types for its own signatures depends on it as much as one that calls it (the cycle that
``server/service.py`` and ``server/migrations.py`` had was one). Imports inside functions
count too; a package's ``__init__`` is a module like the others.

Usage: ``import_cycles.py [PACKAGE]`` (default ``kumo``); the package must be importable.
Exit status 0 without cycles, 1 with, each printed as ``a -> b -> … -> a``."""

from __future__ import annotations

import sys

import grimp


def find_cycles(package: str) -> list[list[str]]:
    """One shortest cycle per set of modules that import each other, sorted; each starts and
    ends with the same module."""
    graph = grimp.build_graph(package, exclude_type_checking_imports=False, cache_dir=None)
    found: dict[frozenset[str], list[str]] = {}
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is None:
                continue
            cycle = [importer, *back]
            members = frozenset(cycle)
            if members not in found or len(cycle) < len(found[members]):
                found[members] = cycle
    return sorted(found.values())


def main(argv: list[str]) -> int:
    package = argv[1] if len(argv) > 1 else "kumo"
    cycles = find_cycles(package)
    for cycle in cycles:
        print(f"import cycle: {' -> '.join(cycle)}")
    if cycles:
        print(f"{len(cycles)} import cycle(s) in {package}; break each (see docs/architecture.md)")
        return 1
    print(f"no import cycles in {package}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
