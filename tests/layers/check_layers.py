#!/usr/bin/env python3
"""Checks that gateway/ keeps its layers one way (docs/ARCHITECTURE.md, "Layers").

A module is a .c file and its .h (same name). The rules:
  1. a file includes only headers of its own folder or of folders below it, in the order
     core < redis < store < channels < ws < http < app (common/ is under all of them);
  2. the module graph (an edge per #include of another module's header) has no cycle,
     inside a folder as well as across folders;
  3. the channel core's data and ordering (channels/registry, channels/sequence) include no
     header of the layers above and not hub.h: it links alone (tests/unit/test_sequence.c).
C needs a declaration for every call, so the include graph bounds the call graph.
Exit status 1 and one line per violation when a rule is broken."""
import os
import re
import sys

LAYERS = ["core", "redis", "store", "channels", "ws", "http", "app"]
STANDALONE = {"registry", "sequence", "sink"}


def scan(gateway):
    owner = {}  # header name -> (folder, module)
    files = []
    for folder in LAYERS:
        d = os.path.join(gateway, folder)
        for name in sorted(os.listdir(d)):
            if name.endswith((".c", ".h")):
                files.append((folder, name))
                if name.endswith(".h"):
                    owner[name] = (folder, name[:-2])
    stray = [n for n in os.listdir(gateway) if n.endswith((".c", ".h"))]
    return owner, files, stray


def main():
    gateway = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "gateway")
    owner, files, stray = scan(gateway)
    errors = [f"gateway/{n}: every module belongs in a layer folder" for n in stray]
    edges = {}
    for folder, name in files:
        module = name[:-2]
        edges.setdefault(module, set())
        with open(os.path.join(gateway, folder, name)) as f:
            includes = re.findall(r'^\s*#\s*include\s+"([^"]+)"', f.read(), re.M)
        for inc in includes:
            if inc not in owner:
                continue  # common/ or a system header
            to_folder, to_module = owner[inc]
            if to_module == module:
                continue
            edges[module].add(to_module)
            if LAYERS.index(to_folder) > LAYERS.index(folder):
                errors.append(f"gateway/{folder}/{name} includes {to_folder}/{inc}: "
                              f"{folder} may not reach up to {to_folder}")
            if module in STANDALONE and (to_module == "hub" or
                                         LAYERS.index(to_folder) > LAYERS.index("channels")):
                errors.append(f"gateway/{folder}/{name} includes {inc}: the channel core "
                              "must link without it")
    # cycles: Tarjan's strongly connected components
    index, low, stack, on, sccs = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    for comp in sccs:
        errors.append("include cycle among modules: " + ", ".join(comp))
    for e in errors:
        print(e)
    if not errors:
        print(f"{len(edges)} modules in {len(LAYERS)} layers, "
              f"{sum(len(s) for s in edges.values())} edges, no cycle, none upward")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
