"""``StdConv2d`` and ``ScaledStdConv2d`` as timm defines them (see the package docstring)."""

from __future__ import annotations

import torch
from torch.nn import functional


class StdConv2d(torch.nn.Conv2d):
    def __init__(self, in_channel, out_channels, kernel_size, padding=0, bias=False, eps=1e-6):
        super().__init__(in_channel, out_channels, kernel_size, padding=padding, bias=bias)
        self.eps = eps

    def forward(self, x):
        weight = functional.batch_norm(
            self.weight.reshape(1, self.out_channels, -1),
            None,
            None,
            training=True,
            momentum=0.0,
            eps=self.eps,
        ).reshape_as(self.weight)
        return functional.conv2d(x, weight, self.bias, self.stride, self.padding)


class ScaledStdConv2d(torch.nn.Conv2d):
    def __init__(
        self, in_channels, out_channels, kernel_size, padding=0, bias=True, gamma=1.0, eps=1e-6
    ):
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
        self.scale = gamma * self.weight[0].numel() ** -0.5
        self.eps = eps
        self.gain = torch.nn.Parameter(torch.ones(out_channels, 1, 1, 1))

    def forward(self, x):
        weight = functional.batch_norm(
            self.weight.reshape(1, self.out_channels, -1),
            None,
            None,
            weight=(self.gain * self.scale).view(-1),
            training=True,
            momentum=0.0,
            eps=self.eps,
        ).reshape_as(self.weight)
        return functional.conv2d(x, weight, self.bias, self.stride, self.padding)
