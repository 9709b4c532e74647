"""The UCF-101 entry under its old name: `ucfpipe.datasets.ucf101` is where it lives now (see ucfpipe.datasets).

Kept so that `from ucfpipe import ucf101` goes on working; new code asks `ucfpipe.datasets` for a dataset."""

from .datasets.base import Clip, Split, hold_out_groups, missing_on_disk  # noqa: F401
from .datasets.ucf101 import (  # noqa: F401
    CLASS_INDEX_FILE,
    SPLITS,
    all_clips,
    parse_clip,
    read_all_splits,
    read_classes,
    read_split,
)
