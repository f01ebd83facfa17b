#!/usr/bin/env python3
"""Train the iris classifier Symphony's inference tests and benchmarks serve.

The iris data ships with scikit-learn (no download). The workflow served is:
normalize (standard scaling, done OUTSIDE the model by the workflow's
normalize stage) -> classify (this ONNX model on the scaled features) -> label
(argmax -> class name).

Writes, into --out-dir (default: models/ at the repository top):

  iris.onnx            LogisticRegression, input "float_input" float32 [None, 4],
                       outputs "label" int64 [None] and "probabilities"
                       float32 [None, 3]
  iris_reference.json  scaler mean/scale, class names, and --n-ref raw inputs
                       with their scaled inputs and the labels and
                       probabilities onnxruntime gives

The contract (names, dtypes, shapes, reference file fields) is the same as
the Ray Serve baseline's model (bench-peers/make_iris_model.py), so both
systems serve the same model.

Which ONNX route, and why
-------------------------
skl2onnx exports LogisticRegression as the `ai.onnx.ml` operators
`LinearClassifier` (post_transform SOFTMAX) followed by `Normalizer` (L1).
tract-onnx 0.22, the pure-Rust runtime Symphony embeds, implements only a few
`ai.onnx.ml` operators (TreeEnsembleClassifier, CategoryMapper) and fails to
load that graph: `Failed analyse for node #1 "LinearClassifier"
Unimplemented(LinearClassifier)`. So this script takes
the second route: it builds the same function from standard ONNX operators
with `onnx.helper`, from the trained coefficients:

  logits        = Gemm(float_input, coef, intercept, transB=1)   # [N, 3]
  probabilities = Softmax(logits, axis=1)                        # [N, 3]
  label         = ArgMax(logits, axis=1, keepdims=0)             # [N] int64

The skl2onnx graph's L1 Normalizer after a softmax is the identity (up to
rounding), and argmax over the logits is what `LogisticRegression.predict`
does, so the graphs agree. The script checks it: it runs the skl2onnx export
and the standard-ops graph in onnxruntime on every iris row and asserts the
same labels and probabilities within 1e-5, and the labels `predict` gives.

  python3 -m venv /work/.venv-models
  /work/.venv-models/bin/pip install scikit-learn skl2onnx onnx onnxruntime numpy
  /work/.venv-models/bin/python scripts/make_iris_model.py
"""

import argparse
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

OPSET = 17
# IR version 8 goes with opset 17; newer onnx packages default to a newer IR
# that older onnxruntime builds (the Ray Serve baseline's) refuse.
IR_VERSION = 8
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models")


def standard_ops_graph(clf: LogisticRegression) -> onnx.ModelProto:
    """The classifier as Gemm + Softmax + ArgMax (see the module docstring)."""
    n_classes, n_features = clf.coef_.shape
    coef = numpy_helper.from_array(clf.coef_.astype(np.float32), name="coef")
    intercept = numpy_helper.from_array(clf.intercept_.astype(np.float32), name="intercept")
    nodes = [
        helper.make_node("Gemm", ["float_input", "coef", "intercept"], ["logits"],
                         name="linear", transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1),
        helper.make_node("ArgMax", ["logits"], ["label"], name="argmax", axis=1, keepdims=0),
    ]
    # `None` leaves the batch dimension unnamed, as skl2onnx does.
    graph = helper.make_graph(
        nodes,
        "iris_logistic_regression",
        inputs=[helper.make_tensor_value_info("float_input", TensorProto.FLOAT, [None, n_features])],
        outputs=[
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, n_classes]),
        ],
        initializer=[coef, intercept],
    )
    model = helper.make_model(
        graph,
        producer_name="symphony/scripts/make_iris_model.py",
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=DEFAULT_OUT)
    ap.add_argument("--n-ref", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out_dir = os.path.normpath(args.out_dir)
    os.makedirs(out_dir, exist_ok=True)

    iris = load_iris()
    X = iris.data  # float64, as shipped
    y = iris.target
    scaler = StandardScaler().fit(X)
    Xs = scaler.transform(X).astype(np.float32)
    clf = LogisticRegression(max_iter=1000, random_state=args.seed).fit(Xs, y)
    print(f"train accuracy: {clf.score(Xs, y):.3f}")

    # The skl2onnx export (ai.onnx.ml LinearClassifier + Normalizer) is the
    # reference the standard-ops graph must match.
    skl = convert_sklearn(
        clf,
        initial_types=[("float_input", FloatTensorType([None, 4]))],
        options={id(clf): {"zipmap": False}},  # probabilities as a tensor, not dicts
        target_opset=OPSET,
    )
    skl_ops = sorted({f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in skl.graph.node})
    print(f"skl2onnx export uses {skl_ops}; writing the standard-ops graph instead")
    model = standard_ops_graph(clf)

    skl_sess, sess = session(skl), session(model)
    skl_labels, skl_probs = skl_sess.run(["label", "probabilities"], {"float_input": Xs})
    labels, probs = sess.run(["label", "probabilities"], {"float_input": Xs})
    assert labels.dtype == np.int64 and probs.dtype == np.float32
    assert (labels == skl_labels).all(), "labels differ from the skl2onnx export"
    assert (labels == clf.predict(Xs)).all(), "labels differ from sklearn predict"
    np.testing.assert_allclose(probs, skl_probs, atol=1e-5)
    np.testing.assert_allclose(probs, clf.predict_proba(Xs), atol=1e-5)
    print("standard-ops graph matches the skl2onnx export and sklearn on all 150 rows")

    model_path = os.path.join(out_dir, "iris.onnx")
    with open(model_path, "wb") as f:
        f.write(model.SerializeToString())
    print("onnx inputs:")
    for i in sess.get_inputs():
        print(f"  {i.name}: {i.type} {i.shape}")
    print("onnx outputs:")
    for o in sess.get_outputs():
        print(f"  {o.name}: {o.type} {o.shape}")

    rng = np.random.default_rng(args.seed)
    idx = np.sort(rng.choice(len(X), size=args.n_ref, replace=False))
    raw = X[idx]
    scaled = ((raw - scaler.mean_) / scaler.scale_).astype(np.float32)
    labels, probs = sess.run(["label", "probabilities"], {"float_input": scaled})
    assert (np.argmax(probs, axis=1) == labels).all()
    assert (labels == clf.predict(scaled)).all()

    ref = {
        "input_name": "float_input",
        "output_names": ["label", "probabilities"],
        "class_names": [str(c) for c in iris.target_names],
        "scaler_mean": [float(v) for v in scaler.mean_],
        "scaler_scale": [float(v) for v in scaler.scale_],
        "cases": [
            {
                "features": [float(v) for v in raw[k]],
                "scaled": [float(v) for v in scaled[k]],
                "label_index": int(labels[k]),
                "label": str(iris.target_names[labels[k]]),
                "probabilities": [float(v) for v in probs[k]],
            }
            for k in range(len(idx))
        ],
    }
    ref_path = os.path.join(out_dir, "iris_reference.json")
    with open(ref_path, "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")
    print(f"wrote {model_path} and {ref_path} ({len(idx)} reference cases)")


if __name__ == "__main__":
    main()
