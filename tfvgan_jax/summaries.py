"""TensorBoard event files, written without TensorFlow (tensorboardX), by process 0 only."""

from __future__ import annotations

import numpy as np
from etils import epath


class Summaries:
  """Scalars and images of a run in `logdir`; every call is a no-op where `enabled` is False."""

  def __init__(self, logdir: epath.Path, enabled: bool):
    self._writer = None
    if enabled:
      from tensorboardX import SummaryWriter  # only the writing process needs it
      self._writer = SummaryWriter(str(logdir))

  def scalars(self, step: int, values: dict) -> None:
    if self._writer:
      for name, value in values.items():
        self._writer.add_scalar(name, float(value), step)

  def image(self, step: int, name: str, image: np.ndarray) -> None:
    if self._writer:
      self._writer.add_image(name, image, step, dataformats="HWC")

  def flush(self) -> None:
    if self._writer:
      self._writer.flush()

  def close(self) -> None:
    if self._writer:
      self._writer.close()
