"""The web admin (Jinja2 + htmx) and the REST API (``/api/v1``), one FastAPI application."""
