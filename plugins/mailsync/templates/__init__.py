"""The HTML files people open (the revenue page, the quality report, the alert mail) as Jinja
templates in this folder, and the one environment that renders them.

Autoescape is on for every .html template: each value a template prints is escaped, since
campaign titles, check details and failure reasons are free text, and no code here marks a
value safe. Undefined names fail the render instead of printing nothing.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

FOLDER = Path(__file__).parent


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(FOLDER),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = format  # {{ amount | fmt(",.2f") }}: a Python format spec
    return env


def render(name: str, **values: Any) -> str:
    """The template `name` of this folder rendered with `values` (all of them escaped)."""
    return environment().get_template(name).render(**values)
