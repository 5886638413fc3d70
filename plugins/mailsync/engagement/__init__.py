"""The daily ESP -> CRM engagement write-back (DAG esp_to_crm_engagement), split by concern.

Idempotent by construction: each interval's activity is aggregated per contact into the daily
store (one file per interval, replaced on rerun); a touched contact's CRM values are derived
from all stored days — sums, earliest bounce/unsubscribe, latest open/click — and written as
absolute values. Running a day twice, or backfilling days in any order, gives the same CRM.

* `activity`: the interval's campaigns and their activity events (extract).
* `totals`: the daily store, a contact's values derived from all stored days (transform).
* `clicks`: each interval's clicks, kept for the shop DAG's attribution (`clicks_between`).

The operators are in mailsync.operators.engagement; the quality gate and the CRM write-back are
the shared steps (mailsync.operators.steps, mailsync.operators.crm, whose list of contacts the
CRM refused the transform touches again).
"""
