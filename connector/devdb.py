"""A private, throw-away PostgreSQL cluster for tests, benchmarks and the demo.

``private_postgres()`` runs ``initdb`` in a fresh temporary folder, starts the
server with ``pg_ctl`` on 127.0.0.1 and a free port (its unix socket also in
that folder, so it never touches the system's socket directory), and on exit
stops it and deletes the folder. It starts in about a second.

``initdb`` refuses to run as root; when the caller is root the cluster is
created and run as the ``postgres`` OS user, which then owns the folder.

This is a development tool: durability is off by default (``fsync=off``), so
a power cut loses the cluster, which is thrown away anyway.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from enclave_bridge.errors import ConfigurationError

log = logging.getLogger(__name__)

# Debian's layout; PATH is searched when it is absent.
DEFAULT_BIN_DIR = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "postgres"
# pg_ctl waits this long for the server to accept connections.
START_TIMEOUT_S = 30


@dataclass(frozen=True, slots=True)
class PostgresCluster:
    """A running private cluster; use ``create_database`` then ``url``."""

    data_dir: Path
    socket_dir: Path
    port: int
    bin_dir: Path
    run_as: str | None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def url(self, database: str = "postgres") -> str:
        """An SQLAlchemy async URL for ``database`` on this cluster."""
        return f"postgresql+asyncpg://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """Create database ``name`` (a copy of ``template`` if given); return its URL.

        Copying a migrated template is much cheaper than migrating every
        test's database; nobody may be connected to the template meanwhile.
        """
        copy = ["-T", template] if template is not None else []
        _run(
            [
                str(self.bin_dir / "createdb"),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                *copy,
                name,
            ],
            run_as=None,
        )

        return self.url(name)

    def run_sql(self, database: str, sql: str) -> None:
        """Run ``sql`` in ``database`` with psql (setup and clean-up statements)."""
        _run(
            [
                str(self.bin_dir / "psql"),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-c",
                sql,
            ],
            run_as=None,
        )


def find_bin_dir() -> Path:
    """Where ``initdb`` and ``pg_ctl`` live: $TCBRIDGE_PG_BIN, Debian's, or PATH."""
    configured = os.environ.get("TCBRIDGE_PG_BIN")
    if configured:
        return Path(configured)
    if (DEFAULT_BIN_DIR / "initdb").exists():
        return DEFAULT_BIN_DIR
    found = shutil.which("initdb")
    if found is None:
        raise ConfigurationError(
            "PostgreSQL server binaries not found: install PostgreSQL or set "
            "TCBRIDGE_PG_BIN to the folder that holds initdb and pg_ctl"
        )

    return Path(found).resolve().parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]

    return port


@contextmanager
def private_postgres(*, durable: bool = False) -> Iterator[PostgresCluster]:
    """Start a private cluster, yield it, then stop it and delete its folder."""
    bin_dir = find_bin_dir()
    run_as = SUPERUSER if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="tcbridge-pg-"))
    try:
        if run_as is not None:
            user = pwd.getpwnam(run_as)
            os.chown(root, user.pw_uid, user.pw_gid)
        cluster = PostgresCluster(
            data_dir=root / "data",
            socket_dir=root,
            port=free_port(),
            bin_dir=bin_dir,
            run_as=run_as,
        )
        _init(cluster)
        _start(cluster, durable=durable)
        log.info("private PostgreSQL started", extra={"port": cluster.port})
        try:
            yield cluster
        finally:
            _stop(cluster)
            log.info("private PostgreSQL stopped", extra={"port": cluster.port})
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _init(cluster: PostgresCluster) -> None:
    _run(
        [
            str(cluster.bin_dir / "initdb"),
            "-D",
            str(cluster.data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        ],
        run_as=cluster.run_as,
    )


def _start(cluster: PostgresCluster, *, durable: bool) -> None:
    settings = [
        "-c listen_addresses=127.0.0.1",
        f"-p {cluster.port}",
        f"-c unix_socket_directories={cluster.socket_dir}",
        "-c max_connections=100",
    ]
    if not durable:
        settings += ["-c fsync=off", "-c synchronous_commit=off"]
    _run(
        [
            str(cluster.bin_dir / "pg_ctl"),
            "start",
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "-D",
            str(cluster.data_dir),
            "-l",
            str(cluster.socket_dir / "server.log"),
            "-o",
            " ".join(settings),
        ],
        run_as=cluster.run_as,
    )


def _stop(cluster: PostgresCluster) -> None:
    _run(
        [
            str(cluster.bin_dir / "pg_ctl"),
            "stop",
            "-w",
            "-m",
            "fast",
            "-D",
            str(cluster.data_dir),
        ],
        run_as=cluster.run_as,
    )


def _run(argv: list[str], *, run_as: str | None) -> None:
    result = subprocess.run(
        argv,
        user=run_as,
        cwd="/",
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ConfigurationError(
            f"{Path(argv[0]).name} failed with exit code {result.returncode}: "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
