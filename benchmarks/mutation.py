"""Mutation testing of the engine (costsim/simulator/) with mutmut. A script, not a test: CI
does not run it (it takes minutes).

    pip install -e '.[test,mutation]'
    python benchmarks/mutation.py                  # run mutmut (2 workers), then report
    python benchmarks/mutation.py --max-children 8 # more workers
    python benchmarks/mutation.py --report-only    # report on the last run in mutants/
    python benchmarks/mutation.py --clean          # start from a fresh mutants/ copy
    python benchmarks/mutation.py --diffs          # also print the diff of each unexplained survivor

What is mutated and which tests run is configured in pyproject.toml, [tool.mutmut]: only
costsim/simulator/*, against the engine tests (no CLI, README or torch tests). mutmut copies
costsim/ (package data included) and tests/ into mutants/ and puts mutants/ first on
sys.path, so the tests import the mutated copy, not the editable install.

The report: mutants total, killed, survived, timeout, no tests; per file; and
score = killed / (total - equivalent). Equivalent mutants (a change no test can see, because
the program computes the same thing) are listed with a one-line reason in
benchmarks/mutation_equivalent.txt, one per line: ``<mutant name>  <reason>``. mutmut names a
mutant after its function and a number (``costsim.simulator.kv.x_cached_tokens__mutmut_3``);
the numbers change when a function's code changes, so the report flags listed names that no
longer exist or that are now killed. ``mutmut show <name>`` prints one mutant's diff.

Exit status: 0 when the score reaches --min-score (default 0.90), else 1.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "mutants"
EQUIVALENT = Path(__file__).resolve().with_name("mutation_equivalent.txt")

# mutmut 3.8.1 exit codes -> status (mutmut.stats.status_by_exit_code; copied so that
# --report-only works without importing mutmut's CLI)
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
          35: "suspicious", 36: "timeout", 37: "caught by type check", -24: "timeout", 24: "timeout",
          152: "timeout", 255: "timeout", -11: "segfault", -9: "segfault", None: "not checked",
          2: "interrupted"}


def status_of(code) -> str:
    return STATUS.get(code, "suspicious")


def load_results() -> dict[str, tuple[str, str]]:
    """{mutant name: (source file, status)} from mutmut's per-file .meta files."""
    out = {}
    for meta in sorted(MUTANTS.rglob("*.py.meta")):
        src = meta.relative_to(MUTANTS).as_posix()[: -len(".meta")]
        data = json.loads(meta.read_text())
        for name, code in data.get("exit_code_by_key", {}).items():
            out[name] = (src, status_of(code))
    return out


def load_equivalent(path: Path) -> dict[str, str]:
    eq = {}
    if not path.exists():
        return eq
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, reason = line.partition(" ")
        eq[name] = reason.strip()
    return eq


def run_mutmut(max_children: int, names: list[str]) -> float:
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *names]
    print("$", " ".join(cmd), flush=True)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT)
    wall = time.monotonic() - t0
    if proc.returncode not in (0, 1):  # mutmut exits 1 from its clean-test check only
        print(f"mutmut run exited with {proc.returncode}", file=sys.stderr)
    return wall


def report(results: dict[str, tuple[str, str]], equivalent: dict[str, str], diffs: bool) -> float:
    if not results:
        print("no mutmut results in mutants/ (run without --report-only first)")
        return 0.0
    per_file: dict[str, Counter] = defaultdict(Counter)
    for name, (src, status) in results.items():
        per_file[src][status] += 1
        per_file[src]["total"] += 1
        if name in equivalent:
            per_file[src]["equivalent"] += 1
    cols = ["total", "killed", "survived", "timeout", "no tests", "equivalent"]
    width = max(len(f) for f in per_file) + 2
    print()
    print("file".ljust(width) + "".join(c.rjust(11) for c in cols) + "score".rjust(9))
    total = Counter()
    for src in sorted(per_file):
        c = per_file[src]
        total.update(c)
        denom = c["total"] - c["equivalent"]
        print(src.ljust(width) + "".join(str(c[k]).rjust(11) for k in cols)
              + (f"{c['killed'] / denom:9.1%}" if denom else "      n/a"))
    denom = total["total"] - total["equivalent"]
    score = total["killed"] / denom if denom else 0.0
    print("ALL".ljust(width) + "".join(str(total[k]).rjust(11) for k in cols) + f"{score:9.1%}")
    other = {k: v for k, v in total.items() if k not in cols}
    if other:
        print("other statuses:", dict(other))
    print(f"\nscore = killed / (total - equivalent) = {total['killed']} / ({total['total']} - "
          f"{total['equivalent']}) = {score:.1%}")

    stale = [n for n in equivalent if n not in results]
    now_killed = [n for n in equivalent if n in results and results[n][1] == "killed"]
    if stale:
        print(f"\n{len(stale)} listed equivalent mutants do not exist any more (renumbered? update "
              f"{EQUIVALENT.name}):")
        for n in stale:
            print("   ", n)
    if now_killed:
        print(f"\n{len(now_killed)} listed equivalent mutants are killed now (not equivalent; remove them):")
        for n in now_killed:
            print("   ", n)

    unexplained = defaultdict(list)
    for name, (src, status) in sorted(results.items()):
        if status != "killed" and name not in equivalent:
            unexplained[status].append(name)
    for status, names in sorted(unexplained.items()):
        print(f"\n{status}, not listed as equivalent ({len(names)}):")
        for n in names:
            print("   ", n)
            if diffs:
                d = subprocess.run([sys.executable, "-m", "mutmut", "show", n], cwd=ROOT, capture_output=True, text=True)
                print("      " + "\n      ".join(d.stdout.strip().splitlines()[1:]))
    return score


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-children", type=int, default=2, help="parallel mutmut workers (default 2)")
    ap.add_argument("--report-only", action="store_true", help="do not run mutmut; report on mutants/")
    ap.add_argument("--clean", action="store_true", help="delete mutants/ first (a full, fresh run)")
    ap.add_argument("--diffs", action="store_true", help="print the diff of each unexplained survivor")
    ap.add_argument("--equivalent", type=Path, default=EQUIVALENT, help="list of equivalent mutants")
    ap.add_argument("--min-score", type=float, default=0.90)
    ap.add_argument("mutants", nargs="*", help="only (re)run these mutant names (mutmut globs allowed)")
    args = ap.parse_args(argv)
    if args.clean and MUTANTS.exists():
        shutil.rmtree(MUTANTS)
    wall = None
    if not args.report_only:
        wall = run_mutmut(args.max_children, args.mutants)
    score = report(load_results(), load_equivalent(args.equivalent), args.diffs)
    if wall is not None:
        print(f"\nmutmut wall time: {wall / 60:.1f} min with {args.max_children} workers")
    ok = score >= args.min_score
    print(f"{'PASS' if ok else 'FAIL'}: score {score:.1%} {'>=' if ok else '<'} {args.min_score:.0%}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
