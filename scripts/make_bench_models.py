#!/usr/bin/env python3
"""Writes the benchmark models (docs/performance.md) and their index, models.json.

What it does: builds three deterministic ONNX models (weights from a fixed-seed NumPy generator)
by writing each graph directly with onnx.helper (opset 13, IR 8), using only operators tract-onnx
0.23 implements (Conv, Relu, MaxPool, GlobalAveragePool, Flatten, Gemm, MatMul, Add, Mul); checks
each with onnx.checker (full check), runs it with onnx's reference evaluator on one seeded input and
compares that with an independent float64 NumPy forward pass; copies the bundled digits model; and
writes into DIR (default target/bench-models):

- conv.onnx     small CNN, ~6.7 MB of f32 weights: input "input" f32 [1, 3, 128, 128]; five stages
                of Conv 3×3 + Relu (two in the first two stages) and MaxPool 2×2 (32 … 512
                channels), GlobalAveragePool, Flatten, Gemm; output "logits" f32 [1, 100]
                ([batch, ...] with --symbolic-conv).
                ~1.2 GFLOP: 15–25 ms per inference with onnxruntime on one core here.
- large.onnx    ~105 MB of f32 weights: input "input" f32 [batch, 2560]; 4 × (MatMul 2560×2560 +
                Add) with Relu between; output "output" f32 [batch, 2560]. Memory-bound (every inference
                reads all weights, ~6–11 ms); it exists to measure model loading and unsealing.
- echo.onnx     input "x" f32 [n] (symbolic n), output "y" f32 [n] = x * 2 + 1 (Mul, Add): the
                payload-size sweep, 1 KB … 16 MB.
- digits.onnx   copy of sim/assets/digits/digits.onnx (input "input" f32 [batch, 64]).
- models.json   per model: file, size, SHA-384, input name/dtype/shape (the shape the benchmarks
                send: [1, ...] for the batched models), output names, the input sizes in bytes the
                benchmarks run (fixed-shape models: the one size), and batch_dim: the dim_param
                that axis 0 of every input and every output shares (what the enclave's
                `--dynamic-batch` needs), or null.

"batch" is a symbolic dimension (ONNX dim_param), as exported models declare it: the benchmarks
send one row, and the enclave's dynamic batching may stack queued requests along it. A model
written with it is also run on two rows and each row checked against that row's reference alone
(no mixing along axis 0). conv keeps a fixed batch of 1 unless --symbolic-conv: with a symbolic
batch tract 0.23 plans its convolutions as eager Im2col + MatMul instead of DirectSpatialConv /
LazyIm2col and one inference at B = 1 costs ~20-35 % more CPU (measured with `sealed-bench
tract`), and batching does not pay for conv anyway (docs/performance.md). --fixed-batch writes
large (and conv) with axis 0 fixed to 1: the bytes and hashes of rounds 1 and 2.

What it does not do: run any benchmark (scripts/bench_onnxruntime.py and `sealed-bench` do), or
load the models with tract (the Rust benchmarks do, and fail loudly if an operator is missing).
The files are large and are never committed: they live under target/. Re-running it with the
pinned versions (scripts/requirements-bench.txt) rewrites the same bytes.

Usage: pip install -r scripts/requirements-bench.txt &&
       python3 scripts/make_bench_models.py [--out DIR] [--fixed-batch | --symbolic-conv]
"""

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "target" / "bench-models"
DIGITS = REPO / "sim" / "assets" / "digits" / "digits.onnx"
GENERATOR = "scripts/make_bench_models.py"
SEED = 0
# Opset 13 is inside the range tract tests against (9..=18); IR 8 is what that opset shipped with.
OPSET = 13
IR_VERSION = 8
# The operators tract-onnx 0.23 implements that these graphs may use; anything else is refused here
# so that a model never reaches the Rust benchmarks only to fail there.
ALLOWED_OPS = {
    "Conv", "Relu", "MaxPool", "GlobalAveragePool", "Flatten", "Gemm", "MatMul", "Add", "Mul",
}

