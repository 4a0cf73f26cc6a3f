"""Real-video preparation as library code (the data_prep jobs and editing both call it).

  video        PyAV decoding (streaming) and H.264 encoding
  model_files  where the MediaPipe models live, fetched from the mediapipe wheel
  detect       MediaPipe short-range face detector (LiteRT): anchors, decoding, weighted NMS
  landmarks    Face Mesh's 468 landmarks in a roll-normalised crop; `topology` names its points
  track        faces followed through a video, main track, temporal smoothing
  crop         one stable crop per clip and its mapping to source pixels
  composite    feathered paste-back of edited crops into full frames, the visible label
  fit          per-clip 3DMM fitting in JAX (one identity, per-frame expression and camera)
  clip         the stages joined: video -> tracked, cropped, fitted clip (with a per-input cache)
  learn_model  a morphable model on the Face Mesh topology learned from landmark tracks
"""

from tfvgan_jax.prep.video import Frame, VideoError, VideoInfo, probe, read_frames, write_video

__all__ = ["Frame", "VideoError", "VideoInfo", "probe", "read_frames", "write_video"]
