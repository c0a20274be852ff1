"""torchvision.ops.roi_align on the requests of tests/test_roi_align.py, in its own process (torchvision must
not be imported beside TensorFlow: the two crash together).

    python tests/torchvision_roi_reference.py REQUESTS.npz OUT.npz

REQUESTS.npz holds, for each request NAME: NAME/features [N, H, W, C], NAME/boxes [N, M, 4], NAME/args
(oh, ow, spatial_scale, sampling_ratio, aligned) and optionally NAME/cotangent [N, M, oh, ow, C]; OUT.npz gets
NAME/out [N, M, oh, ow, C] and, with a cotangent, NAME/grad [N, H, W, C] (channels last, as stjax).
"""
import sys

import numpy as np
import torch
from torchvision.ops import roi_align


def main(requests_path, out_path):
    requests = np.load(requests_path)
    names = sorted({key.split("/")[0] for key in requests.files})
    out = {}
    for name in names:
        features, boxes = requests[f"{name}/features"], requests[f"{name}/boxes"]
        oh, ow, scale, sampling, aligned = requests[f"{name}/args"].tolist()
        n, m = boxes.shape[:2]
        x = torch.tensor(features).permute(0, 3, 1, 2).requires_grad_(True)
        y = roi_align(x, [torch.tensor(b) for b in boxes], (int(oh), int(ow)), float(scale), int(sampling),
                      bool(aligned))
        out[f"{name}/out"] = y.detach().numpy().reshape(n, m, features.shape[-1], int(oh), int(ow)).transpose(
            0, 1, 3, 4, 2)
        if f"{name}/cotangent" in requests.files:
            cotangent = torch.tensor(requests[f"{name}/cotangent"]).reshape(n * m, int(oh), int(ow), -1)
            y.backward(cotangent.permute(0, 3, 1, 2))
            out[f"{name}/grad"] = x.grad.permute(0, 2, 3, 1).numpy()
    np.savez(out_path, **out)


if __name__ == "__main__":
    main(*sys.argv[1:])
