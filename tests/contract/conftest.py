"""One local stack per route (tests/contract/routes.py), shared by every case of that route.

pytest groups the cases by the package-scoped `route_stack` parameter: one route's cases run
at a time. The next route's stack starts while they run, and a route's stack stops in the
background once they are done (`StackPool`).

Settings that keep the suite quick: uploads submitted one by one, a 1 s backoff on create
calls and on polls that met a provider error, a reconciler every second for tasks unchanged
for 3 s, polls every second and small simulated videos. Faults a case injects end with it,
and the next case starts once the stack is quiet.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import pytest

from local.stack import LocalStack
from tests.contract.checks import RouteUnderTest
from tests.contract.routes import KNOWN_DEFECTS, ROUTES, RouteContract

CONTRACT_DIR = Path(__file__).parent
# One upload per submit invocation: a lone upload is not held for the batching window.
STACK_PARAMETERS = {"SubmitBatchSize": "1"}
STACK_ENVIRONMENT = {
    "SUBMIT_BACKOFF_BASE_SECONDS": "1",
    # A poll that met a 429 or 503 comes back after the finalize queue's backoff.
    "FINALIZE_BACKOFF_BASE_SECONDS": "1",
    "RECONCILE_AFTER_SECONDS": "3",
}
POLL_SECONDS = 1  # a polling route's first status check and interval
SIMULATOR_OPTIONS = {"render_max_long_side": 320, "progress_delay": 0.1}
LOG_TAIL_LINES = 120

_ROUTE_ORDER = pytest.StashKey[list[RouteContract]]()
_LOG_START = pytest.StashKey[tuple[Path, int]]()


class StackPool:
    """Route stacks in the order the cases need them: taking one starts the next in the
    background, and a stack given back stops in the background."""

    def __init__(self, order: list[RouteContract], tmp_path_factory: pytest.TempPathFactory) -> None:
        self._order = order
        self._tmp = tmp_path_factory
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="contract-stack")
        self._starting: dict[RouteContract, Future[RouteUnderTest]] = {}
        self._stopping: list[Future[None]] = []

    def take(self, contract: RouteContract) -> RouteUnderTest:
        starting = self._starting.pop(contract, None) or self._start(contract)
        following = self._order[self._order.index(contract) + 1 :] if contract in self._order else []
        if following and following[0] not in self._starting:
            self._starting[following[0]] = self._start(following[0])
        return starting.result()

    def give_back(self, route: RouteUnderTest) -> None:
        self._stopping.append(self._executor.submit(_stop, route))

    def close(self) -> None:
        """Stop every stack, started ahead and unused ones too, and wait for them."""
        for starting in self._starting.values():
            self._stopping.append(self._executor.submit(_stop_once_started, starting))
        for stopping in self._stopping:
            stopping.result()
        self._executor.shutdown()

    def _start(self, contract: RouteContract) -> Future[RouteUnderTest]:
        function_log = self._tmp.mktemp(f"contract-{contract.name}") / "functions.log"
        return self._executor.submit(_start, contract, function_log)


def _start(contract: RouteContract, function_log: Path) -> RouteUnderTest:
    log_stream = function_log.open("ab")
    stack = LocalStack(
        routes=[contract.name],
        parameters=STACK_PARAMETERS,
        environment=STACK_ENVIRONMENT,
        reconcile_interval_seconds=1,
        poll_seconds=POLL_SECONDS,
        simulator_options=SIMULATOR_OPTIONS,
        function_log=log_stream,
    )
    try:
        stack.start()
    except BaseException:
        log_stream.close()
        raise
    return RouteUnderTest(contract, stack, function_log, log_stream)


def _stop_once_started(starting: Future[RouteUnderTest]) -> None:
    _stop(starting.result())


def _stop(route: RouteUnderTest) -> None:
    try:
        route.stack.stop()
    finally:
        route.log_stream.close()


@pytest.fixture(scope="package")
def stack_pool(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StackPool]:
    pool = StackPool(request.config.stash.get(_ROUTE_ORDER, list(ROUTES)), tmp_path_factory)
    yield pool
    pool.close()


@pytest.fixture(scope="package", params=ROUTES, ids=str)
def route_stack(request: pytest.FixtureRequest, stack_pool: StackPool) -> Iterator[RouteUnderTest]:
    route = stack_pool.take(request.param)
    yield route
    stack_pool.give_back(route)


@pytest.fixture
def route(route_stack: RouteUnderTest, request: pytest.FixtureRequest) -> Iterator[RouteUnderTest]:
    """The route's stack for one case; its faults are cleared and the stack quiet after it."""
    request.node.stash[_LOG_START] = (route_stack.function_log, route_stack.function_log.stat().st_size)
    yield route_stack
    simulator = route_stack.simulator
    simulator.set_faults(**asdict(simulator.FAULTS()))
    route_stack.wait_until_quiet()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Known pipeline defects (routes.KNOWN_DEFECTS) become strict xfails of their cases."""
    for item in items:
        contract = _contract_of(item)
        if contract is None or not isinstance(item, pytest.Function):
            continue
        reason = KNOWN_DEFECTS.get((item.originalname, contract.name))
        if reason:
            item.add_marker(pytest.mark.xfail(strict=True, reason=reason))


def pytest_collection_finish(session: pytest.Session) -> None:
    """The routes in the order their cases will run (after -k and pytest's grouping)."""
    order: list[RouteContract] = []
    for item in session.items:
        contract = _contract_of(item)
        if contract is not None and contract not in order:
            order.append(contract)
    session.config.stash[_ROUTE_ORDER] = order


def _contract_of(item: pytest.Item) -> RouteContract | None:
    if CONTRACT_DIR not in item.path.parents or not isinstance(item, pytest.Function):
        return None
    contract = item.callspec.params.get("route_stack") if hasattr(item, "callspec") else None
    return contract if isinstance(contract, RouteContract) else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed case's report carries what the functions logged while it ran."""
    report = yield
    started = item.stash.get(_LOG_START, None)
    if started is not None and report.failed and call.when == "call":
        path, offset = started
        with path.open("rb") as log:
            log.seek(offset)
            lines = log.read().decode(errors="replace").splitlines()
        report.sections.append(
            (f"functions log (last {LOG_TAIL_LINES} lines, {path})", "\n".join(lines[-LOG_TAIL_LINES:]))
        )
    return report
