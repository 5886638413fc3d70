# The project's Airflow image: the official one at the pinned version, plus our pinned requirements.
FROM apache/airflow:3.3.2-python3.11
# Mount points of the compose file's named volumes, owned by the airflow user: an empty named
# volume takes the owner of the directory it is mounted on, and the workers write staging there.
USER root
RUN mkdir -p /opt/mailsync-staging /opt/mailsync-sandbox \
    && chown airflow:root /opt/mailsync-staging /opt/mailsync-sandbox
USER airflow
COPY --chown=airflow:root requirements.txt constraints.txt /opt/mailsync/
RUN pip install --no-cache-dir -r /opt/mailsync/requirements.txt -c /opt/mailsync/constraints.txt
COPY --chown=airflow:root dags /opt/airflow/dags
COPY --chown=airflow:root plugins /opt/airflow/plugins
COPY --chown=airflow:root include /opt/airflow/include
COPY --chown=airflow:root sandbox /opt/mailsync/sandbox
# ARROW_DEFAULT_MEMORY_POOL: the system allocator keeps less resident (devtools/airflow_env.py)
ENV MAILSYNC_INCLUDE_DIR=/opt/airflow/include \
    PYTHONPATH=/opt/mailsync \
    ARROW_DEFAULT_MEMORY_POOL=system
