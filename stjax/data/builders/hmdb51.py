"""HMDB51 with its three official train/test splits.

Layout of the manual directory (as the official archives unpack)::

    DIR/<class>/<video>.avi           the videos (DIR/hmdb51_org/<class>/... also works)
    DIR/testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt
        one line per video of the class: `<video>.avi N`, N = 1 train, 2 test, 0 not used

Class names are the sorted `<class>` names of the split files (label ids
therefore the same in every fold). Folds are configs, `hmdb51/fold1` (also
plain `hmdb51`), `hmdb51/fold2`, `hmdb51/fold3`, each with splits `train` and
`test`, for the reasons given in `ucf101`'s docstring. Videos marked 0 are left
out and counted in the report's warnings; a code other than 0/1/2 is reported
and the video skipped.

Stored by default at the source's 30 frames/s and 240-pixel short side.
"""
from __future__ import annotations

import os
import re

from stjax.data.builders import layout
from stjax.data.builders.base import Annotations, VideoDatasetBuilder, VideoEntry, fold_configs

SPLIT_DIR = "testTrainMulti_7030_splits"
VIDEO_DIR = "hmdb51_org"
SPLIT_FILE = re.compile(r"^(?P<label>.+)_test_split(?P<fold>[0-9]+)\.txt$")
CODES = {"1": "train", "2": "test"}


class Hmdb51(VideoDatasetBuilder, skip_registration=True):
    """HMDB51 (51 classes), one official split fold per config, stored as JPEG frames."""

    name = "hmdb51"
    BUILDER_CONFIGS = fold_configs(fps=30.0, short_side=240)
    MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

    def _read_annotations(self, root: str) -> Annotations:
        split_dir = os.path.join(root, SPLIT_DIR)
        if not os.path.isdir(split_dir):
            raise FileNotFoundError(f"no {SPLIT_DIR}/ in {root!r}; expected the layout:\n{__doc__}")
        files = {}  # (class, fold) -> file name
        for name in sorted(os.listdir(split_dir)):
            match = SPLIT_FILE.match(name)
            if match:
                files[match["label"], int(match["fold"])] = name
        classes = sorted({label for label, _ in files})
        fold = self.builder_config.split_fold
        if not classes:
            raise FileNotFoundError(f"no <class>_test_split<N>.txt files in {split_dir!r}")
        absent = [c for c in classes if (c, fold) not in files]
        if absent:
            raise FileNotFoundError(f"{split_dir!r} has no split-{fold} file for: {', '.join(absent)}")
        video_dir = VIDEO_DIR if os.path.isdir(os.path.join(root, VIDEO_DIR)) else ""
        annotations = Annotations(classes=classes, splits=["train", "test"], entries=[])
        unused = 0
        for label in classes:
            name = files[label, fold]
            for line, text in layout.read_lines(os.path.join(split_dir, name)):
                video, _, code = text.rpartition(" ")
                video_id = f"{label}/{video.strip() or text}"
                rel = f"{video_dir}/{video_id}" if video_dir else video_id
                if code == "0":
                    unused += 1
                    continue
                if not video or code not in CODES:
                    annotations.skipped.append({"path": rel, "split": None,
                                                "reason": f"{name} line {line}: code {code!r} is not 0, 1 or 2"})
                    continue
                annotations.entries.append(VideoEntry(video_id=video_id, path=rel, label=label,
                                                      split=CODES[code], source=name))
        if unused:
            annotations.warnings.append({"path": None, "split": None,
                                         "warning": f"{unused} videos marked 0 (not used) in split fold {fold}"})
        return annotations
