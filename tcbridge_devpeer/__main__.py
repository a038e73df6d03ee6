"""``python -m tcbridge_devpeer``: run the development peer until interrupted.

Starts the chaincode server and the peer, serves the Gateway on
127.0.0.1:PORT and, once ready, writes ``connection.json`` in the folder:
gateway address, channel, chaincode, MSP id and the client certificate and
key paths (plus a second identity of another organisation for tests).
A test and demo tool: see the package docstring.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
from pathlib import Path

from tcbridge_devpeer.chaincode import free_port
from tcbridge_devpeer.gateway import serve
from tcbridge_devpeer.peer import OTHER_MSP, PEER_MSP, DevPeer


def connection_info(peer: DevPeer, address: str) -> dict[str, object]:
    msp = peer.msp_folder

    def user(msp_id: str, name: str) -> dict[str, str]:
        return {
            "mspId": msp_id,
            "certPath": str(msp / msp_id / f"{name}.pem"),
            "keyPath": str(msp / msp_id / f"{name}.key"),
        }

    return {
        "gatewayAddress": address,
        "channel": peer.channel,
        "chaincode": peer.chaincode,
        **user(PEER_MSP, "user1"),
        "identities": {
            "user1": user(PEER_MSP, "user1"),
            "user2": user(PEER_MSP, "user2"),
            "admin": user(PEER_MSP, "admin"),
            "org2user1": user(OTHER_MSP, "user1"),
        },
        "peerPid": os.getpid(),
        "chaincodePid": peer.chaincode_pid,
    }


async def run(folder: Path, port: int, channel: str, chaincode: str) -> None:
    folder = folder.resolve()
    peer = DevPeer(folder, channel=channel, chaincode=chaincode)
    await peer.start()
    address = f"127.0.0.1:{port or free_port()}"
    server = await serve(peer, address)
    info_path = folder / "connection.json"
    temporary = info_path.with_suffix(".tmp")
    temporary.write_text(json.dumps(connection_info(peer, address), indent=2))
    temporary.replace(info_path)
    logging.getLogger(__name__).info(
        "ready: gateway %s, connection details in %s", address, info_path
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(FileNotFoundError):
            info_path.unlink()
        await server.stop(grace=0.5)
        await peer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tcbridge_devpeer",
        description="tcbridge's Fabric development peer (a test and demo tool, "
        "not a Fabric network)",
    )
    parser.add_argument("--folder", type=Path, default=Path("var/devpeer"))
    parser.add_argument("--port", type=int, default=7051, help="0 picks a free port")
    parser.add_argument("--channel", default="mychannel")
    parser.add_argument("--chaincode", default="tcbridge")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(run(args.folder, args.port, args.channel, args.chaincode))


if __name__ == "__main__":
    main()
