"""Developer tooling around the product: local Airflow, the demo, test helpers. Not deployed."""
