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
import re
import shutil
import socket
import uuid
from collections.abc import Iterable, Iterator
from typing import Optional, Union

PathLike = Union[str, os.PathLike]

# Temporary files and folders start with this, so a folder listing (and a glob over inputs) can
# tell them from finished files. The full name is `.partial-<pid>@<host>-<random>-<name>`: the
# process that made it, so that a later run can tell the leftovers of a killed process (which it
# removes, `remove_stale_partials`) from the work of one still running.
PARTIAL_PREFIX = ".partial-"
_PARTIAL_NAME = re.compile(r"\.partial-(\d+)@([A-Za-z0-9_]+)-([0-9a-f]{8})-(.*)", re.DOTALL)


class OutputPathError(ValueError):
  """An output path that cannot be written, or that is one of the inputs; the message names it."""


def is_remote(path: PathLike) -> bool:
  """Whether `path` is in an object store or another remote file system (`gs://bucket/...`,
  `s3://...`): one with no atomic rename, so the local recipes here (write aside, rename over)
  do not apply and callers write objects whole instead."""
  return "://" in os.fspath(path)


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


def _output_path(path, inputs, flag: str, kind: str) -> tuple[str, str]:
  """(the path as given, expanded): refused when empty or when it is one of the inputs."""
  text = os.fspath(path) if path is not None else ""
  if not text:
    raise OutputPathError(f"{flag}: no output {kind} given")
  expanded = os.path.expanduser(text)
  for source in inputs:
    if source is not None and os.fspath(source) and same_file(expanded, source):
      raise OutputPathError(f"{flag}={text}: is also an input ({os.fspath(source)}); writing it would destroy "
                            f"the input: choose another output {kind}")
  return text, expanded


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
  text, path = _output_path(path, inputs, flag, "path")
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
  # The file itself is replaced by a rename, so only its folder needs to be writable.
  if not os.access(parent, os.W_OK | os.X_OK):
    raise OutputPathError(f"{flag}={text}: its folder {parent} is not writable")
  return text


def check_output_dir(path: PathLike, flag: str = "--out", inputs: Iterable[Optional[PathLike]] = ()) -> str:
  """Checks, before any work, that `path` is a folder that exists or can be created, and is writable.

  Raises:
    OutputPathError: the path is empty, an existing file, one of the inputs, or not creatable or
      writable.
  """
  text, path = _output_path(path, inputs, flag, "folder")
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
  temporary = os.path.join(directory, partial_name(base[:64]))
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


def _host() -> str:
  return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:64] or "host"


def partial_name(name: str) -> str:
  """A new temporary name for `name` (no path): `.partial-<pid>@<host>-<random>-<name>`."""
  return f"{PARTIAL_PREFIX}{os.getpid()}@{_host()}-{uuid.uuid4().hex[:8]}-{name}"


def _process_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except OSError:  # exists, but another user's
    return True
  return True


def _stale(entry: str) -> Optional[str]:
  """The `name` part of a `.partial-*` entry left by a process of this machine that has ended, else None."""
  match = _PARTIAL_NAME.fullmatch(entry)
  if not match or match.group(2) != _host():
    return None
  pid = int(match.group(1))
  return None if pid == os.getpid() or _process_alive(pid) else match.group(4)


def remove_stale_partials(folder: PathLike, name: Optional[str] = None) -> list[str]:
  """Removes the temporary files and folders in `folder` that a killed process left behind.

  Only entries named by `partial_name` (as `atomic_path`, `staging_dir` and `replace_dir` name
  them) whose process ran on this machine and has ended are removed: never a user's file, never
  the work of a running process (of this machine or another). With `name`, only the leftovers of
  that output (`name` itself, or a name starting with `name-`).

  Returns:
    The paths removed.
  """
  folder = os.path.expanduser(os.fspath(folder))
  try:
    entries = os.listdir(folder)
  except OSError:
    return []
  removed = []
  for entry in sorted(entries):
    rest = _stale(entry)
    if rest is None or (name is not None and rest != name and not rest.startswith(f"{name}-")):
      continue
    path = os.path.join(folder, entry)
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path, ignore_errors=True)
    else:
      with contextlib.suppress(OSError):
        os.remove(path)
    if not os.path.lexists(path):
      removed.append(path)
  return removed


def staging_dir(target: PathLike) -> str:
  """A new empty folder beside `target` to build a replacement for it in (see `replace_dir`).

  Before it is made, the leftovers of earlier builds of `target` by killed processes are cleaned
  up (`recover_dir`).
  """
  target = os.path.expanduser(os.fspath(target))
  parent = os.path.dirname(os.path.abspath(target))
  os.makedirs(parent, exist_ok=True)
  recover_dir(target)
  # os.mkdir, not mkdtemp: the folder may become `target` itself, which others read (mkdtemp's is 0700).
  staged = os.path.join(parent, partial_name(os.path.basename(target)))
  os.mkdir(staged)
  return staged


def recover_dir(target: PathLike) -> list[str]:
  """Undoes what a killed `replace_dir` or build of `target` left: restores the old folder if the
  kill came between its two renames, and removes stale staging folders (`remove_stale_partials`).

  Returns:
    The paths removed.
  """
  target = os.path.expanduser(os.fspath(target))
  parent, base = os.path.dirname(os.path.abspath(target)), os.path.basename(target)
  if not os.path.lexists(target):
    with contextlib.suppress(OSError):
      for entry in sorted(os.listdir(parent)):
        if _stale(entry) == f"{base}-old":
          os.replace(os.path.join(parent, entry), target)
          break
  return remove_stale_partials(parent, base)


def replace_dir(staged: PathLike, target: PathLike) -> None:
  """Moves the complete folder `staged` to `target`, replacing what was there.

  The old folder is renamed aside first, the new one renamed into place, then the old one removed:
  a crash between the two renames leaves the old content intact under `.partial-*-old` beside
  `target` (never a half-written `target`), which the next `staging_dir` or `recover_dir` of
  `target` puts back.
  """
  staged = os.fspath(staged)
  target = os.path.expanduser(os.fspath(target))
  old = None
  if os.path.lexists(target):
    old = os.path.join(os.path.dirname(os.path.abspath(target)), partial_name(f"{os.path.basename(target)}-old"))
    os.replace(target, old)
  try:
    os.replace(staged, target)
  except BaseException:
    if old is not None:
      os.replace(old, target)
    raise
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)
