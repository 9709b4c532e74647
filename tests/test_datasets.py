"""The dataset seam: HMDB51's official split format and a user's own folders, generated here, through every stage.

The HMDB51-format data is written by these tests in the official layout (`<class>_test_split<N>.txt`, lines
`<video file name> <id>`, videos at `<root>/<class>/<name>.avi`), the clips hard-linked from the synthetic set.
"""

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers import assert_one_line_error, invoke, tiny_flags
from ucfpipe import datasets
from ucfpipe.cache.store import FeatureStore
from ucfpipe.config import TrainConfig
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.datasets import hmdb51
from ucfpipe.datasets.synth import render_clip, split_blocks
from ucfpipe.serving import predict_files
from ucfpipe.stage_two import evaluate, train

TINY_TRAIN = {"units": 16, "epochs": 2, "batch_size": 8, "val_groups": 1, "learning_rate": 3e-3, "dropout": 0.2,
              "label_smoothing": 0.0, "patience": 10}
QUIET = {"log": lambda *_: None, "verbose": 0}
CLASSES = ("GrowingDisk", "ShrinkingDisk", "FadingIn", "FadingOut")  # the synthetic set's first four
GROUPS, CLIPS = 6, 2


def synth_path(synth_dataset, class_name, group, clip) -> Path:
    return Path(synth_dataset["videos"]) / class_name / f"v_{class_name}_g{group:02d}_c{clip:02d}.avi"


def hmdb_name(class_name, group, clip) -> str:
    """HMDB51's naming: source film, action, body/camera/people/view/quality tags, clip number. Group g of every
    class comes from the same film, so a source spans classes as real HMDB51 films do."""
    return f"Film_{group:02d}_{class_name}_u_nm_np1_fr_goo_{clip - 1}.avi"


def hmdb_part(number, group, clip) -> str:
    """Split N tests on the synthetic set's N-th block of groups; one clip per split is unused (id 0)."""
    blocks = split_blocks(GROUPS)
    if group in blocks[number - 1]:
        return "2"
    return "0" if (group, clip) == (blocks[number % 3][0], CLIPS) else "1"


@pytest.fixture(scope="module")
def hmdb_dataset(synth_dataset, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("hmdb")
    videos, splits = root / "hmdb51", root / "testTrainMulti_7030_splits"
    splits.mkdir()
    for class_name in CLASSES:
        (videos / class_name).mkdir(parents=True)
        for number in (1, 2, 3):
            lines = []
            for group in range(1, GROUPS + 1):
                for clip in range(1, CLIPS + 1):
                    name = hmdb_name(class_name, group, clip)
                    if number == 1:
                        os.link(synth_path(synth_dataset, class_name, group, clip), videos / class_name / name)
                    lines.append(f"{name} {hmdb_part(number, group, clip)} \n")  # the official files end lines in a space
            (splits / f"{class_name}_test_split{number}.txt").write_text("".join(lines))
    return {"videos": videos, "splits": splits, "dataset": "hmdb51"}


def write_video(path: Path, class_index: int, group: int, clip: int) -> None:
    frames = render_clip(class_index, group, clip, frame_size=(48, 32), min_frames=12, max_frames=16)
    fourcc = "mp4v" if path.suffix in (".mp4", ".mov") else "XVID"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (48, 32))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} to {path}"
    for frame in frames:
        writer.write(np.ascontiguousarray(frame))
    writer.release()


@pytest.fixture(scope="module")
def own_videos(tmp_path_factory) -> Path:
    """A user's folders: three classes of 8 videos with free names, .mp4, .avi and .mov mixed, no group numbers."""
    root = tmp_path_factory.mktemp("own") / "videos"
    for class_index, class_name in enumerate(("grow", "shrink", "fade_in")):
        (root / class_name).mkdir(parents=True)
        for clip in range(8):
            extension = (".mp4", ".avi", ".mov")[clip % 3]
            write_video(root / class_name / f"IMG {clip:04d}{extension}".replace(" ", "_"), class_index * 2, clip, 1)
    (root / "grow" / "notes.txt").write_text("not a video: ignored")
    return root


