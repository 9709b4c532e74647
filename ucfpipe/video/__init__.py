"""Decoding and frame sampling (decode), and the views (crops, flips, time offsets) of a clip. Imports only core."""
