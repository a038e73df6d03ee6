"""Built-in workloads; importing this package registers them with ``@builtin``."""

from enclave_bridge.workloads import echo, heart

__all__ = ["echo", "heart"]
