"""The MX's screening stage (Postfix's postscreen): pregreet test, DNSBL/DNSWL score, allow/deny lists
and a shared cache of clients that passed, run before the SMTP session starts."""
