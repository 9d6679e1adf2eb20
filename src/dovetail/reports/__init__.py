"""Reports other mail systems send about our domains: DMARC aggregate (RFC 7489) and TLS-RPT (RFC 8460)."""
