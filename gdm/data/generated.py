"""What a dataset family makes (its own module: the family registry and the photo-patch family both use it)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Generated(NamedTuple):
    """What a family makes: images float32 or uint8 [N, H, W], params float32 [N, P] or None, facts for the manifest."""

    images: np.ndarray
    params: np.ndarray | None
    info: dict
