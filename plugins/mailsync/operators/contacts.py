"""Operators of the nightly CRM -> ESP contact sync: one per step, each with its connection,
mapping and state as arguments (a brand passes its own), the work in mailsync.contacts.

The partitioned steps (transform, diff, load) are mapped over the plan's partitions:
`TransformContactsOperator.partial(...).expand(part=plan.output)`; each returns its partition's
summary, which the next step gets as its argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from mailsync import links

CONTACTS = "crm_to_esp_contacts"  # the default brand's mapping and state name


def _run(context: Any):
    from mailsync.operators.run import Run

    return Run.from_context(context)


def _mapping(name: str):
    from mailsync.mapping.spec import load_mapping

    return load_mapping(name)


class ExtractCrmContactsOperator(BaseOperator):
    """Stage the CRM contacts modified in the interval (all on a full refresh, a first night or
    `mirror`) and those archived, as Parquet chunks; skipped nights are caught up from the
    high-water mark of the last completed night."""

    template_fields: Sequence[str] = ("crm_conn_id", "mapping")
    ui_color = "#e8f0fb"

    def __init__(self, *, crm_conn_id: str = "crm_default", mapping: str = CONTACTS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.crm_conn_id = crm_conn_id
        self.mapping = mapping

    def execute(self, context: Any) -> dict[str, Any]:
        from mailsync.contacts.extract import extract
        from mailsync.hooks.crm import CrmHook

        return extract(_run(context), CrmHook(self.crm_conn_id), _mapping(self.mapping))


class ExtractLoyaltyFileOperator(BaseOperator):
    """Download the night's loyalty file the sensor found (checked against its done-marker) and
    parse it in the mapping's dialect; a file that cannot be used is refused, not failed, unless
    `loyalty_required`."""

    template_fields: Sequence[str] = ("sensed", "sftp_conn_id", "mapping")
    ui_color = "#e8f0fb"

    def __init__(
        self, *, sensed: Any, sftp_conn_id: str = "loyalty_sftp", mapping: str = CONTACTS, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.sensed = sensed  # the sensor's result (its XComArg)
        self.sftp_conn_id = sftp_conn_id
        self.mapping = mapping

    def execute(self, context: Any) -> dict[str, Any]:
        from mailsync.contacts.loyalty import extract_loyalty
        from mailsync.hooks.sftp import LoyaltySftpHook

        hook = LoyaltySftpHook(self.sftp_conn_id)
        return extract_loyalty(_run(context), dict(self.sensed), hook, _mapping(self.mapping))


class ContactsQualityGateOperator(BaseOperator):
    """The quality gate over contacts and loyalty rows; good contacts staged per key bucket for
    the partitions (the shared QualityGateOperator stages one folder per source)."""

    template_fields: Sequence[str] = ("mapping",)
    operator_extra_links = links.QUALITY
    ui_color = "#fdf3e1"

    def __init__(self, *, mapping: str = CONTACTS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mapping = mapping

    def execute(self, context: Any) -> dict[str, Any]:
        from mailsync.contacts.quality import validate

        return validate(_run(context), _mapping(self.mapping))


class ListAudienceOperator(BaseOperator):
    """With `mirror`: list the ESP audience and stage the members no CRM contact has."""

    template_fields: Sequence[str] = ("esp_conn_id",)
    ui_color = "#e3f4f4"

    def __init__(self, *, esp_conn_id: str = "esp_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.esp_conn_id = esp_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from mailsync.contacts.audience import list_audience
        from mailsync.hooks.esp import EspHook

        return list_audience(_run(context), EspHook(self.esp_conn_id))


class PlanPartitionsOperator(BaseOperator):
    """Split the key buckets into the `partitions` param's number of partitions (the result of
    the sync does not depend on it); each says whether tonight's extract was full."""

    template_fields: Sequence[str] = ("extracted",)
    ui_color = "#f0f0f0"

    def __init__(self, *, extracted: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.extracted = extracted  # the extract's result (its XComArg)

    def execute(self, context: Any) -> list[dict[str, Any]]:
        from mailsync.operators.run import partitions
        from mailsync.settings import BUCKETS

        full = self.extracted["mode"] == "full"
        split = partitions(_run(context).params["partitions"], BUCKETS)
        return [{"partition": i, "buckets": b, "full": full} for i, b in enumerate(split)]


class TransformContactsOperator(BaseOperator):
    """One partition: tonight's rows merged into the next snapshot, mapped to ESP members."""

    template_fields: Sequence[str] = ("part", "mapping")
    ui_color = "#eef7ee"

    def __init__(self, *, part: Any, mapping: str = CONTACTS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.part = part
        self.mapping = mapping

    def execute(self, context: Any) -> dict[str, Any]:
        from mailsync.contacts.snapshot import transform

        part, m = self.part, _mapping(self.mapping)
        return transform(_run(context), m, part["partition"], part["buckets"], full=part["full"])


class DiffContactsOperator(BaseOperator):
    """One partition: desired members vs what the ESP acknowledged (and, with `mirror`, the
    audience the ESP holds)."""

    template_fields: Sequence[str] = ("transformed", "state")
    ui_color = "#eef7ee"

    def __init__(self, *, transformed: Any, state: str = CONTACTS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.transformed = transformed
        self.state = state

    def execute(self, context: Any) -> dict[str, Any]:
        from mailsync.contacts.members import diff

        return diff(_run(context), self.state, dict(self.transformed))


class GuardRemovalsOperator(BaseOperator):
    """The safety stop over every partition before anything is sent: more removals than
    `max_removal_share` of the audience fail the run unless `allow_mass_removal`."""

    template_fields: Sequence[str] = ("diffs",)
    ui_color = "#fbe9e7"

    def __init__(self, *, diffs: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.diffs = diffs  # every partition's diff (the mapped task's XComArg)

    def execute(self, context: Any) -> list[dict[str, Any]]:
        from mailsync.contacts.members import guard_removals

        diffs = [self.diffs] if isinstance(self.diffs, dict) else list(self.diffs)
        return guard_removals(_run(context), diffs)


class LoadContactsOperator(BaseOperator):
    """One partition's difference to the ESP audience: batch upserts, archives (or deletes, as
    the mapping says); the state advances per acknowledged batch, so a retry resumes."""

    template_fields: Sequence[str] = ("diffed", "esp_conn_id", "mapping", "state")
    operator_extra_links = links.REJECTED
    ui_color = "#e3f4f4"

    def __init__(
        self,
        *,
        diffed: Any,
        esp_conn_id: str = "esp_default",
        mapping: str = CONTACTS,
        state: str = CONTACTS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.diffed = diffed
        self.esp_conn_id = esp_conn_id
        self.mapping = mapping
        self.state = state

    def execute(self, context: Any) -> dict[str, Any]:
        from mailsync.contacts.members import load
        from mailsync.hooks.esp import EspHook

        run = _run(context)
        return load(
            run,
            EspHook(self.esp_conn_id),
            _mapping(self.mapping),
            self.state,
            dict(self.diffed),
            partitions=int(run.params["partitions"]),
        )


class CommitSnapshotsOperator(BaseOperator):
    """After every partition loaded: tonight's snapshots become current, the high-water mark
    advances (nothing with dry_run); after a full extract, contacts gone without an archive are
    recorded as erased."""

    template_fields: Sequence[str] = ("extracted",)
    ui_color = "#f0f0f0"

    def __init__(self, *, extracted: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.extracted = extracted  # the extract's result (its XComArg)

    def execute(self, context: Any) -> dict[str, Any]:
        from mailsync.contacts.snapshot import commit

        return commit(_run(context), full=self.extracted["mode"] == "full")
