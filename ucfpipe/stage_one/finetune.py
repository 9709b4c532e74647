"""`ucfpipe finetune`: transfer learning's classic second step. The backbone's last stage (VGG16: its top
convolutional block) is trained on frames of the split's training clips (each frame labelled with its video's
class), then the backbone's weights are written to a file that `ucfpipe extract --backbone B --weights FILE`
uses (its SHA-256 gives the new cache a new fingerprint).

Validation holds out whole groups of the training list, as stage two does; the test list is never read.
Frames are decoded on the fly by a `keras.utils.PyDataset` with worker threads, so memory does not grow with
the dataset; a random horizontal flip augments the training frames.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras
import numpy as np

from ucfpipe import datasets
from ucfpipe.config import FinetuneConfig, recorded
from ucfpipe.core import destinations, files, interrupts
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.core.files import write_json
from ucfpipe.core.locks import locked
from ucfpipe.core.provenance import versions
from ucfpipe.core.rng import seed_everything
from ucfpipe.models.backbones import get
from ucfpipe.models.callbacks import SafePoints
from ucfpipe.models.extractor import load_application, preprocess_layer, weights_identity
from ucfpipe.video.decode import VideoError, read_clip


class FrameBatches(keras.utils.PyDataset):
    """Batches of (frames, labels): `frames_per_clip` frames of each of batch_size / frames_per_clip clips."""

    def __init__(self, clips, config: FinetuneConfig, training: bool, seed: int):
        super().__init__(workers=config.workers, use_multiprocessing=False)
        self.clips, self.config, self.training = list(clips), config, training
        self.clips_per_batch = max(1, config.batch_size // config.frames_per_clip)
        self.rng = np.random.default_rng(seed)  # clip order; used only between epochs, never by workers
        self.epoch = 0
        self.order = np.arange(len(self.clips))
        if training:
            self.rng.shuffle(self.order)

    def __len__(self) -> int:
        return math.ceil(len(self.clips) / self.clips_per_batch)

    def __getitem__(self, index: int):
        chosen = self.order[index * self.clips_per_batch : (index + 1) * self.clips_per_batch]
        frames, labels = [], []
        for i in chosen:
            clip = self.clips[i]
            try:
                sampled = read_clip(Path(self.config.videos) / clip.relative_path, self.config.frames_per_clip, self.config.size)
            except VideoError:
                continue  # `ucfpipe check` reports such clips; fine-tuning just does without them
            frames.append(sampled.frames)
            labels += [clip.label] * len(sampled.frames)
        if not frames:
            size = self.config.size
            return np.zeros((0, size, size, 3), np.uint8), np.zeros((0,), np.int32)
        frames = np.concatenate(frames)
        if self.training:  # random horizontal flips: actions look the same mirrored
            # Seeded by (seed, epoch, batch): the worker threads share no generator, so flips are reproducible.
            flip = np.random.default_rng([self.config.seed, self.epoch, index]).random(len(frames)) < 0.5
            frames[flip] = frames[flip, :, ::-1]
        return frames, np.asarray(labels, np.int32)

    def on_epoch_end(self):
        self.epoch += 1
        if self.training:
            self.rng.shuffle(self.order)


def build_finetune_model(config: FinetuneConfig, num_classes: int) -> tuple[keras.Model, keras.Model]:
    """(the classifier to train, its backbone part whose weights are saved)."""
    spec = get(config.backbone)
    if config.backbone == "efficientnet_b0" and config.weights == "imagenet":
        # Keras gives EfficientNet's ImageNet model an extra input rescaling that only `weights="imagenet"` builds
        # (keras.applications.efficientnet, tensorflow#49930); the saved weights file would be extracted without
        # it, so the features would not be those of the model that was fine-tuned.
        raise UcfpipeError("fine-tuning efficientnet_b0 from ImageNet weights is not supported (Keras' ImageNet "
                           "EfficientNet has an input rescaling its weights file cannot carry); fine-tune another backbone")
    application = load_application(config.backbone, config.weights, config.size, config.seed)
    names = [layer.name for layer in application.layers]
    trainable_from = config.trainable_from or spec.finetune_from
    if trainable_from not in names:
        raise UcfpipeError(f"{config.backbone} has no layer {trainable_from!r} to train from; its last stage starts at "
                           f"{spec.finetune_from} (keras.applications.{spec.constructor}().summary() lists every layer)")
    first_trained = names.index(trainable_from)
    for position, layer in enumerate(application.layers):
        layer.trainable = position >= first_trained
    frames = keras.Input((config.size, config.size, 3), dtype="uint8", name="frames")
    # training=False: batch normalisation keeps its ImageNet statistics (Keras' transfer-learning advice); a
    # few thousand frames of one split would otherwise replace them. VGG16 has none.
    x = application(preprocess_layer(spec)(frames), training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(config.dropout, seed=config.seed)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="classes")(x)
    return keras.Model(frames, outputs, name=f"{config.backbone}_finetune"), application


def run(config: FinetuneConfig, log=print, verbose: int = 2) -> dict:
    """Fine-tune and write `config.out`; a lock beside it keeps a second finetune from writing it too."""
    config.validate()
    out = Path(config.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UcfpipeError(f"cannot create {out.parent}: {err.strerror}; choose a writable --out") from None
    destinations.output(out, "--out", stdout=False, in_place=False)  # the lock and NAME.json go beside it
    with locked(out.with_name(f".{out.name}.lock"), f"output {out}"):
        return _run(config, out, log, verbose)


def _run(config: FinetuneConfig, out: Path, log, verbose: int) -> dict:
    split = datasets.read_split(config.dataset, config.splits, config.split)
    missing = {c.video_id for c in datasets.missing_on_disk(split.train, config.videos)}
    train_clips = [c for c in split.train if c.video_id not in missing]
    if not train_clips:
        raise UcfpipeError(f"none of split {config.split}'s training clips are under {config.videos}; check --videos")
    train, val, val_groups = datasets.hold_out(split, train_clips, config.val_groups, config.seed)
    log(f"fine-tuning {config.backbone} from {config.trainable_from} on {len(train)} clips x {config.frames_per_clip} frames "
        f"(validation: {len(val)} clips of groups {val_groups}; {len(missing)} listed clips missing on disk)")
    seed_everything(config.seed)
    model, backbone = build_finetune_model(config, len(split.classes))
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    started = time.time()
    history = model.fit(
        FrameBatches(train, config, training=True, seed=config.seed),
        validation_data=FrameBatches(val, config, training=False, seed=config.seed),
        epochs=config.epochs, verbose=verbose,
        callbacks=[keras.callbacks.EarlyStopping("val_accuracy", patience=config.patience, restore_best_weights=True),
                   SafePoints()],
    )
    interrupts.check()
    with files.replacing(out, keep_suffix=True) as tmp:  # keeps the .weights.h5 ending Keras requires
        backbone.save_weights(tmp)
    record = {
        "config": recorded(config),
        "started_from": weights_identity(config.weights, config.seed, config.backbone),
        "val_groups": val_groups,
        "history": {k: [float(v) for v in values] for k, values in history.history.items()},
        "seconds": round(time.time() - started, 1),
        "versions": versions(),
        "weights_sha256": weights_identity(str(out), config.seed, config.backbone)["sha256"],
    }
    write_json(out.with_name(out.name + ".json"), record)
    log(f"wrote {out} ({record['seconds']} s); extract with it: ucfpipe extract --backbone {config.backbone} --weights {out} --out NEW_DIR")
    return record

