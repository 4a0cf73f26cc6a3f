"""What every config file shares: the strict parser of the variant after the colon.

    --config=configs/synthetic.py:res=128,tiny

A variant is comma-separated `key` or `key=value` items. Each config declares the keys it knows and
their types; a value is parsed as that type (booleans as true/false/1/0/yes/no, numbers as numbers)
and anything else is an error that lists the known keys, so a typo never runs another config.
"""

from __future__ import annotations

from typing import Any

_TRUE = ("", "1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _parse_value(key: str, text: str, kind: type) -> Any:
  if kind is bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
      return True
    if lowered in _FALSE:
      return False
    raise ValueError(f"config variant {key}={text!r}: expected a boolean (true/false, 1/0, yes/no)")
  if kind in (int, float):
    try:
      value = float(text)
    except ValueError:
      raise ValueError(f"config variant {key}={text!r}: expected a number") from None
    if kind is int:
      if value != int(value):
        raise ValueError(f"config variant {key}={text!r}: expected an integer")
      return int(value)
    return value
  if kind is str:
    return text
  raise TypeError(f"config variant {key}: unsupported type {kind}")


def parse_variant(arg: str | None, known: dict[str, type]) -> dict[str, Any]:
  """{key: value} of a variant string, for the keys in `known` ({key: bool | int | float | str}).

  A bare `key` is `key=true` (booleans only). Keys not given are absent from the result.

  Raises:
    ValueError: an unknown key (the message lists the known ones), a value of the wrong type, a key
      given twice, or a bare key that is not a boolean.
  """
  values: dict[str, Any] = {}
  for part in (arg or "").split(","):
    part = part.strip()
    if not part:
      continue
    key, has_value, text = part.partition("=")
    key = key.strip()
    if key not in known:
      listed = ", ".join(sorted(known)) or "none"
      raise ValueError(f"unknown config variant {key!r} in {arg!r}; known: {listed}")
    if key in values:
      raise ValueError(f"config variant {key!r} given twice in {arg!r}")
    if not has_value and known[key] is not bool:
      raise ValueError(f"config variant {key!r} needs a value ({key}=...)")
    values[key] = _parse_value(key, text if has_value else "", known[key])
  return values


def set_field(config, path: str, value: Any) -> None:
  """Sets the field a dotted path names (e.g. 'loss.weights.app') at any depth.

  Raises:
    KeyError: a path that names no existing field; the message names the path.
  """
  *parents, leaf = path.split(".")
  node = config
  for parent in parents:
    if not hasattr(node, "keys") or parent not in node:
      raise KeyError(f"the config has no field {path!r}")
    node = node[parent]
  if not hasattr(node, "keys") or leaf not in node:
    raise KeyError(f"the config has no field {path!r}")
  node[leaf] = value


def get_field(config, path: str) -> Any:
  """The value of the field a dotted path names (`set_field`'s)."""
  node = config
  for part in path.split("."):
    if not hasattr(node, "keys") or part not in node:
      raise KeyError(f"the config has no field {path!r}")
    node = node[part]
  return node
