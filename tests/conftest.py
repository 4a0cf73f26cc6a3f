"""Shared test setup: CPU only, and where the real-face test data lives."""

import os
import pathlib
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(pathlib.Path(__file__).parent))

import pytest  # noqa: E402

TESTDATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "testdata"


@pytest.fixture
def testdata():
  """The shared real-face clips and images; tests that need them skip where they are absent."""
  if not TESTDATA.is_dir():
    pytest.skip(f"real-face test data not found at {TESTDATA}")
  return TESTDATA


@pytest.fixture(scope="session")
def mediapipe_models():
  """The MediaPipe face models (`python -m data_prep.models fetch`); tests skip where they are absent."""
  from tfvgan_jax.prep import model_files
  try:
    return model_files.find_models()
  except model_files.ModelFilesError as error:
    pytest.skip(f"MediaPipe face models not available ({error})")
