#!/usr/bin/env python3
"""Measures onnxruntime on the benchmark models: the reference beside tract (docs/performance.md).

What it does: for every model and every input size in DIR/models.json (written by
scripts/make_bench_models.py), creates an onnxruntime InferenceSession (CPUExecutionProvider) from
the model's bytes in two modes:

- single:   intra_op_num_threads = 1, inter_op_num_threads = 1, ORT_SEQUENTIAL (one core, like
            one tract worker);
- default:  the library's defaults (a thread pool over every core);

feeds a seeded random f32 input of the listed size, warms up, then runs back to back for S seconds
at concurrency 1, and records per-run latency (p50/p90/p99, nearest rank, ms), throughput (runs/s)
and the session creation time (load_ms). Every answer's output names and shapes are checked once,
and echo's values (y = 2x + 1) too. Prints a table and writes JSON:

  {"onnxruntime": "1.x.y", "python": "3.11.7", "cpu": "<model name>", "cores": 2,
   "results": [{"model": "conv", "input_bytes": N, "mode": "single"|"default", "runs": n,
                "p50_ms": x, "p90_ms": x, "p99_ms": x, "throughput_rps": x, "load_ms": x}]}

What it does not do: run tract or the sealed stack (`sealed-bench compare` does, and reads this
file with --ort-json), measure concurrency above 1, or pin CPUs. Figures depend on machine load:
run it on an otherwise idle machine.

Usage: pip install -r scripts/requirements-bench.txt &&
       python3 scripts/bench_onnxruntime.py --models-dir target/bench-models \\
           --json target/bench-results/onnxruntime.json [--seconds S] [--quick] [--models a,b]
"""

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parent.parent
SEED = 0
DTYPES = {"f32": np.float32}
MODES = ["single", "default"]


def session_options(mode):
    opts = ort.SessionOptions()
    if mode == "single":
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return opts


def input_shape(entry, input_bytes):
    """The concrete input shape for one size: fixed shapes as listed, one symbolic dim filled in."""
    shape = entry["input"]["shape"]
    item = np.dtype(DTYPES[entry["input"]["dtype"]]).itemsize
    if input_bytes % item:
        sys.exit(f"{entry['id']}: input_bytes {input_bytes} is not a multiple of {item}")
    elements = input_bytes // item
    fixed = math.prod(d for d in shape if isinstance(d, int))
    symbolic = [i for i, d in enumerate(shape) if not isinstance(d, int)]
    if not symbolic:
        if fixed != elements:
            sys.exit(f"{entry['id']}: input_bytes {input_bytes} does not match shape {shape}")
        return list(shape)
    if len(symbolic) != 1 or elements % fixed:
        sys.exit(f"{entry['id']}: cannot size shape {shape} to {input_bytes} bytes")
    concrete = list(shape)
    concrete[symbolic[0]] = elements // fixed
    return concrete


def percentile(sorted_ms, p):
    """Nearest-rank percentile: the smallest sample with at least p % of samples at or below it."""
    rank = max(1, math.ceil(p / 100.0 * len(sorted_ms)))
    return sorted_ms[rank - 1]


def check_outputs(entry, session, feed, outputs):
    names = [o.name for o in session.get_outputs()]
    if names != entry["outputs"]:
        sys.exit(f"{entry['id']}: outputs {names}, models.json says {entry['outputs']}")
    if any(not np.all(np.isfinite(o)) for o in outputs if np.issubdtype(o.dtype, np.floating)):
        sys.exit(f"{entry['id']}: non-finite output")
    if entry["id"] == "echo":
        x = feed[entry["input"]["name"]]
        if not np.array_equal(outputs[0], x * np.float32(2) + np.float32(1)):
            sys.exit("echo: y != 2x + 1")


