"""Safe writes: atomic replacement, staged folders, the leftovers of killed processes, output checks."""

import os
import subprocess
import sys

import pytest

from tfvgan_jax import files


def dead_pid():
  """The id of a process that has ended."""
  child = subprocess.Popen([sys.executable, "-c", "pass"])
  child.wait()
  return child.pid


def left_by(pid, name):
  """A `files.partial_name` as process `pid` of this machine would have made it."""
  return files.partial_name(name).replace(f"{os.getpid()}@", f"{pid}@", 1)


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
  path = tmp_path / "out.json"
  files.write_text(path, "old")
  with pytest.raises(RuntimeError):
    with files.atomic_path(path) as temporary:
      assert os.path.basename(temporary).startswith(files.PARTIAL_PREFIX) and temporary.endswith(".json")
      with open(temporary, "w") as f:
        f.write("half")
      raise RuntimeError("killed")
  assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.json"]
  files.write_text(path, "new")
  assert path.read_text() == "new" and os.listdir(tmp_path) == ["out.json"]


def test_replace_dir_swaps_a_complete_folder(tmp_path):
  target = tmp_path / "data"
  target.mkdir()
  (target / "a").write_text("old")
  staged = files.staging_dir(target)
  assert os.path.dirname(staged) == str(tmp_path) and os.path.basename(staged).startswith(files.PARTIAL_PREFIX)
  (tmp_path / os.path.basename(staged) / "b").write_text("new")
  files.replace_dir(staged, target)
  assert os.listdir(target) == ["b"] and sorted(os.listdir(tmp_path)) == ["data"]


def test_only_the_leftovers_of_ended_processes_of_this_machine_are_removed(tmp_path):
  dead = dead_pid()
  stale_file = tmp_path / left_by(dead, "summary.json")
  stale_dir = tmp_path / left_by(dead, "videos")
  running = tmp_path / left_by(os.getppid(), "videos")  # a live process: its work in progress
  mine = tmp_path / files.partial_name("videos")
  other_host = tmp_path / f".partial-{dead}@elsewhere-0123abcd-videos"
  user = tmp_path / ".partial-notes.txt"  # not a name files.py makes
  for path in (stale_file, running, mine, other_host, user):
    path.write_text("x")
  stale_dir.mkdir()
  (stale_dir / "shard").write_text("x")
  assert sorted(files.remove_stale_partials(tmp_path, "videos")) == [str(stale_dir)]
  assert files.remove_stale_partials(tmp_path) == [str(stale_file)]
  assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in (running, mine, other_host, user))


def test_a_kill_between_the_two_renames_is_undone(tmp_path):
  target = tmp_path / "1.0.0"
  aside = tmp_path / left_by(dead_pid(), "1.0.0-old")
  aside.mkdir()
  (aside / "records").write_text("old")
  half = tmp_path / left_by(dead_pid(), "1.0.0")
  half.mkdir()
  staged = files.staging_dir(target)
  assert (target / "records").read_text() == "old"
  assert sorted(os.listdir(tmp_path)) == sorted(["1.0.0", os.path.basename(staged)])


def test_output_checks_name_the_path_and_refuse_an_input(tmp_path):
  source = tmp_path / "in.npz"
  source.write_bytes(b"x")
  os.symlink(source, tmp_path / "link.npz")
  with pytest.raises(files.OutputPathError, match="--out=.*link.npz: is also an input"):
    files.check_output_file(tmp_path / "link.npz", [source])
  with pytest.raises(files.OutputPathError, match="is a folder"):
    files.check_output_file(tmp_path, [source])
  with pytest.raises(files.OutputPathError, match="does not exist"):
    files.check_output_file(tmp_path / "no" / "x.npz")
  with pytest.raises(files.OutputPathError, match="--out=.*in.npz: is a file, not a folder"):
    files.check_output_dir(source)
  assert files.check_output_dir(tmp_path / "new" / "deeper") == str(tmp_path / "new" / "deeper")
