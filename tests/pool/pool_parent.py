"""A process that runs a pool and then waits to be killed (for the orphan test).

Usage: python -m tests.pool.pool_parent STATE_DB; prints the pool's PIDs as
one JSON line once every process is ready, then sleeps.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from enclave_bridge.identity import seal
from enclave_bridge.pool import open_pool
from tests.enclave import vectors
from tests.pool.conftest import PASSPHRASE, TEST_SCRYPT_N


async def main(state: Path) -> None:
    sealed = seal(vectors.worker_keys(), PASSPHRASE, scrypt_n=TEST_SCRYPT_N)
    async with open_pool([sealed], PASSPHRASE, state, processes=2) as pool:
        print(json.dumps(pool.pids()), flush=True)
        await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
