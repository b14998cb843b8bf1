#!/usr/bin/python3
"""A stateful fuzzer against a live gateway under ASan/UBSan.

It starts a real redis-server, a real PostgreSQL and one herald (HERALD_BIN, default
build-asan/gateway/herald) with history, a JWT secret, an API key, a static dir and small
limits, then runs cases for --seconds: each case is a session of steps on one or more
connections (mutated HTTP requests, pipelined, split into several writes; WebSocket
handshakes and frames; half-closes and resets; Redis PUBLISHes of mutated payloads), and
after each case the oracles of livefuzz/target.py judge the gateway. The gateway is
restarted after a failure, and every --phase-cases cases with the next profile: auth (JWT and
API key), open (no auth), and by request deflate (auth with HERALD_DEFLATE=1: left out by
default, see corpus/live-known/README.md).

The same --seed gives the same cases in the same order (--first-case N starts at case N). A
failing case is printed and saved as JSON in --crash-dir; --replay FILE runs saved cases
again, --minimize FILE shrinks one. The saved regression cases in tests/fuzz/corpus/live/ run
first in every run, each on a gateway of its own.

Exit status: 0 no failure, 1 failures (listed at the end), 2 the fuzzer could not start.

    /usr/bin/python3 tests/fuzz/live_fuzz.py --seconds 60
    /usr/bin/python3 tests/fuzz/live_fuzz.py --replay tests/fuzz/corpus/live/*.json
    /usr/bin/python3 tests/fuzz/live_fuzz.py --minimize crash.json --out small.json
"""

import argparse
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.path.insert(0, HERE)

import harness  # noqa: E402
from livefuzz.findings import Findings, case_text  # noqa: E402
from livefuzz.generate import make_case  # noqa: E402
from livefuzz.minimize import Minimizer  # noqa: E402
from livefuzz.target import PROFILES, Target  # noqa: E402

# what tests/run-all.sh exports, for a run started by hand
SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:halt_on_error=1:quarantine_size_mb=16",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    "LSAN_OPTIONS": f"suppressions={REPO}/tests/lsan.supp:print_suppressions=0",
}
PROGRESS_EVERY = 10.0  # seconds between progress lines


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float,
                   default=float(os.environ.get("FUZZ_LIVE_SECONDS", 60)),
                   help="how long to fuzz (default $FUZZ_LIVE_SECONDS or 60)")
    p.add_argument("--seed", type=int, help="the run's seed (default: a random one, printed)")
    p.add_argument("--first-case", type=int, default=0, metavar="N",
                   help="start at the seed's case N (a failure that needs the cases before it"
                        " on the same gateway: --first-case a little before it)")
    # not deflate: lws 4.1.6's inflater aborts on some compressed messages, a known bug that
    # Herald cannot work around (corpus/live-known/README.md); --profiles deflate fuzzes it
    p.add_argument("--profiles", default="auth,open",
                   help="gateway profiles to cycle through (default %(default)s; also: "
                        + ", ".join(p for p in PROFILES if p not in ("auth", "open")) + ")")
    p.add_argument("--phase-cases", type=int, default=60,
                   help="cases per profile before the next one (default %(default)s)")
    p.add_argument("--crash-dir", default=os.path.join(REPO, "build-asan", "tests", "fuzz",
                                                       "live-crashes"),
                   help="where failing cases are saved (default %(default)s)")
    p.add_argument("--corpus", default=os.path.join(HERE, "corpus", "live"),
                   help="saved cases run first (default %(default)s)")
    p.add_argument("--stop-on-failure", action="store_true", help="stop at the first failure")
    p.add_argument("--hang-seconds", type=float, default=10.0,
                   help="/healthz slower than this is a hang (default %(default)s)")
    p.add_argument("--canary-seconds", type=float, default=3.0,
                   help="a canary message later than this is lost (default %(default)s)")
    p.add_argument("--replay", nargs="+", metavar="FILE", help="run saved cases and stop")
    p.add_argument("--minimize", metavar="FILE", help="shrink one saved failing case")
    p.add_argument("--minimize-seconds", type=float, default=600.0,
                   help="time budget of --minimize (default %(default)s)")
    p.add_argument("--out", help="where --minimize writes (default FILE.min.json)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the processes' directory")
    p.add_argument("-v", "--verbose", action="store_true", help="print every case's outcome")
    args = p.parse_args()
    args.profiles = args.profiles.split(",")
    unknown = set(args.profiles) - set(PROFILES)
    if unknown:
        p.error(f"unknown profile(s) {', '.join(sorted(unknown))}; known: {', '.join(PROFILES)}")
    return args


