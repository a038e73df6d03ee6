"""The ``tcbridge`` command line."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from connector import runtime
from connector.config import Config, load_config, read_secret
from enclave_bridge.errors import ConfigurationError, TcbridgeError

T = TypeVar("T")


def _run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def _config(ctx: click.Context) -> Config:
    obj: dict[str, Any] = ctx.ensure_object(dict)
    if "config" not in obj:
        obj["config"] = load_config(obj.get("config_path"))
    return obj["config"]  # type: ignore[no-any-return]


def _operator_key(config: Config, key_file: str | None) -> bytes:
    text = read_secret("operator key", key_file or "", runtime.OPERATOR_KEY_ENV, config)
    return runtime.hex_key(text, "operator key")


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TcbridgeError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.option(
    "--config",
    "config_path",
    envvar="TCBRIDGE_CONFIG",
    type=click.Path(dir_okay=False),
    help="TOML configuration file (TCBRIDGE_CONFIG).",
)
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING, ERROR.")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, log_level: str | None) -> None:
    """tcbridge: smart-contract work orders to enclave workers and back (EEA OTC v1.1)."""
    from connector.logs import setup_logging

    ctx.ensure_object(dict)["config_path"] = config_path
    setup_logging(log_level or "INFO")


@main.command()
@click.option("--chain", type=click.Choice(["ethereum", "fabric"]), default=None,
              help="Chain to use (default: [bridge] chain in the configuration).")
@click.pass_context
def run(ctx: click.Context, chain: str | None) -> None:
    """Run the bridge until SIGINT or SIGTERM."""
    config = _config(ctx)
    config.bridge.chain = chain or config.bridge.chain
    from connector.logs import setup_logging
    from connector.serving import ServedUrls, run_bridge

    setup_logging(config.bridge.log_level)

    def announce(urls: ServedUrls) -> None:
        click.echo(f"ops server at {urls.ops}", err=True)
        if urls.listener is not None:
            click.echo(f"EEA listener at {urls.listener}", err=True)
        if urls.chainlink is not None:
            click.echo(f"Chainlink adapter at {urls.chainlink}", err=True)

    _until_signalled(lambda stop: run_bridge(config, stop, announce))


def _until_signalled(serve: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``serve(stop)``; SIGINT or SIGTERM sets ``stop``."""

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(stop)

    _run(go())


@main.command()
@click.pass_context
def listen(ctx: click.Context) -> None:
    """Serve the EEA direct model alone (pool and listener, no chain) until SIGINT/SIGTERM."""
    config = _config(ctx)
    from connector.logs import setup_logging
    from connector.serving import run_listener_alone

    setup_logging(config.bridge.log_level)

    _until_signalled(
        lambda stop: run_listener_alone(
            config, stop, lambda url: click.echo(f"EEA listener at {url}", err=True)
        )
    )


@main.command()
@click.option("--key-file", help="Operator key file (else TCBRIDGE_OPERATOR_KEY).")
@click.option(
    "--with-consumer", is_flag=True, help="Also deploy the ExampleConsumer contract."
)
@click.option(
    "--with-oracle",
    is_flag=True,
    help="Also deploy TrustedOracle (oracle-contract mode).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="Deployment file (default: the configured one).",
)
@click.pass_context
def deploy(
    ctx: click.Context,
    key_file: str | None,
    with_consumer: bool,
    with_oracle: bool,
    out: str | None,
) -> None:
    """Deploy the registries and write the deployment file."""
    from eth_account import Account
    from web3 import Web3

    from connector.deploy import deploy_all

    config = _config(ctx)
    key = _operator_key(config, key_file)
    w3 = Web3(Web3.HTTPProvider(config.ethereum.rpc_url))
    if w3.eth.chain_id != config.ethereum.chain_id:
        raise ConfigurationError(
            f"the node serves chain {w3.eth.chain_id}, the configuration says {config.ethereum.chain_id}"
        )
    result = deploy_all(
        w3,
        Account.from_key(key),
        with_consumer=with_consumer,
        with_oracle=with_oracle,
    )
    path = Path(out) if out else config.path(config.ethereum.deployment)
    path.parent.mkdir(parents=True, exist_ok=True)
    result.write(path)
    click.echo(json.dumps(result.to_json(), indent=2))


