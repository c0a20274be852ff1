"""torchvision's video ResNets in a process of their own, for the parity tests.

Importing torchvision (through torch._dynamo) after TensorFlow crashes the process, and the test
suite has TensorFlow loaded, so tests run this script with `subprocess`:

    python torchvision_reference.py make DIR NAME...   # random weights and BN statistics -> DIR/NAME.pth,
                                                       # a clip DIR/x.npy and torchvision's features DIR/NAME.npy
    python torchvision_reference.py features X [NAME STATE OUT]...   # strict-load STATE, features of X -> OUT

Several models per call: starting torch and torchvision takes longer than the models.

Clips are channels-last float32 [B, T, H, W, 3]; features [B, 512] (the classifier is replaced by Identity).
"""
import os
import sys

import numpy as np
import torch
import torchvision
from pyslowfast_reference import randomize_batch_norm  # this script's folder is on sys.path


def model_without_classifier(name: str) -> torch.nn.Module:
    model = getattr(torchvision.models.video, name)(weights=None)
    model.fc = torch.nn.Identity()
    return model.eval()


def features(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3)))).numpy()


def make(name: str, out_dir: str) -> None:
    torch.manual_seed(1)
    model = model_without_classifier(name)
    randomize_batch_norm(model)
    x = np.random.default_rng(7).standard_normal((2, 8, 48, 48, 3)).astype(np.float32)
    torch.save(model.state_dict(), os.path.join(out_dir, f"{name}.pth"))
    np.save(os.path.join(out_dir, "x.npy"), x)
    np.save(os.path.join(out_dir, f"{name}.npy"), features(model, x))


def features_of(name: str, state_path: str, x_path: str, out_path: str) -> None:
    model = model_without_classifier(name)
    for p in model.parameters():  # nothing of the fresh model may survive the load
        torch.nn.init.normal_(p)
    model.load_state_dict(torch.load(state_path, map_location="cpu", weights_only=True), strict=True)
    np.save(out_path, features(model.eval(), np.load(x_path)))


if __name__ == "__main__":
    command, first, *rest = sys.argv[1:]
    if command == "make":
        for name in rest:
            make(name, first)
    elif command == "features":
        for i in range(0, len(rest), 3):
            name, state_path, out_path = rest[i:i + 3]
            features_of(name, state_path, first, out_path)
    else:
        raise SystemExit(f"unknown command {command!r}; valid: make, features")
