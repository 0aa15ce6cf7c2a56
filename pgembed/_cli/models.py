"""`pgembed export` and `pgembed encode`."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    del sub  # filled by the encoders work


_ = argparse
