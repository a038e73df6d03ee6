"""The committed artifacts match the sources and run on every target node."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from connector import abi
from connector.abi import (
    SOURCE_DIR,
    artifact_names,
    combined_source_hash,
    load_artifact,
    stale_sources,
)

EXPECTED = {
    "CallbackProbe",
    "ExampleConsumer",
    "OracleConsumer",
    "ResultSignatureHarness",
    "TrustedOracle",
    "WorkOrderReceiptRegistry",
    "WorkOrderRegistry",
    "WorkerRegistry",
    "WorkerRegistryList",
}
# Opcodes newer than Shanghai that Ganache 7 rejects: TLOAD, TSTORE, MCOPY,
# BLOBHASH, BLOBBASEFEE.
POST_SHANGHAI_OPCODES = {0x5C, 0x5D, 0x5E, 0x49, 0x4A}


def opcodes(bytecode_hex: str) -> list[int]:
    """The opcodes of EVM bytecode, skipping PUSH immediates."""
    code = bytes.fromhex(bytecode_hex.removeprefix("0x"))
    found, i = [], 0
    while i < len(code):
        op = code[i]
        found.append(op)
        i += 1 + (op - 0x5F if 0x60 <= op <= 0x7F else 0)
    return found


def test_every_deployable_contract_has_an_artifact() -> None:
    """Each contract of contracts/src has a compiled artifact and nothing else does."""
    assert set(artifact_names()) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_artifact_is_not_stale(name: str) -> None:
    """No source an artifact was built from changed since: rebuild with scripts/build-contracts."""
    artifact = load_artifact(name)

    assert stale_sources(artifact) == [], (
        "run scripts/build-contracts and commit contracts/build"
    )
    assert combined_source_hash(artifact.source_files) == artifact.source_hash


def test_every_source_file_feeds_some_artifact() -> None:
    """A new .sol file cannot sit in contracts/src without being compiled."""
    used = {path for name in EXPECTED for path in load_artifact(name).source_files}
    on_disk = {f"contracts/src/{p.name}" for p in SOURCE_DIR.glob("*.sol")}

    assert on_disk == used


def test_stale_check_detects_an_edited_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Editing one source in a copy of the tree makes its artifact stale."""
    shutil.copytree(SOURCE_DIR, tmp_path / "contracts" / "src")
    monkeypatch.setattr(abi, "PROJECT_ROOT", tmp_path)
    artifact = load_artifact("WorkOrderRegistry")
    assert stale_sources(artifact) == []

    edited = tmp_path / "contracts" / "src" / "ResultSignature.sol"
    edited.write_text(edited.read_text() + "\n// edited\n")

    assert stale_sources(artifact) == ["contracts/src/ResultSignature.sol"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_artifact_is_built_for_shanghai_by_the_pinned_compiler(name: str) -> None:
    """Artifacts come from solc 0.8.28 and contain no opcode newer than Shanghai."""
    artifact = load_artifact(name)

    assert artifact.compiler_version.startswith("0.8.28+")
    assert not POST_SHANGHAI_OPCODES & set(opcodes(artifact.deployed_bytecode))
