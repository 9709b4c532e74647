"""ucfpipe: UCF-101 videos to a trained, evaluated CNN-LSTM classifier, through a cached feature stage."""

__version__ = "0.1.0"
