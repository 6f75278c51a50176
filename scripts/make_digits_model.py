#!/usr/bin/env python3
"""Builds the bundled demo model and its test fixtures in sim/assets/digits/.

What it does: trains a small MLP on scikit-learn's bundled 8x8 digits dataset (no download), exports
it to ONNX by writing the graph directly with onnx.helper (MatMul/Add/Relu/MatMul/Add/Softmax plus an
ArgMax label output, opset 13, no ai.onnx.ml operators, so that tract-onnx loads it), checks the
ONNX graph with onnx.checker and a NumPy forward pass against sklearn's predict_proba, and writes:

- digits.onnx          input "input" f32 [batch, 64] (pixels / 16, in [0, 1]);
                       outputs "probabilities" f32 [batch, 10] and "label" i64 [batch]
- digit_<label>_<i>.npy   real held-out samples, f32 [1, 64] (<i> = index in the held-out split)
- batch_8.npy          the first 8 held-out samples, f32 [8, 64]
- add_i64.onnx         a one-node test model: "sum" = "a" + "b", all i64 [n] (exercises integer
                       tensors and a symbol shared by two inputs)
- expected.json        per input file: true labels, predicted labels and probabilities
- README.md            origin, accuracy and SHA-384 digests

What it does not do: CI never runs it; the generated files are committed. Re-running it with the
pinned versions (scripts/requirements-model.txt) rewrites the same bytes.

Usage: pip install -r scripts/requirements-model.txt && python3 scripts/make_digits_model.py
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

OUT_DIR = Path(__file__).resolve().parent.parent / "sim" / "assets" / "digits"
SEED = 0
# Opset 13 is inside the range tract tests against (9..=18); IR 8 is what that opset shipped with.
OPSET = 13
IR_VERSION = 8
# Labels of the single-sample fixtures: the first held-out sample of each.
FIXTURE_LABELS = [0, 2, 4, 7, 9]
BATCH = 8


def train():
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float64)  # pixels are 0..16
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=SEED, stratify=y
    )
    clf = MLPClassifier(hidden_layer_sizes=(64,), random_state=SEED, max_iter=1000)
    clf.fit(x_train, y_train)
    if clf.out_activation_ != "softmax" or clf.activation != "relu":
        sys.exit("unexpected MLP activations")
    if list(clf.classes_) != list(range(10)):
        sys.exit("unexpected classes")
    accuracy = float(clf.score(x_test, y_test))
    return clf, x_test, y_test, accuracy


def build_digits_onnx(clf):
    w1, w2 = (np.ascontiguousarray(w, dtype=np.float32) for w in clf.coefs_)
    b1, b2 = (np.ascontiguousarray(b, dtype=np.float32) for b in clf.intercepts_)
    initializers = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(b1, "b1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(b2, "b2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["h1_mm"], name="dense1_matmul"),
        helper.make_node("Add", ["h1_mm", "b1"], ["h1"], name="dense1_bias"),
        helper.make_node("Relu", ["h1"], ["h1_relu"], name="dense1_relu"),
        helper.make_node("MatMul", ["h1_relu", "w2"], ["logits_mm"], name="dense2_matmul"),
        helper.make_node("Add", ["logits_mm", "b2"], ["logits"], name="dense2_bias"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1),
        helper.make_node("ArgMax", ["logits"], ["label"], name="argmax", axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        producer_name="sealed-inference/scripts/make_digits_model.py",
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
    )
    model.doc_string = "8x8 digits MLP (scikit-learn load_digits), input = pixels / 16"
    onnx.checker.check_model(model, full_check=True)
    return model, (w1, b1, w2, b2)


def build_add_onnx():
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"], name="add")],
        "add_i64",
        [
            helper.make_tensor_value_info("a", TensorProto.INT64, ["n"]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["n"]),
        ],
        [helper.make_tensor_value_info("sum", TensorProto.INT64, ["n"])],
    )
    model = helper.make_model(
        graph,
        producer_name="sealed-inference/scripts/make_digits_model.py",
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def forward(params, x):
    """The ONNX graph in NumPy, float32 like the model."""
    w1, b1, w2, b2 = params
    h = np.maximum(x.astype(np.float32) @ w1 + b1, np.float32(0))
    logits = h @ w2 + b2
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = e / e.sum(axis=1, keepdims=True)
    return probs.astype(np.float32), logits.argmax(axis=1).astype(np.int64)


def sha384_hex(data):
    return hashlib.sha384(data).hexdigest()


def main():
    clf, x_test, y_test, accuracy = train()
    model, params = build_digits_onnx(clf)

    # The exported graph must compute what sklearn computes.
    probs, labels = forward(params, x_test)
    max_diff = float(np.abs(probs - clf.predict_proba(x_test)).max())
    if max_diff > 1e-5 or not np.array_equal(labels, clf.predict(x_test)):
        sys.exit(f"numpy forward pass disagrees with sklearn (max diff {max_diff:.3g})")

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    onnx_bytes = model.SerializeToString()
    (OUT_DIR / "digits.onnx").write_bytes(onnx_bytes)
    add_bytes = build_add_onnx().SerializeToString()
    (OUT_DIR / "add_i64.onnx").write_bytes(add_bytes)

    fixtures = []
    for label in FIXTURE_LABELS:
        i = int(np.flatnonzero(y_test == label)[0])
        fixtures.append((f"digit_{label}_{i}.npy", [i]))
    fixtures.append((f"batch_{BATCH}.npy", list(range(BATCH))))

    expected = {
        "model": "digits.onnx",
        "model_sha384": sha384_hex(onnx_bytes),
        "inputs": {},
    }
    for name, rows in fixtures:
        x = np.ascontiguousarray(x_test[rows], dtype="<f4")
        np.save(OUT_DIR / name, x, allow_pickle=False)
        p, l = forward(params, x)
        expected["inputs"][name] = {
            "test_indices": rows,
            "shape": list(x.shape),
            "true_labels": [int(v) for v in y_test[rows]],
            "predicted_labels": [int(v) for v in l],
            # float32 values widened exactly to float64 for JSON.
            "probabilities": [[float(v) for v in row] for row in p],
        }
    (OUT_DIR / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")

    versions = {
        "numpy": np.__version__,
        "scikit-learn": __import__("sklearn").__version__,
        "onnx": onnx.__version__,
    }
    readme = f"""# Bundled demo model: 8×8 digits MLP

