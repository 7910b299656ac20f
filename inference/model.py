"""The detector's network: a small 1-D CNN over the K flows of a window (torch; `train` extra).

Input is a normalised window batch `windows` [N, F, K] with `mask` [N, K] (1 = real flow,
0 = padding). Two same-padded convolutions look at neighbouring flows, the mask zeroes the
padded positions after each layer, and pooling reads only real positions: a masked mean,
a max (ReLU outputs are >= 0 and padding is 0, so a plain max over the masked tensor is the
max over real flows, with no large negative constants that would wreck int8 ranges), and
the window's fill fraction. A two-layer head gives the logits.

    >>> net = WindowCNN(n_features=34, n_classes=6)
    >>> logits = net(torch.zeros(2, 34, 8), torch.ones(2, 8))     # [2, 6]

Everything in `forward` is tensor arithmetic with no Python branching, so it exports to
ONNX with a dynamic batch axis and any K the bundle was trained for.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters; stored in bundle.json so a bundle can be rebuilt."""

    n_features: int
    n_classes: int
    channels: int = 64
    hidden: int = 64
    kernel: int = 3
    dropout: float = 0.1

    def to_json(self) -> dict:
        return asdict(self)


class WindowCNN(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c, pad = config.channels, config.kernel // 2
        self.config = config
        self.embed = nn.Conv1d(config.n_features, c, kernel_size=1)
        self.conv1 = nn.Conv1d(c, c, kernel_size=config.kernel, padding=pad)
        self.conv2 = nn.Conv1d(c, c, kernel_size=config.kernel, padding=pad)
        self.head = nn.Sequential(
            nn.Linear(2 * c + 1, config.hidden), nn.ReLU(), nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.n_classes))

    def forward(self, windows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(1)
        h = torch.relu(self.embed(windows)) * m
        h = torch.relu(self.conv1(h)) * m
        h = (torch.relu(self.conv2(h)) + h) * m  # residual: keeps per-flow evidence for K=1..3
        n = mask.sum(dim=1, keepdim=True)
        mean = h.sum(dim=2) / n.clamp(min=1.0)
        fill = n / mask.shape[1]
        return self.head(torch.cat([mean, h.amax(dim=2), fill], dim=1))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
