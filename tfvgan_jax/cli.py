"""What every command line of the project shares: one-line errors, and `--debug` for the traceback.

    def main(argv):
      ...
    if __name__ == "__main__":
      cli.run(main)

A command's errors reach the user as one line, `error: MESSAGE`, on stderr, with exit status 1; the
message names the file or flag and the problem (the exceptions of the library are written so).
`--debug` re-raises instead, to show the traceback. Usage errors (unknown flags, bad values) are
absl's own: one line and the usage hint.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import app, flags

_DEBUG = flags.DEFINE_bool("debug", False, "show the full traceback of an error instead of one line")


def error_line(error: BaseException) -> str:
  """`error: ...` for an exception: its message, or its type where it has none."""
  text = str(error).strip() or type(error).__name__
  if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)) and \
      getattr(error, "filename", None) and error.strerror:
    text = f"{error.filename}: {error.strerror}"
  elif isinstance(error, KeyError):
    text = f"missing key {text}"
  text = "; ".join(line.strip() for line in text.splitlines() if line.strip())
  return f"error: {text}"


def run(main: Callable[[list[str]], None]) -> None:
  """`absl.app.run(main)`, with every exception but a keyboard interrupt turned into one line."""

  def guarded(argv):
    try:
      return main(argv)
    except (KeyboardInterrupt, SystemExit, app.UsageError):
      raise
    except Exception as error:  # noqa: BLE001 - the one place errors become a line for the user
      if _DEBUG.value:
        raise
      print(error_line(error), file=sys.stderr)
      sys.exit(1)

  app.run(guarded)
