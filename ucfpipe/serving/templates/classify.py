"""Classify a video with a `ucfpipe export` directory of any format, without ucfpipe: python classify.py EXPORT VIDEO
(needs opencv-python, numpy and the format's runtime: keras and a backend, tensorflow, or onnxruntime)"""
import json
import sys

import cv2
import numpy as np


def load(export):
    """export.json's record, and the model as a function: uint8 clips (N, T, S, S, 3) -> probabilities (N, classes)."""
    spec = json.load(open(f"{export}/export.json"))
    path = f"{export}/{spec['model']}"
    if spec["model_format"] == "keras":
        import keras
        model = keras.saving.load_model(path)
        return spec, lambda clips: model.predict(clips, verbose=0)
    if spec["model_format"] == "saved_model":
        import tensorflow as tf
        model = tf.saved_model.load(path)
        return spec, lambda clips: model.serve(clips).numpy()
    import onnxruntime
    session = onnxruntime.InferenceSession(path)
    return spec, lambda clips: session.run(None, {session.get_inputs()[0].name: clips})[0]


def read_clip(video, T, S):
    """(T, S, S, 3) uint8 RGB: every frame that decodes, S x S (INTER_AREA); the centre frame of T equal segments."""
    capture, frames = cv2.VideoCapture(video), []
    while (frame := capture.read()[1]) is not None:
        frames.append(cv2.cvtColor(cv2.resize(frame, (S, S), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
    n = len(frames)
    if n == 0:
        sys.exit(f"{video}: no frame decodes (not a video OpenCV can read)")
    return np.stack([frames[min(int((i + 0.5) * (n / T)), n - 1)] for i in range(T)])


def main(export, video):
    spec, classify = load(export)
    probabilities = classify(read_clip(video, spec["frames"], spec["size"])[None])[0]
    for k in np.argsort(-probabilities)[:5]:
        print(f"{spec['classes'][k]}\t{probabilities[k]:.6f}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
