"""Training configs: `get_config(arg)` files for `--config=configs/NAME.py[:VARIANT]`.

`voxceleb.py` is the papers' config (every field a run reads is set there); the others import it
and change what differs. `common.parse_variant` reads the part after the colon for all of them.
"""
