"""circusd: a hardened, Circus-compatible process supervisor for Linux."""

__version__ = "0.1.0"