CONV_HW = 128
# (output channels, 3×3 convolutions) per stage; every stage ends with a 2×2 max-pool. Sized so
# that one inference is ~1.2 GFLOP (10–30 ms on one core) with ~6.7 MB of weights.
CONV_STAGES = [(32, 2), (64, 2), (128, 1), (256, 1), (512, 1)]
CONV_CLASSES = 100
LARGE_DIM = 2560
LARGE_LAYERS = 4
# 1 KB … 16 MB; 16,000,000 bytes (4,000,000 f32) is the largest input the wire limits admit with
# room for CBOR + HPKE overhead (MAX_TENSOR_BYTES = 16 MiB).
ECHO_INPUT_BYTES = [1024, 16384, 262144, 1048576, 4194304, 16000000]


def make_model(graph, doc):
    model = helper.make_model(
        graph,
        producer_name=GENERATOR,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
    )
    model.doc_string = doc
    onnx.checker.check_model(model, full_check=True)
    ops = {node.op_type for node in model.graph.node}
    if not ops <= ALLOWED_OPS:
        sys.exit(f"{graph.name}: operators outside the tract-onnx set: {sorted(ops - ALLOWED_OPS)}")
    return model


def he_normal(rng, shape, fan_in):
    """He initialisation: activations stay O(1) through ReLU layers (outputs neither 0 nor inf)."""
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def build_conv(rng, batch):
    initializers, nodes, params = [], [], []
    x, cin = "input", 3
    for stage, (cout, convs) in enumerate(CONV_STAGES):
        for j in range(convs):
            i = f"{stage}_{j}"
            w = he_normal(rng, (cout, cin, 3, 3), cin * 9)
            b = (rng.standard_normal(cout) * 0.01).astype(np.float32)
            params.append(("conv", w, b))
            initializers += [
                numpy_helper.from_array(w, f"conv{i}_w"),
                numpy_helper.from_array(b, f"conv{i}_b"),
            ]
            nodes += [
                helper.make_node(
                    "Conv", [x, f"conv{i}_w", f"conv{i}_b"], [f"conv{i}"], name=f"conv{i}",
                    kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1],
                ),
                helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"], name=f"relu{i}"),
            ]
            x, cin = f"relu{i}", cout
        nodes.append(
            helper.make_node(
                "MaxPool", [x], [f"pool{stage}"], name=f"pool{stage}",
                kernel_shape=[2, 2], strides=[2, 2],
            )
        )
        params.append(("pool", None, None))
        x = f"pool{stage}"
    fc_w = he_normal(rng, (CONV_CLASSES, cin), cin)
    fc_b = (rng.standard_normal(CONV_CLASSES) * 0.01).astype(np.float32)
    params.append(("fc", fc_w, fc_b))
    initializers += [numpy_helper.from_array(fc_w, "fc_w"), numpy_helper.from_array(fc_b, "fc_b")]
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "bench_conv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, CONV_HW, CONV_HW])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, CONV_CLASSES])],
        initializer=initializers,
    )
    layout = ", ".join(f"{n}x(Conv3x3 {c}+Relu)+MaxPool2" for c, n in CONV_STAGES)
    doc = f"benchmark CNN: {layout}, GlobalAveragePool, Gemm {CONV_CLASSES}; seed {SEED}"
    model = make_model(graph, doc)
    return model, params


