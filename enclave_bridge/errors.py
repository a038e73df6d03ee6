"""The one exception hierarchy of tcbridge.

Split by who must act::

    TcbridgeError
    ├── ConfigurationError      the operator: a setting is missing or wrong
    ├── ChainError              the chain or its node misbehaved or is gone
    │   ├── NodeUnavailable     cannot reach the node (retry later)
    │   └── TransactionFailed   a transaction reverted or was refused
    ├── PoolError               the enclave pool could not serve a request
    ├── AttestationRejected     a worker's evidence does not satisfy the verifier
    ├── WorkOrderError          the requester's input is wrong; carries an
    │                           EEA error code that goes back to the requester
    ├── CryptoError             a decryption, key unwrap or signature check
    │                           failed: tampered data or the wrong keys
    ├── StoreError              the database refused or lost an operation
    │   └── InvalidTransition   a work-order state change the state table forbids
    └── BugError                an invariant of tcbridge itself broke

Third-party exceptions are translated into these in exactly one place per
adapter, chained with ``raise ... from``.
"""

from __future__ import annotations


class TcbridgeError(Exception):
    """Root of every error tcbridge raises on purpose."""


class ConfigurationError(TcbridgeError):
    """The operator's configuration is missing something or contradicts itself."""


class ChainError(TcbridgeError):
    """The chain or its node answered wrongly or not at all."""


class NodeUnavailable(ChainError):
    """The node cannot be reached or timed out; the call may succeed later."""


class TransactionFailed(ChainError):
    """A transaction was refused by the node or reverted on-chain."""

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class PoolError(TcbridgeError):
    """The enclave pool could not serve a request (crashed, timed out, closed)."""


class AttestationRejected(TcbridgeError):
    """A worker's attestation evidence is missing, invalid or not accepted by policy."""


class WorkOrderError(TcbridgeError):
    """A work order is invalid; ``code`` is the EEA error code for the requester."""

    def __init__(self, code: int, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field


class CryptoError(TcbridgeError):
    """Decryption, key unwrapping or a signature check failed.

    The message never says which internal step failed where that would
    help an attacker (for example RSA-OAEP padding versus length).
    """


class StoreError(TcbridgeError):
    """The work-order store refused or could not complete an operation."""


class InvalidTransition(StoreError):
    """A work-order state change that the state table does not allow."""


class BugError(TcbridgeError):
    """An internal invariant broke: report it, this is tcbridge's fault."""
