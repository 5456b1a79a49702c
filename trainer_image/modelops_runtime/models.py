"""The networks: MLP/DNN, RNN, GRU and LSTM, built from the API's ModelSpec, or a custom
network from the user's factory.

Nothing here imports training code, so the server can rebuild a built-in network from
its stored spec and load safetensors weights into it. A custom network is built only in
training processes (the user's code is loaded there, see `usercode`); its versions are
stored as ONNX, which the server loads without that code.
"""

from __future__ import annotations

import torch
from torch import nn

from modelops.api.training import Activation, Architecture, ModelSpec

_ACTIVATIONS: dict[Activation, type[nn.Module]] = {
    Activation.RELU: nn.ReLU,
    Activation.SIGMOID: nn.Sigmoid,
    Activation.TANH: nn.Tanh,
    Activation.GELU: nn.GELU,
}

_RECURRENT: dict[Architecture, type[nn.RNNBase]] = {
    Architecture.RNN: nn.RNN,
    Architecture.GRU: nn.GRU,
    Architecture.LSTM: nn.LSTM,
}


class MLP(nn.Module):
    """Fully connected layers; the head returns raw scores (logits or values)."""

    def __init__(self, spec: ModelSpec, n_features: int, n_outputs: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for hidden in spec.hidden_layers:
            layers.append(nn.Linear(width, hidden))
            if spec.batch_norm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(_ACTIVATIONS[spec.activation]())
            if spec.dropout > 0:
                layers.append(nn.Dropout(spec.dropout))
            width = hidden
        layers.append(nn.Linear(width, n_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() > 2:  # a window of a series flattened for an MLP forecaster
            x = x.flatten(1)
        out: torch.Tensor = self.net(x)
        return out


class Recurrent(nn.Module):
    """RNN, GRU or LSTM over (batch, time, features); the last step feeds the head."""

    def __init__(self, spec: ModelSpec, n_features: int, n_outputs: int) -> None:
        super().__init__()
        self.rnn = _RECURRENT[spec.architecture](
            input_size=n_features,
            hidden_size=spec.hidden_size,
            num_layers=spec.num_layers,
            dropout=spec.dropout if spec.num_layers > 1 else 0.0,
            bidirectional=spec.bidirectional,
            batch_first=True,
        )
        directions = 2 if spec.bidirectional else 1
        self.head = nn.Linear(spec.hidden_size * directions, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # (batch, time) of a univariate series
            x = x.unsqueeze(-1)
        sequence, _ = self.rnn(x)
        out: torch.Tensor = self.head(sequence[:, -1, :])
        return out


def build_custom(spec: ModelSpec, n_features: int, n_outputs: int) -> nn.Module:
    """The user's network: `factory(n_inputs=..., n_outputs=..., **params, **options)`."""
    from modelops_runtime.usercode import UserCodeError, factory

    build = factory(spec)
    try:
        network = build(n_inputs=n_features, n_outputs=n_outputs, **spec.factory_arguments())
    except Exception as error:
        raise UserCodeError(
            f"model.factory {spec.factory!r} failed with n_inputs={n_features}, "
            f"n_outputs={n_outputs}, arguments={spec.factory_arguments()}: {error!r}"
        ) from error
    if not isinstance(network, nn.Module):
        raise UserCodeError(
            f"model.factory {spec.factory!r} returned {type(network).__name__}, not a torch.nn.Module"
        )
    return network


def build_model(spec: ModelSpec, n_features: int, n_outputs: int) -> nn.Module:
    """The network for `spec`, taking `n_features` per step and giving `n_outputs` scores."""
    if spec.architecture == Architecture.CUSTOM:
        return build_custom(spec, n_features, n_outputs)
    if spec.architecture == Architecture.MLP:
        return MLP(spec, n_features, n_outputs)
    return Recurrent(spec, n_features, n_outputs)
