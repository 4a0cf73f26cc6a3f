"""The Colab inference notebook, executed headlessly as a user would run it, on a tiny checkpoint.

nbclient starts the `python3` kernel of ipykernel (jupyter_client runs a kernelspec's `python` as
`sys.executable`, so the kernel uses this environment); the cell tagged `parameters` is replaced
by one pointing at the session's tiny checkpoint (`configs/synthetic.py:tiny`, two steps) and at
the synthetic talking heads of `edit_inputs`. The install cell must find the package already
importable and skip, and the upload cell finds no Colab and keeps the paths.
"""

import os
import pathlib
import sys

import nbclient
import nbformat
import pytest

from edit_inputs import FRAMES
from tfvgan_jax.prep import video

pytestmark = pytest.mark.slow  # trains or edits with a real (tiny) checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "inference.ipynb"
OUTPUTS = ("swap", "reenact", "reenact_relative", "disentangle")


@pytest.fixture(scope="module")
def workdir(tiny_run):
  return tiny_run[1]


@pytest.fixture(scope="module")
def inputs(edit_inputs):
  return {name.upper(): edit_inputs[name] for name in ("target", "driving", "expression", "source")}


def parameters_cell(notebook) -> nbformat.NotebookNode:
  cells = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
  assert len(cells) == 1, f"{NOTEBOOK}: {len(cells)} cells tagged 'parameters', expected one"
  return cells[0]


def cell(notebook, cell_id) -> nbformat.NotebookNode:
  cells = [c for c in notebook.cells if c.get("id") == cell_id]
  assert len(cells) == 1, f"{NOTEBOOK}: {len(cells)} cells with id {cell_id!r}, expected one"
  return cells[0]


def stream_text(code_cell) -> str:
  return "".join(output.get("text", "") for output in code_cell.outputs if output.output_type == "stream")


def test_the_notebook_is_stored_clean():
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(notebook)
  code_cells = [c for c in notebook.cells if c.cell_type == "code"]
  assert all(c.outputs == [] and c.execution_count is None for c in code_cells)
  names = {line.split("=")[0].strip() for line in parameters_cell(notebook).source.splitlines() if "=" in line}
  assert names == {"CHECKPOINT", "SOURCE", "TARGET", "DRIVING", "EXPRESSION", "OUT_DIR", "BATCH_SIZE", "CACHE_DIR",
                   "CLIPS", "FINE_TUNE_STEPS", "FINE_TUNE_FLAGS"}


def test_the_notebook_runs_all_tasks(mediapipe_models, workdir, inputs, tmp_path, monkeypatch):
  # The kernel imports the tfvgan_jax under test, installed or not.
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  # Section 4b fine-tunes the checkpoint for one step on three clips (8 frames each: 4 held out).
  clips = tmp_path / "clips"
  clips.mkdir()
  for name in ("TARGET", "DRIVING", "EXPRESSION"):
    os.symlink(inputs[name], clips / f"{name.lower()}.mp4")
  settings = {"CHECKPOINT": str(workdir), **{k: str(v) for k, v in inputs.items()},
              "OUT_DIR": str(tmp_path / "edits"), "BATCH_SIZE": 4, "CACHE_DIR": str(tmp_path / "cache"),
              "CLIPS": str(clips), "FINE_TUNE_STEPS": 1,
              "FINE_TUNE_FLAGS": ["--config.data.held_out_tail=0.4", "--config.eval.num_frames=2",
                                  "--config.data.batch_size=4", "--config.data.num_workers=0"]}
  parameters_cell(notebook).source = "\n".join(f"{name} = {value!r}" for name, value in settings.items())
  # The kernel must be this environment's Python (it checks, right after the parameters).
  notebook.cells.insert(notebook.cells.index(parameters_cell(notebook)) + 1, nbformat.v4.new_code_cell(
      f"import sys\nassert sys.executable == {sys.executable!r}, sys.executable", id="kernel-check"))
  client = nbclient.NotebookClient(notebook, kernel_name="python3", timeout=300,
                                   resources={"metadata": {"path": str(tmp_path)}})
  client.execute()

  assert "install skipped" in stream_text(cell(notebook, "install"))
  assert "using the checkpoint" in stream_text(cell(notebook, "train-demo"))
  tuned = stream_text(cell(notebook, "fine-tune"))
  assert "editing with the fine-tuned run in" in tuned and "Reenactment (ours)" in tuned  # evaluate's table
  assert "checkpoint step 1, 32 x 32 px" in stream_text(cell(notebook, "load"))  # the fine-tuned run's
  for name in OUTPUTS:
    path = tmp_path / "edits" / f"{name}.mp4"
    assert len(list(video.read_frames(path))) == FRAMES, name
    assert video.is_marked_synthetic(path)
  shown = [o for o in cell(notebook, "show").outputs if o.output_type == "display_data"]
  html = "".join(o.data.get("text/html", "") for o in shown)
  assert len(shown) == 3 and html.count("<video") == 8 and html.count("<img") == 3
  assert "data:video/mp4;base64," in html
  assert stream_text(cell(notebook, "show")).count("marked synthetic: True") == len(OUTPUTS)
