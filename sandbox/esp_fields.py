"""Mailchimp's `fields` and `exclude_fields` query parameters: partial responses.

"A comma-separated list of fields to return. Reference parameters of sub-objects with dot
notation." Clients use them to keep big answers small (a 500-member batch answer otherwise
carries every member in full).
"""

from __future__ import annotations

from dataclasses import replace


def _paths(value: str) -> list[list[str]]:
    return [p.strip().split(".") for p in value.split(",") if p.strip()]


def _select(doc: object, paths: list[list[str]]) -> object:
    if isinstance(doc, list):
        return [_select(item, paths) for item in doc]
    if not isinstance(doc, dict):
        return doc
    out = {}
    for key, value in doc.items():
        rest = [p[1:] for p in paths if p[0] == key]
        if rest:
            out[key] = value if any(not r for r in rest) else _select(value, rest)
    return out


def _exclude(doc: object, paths: list[list[str]]) -> object:
    if isinstance(doc, list):
        return [_exclude(item, paths) for item in doc]
    if not isinstance(doc, dict):
        return doc
    out = {}
    for key, value in doc.items():
        rest = [p[1:] for p in paths if p[0] == key]
        if any(not r for r in rest):
            continue
        out[key] = _exclude(value, rest) if rest else value
    return out


def shape(reply, query) -> object:
    """The reply with only the requested fields (or without the excluded ones)."""
    if reply.status >= 300 or not isinstance(reply.body, dict):
        return reply
    if query.get("fields"):
        return replace(reply, body=_select(reply.body, _paths(query["fields"])))
    if query.get("exclude_fields"):
        return replace(reply, body=_exclude(reply.body, _paths(query["exclude_fields"])))
    return reply