@main.group()
def worker() -> None:
    """Worker identities: create, list, register."""


@worker.command("create")
@click.option(
    "--name", required=True, help="Worker name; the worker id is SHA-256 of it."
)
@click.pass_context
def worker_create(ctx: click.Context, name: str) -> None:
    """Generate a worker identity and seal it under the pool passphrase."""
    from enclave_bridge.identity import generate_identity, save_sealed, seal

    config = _config(ctx)
    folder = config.path(config.pool.identities_dir)
    folder.mkdir(parents=True, exist_ok=True)
    passphrase = runtime.pool_passphrase(config)
    existing = sorted(folder.glob("*.sealed"))
    if existing:
        # Every identity of one pool is sealed under one passphrase: a new one
        # under another would make the whole pool unable to start.
        from enclave_bridge.identity import load_sealed, unseal

        unseal(load_sealed(existing[0]), passphrase)
    keys = generate_identity(name)
    path = folder / f"{keys.worker_id}.sealed"
    if path.exists():
        raise ConfigurationError(f"{path} exists already; pick another name")
    save_sealed(path, seal(keys, passphrase))
    click.echo(
        json.dumps(
            {
                "workerId": keys.worker_id,
                "signingAddress": keys.signing_address,
                "file": str(path),
            }
        )
    )


def _records(config: Config) -> list[Any]:
    from enclave_bridge.attestation import SimulatedAttester
    from enclave_bridge.identity import unseal, worker_record

    passphrase = runtime.pool_passphrase(config)
    attester = SimulatedAttester()
    out = []
    for sealed in runtime.identities(config):
        keys = unseal(sealed, passphrase)
        out.append(worker_record(keys, attester.evidence_for(keys)))
    return out


@worker.command("list")
@click.pass_context
def worker_list(ctx: click.Context) -> None:
    """The local identities and what the worker registry holds for each."""
    from connector.registry_ops import registry_status

    config = _config(ctx)
    records = _records(config)
    rows = _run(registry_status(config, records))
    for row in rows:
        click.echo(json.dumps(row))


@worker.command("register")
@click.option("--key-file", help="Operator key file (else TCBRIDGE_OPERATOR_KEY).")
@click.option("--chain", type=click.Choice(["ethereum", "fabric"]), default=None,
              help="Chain to use (default: [bridge] chain in the configuration).")
@click.pass_context
def worker_register(ctx: click.Context, key_file: str | None, chain: str | None) -> None:
    """Register (or update) every local identity in the worker registry."""
    from connector.registry_ops import register_workers

    config = _config(ctx)
    if (chain or config.bridge.chain) == "fabric":
        # On Fabric the operator is the configured client identity (it owns
        # the workers it registers); no operator key is involved.
        from connector.fabric import runtime as fabric_runtime

        async def go() -> list[str]:
            async with fabric_runtime.open_gateway(config) as gateway:
                return await fabric_runtime.register_workers(gateway, _records(config))

        for line in _run(go()):
            click.echo(line)
        return
    key = _operator_key(config, key_file)
    for line in register_workers(config, key, _records(config)):
        click.echo(line)


@main.command()
@click.option(
    "--workload",
    required=True,
    help="echo-result, heart-disease-eval, json-extract, price-median, ...",
)
@click.option(
    "--input",
    "inputs",
    multiple=True,
    required=True,
    help="One input item (repeatable).",
)
@click.option(
    "--worker-id", help="Worker to use (default: the first registered local identity)."
)
@click.option("--key-file", help="Requester key file (else TCBRIDGE_REQUESTER_KEY).")
@click.option(
    "--wait/--no-wait", default=True, help="Wait for the completion and verify it."
)
@click.option("--timeout", default=120.0, show_default=True)
@click.option("--chain", type=click.Choice(["ethereum", "fabric"]), default=None,
              help="Chain to use (default: [bridge] chain in the configuration).")
