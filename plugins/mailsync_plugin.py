"""The mailsync Airflow plugin: each task's links to its run's reports, and the api-server app
that serves them to logged-in users (mailsync.run_files). The product package `mailsync/` is
not a plugin (plugins/.airflowignore); this module is."""

from typing import ClassVar

from airflow.plugins_manager import AirflowPlugin

from mailsync.run_files import LINKS, app


class MailsyncPlugin(AirflowPlugin):
    name = "mailsync"
    fastapi_apps: ClassVar[list[dict]] = [
        {"app": app, "url_prefix": "/mailsync", "name": "mailsync run files"}
    ]
    global_operator_extra_links = LINKS
