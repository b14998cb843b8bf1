"""The live fuzzer's parts (tests/fuzz/live_fuzz.py runs them): steps (running a case),
seeds and mutate (its inputs), generate (building cases), target (the processes and the
oracles), findings (what a run found) and minimize (shrinking a failing case)."""
