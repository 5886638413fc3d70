"""Every option a connection's extra may hold is a hook setting, never an HTTP header.

The HTTP provider sends each extra key the hook does not name in `option_keys` as a header with
every call, and requests refuses a header whose value is a number: one unnamed option set as a
JSON number (`"export_poll_s": 0.5`) fails every call of every task on that connection, the
write-back and the incremental search too, not only the step the option is for.
"""

from __future__ import annotations

import pytest

from mailsync.hooks.crm import CrmHook
from mailsync.hooks.esp import EspHook
from tests.connections import variant

OPTIONS = {
    # the full extract's (mailsync.contacts.extract)
    CrmHook: {"full_extract": "list", "export_over": 5, "export_poll_s": 0.5, "export_timeout_s": 60},
    # the shop load's batch operations (mailsync.shop.ecommerce)
    EspHook: {"batch_poll_s": 0.5, "batch_timeout_s": 60},
}


@pytest.mark.parametrize("hook_class", list(OPTIONS), ids=lambda c: c.__name__)
def test_a_hook_of_any_step_calls_the_vendor_with_every_option_set_as_a_number(
    hook_class, vendors, connections
):
    conn_id = variant(
        connections, hook_class.default_conn_name, f"{hook_class.default_conn_name}_options",
        extra=OPTIONS[hook_class],
    )
    hook = hook_class(conn_id)  # a plain hook, as any other step builds it
    ok, message = hook.test_connection()
    assert ok, message
    assert not set(OPTIONS[hook_class]) & {h.lower() for h in hook.session.headers}
