"""What a run found: one entry per distinct failure (by signature), its case saved as JSON."""

import hashlib
import json
import os
import re

TRANSCRIPT_LINES = 40


def case_text(case):
    """A case as JSON with one step per line, for files and for the terminal."""
    head = {k: v for k, v in case.items() if k != "steps"}
    steps = ",\n".join("    " + json.dumps(s, ensure_ascii=True) for s in case["steps"])
    # the head's members, then "steps" as its last member
    text = json.dumps(head, indent=2, ensure_ascii=True)[:-2] + ",\n" if head else "{\n"
    return text + f'  "steps": [\n{steps}\n  ]\n}}\n'


def case_size(case):
    return len(json.dumps(case["steps"]))


def signature_slug(signature):
    """A file name for a signature: readable words and a short hash that keeps it unique."""
    words = re.sub(r"[^a-z0-9]+", "-", signature.lower()).strip("-")[:60]
    return f"{words}-{hashlib.sha1(signature.encode()).hexdigest()[:8]}"


class Findings:
    """Distinct failures by signature. The first case of each is printed and saved in
    `crash_dir`; a later, smaller case with the same signature replaces the saved one."""

    def __init__(self, crash_dir):
        self.crash_dir = crash_dir
        self.entries = {}  # signature -> {"count", "path", "size", "kind"}

    def __bool__(self):
        return bool(self.entries)

    def add(self, failure, case, transcript, previous=None):
        """Records `failure` of `case`. `previous`: the seed of the case before it on the
        same gateway, which may have left the state that failed (a held forged envelope)."""
        record = dict(case)
        if previous:
            record["previous"] = previous
        record["failure"] = {"kind": failure.kind, "signature": failure.signature,
                             "detail": failure.detail}
        record["transcript"] = transcript[-TRANSCRIPT_LINES:]
        entry = self.entries.get(failure.signature)
        if entry is None:
            path = self._save(record, signature_slug(failure.signature))
            self.entries[failure.signature] = {"count": 1, "path": path, "kind": failure.kind,
                                               "size": case_size(case)}
            print(f"\n=== NEW FAILURE ({failure.kind}): {failure.signature}\n"
                  f"{failure.detail}\n--- case ({path}):\n{case_text(case)}", flush=True)
            return
        entry["count"] += 1
        if case_size(case) < entry["size"]:
            self._save(record, os.path.splitext(os.path.basename(entry["path"]))[0])
            entry["size"] = case_size(case)
        print(f"    again: {failure.signature} (case {case['seed']}, {entry['count']} times)",
              flush=True)

    def _save(self, record, name):
        os.makedirs(self.crash_dir, exist_ok=True)
        path = os.path.join(self.crash_dir, name + ".json")
        with open(path, "w") as f:
            f.write(case_text(record))
        return path

    def summary(self):
        if not self.entries:
            return "no failures"
        lines = [f"{len(self.entries)} distinct failure(s):"]
        for signature, e in sorted(self.entries.items(), key=lambda kv: -kv[1]["count"]):
            lines.append(f"  {e['count']:4d} x {e['kind']:9s} {signature}\n"
                         f"                   {e['path']}")
        return "\n".join(lines)
