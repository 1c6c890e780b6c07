"""Entry points: the worker, the ``hubctl`` CLI, the dashboard."""
