"""Certificates: the store under ``<data-dir>/tls/``, SNI selection for every TLS listener, ACME orders and renewal."""
