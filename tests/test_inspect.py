"""`ucfpipe inspect` on genuine ImageNet weights, photos and clips (../shared/realdata): it sees what an
independent computation (REFERENCE.json: plain cv2 + numpy + keras) sees, stage one stores what Keras' own
MobileNet computes, and the checks fail when frames reach the network wrong. Each test is skipped with one line
when ../shared/realdata is absent."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import SHARED_UCF101, assert_one_line_error, genuine_rgb, invoke, realdata
from ucfpipe.serving import inspect

pytestmark = pytest.mark.slow  # genuine 224x224 MobileNet on every photo and clip: `make test`

BACKBONE = "mobilenet_v1_075"
WITH_TOP = "mobilenet_7_5_224_tf_from_tfjs.h5"
NO_TOP = "mobilenet_7_5_224_tf_no_top_from_tfjs.h5"


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads((realdata() / "REFERENCE.json").read_text())


def photos() -> list:
    return sorted((realdata() / "photos").iterdir())


def clip_path(name: str, entry: dict):
    if entry["where"] == "ucf101":
        return SHARED_UCF101 / "UCF-101" / name.split("_")[1] / f"{name}.avi"
    return realdata() / "clips" / f"{name}.avi"


@pytest.fixture(scope="module")
def inspected(reference) -> dict:
    """`ucfpipe inspect --json` once over every photo and every clip of the reference: {file stem: record}."""
    paths = [*photos(), *(clip_path(name, entry) for name, entry in reference["clips"].items())]
    result = invoke("inspect", *paths, "--backbone", BACKBONE, "--weights", realdata() / "weights" / WITH_TOP, "--json")
    assert result.exit_code == 0, result.output
    return {record["path"].rsplit("/", 1)[-1]: record for record in json.loads(result.stdout)}


def test_every_photo_top1_is_the_references(inspected, reference):
    for name, entry in reference["photos"].items():
        record = inspected[name]
        assert [frame["index"] for frame in record["frames"]] == [0]  # an image is one frame
        assert record["mean"]["top"][0]["class"] == entry["top5"][0]["class"], name
        assert record["mean"]["top"][0]["probability"] == pytest.approx(entry["top5"][0]["prob"], abs=1e-3), name


def test_every_confident_clip_has_the_references_top1_in_its_top5(inspected, reference):
    confident = {name: entry for name, entry in reference["clips"].items() if entry["confident"]}
    assert confident
    for name, entry in confident.items():
        record = inspected[f"{name}.avi"]
        assert [frame["index"] for frame in record["frames"]] == entry["frame_indices"], name
        assert entry["top5"][0]["class"] in [top["class"] for top in record["mean"]["top"]], name


def test_the_json_lists_frames_and_mean_with_imagenet_index_label_and_probability(inspected):
    record = inspected["v_Biking_g05_c02.avi"]
    assert set(record) == {"path", "frames", "mean"} and len(record["frames"]) == 8
    assert set(record["frames"][0]) == {"index", "top"} and len(record["mean"]["top"]) == 5
    assert record["mean"]["top"][0] == {"class": 444, "label": "bicycle-built-for-two, tandem bicycle, tandem",
                                        "probability": pytest.approx(0.716, abs=1e-3)}


def test_frames_fed_as_bgr_or_caffe_preprocessed_change_the_answer(reference):
    """The checks above can fail: the two classic mistakes change the top-1 of at least one photo (and BGR gives
    the reference's own BGR answer), so a pipeline making them would not pass."""
    from ucfpipe.video.decode import read_image

    weights = str(realdata() / "weights" / WITH_TOP)
    right, caffe = inspect.Inspector(BACKBONE, weights, 224), inspect.Inspector(BACKBONE, weights, 224, "caffe")
    changed = {"bgr": 0, "caffe": 0}
    for path in photos():
        frames = read_image(path, 224).frames
        top1 = int(np.argmax(right.probabilities(frames)[1]))
        assert top1 == reference["photos"][path.name]["top5"][0]["class"]
        bgr = int(np.argmax(right.probabilities(frames[..., ::-1].copy())[1]))
        assert bgr == reference["photos"][path.name]["top5_bgr"][0]["class"], path.name
        changed["bgr"] += bgr != top1
        changed["caffe"] += int(np.argmax(caffe.probabilities(frames)[1])) != top1
    assert changed["bgr"] >= 1 and changed["caffe"] >= 1, changed


def test_extract_stores_what_keras_own_mobilenet_computes_on_the_same_frames(genuine_videos, official_splits, tmp_path):
    import keras

    from ucfpipe.cache.store import FeatureStore

    weights = realdata() / "weights" / NO_TOP
    result = invoke("extract", "--videos", genuine_videos, "--splits", official_splits, "--out", tmp_path / "f",
                    "--backbone", BACKBONE, "--weights", weights, "--dtype", "float32", "--frames", 4, "--size", 224,
                    "--allow-missing", "--no-progress")
    assert result.exit_code == 0, result.output
    store = FeatureStore(tmp_path / "f")
    reference = keras.applications.MobileNet(alpha=0.75, include_top=False, weights=str(weights),
                                             input_shape=(224, 224, 3), pooling="avg")
    for video_id in store.video_ids[:2]:
        clip = store.clip(video_id)
        rgb = genuine_rgb(genuine_videos / f"{video_id}.avi", clip.frame_indices[0], 224)
        expected = np.asarray(reference.predict_on_batch(keras.applications.mobilenet.preprocess_input(rgb.astype("float32"))))
        error = np.abs(clip.features[0] - expected).max() / np.abs(expected).max()
        assert error < 1e-4, f"{video_id}: relative error {error:.1e}"


@pytest.mark.parametrize(
    "arguments, fragment",
    [(["--backbone", BACKBONE, "--weights", NO_TOP], "without the ImageNet classifier"),
     (["--backbone", "mobilenet_v1_050", "--weights", WITH_TOP], "but --backbone mobilenet_v1_050 is MobileNet(alpha=0.5)"),
     (["--backbone", BACKBONE, "--weights", "none"], "--weights none has no classifier to inspect with"),
     (["--backbone", BACKBONE, "--weights", WITH_TOP, "--top", 0], "--top must be at least 1, got 0")],
)
def test_inspect_refuses_what_it_cannot_use_in_one_line(arguments, fragment):
    weights = realdata() / "weights"
    arguments = [weights / a if str(a).endswith(".h5") else a for a in arguments]
    assert_one_line_error(invoke("inspect", realdata() / "photos" / "skimage_coffee.png", *arguments), fragment)


def test_inspect_reports_an_unreadable_path_in_one_line(tmp_path):
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"not a video")
    result = invoke("inspect", broken, "--backbone", BACKBONE, "--weights", realdata() / "weights" / WITH_TOP)
    assert_one_line_error(result, f"{broken}: OpenCV cannot open it")
