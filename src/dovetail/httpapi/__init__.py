"""What every HTTP API of Dovetail shares: RFC 9457 problem details and the caller's tenant scope.

Below both the web app and the routers it mounts from other packages (the replies engine, the
send API), so those routers need nothing from ``web``.
"""
