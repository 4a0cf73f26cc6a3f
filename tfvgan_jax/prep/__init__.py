"""Real-video preparation as library code (the data_prep jobs and editing both call it): video
decoding and encoding; detection, tracking, landmarks and 3DMM fitting join here."""

from tfvgan_jax.prep.video import Frame, VideoError, VideoInfo, probe, read_frames, write_video

__all__ = ["Frame", "VideoError", "VideoInfo", "probe", "read_frames", "write_video"]
