"""A trained run at work on new videos: the one rebuild of a run's stage one (predictor), long-video
windows, live streams and the deployable export."""
