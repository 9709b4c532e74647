"""The synthetic dataset: UCF-101's exact layout and list format, reproducibility, decodable videos, and the
time-reversal property that makes its classes separable only by frame order."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers import opencv_frames
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.datasets import synth
from ucfpipe.datasets.synth import DEFAULT_CLASSES, clip_num_frames, generate_dataset, render_clip, split_blocks

PARAMS = dict(num_classes=6, num_groups=6, clips_per_group=3, min_frames=24, max_frames=64, seed=0)
LINE = re.compile(r"^(?P<folder>[A-Za-z]+)/v_(?P<name>[A-Za-z]+)_g(?P<group>\d\d)_c(?P<clip>\d\d)\.avi$")
# Small and quick, for tests that generate several datasets.
SMALL = dict(num_classes=2, num_groups=3, clips_per_group=1, frame_size=(64, 48), min_frames=4, max_frames=12)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict:
    return generate_dataset(tmp_path_factory.mktemp("synth"), **PARAMS)


decode = opencv_frames


def count_frames(path: Path) -> tuple[int, int, int]:
    """(decoded frames, width, height)."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    count = 0
    while capture.grab():
        count += 1
    size = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    capture.release()
    return (count, *size)


def read_lines(path: Path) -> list[str]:
    data = path.read_bytes()
    assert data.endswith(b"\r\n"), f"{path.name} must end with CRLF"
    lines = data.decode("ascii").split("\r\n")[:-1]
    assert all("\n" not in line and "\r" not in line for line in lines), f"{path.name} mixes line endings"
    return lines


def parse(line: str) -> tuple[str, int, int]:
    match = LINE.match(line)
    assert match, line
    assert match["folder"] == match["name"], line
    return match["folder"], int(match["group"]), int(match["clip"])


def test_class_names_are_ucf_style_pairs():
    assert len(DEFAULT_CLASSES) >= 8 and len(DEFAULT_CLASSES) % 2 == 0
    assert len(set(DEFAULT_CLASSES)) == len(DEFAULT_CLASSES)
    assert all(re.fullmatch(r"[A-Z][A-Za-z]*", name) for name in DEFAULT_CLASSES)
    assert DEFAULT_CLASSES[:6] == ("GrowingDisk", "ShrinkingDisk", "FadingIn", "FadingOut", "RedToBlue", "BlueToRed")


def test_layout_and_counts(dataset):
    videos, splits = Path(dataset["videos"]), Path(dataset["splits"])
    assert videos.name == "UCF-101" and splits.name == "ucfTrainTestlist" and videos.parent == splits.parent
    assert dataset["classes"] == list(DEFAULT_CLASSES[:6])
    assert dataset["num_clips"] == 6 * 6 * 3
    assert dataset["fourcc"] in ("XVID", "MJPG")
    assert sorted(p.name for p in videos.iterdir()) == sorted(dataset["classes"])
    for name in dataset["classes"]:
        expected = {f"v_{name}_g{g:02d}_c{c:02d}.avi" for g in range(1, 7) for c in range(1, 4)}
        assert {p.name for p in (videos / name).iterdir()} == expected  # and no temporary files left behind
    expected_lists = {"classInd.txt"} | {f"{kind}list0{s}.txt" for kind in ("train", "test") for s in (1, 2, 3)}
    assert {p.name for p in splits.iterdir()} == expected_lists


def test_list_files_use_the_official_format(dataset):
    splits, videos = Path(dataset["splits"]), Path(dataset["videos"])
    class_lines = read_lines(splits / "classInd.txt")
    assert class_lines == [f"{i} {name}" for i, name in enumerate(dataset["classes"], 1)]
    index = {name: i for i, name in enumerate(dataset["classes"], 1)}
    for s in (1, 2, 3):
        train, test = read_lines(splits / f"trainlist0{s}.txt"), read_lines(splits / f"testlist0{s}.txt")
        keys = []
        for line in train:
            path, label = line.split(" ")
            folder, group, clip = parse(path)
            assert int(label) == index[folder], line
            assert (videos / path).is_file(), line
            keys.append((index[folder], group, clip))
        assert keys == sorted(keys), f"trainlist0{s} must be sorted by class, group, clip"
        keys = []
        for line in test:
            assert " " not in line, f"test lists carry no label: {line!r}"
            folder, group, clip = parse(line)
            assert (videos / line).is_file(), line
            keys.append((index[folder], group, clip))
        assert keys == sorted(keys), f"testlist0{s} must be sorted by class, group, clip"


