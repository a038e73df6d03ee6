"""The development peer: endorse, order, validate, commit, and stream events.

A single-node stand-in for a Fabric peer plus orderer, for tests and demos.
It is NOT a Fabric network: one channel, one chaincode, one endorsing
organisation, no gossip, no consensus, no private data, no channel config.
What it keeps faithful is what tcbridge's Fabric connector depends on:

* proposals are signature-checked against the MSPs it trusts;
* the real chaincode runs (chaincode-as-a-service) and its reads (with
  versions), writes, range scans and event become a real read/write set;
* submitted transactions are cut into blocks (a batch timeout or size);
* at commit, each transaction is validated in block order: endorsement
  signature, duplicate id, MVCC read versions and range phantoms against
  the state left by the transactions before it; invalid ones stay in the
  block with their validation code and their writes are dropped;
* chaincode events are delivered from valid transactions only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from fabric_protos.common import common_pb2
from fabric_protos.ledger.rwset import rwset_pb2
from fabric_protos.ledger.rwset.kvrwset import kv_rwset_pb2
from fabric_protos.peer import (
    chaincode_event_pb2,
    proposal_pb2,
    proposal_response_pb2,
)
from fabric_protos.peer import transaction_pb2 as tx_pb2

from enclave_bridge.errors import ChainError, CryptoError
from tcbridge_devpeer import protocol
from tcbridge_devpeer.chaincode import ChaincodeProcess, ChaincodeSession, Invocation
from tcbridge_devpeer.ledger import Ledger, Write
from tcbridge_devpeer.msp import Identity, MspRegistry, generate_msp, msp_identity
from tcbridge_devpeer.simulator import TxSimulator
from tcbridge_devpeer.validation import BlockState, check_reads

log = logging.getLogger(__name__)

Code = tx_pb2.TxValidationCode

# Short enough that tests wait little, long enough to batch concurrent submits.
BATCH_TIMEOUT = 0.1
# Transactions per block at most.
BATCH_SIZE = 100
PEER_MSP = "Org1MSP"
OTHER_MSP = "Org2MSP"
CLIENT_USERS = ["peer0", "admin", "user1", "user2"]


class EndorsementFailed(ChainError):
    """The chaincode answered with an error status; nothing to submit."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class UnknownChannel(ChainError):
    """The request names a channel this peer does not serve."""


@dataclass(frozen=True, slots=True)
class ChaincodeEvents:
    block_number: int
    events: list[chaincode_event_pb2.ChaincodeEvent]


