#!/usr/bin/env python3
"""Release files agree with the code: LICENSE exists and the README names it; the newest
CHANGELOG.md entry is the version the binary reports (`herald --version`, argv[1]).
Exit status 1 and one line per disagreement."""
import os
import re
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def main():
    errors = []
    herald = sys.argv[1]
    out = subprocess.run([herald, "--version"], capture_output=True, text=True, timeout=10)
    m = re.fullmatch(r"herald (\S+)\n", out.stdout)
    if out.returncode != 0 or not m:
        errors.append(f"`herald --version` printed {out.stdout!r} (exit {out.returncode})")
        version = None
    else:
        version = m.group(1)
    with open(os.path.join(ROOT, "CHANGELOG.md")) as f:
        entries = re.findall(r"^## (\S+)", f.read(), re.M)
    if not entries:
        errors.append("CHANGELOG.md has no `## <version>` entry")
    elif version and entries[0] != version:
        errors.append(f"CHANGELOG.md's newest entry is {entries[0]}, the binary says {version}")
    license_path = os.path.join(ROOT, "LICENSE")
    if not os.path.exists(license_path):
        errors.append("no LICENSE file")
    else:
        with open(license_path) as f:
            first = f.readline().strip()
        with open(os.path.join(ROOT, "README.md")) as f:
            readme = f.read()
        if first.split()[0] not in readme or "LICENSE" not in readme:
            errors.append(f"README.md does not name the licence ({first}) and LICENSE")
    for e in errors:
        print(e)
    if not errors:
        print(f"version {version}: CHANGELOG, LICENSE and README agree")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
