"""ResNet-18 (CIFAR stem) with a dropout + linear head whose MC samples reuse one backbone pass.

``ResNet18(n_classes, width=64, dropout=0.0, cifar_stem=True)``:

* ``features(x)``            → penultimate (global-pooled) features ``[B, 8·width]``;
* ``head(h)``                → logits (deterministic: dropout inactive in eval mode);
* ``mc_probs(h, M)``         → ``[B, M, C]`` probabilities with M independent dropout masks on the
  head input (backbone run once — "MC dropout on the head, not the whole net");
* ``head_input(h)``          → input of the last linear layer (BADGE's h).

Built from torchvision's ``BasicBlock`` so the blocks are the library's; ``width`` scales all
stages (64 = the thesis ResNet-18; the laptop preset uses a narrower one).  Weights and activations
are channels-last (NHWC): ~1.3x faster training on CPU, same protocol.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock


class ResNet18(nn.Module):
    def __init__(self, n_classes: int, width: int = 64, dropout: float = 0.0, cifar_stem: bool = True,
                 in_channels: int = 3):
        super().__init__()
        self.dropout_p = float(dropout)
        if cifar_stem:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                      nn.ReLU(inplace=True))
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                                      nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        layers, inplanes = [], width
        for i, mult in enumerate((1, 2, 4, 8)):
            planes, stride = width * mult, (1 if i == 0 else 2)
            down = None
            if stride != 1 or inplanes != planes:
                down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
            layers += [BasicBlock(inplanes, planes, stride, down), BasicBlock(planes, planes)]
            inplanes = planes
        self.layers = nn.Sequential(*layers)
        self.feature_dim = inplanes
        self.fc = nn.Linear(inplanes, n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.to(memory_format=torch.channels_last)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last (NHWC) activations: oneDNN's convolutions run ~1.3x faster on CPU (bf16 and
        # fp32) and cuDNN's tensor-core kernels prefer them too; the weights follow (see __init__)
        x = x.contiguous(memory_format=torch.channels_last)
        return torch.flatten(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1)

    def head_input(self, h: torch.Tensor) -> torch.Tensor:
        return h

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(F.dropout(h, self.dropout_p, self.training))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def mc_probs(self, h: torch.Tensor, m: int) -> torch.Tensor:
        """[B, M, C] softmax probabilities under M dropout masks on the head input (always active).
        At p = 0.5 (BALD's head) the masks come from random bytes, 8 mask bits per draw, and the M
        masked heads are one batched product: ~4x faster than ``F.dropout`` on the expanded input,
        whose per-element random numbers cost more than the backbone pass at the laptop width."""
        if self.dropout_p == 0.5 and h.dtype == torch.float32:
            return torch.softmax(_half_dropout_logits(h, m, self.fc), dim=-1)
        hm = h.unsqueeze(1).expand(-1, m, -1)
        if self.dropout_p > 0:
            hm = F.dropout(hm, self.dropout_p, training=True)
        return torch.softmax(self.fc(hm).float(), dim=-1)

    def predict_probs(self, h: torch.Tensor, mc_samples: int = 50) -> torch.Tensor:
        """Deterministic softmax, or the MC-averaged one for a dropout (Bayesian) head."""
        if self.dropout_p > 0:
            return self.mc_probs(h, mc_samples).mean(1)
        return torch.softmax(self.fc(h).float(), dim=-1)


_BITS = {}


def _half_dropout_logits(h: torch.Tensor, m: int, fc: nn.Linear) -> torch.Tensor:
    """``fc(dropout(h, 0.5))`` under ``m`` independent masks per row, ``[B, m, C]``: every mask bit is a
    fair coin (one uniform byte gives 8), kept inputs are scaled by 1 / (1 − 0.5) = 2; the logits
    are ``mask @ (h ⊗ Wᵀ) + b`` (torch's global generator, so a seeded run draws the same masks)."""
    b, d = h.shape
    key = (h.device, h.dtype)
    if key not in _BITS:   # byte value -> its 8 bits, times the dropout scale 2
        v = torch.arange(256, device=h.device).unsqueeze(1) >> torch.arange(8, device=h.device)
        _BITS[key] = ((v & 1) * 2).to(h.dtype)
    n = (d + 7) // 8
    raw = torch.empty((b, m, n), dtype=torch.uint8, device=h.device).random_()
    mask = F.embedding(raw.long(), _BITS[key]).reshape(b, m, n * 8)[..., :d]
    hw = h.unsqueeze(2) * fc.weight.t().to(h.dtype).unsqueeze(0)          # [B, D, C]
    return torch.baddbmm(fc.bias.to(h.dtype).expand(b, m, -1), mask, hw)