class DevPeer:
    """One channel, one chaincode, persisted under ``folder``."""

    def __init__(
        self,
        folder: Path,
        *,
        channel: str = "mychannel",
        chaincode: str = "tcbridge",
        chaincode_version: str = "1.0",
        batch_timeout: float = BATCH_TIMEOUT,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.folder = folder
        self.channel = channel
        self.chaincode = chaincode
        self.chaincode_version = chaincode_version
        self.msp_folder = folder / "msp"
        self._batch_timeout = batch_timeout
        self._batch_size = batch_size
        self._pending: list[protocol.SubmittedTransaction] = []
        self._has_pending = asyncio.Event()
        self._committed = asyncio.Condition()
        self._cutter: asyncio.Task[None] | None = None
        self._failure: str | None = None
        self._ledger: Ledger | None = None
        self._process: ChaincodeProcess | None = None
        self._session: ChaincodeSession | None = None
        self.msps: MspRegistry | None = None
        # Where clients reach this peer; set by whoever serves the Gateway.
        self.address = ""
        self.identity: Identity | None = None

    # ---- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        generate_msp(self.msp_folder, PEER_MSP, CLIENT_USERS)
        generate_msp(self.msp_folder, OTHER_MSP, ["user1"])
        self.msps = MspRegistry.from_folder(self.msp_folder)
        self.identity = msp_identity(self.msp_folder, PEER_MSP, "peer0")
        self._ledger = Ledger(self.folder / "ledger.sqlite")
        if self._ledger.height() == 0:
            self._ledger.commit(protocol.make_block(0, b"", [], []), [], [])
        self._process = ChaincodeProcess(
            self.chaincode, self.chaincode_version, self.folder / "chaincode.log"
        )
        self._process.start()
        self._session = ChaincodeSession(self._process)
        try:
            await self._session.connect()
        except BaseException:
            self._process.stop()
            raise
        self._cutter = asyncio.create_task(self._cut_blocks(), name="block-cutter")
        self._cutter.add_done_callback(self._cutter_ended)
        log.info(
            "development peer ready: channel %s, chaincode %s, height %d",
            self.channel,
            self.chaincode,
            self.height,
        )

    async def stop(self) -> None:
        if self._cutter is not None:
            self._cutter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cutter
        if self._session is not None:
            await self._session.close()
        if self._process is not None:
            self._process.stop()
        if self._ledger is not None:
            self._ledger.close()

    @property
    def ledger(self) -> Ledger:
        assert self._ledger is not None, "the peer is not started"
        return self._ledger

    @property
    def msp_id(self) -> str:
        return PEER_MSP

    @property
    def height(self) -> int:
        return self.ledger.height()

    @property
    def chaincode_pid(self) -> int | None:
        return self._process.pid if self._process else None

    # ---- endorsement -----------------------------------------------------

    def check_signed(self, identity: bytes, message: bytes, signature: bytes) -> str:
        assert self.msps is not None
        return self.msps.verify(identity, message, signature)

    def _accept_proposal(
        self, signed: proposal_pb2.SignedProposal
    ) -> protocol.ParsedProposal:
        parsed = protocol.parse_proposal(signed)
        if parsed.channel != self.channel:
            raise UnknownChannel(f"this peer serves channel {self.channel} only")
        if parsed.chaincode != self.chaincode:
            raise UnknownChannel(f"chaincode {parsed.chaincode} is not installed here")
        self.check_signed(parsed.creator, signed.proposal_bytes, signed.signature)
        return parsed

    async def _simulate(self, parsed: protocol.ParsedProposal) -> Invocation:
        assert self._session is not None
        simulator = TxSimulator(self.ledger, self.chaincode)
        return await self._session.invoke(
            parsed.channel, parsed.tx_id, parsed.signed, parsed.args, simulator
        )

    async def evaluate(
        self, signed: proposal_pb2.SignedProposal
    ) -> proposal_response_pb2.Response:
        parsed = self._accept_proposal(signed)
        outcome = await self._simulate(parsed)
        if outcome.response.status >= 400:
            raise EndorsementFailed(outcome.response.message, outcome.response.status)
        return outcome.response

    async def endorse(self, signed: proposal_pb2.SignedProposal) -> common_pb2.Envelope:
        parsed = self._accept_proposal(signed)
        outcome = await self._simulate(parsed)
        if outcome.response.status >= 400:
            raise EndorsementFailed(outcome.response.message, outcome.response.status)
        assert self.identity is not None
        response_payload = protocol.chaincode_action(
            parsed,
            outcome.response,
            outcome.simulator.results(),
            outcome.event,
            self.chaincode_version,
        )
        endorser = self.identity.serialized()
        endorsement = proposal_response_pb2.Endorsement(
            endorser=endorser, signature=self.identity.sign(response_payload + endorser)
        )
        return protocol.endorsed_envelope(parsed, response_payload, endorsement)

    # ---- ordering --------------------------------------------------------

    async def submit(self, envelope: common_pb2.Envelope) -> str:
        """Queue a signed endorsed transaction for the next block; return its id.

        Like an orderer, refuse an envelope that its creator did not sign:
        it never reaches a block.
        """
        if self._failure is not None:
            raise ChainError(self._failure)
        submitted = protocol.parse_envelope(envelope)
        if submitted.channel != self.channel:
            raise UnknownChannel(f"this peer serves channel {self.channel} only")
        self.check_signed(submitted.creator, envelope.payload, envelope.signature)
        self._pending.append(submitted)
        self._has_pending.set()
        return submitted.tx_id

    def _cutter_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        self._failure = f"the block cutter stopped: {error!r}"
        log.error("%s; the peer accepts no more transactions", self._failure)

    async def _cut_blocks(self) -> None:
        while True:
            await self._has_pending.wait()
            if len(self._pending) < self._batch_size:
                await asyncio.sleep(self._batch_timeout)
            batch = self._pending[: self._batch_size]
            del self._pending[: self._batch_size]
            if not self._pending:
                self._has_pending.clear()
            await self._commit_block(batch)

    async def _commit_block(self, batch: list[protocol.SubmittedTransaction]) -> None:
        ledger = self.ledger
        number = ledger.height()
        state = BlockState(ledger)
        seen: set[str] = set()
        codes: list[int] = []
        writes: list[Write] = []
        for tx_num, tx in enumerate(batch):
            code = self._validate(tx, seen, state)
            seen.add(tx.tx_id)
            codes.append(code)
            if code == Code.VALID:
                for ns, key, value in _writes_of(tx):
                    state.apply(ns, key, value, (number, tx_num))
                    writes.append(Write(ns, key, value, (number, tx_num)))
            log.debug("tx %s in block %d: %s", tx.tx_id, number, Code.Name(code))
        block = protocol.make_block(
            number,
            ledger.last_block_hash(),
            [tx.envelope.SerializeToString() for tx in batch],
            codes,
        )
        ledger.commit(
            block, [(tx.tx_id, c) for tx, c in zip(batch, codes, strict=True)], writes
        )
        log.info("block %d committed with %d transactions", number, len(batch))
        async with self._committed:
            self._committed.notify_all()

    def _validate(
        self,
        tx: protocol.SubmittedTransaction,
        seen: set[str],
        state: BlockState,
    ) -> int:
        if tx.tx_id in seen or self.ledger.tx_status(tx.tx_id) is not None:
            return int(Code.DUPLICATE_TXID)
        if not self._endorsed_here(tx):
            return int(Code.ENDORSEMENT_POLICY_FAILURE)
        try:
            rwset = rwset_pb2.TxReadWriteSet.FromString(tx.action.results)
        except Exception:
            return int(Code.BAD_RWSET)
        for ns_rwset in rwset.ns_rwset:
            if ns_rwset.namespace != self.chaincode:
                return int(Code.ILLEGAL_WRITESET)
            kv = kv_rwset_pb2.KVRWSet.FromString(ns_rwset.rwset)
            code = check_reads(ns_rwset.namespace, kv, state)
            if code != Code.VALID:
                return code
        return int(Code.VALID)

    def _endorsed_here(self, tx: protocol.SubmittedTransaction) -> bool:
        assert self.identity is not None
        mine = self.identity.serialized()
        for endorsement in tx.endorsements:
            if endorsement.endorser != mine:
                continue
            try:
                self.check_signed(
                    endorsement.endorser,
                    tx.response_payload + endorsement.endorser,
                    endorsement.signature,
                )
            except CryptoError:
                return False
            return True
        return False

    # ---- commit status and events -----------------------------------------

    async def commit_status(self, tx_id: str) -> tuple[int, int]:
        """Wait until ``tx_id`` is in a block: ``(validation code, block number)``."""
        async with self._committed:
            while True:
                status = self.ledger.tx_status(tx_id)
                if status is not None:
                    return status
                await self._committed.wait()

    async def chaincode_events(
        self, chaincode: str, start_block: int, after_tx_id: str = ""
    ) -> AsyncIterator[ChaincodeEvents]:
        """Events of ``chaincode`` from valid transactions, block by block, forever."""
        number = start_block
        while True:
            async with self._committed:
                while number >= self.ledger.height():
                    await self._committed.wait()
            block = self.ledger.block(number)
            assert block is not None
            skip_to = after_tx_id if number == start_block else ""
            events = _events_of(block, chaincode, skip_to)
            if events:
                yield ChaincodeEvents(number, events)
            number += 1


def _writes_of(
    tx: protocol.SubmittedTransaction,
) -> list[tuple[str, str, bytes | None]]:
    rwset = rwset_pb2.TxReadWriteSet.FromString(tx.action.results)
    out: list[tuple[str, str, bytes | None]] = []
    for ns_rwset in rwset.ns_rwset:
        kv = kv_rwset_pb2.KVRWSet.FromString(ns_rwset.rwset)
        for write in kv.writes:
            out.append(
                (
                    ns_rwset.namespace,
                    write.key,
                    None if write.is_delete else write.value,
                )
            )
    return out


def _events_of(
    block: common_pb2.Block, chaincode: str, after_tx_id: str
) -> list[chaincode_event_pb2.ChaincodeEvent]:
    codes = protocol.transactions_filter(block)
    tx_ids: list[str] = []
    candidates: list[chaincode_event_pb2.ChaincodeEvent | None] = []
    for index, raw in enumerate(block.data.data):
        tx = protocol.parse_envelope(common_pb2.Envelope.FromString(raw))
        tx_ids.append(tx.tx_id)
        event = None
        if codes[index] == Code.VALID and tx.action.events:
            event = chaincode_event_pb2.ChaincodeEvent.FromString(tx.action.events)
            if event.chaincode_id != chaincode:
                event = None
        candidates.append(event)
    # Resume after a given transaction: drop it and everything before it in
    # the start block; if it is not in that block, deliver the whole block.
    first = tx_ids.index(after_tx_id) + 1 if after_tx_id in tx_ids else 0
    return [e for e in candidates[first:] if e is not None]