# -- HMDB51: the official format ----------------------------------------------------------------------------
def test_hmdb51_split_counts_labels_and_unused(hmdb_dataset):
    splits = datasets.read_all_splits("hmdb51", hmdb_dataset["splits"])
    assert [s.number for s in splits] == [1, 2, 3]
    for split in splits:
        assert split.classes == tuple(sorted(CLASSES))  # sorted class names, no class list given
        assert (len(split.train), len(split.test), len(split.unused)) == (4 * 7, 4 * 4, 4)
        assert not {c.video_id for c in split.train} & {c.video_id for c in split.test}
        assert not split.sources("train") & split.sources("test")
        assert split.holdout == "sources"
        assert {split.part_of(c.video_id) for c in split.unused} == {"unused"}
        for clip in split.train + split.test:
            assert split.classes[clip.label] == clip.class_name
            assert clip.relative_path == f"{clip.class_name}/{Path(clip.relative_path).name}"
            assert clip.extension == ".avi" and clip.source.startswith("Film_")


def test_hmdb51_source_is_the_name_before_the_action():
    assert hmdb51.source_of("April_09_brush_hair_u_nm_np1_ba_goo_0", "brush_hair") == "April_09"
    assert hmdb51.source_of("Brushing_my_hair_brush_hair_h_cm_np1_fr_med_2", "brush_hair") == "Brushing_my_hair"
    assert hmdb51.source_of("some_clip", "brush_hair") == ""