def load_case(path):
    with open(path) as f:
        return json.load(f)


class Runner:
    """Runs cases against a Target, switching its gateway's profile when a case needs
    another one and restarting it after a failure."""

    def __init__(self, target, verbose):
        self.target = target
        self.verbose = verbose
        self.cases = self.steps = self.failed = 0
        self.gateway_pid = None

    def use_profile(self, profile):
        if self.target.profile != profile or not self.target.herald:
            self.target.stop_gateway()
            self.target.start_gateway(profile)

    def run(self, case):
        """Runs `case` (its "profile" says on which gateway); returns (failure, transcript)."""
        self.use_profile(case["profile"])
        self.gateway_pid = self.target.herald.pid  # the gateway this case runs on
        session = self.target.session()
        session.run(case["steps"])
        failure = self.target.check(self.target.strict(case))
        self.cases += 1
        self.steps += len(case["steps"])
        if self.verbose:
            print(f"  case {case['seed']} ({case.get('scenario', 'saved')}, {case['profile']}):"
                  f" {failure.signature if failure else 'ok'}", flush=True)
        if failure:
            self.failed += 1
            self.target.restart_gateway(hung=failure.kind == "hang")
        return failure, session.transcript


class Fuzzer:
    """The fuzzing loop: the saved regression cases first, each on a gateway of its own, then
    generated cases until the deadline."""

    def __init__(self, args, runner, findings):
        self.args = args
        self.runner = runner
        self.findings = findings
        self.seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
        self.started = time.monotonic()
        self.deadline = self.started + args.seconds
        self.next_progress = self.started + PROGRESS_EVERY
        self.previous = None  # (gateway pid, seed) of the last case that passed

    def run(self):
        print(f"live_fuzz: seed {self.seed} (--seed {self.seed} repeats these cases),"
              f" {self.args.seconds:.0f} s, profiles {','.join(self.args.profiles)}", flush=True)
        for path in sorted(glob.glob(os.path.join(self.args.corpus, "*.json"))):
            case = load_case(path)
            case["seed"] = os.path.relpath(path, REPO)
            if not self._execute(case, own_gateway=True):
                return
        index = self.args.first_case
        while time.monotonic() < self.deadline:
            profiles = self.args.profiles
            case = make_case(random.Random(f"{self.seed}:{index}"), f"{self.seed}:{index}")
            case["profile"] = profiles[(index // self.args.phase_cases) % len(profiles)]
            index += 1
            if not self._execute(case):
                return

    def _execute(self, case, own_gateway=False):
        """Runs one case and records its failure; False when the run must stop. With
        `own_gateway` the gateway is stopped after the case, so that what it reports as it
        exits (leaks, a damaged table freed) is the case's too."""
        target = self.runner.target
        failure, transcript = self.runner.run(case)
        pid = self.runner.gateway_pid
        if failure:
            before = self.previous[1] if self.previous and self.previous[0] == pid else None
            self.findings.add(failure, case, transcript, before)
        self.previous = None if failure or own_gateway else (pid, case["seed"])
        if own_gateway:
            target.stop_gateway()
            for exit_failure in target.take_exit_failures():
                self.findings.add(exit_failure, case, transcript)
        record_exit_failures(target, self.findings)
        self._progress()
        return not (self.findings and self.args.stop_on_failure)

    def _progress(self):
        now = time.monotonic()
        if now < self.next_progress:
            return
        self.next_progress = now + PROGRESS_EVERY
        print(f"[{now - self.started:5.0f} s] {self.stats()}, profile {self.runner.target.profile}",
              flush=True)

    def stats(self):
        elapsed = max(time.monotonic() - self.started, 1e-9)
        r = self.runner
        return (f"{r.cases} cases ({r.cases / elapsed:.1f}/s), {r.steps} steps"
                f" ({r.steps / elapsed:.0f}/s), {r.target.restarts} restarts,"
                f" {len(self.findings.entries)} distinct failures")


def record_exit_failures(target, findings):
    """What a gateway reported as it stopped (leaks, a bad exit status) belongs to no single
    case: it is recorded with no steps."""
    for failure in target.take_exit_failures():
        findings.add(failure, {"seed": "gateway exit", "profile": target.profile, "steps": []},
                     [])


def fuzz(args, target):
    findings = Findings(args.crash_dir)
    fuzzer = Fuzzer(args, Runner(target, args.verbose), findings)
    try:
        fuzzer.run()
    finally:
        target.close()
        record_exit_failures(target, findings)
        runner = fuzzer.runner
        print(f"live_fuzz: seed {fuzzer.seed}: {fuzzer.stats()}\n{findings.summary()}\n"
              f"cases: {runner.cases - runner.failed} passed, {runner.failed} failed", flush=True)
    return 1 if findings else 0


def replay(args, target):
    runner = Runner(target, verbose=False)
    failed = 0
    for path in args.replay:
        case = load_case(path)
        failure, transcript = runner.run(case)
        print(f"{path}: {'FAIL ' + failure.signature if failure else 'ok'}", flush=True)
        if failure:
            failed += 1
            print("\n".join(["  " + line for line in transcript] + [failure.detail]), flush=True)
    target.close()
    for failure in target.take_exit_failures():
        print(f"gateway exit: FAIL {failure.signature}\n{failure.detail}")
        failed += 1
    return 1 if failed else 0


def minimize(args, target):
    case = load_case(args.minimize)
    runner = Runner(target, verbose=False)

    def reproduce(steps):
        failure, _ = runner.run(dict(case, steps=steps))
        return failure.signature if failure else None

    signature = reproduce(case["steps"])
    if signature is None:
        print(f"{args.minimize}: does not fail (any more)")
        return 1
    print(f"{args.minimize}: {signature}; shrinking {len(case['steps'])} steps", flush=True)
    shrinker = Minimizer(reproduce, signature, args.minimize_seconds)
    small = dict(case, steps=shrinker.shrink(case["steps"]))
    small.pop("transcript", None)
    small["failure"] = {"signature": signature}
    out = args.out or os.path.splitext(args.minimize)[0] + ".min.json"
    with open(out, "w") as f:
        f.write(case_text(small))
    print(f"{len(small['steps'])} steps after {shrinker.tries} tries: {out}\n{case_text(small)}")
    return 0


def main():
    args = parse_args()
    for name, value in SANITIZER_ENV.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("HERALD_BIN", "build-asan/gateway/herald")
    if not os.path.exists(harness.herald_bin()):
        print(f"live_fuzz: no gateway at {harness.herald_bin()} (set HERALD_BIN, or build it:"
              " bash deploy/build.sh build-asan -DHERALD_SANITIZE=ON"
              " -DCMAKE_BUILD_TYPE=Debug)", file=sys.stderr)
        return 2
    harness.raise_nofile(4096)
    # ctest and CI stop a run with SIGTERM: unwind so that every process is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = tempfile.mkdtemp(prefix="herald-livefuzz-")
    target = Target(workdir, args.hang_seconds, args.canary_seconds)
    try:
        try:
            target.start()
        except (OSError, AssertionError, RuntimeError, subprocess.SubprocessError) as err:
            print(f"live_fuzz: cannot start redis-server and PostgreSQL: {err}", file=sys.stderr)
            return 2
        if args.replay:
            return replay(args, target)
        if args.minimize:
            return minimize(args, target)
        return fuzz(args, target)
    except KeyboardInterrupt:
        print("live_fuzz: interrupted", file=sys.stderr)
        return 130
    finally:
        target.close()
        if args.keep_tmp:
            print(f"live_fuzz: processes' files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
