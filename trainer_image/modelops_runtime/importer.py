"""Bringing a model trained elsewhere into the store: an ONNX file becomes a version.

`modelops import model.onnx --store URI --model NAME` (or `python -m modelops_runtime
import ...` in the workload image) checks the file as untrusted data (`onnx_check`),
reads its interface from the graph, and publishes a version like a training run's:
staged aside, then made visible create-only under the next free number, card last.

The stored graph is reduced to the one output the server needs, the scores
(`onnx_predictor`): a scikit-learn classifier's ZipMap (a list of dicts per row, slow
to build and to read) is cut off, and its class labels become the card's classes;
a graph's other outputs (a label tensor) and the nodes only they need are dropped.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper

from modelops.api.artifact import ModelCard, WeightsFormat
from modelops.api.training import Task
from modelops_runtime import artifacts, onnx_check, publish
from modelops_runtime.errors import INPUT_ERROR_EXIT_CODE, InputError, ModelFileError
from modelops_runtime.onnx_predictor import model_of, session_of
from modelops_runtime.train.versions import Shape, make_card

ML_DOMAIN = "ai.onnx.ml"
_FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)
_PUBLISH_TRIES = 5
SCORES = "modelops_scores"


class ImportRefused(InputError, ValueError):
    """An import the given options do not fit (wrong feature count, unknown output...)."""


@dataclass(frozen=True)
class Options:
    """What the user says about the file; anything left None is read from the graph."""

    task: Task | None = None
    classes: list[str] | None = None
    features: list[str] | None = None
    output: str | None = None
    logits: bool = False


@dataclass(frozen=True)
class Interface:
    """The served interface read from a graph."""

    task: Task
    n_features: int
    n_outputs: int
    classes: list[str] | None
    output: str


def _fail(where: str, problem: str) -> ImportRefused:
    return ImportRefused(f"{where}: {problem}")


def _tensor_type(value: onnx.ValueInfoProto) -> tuple[int, list[int | None]] | None:
    """(element type, dims with None for a symbolic one) of a tensor value, else None."""
    if not value.type.HasField("tensor_type"):
        return None
    tensor = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    return tensor.elem_type, dims


def _input(graph: onnx.GraphProto, where: str, features: list[str] | None) -> tuple[str, int]:
    """The one input's name and width, checked against --features."""
    stored = {tensor.name for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in stored]
    if len(inputs) != 1:
        names = [value.name for value in inputs]
        raise _fail(
            where,
            f"has {len(inputs)} inputs {names}; an imported model takes one table of features",
        )
    kind = _tensor_type(inputs[0])
    if kind is None or kind[0] not in _FLOATS or len(kind[1]) != 2:
        raise _fail(
            where, f"input '{inputs[0].name}' must be a float or double tensor [batch, features]"
        )
    width = kind[1][1]
    if features is not None and width is not None and len(features) != width:
        raise _fail(
            where,
            f"--features names {len(features)} columns; input '{inputs[0].name}' takes {width}",
        )
    if width is None and features is None:
        raise _fail(
            where, f"input '{inputs[0].name}' has no fixed width; give the columns with --features"
        )
    return inputs[0].name, width if width is not None else len(features or [])


def _labels(node: onnx.NodeProto) -> list[str] | None:
    """Class labels from a ZipMap or an ai.onnx.ml classifier node's attributes."""
    for attribute in node.attribute:
        if attribute.name in ("classlabels_strings", "classlabels_int64s"):
            values = attribute.strings if attribute.strings else attribute.ints
            return [v.decode() if isinstance(v, bytes) else str(v) for v in values]
    return None


def _scores(
    graph: onnx.GraphProto, where: str, options: Options
) -> tuple[str, list[str] | None, bool]:
    """(name of the scores value, class labels found in the graph, whether it looks like a classifier)."""
    outputs = {value.name: value for value in graph.output}
    zipmaps = [n for n in graph.node if n.op_type == "ZipMap" and n.output[0] in outputs]
    classifier = bool(zipmaps) or any(
        n.domain == ML_DOMAIN and n.op_type.endswith("Classifier") for n in graph.node
    )
    labels = next(
        (found for n in graph.node if n.domain == ML_DOMAIN for found in [_labels(n)] if found),
        None,
    )
    if options.output is not None:
        zipped = next((n for n in zipmaps if n.output[0] == options.output), None)
        if zipped is not None:
            return zipped.input[0], labels, classifier
        kind = _tensor_type(outputs[options.output]) if options.output in outputs else None
        if kind is None or kind[0] not in _FLOATS:
            floats = [n for n, v in outputs.items() if (_tensor_type(v) or (0,))[0] in _FLOATS]
            raise _fail(
                where,
                f"--output '{options.output}' is not a float tensor output; those are {floats}",
            )
        return options.output, labels, classifier
    if zipmaps:
        return zipmaps[0].input[0], _labels(zipmaps[0]) or labels, True
    floats = [n for n, v in outputs.items() if (_tensor_type(v) or (0,))[0] in _FLOATS]
    if len(floats) == 1:
        return floats[0], labels, classifier
    probable = [n for n in floats if "prob" in n.lower()]
    if len(probable) == 1:
        return probable[0], labels, classifier
    raise _fail(where, f"has float outputs {floats}; name the scores with --output")


