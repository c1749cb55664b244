"""``broker audit verify``, ``checkpoint`` and ``key``: is the trail whole, and what lets
someone else check it.

``verify`` checks the chain, then holds it against the newest signed heads it can find: the
trail's own checkpoints, those kept with the state (broker.db, or the table audit_heads), the
configured witnesses that can be read back, and any ``--witness URL|FILE``. With ``--export
FILE --key FILE`` it checks a trail exported with ``broker audit export --format chain``, with
no config and no data directory: what an auditor holding only the public key runs. Exit
status 1 when it finds tampering (naming the record, the checkpoint and where it was found), 2
for a usage problem.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.audit.checkpoints import Checkpoint, PublishedKey, audit_key_path, iso_time
from broker.audit.exported import ExportedTrail, NoTrail
from broker.audit.verification import Held, Verdict, checkpoints, unheld, verify
from broker.audit.witnesses import FileWitness, HttpWitness, Witness, WitnessError, witness_from
from broker.commands.storage_access import with_audit, with_state
from broker.errors import ConfigError
from broker.settings import BrokerSettings, load_settings
from broker.signing import AgentCredentials
from broker.storage.backend import audit_path, postgres_url
from broker.storage.interfaces import AuditReader, StateStore
from broker.storage.records import CheckpointRow


def add_verify_commands(sub: Any) -> None:
    """Register ``audit verify``, ``audit checkpoint`` and ``audit key``."""
    check = sub.add_parser(
        "verify", help="check the hash chain against every signed head that can be found"
    )
    check.add_argument("--config", type=Path, help="the broker's config")
    check.add_argument(
        "--export", type=Path, help="a trail from `audit export --format chain` (needs --key)"
    )
    check.add_argument("--key", type=Path, help="the audit public key (`broker audit key`)")
    check.add_argument(
        "--witness",
        action="append",
        default=[],
        metavar="URL|FILE",
        help="checkpoints kept elsewhere: an http witness, or a file of them (repeatable)",
    )
    check.add_argument(
        "--checkpoint", type=Path, help="a checkpoint kept elsewhere (what `checkpoint` printed)"
    )
    check.add_argument("--broker-id", help="only this broker's checkpoints count")
    check.set_defaults(handler=_verify)

    point = sub.add_parser("checkpoint", help="the latest signed checkpoint, to keep elsewhere")
    point.add_argument("--config", type=Path, required=True, help="the broker's config")
    point.set_defaults(handler=_checkpoint)

    key = sub.add_parser("key", help="the audit public key, for whoever checks the trail")
    key.add_argument("--config", type=Path, required=True, help="the broker's config")
    key.set_defaults(handler=_key)


def _published(settings: BrokerSettings) -> PublishedKey:
    path = audit_key_path(settings)
    if not path.exists():
        raise ConfigError(str(path), "no audit key here: has the broker run on this data_dir?")
    return PublishedKey.of(AgentCredentials.load(path), settings.broker_id)


def _trusted_key(args: argparse.Namespace, settings: BrokerSettings | None) -> PublishedKey:
    """The key given with --key (the one to trust), else the data directory's."""
    if args.key is not None:
        try:
            return PublishedKey.read(args.key)
        except ValueError as exc:
            raise ConfigError(str(args.key), f"not an audit public key: {exc}") from None
    if settings is None:
        raise ConfigError("--key", "give the audit public key (`broker audit key` prints it)")
    return _published(settings)


def _given_witnesses(args: argparse.Namespace) -> list[Witness]:
    given: list[Witness] = [
        HttpWitness(w) if w.startswith(("http://", "https://")) else FileWitness(Path(w))
        for w in args.witness
    ]
    if args.checkpoint is not None:
        given.append(FileWitness(args.checkpoint))
    return given


def _read(witness: Witness, *, required: bool, notes: list[str]) -> list[Checkpoint]:
    try:
        return witness.read()
    except WitnessError as exc:
        if required:
            raise ConfigError(witness.name, f"cannot read its checkpoints: {exc}") from None
        notes.append(f"not compared: {exc}")
        return []


