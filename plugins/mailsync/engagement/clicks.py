"""Each interval's clicks (email, campaign, moment), kept in the engagement DAG's state area:
the shop DAG attributes orders to the last click before them."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import pandas as pd

from mailsync.mapping import engine
from mailsync.staging import state_area

if TYPE_CHECKING:
    from mailsync.staging import Area

MOMENT = "datetime64[us, UTC]"
SCHEMA = {"email": "string", "campaign_id": "string", "clicked_at": MOMENT}
FOLDER = "clicks"


def store_clicks(current: Area, events: pd.DataFrame, name: str) -> None:
    """Store every click of the interval's `events` as `name` in `current`/clicks. Replaced on
    rerun, like the daily aggregate; an interval without clicks leaves no file."""
    clicks = current / FOLDER
    if events.empty or not events["action"].eq("click").any():
        if clicks.exists(name):
            clicks.file(name).unlink()
        return
    hits = events[events["action"].eq("click").fillna(False).to_numpy()]
    frame = pd.DataFrame(
        {"email": hits[engine.KEY], "campaign_id": hits["campaign_id"], "clicked_at": hits["timestamp"]}
    ).astype(SCHEMA)
    clicks.write_parquet(name, frame)


def clicks_between(engagement_dag_id: str, start: datetime, end: datetime) -> pd.DataFrame:
    """Clicks stored by the engagement DAG `engagement_dag_id` with start <= moment < end
    (empty if it has not run yet)."""
    import pyarrow.dataset as ds

    area = state_area(engagement_dag_id) / FOLDER
    if not area.names(".parquet"):
        return pd.DataFrame({"email": [], "campaign_id": [], "clicked_at": []}).astype(SCHEMA)
    dataset = ds.dataset(area.path.path, filesystem=area.path.fs, format="parquet")
    moment = ds.field("clicked_at")
    table = dataset.to_table(filter=(moment >= pd.Timestamp(start)) & (moment < pd.Timestamp(end)))
    return table.to_pandas()