def test_hmdb51_class_list_file_orders_the_labels(hmdb_dataset, tmp_path):
    splits = tmp_path / "splits"
    splits.mkdir()
    for path in Path(hmdb_dataset["splits"]).iterdir():
        (splits / path.name).write_text(path.read_text())
    (splits / "classInd.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(CLASSES, 1)))
    assert datasets.read_split("hmdb51", splits, 1).classes == CLASSES


def test_validation_holds_out_whole_sources_spanning_classes(hmdb_dataset):
    split = datasets.read_split("hmdb51", hmdb_dataset["splits"], 1)
    for seed in range(5):
        kept, val, held = datasets.hold_out(split, list(split.train), 1, seed)
        assert val and kept and len(kept) + len(val) == len(split.train)
        assert not {c.source for c in kept} & {c.source for c in val}
        assert not {c.group for c in kept} & {c.group for c in val}
        assert {c.label for c in kept} == set(range(len(CLASSES)))  # no class loses its training clips
        assert {c.group for c in val} == set(held)


def test_hmdb51_names_without_sources_are_held_out_stratified(hmdb_dataset, tmp_path):
    splits = tmp_path / "splits"
    splits.mkdir()
    for path in Path(hmdb_dataset["splits"]).iterdir():
        (splits / path.name).write_text(path.read_text().replace("Film_", "").replace("_u_nm_np1_fr_goo", ""))
    split = datasets.read_split("hmdb51", splits, 1)
    assert split.holdout == "stratified"
    kept, val, _ = datasets.hold_out(split, list(split.train), 2, seed=0)
    assert sorted(np.bincount([c.label for c in val]).tolist()) == [2, 2, 2, 2]
    assert not {c.group for c in kept} & {c.group for c in val}
    with pytest.raises(UcfpipeError, match="lower --val-groups"):
        datasets.hold_out(split, list(split.train), 7, seed=0)


def test_hmdb51_bad_id_names_file_line_and_fix(hmdb_dataset, tmp_path):
    splits = tmp_path / "splits"
    splits.mkdir()
    for path in Path(hmdb_dataset["splits"]).iterdir():
        (splits / path.name).write_text(path.read_text())
    bad = splits / f"{CLASSES[1]}_test_split2.txt"
    lines = bad.read_text().splitlines()
    lines[4] = lines[4].rsplit(None, 1)[0] + " 3"
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "features"
    result = invoke("extract", "--dataset", "hmdb51", "--videos", hmdb_dataset["videos"], "--splits", splits,
                    "--out", out, "--weights", "none")
    assert_one_line_error(result, f"{bad}:5", "must be 1 (train), 2 (test) or 0")
    assert not out.exists()
    assert_one_line_error(invoke("splits", "--dataset", "hmdb51", "--splits", splits), f"{bad}:5")


def test_a_listed_video_missing_on_disk_names_the_list_line(hmdb_dataset, tmp_path):
    videos = tmp_path / "videos"
    for path in Path(hmdb_dataset["videos"]).rglob("*.avi"):
        (videos / path.parent.name).mkdir(parents=True, exist_ok=True)
        os.link(path, videos / path.parent.name / path.name)
    gone = sorted(videos.rglob("*.avi"))[3]
    gone.unlink()
    out = tmp_path / "features"
    result = invoke("extract", "--dataset", "hmdb51", "--videos", videos, "--splits", hmdb_dataset["splits"],
                    "--out", out, "--weights", "none")
    assert_one_line_error(result, f"{gone.parent.name}/{gone.name}", f"{gone.parent.name}_test_split1.txt:",
                          "--allow-missing")
    assert not out.exists()


def test_unknown_dataset_lists_the_choices(hmdb_dataset, tmp_path):
    for command in (["splits", "--splits", hmdb_dataset["splits"]],
                    ["check", "--videos", hmdb_dataset["videos"], "--splits", hmdb_dataset["splits"]],
                    ["extract", "--videos", hmdb_dataset["videos"], "--splits", hmdb_dataset["splits"], "--out", tmp_path / "f"]):
        assert_one_line_error(invoke(*command, "--dataset", "kinetics"), "ucf101, hmdb51, folders")
    assert not (tmp_path / "f").exists()


def test_splits_summary_for_hmdb51(hmdb_dataset):
    result = invoke("splits", "--dataset", "hmdb51", "--splits", hmdb_dataset["splits"], "--videos", hmdb_dataset["videos"])
    assert result.exit_code == 0, result.output
    assert "train sources / test sources" in result.output
    assert "1          28     16        4  4 sources / 2 sources  (no group shared)" in result.output
    assert "48 of 48 listed clips are under" in result.output


def test_a_cache_never_mixes_two_datasets(hmdb_dataset, synth_cache, tmp_path):
    cache = tmp_path / "features"
    shutil.copytree(synth_cache, cache)
    result = invoke("extract", "--dataset", "hmdb51", "--videos", hmdb_dataset["videos"], "--splits",
                    hmdb_dataset["splits"], "--out", cache, *tiny_flags())
    assert_one_line_error(result, "dataset")
    assert FeatureStore(cache).config.get("dataset", "ucf101") == "ucf101" and len(FeatureStore(cache)) == 108


@pytest.mark.slow
def test_hmdb51_every_stage_end_to_end(hmdb_dataset, tmp_path):
    out = tmp_path / "features"
    result = invoke("extract", "--dataset", "hmdb51", "--videos", hmdb_dataset["videos"], "--splits",
                    hmdb_dataset["splits"], "--out", out, *tiny_flags())
    assert result.exit_code == 0, result.output
    store = FeatureStore(out)
    assert store.config["dataset"] == "hmdb51" and len(store) == 48
    run_dir = tmp_path / "run"
    train.run(TrainConfig(features=str(out), splits=str(hmdb_dataset["splits"]), out=str(run_dir), **TINY_TRAIN), **QUIET)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["dataset"] == "hmdb51" and record["data"]["holdout"] == "sources"
    assert record["data"]["val_sources"] and record["data"]["num_train"] + record["data"]["num_val"] == 28
    metrics = evaluate.run(run_dir, log=lambda *_: None)
    assert metrics["num_test_clips"] == 16 and (run_dir / "metrics.json").is_file()
    [prediction] = predict_files.run([str(next(Path(hmdb_dataset["videos"]).rglob("*.avi")))], run_dir, top=2).items
    assert prediction.error is None and prediction.top[0][0] in CLASSES


# -- folders: a user's own videos ----------------------------------------------------------------------------
def test_splits_make_writes_ucf101_format_stratified_folds(own_videos, tmp_path):
    out = tmp_path / "lists"
    result = invoke("splits", "make", "--videos", own_videos, "--out", out, "--folds", 2, "--test-fraction", 0.25)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["classInd.txt", "testlist01.txt", "testlist02.txt",
                                                      "trainlist01.txt", "trainlist02.txt"]
    assert out.joinpath("classInd.txt").read_text() == "1 fade_in\n2 grow\n3 shrink\n"
    assert "fade_in/IMG_0000.mp4 1\n" in out.joinpath("trainlist01.txt").read_text() + out.joinpath("trainlist02.txt").read_text()
    splits = datasets.read_all_splits("folders", out)
    tests = []
    for split in splits:
        assert split.holdout == "stratified" and (len(split.train), len(split.test)) == (18, 6)
        assert np.bincount([c.label for c in split.test]).tolist() == [2, 2, 2]
        assert not {c.video_id for c in split.train} & {c.video_id for c in split.test}
        tests.append({c.video_id for c in split.test})
    assert not tests[0] & tests[1]  # the folds' test parts are disjoint
    assert {c.extension for c in datasets.all_clips("folders", out)} == {".mp4", ".avi", ".mov"}
    again = tmp_path / "again"
    invoke("splits", "make", "--videos", own_videos, "--out", again, "--folds", 2, "--test-fraction", 0.25)
    assert again.joinpath("testlist02.txt").read_text() == out.joinpath("testlist02.txt").read_text()  # from the seed


def grouped_videos(tmp_path, synth_dataset) -> Path:
    """Two classes of your own videos named take_gN_K.avi: GROUPS groups of 2 clips each (hard links)."""
    root = tmp_path / "videos"
    for class_name in CLASSES[:2]:
        (root / class_name).mkdir(parents=True)
        for group in range(1, GROUPS + 1):
            for clip in (1, 2):
                os.link(synth_path(synth_dataset, class_name, group, clip), root / class_name / f"take_g{group}_{clip}.avi")
    return root


def test_splits_make_keeps_groups_on_one_side(tmp_path, synth_dataset):
    root = grouped_videos(tmp_path, synth_dataset)
    out = tmp_path / "lists"
    assert invoke("splits", "make", "--videos", root, "--out", out, "--folds", 3).exit_code == 0
    for split in datasets.read_all_splits("folders", out):
        assert split.holdout == "groups"
        assert not split.groups("train") & split.groups("test")
        kept, val, _ = datasets.hold_out(split, list(split.train), 1, seed=0)
        assert val and not {c.group for c in kept} & {c.group for c in val}
        assert len({c.group for c in val}) == 1
    result = invoke("splits", "--dataset", "folders", "--splits", out)
    assert result.exit_code == 0 and "(no group shared)" in result.output, result.output


def test_splits_make_refuses_a_class_with_one_clip(own_videos, tmp_path):
    root = tmp_path / "videos"
    for path in own_videos.rglob("*.*"):
        (root / path.parent.name).mkdir(parents=True, exist_ok=True)
        os.link(path, root / path.parent.name / path.name)
    (root / "wave").mkdir()
    os.link(next(own_videos.rglob("*.mp4")), root / "wave" / "only.mp4")
    out = tmp_path / "lists"
    result = invoke("splits", "make", "--videos", root, "--out", out)
    assert_one_line_error(result, str(root / "wave"), "1 video,", "add videos to it or move the folder out")
    assert not out.exists() and not list(tmp_path.glob(".lists*"))


@pytest.mark.slow
def test_folders_every_stage_end_to_end(own_videos, tmp_path):
    lists = tmp_path / "lists"
    assert invoke("splits", "make", "--videos", own_videos, "--out", lists, "--test-fraction", 0.25).exit_code == 0
    check = invoke("check", "--dataset", "folders", "--videos", own_videos, "--splits", lists, "--frames", 8)
    assert check.exit_code == 0 and "checked 24 clips: 0 unusable" in check.output, check.output
    out = tmp_path / "features"
    result = invoke("extract", "--dataset", "folders", "--videos", own_videos, "--splits", lists, "--out", out, *tiny_flags())
    assert result.exit_code == 0, result.output
    assert FeatureStore(out).config["dataset"] == "folders" and len(FeatureStore(out)) == 24
    run_dir = tmp_path / "run"
    train.run(TrainConfig(features=str(out), splits=str(lists), out=str(run_dir), **TINY_TRAIN), **QUIET)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["dataset"] == "folders" and record["data"]["holdout"] == "stratified"
    assert (record["data"]["num_train"], record["data"]["num_val"]) == (15, 3)  # val_groups = 1 clip per class
    metrics = evaluate.run(run_dir, log=lambda *_: None)
    assert metrics["num_test_clips"] == 6 and (run_dir / "metrics.json").is_file()
    [prediction] = predict_files.run([str(next(own_videos.rglob("*.mov")))], run_dir, top=1).items
    assert prediction.error is None and prediction.top[0][0] in ("grow", "shrink", "fade_in")


# -- no clip or source on both sides of a split (issue 17, defect 4) -------------------------------------------
def copy_splits(hmdb_dataset, tmp_path) -> Path:
    splits = tmp_path / "splits"
    splits.mkdir()
    for path in Path(hmdb_dataset["splits"]).iterdir():
        (splits / path.name).write_text(path.read_text())
    return splits


def test_hmdb51_one_clip_listed_as_test_and_as_train_is_refused_everywhere(hmdb_dataset, tmp_path):
    """x.avi as test and x.mp4 as train are one clip id, class/x: `splits`, extract and the split train and eval
    read all refuse it, naming the clip, the file and the fix."""
    splits = copy_splits(hmdb_dataset, tmp_path)
    path = splits / f"{CLASSES[0]}_test_split1.txt"
    test_name = next(line.split()[0] for line in path.read_text().splitlines() if line.split()[1] == "2")
    with path.open("a") as file:
        file.write(f"{Path(test_name).stem}.mp4 1 \n")
    clip_id = f"{CLASSES[0]}/{Path(test_name).stem}"
    assert_one_line_error(invoke("splits", "--dataset", "hmdb51", "--splits", splits), f"clip {clip_id!r} is on both sides",
                          f"{path}:", "list it on one side only")
    out = tmp_path / "features"
    result = invoke("extract", "--dataset", "hmdb51", "--videos", hmdb_dataset["videos"], "--splits", splits,
                    "--out", out, "--weights", "none")
    assert_one_line_error(result, f"clip {clip_id!r} is on both sides")
    assert not out.exists()
    with pytest.raises(UcfpipeError, match="is on both sides"):  # what train, eval and finetune call
        datasets.read_split("hmdb51", splits, 1)


def test_hmdb51_a_source_on_both_sides_within_a_class_is_refused(hmdb_dataset, tmp_path):
    splits = copy_splits(hmdb_dataset, tmp_path)
    path = splits / f"{CLASSES[2]}_test_split1.txt"
    lines = path.read_text().splitlines()
    # Group 1 is tested on in split 1: move one of its two clips of this class to training.
    index = next(i for i, line in enumerate(lines) if line.startswith("Film_01_") and line.split()[1] == "2")
    lines[index] = lines[index].split()[0] + " 1 "
    path.write_text("\n".join(lines) + "\n")
    result = invoke("splits", "--dataset", "hmdb51", "--splits", splits)
    assert_one_line_error(result, f"source 'Film_01' of class '{CLASSES[2]}' is on both sides", f"{path}:",
                          "give all of its clips one id in that file")
    assert "shared)" not in result.output


def test_hmdb51_a_film_may_be_on_either_side_in_different_classes(hmdb_dataset, tmp_path):
    """The official splits are made class by class: a film that gives clips to two classes may train in one and
    test in the other, so that is accepted (a source is kept on one side within each class)."""
    splits = copy_splits(hmdb_dataset, tmp_path)
    path = splits / f"{CLASSES[2]}_test_split1.txt"
    path.write_text("".join(line.split()[0] + (" 1 \n" if line.startswith("Film_01_") else f" {line.split()[1]} \n")
                            for line in path.read_text().splitlines()))
    split = datasets.read_split("hmdb51", splits, 1)
    assert "Film_01" in {c.source for c in split.train} & {c.source for c in split.test}


# -- your own videos: free names, groups mixed with single clips, subfolders (defects 8, 9, 15) --------------
ODD_NAMES = {  # class folder -> file names inside it (with subfolders), as phones and downloads name them
    "dribble": ["practice one.avi", "game (2) #3.mp4", "Übung_ß.avi", "2023 june/court 1.avi"],
    "jump rope": ["rope #1.avi", "跳绳 练习.mp4", "(outdoor) take.avi", "sub/deeper/last one.avi"],
}


@pytest.fixture(scope="module")
def odd_videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("odd") / "my videos"
    for class_index, (class_name, names) in enumerate(ODD_NAMES.items()):
        for clip, name in enumerate(names):
            (root / class_name / name).parent.mkdir(parents=True, exist_ok=True)
            write_video(root / class_name / name, class_index * 2, clip, 1)
    return root


def expected_ids() -> set[str]:
    return {f"{c}/{str(Path(n).with_suffix(''))}" for c, names in ODD_NAMES.items() for n in names}


def test_names_with_spaces_parentheses_unicode_and_hash_round_trip_through_every_stage(odd_videos, tmp_path):
    lists = tmp_path / "lists"
    made = invoke("splits", "make", "--videos", odd_videos, "--out", lists)
    assert made.exit_code == 0, made.output
    assert "2 videos in subfolders of a class folder taken as that class" in made.output
    assert "2 jump rope\n" in lists.joinpath("classInd.txt").read_text(encoding="utf-8")
    listed = lists.joinpath("trainlist01.txt").read_text(encoding="utf-8") + lists.joinpath("testlist01.txt").read_text(encoding="utf-8")
    assert "dribble/practice one.avi" in listed and "jump rope/跳绳 练习.mp4" in listed
    assert {c.video_id for c in datasets.all_clips("folders", lists)} == expected_ids()
    # The lists as Windows editors save them (CRLF, a BOM) read the same.
    crlf = tmp_path / "crlf"
    crlf.mkdir()
    for path in lists.iterdir():
        crlf.joinpath(path.name).write_bytes(b"\xef\xbb\xbf" + path.read_text(encoding="utf-8").replace("\n", "\r\n").encode())
    assert datasets.all_clips("folders", crlf) == datasets.all_clips("folders", lists)
    summary = invoke("splits", "--dataset", "folders", "--splits", lists, "--videos", odd_videos)
    assert summary.exit_code == 0 and "8 of 8 listed clips are under" in summary.output, summary.output
    out = tmp_path / "features"
    result = invoke("extract", "--dataset", "folders", "--videos", odd_videos, "--splits", lists, "--out", out, *tiny_flags())
    assert result.exit_code == 0, result.output
    store = FeatureStore(out)
    assert set(store.video_ids) == expected_ids()
    assert store.labels(["jump rope/sub/deeper/last one", "dribble/game (2) #3"]).tolist() == [1, 0]


def test_splits_make_refuses_a_class_name_that_a_list_line_cannot_hold(tmp_path, odd_videos):
    root = tmp_path / "videos"
    shutil.copytree(odd_videos, root)
    (root / "dribble").rename(root / "dribble ")
    result = invoke("splits", "make", "--videos", root, "--out", tmp_path / "lists")
    assert_one_line_error(result, f"Error: '{root / 'dribble '}': a class folder name that starts or ends with a space")
    assert "rename the folder" in result.output and "PosixPath" not in result.output
    assert not (tmp_path / "lists").exists()


def test_splits_make_keeps_named_groups_whole_and_splits_the_rest_stratified(tmp_path, synth_dataset):
    """Some files carry _gNN_, some do not: every named group stays on one side in every fold, the others are
    single clips, and the output says so."""
    root = grouped_videos(tmp_path, synth_dataset)
    for class_name in CLASSES[:2]:
        for clip in range(1, 7):
            os.link(synth_path(synth_dataset, class_name, clip, 3), root / class_name / f"phone {clip}.avi")
    out = tmp_path / "lists"
    result = invoke("splits", "make", "--videos", root, "--out", out, "--folds", 3)
    assert result.exit_code == 0, result.output
    assert "24 videos by their _gNN_ groups (each group on one side); the 12 without a group each a group of its own" in result.output
    for split in datasets.read_all_splits("folders", out):
        assert split.holdout == "sources"
        sides = {}
        for part in ("train", "test"):
            for clip in getattr(split, part):
                if clip.source:
                    sides.setdefault(clip.source, set()).add(part)
        assert sides and all(len(parts) == 1 for parts in sides.values()), sides
        assert {c.source for c in split.test} > {""}  # single clips are tested on too
        singles = [c for c in split.train + split.test if not c.source]
        assert len({c.group for c in singles}) == 12 and not {c.group for c in singles} & {int(s[1:]) for s in sides}
        kept, val, _ = datasets.hold_out(split, list(split.train), 1, seed=0)
        assert val and not {c.group for c in kept} & {c.group for c in val}
    summary = invoke("splits", "--dataset", "folders", "--splits", out)
    assert summary.exit_code == 0 and "single clips" in summary.output and "until each class has" in summary.output


def test_splits_summary_says_how_validation_is_taken(own_videos, tmp_path):
    lists = tmp_path / "lists"
    assert invoke("splits", "make", "--videos", own_videos, "--out", lists).exit_code == 0
    result = invoke("splits", "--dataset", "folders", "--splits", lists)
    assert result.exit_code == 0, result.output
    assert "holds out stratified" not in result.output
    assert "`train` validates on --val-groups clips per class, drawn from the seed (no groups are known" in result.output


def test_splits_make_videos_pointing_at_a_file_says_it_is_a_file(own_videos, tmp_path):
    video = next(own_videos.rglob("*.mp4"))
    assert_one_line_error(invoke("splits", "make", "--videos", video, "--out", tmp_path / "lists"),
                          f"videos folder {video} is a file, not a folder")
    assert_one_line_error(invoke("splits", "make", "--videos", tmp_path / "nowhere", "--out", tmp_path / "lists"),
                          "does not exist")
