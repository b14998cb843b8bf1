#!/usr/bin/env python3
"""callgrind_summary.py: instructions (Ir) of a callgrind output file, per unit of work.

    callgrind_summary.py CALLGRIND_OUT UNITS [--unit delivery] [--calls FN,FN] [--top 30]
    callgrind_summary.py CALLGRIND_OUT UNITS --json

Prints the total Ir over UNITS, the self cost per unit of each shared object (lws, herald,
libc, ...) and of the top functions, and for each function named in --calls how often it was
called and its inclusive cost per call. --base OUT2:UNITS2 subtracts a shorter run of the same
setup, so that start-up, connecting and shutdown cancel out (the marginal cost per unit).
"""

import argparse
import collections
import json
import os
import re

SHORT = {"libwebsockets.so.17": "lws", "libc.so.6": "libc", "libjansson.so.4.14.0": "jansson",
         "ld-linux-x86-64.so.2": "ld.so", "libhiredis.so.0.14": "hiredis",
         "libuv.so.1.0.0": "libuv", "libcrypto.so.3": "libcrypto", "libpq.so.5": "libpq"}


def parse(path):
    """(total, self Ir by object, self Ir by (object, function), {fn: [calls, inclusive]})."""
    by_ob, by_fn = collections.Counter(), collections.Counter()
    calls = collections.defaultdict(lambda: [0, 0])
    names = {"ob": {}, "fn": {}}
    ob = fn = cfn = "?"
    pending = None  # callee whose inclusive cost is on the next cost line
    total = 0

    def name(kind, rest):
        m = re.match(r"\((\d+)\)(?:\s+(.*))?", rest)
        if not m:
            return rest
        if m.group(2) is not None:
            names[kind][m.group(1)] = m.group(2)
        return names[kind].get(m.group(1), "?")

    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            if line.startswith("ob="):
                base = os.path.basename(name("ob", line[3:]))
                ob = SHORT.get(base, base)
            elif line.startswith("fn="):
                fn = name("fn", line[3:])
            elif line.startswith("cob="):
                name("ob", line[4:])
            elif line.startswith("cfn="):
                cfn = name("fn", line[4:])
            elif line.startswith("calls="):
                pending = cfn
                calls[cfn][0] += int(line[6:].split()[0])
            elif line.startswith(("totals:", "summary:")):
                total = int(line.split()[1])
            elif line[0].isdigit() or line[0] in "+-*":
                parts = line.split()
                if len(parts) < 2:
                    continue
                c = int(parts[1])
                if pending is not None:
                    if pending != fn:  # recursion would count twice
                        calls[pending][1] += c
                    pending = None
                else:
                    by_ob[ob] += c
                    by_fn[(ob, fn)] += c
    return total, by_ob, by_fn, calls


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("units", type=int)
    ap.add_argument("--unit", default="delivery")
    ap.add_argument("--calls", default="")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--base", help="OUT:UNITS of a shorter run to subtract")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    total, by_ob, by_fn, calls = parse(a.out)
    units = a.units
    label = "per " + a.unit
    if a.base:
        bpath, bunits = a.base.rsplit(":", 1)
        btotal, bob, bfn, bcalls = parse(bpath)
        total, units = total - btotal, units - int(bunits)
        for f, (n, incl) in bcalls.items():
            calls[f][0] -= n
            calls[f][1] -= incl
        by_ob.subtract(bob)
        by_fn.subtract(bfn)
        label = "marginal per " + a.unit
    wanted = [f for f in a.calls.split(",") if f]
    if a.json:
        print(json.dumps({"total": total, "units": units, "per_unit": total / units,
                          "by_object": {k: v / units for k, v in by_ob.items() if v},
                          "calls": {f: calls[f] for f in wanted}}))
        return
    print(f"Ir {total:,} over {units:,} ({a.unit}): {total / units:.1f} {label}")
    print(f"by object ({label}):")
    for o, c in sorted(by_ob.items(), key=lambda kv: -kv[1]):
        if abs(c) / units >= 0.05:
            print(f"  {o:28s} {c / units:9.1f}")
    print(f"top functions, self ({label}):")
    for (o, f), c in sorted(by_fn.items(), key=lambda kv: -kv[1])[:a.top]:
        print(f"  {c / units:9.1f}  {f} [{o}]")
    for f in wanted:
        n, incl = calls[f]
        print(f"calls {f}: {n:,}, inclusive {incl / n if n else 0:.0f} Ir per call"
              f" ({incl / units:.1f} {label})")


if __name__ == "__main__":
    main()
