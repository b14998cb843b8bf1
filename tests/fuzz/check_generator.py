#!/usr/bin/env python3
"""Self-check of the live fuzzer's case generator, without a gateway: makes a few thousand
cases from fixed and fresh seeds and checks that each is valid JSON and that the length the
generator plans its splits with is the length the expander sends. A mutated placeholder
that the generator cannot measure (a bare {{FILL}}) once stopped the fuzzer mid-run."""
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from livefuzz.generate import make_case  # noqa: E402
from livefuzz.steps import Expander, expanded_len  # noqa: E402

CASES_PER_SEED = 1500


def check(seed):
    expand = Expander({})
    for index in range(CASES_PER_SEED):
        name = f"{seed}:{index}"
        case = make_case(random.Random(name), name)
        json.loads(json.dumps(case))
        for step in case["steps"]:
            if step["op"] != "send":
                continue
            planned, sent = expanded_len(step["data"]), len(expand(step["data"]))
            if planned != sent:
                raise AssertionError(f"{name}: planned {planned} bytes, expander sends {sent}")


def main():
    # 982241703 made a bare {{FILL}} at case 96; the others are whatever this run draws
    seeds = [982241703] + [random.randrange(1 << 30) for _ in range(2)]
    for seed in seeds:
        check(seed)
    print(f"generator: {len(seeds) * CASES_PER_SEED} cases from seeds {seeds}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
