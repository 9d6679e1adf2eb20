"""Where replies come from: Dovetail's own delivery agent (local) and any IMAP account (imap)."""
