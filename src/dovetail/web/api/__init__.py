"""The REST API under ``/api/v1``: one router per area, all behind :func:`dovetail.web.deps.get_scope`."""
