"""Which clips a training run uses: one split's training list cut into training and validation along the
dataset's hold-out rule (whole groups, whole sources, or stratified clips), the test list recorded for `ucfpipe
eval`, and the stored views training may draw. Read by `train` before anything is written."""

from __future__ import annotations

from dataclasses import dataclass

from ucfpipe import datasets
from ucfpipe.cache.store import FeatureStore
from ucfpipe.config import TrainConfig
from ucfpipe.core.errors import UcfpipeError


@dataclass
class ClipPlan:
    train: list[datasets.Clip]
    val: list[datasets.Clip]
    test: list[datasets.Clip]  # recorded for `ucfpipe eval`; training never reads its features
    val_groups: list[int]
    train_groups: list[int]
    missing_train: list[str]
    missing_test: list[str]
    holdout: str = "groups"  # the split's rule (datasets.HOLDOUTS): whole groups, whole sources, or stratified clips
    val_sources: list[str] = ()  # the held-out groups by name ("g08", a source film); empty when stratified


def check_labels(split: datasets.Split, store: FeatureStore) -> None:
    """The cache's labels must be this classInd's: a cache made from other split files numbers classes otherwise."""
    if len(store) and int(store.labels(store.video_ids).max()) >= len(split.classes):
        raise UcfpipeError(
            f"feature cache {store.directory} has labels up to {int(store.labels(store.video_ids).max())} but classInd.txt "
            f"lists {len(split.classes)} classes; pass the --splits folder the cache was extracted with "
            f"({store.config.get('splits')})"
        )
    clips = [c for c in split.train + split.test if c.video_id in store]
    if clips:
        stored = store.labels([c.video_id for c in clips])
        wrong = [(c, int(s)) for c, s in zip(clips, stored) if s != c.label]
        if wrong:
            clip, found = wrong[0]
            raise UcfpipeError(
                f"{len(wrong)} clips have other labels in the cache than in classInd.txt (e.g. {clip.video_id}: "
                f"{found} in the cache, {clip.label} in the lists); pass the --splits folder the cache was extracted "
                f"with ({store.config.get('splits')}) or re-extract"
            )


def plan_clips(split: datasets.Split, store: FeatureStore, config: TrainConfig) -> ClipPlan:
    """Train/validation/test clips of the split that the cache holds; refuses missing clips unless allowed."""
    missing_train = [c.video_id for c in split.train if c.video_id not in store]
    missing_test = [c.video_id for c in split.test if c.video_id not in store]
    if (missing_train or missing_test) and not config.allow_missing:
        example = (missing_test or missing_train)[0]
        raise UcfpipeError(
            f"split {split.number}: {len(missing_test)} of {len(split.test)} test clips and {len(missing_train)} of "
            f"{len(split.train)} train clips are not in the feature cache {store.directory} (e.g. {example}); "
            "extract them (rerun `ucfpipe extract`), or pass --allow-missing to use the clips present "
            "(a smaller test set gives a different number; metrics.json records it)"
        )
    train = [c for c in split.train if c.video_id in store]
    test = [c for c in split.test if c.video_id in store]
    groups = sorted({c.group for c in train})
    if not groups:
        raise UcfpipeError(f"none of the {len(split.train)} training clips of split {split.number} is in {store.directory}")
    # The dataset's own rule (UCF-101: gGG groups; HMDB51: source films; otherwise stratified by class); every
    # rule holds out whole groups, so no group or source is on both sides.
    kept, val, val_groups = datasets.hold_out(split, train, config.val_groups, config.seed)
    held = set(val_groups)
    return ClipPlan(
        train=kept,
        val=val,
        test=test,
        val_groups=val_groups,
        train_groups=[g for g in groups if g not in held],
        missing_train=missing_train,
        missing_test=missing_test,
        holdout=split.holdout,
        val_sources=sorted({c.source for c in val} - {""}),
    )


def clip_ids(plan: ClipPlan) -> dict:
    """clips.json: the train / val / test video ids."""
    return {part: [c.video_id for c in getattr(plan, part)] for part in ("train", "val", "test")}


def training_views(store: FeatureStore, config: TrainConfig) -> list[int]:
    """Store view indices training draws from: every stored view with train_views "all", else the centre."""
    if config.train_views == "center" or len(store.views) == 1:
        return [0]
    return list(range(len(store.views)))


def holdout_note(plan: ClipPlan, part: str) -> str:
    """What the part of the training list was cut along, for the log."""
    if plan.holdout == "groups":
        return f"{'held-out ' if part == 'val' else ''}groups {_groups(plan.val_groups if part == 'val' else plan.train_groups)}"
    if plan.holdout == "sources":
        sources = {c.source for c in getattr(plan, part)} - {""}
        # HMDB51's source films, or your own videos' gNN groups and single files (folders with mixed names)
        return f"{'held-out ' if part == 'val' else ''}{len(sources)} sources (source videos or groups)"
    return "stratified by class, no groups known"


def _groups(groups: list[int]) -> str:
    return ",".join(f"g{g:02d}" for g in groups)
