"""What every command line of the project shares: one-line errors, and `--debug` for the traceback.

    def main(argv):
      ...
    if __name__ == "__main__":
      cli.run(main)

A command's errors reach the user as one line, `error: MESSAGE`, on stderr, with exit status 1; the
message names the file or flag and the problem (the exceptions of the library are written so).
`--debug` re-raises instead, to show the traceback. Usage errors (unknown flags, bad values, a
config file that fails to load) are one line too (`parse_flags`), with exit status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NamedTuple, Optional

from absl import app, flags

from tfvgan_jax import compilation

class SharedFlags(NamedTuple):
  """Flags that several commands share (editing, evaluation), defined once so that their modules
  can be imported together (a notebook, the test suite)."""

  checkpoint: flags.FlagHolder
  face_model: flags.FlagHolder
  out: flags.FlagHolder
  compilation_cache: flags.FlagHolder


_SHARED: Optional[SharedFlags] = None


def shared_flags() -> SharedFlags:
  """--checkpoint, --face_model, --out and --compilation_cache, defined on the first call (importing
  this module defines no flag, so that commands with flags of those names, such as data_prep's, can
  use it too)."""
  global _SHARED
  if _SHARED is None:
    _SHARED = SharedFlags(
        flags.DEFINE_string("checkpoint", None, "a training --workdir holding checkpoints/"),
        flags.DEFINE_string("face_model", None, "the run's face model, if its path is not readable here"),
        flags.DEFINE_string("out", None, "the output: edit: the mp4 to write; evaluate: the folder of results.md "
                            "and results.json (default: the checkpoint's workdir)"),
        flags.DEFINE_string("compilation_cache", "auto", compilation.FLAG_HELP))
  return _SHARED


def _debug() -> bool:
  return "debug" in flags.FLAGS and bool(flags.FLAGS["debug"].value)


def _expected(error: BaseException) -> bool:
  """Whether the message alone says what went wrong: the project's own errors and the OS's."""
  return (isinstance(error, (ValueError, OSError))
          or type(error).__module__.startswith(("tfvgan_jax", "data_prep")))


def one_line(error: BaseException) -> str:
  """The error's message on one line; the exception's type leads (with a pointer to --debug) for
  anything unexpected."""
  if isinstance(error, OSError) and getattr(error, "filename", None) and error.strerror:
    message = f"{error.filename}: {error.strerror}"
  else:
    message = " ".join(str(error).split()) or type(error).__name__
  return message if _expected(error) else f"{type(error).__name__}: {message} (--debug shows the traceback)"


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, its errors as one line (exit status 2): a config file that fails to load
  (`--config=...:tiy`) shows its exception's last line, not the traceback absl embeds."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    message = lines[0] if lines else type(error).__name__
    if len(lines) > 1 and "Traceback" in str(error):
      flag = lines[0].split(": Error")[0].removeprefix("flag ").strip()
      message = f"{flag}: {lines[-1]}"
    if any(arg in ("--debug", "--debug=true", "--debug=1") for arg in argv):
      raise
    print(f"error: {message} (--helpshort lists the flags)", file=sys.stderr)
    sys.exit(2)


def run(main: Callable[[list[str]], None]) -> None:
  """`absl.app.run(main)`, with every exception but a keyboard interrupt turned into one line."""

  def guarded(argv):
    try:
      return main(argv)
    except (KeyboardInterrupt, SystemExit, app.UsageError):
      raise
    except Exception as error:  # noqa: BLE001 - the one place errors become a line for the user
      if _debug():
        raise
      print(f"error: {one_line(error)}", file=sys.stderr)
      sys.exit(1)

  if "debug" not in flags.FLAGS:
    flags.DEFINE_bool("debug", False, "show the full traceback of an error instead of one line")
  app.run(guarded, flags_parser=parse_flags)
