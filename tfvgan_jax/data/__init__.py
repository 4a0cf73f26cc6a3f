"""Training data: the per-frame record format, and which frames make a training sample.

Modules (imported by name, so that each pulls in only what it needs):
  records    -- per-frame records as a TFDS ArrayRecord dataset: write, open, model check, video index
  sampling   -- Dynamic Training Sample Selection over a per-video frame index
  synthetic  -- a synthetic talking-head corpus with ground-truth coefficients
"""
