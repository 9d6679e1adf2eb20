"""The directory: tenants, domains, mailboxes, aliases, and recipient resolution over them."""

from .addresses import AddressError, display_domain, normalize_address, normalize_domain
from .resolve import MailboxTarget, Resolution, Resolver
from .store import Directory, DirectoryError, DomainInfo

__all__ = [
    "AddressError", "Directory", "DirectoryError", "DomainInfo", "MailboxTarget", "Resolution", "Resolver",
    "display_domain", "normalize_address", "normalize_domain",
]
