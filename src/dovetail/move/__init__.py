"""Tenant moves between mailbox nodes: the transfer endpoint a source node serves and the mover that runs on
the target node, pulling the tenant's Maildirs and switching its home (``dovetail tenant move``)."""
