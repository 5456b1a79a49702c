"""The MLServer peer's model: the benchmark's MLP behind MLServer's custom-runtime API.

Imported only inside the MLServer process (its own virtualenv, see
bench/serving_grpc.py), never by the main interpreter, which has no mlserver.
MLServer's adaptive batching merges concurrent requests along the first dimension
before `predict` and splits the answer after it, so one call here is one batch.
"""

from __future__ import annotations

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

from modelops_runtime import artifacts
from modelops_runtime.predictor import Predictor, load_predictor


class Peer(MLModel):  # type: ignore[misc]
    predictor: Predictor

    async def load(self) -> bool:
        extra = self.settings.parameters.extra
        self.predictor = load_predictor(artifacts.version_uri(extra["store"], "m", 1))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rows = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        scores = self.predictor.scores(rows)
        labels = self.predictor.decide(scores).astype(np.int64)
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[
                NumpyCodec.encode_output("predictions", labels),
                NumpyCodec.encode_output("probabilities", scores.astype(np.float32)),
            ],
        )
