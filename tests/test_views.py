"""Multi-view extraction (data and test-time augmentation), checked against an independent computation."""

import cv2
import numpy as np
import pytest

from ucfpipe.cache.store import FeatureStore
from ucfpipe.config import ExtractConfig
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.models.extractor import build_extractor
from ucfpipe.stage_one import extract
from ucfpipe.video.decode import uniform_frame_indices
from ucfpipe.video.views import PRESETS, crop_size, parse_views

SIZE, FRAMES = 48, 5


def test_view_specs_expand_presets_and_put_center_first():
    assert parse_views("flip") == ("center", "flip")
    assert parse_views("time,flip,center") == ("center", "time_early", "time_late", "flip")
    assert parse_views("all") == tuple(PRESETS["all"])
    with pytest.raises(UcfpipeError, match="unknown view 'mirror'"):
        parse_views("mirror")


@pytest.fixture(scope="module")
def multiview_cache(tmp_path_factory, genuine_videos, official_splits):
    out = tmp_path_factory.mktemp("views") / "features"
    config = ExtractConfig(videos=str(genuine_videos), splits=str(official_splits), out=str(out), frames=FRAMES,
                           size=SIZE, weights="none", views="all", batch_size=32, allow_missing=True)
    assert extract.run(config, progress=False, log=lambda *_: None)["extracted"] == 6
    return out


def all_frames(path):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while (frame := capture.read()[1]) is not None:
        frames.append(frame)
    return frames


def relative_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_stored_views_equal_features_of_independently_made_frames(multiview_cache, genuine_videos):
    store = FeatureStore(multiview_cache)
    assert store.views == PRESETS["all"] and store.settings["views"] == PRESETS["all"]
    model = build_extractor("none", "block5_conv3", "avg", SIZE, "float32", 0)
    larger = crop_size(SIZE)
    for video_id in ("Biking/v_Biking_g05_c02", "PushUps/v_PushUps_g02_c03"):
        clip = store.clip(video_id)
        frames = all_frames(genuine_videos / f"{video_id}.avi")
        assert clip.features.shape == (len(PRESETS["all"]), FRAMES, 512)
        center = uniform_frame_indices(len(frames), FRAMES)
        rgb = lambda i, s: cv2.cvtColor(cv2.resize(frames[i], (s, s), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        whole = np.stack([rgb(i, SIZE) for i in center])
        big = np.stack([rgb(i, larger) for i in center])
        m = (larger - SIZE) // 2
        expected_frames = {
            "center": whole,
            "flip": whole[:, :, ::-1],
            "crop_center": big[:, m:m + SIZE, m:m + SIZE],
            "crop_tl": big[:, :SIZE, :SIZE],
            "crop_br": big[:, -SIZE:, -SIZE:],
        }
        for name, frames_of_view in expected_frames.items():
            v = store.views.index(name)
            np.testing.assert_array_equal(clip.frame_indices[v], center)
            expected = np.asarray(model.predict_on_batch(np.ascontiguousarray(frames_of_view)))
            assert relative_error(clip.features[v], expected) < 2e-3, name
        # The views really differ: flipping changes the features far beyond float16 rounding.
        assert relative_error(clip.features[store.views.index("flip")], clip.features[0]) > 1e-2
        early, late = store.views.index("time_early"), store.views.index("time_late")
        np.testing.assert_array_equal(clip.frame_indices[early], uniform_frame_indices(len(frames), FRAMES, 0.25))
        np.testing.assert_array_equal(clip.frame_indices[late], uniform_frame_indices(len(frames), FRAMES, 0.75))
        expected = np.asarray(model.predict_on_batch(np.stack([rgb(i, SIZE) for i in clip.frame_indices[late]])))
        assert relative_error(clip.features[late], expected) < 2e-3


def test_views_are_part_of_the_fingerprint(multiview_cache, genuine_videos, official_splits, tmp_path):
    config = ExtractConfig(videos=str(genuine_videos), splits=str(official_splits), out=str(multiview_cache),
                           frames=FRAMES, size=SIZE, weights="none", views="flip", allow_missing=True)
    with pytest.raises(UcfpipeError, match="views"):
        extract.run(config, progress=False, log=lambda *_: None)
