"""Class names: string labels are served as BYTES names, integer labels stay INT64 indices."""

from __future__ import annotations

from modelops.api.artifact import ModelCard
from modelops.api.training import Task
from modelops_runtime.serve.protocol import model_metadata
from modelops_runtime.train.versions import Shape, make_card


def _card(classes: list[str]) -> ModelCard:
    shape = Shape(task=Task.CLASSIFICATION, features=["a", "b"], n_features=2, window=None,
                  n_outputs=len(classes), classes=classes)
    return make_card("m", 1, shape, None)


def test_string_labels_give_a_bytes_label_output_with_names_in_metadata() -> None:
    card = _card(["benign", "malignant"])
    assert [(o.name, o.datatype) for o in card.outputs] == [("probabilities", "FP32"), ("label", "BYTES")]
    meta = model_metadata(card, ["1"])
    assert meta["outputs"][1]["parameters"] == {"classes": ["benign", "malignant"]}
    assert "parameters" not in meta["outputs"][0]
    assert meta["parameters"]["classes"] == ["benign", "malignant"]


def test_integer_labels_keep_int64() -> None:
    card = _card(["0", "1", "2"])
    assert [(o.name, o.datatype) for o in card.outputs] == [("probabilities", "FP32"), ("label", "INT64")]