def bench_one(entry, model_bytes, input_bytes, mode, seconds):
    t0 = time.perf_counter()
    session = ort.InferenceSession(
        model_bytes, session_options(mode), providers=["CPUExecutionProvider"]
    )
    load_ms = (time.perf_counter() - t0) * 1e3

    shape = input_shape(entry, input_bytes)
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal(shape).astype(DTYPES[entry["input"]["dtype"]])
    feed = {entry["input"]["name"]: x}
    check_outputs(entry, session, feed, session.run(None, feed))

    # Warm-up: a fifth of the measuring time, at least 3 runs (caches, allocator arena, threads).
    warm_until = time.perf_counter() + seconds / 5
    runs = 0
    while runs < 3 or time.perf_counter() < warm_until:
        session.run(None, feed)
        runs += 1

    latencies = []
    start = time.perf_counter()
    end = start + seconds
    now = start
    while now < end or not latencies:
        session.run(None, feed)
        after = time.perf_counter()
        latencies.append((after - now) * 1e3)
        now = after
    elapsed = now - start
    latencies.sort()
    return {
        "model": entry["id"],
        "input_bytes": input_bytes,
        "mode": mode,
        "runs": len(latencies),
        "p50_ms": round(percentile(latencies, 50), 4),
        "p90_ms": round(percentile(latencies, 90), 4),
        "p99_ms": round(percentile(latencies, 99), 4),
        "throughput_rps": round(len(latencies) / elapsed, 2),
        "load_ms": round(load_ms, 3),
    }


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def print_table(report):
    print(
        f"onnxruntime {report['onnxruntime']}, Python {report['python']}, "
        f"{report['cpu']}, {report['cores']} cores"
    )
    header = [
        "model", "input bytes", "mode", "runs", "p50 ms", "p90 ms", "p99 ms", "runs/s", "load ms",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(" --- " for _ in header) + "|")
    for r in report["results"]:
        row = [
            r["model"], f"{r['input_bytes']:,}", r["mode"], str(r["runs"]),
            f"{r['p50_ms']:.3f}", f"{r['p90_ms']:.3f}", f"{r['p99_ms']:.3f}",
            f"{r['throughput_rps']:.1f}", f"{r['load_ms']:.1f}",
        ]
        print("| " + " | ".join(row) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=REPO / "target" / "bench-models",
                        help="directory with models.json (default target/bench-models)")
    parser.add_argument("--json", type=Path, required=True, help="write the results here")
    parser.add_argument(
        "--seconds", type=float, default=None, help="measuring time per cell (default 3)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="0.5 s per cell (unless --seconds is given)"
    )
    parser.add_argument("--models", default=None, help="comma-separated model ids (default: all)")
    args = parser.parse_args()
    seconds = args.seconds if args.seconds is not None else (0.5 if args.quick else 3.0)
    if not seconds > 0:
        sys.exit("--seconds must be > 0")

    index_path = args.models_dir / "models.json"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError) as e:
        sys.exit(f"cannot read {index_path}: {e} (run scripts/make_bench_models.py first)")
    wanted = set(args.models.split(",")) if args.models else None
    entries = [m for m in index["models"] if wanted is None or m["id"] in wanted]
    if wanted is not None and {m["id"] for m in entries} != wanted:
        sys.exit(f"unknown model ids: {sorted(wanted - {m['id'] for m in entries})}")

    ort.set_default_logger_severity(3)  # warnings about unused initializers etc. are noise here
    results = []
    for entry in entries:
        model_bytes = (args.models_dir / entry["file"]).read_bytes()
        for input_bytes in entry["input_bytes"]:
            for mode in MODES:
                r = bench_one(entry, model_bytes, input_bytes, mode, seconds)
                print(f"{r['model']} {r['input_bytes']} B {r['mode']}: p50 {r['p50_ms']:.3f} ms, "
                      f"{r['throughput_rps']:.1f} runs/s", file=sys.stderr)
                results.append(r)

    report = {
        "onnxruntime": ort.__version__,
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cores": cores(),
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print_table(report)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