def test_splits_hold_out_a_different_block_of_groups_each(dataset):
    splits, videos = Path(dataset["splits"]), Path(dataset["videos"])
    on_disk = {f"{p.parent.name}/{p.name}" for p in videos.glob("*/*.avi")}
    test_groups = []
    for s in (1, 2, 3):
        train = [line.split(" ")[0] for line in read_lines(splits / f"trainlist0{s}.txt")]
        test = read_lines(splits / f"testlist0{s}.txt")
        assert len(set(train)) == len(train) and len(set(test)) == len(test)
        assert set(train) | set(test) == on_disk and not set(train) & set(test)
        train_groups = {parse(line)[1] for line in train}
        groups = {parse(line)[1] for line in test}
        assert not train_groups & groups, f"split {s}: a group is in both train and test"
        test_groups.append(sorted(groups))
    assert test_groups == [[1, 2], [3, 4], [5, 6]]


def test_split_blocks_are_contiguous_and_near_equal():
    assert split_blocks(3) == [[1], [2], [3]]
    assert split_blocks(7) == [[1, 2, 3], [4, 5], [6, 7]]
    for groups in range(3, 30):
        blocks = split_blocks(groups)
        assert sum(blocks, []) == list(range(1, groups + 1))
        assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


def test_videos_decode_exactly_the_intended_frames(dataset):
    videos = Path(dataset["videos"])
    counts = []
    for label, name in enumerate(dataset["classes"]):
        for path in sorted((videos / name).glob("*.avi")):
            _, group, clip = parse(f"{name}/{path.name}")
            lengths = {key: PARAMS[key] for key in ("min_frames", "max_frames", "seed")}
            intended = clip_num_frames(label, group, clip, **lengths)
            assert count_frames(path) == (intended, 160, 120), path
            counts.append(intended)
    assert len(render_clip(1, 2, 3, seed=PARAMS["seed"])) == clip_num_frames(1, 2, 3, seed=PARAMS["seed"])
    assert min(counts) >= PARAMS["min_frames"] and max(counts) <= PARAMS["max_frames"]
    assert len(set(counts)) > 10, "clip lengths should vary"


def test_decoded_frames_match_the_rendered_ones_in_bgr(dataset):
    path = Path(dataset["videos"]) / "RedToBlue" / "v_RedToBlue_g01_c01.avi"
    decoded = decode(path).astype(np.float32)
    rendered = render_clip(DEFAULT_CLASSES.index("RedToBlue"), 1, 1, seed=0).astype(np.float32)
    assert np.abs(decoded - rendered).mean() < 8  # lossy, but close
    first, last = decoded[0].mean(axis=(0, 1)), decoded[-1].mean(axis=(0, 1))  # B, G, R
    assert first[2] > first[0] + 30 and last[0] > last[2] + 30, "RedToBlue must start red and end blue in BGR"


def test_short_and_long_clips(tmp_path):
    summary = generate_dataset(tmp_path, **{**SMALL, "min_frames": 1, "max_frames": 40, "clips_per_group": 4})
    counts = [len(decode(p)) for p in Path(summary["videos"]).glob("*/*.avi")]
    assert min(counts) < 16 < max(counts) and 1 <= min(counts) and max(counts) <= 40


def test_same_seed_same_output_and_another_seed_differs(tmp_path):
    first = generate_dataset(tmp_path / "a", **SMALL, seed=0)
    again = generate_dataset(tmp_path / "b", **SMALL, seed=0)
    other = generate_dataset(tmp_path / "c", **SMALL, seed=1)
    more = generate_dataset(tmp_path / "d", **{**SMALL, "num_classes": 4, "num_groups": 4}, seed=0)
    for name in ["classInd.txt"] + [f"{kind}list0{s}.txt" for kind in ("train", "test") for s in (1, 2, 3)]:
        assert (Path(first["splits"]) / name).read_bytes() == (Path(again["splits"]) / name).read_bytes()
    relative = sorted(str(p.relative_to(first["videos"])) for p in Path(first["videos"]).glob("*/*.avi"))
    assert len(relative) == 2 * 3
    for rel in relative:
        frames = decode(Path(first["videos"]) / rel)
        assert np.array_equal(frames, decode(Path(again["videos"]) / rel)), rel
        # A clip depends only on (seed, class, group, clip), not on what else is generated.
        assert np.array_equal(frames, decode(Path(more["videos"]) / rel)), rel
        changed = decode(Path(other["videos"]) / rel)
        assert changed.shape != frames.shape or not np.array_equal(changed, frames), rel


