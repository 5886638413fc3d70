"""The nightly CRM -> ESP contact sync (DAG crm_to_esp_contacts), by concern.

extract   CRM contacts modified in the interval (or all: full refresh) -> staged Parquet chunks.
loyalty   the partner's tier file: download, parse, check, snapshot per customer-id bucket.
quality   the quality gate; good contacts staged per key bucket.
snapshot  per partition (a set of buckets): merge the good rows into the contacts snapshot, resolve
          duplicate emails, join the tiers, map to ESP members; commit after every load.
audience  `mirror`: the ESP audience as it is.
members   per partition: desired members vs the sync state, the removal stop, the load.

The operators (mailsync.operators.contacts) pass every connection, mapping and state name in.
"""
