"""The split parser against the official lists, and its errors on malformed lists."""

from pathlib import Path

import pytest

from ucfpipe.core.errors import UcfpipeError
from ucfpipe.datasets import ucf101
from ucfpipe.datasets.base import missing_on_disk

OFFICIAL_COUNTS = {1: (9537, 3783), 2: (9586, 3734), 3: (9624, 3696)}
OFFICIAL_TEST_GROUPS = {1: set(range(1, 8)), 2: set(range(8, 15)), 3: set(range(15, 22))}


@pytest.mark.parametrize("number", [1, 2, 3])
def test_official_split_counts_and_test_groups(official_splits, number):
    split = ucf101.read_split(official_splits, number)
    assert (len(split.train), len(split.test)) == OFFICIAL_COUNTS[number]
    assert len(split.classes) == 101
    assert split.groups("test") == OFFICIAL_TEST_GROUPS[number]
    assert not split.groups("train") & split.groups("test")


def test_every_split_covers_all_13320_clips_once(official_splits):
    clips = ucf101.all_clips(official_splits)
    assert len(clips) == 13320
    assert len({c.video_id for c in clips}) == 13320
    for split in ucf101.read_all_splits(official_splits):
        assert {c.video_id for c in split.train + split.test} == {c.video_id for c in clips}


def test_labels_are_zero_based_in_classind_order(official_splits):
    classes = ucf101.read_classes(official_splits)
    assert classes[0] == "ApplyEyeMakeup" and classes[100] == "YoYo"
    split = ucf101.read_split(official_splits, 1)
    first = split.train[0]
    assert first.video_id == "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01"
    assert (first.label, first.group, first.clip_number) == (0, 8, 1)
    assert all(classes[c.label] == c.class_name for c in split.train + split.test)


def test_handstand_pushups_spelling_takes_class_from_folder(official_splits):
    classes = ucf101.read_classes(official_splits)
    clips = [c for c in ucf101.all_clips(official_splits) if c.class_name == "HandstandPushups"]
    assert clips and all(c.label == classes.index("HandstandPushups") for c in clips)
    assert clips[0].relative_path.startswith("HandstandPushups/v_HandStandPushups_g")


def _write_splits(root: Path, train: str, test: str = "A/v_A_g01_c01.avi\r\n", classind="1 A\r\n2 B\r\n") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "classInd.txt").write_bytes(classind.encode())
    for n in (1, 2, 3):
        (root / f"trainlist0{n}.txt").write_bytes(train.encode())
        (root / f"testlist0{n}.txt").write_bytes(test.encode())
    return root


@pytest.mark.parametrize(
    "train, message",
    [
        ("C/v_C_g02_c01.avi 1\r\n", "trainlist01.txt:1: class folder 'C' is not in classInd.txt"),
        ("A/v_A_g02_c01.avi 2\r\n", "trainlist01.txt:1: label 2 (B) disagrees with folder 'A'"),
        ("A/v_A_g02_c01.avi 1\r\n../A/v_A_g02_c02.avi 1\r\n", "trainlist01.txt:2:"),
        ("A/v_A_g02_c01.avi\r\n", "trainlist01.txt:1: expected '<Class>/<file>.avi <label>'"),
        ("A/v_B_g02_c01.avi 1\r\n", "does not belong to folder 'A'"),
        ("A/clip.avi 1\r\n", "not of the form v_ClassName_gGG_cCC.avi"),
        ("A/v_A_g02_c01.avi 1\r\nA/v_A_g02_c01.avi 1\r\n", "trainlist01.txt:2: A/v_A_g02_c01.avi is listed twice"),
        ("A/v_A_g01_c02.avi 1\r\n", "group g01 is on both sides, train A/v_A_g01_c02.avi ("),
        ("A/v_A_g01_c01.avi 1\r\n", "clip 'A/v_A_g01_c01' is on both sides, train A/v_A_g01_c01.avi ("),
        ("A/v_A_g02_c01.avi 1 \r\nA/v_A_g02_c02.avi\r\n", "trainlist01.txt:2: expected '<Class>/<file>.avi <label>'"),
    ],
)
def test_malformed_lists_name_file_line_and_fix(tmp_path, train, message):
    splits = _write_splits(tmp_path / "splits", train)
    with pytest.raises(UcfpipeError, match=None) as caught:
        ucf101.read_split(splits, 1)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_list_file_says_where_to_point(tmp_path):
    splits = _write_splits(tmp_path / "splits", "A/v_A_g02_c01.avi 1\r\n")
    (splits / "testlist01.txt").unlink()
    with pytest.raises(UcfpipeError, match="testlist01.txt not found: point --splits"):
        ucf101.read_split(splits, 1)


def test_lf_line_ends_and_bom_are_accepted(tmp_path):
    splits = _write_splits(tmp_path / "s", "\ufeffA/v_A_g02_c01.avi 1\nB/v_B_g03_c01.avi 2\n", classind="1 A\n2 B\n")
    split = ucf101.read_split(splits, 1)
    assert [c.label for c in split.train] == [0, 1]


def test_missing_on_disk_lists_absent_clips(tmp_path, official_splits, genuine_videos):
    clips = ucf101.all_clips(official_splits)
    missing = missing_on_disk(clips, genuine_videos)
    assert len(missing) == len(clips) - 6
    with pytest.raises(UcfpipeError, match="does not exist"):
        missing_on_disk(clips, tmp_path / "nowhere")


def test_a_shared_group_names_both_list_lines_and_the_fix(tmp_path):
    splits = _write_splits(tmp_path / "splits", "A/v_A_g02_c01.avi 1\r\nA/v_A_g01_c02.avi 1\r\n")
    with pytest.raises(UcfpipeError) as caught:
        ucf101.read_split(splits, 1)
    assert f"{splits / 'trainlist01.txt'}:2" in str(caught.value) and f"{splits / 'testlist01.txt'}:1" in str(caught.value)
    assert "move all of that group's clips into one of the two lists" in str(caught.value)


def test_a_test_line_with_a_label_is_refused(tmp_path):
    splits = _write_splits(tmp_path / "splits", "A/v_A_g02_c01.avi 1\r\n", test="A/v_A_g01_c01.avi 1\r\n")
    with pytest.raises(UcfpipeError, match=r"testlist01.txt:1: expected .*a test line has no label"):
        ucf101.read_split(splits, 1)


def test_class_names_with_spaces_in_classind(tmp_path):
    splits = _write_splits(tmp_path / "s", "A/v_A_g02_c01.avi 1\r\n", classind="1 A\r\n2 jump rope\r\n")
    assert ucf101.read_classes(splits) == ("A", "jump rope")


def test_official_lists_parse_as_before(official_splits):
    """The last-space rule changes nothing for names without spaces: every official line's name is its first
    field, and a clip's id is that name without extension (the ids every existing cache holds)."""
    for number in (1, 2, 3):
        split = ucf101.read_split(official_splits, number)
        lines = (official_splits / f"trainlist0{number}.txt").read_bytes().decode().split("\r\n")
        names = [line.split()[0] for line in lines if line.strip()]
        assert [c.relative_path for c in split.train] == names
