"""A vectorised score for each listing, one numpy expression per batch.

``columns`` maps each column to a numpy array: a read-only view of the batch's own memory for
numbers without nulls, a ``numpy.ma.MaskedArray`` (mask = null) when the column has nulls.
Return the new columns as arrays as long as the batch; a masked value becomes null.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

WEIGHTS = {"rating": 0.5, "distance": 0.3, "price": 0.2}
FAIR_PRICE_M2 = 10_000  # a price per m2 at or above this scores 0 on price


def vector_score(columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    price_m2 = columns["price"] / columns["area_m2"]
    # Unrated listings (null rating) count as average; np.ma keeps the nulls until here.
    rating = np.ma.filled(columns["rating"] / 5.0, 0.5)
    nearness = np.exp(-columns["distance_km"] / 5.0)
    cheapness = 1.0 - np.clip(price_m2 / FAIR_PRICE_M2, 0.0, 1.0)
    score = (WEIGHTS["rating"] * rating + WEIGHTS["distance"] * nearness
             + WEIGHTS["price"] * cheapness)
    return {
        "price_m2": np.round(price_m2, 2),
        "score": np.round(score, 4),
        # Still null where the listing has no rating: the mask goes back as nulls.
        "stars": columns["rating"] * 1,
    }
