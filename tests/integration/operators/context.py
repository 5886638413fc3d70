"""What operator tests read after `execute(context)`: the links the task page would show. The
context itself, the task runner's bracket and a contacts night step by step are in
devtools/operator_run.py (the benchmarks use them too)."""

from __future__ import annotations

from devtools.operator_run import contacts_night, operator_context, run_task

__all__ = ["contacts_night", "links_shown", "operator_context", "published", "run_task"]


def links_shown(operator, context: dict) -> dict[str, str]:
    """The operator's links as the task page would show them after this run: name -> URL, for
    the links whose file the run wrote (the others are empty: no button)."""
    ti = context["ti"]
    urls = {link.name: link.get_link(operator, ti_key=ti) for link in operator.operator_extra_links}
    return {name: url for name, url in urls.items() if url}


def published(operator, context: dict) -> set[str]:
    """The names of the operator's links the task page shows after this run."""
    return set(links_shown(operator, context))
