"""The PyTorch side of bench/train_step.py: the same ρBYOL training step, written as a PyTorch user would.

`TorchResNet3D(backbone)` builds, from the fields of an stjax `ResNet3D` module, the same network in
PyTorch (the same stem, blocks, widths, kernels, strides and padding, BatchNorm after every conv), so
that both sides compute the same function: their parameter counts are printed side by side and
tests/test_bench_train_step.py checks them equal for every registered backbone. `ByolStep` is one
ρBYOL step on it: online backbone → projector → predictor, the momentum target's projections of the
same clips, the loss of `stjax.objectives.losses.byol_loss` (every other clip of the video is a
positive), backward, an optimiser step and the EMA of the target, with the usual PyTorch speed
settings: bf16 autocast, channels-last-3d, cuDNN benchmark mode and, where asked, torch.compile.

torch has no LARS; the reference uses its fused SGD with Nesterov momentum in its place.
Imports torch (and nothing of TensorFlow); only bench/train_step.py's child processes import it.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def _conv(cin: int, cout: int, kernel, strides=(1, 1, 1)) -> nn.Conv3d:
    kernel = tuple(int(k) for k in kernel)
    return nn.Conv3d(cin, cout, kernel, stride=tuple(int(s) for s in strides),
                     padding=tuple(k // 2 for k in kernel), bias=False)


def _bn(channels: int) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(channels, eps=1e-5, momentum=0.1)


class _Shortcut(nn.Module):
    def __init__(self, cin: int, cout: int, strides):
        super().__init__()
        self.project = cin != cout or tuple(strides) != (1, 1, 1)
        if self.project:
            self.conv = _conv(cin, cout, (1, 1, 1), strides)
            self.bn = _bn(cout)

    def forward(self, x):
        return self.bn(self.conv(x)) if self.project else x


class _Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, expansion: int, kt: int, strides):
        super().__init__()
        cout = width * expansion
        self.branch = nn.Sequential(
            _conv(cin, width, (kt, 1, 1)), _bn(width), nn.ReLU(inplace=True),
            _conv(width, width, (1, 3, 3), strides), _bn(width), nn.ReLU(inplace=True),
            _conv(width, cout, (1, 1, 1)), _bn(cout))
        self.shortcut = _Shortcut(cin, cout, strides)

    def forward(self, x):
        return torch.relu(self.shortcut(x) + self.branch(x))


def _conv2plus1d(cin: int, cout: int, mid: int, kt: int, strides) -> list[nn.Module]:
    st, sh, sw = strides
    return [_conv(cin, mid, (1, 3, 3), (1, sh, sw)), _bn(mid), nn.ReLU(inplace=True),
            _conv(mid, cout, (kt, 1, 1), (st, 1, 1))]


class _Basic(nn.Module):
    def __init__(self, cin: int, width: int, expansion: int, kt: int, strides, factorized: bool):
        super().__init__()
        from stjax.models.resnet3d import factorized_mid_channels

        cout = width * expansion
        if factorized:
            mid = factorized_mid_channels(cin, cout, kt)
            first = _conv2plus1d(cin, cout, mid, kt, strides)
            second = _conv2plus1d(cout, cout, mid, kt, (1, 1, 1))
        else:
            first, second = [_conv(cin, cout, (kt, 3, 3), strides)], [_conv(cout, cout, (kt, 3, 3))]
        self.branch = nn.Sequential(*first, _bn(cout), nn.ReLU(inplace=True), *second, _bn(cout))
        self.shortcut = _Shortcut(cin, cout, strides)

    def forward(self, x):
        return torch.relu(self.shortcut(x) + self.branch(x))


class TorchResNet3D(nn.Module):
    """The network of an stjax `ResNet3D` (any registered backbone) in PyTorch: [N, 3, T, H, W] → [N, D]."""

    def __init__(self, spec):
        super().__init__()
        layers: list[nn.Module] = []
        if spec.stem == "conv":
            layers.append(_conv(3, spec.stem_features, spec.stem_kernel, spec.stem_strides))
        else:
            (kt, kh, kw), (st, sh, sw) = spec.stem_kernel, spec.stem_strides
            layers += [_conv(3, spec.stem_mid_features, (1, kh, kw), (1, sh, sw)), _bn(spec.stem_mid_features),
                       nn.ReLU(inplace=True), _conv(spec.stem_mid_features, spec.stem_features, (kt, 1, 1),
                                                    (st, 1, 1))]
        layers += [_bn(spec.stem_features), nn.ReLU(inplace=True)]
        if spec.stem_pool:
            layers.append(nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)))
        cin = spec.stem_features
        expansion = spec.block_expansion
        for s, depth in enumerate(spec.stage_depths):
            for b in range(depth):
                strides = ((spec.temporal_strides[s], spec.spatial_strides[s], spec.spatial_strides[s])
                           if b == 0 else (1, 1, 1))
                kt = spec.temporal_kernels[s]
                if spec.block == "bottleneck":
                    layers.append(_Bottleneck(cin, spec.widths[s], expansion, kt, strides))
                else:
                    layers.append(_Basic(cin, spec.widths[s], expansion, kt, strides,
                                         factorized=spec.block == "basic2plus1d"))
                cin = spec.widths[s] * expansion
        self.body = nn.Sequential(*layers)
        self.features_dim = cin

    def forward(self, x):
        return self.body(x).float().mean(dim=(2, 3, 4))


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    """BYOL's projector / predictor: (Linear without bias → BN → ReLU) per hidden layer, then Linear."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_dim, h, bias=False), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
        in_dim = h
    return nn.Sequential(*layers, nn.Linear(in_dim, out_dim))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def byol_loss(predictions: torch.Tensor, targets: torch.Tensor, rho: int) -> torch.Tensor:
    """`stjax.objectives.losses.byol_loss` with pairing "all": predictions, targets [B, ρ, D]."""
    p = nn.functional.normalize(predictions.float(), dim=-1)
    z = nn.functional.normalize(targets.float(), dim=-1)
    cos = torch.einsum("bid,bjd->bij", p, z)
    if rho == 1:
        weights = torch.ones(1, 1, device=cos.device)
    else:
        weights = (1.0 - torch.eye(rho, device=cos.device)) / (rho - 1)
    return (weights * (2.0 - 2.0 * cos)).sum(dim=(1, 2)).mean()


