"""JAX's persistent compilation cache, shared by training, editing and the preparation jobs.

Compiling the training step takes 80-90 s on an H200 at 256 px and tens of seconds on a CPU; a
resumed run, a second run of the same config, an edit after another and every worker of a
preparation job compile the same programs again unless XLA's executables are kept on disk. The
setting is one string:

  'auto'   `$JAX_COMPILATION_CACHE_DIR` where set, else ~/.cache/tfvgan_jax/jax_cache
  ''       off
  FOLDER   that folder (a `gs://` path works where JAX can write there)

A cache the user configured for JAX (`jax.config.jax_compilation_cache_dir`) is left as it is. JAX
decides whether to use a cache at the process's first compilation: set it before anything is
compiled (`train.train_and_evaluate` and the edit and evaluate commands do).
"""

from __future__ import annotations

import os

# The help of the command-line flag that takes the setting (edit, evaluate).
FLAG_HELP = ("JAX's persistent compilation cache: 'auto' ($JAX_COMPILATION_CACHE_DIR, else "
             "~/.cache/tfvgan_jax/jax_cache), '' (off) or a folder; a second run reads its programs from it")


def default_cache_folder() -> str:
  """`$JAX_COMPILATION_CACHE_DIR` where set, else ~/.cache/tfvgan_jax/jax_cache."""
  return os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(
      os.path.expanduser("~"), ".cache", "tfvgan_jax", "jax_cache")


def resolve_cache_folder(setting: str) -> str:
  """The folder a setting names ('auto', '' for none, or a folder)."""
  setting = "" if setting is None else str(setting)
  return default_cache_folder() if setting == "auto" else setting


def use_cache(setting: str) -> str:
  """Lets this process keep its compiled programs in the folder `setting` names and reuse others'.

  Returns the folder in use ('' when none): the user's own JAX setting where there is one.
  """
  import jax
  folder = resolve_cache_folder(setting)
  if folder and not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", folder)
  return jax.config.jax_compilation_cache_dir or ""
