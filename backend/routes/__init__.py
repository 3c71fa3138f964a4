"""The HTTP routes, one module per resource, each a Flask blueprint of importable functions over the
:class:`~backend.components.Backend` (``current_backend()``); :mod:`backend.routes.edge` is what every request goes
through."""

from . import health, jobs, predict, versions, webhook

BLUEPRINTS = (health.routes, predict.routes, versions.routes, jobs.routes, webhook.routes)