class ByolStep:
    """One ρBYOL training step in PyTorch on uint8 clips [B·ρ, 3, T, H, W] (B videos of ρ clips, video-major)."""

    MEAN, STD = 0.45, 0.225  # stjax.train.step's normalisation

    def __init__(self, backbone_spec, rho: int, projector_hidden=(4096,), projector_out=256,
                 predictor_hidden=(4096,), lr=0.1, momentum=0.996, dtype="bfloat16", compile=False,
                 device="cuda"):
        self.rho = rho
        self.device = torch.device(device)
        self.autocast_dtype = {"bfloat16": torch.bfloat16, "float32": None}[dtype]
        backbone = TorchResNet3D(backbone_spec)
        self.backbone_parameters = count_parameters(backbone)
        projector = mlp(backbone.features_dim, tuple(projector_hidden), projector_out)
        self.online = nn.Sequential(backbone, projector).to(self.device, memory_format=torch.channels_last_3d)
        self.predictor = mlp(projector_out, tuple(predictor_hidden), projector_out).to(self.device)
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.params = list(self.online.parameters()) + list(self.predictor.parameters())
        fused = self.device.type == "cuda"
        self.optimizer = torch.optim.SGD(self.params, lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-6,
                                         fused=fused or None)
        self.momentum = momentum
        self._online_ema = list(self.online.parameters())
        self._target_ema = list(self.target.parameters())
        self._loss = torch.compile(self._forward_loss) if compile else self._forward_loss

    def _forward_loss(self, clips_uint8: torch.Tensor) -> torch.Tensor:
        x = (clips_uint8.float() / 255.0 - self.MEAN) / self.STD
        x = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            projections = self.online(x)
            predictions = self.predictor(projections)
            with torch.no_grad():
                targets = self.target(x)
        b = x.shape[0] // self.rho
        return byol_loss(predictions.view(b, self.rho, -1), targets.view(b, self.rho, -1), self.rho)

    def __call__(self, clips_uint8: torch.Tensor) -> torch.Tensor:
        loss = self._loss(clips_uint8)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_lerp_(self._target_ema, self._online_ema, 1.0 - self.momentum)
        return loss
