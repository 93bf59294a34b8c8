"""Soak: the model-based rules test (tests/sync/test_model_rules.py) with thousands of examples.

Run: python bench/soak_rules.py [--examples 2000] [--steps 40] [--skip INVARIANT,...]
                                [--shrink-seconds 300]
Runs that test in a pytest subprocess (so nothing here imports test code) with a larger budget
and prints how many examples and steps it ran, how many invariant checks passed, and what it
found: per invariant, how many checks failed and the first message, then pytest's report of the
shrunk step sequence and the command that replays each failure. `--skip` counts an invariant's
failures without stopping on them, to look past a known one. Exits 1 when anything was found.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST = "tests/sync/test_model_rules.py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=40, help="steps per example (at most)")
    parser.add_argument("--skip", default="", help="invariants counted but not raised")
    parser.add_argument("--shrink-seconds", type=int, default=300)
    parser.add_argument("--verbose", action="store_true", help="show pytest's whole output")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="stagemap-soak-") as tmp:
        report = Path(tmp) / "report.json"
        env = {
            **os.environ,
            "STAGEMAP_MODEL_EXAMPLES": str(args.examples),
            "STAGEMAP_MODEL_STEPS": str(args.steps),
            "STAGEMAP_MODEL_SHRINK_SECONDS": str(args.shrink_seconds),
            "STAGEMAP_MODEL_SKIP": args.skip,
            "STAGEMAP_MODEL_RANDOM": "1",
            "STAGEMAP_MODEL_REPORT": str(report),
        }
        print(f"soak: {args.examples} examples of at most {args.steps} steps ({TEST})", flush=True)
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", TEST, "-q", "-p", "no:logging"],
            cwd=ROOT, env=env, capture_output=True, text=True,
        )
        elapsed = time.monotonic() - started
        summary = json.loads(report.read_text()) if report.exists() else {}

    print(
        f"ran {summary.get('examples', '?')} examples, {summary.get('steps', '?')} steps, "
        f"{summary.get('checks', '?')} invariant checks in {elapsed:.0f} s "
        "(examples and steps include Hypothesis's shrinking replays)"
    )
    steps = summary.get("steps_by_rule", {})
    if steps:
        print("steps by kind: " + ", ".join(f"{name} {count}" for name, count in steps.items()))
    failures = summary.get("failures", {})
    if not failures and result.returncode == 0:
        print("found: nothing; every invariant held")
        return 0
    print("found:")
    for name, count in sorted(failures.items()):
        first = summary.get("first_failure", {}).get(name, "")
        print(f"  {name}: {count} failed check(s); first: {first}")
    output = result.stdout + result.stderr
    if args.verbose:
        print(output)
    else:
        # The shrunk sequence Hypothesis prints, and the error it raised.
        keep = [line for line in output.splitlines()
                if line.startswith(("E ", "E\t", "state", "Falsifying")) or "Invariant_" in line]
        print("\n".join(keep[-120:]) or output[-5000:])
    for blob in re.findall(r"@reproduce_failure\('[^']+', b'([^']+)'\)", output):
        print(f"replay: STAGEMAP_MODEL_RANDOM=1 STAGEMAP_MODEL_STEPS={args.steps} "
              f"STAGEMAP_MODEL_REPRODUCE='{blob}' .venv/bin/python -m pytest {TEST}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
