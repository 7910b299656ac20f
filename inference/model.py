"""The detector's network: a small 1-D CNN over the K flows of a window (torch; `train` extra).

Input is a normalised window batch `windows` [N, F, K] with `mask` [N, K] (1 = real flow,
0 = padding), clipped to +-8 so a wild feature value cannot dominate. Two same-padded convolutions look at neighbouring flows, the mask zeroes the
padded positions after each layer, and pooling reads only real positions: a masked mean,
a max (ReLU outputs are >= 0 and padding is 0, so a plain max over the masked tensor is the
max over real flows, with no large negative constants that would wreck int8 ranges), and
the window's fill fraction. A two-layer head gives the logits.

    >>> net = WindowCNN(n_features=34, n_classes=6)
    >>> logits = net(torch.zeros(2, 34, 8), torch.ones(2, 8))     # [2, 6]

After training, `fit_distance` wraps the network so its logits also carry a feature-space
novelty term (see DistanceShifted); that wrapper is what gets exported.

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
    # Normalised inputs are clipped to +-clip: a value far outside anything seen in
    # training (a z-score of 100) must not turn into an arbitrarily confident logit.
    clip: float = 8.0

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
        return self.head(self.features(windows, mask))

    def features(self, windows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The pooled window representation the head reads: [N, 2 * channels + 1]."""
        m = mask.unsqueeze(1)
        x = windows.clamp(-self.config.clip, self.config.clip)
        h = torch.relu(self.embed(x)) * m
        h = torch.relu(self.conv1(h)) * m
        h = (torch.relu(self.conv2(h)) + h) * m  # residual: keeps per-flow evidence for K=1..3
        n = mask.sum(dim=1, keepdim=True)
        mean = h.sum(dim=2) / n.clamp(min=1.0)
        fill = n / mask.shape[1]
        return torch.cat([mean, h.amax(dim=2), fill], dim=1)


class DistanceShifted(nn.Module):
    """A trained WindowCNN whose logits all drop by a monotone function of the squared
    Mahalanobis distance of the window's pooled features to the nearest training class.

    Shifting every logit of a row by the same amount leaves the softmax (so predictions
    and calibrated confidence) unchanged, and raises the free energy -T logsumexp(z/T) by
    exactly that amount. The detector's energy OOD score thus carries a feature-space
    novelty term, which separates an attack never trained on far better than the energy
    of an over-confident network alone, while the bundle keeps its contract (one
    "logits" output, scored by `onnx_detector.calibrate`).

    The distance uses class means and one shared covariance of the training windows'
    features (Lee et al., 2018), folded into `proj` (a Cholesky factor of the precision)
    and `means` (class means times proj): d_c = ||f proj - means_c||^2.
    """

    def __init__(self, net: WindowCNN, proj: torch.Tensor, means: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("proj", proj)
        self.register_buffer("means", means)
        self.scale = float(scale)

    def forward(self, windows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        f = self.net.features(windows, mask)
        g = torch.matmul(f, self.proj)
        dist = ((g.unsqueeze(1) - self.means.unsqueeze(0)) ** 2).sum(dim=2).amin(dim=1, keepdim=True)
        # D log(1 + d/D): ~d for typical windows, logarithmic for far ones, so the shifted
        # float32 logits keep enough precision for the softmax however novel the window.
        return self.net.head(f) - self.scale * torch.log1p(dist / self.scale)


class Ensemble(nn.Module):
    """The mean of several trained DistanceShifted members' logits: one graph, one bundle.

    Members trained from different seeds agree on what they all learned and disagree on
    what each picked up by chance, so averaging them steadies the verdicts on traffic
    none of them saw (a tool, a setting, a link) far more than it changes them on the
    training distribution. `net` is the first member's network (its config is recorded).
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.net = members[0].net

    def forward(self, windows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.member_logits(windows, mask).mean(dim=0)

    def member_logits(self, windows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[members, n, C]: each member's own logits."""
        return torch.stack([m(windows, mask) for m in self.members], dim=0)


class WithMembers(nn.Module):
    """An Ensemble that returns its members' logits beside their mean (for export only)."""

    def __init__(self, ensemble: Ensemble) -> None:
        super().__init__()
        self.ensemble = ensemble

    def forward(self, windows: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.ensemble.member_logits(windows, mask)
        return z.mean(dim=0), z


def fit_distance(net: WindowCNN, f: "np.ndarray", y: "np.ndarray", ridge: float = 0.1
                 ) -> DistanceShifted:
    """Class means and tied covariance of features f [n, D] with labels y.

    The shift is D log(1 + d/D) with D the feature width: in-distribution d is about D,
    so the shift's spread dwarfs that of the network's own energy and the OOD score is
    mostly novelty.

    Classes absent from y get no mean (they cannot be near anything). A ridge of `ridge` x
    the mean variance keeps the covariance invertible and stops directions in which the
    training windows barely vary (a scan's near-identical flows) from making every new
    run of a known attack look novel.
    """
    import numpy as np

    f64 = f.astype(np.float64)
    classes = np.unique(y)
    mus = np.stack([f64[y == c].mean(axis=0) for c in classes])
    centred = f64 - mus[np.searchsorted(classes, y)]
    cov = centred.T @ centred / len(f64)
    cov += ridge * max(np.trace(cov) / len(cov), 1e-12) * np.eye(len(cov))
    proj = np.linalg.cholesky(np.linalg.inv(cov))  # precision = proj @ proj.T
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return DistanceShifted(net, as_t(proj), as_t(mus @ proj), float(f.shape[1]))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