def test_regenerating_in_place_needs_replace_and_then_replaces_files(tmp_path):
    generate_dataset(tmp_path, **SMALL, seed=0)
    with pytest.raises(UcfpipeError, match="is not empty.*--replace"):
        generate_dataset(tmp_path, **SMALL, seed=0)
    summary = generate_dataset(tmp_path, **SMALL, seed=0, replace=True)
    assert len(list(Path(summary["videos"]).glob("*/*"))) == 2 * 3


def test_a_video_that_fails_its_check_is_not_left_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(synth, "_decoded_shape", lambda path: (0, 0, 0))
    with pytest.raises(RuntimeError, match="reading back gives 0 frames"):
        generate_dataset(tmp_path, **SMALL)
    assert list((tmp_path / "UCF-101").glob("*/*")) == []  # neither a final name nor a temporary one


# -- the time-reversal property ---------------------------------------------------------------------------


def size_proxy(frames: np.ndarray) -> np.ndarray:
    """Per frame: the fraction of pixels far from the background colour, read from the corners (never covered)."""
    corners = np.concatenate([frames[:, :4, :4], frames[:, :4, -4:], frames[:, -4:, :4], frames[:, -4:, -4:]], axis=1)
    background = np.median(corners.reshape(len(frames), -1, 3), axis=1).astype(np.int16)
    sample = frames[:, ::2, ::2].astype(np.int16)  # every 4th pixel: plenty for an area fraction, 4x faster
    distance = np.abs(sample - background[:, None, None, :]).max(axis=-1)
    return (distance > 40).mean(axis=(1, 2))


def brightness(frames: np.ndarray) -> np.ndarray:
    return frames.reshape(len(frames), -1).mean(axis=1)


def redness(frames: np.ndarray) -> np.ndarray:
    channels = frames[:, ::2, ::2].mean(axis=(1, 2))  # B, G, R
    return channels[:, 2] - channels[:, 0]


@pytest.mark.parametrize(
    "forward, backward, statistic",
    [
        ("GrowingDisk", "ShrinkingDisk", size_proxy),
        ("FadingIn", "FadingOut", brightness),
        ("RedToBlue", "BlueToRed", redness),
    ],
)
def test_pairs_differ_only_in_temporal_order(dataset, forward, backward, statistic):
    videos = Path(dataset["videos"])
    summary = {}
    for name in (forward, backward):
        correlations, clip_means, changes = [], [], []
        for path in sorted((videos / name).glob("*.avi")):
            values = statistic(decode(path))
            correlations.append(np.corrcoef(np.arange(len(values)), values)[0, 1])
            clip_means.append(values.mean())
            changes.append(abs(values[-1] - values[0]))
        summary[name] = np.array(correlations), np.mean(clip_means), np.mean(changes)
    (corr_f, mean_f, change_f), (corr_b, mean_b, change_b) = summary[forward], summary[backward]
    # Opposite, strong trends over time in every clip ...
    if statistic is redness:  # red to blue: redness falls going forward
        corr_f, corr_b = -corr_f, -corr_b
    assert (corr_f > 0.9).all(), corr_f
    assert (corr_b < -0.9).all(), corr_b
    # ... while order-blind averages agree: the two class means differ by a small part of the within-clip change.
    assert abs(mean_f - mean_b) < 0.1 * min(change_f, change_b), (mean_f, mean_b, change_f, change_b)


# -- arguments ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"num_groups": 2},
        {"num_groups": 0},
        {"num_groups": 100},
        {"num_classes": 3},
        {"num_classes": 0},
        {"num_classes": len(DEFAULT_CLASSES) + 2},
        {"clips_per_group": 0},
        {"min_frames": 0},
        {"min_frames": 10, "max_frames": 9},
        {"frame_size": (63, 48)},
        {"frame_size": (8, 8)},
        {"frame_size": 64},
        {"fps": 0},
        {"seed": -1},
        {"num_groups": 3.5},
    ],
)
def test_bad_arguments_raise_value_error(tmp_path, bad):
    with pytest.raises(ValueError):
        generate_dataset(tmp_path, **{**SMALL, **bad})
    assert not (tmp_path / "UCF-101").exists(), "validation must come before writing anything"


def test_num_groups_error_says_why(tmp_path):
    with pytest.raises(ValueError, match="num_groups must be an integer >= 3"):
        generate_dataset(tmp_path, num_groups=2)
