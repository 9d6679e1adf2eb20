"""Outbound sending: DKIM keys and signing (:mod:`.keys`, :mod:`.dkim`), DNS records (:mod:`.dnsrecords`),
transports (:mod:`.transports`), the relay/MX delivery agent (:mod:`.delivery`), the HTTP send API
(:mod:`.send`), and the submission policy backend.

Nothing is imported here: a caller names the module it needs, so that the command line's
`dovetail transport list` does not load the delivery agent, DNS and TLS stacks with it."""
