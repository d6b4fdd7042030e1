"""Benchmark: `microtvm tune --jobs N` against `--jobs 1` on the same model and board, in the
same run (these machines are noisy: only the ratio means anything).

    .venv/bin/python benchmarks/tune_jobs.py [--model PATH] [--jobs 2] [--trials 3]

Default model: MLPerf Tiny's KWS int8 (../shared/models/mlperf-tiny/kws_ref_model.tflite), on the
emulated mps2-an386. Both runs must record the same measurements (exact under QEMU -icount);
the figure is candidates measured per minute, and the speed-up.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KWS = REPO.parent / "shared" / "models" / "mlperf-tiny" / "kws_ref_model.tflite"


def tune(model: Path, records: Path, jobs: int, trials: int) -> tuple:
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "microtvm_registry", "tune", str(model), "--board", "mps2-an386",
                          "--trials", str(trials), "--records", str(records), "--jobs", str(jobs), "--json"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"tune --jobs {jobs} failed: {out.stderr.strip()}")
    seconds = time.monotonic() - started
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    return seconds, {(r["workload"]["hash"], r["description"], r["count"]) for r in lines}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(KWS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one, one_set = tune(Path(args.model), Path(tmp) / "one.jsonl", 1, args.trials)
        many, many_set = tune(Path(args.model), Path(tmp) / "many.jsonl", args.jobs, args.trials)
    n = len(one_set)
    print(f"tune {Path(args.model).name} on mps2-an386, {args.trials} trials per kernel: {n} candidates")
    print(f"--jobs 1: {one:.1f} s ({n / one * 60:.1f} per minute)")
    print(f"--jobs {args.jobs}: {many:.1f} s ({n / many * 60:.1f} per minute), {one / many:.2f}x the throughput")
    print(f"same measurements: {'yes' if one_set == many_set else 'NO'}")
    return 0 if one_set == many_set else 1


if __name__ == "__main__":
    sys.exit(main())
