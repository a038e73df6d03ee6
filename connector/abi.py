"""Compiled contract artifacts (``contracts/build/<Name>.json``) and their freshness.

``scripts/build-contracts`` writes each artifact with the sha256 of every
source file its compilation read and one ``sourceHash`` over those. This
module recomputes both from the files on disk, without Node, so a test can
tell when a source changed and its artifact was not rebuilt.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from enclave_bridge.errors import ConfigurationError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIR = PROJECT_ROOT / "contracts" / "src"
BUILD_DIR = PROJECT_ROOT / "contracts" / "build"


@dataclass(frozen=True, slots=True)
class Artifact:
    """One compiled contract as the build script wrote it."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    compiler_version: str
    source_files: dict[str, str]
    source_hash: str


@cache
def load_artifact(name: str) -> Artifact:
    """The artifact of contract ``name``; cached, artifacts do not change at runtime."""
    path = BUILD_DIR / f"{name}.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigurationError(
            f"no compiled artifact for {name} at {path}: run scripts/build-contracts"
        ) from exc
    return Artifact(
        name=raw["contractName"],
        abi=raw["abi"],
        bytecode=raw["bytecode"],
        deployed_bytecode=raw["deployedBytecode"],
        compiler_version=raw["compiler"]["version"],
        source_files=raw["sources"],
        source_hash=raw["sourceHash"],
    )


def artifact_names() -> list[str]:
    """Names of every contract that has an artifact, sorted."""
    return sorted(p.stem for p in BUILD_DIR.glob("*.json"))


def file_sha256(relative_path: str) -> str:
    return hashlib.sha256((PROJECT_ROOT / relative_path).read_bytes()).hexdigest()


def combined_source_hash(file_hashes: dict[str, str]) -> str:
    """The digest build.js records: sha256 over sorted ``"<path> <sha256>\\n"`` lines."""
    lines = "".join(f"{path} {file_hashes[path]}\n" for path in sorted(file_hashes))
    return hashlib.sha256(lines.encode()).hexdigest()


def stale_sources(artifact: Artifact) -> list[str]:
    """Source files whose content no longer matches what ``artifact`` was built from."""
    stale = []
    for path, recorded in sorted(artifact.source_files.items()):
        on_disk = PROJECT_ROOT / path
        if not on_disk.exists() or file_sha256(path) != recorded:
            stale.append(path)
    return stale
