"""No import cycle among airfleet's modules: module level, deferred (inside functions) and
``TYPE_CHECKING`` imports all count, since each is a dependency a reader must follow.

The graph is grimp's (the engine behind import-linter's contracts), which records every
import statement of a module wherever it stands; the cycles are its strongly connected
components (Tarjan).
"""

from __future__ import annotations

import grimp

ROOTS = ("common", "server", "clients", "studies", "cli")


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        # iterative Tarjan: (module, iterator over what it imports)
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.find_modules_directly_imported_by(w)))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1 or v in graph.find_modules_directly_imported_by(v):
                    out.append(sorted(comp))
    return out


def _describe(graph: grimp.ImportGraph, comp: list[str]) -> str:
    members = set(comp)
    lines = []
    for a in comp:
        for b in sorted(graph.find_modules_directly_imported_by(a) & members):
            for d in graph.get_import_details(importer=a, imported=b):
                lines.append(f"  {a}:{d['line_number']}  {d['line_contents']}")
    return " <-> ".join(comp) + "\n" + "\n".join(lines)


def test_the_cycle_finder_finds_a_cycle():
    g = grimp.ImportGraph()
    for a, b in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d"), ("p.e", "p.e")):
        g.add_import(importer=a, imported=b, line_number=1, line_contents=f"import {b}")
    assert sorted(_cycles(g)) == [["p.a", "p.b", "p.c"], ["p.e"]]


def test_no_import_cycles_among_project_modules():
    graph = grimp.build_graph(*ROOTS, include_external_packages=False, cache_dir=None)
    assert len(graph.modules) > 50  # the whole project was read
    cycles = _cycles(graph)
    assert not cycles, "import cycles (break them by moving code down a layer):\n" + "\n".join(_describe(graph, c) for c in cycles)