@click.option("--identity", "identity_name", default=None,
              help="Fabric: a client identity of the connection file (user1, ...).")
@click.pass_context
def submit(
    ctx: click.Context,
    workload: str,
    inputs: tuple[str, ...],
    worker_id: str | None,
    key_file: str | None,
    wait: bool,
    timeout: float,
    chain: str | None = None,
    identity_name: str | None = None,
) -> None:
    """Submit a work order as a requester, wait for its result, verify and print it."""
    from connector.registry_ops import submit_and_wait

    config = _config(ctx)
    if (chain or config.bridge.chain) == "fabric":
        _submit_fabric(config, workload, inputs, worker_id, key_file, wait, timeout,
                       identity_name)
        return
    text = read_secret(
        "requester key", key_file or "", "TCBRIDGE_REQUESTER_KEY", config
    )
    key = runtime.hex_key(text, "requester key")
    worker_id = _worker_id(config, worker_id)
    progress = sys.stderr.isatty()
    if wait and not progress:
        click.echo("submitted; waiting for the completion ...", err=True)
    out = _run(
        submit_and_wait(
            config,
            key,
            worker_id,
            workload,
            list(inputs),
            wait=wait,
            timeout=timeout,
            progress=progress,
        )
    )
    click.echo(json.dumps(out, indent=2))
    if wait and not out.get("verified"):
        sys.exit(1)


def _worker_id(config: Config, given: str | None) -> str:
    """--worker-id as 64 lower-case hex digits; the first local identity if absent."""
    worker_id = given if given is not None else runtime.identities(config)[0].worker_id
    worker_id = worker_id.lower().removeprefix("0x")
    if len(worker_id) != 64 or any(c not in "0123456789abcdef" for c in worker_id):
        raise ConfigurationError(
            f"--worker-id must be 32 bytes of hex (64 characters), not {worker_id!r}"
        )
    return worker_id


def _submit_fabric(
    config: Config, workload: str, inputs: tuple[str, ...], worker_id: str | None,
    key_file: str | None, wait: bool, timeout: float, identity_name: str | None,
) -> None:
    """``submit --chain fabric``: the requester is a Fabric client identity."""
    from connector.fabric import runtime as fabric_runtime

    signing = None
    if key_file:
        signing = runtime.hex_key(Path(key_file).read_text(), "requester key")
    worker_id = _worker_id(config, worker_id)
    out = _run(fabric_runtime.submit_and_wait(
        config, identity_name, signing, worker_id, workload, list(inputs),
        wait=wait, timeout=timeout,
    ))
    click.echo(json.dumps(out, indent=2))
    if wait and not out.get("verified"):
        sys.exit(1)


@main.command()
@click.option("--chain", type=click.Choice(["ethereum", "fabric"]), default=None,
              help="Chain to use (default: [bridge] chain in the configuration).")
@click.pass_context
def status(ctx: click.Context, chain: str | None) -> None:
    """Checkpoint and lag per chain and contract, work orders by state, pool statistics."""
    from connector.registry_ops import bridge_status

    config = _config(ctx)
    if (chain or config.bridge.chain) == "fabric":
        from connector.fabric.runtime import fabric_status

        click.echo(json.dumps(_run(fabric_status(config)), indent=2))
        return
    click.echo(json.dumps(_run(bridge_status(config)), indent=2))


@main.command()
@click.pass_context
def pause(ctx: click.Context) -> None:
    """Stop dispatching and sending (watching goes on) until `resume`."""
    flag = runtime.paused_flag(_config(ctx))
    flag.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    click.echo(f"paused ({flag})")


@main.command()
@click.pass_context
def resume(ctx: click.Context) -> None:
    """Undo `pause`."""
    flag = runtime.paused_flag(_config(ctx))
    flag.unlink(missing_ok=True)
    click.echo("resumed")


if __name__ == "__main__":
    main()
