"""The bridge's configuration: one TOML file, overridden by the environment.

Every setting lives in a section (``[ethereum]``, ``[pool]``, ...). The
environment variable ``TCBRIDGE_<SECTION>_<NAME>`` (upper case) overrides
the file. Secrets never come from the file: the relayer key and the pool
passphrase are read from a file named in the configuration (readable by
the operator only) or from ``TCBRIDGE_RELAYER_KEY`` /
``TCBRIDGE_POOL_PASSPHRASE``. A secret found in the TOML file is refused.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enclave_bridge.eea import Limits
from enclave_bridge.errors import ConfigurationError

SECRET_NAMES = {
    "relayer_key",
    "private_key",
    "passphrase",
    "password",
    "operator_key",
    "admin_token",
    "proxy_token",
    "bridge_token",
}


@dataclass
class BridgeSection:
    database: str = "sqlite+aiosqlite:///var/tcbridge.db"
    data_dir: str = "var"
    log_level: str = "INFO"
    paused: bool = False
    # Which chain `tcbridge run` bridges: "ethereum" or "fabric" (--chain overrides).
    chain: str = "ethereum"


@dataclass
class EthereumSection:
    rpc_url: str = "http://127.0.0.1:8545"
    # A node silent this long counts as unavailable; the loop backs off and retries.
    rpc_timeout_s: float = 20.0
    # The bridge refuses to run when the node reports another chain id.
    chain_id: int = 31337
    deployment: str = "var/deployment.json"
    work_order_registry: str = ""
    worker_registry: str = ""
    # A block count, or the node's "safe" / "finalized" tags.
    confirmations: str = "1"
    poll_interval: float = 0.5
    # Providers cap eth_getLogs ranges; the watcher shrinks and regrows from this.
    max_block_range: int = 2000
    relayer_key_file: str = ""
    max_fee_cap_gwei: float = 500.0
    # 12.5 % is above geth's and anvil's 10 % minimum replacement bump.
    fee_bump_percent: int = 13
    stuck_after_s: float = 30.0
    batch_max_items: int = 50
    # 128 KiB is the common mempool limit for one transaction; keep a margin.
    batch_max_bytes: int = 120_000
    batch_wait_s: float = 0.2
    start_block: int = -1


@dataclass
class PoolSection:
    processes: int = 0
    identities_dir: str = "var/workers"
    passphrase_file: str = ""
    execution_timeout_s: float = 30.0
    allow_sha1_oaep: bool = True
    allow_iv_reuse: bool = True
    # SCHED_BATCH for the bridge's event-loop thread and the pool processes
    # (see enclave_bridge.pool): throughput over wake-up latency under load.
    batch_scheduling: bool = True


@dataclass
class LimitsSection:
    max_request_bytes: int = 65_536
    max_result_bytes: int = 65_536
    max_in_flight_per_requester: int = 64

    def work_order_limits(self) -> Limits:
        """The caps the pool applies to one work order (and the listener with it)."""
        return Limits(
            max_request_bytes=self.max_request_bytes,
            max_response_bytes=self.max_result_bytes,
        )


@dataclass
class GuardsSection:
    requester_allowlist: list[str] = field(default_factory=list)
    gas_cap_per_requester_per_hour: int = 0
    url_allowlist: list[str] = field(default_factory=list)


@dataclass
class OpsSection:
    listen: str = "127.0.0.1:0"
    lag_threshold_blocks: int = 20
    min_balance_wei: int = 10**17


@dataclass
class ListenerSection:
    """The EEA direct-model JSON-RPC listener (enclave_bridge.listener)."""

    enabled: bool = False
    listen: str = "127.0.0.1:0"
    # Names this listener in order keys and in its order book.
    name: str = "tcbridge"
    # Checked against Content-Length and against the bytes actually read.
    max_body_bytes: int = 4 * 1024 * 1024
    # A synchronous WorkOrderSubmit never holds a connection longer than this.
    max_sync_wait_s: float = 60.0
    lookup_page_size: int = 100
    notify_timeout_s: float = 5.0
    book: str = "var/listener.db"
    # Answered direct-model orders are dropped from the book after this many
    # days (0 keeps them forever); WorkOrderGetResult no longer finds them.
    keep_answered_days: float = 7.0
    organization_id: str = ""
    application_type_id: str = ""
    # Bearer token for WorkerRegister/Update/SetStatus: a file, or
    # TCBRIDGE_LISTENER_ADMIN_TOKEN; without one those methods are refused.
    admin_token_file: str = ""
    # Bearer token for the proxy-model extension (tcbridgeTarget): a file, or
    # TCBRIDGE_LISTENER_PROXY_TOKEN; without one the extension is refused.
    proxy_token_file: str = ""


@dataclass
class FabricSection:
    """A Hyperledger Fabric channel reached through a Gateway peer (connector.fabric)."""

    gateway_address: str = "127.0.0.1:7051"
    channel: str = "mychannel"
    chaincode: str = "tcbridge"
    # The client identity: MSP id, PEM certificate and PEM P-256 key files.
    msp_id: str = "Org1MSP"
    cert_path: str = ""
    key_path: str = ""
    # The development peer's connection.json; it fills in address, channel,
    # chaincode and identities that are not set above.
    connection: str = ""
    # The development peer has no TLS; a real peer needs its TLS CA here.
    tls: bool = False
    tls_ca_path: str = ""
    start_block: int = 0
    poll_interval: float = 0.2
    batch_max_items: int = 50


@dataclass
class ChainlinkSection:
    """The Chainlink external adapter (connector.chainlink)."""

    enabled: bool = False
    # Mounted on the ops server under this path.
    path: str = "/chainlink"
    max_body_bytes: int = 1024 * 1024
    # Worker used when a job names none.
    default_worker_id: str = ""
    # Work orders still running after this long are answered "pending" and
    # delivered later by PATCH to the job's responseURL.
    pending_after_s: float = 2.0
    callback_timeout_s: float = 10.0
    execution_timeout_s: float = 30.0
    # The token the Chainlink node's bridge sends: a file, or
    # TCBRIDGE_CHAINLINK_BRIDGE_TOKEN; without one every call is refused.
    bridge_token_file: str = ""
    # The node's incoming bridge token, sent on the PATCH to responseURL: a
    # file, or TCBRIDGE_CHAINLINK_CALLBACK_TOKEN; optional.
    callback_token_file: str = ""


@dataclass
class Config:
    bridge: BridgeSection = field(default_factory=BridgeSection)
    ethereum: EthereumSection = field(default_factory=EthereumSection)
    pool: PoolSection = field(default_factory=PoolSection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    guards: GuardsSection = field(default_factory=GuardsSection)
    ops: OpsSection = field(default_factory=OpsSection)
    listener: ListenerSection = field(default_factory=ListenerSection)
    chainlink: ChainlinkSection = field(default_factory=ChainlinkSection)
    fabric: FabricSection = field(default_factory=FabricSection)
    source: Path | None = None

    def path(self, value: str) -> Path:
        """A path from the configuration, relative to the config file's folder."""
        p = Path(value)
        if p.is_absolute() or self.source is None:
            return p
        return self.source.parent / p

    def confirmation_depth(self) -> int | str:
        text = self.ethereum.confirmations.strip()
        if text in ("safe", "finalized"):
            return text
        try:
            depth = int(text)
        except ValueError:
            raise ConfigurationError(
                f"ethereum.confirmations must be a block count, 'safe' or 'finalized', not {text!r}"
            ) from None
        if depth < 0:
            raise ConfigurationError("ethereum.confirmations cannot be negative")
        return depth