def _reachable(graph: onnx.GraphProto, target: str) -> list[onnx.NodeProto]:
    """The nodes `target` depends on, in graph order (subgraphs' outer names included)."""
    needed, keep = {target}, set()
    for index in range(len(graph.node) - 1, -1, -1):
        node = graph.node[index]
        if needed.intersection(node.output):
            keep.add(index)
            needed.update(node.input)
            needed.update(_outer_names(node))
    return [graph.node[i] for i in sorted(keep)]


def _outer_names(node: onnx.NodeProto) -> set[str]:
    """Every name a node's subgraphs read (a superset of what they take from outside)."""
    names: set[str] = set()
    for attribute in node.attribute:
        subgraphs = (
            [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)
        )
        for sub in subgraphs:
            for inner in sub.node:
                names.update(inner.input)
                names.update(_outer_names(inner))
    return names


def reduce(
    model: onnx.ModelProto, input_name: str, scores: str, n_outputs: int | None, logits: bool
) -> onnx.ModelProto:
    """A copy of `model` whose only output, SCORES, is `scores` as FP32 (probabilities of
    logits with `logits`)."""
    graph = model.graph
    nodes = [_copy(node) for node in _reachable(graph, scores)]
    used = {name for node in nodes for name in [*node.input, *node.output, *_outer_names(node)]}
    # Always cast: a double output becomes FP32, and a float one costs nothing (the
    # optimizer removes a cast to the same type).
    last = SCORES if not logits else f"{SCORES}_logits"
    nodes.append(
        helper.make_node("Cast", [scores], [last], to=onnx.TensorProto.FLOAT, name="modelops_cast")
    )
    if logits:
        op, attributes = ("Sigmoid", {}) if n_outputs == 1 else ("Softmax", {"axis": -1})
        nodes.append(
            helper.make_node(op, [last], [SCORES], name="modelops_probabilities", **attributes)
        )
    reduced = onnx.ModelProto()
    reduced.CopyFrom(model)
    kept = reduced.graph
    del kept.node[:]
    kept.node.extend(nodes)
    for repeated, keep in (
        (kept.initializer, [t for t in graph.initializer if t.name in used]),
        (kept.value_info, [v for v in graph.value_info if v.name in used]),
        (kept.input, [v for v in graph.input if v.name == input_name]),
        (
            kept.output,
            [helper.make_tensor_value_info(SCORES, onnx.TensorProto.FLOAT, ["batch", "scores"])],
        ),
    ):
        del repeated[:]
        repeated.extend(keep)  # type: ignore[attr-defined]
    if not any(op.domain in ("", "ai.onnx") for op in reduced.opset_import):
        reduced.opset_import.append(helper.make_opsetid("", 13))
    return reduced


def _copy(node: onnx.NodeProto) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    return copy


def _width(blob: bytes, where: str, card: ModelCard) -> int:
    """Outputs per row, by running the reduced graph on two rows of zeros."""
    served = model_of(session_of(blob, where), card, where)
    out = served.scores(np.zeros((2, card.n_features), dtype=np.float32))
    if out.ndim != 2 or out.shape[0] != 2:
        raise _fail(where, f"gives outputs of shape {list(out.shape)} for 2 rows; expected [2, n]")
    return int(out.shape[1])


