"""The REST API under ``/api/v1``: one router per area, all behind :func:`dovetail.httpapi.deps.get_scope`."""
