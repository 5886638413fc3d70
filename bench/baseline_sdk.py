"""The script a user would otherwise write, with the vendors' official SDKs, on a 1%-change night.

    python -m bench.baseline_sdk [--contacts 20000] [--latency-ms 100] [--sample 200] [--no-limits]

Same sandbox settings (the vendors' limiters and latency on, bench/limits.py), same seed and size
and the same night's edits (`bench.common.one_percent_night`) as bench/bench_contacts_sync.py, so
the two are compared side by side in one `make bench` run. Neither variant keeps any state, so
neither can tell what changed: every night it reads every CRM contact and sends every member.

- **one at a time**: `hubspot-api-client`'s `crm.contacts.basic_api.get_page` (100 per page), then
  `mailchimp-marketing`'s `lists.set_list_member` (one PUT per member), one call after the other.
  The PUTs are timed on `--sample` members and extrapolated (at 100 ms a call, 20k PUTs take over
  half an hour); the CRM paging is run in full.
- **SDK batch calls**: the same paging, then `lists.batch_list_members` with 500 members per call,
  run in full. The CRM read is the same paging in both (HubSpot's SDK has no bulk read of all
  contacts other than pages), measured once and counted in both.

Both SDKs take their base URL from configuration: HubSpot's `HubSpot(access_token=..., host=...)`
(set on each API's `Configuration`), Mailchimp's `Client().api_client.host`.
Writes bench/results/baseline_sdk_<contacts>.json.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

from bench import limits
from bench.common import add_limit_args, one_percent_night, sandbox, write_result

PROPERTIES = ["email", "firstname", "lastname", "city", "marketing_consent"]
PAGE = limits.HUBSPOT_PAGE
BATCH = limits.MAILCHIMP_BATCH_MEMBERS


def hubspot_client(sb):
    from hubspot import HubSpot
    from urllib3.util.retry import Retry

    retry = Retry(
        total=8, status_forcelist=(429, 502, 503, 504), backoff_factor=0.5, respect_retry_after_header=True
    )
    return HubSpot(access_token=sb.info["credentials"]["crm_token"], host=sb.url("crm"), retry=retry)


def mailchimp_client(sb):
    import mailchimp_marketing

    client = mailchimp_marketing.Client()
    client.set_config({"api_key": sb.info["credentials"]["esp_api_key"], "server": "us21"})
    client.api_client.host = sb.url("esp")
    return client


def read_all_contacts(hubspot) -> tuple[list[dict], int]:
    """Every contact, 100 per page, as the SDK's paging gives them; and the calls it took."""
    contacts, after, calls = [], None, 0
    while True:
        page = hubspot.crm.contacts.basic_api.get_page(limit=PAGE, after=after, properties=PROPERTIES)
        calls += 1
        contacts += [c.properties for c in page.results]
        if not page.paging or not page.paging.next:
            return contacts, calls
        after = page.paging.next.after


def member(props: dict) -> dict | None:
    email = (props.get("email") or "").strip()
    if not email:
        return None
    consent = str(props.get("marketing_consent") or "").lower() == "true"
    return {
        "email_address": email,
        "status_if_new": "subscribed" if consent else "unsubscribed",
        "merge_fields": {
            "FNAME": props.get("firstname") or "",
            "LNAME": props.get("lastname") or "",
            "CITY": props.get("city") or "",
        },
    }


def one_at_a_time(mailchimp, list_id: str, members: list[dict], sample: int) -> dict:
    from mailchimp_marketing.api_client import ApiClientError

    from mailsync.hooks.esp import subscriber_hash

    errors, started = 0, time.perf_counter()
    for m in members[:sample]:
        try:
            mailchimp.lists.set_list_member(list_id, subscriber_hash(m["email_address"]), m)
        except ApiClientError:
            errors += 1  # a rejected member (invalid email, compliance state): the script goes on
    per_call = (time.perf_counter() - started) / max(1, min(sample, len(members)))
    return {
        "sample": min(sample, len(members)),
        "sample_errors": errors,
        "seconds_per_member": round(per_call, 4),
        "write_calls": len(members),
        "write_seconds_estimated": round(per_call * len(members), 1),
    }


def batched(mailchimp, list_id: str, members: list[dict]) -> dict:
    started, errors = time.perf_counter(), 0
    for i in range(0, len(members), BATCH):
        answer = mailchimp.lists.batch_list_members(
            list_id, {"members": members[i : i + BATCH], "update_existing": True}
        )
        errors += int(answer.get("error_count", 0))
    return {
        "write_calls": math.ceil(len(members) / BATCH),
        "write_seconds": round(time.perf_counter() - started, 1),
        "member_errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--sample", type=int, default=200)
    args = add_limit_args(parser).parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        sandbox(
            Path(tmp), contacts=args.contacts, limits=not args.no_limits, latency_ms=args.latency_ms
        ) as sb,
    ):
        changed = one_percent_night(sb)
        hubspot, mailchimp, list_id = hubspot_client(sb), mailchimp_client(sb), sb.info["list_id"]
        started = time.perf_counter()
        contacts, read_calls = read_all_contacts(hubspot)
        read_s = time.perf_counter() - started
        members = [m for m in map(member, contacts) if m]
        single = one_at_a_time(mailchimp, list_id, members, args.sample)
        batch = batched(mailchimp, list_id, members)
    single |= {"crm_read_calls": read_calls, "seconds": round(read_s + single["write_seconds_estimated"], 1)}
    batch |= {"crm_read_calls": read_calls, "seconds": round(read_s + batch["write_seconds"], 1)}
    write_result(
        f"baseline_sdk_{args.contacts}",
        {
            "contacts": args.contacts,
            "contacts_changed": len(changed),
            "crm_read_seconds": round(read_s, 1),
            "members_sent": len(members),
            "sdks": _versions(),
            "one_at_a_time_no_diff": single,
            "sdk_batch_no_diff": batch,
        },
    )


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("hubspot-api-client", "mailchimp-marketing")}


if __name__ == "__main__":
    main()
