"""Writing a user's files safely: atomic replacement, and outputs that are never one of the inputs.

Every command that writes a file a user sees goes through here, so that

  * a killed or failed run leaves the earlier file at that path as it was (the new content is
    written to a temporary file beside it and renamed over it only when complete);
  * nothing is deleted that the command did not create (a failed write removes only its own
    temporary file);
  * an output that is one of the command's inputs, by path or by being the same file through a
    link, is refused before any work starts.

Only the standard library: every layer may import it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from typing import Optional, Union

PathLike = Union[str, os.PathLike]

# Temporary files and folders start with this, so a folder listing (and a glob over inputs) can
# tell them from finished files.
PARTIAL_PREFIX = ".partial-"


class OutputPathError(ValueError):
  """An output path that cannot be written, or that is one of the inputs; the message names it."""


def same_file(a: PathLike, b: PathLike) -> bool:
  """Whether two paths name the same file: equal after resolving links, or the same inode."""
  a, b = os.fspath(a), os.fspath(b)
  if os.path.realpath(os.path.abspath(os.path.expanduser(a))) == os.path.realpath(
      os.path.abspath(os.path.expanduser(b))):
    return True
  try:
    return os.path.samefile(os.path.expanduser(a), os.path.expanduser(b))
  except OSError:
    return False


def check_output_file(path: PathLike, inputs: Iterable[Optional[PathLike]] = (), flag: str = "--out",
                      create_parent: bool = False) -> str:
  """Checks, before any work, that a file can be written at `path`; returns it as a string.

  Args:
    path: the output file.
    inputs: the command's input files (None entries are ignored).
    flag: how the user gave the path, for the message (e.g. '--out').
    create_parent: create a missing parent folder instead of refusing.

  Raises:
    OutputPathError: the path is empty, a folder, one of the inputs, or its folder is missing or
      not writable.
  """
  text = os.fspath(path) if path is not None else ""
  if not text:
    raise OutputPathError(f"{flag}: no output path given")
  path = os.path.expanduser(text)
  for source in inputs:
    if source is not None and os.fspath(source) and same_file(path, source):
      raise OutputPathError(f"{flag}={text}: is also an input ({os.fspath(source)}); writing it would destroy "
                            f"the input: choose another output path")
  if os.path.isdir(path):
    raise OutputPathError(f"{flag}={text}: is a folder; give a file path")
  parent = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(parent):
    if create_parent and not os.path.exists(parent):
      try:
        os.makedirs(parent, exist_ok=True)
      except OSError as error:
        raise OutputPathError(f"{flag}={text}: cannot create its folder {parent} ({error.strerror})") from error
    else:
      raise OutputPathError(f"{flag}={text}: its folder {parent} does not exist")
  if not os.access(parent, os.W_OK | os.X_OK):
    raise OutputPathError(f"{flag}={text}: its folder {parent} is not writable")
  if os.path.exists(path) and not os.access(path, os.W_OK) and not os.access(parent, os.W_OK):
    raise OutputPathError(f"{flag}={text}: exists and is not writable")
  return text


def check_output_dir(path: PathLike, flag: str = "--out", inputs: Iterable[Optional[PathLike]] = ()) -> str:
  """Checks, before any work, that `path` is a folder that exists or can be created, and is writable.

  Raises:
    OutputPathError: the path is empty, an existing file, one of the inputs, or not creatable or
      writable.
  """
  text = os.fspath(path) if path is not None else ""
  if not text:
    raise OutputPathError(f"{flag}: no output folder given")
  path = os.path.expanduser(text)
  for source in inputs:
    if source is not None and os.fspath(source) and same_file(path, source):
      raise OutputPathError(f"{flag}={text}: is also an input ({os.fspath(source)})")
  if os.path.exists(path) and not os.path.isdir(path):
    raise OutputPathError(f"{flag}={text}: is a file, not a folder")
  existing = path
  while not os.path.exists(existing):
    parent = os.path.dirname(os.path.abspath(existing))
    if parent == existing:
      break
    existing = parent
  if not os.path.isdir(existing):
    raise OutputPathError(f"{flag}={text}: {existing} is a file, so the folder cannot be made")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise OutputPathError(f"{flag}={text}: {existing} is not writable")
  return text


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[str]:
  """A temporary file path beside `path` that replaces `path` when the block completes.

  The temporary name keeps the suffix (so a writer that picks the format from the name, as FFmpeg
  does, writes the same format). If the block raises, or the process dies, `path` keeps whatever it
  held before and the temporary file is removed (after a kill -9 it stays, named
  `.partial-*`, beside the output).
  """
  path = os.path.expanduser(os.fspath(path))
  directory = os.path.dirname(os.path.abspath(path))
  base = os.path.basename(path)
  _, suffix = os.path.splitext(base)
  temporary = os.path.join(directory, f"{PARTIAL_PREFIX}{uuid.uuid4().hex[:12]}-{base[:64]}")
  if suffix and not temporary.endswith(suffix):
    temporary += suffix
  try:
    yield temporary
    if not os.path.exists(temporary):
      raise FileNotFoundError(f"{path}: nothing was written")
    _keep_mode(path, temporary)
    os.replace(temporary, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(temporary)
    raise


def _keep_mode(path: str, temporary: str) -> None:
  """Gives the new file the old file's permissions, or the usual ones (mkstemp-like files are 0600)."""
  try:
    mode = os.stat(path).st_mode & 0o777
  except OSError:
    umask = os.umask(0)
    os.umask(umask)
    mode = 0o666 & ~umask
  with contextlib.suppress(OSError):
    os.chmod(temporary, mode)


def write_bytes(path: PathLike, data: bytes) -> None:
  """Writes `data` to `path` atomically (creating its folder)."""
  path = os.path.expanduser(os.fspath(path))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with atomic_path(path) as temporary:
    with open(temporary, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())


def write_text(path: PathLike, text: str) -> None:
  """Writes `text` (UTF-8) to `path` atomically (creating its folder)."""
  write_bytes(path, text.encode("utf-8"))


def staging_dir(target: PathLike) -> str:
  """A new empty folder beside `target` to build a replacement for it in (see `replace_dir`)."""
  target = os.path.expanduser(os.fspath(target))
  parent = os.path.dirname(os.path.abspath(target))
  os.makedirs(parent, exist_ok=True)
  return tempfile.mkdtemp(dir=parent, prefix=f"{PARTIAL_PREFIX}{os.path.basename(target)}-")


def replace_dir(staged: PathLike, target: PathLike) -> None:
  """Moves the complete folder `staged` to `target`, replacing what was there.

  The old folder is renamed aside first, the new one renamed into place, then the old one removed:
  a crash between the two renames leaves the old content intact under `.partial-*-old` beside
  `target` (never a half-written `target`).
  """
  staged = os.fspath(staged)
  target = os.path.expanduser(os.fspath(target))
  old = None
  if os.path.lexists(target):
    old = os.path.join(os.path.dirname(os.path.abspath(target)),
                       f"{PARTIAL_PREFIX}{os.path.basename(target)}-{uuid.uuid4().hex[:8]}-old")
    os.replace(target, old)
  try:
    os.replace(staged, target)
  except BaseException:
    if old is not None:
      os.replace(old, target)
    raise
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)
