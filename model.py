"""The lecture's multilayer perceptron: 784 -> 100 (sigmoid) -> 10 logits."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """Flatten, Linear, Sigmoid, Linear. Returns logits (no softmax: cross-entropy applies it)."""

    def __init__(self, num_features: int = 784, num_hidden: int = 100,
                 num_classes: int = 10) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),  # (B, C, H, W) -> (B, C*H*W)
            nn.Linear(num_features, num_hidden),
            nn.Sigmoid(),
            nn.Linear(num_hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # (B, num_classes)
