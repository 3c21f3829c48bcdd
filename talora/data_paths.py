"""Where the shared benchmark data folder is (``MANIFEST.json`` + ``<lang>/<task>/<split>.jsonl``)."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError

ENV_VAR = "TALORA_DATA"
MANIFEST = "MANIFEST.json"
# The data sits beside the checkout, not inside it; in an installed package this points into
# site-packages, where nothing is found and the other places decide.
CHECKOUT_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir(required: bool = True) -> Path | None:
    """The shared data folder: ``$TALORA_DATA``, else the first ``../shared/data`` (from the current
    directory, then from the source checkout) holding a MANIFEST.json.

    When none is found: None if not ``required``, else a ConfigError saying where it looked.
    """
    # An empty value counts as unset, so `TALORA_DATA= cmd` turns the variable off for one command.
    if value := os.environ.get(ENV_VAR):
        path = Path(value).expanduser().resolve()
        # A folder named explicitly but wrong is a mistake to report, even when not required: falling
        # back to another folder would silently run on data the user did not ask for.
        if not (path / MANIFEST).is_file():
            raise ConfigError(f"{ENV_VAR}={value!r}: {path} is not a data folder (no {MANIFEST} in it)")
        return path
    places = []
    for base in (Path.cwd(), CHECKOUT_ROOT):
        place = (base / ".." / "shared" / "data").resolve()
        if place not in places:  # run from the checkout itself, both bases name the same folder
            places.append(place)
    for place in places:
        if (place / MANIFEST).is_file():
            return place
    if not required:
        return None
    raise ConfigError(
        f"shared data folder not found: no {MANIFEST} in {' or '.join(map(str, places))}; "
        f"set {ENV_VAR} or pass --data-dir"
    )
