"""A 1-D convolutional forecaster: a window of a series in, the next value(s) out.

ModelOps calls `build(n_inputs=..., n_outputs=..., **spec.model.params)`. The network
gets standardised windows, (batch, window) for one series or (batch, window, features)
for several, and returns (batch, n_outputs) values in standardised units; ModelOps does
the scaling, the loss, the optimiser and the distribution.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvForecaster(nn.Module):
    """Stacked causal-padded convolutions, then the last step feeds a linear head."""

    def __init__(
        self, n_inputs: int, n_outputs: int, channels: int, kernel: int, depth: int, dropout: float
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_inputs
        for level in range(depth):
            dilation = 2**level
            layers += [
                nn.ConstantPad1d(
                    ((kernel - 1) * dilation, 0), 0.0
                ),  # causal: no step sees the future
                nn.Conv1d(width, channels, kernel, dilation=dilation),
                nn.GELU(),
                nn.Dropout(dropout),
            ]
            width = channels
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(channels, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # (batch, window) of one series
            x = x.unsqueeze(-1)
        features = self.body(x.transpose(1, 2))  # (batch, channels, window)
        out: torch.Tensor = self.head(features[:, :, -1])
        return out


def build(
    n_inputs: int,
    n_outputs: int,
    channels: int = 32,
    kernel: int = 3,
    depth: int = 3,
    dropout: float = 0.0,
) -> nn.Module:
    """The factory named in spec.model.factory: `forecast_nets.cnn:build`."""
    if channels < 1 or kernel < 1 or depth < 1:
        raise ValueError(
            f"channels, kernel and depth must be positive (got {channels}, {kernel}, {depth})"
        )
    return ConvForecaster(n_inputs, n_outputs, channels, kernel, depth, float(dropout))
