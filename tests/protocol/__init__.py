"""Protocol-engine tests: sessions (sans-I/O), real sockets and the official SDKs."""
