"""Shared test setup: CPU only, and where the real-face test data lives."""

import os
import pathlib
import shutil
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA compilation cache for the whole session, inherited by the subprocesses the
# training tests start: the tiny training run, the fitter's buckets and the editing pass are each
# compiled once instead of once per test.
_COMPILATION_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _COMPILATION_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="tfvgan_jax_xla_cache_")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# XLA's CPU backend without LLVM's optimizations: the suite is dominated by compiling small
# programs, and this halves that time (65 tests of fit, rasterize, models and texture: 193 s -> 112 s
# of CPU). It changes how fast the compiled code runs, not what it computes; tests compare runs made
# under the same flags, and benchmarks never set it. Subprocesses inherit it.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"
os.environ.setdefault("XLA_FLAGS", TEST_XLA_FLAGS)
sys.path.insert(0, str(pathlib.Path(__file__).parent))

import pytest  # noqa: E402


def pytest_unconfigure(config):
  if _COMPILATION_CACHE:
    shutil.rmtree(_COMPILATION_CACHE, ignore_errors=True)

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


@pytest.fixture(scope="session")
def face_detector(mediapipe_models):  # the models, or a skip naming the fetch command
  from tfvgan_jax.prep.detect import FaceDetector
  return FaceDetector(mediapipe_models.detector)


@pytest.fixture(scope="session")
def astronaut():
  return pytest.importorskip("skimage.data").astronaut()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
  """(config, workdir): configs/synthetic.py:tiny trained for its 2 steps (32 px), shared by the editing,
  notebook and evaluation tests. Its corpus, held-out videos included, is in config.data.synthetic.cache_dir."""
  from helpers import load_config
  from tfvgan_jax import train
  config = load_config("synthetic", "tiny")
  config.data.synthetic.cache_dir = str(tmp_path_factory.mktemp("tiny_corpus"))
  workdir = tmp_path_factory.mktemp("tiny_run")
  train.train_and_evaluate(config, workdir)
  return config, workdir


@pytest.fixture(scope="session")
def edit_inputs(tmp_path_factory):
  """The synthetic editing inputs of `edit_inputs.make_inputs`, made once."""
  import edit_inputs as made
  return made.make_inputs(tmp_path_factory.mktemp("edit_inputs"))
