"""Fixed defaults of the sandbox and the ready.json hand-shake.

The credentials are demo values that only this sandbox accepts. They are fixed (not random) so that
a developer can paste a connection once and keep it across restarts; every one can be overridden on
the command line.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: "Now" of the generated world, so that data does not depend on the wall clock.
DEFAULT_NOW = "2026-11-20T00:00:00Z"
DEFAULT_PORTS = {"esp": 8701, "crm": 8702, "shop": 8703, "sftp": 8722}
#: The mail sink is not a vendor: it stays out of DEFAULT_PORTS, which the compose set-up and its
#: test wire one connection each (docker-compose.yaml / .env.example do not know the sink yet).
DEFAULT_SMTP_PORT = 8725
#: Every port ``serve`` binds, with its CLI default.
SERVED_PORTS = DEFAULT_PORTS | {"smtp": DEFAULT_SMTP_PORT}

# Shapes follow the vendors' formats: Mailchimp "<32 hex>-<data centre>", HubSpot private-app
# token "pat-<region>-<uuid>", Shopify admin token "shpat_<32 hex>".
ESP_API_KEY = "5a1db0c55a1db0c55a1db0c55a1db0c5-us21"
CRM_TOKEN = "pat-eu1-5a1db0c5-0000-4000-8000-000000000001"
SHOP_TOKEN = "shpat_5a1db0c5000000000000000000000001"
SHOP_API_VERSION = "2024-10"
SFTP_USER = "loyalty"
SFTP_PASSWORD = "loyalty-sandbox-pw"
ESP_LOGIN = "mailsync"
SMTP_USER = "mailsync"
SMTP_PASSWORD = "smtp-sandbox-pw"
#: The sender address of Airflow's notifications (``from_email`` of the SMTP connection).
MAIL_FROM = "mailsync@sandbox.local"

#: One audience and one e-commerce store exist; their ids do not change with the seed, so a
#: connection stays valid across resets.
LIST_ID = "5a1db0c5e1"
STORE_ID = "mailsync-shop"

#: The legacy club-member database (sandbox/legacy_members.py): a real PostgreSQL, not served by
#: the sandbox process; the demo's database and the Airflow connection that reads it.
LEGACY_DSN = "postgresql://postgres@127.0.0.1:5432/mailsync_legacy"
LEGACY_CONN_ID = "legacy_members_db"

DB_NAME = "sandbox.db"
READY_NAME = "ready.json"
HOST_KEY_NAME = "ssh_host_ed25519_key"


@dataclass
class Settings:
    """Everything the server process needs to know; built by the CLI."""

    data_dir: Path
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=lambda: dict(SERVED_PORTS))
    esp_api_key: str = ESP_API_KEY
    crm_token: str = CRM_TOKEN
    shop_token: str = SHOP_TOKEN
    sftp_user: str = SFTP_USER
    sftp_password: str = SFTP_PASSWORD
    smtp_user: str = SMTP_USER
    smtp_password: str = SMTP_PASSWORD

    @property
    def db_path(self) -> Path:
        return self.data_dir / DB_NAME

    @property
    def sftp_root(self) -> Path:
        return self.data_dir / "sftp"

    def credentials(self) -> dict[str, str]:
        return {
            "esp_login": ESP_LOGIN,
            "esp_api_key": self.esp_api_key,
            "crm_token": self.crm_token,
            "shop_token": self.shop_token,
            "shop_api_version": SHOP_API_VERSION,
            "sftp_user": self.sftp_user,
            "sftp_password": self.sftp_password,
            "smtp_user": self.smtp_user,
            "smtp_password": self.smtp_password,
        }


@dataclass
class GenParams:
    """What the current data set was generated from (kept in ready.json and the DB)."""

    seed: int = 42
    contacts: int = 1000
    days: int = 7
    now: str = DEFAULT_NOW
    options: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def write_ready(settings: Settings, ports: dict[str, int], host_key: str, params: GenParams) -> dict:
    """Write DIR/ready.json atomically (readers poll for it) and return its content."""
    connect_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    info = {
        "pid": os.getpid(),
        "host": connect_host,
        "ports": ports,
        "urls": {
            "esp": f"http://{connect_host}:{ports['esp']}/3.0",
            "crm": f"http://{connect_host}:{ports['crm']}",
            "shop": f"http://{connect_host}:{ports['shop']}",
            "smtp": f"smtp://{connect_host}:{ports['smtp']}",
        },
        "credentials": settings.credentials(),
        "list_id": LIST_ID,
        "store_id": STORE_ID,
        "mail_from": MAIL_FROM,
        "sftp_host_key": host_key,
        "data_dir": str(settings.data_dir),
        "db_path": str(settings.db_path),
        "sftp_root": str(settings.sftp_root),
        "generated": params.to_dict(),
    }
    tmp = settings.data_dir / (READY_NAME + ".tmp")
    tmp.write_text(json.dumps(info, indent=2))
    tmp.replace(settings.data_dir / READY_NAME)
    return info


def read_ready(data_dir: Path) -> dict:
    return json.loads((Path(data_dir) / READY_NAME).read_text())
