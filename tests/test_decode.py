"""Frame sampling and decoding, on the genuine clips and on files whose container lies."""

import cv2
import numpy as np
import pytest

from helpers import opencv_frames
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.video.decode import VideoError, count_frames, read_clip, read_frames, uniform_frame_indices


def test_indices_cover_the_whole_clip_uniformly():
    assert uniform_frame_indices(100, 10).tolist() == [5, 15, 25, 35, 45, 55, 65, 75, 85, 95]
    assert uniform_frame_indices(7, 7).tolist() == list(range(7))


def test_short_clips_repeat_indices_and_always_yield_t_steps():
    indices = uniform_frame_indices(3, 8)
    assert len(indices) == 8 and set(indices.tolist()) == {0, 1, 2}
    assert np.all(np.diff(indices) >= 0)
    assert uniform_frame_indices(1, 5).tolist() == [0] * 5


@pytest.mark.parametrize("num_frames, num_samples", [(1, 1), (40, 40), (41, 40), (1000, 16), (13, 40)])
def test_indices_are_sorted_in_range_and_exactly_t(num_frames, num_samples):
    indices = uniform_frame_indices(num_frames, num_samples)
    assert len(indices) == num_samples
    assert indices.min() >= 0 and indices.max() < num_frames
    assert np.all(np.diff(indices) >= 0)


def test_decoded_frames_match_opencv_frames_at_those_indices_in_rgb(genuine_videos):
    path = genuine_videos / "PushUps" / "v_PushUps_g02_c03.avi"
    clip = read_clip(path, 10, 48)
    assert clip.num_frames == 79 and clip.fps == pytest.approx(25.0)
    assert clip.frames.shape == (10, 48, 48, 3) and clip.frames.dtype == np.uint8
    all_frames = opencv_frames(path)
    for step, index in enumerate(clip.frame_indices):
        expected = cv2.cvtColor(cv2.resize(all_frames[index], (48, 48), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(clip.frames[step], expected)


@pytest.mark.parametrize("claimed", [lambda n: 3 * n, lambda n: n // 2, lambda n: -1, lambda n: 0])
def test_sampling_uses_the_decoded_count_not_the_containers(genuine_videos, monkeypatch, claimed):
    """A container that misreports its frame count must not shift or truncate the sample."""
    path = genuine_videos / "Punch" / "v_Punch_g03_c01.avi"
    honest = read_clip(path, 16, 32)
    real_capture = cv2.VideoCapture

    class LyingCapture:  # delegates: OpenCV's bindings do not support Python subclasses of VideoCapture
        def __init__(self, *args):
            self._real = real_capture(*args)

        def get(self, prop):
            value = self._real.get(prop)
            return claimed(int(value)) if prop == cv2.CAP_PROP_FRAME_COUNT else value

        def __getattr__(self, name):
            return getattr(self._real, name)

    monkeypatch.setattr(cv2, "VideoCapture", LyingCapture)
    lied_to = read_clip(path, 16, 32)
    assert lied_to.num_frames == honest.num_frames == 108
    np.testing.assert_array_equal(lied_to.frame_indices, honest.frame_indices)
    np.testing.assert_array_equal(lied_to.frames, honest.frames)


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "empty"), (b"this is not a video\n" * 50, "cannot open"), (bytes(range(256)) * 64, "cannot open")],
)
def test_unreadable_files_raise_video_error(tmp_path, content, reason):
    path = tmp_path / "bad.avi"
    path.write_bytes(content)
    with pytest.raises(VideoError, match=reason):
        read_clip(path, 4, 32)
    assert issubclass(VideoError, UcfpipeError)


def test_missing_file_raises_video_error(tmp_path):
    with pytest.raises(VideoError, match="not found"):
        read_clip(tmp_path / "nope.avi", 4, 32)


def test_truncated_clip_is_sampled_from_the_frames_that_decode(genuine_videos, tmp_path):
    source = genuine_videos / "Biking" / "v_Biking_g05_c02.avi"
    data = source.read_bytes()
    path = tmp_path / "truncated.avi"
    path.write_bytes(data[: len(data) // 2])
    clip = read_clip(path, 8, 32)
    assert 0 < clip.num_frames < 201
    assert clip.frame_indices.max() < clip.num_frames and len(clip.frame_indices) == 8


def test_read_frames_gives_the_full_frames_at_indices_counted_as_stage_one_counts(genuine_videos):
    """The report's thumbnails: RGB frames at the sampled indices, the same frames stage one resized."""
    path = genuine_videos / "PushUps" / "v_PushUps_g02_c03.avi"
    clip = read_clip(path, 10, 48)
    frames = read_frames(path, clip.frame_indices.tolist() + [500])  # 500: past the clip's 79 frames
    assert sorted(frames) == sorted(set(clip.frame_indices.tolist()))
    for step, index in enumerate(clip.frame_indices):
        np.testing.assert_array_equal(cv2.resize(frames[index], (48, 48), interpolation=cv2.INTER_AREA), clip.frames[step])
    assert read_frames(path, []) == {}


def test_the_one_decoding_loop_counts_a_truncated_clip_as_sampling_does(genuine_videos, tmp_path):
    data = (genuine_videos / "Biking" / "v_Biking_g05_c02.avi").read_bytes()
    path = tmp_path / "truncated.avi"
    path.write_bytes(data[: len(data) // 2])
    assert count_frames(path)[0] == read_clip(path, 8, 32).num_frames
