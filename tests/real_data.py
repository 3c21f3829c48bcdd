"""The shared data folder for tests that read it (``from real_data import ...``: pytest puts this folder
on ``sys.path``).

Use ``@needs_real_data`` on such a test and import the ``real_data`` fixture into its module so pytest
finds it. Without the folder the test is skipped with a reason; under ``CI=true`` it fails instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from talora.data_paths import shared_data_dir
from talora.errors import ConfigError

REASON = "shared data folder not found: set TALORA_DATA or place shared/data beside the checkout"

try:
    REAL_DATA: Path | None = shared_data_dir(required=False)
    _PROBLEM = ""
except ConfigError as err:  # TALORA_DATA names a wrong folder: collection must go on, the tests say why
    REAL_DATA = None
    _PROBLEM = str(err)


@pytest.fixture
def real_data() -> Path:
    """The shared data folder; skips the test without it, or fails it under CI."""
    if REAL_DATA is None:
        why = f"{REASON} ({_PROBLEM})" if _PROBLEM else REASON
        # A CI run that quietly skips these would pass without ever reading the real data.
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {why}", pytrace=False)
        pytest.skip(why)
    return REAL_DATA


needs_real_data = pytest.mark.usefixtures("real_data")