def conv_forward(params, x):
    """The conv graph in NumPy, float64 (an independent reference for the float32 graph)."""
    h = x.astype(np.float64)
    for kind, w, b in params:
        if kind == "conv":
            p = np.pad(h, ((0, 0), (0, 0), (1, 1), (1, 1)))
            win = sliding_window_view(p, (3, 3), axis=(2, 3))  # [n, cin, H, W, 3, 3]
            h = np.einsum("nchwij,ocij->nohw", win, w.astype(np.float64), optimize=True)
            h = np.maximum(h + b[None, :, None, None], 0.0)
        elif kind == "pool":
            n, c, hh, ww = h.shape
            h = h.reshape(n, c, hh // 2, 2, ww // 2, 2).max(axis=(3, 5))
        else:
            h = h.mean(axis=(2, 3)) @ w.T.astype(np.float64) + b
    return h


def build_large(rng, batch):
    initializers, nodes, params = [], [], []
    x = "input"
    for i in range(LARGE_LAYERS):
        w = he_normal(rng, (LARGE_DIM, LARGE_DIM), LARGE_DIM)
        b = (rng.standard_normal(LARGE_DIM) * 0.01).astype(np.float32)
        params.append((w, b))
        initializers += [
            numpy_helper.from_array(w, f"fc{i}_w"),
            numpy_helper.from_array(b, f"fc{i}_b"),
        ]
        out = "output" if i == LARGE_LAYERS - 1 else f"fc{i}"
        nodes += [
            helper.make_node("MatMul", [x, f"fc{i}_w"], [f"fc{i}_mm"], name=f"fc{i}_matmul"),
            helper.make_node("Add", [f"fc{i}_mm", f"fc{i}_b"], [out], name=f"fc{i}_bias"),
        ]
        x = out
        if i < LARGE_LAYERS - 1:
            nodes.append(helper.make_node("Relu", [out], [f"relu{i}"], name=f"relu{i}"))
            x = f"relu{i}"
    graph = helper.make_graph(
        nodes,
        "bench_large",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, LARGE_DIM])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, LARGE_DIM])],
        initializer=initializers,
    )
    doc = f"benchmark MLP: {LARGE_LAYERS} x MatMul {LARGE_DIM}x{LARGE_DIM} (+Add, Relu); seed {SEED}"
    model = make_model(graph, doc)
    return model, params


def large_forward(params, x):
    h = x.astype(np.float64)
    for i, (w, b) in enumerate(params):
        h = h @ w.astype(np.float64) + b
        if i < len(params) - 1:
            h = np.maximum(h, 0.0)
    return h