def load_config(
    path: str | Path | None, env: Mapping[str, str] | None = None
) -> Config:
    """Read the TOML file (optional), apply ``TCBRIDGE_*`` overrides, validate."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    source = None
    if path is not None:
        source = Path(path).resolve()
        try:
            raw = tomllib.loads(source.read_text())
        except FileNotFoundError:
            raise ConfigurationError(
                f"configuration file {source} does not exist"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(
                f"configuration file {source} is not valid TOML: {exc}"
            ) from exc

    config = Config(source=source)
    for f in dataclasses.fields(Config):
        if f.name == "source":
            continue
        section = getattr(config, f.name)
        values = raw.pop(f.name, {})
        if not isinstance(values, dict):
            raise ConfigurationError(f"[{f.name}] must be a table")
        _apply(f.name, section, values, env)
    if raw:
        raise ConfigurationError(
            f"unknown configuration sections: {', '.join(sorted(raw))}"
        )
    config.confirmation_depth()
    if config.bridge.chain not in ("ethereum", "fabric"):
        raise ConfigurationError(
            f"[bridge] chain must be 'ethereum' or 'fabric', not {config.bridge.chain!r}"
        )
    return config


def _apply(
    name: str, section: Any, values: dict[str, Any], env: Mapping[str, str]
) -> None:
    hints = typing.get_type_hints(type(section))
    known = {f.name for f in dataclasses.fields(section)}
    for key in values:
        if key in SECRET_NAMES or (
            key.endswith("_key") and not key.endswith("_key_file")
        ):
            raise ConfigurationError(
                f"[{name}] {key}: secrets do not belong in the configuration file;"
                f" put it in a file named by {key}_file or in the environment"
            )
        if key not in known:
            raise ConfigurationError(f"[{name}] has no setting {key!r}")
    for key in known:
        env_name = f"TCBRIDGE_{name}_{key}".upper()
        if env_name in env:
            setattr(section, key, _parse_env(env_name, env[env_name], hints[key]))
        elif key in values:
            setattr(section, key, _check_type(name, key, values[key], hints[key]))


def _check_type(section: str, key: str, value: Any, hint: Any) -> Any:
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    origin = typing.get_origin(hint) or hint
    if not isinstance(value, origin) or (origin is int and isinstance(value, bool)):
        raise ConfigurationError(
            f"[{section}] {key} must be {getattr(origin, '__name__', origin)}, not {value!r}"
        )
    return value


def _parse_env(name: str, text: str, hint: Any) -> Any:
    try:
        if hint is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if hint is int:
            return int(text, 0)
        if hint is float:
            return float(text)
        if typing.get_origin(hint) is list:
            return [item.strip() for item in text.split(",") if item.strip()]
        return text
    except ValueError:
        raise ConfigurationError(
            f"environment variable {name}={text!r} is not a valid {hint}"
        ) from None


def read_secret(
    what: str,
    file_setting: str,
    env_name: str,
    config: Config,
    env: Mapping[str, str] | None = None,
) -> str:
    """A secret from its environment variable, else from the file the config names."""
    env = os.environ if env is None else env
    if env.get(env_name):
        return env[env_name].strip()
    if not file_setting:
        raise ConfigurationError(
            f"no {what}: set {env_name} or name a file in the configuration"
        )
    path = config.path(file_setting)
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the {what} from {path}: {exc.strerror}"
        ) from exc
