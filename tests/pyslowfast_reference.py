"""An independent PyTorch implementation of PySlowFast's Slow ResNet (the official layout), for parity tests.

Module names follow PySlowFast (`s1.pathway0_stem.conv`, `s2.pathway0_res0.branch2.a_bn`, ...), so a
state dict in the `pyslowfast` export format loads with strict=True. Written from the architecture
description (REFERENCE.md, PySlowFast's ResNet with stride in the 1×3×3 conv), not from stjax's code.
"""
import torch
from torch import nn


def randomize_batch_norm(model: nn.Module) -> None:
    """Random BatchNorm scales, shifts and running statistics, so parity tests exercise all four."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.0)
                module.bias.uniform_(-0.1, 0.1)


class Bottleneck(nn.Module):
    def __init__(self, dim_in, dim_out, inner, temporal_kernel, stride):
        super().__init__()
        self.a = nn.Conv3d(dim_in, inner, (temporal_kernel, 1, 1), padding=(temporal_kernel // 2, 0, 0), bias=False)
        self.a_bn = nn.BatchNorm3d(inner, eps=1e-5, momentum=0.1)
        self.b = nn.Conv3d(inner, inner, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False)
        self.b_bn = nn.BatchNorm3d(inner, eps=1e-5, momentum=0.1)
        self.c = nn.Conv3d(inner, dim_out, 1, bias=False)
        self.c_bn = nn.BatchNorm3d(dim_out, eps=1e-5, momentum=0.1)

    def forward(self, x):
        x = torch.relu(self.a_bn(self.a(x)))
        x = torch.relu(self.b_bn(self.b(x)))
        return self.c_bn(self.c(x))


class ResBlock(nn.Module):
    def __init__(self, dim_in, dim_out, inner, temporal_kernel, stride):
        super().__init__()
        if dim_in != dim_out or stride != 1:
            self.branch1 = nn.Conv3d(dim_in, dim_out, 1, stride=(1, stride, stride), bias=False)
            self.branch1_bn = nn.BatchNorm3d(dim_out, eps=1e-5, momentum=0.1)
        self.branch2 = Bottleneck(dim_in, dim_out, inner, temporal_kernel, stride)

    def forward(self, x):
        shortcut = self.branch1_bn(self.branch1(x)) if hasattr(self, "branch1") else x
        return torch.relu(shortcut + self.branch2(x))


class Stage(nn.Module):
    def __init__(self, depth, dim_in, inner, temporal_kernel, stride):
        super().__init__()
        self.depth = depth
        for i in range(depth):
            block = ResBlock(dim_in if i == 0 else inner * 4, inner * 4, inner, temporal_kernel,
                             stride if i == 0 else 1)
            self.add_module(f"pathway0_res{i}", block)

    def forward(self, x):
        for i in range(self.depth):
            x = getattr(self, f"pathway0_res{i}")(x)
        return x


class Stem(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 64, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False)
        self.bn = nn.BatchNorm3d(64, eps=1e-5, momentum=0.1)
        self.pool_layer = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x):
        return self.pool_layer(torch.relu(self.bn(self.conv(x))))


class StemHolder(nn.Module):
    def __init__(self):
        super().__init__()
        self.pathway0_stem = Stem()

    def forward(self, x):
        return self.pathway0_stem(x)


class SlowResNet(nn.Module):
    """Slow R-50 (depth 50) or R-101 (depth 101); forward: [B, 3, T, H, W] -> pooled [B, 2048]."""

    def __init__(self, depth=50):
        super().__init__()
        depths = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
        self.s1 = StemHolder()
        dim_in = 64
        for s, (d, inner, kt, stride) in enumerate(zip(depths, (64, 128, 256, 512), (1, 1, 3, 3), (1, 2, 2, 2))):
            setattr(self, f"s{s + 2}", Stage(d, dim_in, inner, kt, stride))
            dim_in = inner * 4

    def forward(self, x):
        x = self.s1(x)
        for s in range(2, 6):
            x = getattr(self, f"s{s}")(x)
        return x.mean(dim=(2, 3, 4))
