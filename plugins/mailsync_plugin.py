"""The mailsync Airflow plugin: the api-server app that serves a run's reports to logged-in
users (mailsync.run_files), which the step operators' links open (mailsync.links). The product
package `mailsync/` is not a plugin (plugins/.airflowignore); this module is."""

from typing import ClassVar

from airflow.plugins_manager import AirflowPlugin

from mailsync.run_files import app


class MailsyncPlugin(AirflowPlugin):
    name = "mailsync"
    fastapi_apps: ClassVar[list[dict]] = [
        {"app": app, "url_prefix": "/mailsync", "name": "mailsync run files"}
    ]
