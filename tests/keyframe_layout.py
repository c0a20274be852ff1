"""A tiny AVA v2.2 layout (frames/ at 30 fps, GT and proposal CSVs, a 6-action label map) whose frames paint
each GT box of the nearest keyframe in its own grey on black: the reference of the box transforms."""
import csv

import numpy as np

HEIGHT, WIDTH = 48, 80  # landscape, so the canvas pads and the crop slides along x
FPS = 10
GREYS = (250, 140)
VIDEOS = ("vidA", "vidB")
GT = {  # (video, timestamp) -> [(box, actions)]
    ("vidA", 902): [((0.10, 0.20, 0.40, 0.70), (1, 5)), ((0.55, 0.30, 0.90, 0.95), (2,))],
    ("vidA", 903): [((0.15, 0.25, 0.45, 0.75), (3,)), ((0.60, 0.10, 0.85, 0.60), (2, 4))],
    ("vidB", 902): [((0.30, 0.10, 0.70, 0.90), (6,))],
}
PROPOSALS = {("vidA", 902): [((0.11, 0.21, 0.41, 0.69), 0.95), ((0.0, 0.0, 0.2, 0.2), 0.5)],
             ("vidB", 902): [((0.31, 0.12, 0.69, 0.88), 0.85), ((0.5, 0.5, 0.6, 0.6), 0.81),
                             ((0.1, 0.1, 0.3, 0.3), 0.99)]}


def _frame(video, n):
    """Frame n (1-based, 30 fps) of `video`: black, with the boxes of the keyframe nearest in time painted."""
    second = 900 + (n - 1) / 30
    key = min((k for k in GT if k[0] == video), key=lambda k: abs(k[1] - second))
    img = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    for i, (box, _) in enumerate(GT[key]):
        x1, y1, x2, y2 = box
        img[round(y1 * HEIGHT):round(y2 * HEIGHT), round(x1 * WIDTH):round(x2 * WIDTH)] = GREYS[i]
    return img


def build_layout(root, data_dir) -> str:
    """Writes the layout into `root` (frames/, the CSVs, the label map) and builds it as `ava/boxes` into
    `data_dir` (10 fps, short side 48); returns data_dir."""
    from PIL import Image

    from stjax.data import build

    for video in VIDEOS:
        folder = root / "frames" / video
        folder.mkdir(parents=True)
        for n in range(1, 131):  # seconds 900 … 904.3
            Image.fromarray(_frame(video, n)).save(folder / f"{video}_{n:06d}.jpg", quality=95)
    for split in ("train", "val"):
        with open(root / f"ava_{split}_v2.2.csv", "w", newline="") as f:
            for (video, ts), boxes in GT.items():
                for person, (box, actions) in enumerate(boxes):
                    for a in actions:
                        csv.writer(f).writerow([video, ts, *box, a, person])
    with open(root / "ava_val_predicted_boxes.csv", "w", newline="") as f:
        for (video, ts), rows in PROPOSALS.items():
            for box, score in rows:
                csv.writer(f).writerow([video, ts, *box, "", score])
    (root / "ava_action_list_v2.2_for_activitynet_2019.pbtxt").write_text(
        "".join(f'item {{ name: "a{i}" id: {i} }}\n' for i in range(1, 7)))
    build.build("ava", manual_dir=str(root), data_dir=str(data_dir), config="boxes", fps=FPS,
                short_side=HEIGHT, workers=1, verbose=False)
    return str(data_dir)
