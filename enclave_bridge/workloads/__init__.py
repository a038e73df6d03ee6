"""Built-in workloads; importing this package registers them with ``@builtin``."""

from enclave_bridge.workloads import (
    echo,
    heart,
    oracle,  # noqa: F401  (json-extract, price-median)
)

__all__ = ["echo", "heart"]