Generated by `scripts/make_digits_model.py` (pins in `scripts/requirements-model.txt`); do not edit
by hand. CI does not run Python: these files are committed, and re-running the script rewrites the
same bytes.

- Data: scikit-learn's bundled `load_digits` (1,797 8×8 images of handwritten digits, UCI ML hand-
  written digits test set; shipped with scikit-learn, no download). Inputs are pixels / 16, in [0, 1].
- Split: 75 % train / 25 % held out (`train_test_split(test_size=0.25, random_state={SEED}, stratify=y)`).
- Model: `MLPClassifier(hidden_layer_sizes=(64,), random_state={SEED}, max_iter=1000)`, ReLU, softmax.
- Held-out accuracy: {accuracy:.4f} ({len(y_test)} samples).
- Export: graph written directly with `onnx.helper` (opset {OPSET}, IR {IR_VERSION}): MatMul, Add, Relu,
  MatMul, Add, Softmax, and ArgMax over the logits; checked with `onnx.checker` and against
  sklearn's `predict_proba` (max difference {max_diff:.2e}).
- Built with {", ".join(f"{k} {v}" for k, v in versions.items())}.

| file | what | SHA-384 |
| --- | --- | --- |
| `digits.onnx` | input `input` f32 [batch, 64]; outputs `probabilities` f32 [batch, 10], `label` i64 [batch] | `{sha384_hex(onnx_bytes)}` |
| `add_i64.onnx` | test-only: `sum` = `a` + `b`, all i64 [n] | `{sha384_hex(add_bytes)}` |

Fixtures (real held-out samples, `.npy` f32, shape [rows, 64]): {", ".join(f"`{n}`" for n, _ in fixtures)}.
`expected.json` gives, per fixture, the held-out indices, the true labels, and the labels and
probabilities of the model (NumPy forward pass of the exported graph, float32). The enclave's engine
tests compare tract's outputs to it.
"""
    (OUT_DIR / "README.md").write_text(readme)
    print(f"held-out accuracy: {accuracy:.4f}")
    print(f"max |onnx-numpy - sklearn| probability difference: {max_diff:.2e}")
    print(f"digits.onnx: {len(onnx_bytes)} bytes, sha384 {sha384_hex(onnx_bytes)}")
    print(f"wrote {OUT_DIR}")


if __name__ == "__main__":
    main()
