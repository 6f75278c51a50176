#!/usr/bin/env python3
"""Measures, on this machine, which convolutions tract's direct spatial kernel should take.

What it does: writes 86 one-convolution ONNX models (3 x 3 kernels over 1 ... 64 input channels
and 16 ... 128 output channels on 128 x 128 and 256 x 256 inputs, plus 5 x 5, 7 x 7 and
stride-2 ones: every one a shape tract 0.23 plans as a direct spatial convolution) into DIR
(default target/conv-sweep) with their models.json; runs `sealed-bench tract` on them three
times, planned three ways -- as the engine plans them (sealed_plan: direct only up to
DIRECT_SPATIAL_MAX_INPUTS inputs per output point, or under 32 output channels but for 16-31
with >= 144 inputs per point), as tract alone
plans them (TRACT_DISABLE_DIRECT_SPATIAL=false), and with no direct convolution at all (=true) --
and prints one row per model: inputs per point, the three p50s, and whether the engine's rule
picked the faster of direct and im2col, then the totals. docs/performance.md (round 11) holds the
run on the Intel Xeon VM the rule was drawn from; run it on a Nitro instance type before relying
on the rule there (the enclave's `--tract-knob TRACT_DISABLE_DIRECT_SPATIAL=...` overrides it).

What it does not do: build anything (it needs target/release/sealed-bench: `cargo build --release
-p sealed-bench`), or judge a target. Figures are `sealed-bench tract --quick` p50s (0.3 s, >= 5
runs per model): differences under ~10 % are noise on a shared machine.

Usage: pip install -r scripts/requirements-bench.txt &&
       python3 scripts/conv_sweep.py [--out DIR] [--bench target/release/sealed-bench]
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parent.parent
# As enclave/plan/src/lib.rs: direct kept up to this many inputs per output point, or below
# NARROW_FROM_CHANNELS output channels.
DIRECT_SPATIAL_MAX_INPUTS = 40
NARROW_FROM_CHANNELS = 32
THIN_NARROW_FROM_INPUTS = 144
THIN_NARROW_FROM_CHANNELS = 16


def shapes():
    """(cin, cout, hw, kernel, stride) of every model."""
    out = []
    for hw in (128, 256):
        for cout in (16, 32, 64):
            for cin in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64):
                out.append((cin, cout, hw, 3, 1))
    out += [(cin, 128, 128, 3, 1) for cin in (3, 4, 5, 6, 7, 8, 16)]
    out += [(cin, cout, 128, 5, 1) for cin in (1, 2, 3) for cout in (32, 64)]
    out += [(cin, 64, 256, 3, 2) for cin in (3, 8, 32)]
    out += [(3, 64, 128, 7, 1), (5, 32, 128, 3, 1), (5, 64, 128, 3, 1), (6, 48, 160, 3, 1)]
    return out


def write_models(out_dir):
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    models = []
    for cin, cout, hw, k, stride in shapes():
        name = f"c{cin}_o{cout}_h{hw}_k{k}_s{stride}"
        pad = k // 2
        hw_out = (hw + 2 * pad - k) // stride + 1
        w = (rng.standard_normal((cout, cin, k, k)) * 0.1).astype(np.float32)
        b = np.zeros(cout, np.float32)
        node = helper.make_node(
            "Conv", ["x", "w", "b"], ["y"], kernel_shape=[k, k], pads=[pad] * 4,
            strides=[stride] * 2,
        )
        graph = helper.make_graph(
            [node], name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, hw, hw])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, hw_out, hw_out])],
            initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        file = f"{name}.onnx"
        onnx.save(model, out_dir / file)
        models.append({
            "id": name, "file": file, "bytes": (out_dir / file).stat().st_size,
            "input": {"name": "x", "dtype": "f32", "shape": [1, cin, hw, hw]},
            "outputs": ["y"], "input_bytes": [4 * cin * hw * hw], "batch_dim": None,
            "sweep": {"cin": cin, "cout": cout, "hw": hw, "kernel": k, "stride": stride,
                      "inputs_per_point": cin * k * k},
        })
    (out_dir / "models.json").write_text(json.dumps(
        {"generator": "scripts/conv_sweep.py (seed 0)", "models": models}, indent=1))
    return models


def run_bench(bench, models_dir, knob, json_out):
    env = dict(os.environ)
    env.pop("TRACT_DISABLE_DIRECT_SPATIAL", None)
    if knob is not None:
        env["TRACT_DISABLE_DIRECT_SPATIAL"] = knob
    cmd = [str(bench), "tract", "--models-dir", str(models_dir), "--threads", "1",
           "--concurrency", "1", "--batches", "1", "--quick", "--ort-json", "/nonexistent",
           "--json", str(json_out)]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    report = json.loads(Path(json_out).read_text())
    return {m["model"]: next(t["p50_ms"] for t in m["threads"] if t["threads"] == 1)
            for m in report["models"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "target" / "conv-sweep")
    ap.add_argument("--bench", type=Path, default=REPO / "target" / "release" / "sealed-bench")
    args = ap.parse_args()
    if not args.bench.exists():
        sys.exit(f"conv_sweep.py: {args.bench} not found: cargo build --release -p sealed-bench")
    models = write_models(args.out)
    ours = run_bench(args.bench, args.out, None, args.out / "engine.json")
    tracts = run_bench(args.bench, args.out, "false", args.out / "tract.json")
    im2col = run_bench(args.bench, args.out, "true", args.out / "im2col.json")

    print("| model | inputs/point | out ch | tract (direct) ms | im2col ms | engine ms | "
          "engine's plan | faster one |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    right = 0
    totals = [0.0, 0.0, 0.0, 0.0]
    for m in models:
        s, name = m["sweep"], m["id"]
        thin_but_wide = (s["cout"] >= THIN_NARROW_FROM_CHANNELS
                         and s["inputs_per_point"] >= THIN_NARROW_FROM_INPUTS)
        direct = s["inputs_per_point"] <= DIRECT_SPATIAL_MAX_INPUTS or (
            s["cout"] < NARROW_FROM_CHANNELS and not thin_but_wide)
        d, i, e = tracts[name], im2col[name], ours[name]
        faster = "direct" if d <= i else "im2col"
        chosen = "direct" if direct else "im2col"
        right += chosen == faster
        for ix, v in enumerate((d, i, e, min(d, i))):
            totals[ix] += v
        print(f"| {name} | {s['inputs_per_point']} | {s['cout']} | {d:.2f} | {i:.2f} | {e:.2f} | "
              f"{chosen} | {faster} |")
    print(f"\nthe engine's rule picked the faster plan for {right} of {len(models)} models; "
          f"total ms: tract {totals[0]:.1f}, im2col everywhere {totals[1]:.1f}, "
          f"engine {totals[2]:.1f}, faster of the two each time {totals[3]:.1f}")


if __name__ == "__main__":
    main()
