"""The running broker: its state on disk, its pipelines and its gRPC server.

``Broker`` owns everything one broker process holds (the data directory lock, the store, the
files in force, the upstream adapters) and serves ``broker.v1.ToolBroker`` with health and
reflection on one grpc.aio server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, NoReturn

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from broker import errors
from broker.adapters.command_adapter import CommandAdapter
from broker.adapters.http_adapter import HttpAdapter
from broker.approvals.admin import AdminStage, admin_keys
from broker.approvals.call_events import CallEvents
from broker.approvals.notify import CliNotifier
from broker.approvals.service import Approvals, Freezes, Notifier
from broker.approvals.slack import SlackInteractions, SlackNotifier
from broker.approvals.socket_mode import SlackSocketMode
from broker.approvals.stored_calls import PENDING
from broker.audit.checkpoints import audit_key, audit_key_path
from broker.audit.pipe import AuditPipe, WriterOptions
from broker.audit.trail import AuditTrail
from broker.console.app import console_for
from broker.datadir_lock import DataDirLock
from broker.http_side import HttpSide
from broker.identity import KeyRegistry, ReplayGuard
from broker.limits.budgets import Budgets
from broker.limits.circuit_breakers import Circuits
from broker.limits.loop_detector import DAY_MS, LoopDetector
from broker.limits.rates import Limiters
from broker.limits.redis_limits import RedisLimits
from broker.metrics import Metrics
from broker.pipeline import (
    ADMIN_STAGES,
    APPROVED_GIVEN,
    APPROVED_STAGES,
    AWAIT_STAGES,
    CALL_STAGES,
    LIST_TOOLS_STAGES,
    Call,
    Handler,
    Outcome,
    Rpc,
    Stage,
    build_pipeline,
)
from broker.retention import Retention
from broker.settings import BrokerSettings
from broker.signing import now_ms
from broker.snapshot import Snapshot, load_snapshot
from broker.stages.audit_records import AuditStage, DecidedStage, ReceivedStage
from broker.stages.await_call import AwaitStage
from broker.stages.budget import BudgetStage
from broker.stages.circuit import CircuitStage
from broker.stages.confirm import ConfirmStage
from broker.stages.constrain import ConstrainStage
from broker.stages.execute import ExecuteStage
from broker.stages.freeze import FreezeStage
from broker.stages.grant import GrantStage
from broker.stages.idempotency import IdempotencyStage
from broker.stages.journal import JournalStage
from broker.stages.list_tools import ListToolsStage
from broker.stages.loops import LoopStage
from broker.stages.provenance import ProvenanceStage
from broker.stages.ratelimit import RateLimitStage
from broker.stages.redact import RedactStage
from broker.stages.retry import RetryStage
from broker.stages.untrusted_output import UntrustedStage
from broker.stages.validate import ValidateStage
from broker.stages.verify import VerifyStage
from broker.storage.backend import (
    audit_path,
    audit_reader,
    postgres_url,
    redis_url,
    state_location,
    state_store,
)
from broker.storage.interfaces import AuditReader, StateStore
from broker.storage.records import StoreError
from broker.untrusted.text_keeper import TextKeeper
from broker.v1 import broker_pb2 as pb
from broker.vault import SecretBox, Vault, load_master_key
from broker.workers import Workers

log = logging.getLogger(__name__)

SERVICE = "broker.v1.ToolBroker"

ADMIN_SERVICE = "broker.v1.Admin"
# With replicas, how often each looks for writes a dead replica left executing (its lease,
# pg_leases.LEASE_MS, must have run out first)
RECOVERY_INTERVAL_S = 5.0
MAX_MESSAGE_BYTES = 2 * 1024 * 1024


class Broker:
    """One broker process: state on disk, the files in force, pipelines, the gRPC server and
    the HTTP side."""

    def __init__(
        self,
        settings: BrokerSettings,
        env: Mapping[str, str] | None = None,
        *,
        worker: int | None = None,
    ) -> None:
        """``worker``: one of ``broker run --workers N`` (a lock of its own in data_dir; the
        state is PostgreSQL's, the port shared with SO_REUSEPORT)."""
        self.settings = settings
        self._env = dict(os.environ if env is None else env)
        self.snapshot: Snapshot | None = None
        self.port = 0
        self.http_port = 0
        lock = "broker.lock" if worker is None else f"worker-{worker}.lock"
        self._lock = DataDirLock(settings.data_dir, lock)
        place = f"{socket.gethostname()}:{self._lock.path}"  # held while this process runs
        self._state: StateStore = state_store(settings, env=self._env, place=place)
        self._audit_reader: AuditReader = audit_reader(settings, self._env)
        self._trail: AuditTrail | None = None
        self._server: aio.Server | None = None
        # big answers are worked on in processes of their own (see broker.workers)
        self._workers = Workers()
        self._http = HttpAdapter(self._workers)
        self._command = CommandAdapter(self._workers, settings.bwrap)
        self._approvals: Approvals | None = None
        self._slack: SlackNotifier | None = None
        self._http_side: HttpSide | None = None
        self._socket: SlackSocketMode | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._reloading = asyncio.Lock()
        self.metrics = Metrics()
        # Await's waiters, woken by the audit and approvals (and by other replicas)
        self._call_events = CallEvents(lambda call_id: self._state.announce("call", call_id))
        self._freezes: Freezes | None = None
        self._redis: RedisLimits | None = None  # the limits replicas share, if configured
        self._limiters = Limiters()
        self._changes: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Open the data directory, load the files, bind and serve; returns the bound port."""
        try:
            self.settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._lock.acquire()
        except OSError as exc:
            message = f"cannot use data_dir: {exc}"
            raise errors.ConfigError(str(self.settings.data_dir), message) from None
        try:
            await self._start()
        except BaseException:
            await self._release()
            raise
        log.info("broker %s serving on port %d", self.settings.broker_id, self.port)
        return self.port

    async def _start(self) -> None:
        self.snapshot = load_snapshot(self.settings)
        master_key = load_master_key(self.settings, self._env)
        admin = admin_keys(self.settings)
        audit_key(self.settings)  # made on first start
        shared_limits = redis_url(self.settings, self._env)
        if shared_limits is not None:
            self._redis = RedisLimits(shared_limits, self.settings.broker_id)
        self._limiters = Limiters(self._redis, self.settings.replica_count)
        try:
            await self._state.open()
            await self._audit_reader.prepare()
            self._trail = await self._start_audit_writer()
        except StoreError as exc:
            where = state_location(self.settings, self._env)
            raise errors.ConfigError(where, str(exc)) from None
        vault = Vault(self._state.secrets, SecretBox(master_key) if master_key else None)
        if master_key is None:
            log.warning(
                "no master key: the broker is sealed; calls that need a credential "
                "will fail with SEALED"
            )
        freezes = self._freezes = Freezes(self._state.freezes)
        await freezes.load()
        self._state.watch(self._changed_elsewhere)
        # what answers and agents said, per agent (the taint check's text), within its bound
        keeper = TextKeeper(self._state.taint)
        stages = self._build_stages(self._trail, vault, freezes, keeper)
        approved = build_pipeline(
            APPROVED_STAGES, stages, self.metrics.stage_time, given=APPROVED_GIVEN
        )
        self._approvals = self._build_approvals(self._trail, vault, freezes, approved)
        stages.update(await self._approval_stages(self._approvals, admin, keeper))
        self.metrics.pending_from(lambda: self._state.calls.count(PENDING))
        # before serving: a write starting now must not be taken for one the last run left
        await self._approvals.recover(now_ms())
        self._server = self._build_server(stages)
        await self._serve_health(self._server)
        self.port = self._bind(self._server)
        await self._server.start()
        interactions = None
        if self._slack is not None:
            interactions = SlackInteractions(self._slack, self._approvals, vault)
            if self._slack.settings.socket_mode:
                self._socket = SlackSocketMode(self._slack.settings, vault, interactions)
                await self._socket.start()
                interactions = None  # clicks come over the socket, not over HTTP
        if self.settings.http_listen:
            host, _, port = self.settings.http_listen.rpartition(":")
            self._http_side = HttpSide(
                host,
                int(port),
                interactions,
                self.metrics,
                reuse_port=self.settings.so_reuseport,
                console=await console_for(
                    self.settings,
                    self._approvals,
                    self._trail,
                    self._state,
                    self._limiters,
                    self._audit_reader,
                    self._env,
                ),
            )
            self.http_port = await self._http_side.start()
        loop = asyncio.get_running_loop()
        interval = self.settings.approval_timer_interval
        self._tasks.append(loop.create_task(self._approvals.run_timers(interval)))
        self._tasks.append(loop.create_task(self._checkpoints(self._trail)))
        if self.settings.reload_interval > 0:
            self._tasks.append(loop.create_task(self._watch_files()))
        retention = Retention(self._state, self.settings, self._longest_taint_window)
        self._tasks.append(loop.create_task(retention.run(now_ms)))
        if self._state.shared:
            self._tasks.append(loop.create_task(self._recover_lost()))

    def _changed_elsewhere(self, topic: str, key: str) -> None:
        """Another process sharing the state changed it: act at once (pg_changes)."""
        if topic == "call":
            self._call_events.wake(key)
        if topic in ("freezes", "resync") and self._freezes is not None:
            self._background(self._freezes.load())
        if topic == "resync":
            self._call_events.wake_all()  # each waiter looks at its call again

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._changes.add(task)
        task.add_done_callback(self._after_change)

    def _after_change(self, task: asyncio.Task[None]) -> None:
        self._changes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # the freezes stay as they were; the next change or reconnect reads them again
            log.error("re-reading after a change elsewhere failed: %s", task.exception())

    async def _recover_lost(self) -> None:
        """With replicas: look for writes a dead replica left executing, every lease."""
        while True:
            await asyncio.sleep(RECOVERY_INTERVAL_S)  # a look, then a rest: leases last 15 s
            try:
                if self._approvals is not None:
                    await self._approvals.recover_lost(now_ms())
            except StoreError as exc:
                log.warning("looking for writes lost with a replica failed: %s", exc)

    def _longest_taint_window(self) -> float:
        assert self.snapshot is not None
        return max((p.taint_window for p in self.snapshot.policies.policies.values()), default=0)

    async def _start_audit_writer(self) -> AuditTrail:
        """The audit writer process, started now (it takes a few hundred ms) so that the first
        record need not wait; it signs checkpoints with the audit key and logs each request's
        JSON line on stderr (the broker's, not a tool's)."""
        url = postgres_url(self.settings, self._env)
        options = WriterOptions(
            key_file=audit_key_path(self.settings),
            broker_id=self.settings.broker_id,
            # the checkpoints are kept with the state, wherever it is
            heads=None if url else self.settings.database,
            state_url=url,
            witnesses=[w.model_dump() for w in self.settings.audit_witnesses],
            log_calls=True,
        )
        pipe = AuditPipe(
            audit_path(self.settings),
            self.settings.durability,
            options,
            on_witness=self.metrics.witness_state,
        )
        trail = AuditTrail(pipe, self._state.settle)
        await trail.start()
        return trail

    def _build_approvals(
        self, trail: AuditTrail, vault: Vault, freezes: Freezes, run_approved: Handler
    ) -> Approvals:
        notifier: Notifier = CliNotifier()
        if self.settings.slack is not None:
            self._slack = SlackNotifier(self.settings.slack, vault, self._state.calls)
            notifier = self._slack
        return Approvals(
            self._state.calls,
            trail,
            freezes,
            notifier,
            self._current,
            run_approved,
            events=self._call_events,
            max_wait_s=self.settings.await_max_wait,
        )

    def _current(self) -> Snapshot:
        assert self.snapshot is not None
        return self.snapshot

    async def reload(self) -> bool:
        """Load the policy and tool files again and put the new set in force at once; a set
        that fails its checks is refused and logged, and the old one stays."""
        async with self._reloading:
            loop = asyncio.get_running_loop()
            try:
                snapshot = await loop.run_in_executor(None, load_snapshot, self.settings)
            except errors.ConfigError as exc:
                log.error("policy reload refused; the set in force stays: %s", exc)
                return False
            old = self.snapshot
            self.snapshot = snapshot  # one assignment: a request sees the old set or the new
            if old is None or old.policies.digest != snapshot.policies.digest:
                log.info("policy set %s in force", snapshot.policies.digest[:12])
            return True

    async def _checkpoints(self, trail: AuditTrail) -> None:
        """Sign the audit chain's head every audit_checkpoint_interval while it grows."""
        interval = self.settings.audit_checkpoint_interval
        while True:
            await asyncio.sleep(min(interval, 5.0))
            try:
                await trail.checkpoint_if_due(interval)
            except StoreError as exc:
                log.error("audit checkpoint failed: %s", exc)

    async def _watch_files(self) -> None:
        """Reload when a file under policies/ or tools/ changes (polled: no extra dependency)."""
        seen = _signature(self.settings)
        while True:
            await asyncio.sleep(self.settings.reload_interval)
            current = _signature(self.settings)
            if current != seen:
                seen = current
                await self.reload()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop taking calls, let running ones finish for ``grace`` seconds, release state."""
        for task in self._tasks:
            task.cancel()
        if self._server is not None:
            await self._server.stop(grace)
        await self._release()

    async def wait(self) -> None:
        """Until the server stops."""
        if self._server is not None:
            await self._server.wait_for_termination()

    async def _release(self) -> None:
        if self._http_side is not None:
            await self._http_side.stop()
        if self._socket is not None:
            await self._socket.close()
        if self._approvals is not None:
            await self._approvals.close()
        if self._slack is not None:
            await self._slack.close()
        await self._http.close()
        await self._workers.close()
        for task in list(self._changes):
            task.cancel()
        if self._redis is not None:
            await self._redis.close()
        await self._state.close()  # queued writes commit before the last records go out
        if self._trail is not None:
            await self._trail.close()
        await self._audit_reader.close()
        self._lock.release()

    def _build_stages(
        self, trail: AuditTrail, vault: Vault, freezes: Freezes, keeper: TextKeeper
    ) -> dict[str, Stage]:
        """The stages that do not need the approvals service (the approved calls' pipeline is
        built from these)."""
        return {
            "audit": AuditStage(trail, self.metrics.observe, self._call_events),
            "received": ReceivedStage(trail),
            "decided": DecidedStage(trail),
            "freeze": FreezeStage(freezes),
            "grant": GrantStage(),
            "validate": ValidateStage(),
            "constrain": ConstrainStage(),
            "ratelimit": RateLimitStage(self._limiters),
            "retry": RetryStage(),
            "circuit": CircuitStage(Circuits()),
            "journal": JournalStage(self._state.calls),
            "provenance": ProvenanceStage(keeper, self._workers),
            "redact": RedactStage(vault, self._workers),
            "untrusted": UntrustedStage(self._state.taint, self._workers, self.settings.detector),
            "execute": ExecuteStage(self._http, self._command, vault),
            "list_tools": ListToolsStage(),
        }

    async def _approval_stages(
        self, approvals: Approvals, admin: KeyRegistry, keeper: TextKeeper
    ) -> dict[str, Stage]:
        """The stages that verify requests and the ones that ask, decide or wait for humans."""
        window_ms = int(self.settings.request_window * 1000)
        replay = await ReplayGuard.load(self._audit_reader, window_ms, self._state.nonces)
        history = await self._audit_reader.attempts(now_ms() - DAY_MS)
        audience = self.settings.broker_id
        budgets = Budgets(
            self._state.budgets,
            approvals.alert,
            self.metrics.budget_used,
            shared=self._state.shared_budgets,
        )
        return {
            "verify": VerifyStage(audience, window_ms, replay),
            "verify_admin": VerifyStage(audience, window_ms, replay, keys=lambda call: admin),
            "idempotency": IdempotencyStage(approvals),
            "loops": LoopStage(LoopDetector(history, now_ms()), approvals, self._redis),
            "budget": BudgetStage(budgets),
            "confirm": ConfirmStage(approvals, self._state.taint, keeper, self._state.settle),
            "await": AwaitStage(approvals),
            "admin": AdminStage(approvals),
        }

    def _build_server(self, stages: dict[str, Stage]) -> aio.Server:
        options = [
            ("grpc.so_reuseport", 1 if self.settings.so_reuseport else 0),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
        server = aio.server(options=options)
        call = self._endpoint(
            "call", build_pipeline(CALL_STAGES, stages, self.metrics.stage_time), _call_result
        )
        wait = self._endpoint(
            "await", build_pipeline(AWAIT_STAGES, stages, self.metrics.stage_time), _call_result
        )
        tools = self._endpoint(
            "list_tools",
            build_pipeline(LIST_TOOLS_STAGES, stages, self.metrics.stage_time),
            _tool_list,
        )
        handlers = {
            "Call": _unary(call, pb.CallResult),
            "Await": _unary(wait, pb.CallResult),
            "ListTools": _unary(tools, pb.ToolList),
        }
        admin = build_pipeline(ADMIN_STAGES, stages, self.metrics.stage_time)
        admin_rpcs: tuple[tuple[str, Rpc, Any], ...] = (
            ("Freeze", "freeze", pb.AdminResult),
            ("Unfreeze", "unfreeze", pb.AdminResult),
            ("ListApprovals", "list_approvals", pb.ApprovalList),
            ("Decide", "decide", pb.AdminResult),
            ("Reconcile", "reconcile", pb.AdminResult),
        )
        admin_handlers = {
            method: _unary(self._endpoint(rpc, admin, _reply), response)
            for method, rpc, response in admin_rpcs
        }
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(SERVICE, handlers),
                grpc.method_handlers_generic_handler(ADMIN_SERVICE, admin_handlers),
            )
        )
        return server

    async def _serve_health(self, server: aio.Server) -> None:
        health = HealthServicer()
        for name in ("", SERVICE, ADMIN_SERVICE):
            await health.set(name, health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        health_service = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        reflection.enable_server_reflection(
            (SERVICE, ADMIN_SERVICE, health_service, reflection.SERVICE_NAME), server
        )

    def _bind(self, server: aio.Server) -> int:
        try:
            port = server.add_insecure_port(self.settings.listen)
        except RuntimeError:
            port = 0
        if port == 0:
            raise errors.ConfigError(
                "listen", f"cannot listen on {self.settings.listen}; is the port in use?"
            )
        return port

    def _endpoint(
        self, rpc: Rpc, pipeline: Handler, render: Callable[[Call, Outcome], Any]
    ) -> Callable[[pb.SignedRequest, aio.ServicerContext[Any, Any]], Awaitable[Any]]:
        async def endpoint(signed: pb.SignedRequest, context: aio.ServicerContext[Any, Any]) -> Any:
            assert self.snapshot is not None
            remaining = context.time_remaining()
            deadline = None if remaining is None else time.monotonic() + remaining
            call = Call(rpc, signed, self.snapshot, deadline)
            try:
                outcome = await pipeline(call)
            except errors.BrokerError as exc:
                await _abort(context, exc, call.call_id)
            except Exception:
                log.exception("call %s failed inside the broker", call.call_id)
                await _abort(
                    context,
                    errors.InternalError(
                        f"internal error in call {call.call_id}; the broker log has the details"
                    ),
                    call.call_id,
                )
            return render(call, outcome)

        return endpoint


def _signature(settings: BrokerSettings) -> list[tuple[str, int, int]]:
    found = []
    for folder in (settings.policies, settings.tools):
        for path in sorted(folder.glob("*.yaml")):
            try:
                stat = path.stat()
            except OSError:
                continue  # removed while we looked: the next look sees it gone
            found.append((str(path), stat.st_mtime_ns, stat.st_size))
    return found


def _call_result(call: Call, outcome: Outcome) -> pb.CallResult:
    return pb.CallResult(
        state=outcome.state,  # type: ignore[arg-type]
        call_id=outcome.call_id or call.call_id,
        result_json=outcome.result_json,
        findings=outcome.findings,
        upstream_status=outcome.upstream_status,
        approval_note=outcome.approval_note,
        untrusted_paths=outcome.untrusted_paths,
        escalate_at_ms=outcome.escalate_at_ms,
        expires_at_ms=outcome.expires_at_ms,
    )


def _reply(call: Call, outcome: Outcome) -> Any:
    return outcome.reply


def _tool_list(call: Call, outcome: Outcome) -> pb.ToolList:
    return pb.ToolList(tools=outcome.tools or [])


def _unary(endpoint: Any, response: Any) -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(
        endpoint,
        request_deserializer=pb.SignedRequest.FromString,
        response_serializer=response.SerializeToString,
    )


async def _abort(
    context: aio.ServicerContext[Any, Any], error: errors.BrokerError, call_id: str
) -> NoReturn:
    status = errors.to_grpc_status(error, call_id)
    await context.abort(status.code, status.details, trailing_metadata=status.trailing_metadata)
    raise AssertionError("unreachable: abort raises")
