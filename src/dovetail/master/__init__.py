"""The master process: binds sockets, forks and supervises the services (Postfix's master(8))."""
