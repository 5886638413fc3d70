"""Personal data never reaches logs, reports or XComs in clear: mask or hash it first."""

from __future__ import annotations

import re

_EMAIL_IN_TEXT = re.compile(r"[^\s@\"'<>(),;:]+@[^\s@\"'<>(),;:]+")


def mask_email(email: str | None) -> str:
    """`jane.doe@example.com` -> `j***@e***.com`: enough to tell rows apart, not to read them."""
    if not email:
        return ""
    local, _, domain = str(email).strip().partition("@")
    host, _, tld = domain.rpartition(".")
    return f"{local[:1]}***@{host[:1]}***.{tld}" if domain else f"{local[:1]}***"


def redact(text: str) -> str:
    """Mask every email address inside free text (vendor error messages quote them)."""
    return _EMAIL_IN_TEXT.sub(lambda m: mask_email(m.group(0)), text)
