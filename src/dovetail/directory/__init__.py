"""The directory: tenants, domains, mailboxes, aliases, and recipient resolution over them."""

from .addresses import AddressError, display_domain, normalize_address, normalize_domain, normalize_tenant
from .lookups import TenantRef
from .resolve import MailboxTarget, Resolution, Resolver
from .store import SUPPRESSED_RECIPIENTS, UNSET, Directory, DirectoryError, DomainInfo, MailboxOwner, Unset

__all__ = [
    "AddressError", "Directory", "DirectoryError", "DomainInfo", "MailboxOwner", "MailboxTarget", "Resolution",
    "Resolver", "SUPPRESSED_RECIPIENTS", "TenantRef", "UNSET", "Unset", "display_domain", "normalize_address",
    "normalize_domain", "normalize_tenant",
]
