"""Classify a video with a `ucfpipe export --format keras` directory, without ucfpipe: python classify.py EXPORT VIDEO"""
import json
import sys

import cv2
import keras
import numpy as np

export, video = sys.argv[1], sys.argv[2]
spec = json.load(open(f"{export}/export.json"))
T, S = spec["frames"], spec["size"]
model = keras.saving.load_model(f"{export}/model.keras")
capture, frames = cv2.VideoCapture(video), []
while (frame := capture.read()[1]) is not None:  # every frame that decodes: S x S (INTER_AREA), RGB
    frames.append(cv2.cvtColor(cv2.resize(frame, (S, S), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
n = len(frames)  # T frames, the centre frame of each of T equal segments
clip = np.stack([frames[min(int((i + 0.5) * (n / T)), n - 1)] for i in range(T)])
probabilities = model.predict(clip[None], verbose=0)[0]
for k in np.argsort(-probabilities)[:5]:
    print(f"{spec['classes'][k]}\t{probabilities[k]:.6f}")
