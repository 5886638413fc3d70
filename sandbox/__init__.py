"""Local stand-ins of the vendors mailsync talks to: Mailchimp (ESP), HubSpot (CRM), Shopify (SHOP)
and the loyalty partner's SFTP drop, with a deterministic data generator and fault switches.

Start it with ``python -m sandbox serve --data-dir DIR`` or, from Python, ``Sandbox.start(DIR)``.
See sandbox/README.md.
"""

from sandbox.client import Sandbox, SandboxError

__all__ = ["Sandbox", "SandboxError"]
