"""What every data_prep command shares: one-line errors, and `--debug` for the traceback.

An error a user can act on (a bad flag, a missing input, an output that cannot be written, a job
that fails) is printed as one line, `error: ...`, naming the flag or the file and the problem, and
the command exits with a non-zero status; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from tfvgan_jax.cli import one_line

# Exit status of a command line that cannot be parsed (as argparse's own).
USAGE_STATUS = 2


class UsageError(Exception):
  """A command line that cannot be run as given; the message names the flag."""


class ArgumentParser(argparse.ArgumentParser):
  """argparse whose usage errors are one line, `error: ...` (exit status 2, as argparse's), and
  which has --debug."""

  def __init__(self, *args, debug: bool = True, **kwargs):
    super().__init__(*args, **kwargs)
    if debug:
      self.add_argument("--debug", action="store_true", help="on an error, show the traceback")

  def error(self, message):
    self.exit(USAGE_STATUS, f"error: {' '.join(message.split())}\n")


def run(body: Callable[[], int], debug: bool) -> int:
  """Runs `body` (a command's work, returning its exit status); prints any error as one line."""
  try:
    return body()
  except Exception as error:  # every failure reaches the user as one line
    if debug:
      raise
    print(f"error: {one_line(error)}", file=sys.stderr)
    return 1