def inspect(blob: bytes, where: str, options: Options) -> tuple[bytes, Interface]:
    """The graph to store and the interface it serves, or an error naming the file."""
    model = onnx_check.parse(blob, where)
    input_name, n_features = _input(model.graph, where, options.features)
    scores, found, looks_classifier = _scores(model.graph, where, options)
    task = options.task or (
        Task.CLASSIFICATION if looks_classifier or options.classes else Task.REGRESSION
    )
    if task == Task.FORECASTING:
        raise _fail(
            where, "a forecasting model reads a window of a series; import it as regression"
        )
    draft = _draft(task, n_features, 1, None, options.features)
    plain = reduce(model, input_name, scores, None, logits=False).SerializeToString()
    n_outputs = _width(plain, where, draft)
    if options.logits:
        if task != Task.CLASSIFICATION:
            raise _fail(
                where, "--logits turns scores into probabilities; it needs a classification task"
            )
        plain = reduce(model, input_name, scores, n_outputs, logits=True).SerializeToString()
    classes = (options.classes or found) if task == Task.CLASSIFICATION else None
    if classes is not None and len(classes) != max(n_outputs, 2):
        raise _fail(
            where,
            f"{len(classes)} classes ({', '.join(classes[:10])}) for {n_outputs} score columns"
            + (" (--classes)" if options.classes else ""),
        )
    return plain, Interface(task, n_features, n_outputs, classes, scores)


def _draft(
    task: Task,
    n_features: int,
    n_outputs: int,
    classes: list[str] | None,
    features: list[str] | None,
) -> ModelCard:
    shape = Shape(task, list(features or []), n_features, None, n_outputs, classes)
    card = make_card("import", 1, shape, None)
    return card.model_copy(update={"weights_format": WeightsFormat.ONNX})


def card_for(
    name: str, version: int, interface: Interface, features: list[str] | None
) -> ModelCard:
    card = _draft(
        interface.task, interface.n_features, interface.n_outputs, interface.classes, features
    )
    return card.model_copy(update={"name": name, "version": version})


def import_onnx(path: str, store: str, name: str, options: Options) -> int:
    """Publish the ONNX file at `path` as the next version of `name`; returns its number."""
    blob = onnx_check.read(path)
    stored, interface = inspect(blob, path, options)
    run = {
        "jobId": f"import-{uuid.uuid4().hex[:12]}",
        "run": hashlib.sha256(blob).hexdigest()[:16],
        "source": path.rsplit("/", 1)[-1],
    }
    staging = publish.stage_uri(store, name)
    try:
        number = publish.next_number(store, name)
        for _ in range(_PUBLISH_TRIES):
            card = card_for(name, number, interface, options.features)
            fs, folder = artifacts.filesystem(staging)
            fs.makedirs(folder, exist_ok=True)
            fs.pipe_file(f"{folder}/{artifacts.ONNX}", stored)
            artifacts.save_version(staging, card, None, {}, None)
            try:
                publish.publish(staging, artifacts.version_uri(store, name, number), run)
                return number
            except publish.VersionTaken:
                number = max(number + 1, publish.next_number(store, name))
        raise RuntimeError(
            f"could not publish {name}: {_PUBLISH_TRIES} version numbers were taken in a row"
        )
    finally:
        publish.discard(staging)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="modelops import", description="Publish an ONNX model as a new version in the store."
    )
    p.add_argument("file", help="the .onnx file (self-contained: no external data)")
    p.add_argument("--store", required=True, help="store URI (file:// or s3://)")
    p.add_argument("--model", required=True, help="model name in the store")
    p.add_argument(
        "--task",
        choices=[t.value for t in Task if t != Task.FORECASTING],
        help="what the scores mean (default: classification for a classifier graph)",
    )
    p.add_argument(
        "--classes", help="comma-separated class names in score order (default: from the graph)"
    )
    p.add_argument("--features", help="comma-separated input column names, in order")
    p.add_argument("--output", help="the graph output holding the scores (default: found)")
    p.add_argument(
        "--logits", action="store_true", help="the scores are logits: serve softmax/sigmoid of them"
    )
    return p


def _names(text: str | None, flag: str) -> list[str] | None:
    if text is None:
        return None
    names = [part.strip() for part in text.split(",")]
    if not all(names):
        raise ImportRefused(f"{flag} '{text}' has an empty name")
    if len(set(names)) != len(names):
        raise ImportRefused(f"{flag} '{text}' names a column or class twice")
    return names


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        options = Options(
            task=Task(args.task) if args.task else None,
            classes=_names(args.classes, "--classes"),
            features=_names(args.features, "--features"),
            output=args.output,
            logits=args.logits,
        )
        number = import_onnx(args.file, args.store, args.model, options)
    except (ModelFileError, InputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return INPUT_ERROR_EXIT_CODE
    folder = artifacts.version_uri(args.store, args.model, number)
    card = artifacts.load_card(folder)
    summary: dict[str, Any] = {
        "task": card.task.value,
        "features": card.n_features,
        "outputs": card.n_outputs,
    }
    if card.classes:
        summary["classes"] = card.classes
    print(f"imported {args.file} as {folder} {summary}")
    return 0
