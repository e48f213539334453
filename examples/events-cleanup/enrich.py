"""A pandas function for the events-cleanup example."""

import pandas as pd


def revenue(frame: pd.DataFrame) -> pd.DataFrame:
    """Only purchases earn revenue; the index is kept, so each row stays its input record."""
    frame["revenue"] = frame["amount"].where(frame["kind"] == "buy", 0.0)
    return frame
