"""UCF101 with its three official train/test splits.

Layout of the manual directory (as the official archives unpack)::

    DIR/UCF-101/<Class>/v_<Class>_gXX_cYY.avi     the videos (DIR/<Class>/... also works)
    DIR/ucfTrainTestlist/classInd.txt             `1 ApplyEyeMakeup` ...: 1-based class ids
    DIR/ucfTrainTestlist/trainlist0{1,2,3}.txt    `ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1`
    DIR/ucfTrainTestlist/testlist0{1,2,3}.txt     `ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi`

Label ids follow classInd.txt, 0-based (`1 ApplyEyeMakeup` is label 0); a listed
class id that disagrees with the video's folder is reported and the video skipped.

Folds are configs: `ucf101/fold1` (also plain `ucf101`), `ucf101/fold2`,
`ucf101/fold3`, each with the splits `train` and `test`. So every fold is read
with the same split names as any other dataset (`data.train_split=train`,
`data.eval_split=test`), only the folds you use are decoded and stored (each
fold holds all 13,320 videos once), and a custom storage config names its fold
(`--config fold2_s128 --split_fold 2 --short_side 128`). Splits per fold in one
config (`train_1`, `test_1`, ...) would store every video three times.

Stored by default at the source's 25 frames/s and 240-pixel short side
(nothing resampled up).
"""
from __future__ import annotations

import os

from stjax.data.builders import layout
from stjax.data.builders.base import Annotations, VideoDatasetBuilder, VideoEntry, fold_configs

LIST_DIR = "ucfTrainTestlist"
VIDEO_DIR = "UCF-101"


class Ucf101(VideoDatasetBuilder, skip_registration=True):
    """UCF101 (101 classes), one official split fold per config, stored as JPEG frames."""

    name = "ucf101"
    BUILDER_CONFIGS = fold_configs(fps=25.0, short_side=240)
    MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

    def _read_annotations(self, root: str) -> Annotations:
        list_dir = os.path.join(root, LIST_DIR)
        class_file = os.path.join(list_dir, "classInd.txt")
        if not os.path.isfile(class_file):
            raise FileNotFoundError(f"no {LIST_DIR}/classInd.txt in {root!r}; expected the layout:\n{__doc__}")
        classes = read_class_index(class_file)
        video_dir = VIDEO_DIR if os.path.isdir(os.path.join(root, VIDEO_DIR)) else ""
        fold = self.builder_config.split_fold
        annotations = Annotations(classes=classes, splits=["train", "test"], entries=[])
        for split in annotations.splits:
            name = f"{split}list{fold:02d}.txt"
            path = os.path.join(list_dir, name)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"no {LIST_DIR}/{name} in {root!r} (split fold {fold})")
            for line, text in layout.read_lines(path):
                listed, _, class_id = text.partition(" ")
                label = listed.split("/", 1)[0]
                rel = f"{video_dir}/{listed}" if video_dir else listed
                problem = _check_line(listed, class_id.strip(), label, classes)
                if problem:
                    annotations.skipped.append({"path": rel, "split": split,
                                                "reason": f"{name} line {line}: {problem}"})
                    continue
                annotations.entries.append(VideoEntry(video_id=listed, path=rel, label=label, split=split,
                                                      source=name))
        return annotations


def _check_line(listed: str, class_id: str, label: str, classes: list[str]) -> str | None:
    """Why a list line is unusable, or None."""
    if "/" not in listed:
        return f"{listed!r} is not <Class>/<video>"
    if class_id and label in classes:
        if not class_id.isdigit() or int(class_id) != classes.index(label) + 1:
            return f"class id {class_id} disagrees with classInd.txt ({label} is {classes.index(label) + 1})"
    return None


def read_class_index(path: str) -> list[str]:
    """Class names in label order from classInd.txt (`<1-based id> <name>` per line)."""
    by_id = {}
    for line, text in layout.read_lines(path):
        class_id, _, name = text.partition(" ")
        if not class_id.isdigit() or not name.strip():
            raise ValueError(f"{path} line {line}: expected `<id> <class name>`, got {text!r}")
        by_id[int(class_id)] = name.strip()
    if sorted(by_id) != list(range(1, len(by_id) + 1)):
        raise ValueError(f"{path}: class ids must be 1..{len(by_id)} without gaps")
    return [by_id[i] for i in range(1, len(by_id) + 1)]
