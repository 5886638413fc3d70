"""HubSpot contact properties: definitions, write validation and the object JSON.

HubSpot returns every property value as a string (or null) and validates writes by property type;
an unknown or read-only property fails the whole request. Two properties are deliberately typed
``string`` although they hold dates/amounts (``date_of_birth``, ``lifetime_value``): in the source
CRM they were filled by imports and forms, which is how the dirt the pipeline must clean got in.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date

from sandbox.esp_model import email_valid
from sandbox.timefmt import DAY_MS, hs_time, iso_day, parse_instant

# name, label, type, fieldType, group, read-only
_DEFS = [
    ("hs_object_id", "Record ID", "number", "number", "contactinformation", True),
    ("email", "Email", "string", "text", "contactinformation", False),
    ("firstname", "First Name", "string", "text", "contactinformation", False),
    ("lastname", "Last Name", "string", "text", "contactinformation", False),
    ("date_of_birth", "Date of birth", "string", "text", "contactinformation", False),
    ("city", "City", "string", "text", "contactinformation", False),
    ("country", "Country/Region", "string", "text", "contactinformation", False),
    ("hs_language", "Preferred language", "enumeration", "select", "contactinformation", False),
    ("customer_id", "Customer ID", "string", "text", "shop", False),
    ("marketing_consent", "Marketing consent", "bool", "booleancheckbox", "consent", False),
    ("lifetime_value", "Lifetime value", "string", "text", "shop", False),
    ("last_order_date", "Last order date", "date", "date", "shop", False),
    ("createdate", "Create Date", "datetime", "date", "contactinformation", True),
    ("lastmodifieddate", "Last Modified Date", "datetime", "date", "contactinformation", True),
    ("email_invalid", "Email invalid", "bool", "booleancheckbox", "esp_engagement", False),
    ("email_invalid_date", "Email invalid since", "date", "date", "esp_engagement", False),
    ("email_invalid_reason", "Email invalid reason", "string", "text", "esp_engagement", False),
    ("marketing_opt_out_date", "Marketing opt-out date", "date", "date", "esp_engagement", False),
    ("marketing_opt_out_campaign", "Marketing opt-out campaign", "string", "text", "esp_engagement", False),
    ("esp_opens_total", "ESP opens (total)", "number", "number", "esp_engagement", False),
    ("esp_clicks_total", "ESP clicks (total)", "number", "number", "esp_engagement", False),
    ("esp_soft_bounces_total", "ESP soft bounces (total)", "number", "number", "esp_engagement", False),
    ("esp_last_open_at", "ESP last open", "datetime", "date", "esp_engagement", False),
    ("esp_last_click_at", "ESP last click", "datetime", "date", "esp_engagement", False),
    ("esp_campaigns_engaged", "ESP campaigns engaged", "number", "number", "esp_engagement", False),
]


@dataclass(frozen=True)
class Prop:
    name: str
    label: str
    type: str
    field_type: str
    group: str
    read_only: bool

    def json(self) -> dict:
        return {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "fieldType": self.field_type,
            "groupName": self.group,
            "description": "",
            "options": [],
            "displayOrder": -1,
            "calculated": False,
            "externalOptions": False,
            "hasUniqueValue": self.name == "email",
            "hidden": False,
            "hubspotDefined": self.group != "esp_engagement" and self.group != "shop",
            "modificationMetadata": {
                "archivable": not self.read_only,
                "readOnlyDefinition": True,
                "readOnlyValue": self.read_only,
            },
            "formField": not self.read_only,
            "archived": False,
            "createdAt": "2019-01-15T09:00:00.000Z",
            "updatedAt": "2019-01-15T09:00:00.000Z",
        }


PROPS = {d[0]: Prop(*d) for d in _DEFS}
#: Properties stored as TEXT columns of crm_contacts (the rest are computed from id/ms columns).
STORED = [name for name in PROPS if name not in ("hs_object_id", "createdate", "lastmodifieddate")]
DEFAULT_READ = ["firstname", "lastname", "email"]
ALWAYS = ["hs_object_id", "createdate", "lastmodifieddate", "email"]
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


class PropertyError(Exception):
    """One invalid property value; collected and answered as one 400 VALIDATION_ERROR."""

    def __init__(self, name: str, code: str, message: str) -> None:
        super().__init__(message)
        self.name, self.code, self.message = name, code, message


def coerce(name: str, value: object) -> str | None:
    """The stored (string) form of a written value, or PropertyError."""
    prop = PROPS.get(name)
    if prop is None:
        raise PropertyError(name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist')
    if prop.read_only:
        raise PropertyError(
            name, "READ_ONLY_VALUE", f'Property "{name}" is a read only property; its value cannot be set.'
        )
    if value is None or value == "":
        return None
    text = str(value).strip() if not isinstance(value, bool) else str(value).lower()
    if prop.type == "number":
        if (isinstance(value, int | float) and not isinstance(value, bool)) or _NUMBER.match(text):
            return text
        raise PropertyError(name, "INVALID_FLOAT", f"{value!r} was not a valid number.")
    if prop.type == "bool":
        if text.lower() in ("true", "false"):
            return text.lower()
        raise PropertyError(
            name, "INVALID_OPTION", f"{value!r} was not one of the allowed options: [true, false]"
        )
    if prop.type == "date":
        return _date_value(name, value, text)
    if prop.type == "datetime":
        try:
            return hs_time(parse_instant(value))
        except ValueError:
            raise PropertyError(name, "INVALID_DATETIME", f"{value!r} was not a valid datetime.") from None
    if name == "email" and not email_valid(text):
        raise PropertyError(name, "INVALID_EMAIL", f"Email address {text} is invalid")
    return text


def _date_value(name: str, value: object, text: str) -> str:
    try:
        if re.match(r"^\d{4}-\d{2}-\d{2}$", text):
            return date.fromisoformat(text).isoformat()
        ms = parse_instant(value)
    except ValueError:
        raise PropertyError(name, "INVALID_DATE", f"{value!r} was not a valid date.") from None
    if ms % DAY_MS:
        raise PropertyError(
            name,
            "INVALID_DATE",
            f"{value!r} is not midnight UTC; date properties need a date at midnight UTC.",
        )
    return iso_day(ms)


def coerce_all(properties: object) -> dict[str, str | None]:
    """Validate a ``properties`` object; all errors together, as HubSpot reports them."""
    if not isinstance(properties, dict):
        raise ValueError("properties must be an object")
    clean, errors = {}, []
    for name, value in properties.items():
        try:
            clean[name] = coerce(name, value)
        except PropertyError as exc:
            errors.append(exc)
    if errors:
        raise PropertyErrors(errors)
    return clean


class PropertyErrors(Exception):
    def __init__(self, errors: list[PropertyError]) -> None:
        super().__init__(errors)
        self.errors = errors

    def body(self) -> dict:
        details = [
            {
                "isValid": False,
                "message": e.message,
                "error": e.code,
                "name": e.name,
                "localizedErrorMessage": e.message,
            }
            for e in self.errors
        ]
        return {
            "message": f"Property values were not valid: {json.dumps(details)}",
            "errors": [
                {"message": e.message, "code": e.code, "context": {"propertyName": [e.name]}}
                for e in self.errors
            ],
        }


def requested(raw: list[str] | None) -> list[str]:
    """The properties a read returns: the requested known ones plus HubSpot's always-included."""
    names = DEFAULT_READ if not raw else [n for part in raw for n in part.split(",") if n.strip()]
    out = [n.strip() for n in names if n.strip() in PROPS]
    return list(dict.fromkeys([*out, *ALWAYS]))


SELECT_COLUMNS = "id, created_ms, modified_ms, archived, archived_ms, " + ", ".join(STORED)
_INDEX = {name: 5 + i for i, name in enumerate(STORED)}


def contact_json(row: tuple, props: list[str]) -> dict:
    """A row selected with SELECT_COLUMNS → HubSpot's SimplePublicObject."""
    contact_id, created, modified, archived, archived_ms = row[:5]
    properties = {}
    for name in props:
        if name == "hs_object_id":
            properties[name] = str(contact_id)
        elif name == "createdate":
            properties[name] = hs_time(created)
        elif name == "lastmodifieddate":
            properties[name] = hs_time(modified)
        else:
            properties[name] = row[_INDEX[name]]
    out = {
        "id": str(contact_id),
        "properties": properties,
        "createdAt": hs_time(created),
        "updatedAt": hs_time(modified),
        "archived": bool(archived),
    }
    if archived:
        out["archivedAt"] = hs_time(archived_ms)
    return out