def build_echo():
    initializers = [
        numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
    ]
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["x2"], name="mul"),
        helper.make_node("Add", ["x2", "one"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "bench_echo",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
        initializer=initializers,
    )
    return make_model(graph, "benchmark payload model: y = x * 2 + 1 elementwise")


def check(name, got, want, rtol):
    """got (float32 model) vs want (float64 reference): relative to the output's scale."""
    scale = float(np.abs(want).max())
    err = float(np.abs(got.astype(np.float64) - want).max())
    if not np.all(np.isfinite(got)) or scale == 0.0 or err > rtol * scale:
        sys.exit(f"{name}: forward pass check failed (max error {err:.3g}, scale {scale:.3g})")
    print(f"{name}: max |float32 - float64 reference| = {err:.2e} (output scale {scale:.3g})")


def batch_dim(model):
    """The dim_param that axis 0 of every graph input and every output shares, or None (what the
    enclave's `--dynamic-batch` requires of a model)."""
    initializers = {i.name for i in model.graph.initializer}
    values = [v for v in model.graph.input if v.name not in initializers] + list(model.graph.output)
    params = set()
    for v in values:
        dims = v.type.tensor_type.shape.dim
        if not dims or not dims[0].dim_param:
            return None
        params.add(dims[0].dim_param)
    return params.pop() if len(params) == 1 else None


def check_rows(name, model, input_name, x, forward):
    """Two rows through the graph at once: each must be what that row gives alone (float64
    reference), i.e. the model never mixes samples along axis 0."""
    (got,) = ReferenceEvaluator(model).run(None, {input_name: x})
    if got.shape[0] != x.shape[0]:
        sys.exit(f"{name}: {x.shape[0]} rows in, {got.shape[0]} out")
    for r in range(x.shape[0]):
        check(f"{name} row {r} of {x.shape[0]}", got[r : r + 1], forward(x[r : r + 1]), 1e-4)


def sha384_hex(data):
    return hashlib.sha384(data).hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output directory (default target/bench-models)"
    )
    axis0 = parser.add_mutually_exclusive_group()
    axis0.add_argument(
        "--fixed-batch",
        action="store_true",
        help="large (and conv) with axis 0 fixed to 1 instead of the symbolic 'batch'",
    )
    axis0.add_argument(
        "--symbolic-conv",
        action="store_true",
        help="conv with the symbolic 'batch' too (slower in tract at B = 1)",
    )
    args = parser.parse_args()
    out = args.out
    batch = 1 if args.fixed_batch else "batch"
    conv_batch = "batch" if args.symbolic_conv else 1
    out.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(SEED)
    conv, conv_params = build_conv(rng, conv_batch)
    large, large_params = build_large(rng, batch)
    echo = build_echo()

    # One seeded input per model: the exported graph must compute what the NumPy reference computes.
    xrng = np.random.default_rng(SEED + 1)
    x = xrng.standard_normal((1, 3, CONV_HW, CONV_HW)).astype(np.float32)
    # The serialized graph itself is run by onnx's reference evaluator (float32, NumPy kernels) and
    # compared with an independent float64 NumPy forward pass of the same weights.
    (got,) = ReferenceEvaluator(conv).run(None, {"input": x})
    check("conv (onnx reference evaluator)", got, conv_forward(conv_params, x), 1e-4)
    xl = xrng.standard_normal((1, LARGE_DIM)).astype(np.float32)
    (got,) = ReferenceEvaluator(large).run(None, {"input": xl})
    check("large (onnx reference evaluator)", got, large_forward(large_params, xl), 1e-4)
    xe = xrng.standard_normal(1000).astype(np.float32)
    # Drawn whether or not they are used, so that the inputs above never depend on the options.
    x2 = xrng.standard_normal((2, 3, CONV_HW, CONV_HW)).astype(np.float32)
    xl2 = xrng.standard_normal((2, LARGE_DIM)).astype(np.float32)
    if conv_batch != 1:
        check_rows("conv", conv, "input", x2, lambda r: conv_forward(conv_params, r))
    if batch != 1:
        check_rows("large", large, "input", xl2, lambda r: large_forward(large_params, r))
    (got,) = ReferenceEvaluator(echo).run(None, {"x": xe})
    if not np.array_equal(got, xe * np.float32(2) + np.float32(1)):
        sys.exit("echo: y != 2x + 1")
    print("echo: y == 2x + 1 exactly")

    entries = []

    def write(model_id, data, input_name, shape, outputs, input_bytes):
        batch_param = batch_dim(onnx.load_from_string(data))
        name = f"{model_id}.onnx"
        (out / name).write_bytes(data)
        entries.append(
            {
                "id": model_id,
                "file": name,
                "bytes": len(data),
                "sha384": sha384_hex(data),
                "input": {"name": input_name, "dtype": "f32", "shape": shape},
                "outputs": outputs,
                "input_bytes": input_bytes,
                "batch_dim": batch_param,
            }
        )
        axis0 = f"axis 0 '{batch_param}'" if batch_param else "no shared symbolic axis 0"
        print(f"{name}: {len(data):,} bytes, sha384 {sha384_hex(data)}, {axis0}")

    write("digits", DIGITS.read_bytes(), "input", [1, 64], ["probabilities", "label"], [64 * 4])
    conv_shape = [1, 3, CONV_HW, CONV_HW]
    write("conv", conv.SerializeToString(), "input", conv_shape, ["logits"], [math.prod(conv_shape) * 4])
    write("large", large.SerializeToString(), "input", [1, LARGE_DIM], ["output"], [LARGE_DIM * 4])
    write("echo", echo.SerializeToString(), "x", ["n"], ["y"], ECHO_INPUT_BYTES)

    index = {
        "generator": f"{GENERATOR} (seed {SEED}, numpy {np.__version__}, onnx {onnx.__version__})",
        "models": entries,
    }
    (out / "models.json").write_text(json.dumps(index, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