def _verify(args: argparse.Namespace) -> int:
    if args.config is None and args.export is None:
        raise ConfigError("verify", "give --config (this broker's trail) or --export and --key")
    settings = load_settings(args.config) if args.config is not None else None
    key = _trusted_key(args, settings)
    broker_id = args.broker_id or (settings.broker_id if settings else "") or key.broker_id
    notes: list[str] = []
    held: list[Held] = []
    evidence = None
    if settings is not None and args.export is None:
        evidence = _state_evidence(settings)
        held += [Held(Checkpoint.of(row), evidence.place) for row in evidence.heads]
    configured = []
    for config in settings.audit_witnesses if settings is not None else ():
        try:
            witness = witness_from(config.model_dump(), broker_id)
        except ValueError as exc:
            raise ConfigError("audit_witnesses", str(exc)) from None
        configured.append(witness.name)
        held += [Held(m, witness.name) for m in _read(witness, required=False, notes=notes)]
    for witness in _given_witnesses(args):
        held += [Held(m, witness.name) for m in _read(witness, required=True, notes=notes)]
    if args.export is not None:
        return _verify_export(args.export, key.key(), held, broker_id, notes)
    assert settings is not None and evidence is not None

    async def check(reader: AuditReader) -> tuple[Verdict, list[Checkpoint], bool]:
        present = await reader.present()
        trail = reader if present else NoTrail()
        verdict = await verify(trail, key.key(), held, broker_id, evidence.marks)
        return verdict, (await checkpoints(reader) if present else []), present

    verdict, own, present = with_audit(settings, check, required=False)
    if verdict.ok and verdict.records == 0 and not own and evidence.calls:
        verdict = Verdict(
            0,
            0,
            f"the audit trail is {'empty' if present else 'missing'} "
            f"({evidence.trail}), but {evidence.place} records {evidence.calls} call(s): "
            "the trail was wiped or replaced",
            1,
            verdict.latest,
        )
    for place in configured:
        waiting = unheld(own, held, place)
        if waiting and not any(n.startswith(f"not compared: {place}") for n in notes):
            notes.append(
                f"{place} does not hold {len(waiting)} checkpoint(s) yet: records "
                + ", ".join(map(str, waiting[-10:]))
            )
    return _report(verdict, notes)


def _verify_export(
    path: Path, public_key: Ed25519PublicKey, held: list[Held], broker_id: str, notes: list[str]
) -> int:
    try:
        exported = ExportedTrail.read(path)
    except ValueError as exc:
        raise ConfigError(str(path), str(exc)) from None
    broker_id = broker_id or exported.broker_id
    made = exported.exported_ms
    verdict = asyncio.run(verify(exported, public_key, held, broker_id, str(path), made))
    notes.append(f"the export was made {iso_time(made)}")
    later = [h.mark.seq for h in held if h.mark.ts_ms > made]
    if later:
        notes.append(
            f"{len(later)} checkpoint(s) found were signed after it (up to record "
            f"{max(later)}): export again to check them"
        )
    return _report(verdict, notes)


class _Evidence(NamedTuple):
    """What the state says about the trail: stored calls, and the heads it keeps; and what
    the two places are called in a verdict."""

    calls: int
    heads: list[CheckpointRow]
    place: str  # where the heads are: broker.db, or audit_heads (PostgreSQL)
    trail: str  # where the records are: audit.db, or the audit table
    marks: str  # where the trail's own checkpoints are: audit.db, or audit_checkpoints


def _state_evidence(settings: BrokerSettings) -> _Evidence:
    if postgres_url(settings) is not None:
        names = ("audit_heads", "the audit table", "audit_checkpoints")
    elif not settings.database.exists():
        raise ConfigError(str(settings.database), "no broker database here (has the broker run?)")
    else:
        names = (settings.database.name, audit_path(settings).name, audit_path(settings).name)

    async def read(state: StateStore) -> _Evidence:
        return _Evidence(await state.calls.count(), await state.heads.all(), *names)

    return with_state(settings, read)


def _report(verdict: Verdict, notes: list[str]) -> int:
    if verdict.ok:
        print(
            f"ok: {verdict.records} record(s) chained, {verdict.checkpoints} signed "
            "checkpoint(s) hold"
        )
        if verdict.latest:
            heads = ", ".join(f"{place} at record {seq}" for place, seq in verdict.latest.items())
            print(f"  newest signed heads compared: {heads}")
    else:
        print(f"TAMPERED: {verdict.problem}")
    for note in notes:
        print(f"  {note}")
    return 0 if verdict.ok else 1


def _checkpoint(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    key = _published(settings)
    marks = with_audit(settings, checkpoints)
    if not marks:
        raise ConfigError(
            str(args.config),
            "no checkpoint yet: the broker signs one every "
            "1,000 records or audit_checkpoint_interval",
        )
    latest = marks[-1]
    print(json.dumps({**latest.to_json(), "public_key": key.public_key}, indent=2))
    return 0


def _key(args: argparse.Namespace) -> int:
    print(json.dumps(_published(load_settings(args.config)).to_json(), indent=2))
    return 0
