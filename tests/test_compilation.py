"""The persistent compilation cache: which folder a setting names, and that a second process reads
the programs the first one kept there (each process is fresh: JAX decides at its first compile)."""

import os
import subprocess
import sys

from tfvgan_jax import compilation

PROGRAM = """
import sys, jax, jax.numpy as jnp
from tfvgan_jax import compilation
hits = []
jax.monitoring.register_event_listener(lambda event, **kw: hits.append(event) if event.endswith("cache_hits") else None)
print("folder", compilation.use_cache(sys.argv[1]))
jax.jit(lambda x: jnp.sin(x) @ x.T + 1.0)(jnp.ones((64, 64))).block_until_ready()
print("hits", len(hits))
"""


def _run(setting: str, env: dict) -> dict:
  out = subprocess.run([sys.executable, "-c", PROGRAM, setting], env=env, capture_output=True, text=True, check=True)
  return dict(line.split(" ", 1) for line in out.stdout.splitlines())


def _clean_env(**extra) -> dict:
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  env.update(JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", **extra)
  return env


def test_settings_name_the_folder(monkeypatch):
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  monkeypatch.setenv("HOME", "/home/someone")
  assert compilation.resolve_cache_folder("auto") == "/home/someone/.cache/tfvgan_jax/jax_cache"
  assert compilation.resolve_cache_folder("") == ""
  assert compilation.resolve_cache_folder(None) == ""
  assert compilation.resolve_cache_folder("/data/cache") == "/data/cache"
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/scratch/xla")
  assert compilation.resolve_cache_folder("auto") == "/scratch/xla"


def test_a_second_process_reads_what_the_first_kept(tmp_path):
  folder = tmp_path / "cache"
  first = _run(str(folder), _clean_env())
  assert first == {"folder": str(folder), "hits": "0"}
  assert any(folder.iterdir())  # the compiled program was written
  second = _run(str(folder), _clean_env())
  assert second["folder"] == str(folder) and int(second["hits"]) >= 1  # ones() and the jitted function


def test_off_writes_nothing_and_a_users_own_setting_is_kept(tmp_path):
  assert _run("", _clean_env(HOME=str(tmp_path))) == {"folder": "", "hits": "0"}
  assert not (tmp_path / ".cache").exists()
  own = tmp_path / "own"
  result = _run(str(tmp_path / "ours"), _clean_env(JAX_COMPILATION_CACHE_DIR=str(own)))
  assert result["folder"] == str(own) and any(own.iterdir()) and not (tmp_path / "ours").exists()
