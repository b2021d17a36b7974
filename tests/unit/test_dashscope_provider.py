"""The Model Studio (DashScope) adapter and APIYI, the same adapter under another prefix.

The adapter talks real HTTP to the routes' simulators on loopback (local/simulators/dashscope.py
and apiyi.py), with an image server for the presigned URL. What the simulators cannot produce
(a CANCELED task, a cancel call, a malformed 200) is answered by httpx's MockTransport.
"""

from __future__ import annotations

import importlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from i2v.domain import Options
from i2v.errors import ProviderRejected, ProviderUnavailable, Unauthorized
from i2v.providers import ROUTES
from i2v.providers.apiyi import ROUTE as APIYI_ROUTE
from i2v.providers.apiyi import ApiyiSettings
from i2v.providers.base import ProviderState, ProviderUpdate, SubmitRequest
from i2v.providers.dashscope import ROUTE as DASHSCOPE_ROUTE
from i2v.providers.dashscope import (
    DashScopeProtocolSettings,
    DashScopeProvider,
    DashScopeSettings,
    error_code,
)
from i2v.providers.route import RouteConfigError
from local.simulators.apiyi import ApiyiSimulator
from local.simulators.dashscope import DashScopeSimulator
from tests.unit.test_magnific_simulator import _ImageServer, _picture

API_KEY = "sk-adapter-test-key"
WAIT_SECONDS = 30.0
TERMINAL = {ProviderState.SUCCEEDED, ProviderState.FAILED, ProviderState.GONE}


class Keys:
    """Credentials: a polling route needs the API key, never a webhook secret."""

    def __init__(self, key: str = API_KEY) -> None:
        self.key = key

    def api_key(self) -> str:
        return self.key

    def webhook_secret(self) -> str:
        raise AssertionError("a polling route never asks for a webhook secret")


@pytest.fixture(scope="module")
def images() -> Iterator[_ImageServer]:
    server = _ImageServer({"landscape.jpg": _picture(320, 180, "JPEG")})
    yield server
    server.close()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as client:
        yield client


def _simulator(cls: type[DashScopeSimulator] = DashScopeSimulator, **options: Any) -> DashScopeSimulator:
    options.setdefault("poll_rate_per_second", None)
    return cls(api_key=API_KEY, render_max_long_side=64, progress_delay=0.0, **options)


@pytest.fixture
def simulator() -> Iterator[DashScopeSimulator]:
    with _simulator() as running:
        yield running


def _provider(
    http: httpx.Client,
    settings: DashScopeProtocolSettings,
    key: str = API_KEY,
) -> DashScopeProvider:
    return DashScopeProvider(settings, lambda: http, Keys(key))


def _dashscope(simulator: DashScopeSimulator, http: httpx.Client, **settings: Any) -> DashScopeProvider:
    return _provider(http, DashScopeSettings(base_url=simulator.url, **settings))


def _request(image_url: str, **options: Any) -> SubmitRequest:
    return SubmitRequest(image_url=image_url, options=Options(**options))


def _poll(provider: DashScopeProvider, task_id: str) -> ProviderUpdate:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        update = provider.status(task_id)
        if update.state in TERMINAL:
            return update
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} did not finish in {WAIT_SECONDS} s")


def _mocked(
    answer: Callable[[httpx.Request], httpx.Response],
    settings: DashScopeProtocolSettings | None = None,
) -> tuple[DashScopeProvider, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    client = httpx.Client(transport=httpx.MockTransport(record))
    return _provider(client, settings or DashScopeSettings()), seen


# -- the happy path against the simulator ------------------------------------------------------


def test_a_task_is_submitted_and_polled_to_succeeded_with_its_video(
    simulator: DashScopeSimulator, http: httpx.Client, images: _ImageServer
) -> None:
    # Given the adapter pointed at the simulator
    provider = _dashscope(simulator, http)
    image_url = images.url("landscape.jpg")

    # When a task is submitted and polled
    task_id = provider.submit(
        _request(image_url, prompt="a horse runs", resolution="720P", duration=3, seed=7)
    )
    update = _poll(provider, task_id)

    # Then it succeeded with the simulator's video, which is there to download
    assert update == ProviderUpdate(
        provider_task_id=task_id,
        state=ProviderState.SUCCEEDED,
        raw_status="SUCCEEDED",
        video_url=f"{simulator.url}/videos/{task_id}.mp4",
    )
    assert http.get(update.video_url or "").headers["content-type"] == "video/mp4"

    # And the simulator accepted the one create call (it refuses one without X-DashScope-Async)
    # with the documented body: first_frame media, no watermark, the seed
    state = simulator.state()
    assert (state["counters"]["create_requests"], state["counters"]["tasks_created"]) == (1, 1)
    [record] = state["create_requests"]
    assert (record["response_status"], record["task_id"]) == (200, task_id)
    assert record["body"] == {
        "model": "happyhorse-1.0-i2v",
        "input": {"prompt": "a horse runs", "media": [{"type": "first_frame", "url": image_url}]},
        "parameters": {"resolution": "720P", "duration": 3, "seed": 7, "watermark": False},
    }
    assert state["tasks"][0]["request"]["watermark"] is False


def test_the_async_header_and_the_bearer_key_are_sent() -> None:
    provider, seen = _mocked(
        lambda _: httpx.Response(200, json={"output": {"task_id": "t-1", "task_status": "PENDING"}})
    )
    assert provider.submit(_request("https://s3.test/x.png")) == "t-1"
    [request] = seen
    assert request.method == "POST"
    assert str(request.url) == (
        "https://dashscope-intl.aliyuncs.com/api/v1/services/aigc/video-generation/video-synthesis"
    )
    assert request.headers["x-dashscope-async"] == "enable"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    # No prompt, no seed: neither is sent
    assert json.loads(request.content) == {
        "model": "happyhorse-1.0-i2v",
        "input": {"media": [{"type": "first_frame", "url": "https://s3.test/x.png"}]},
        "parameters": {"resolution": "1080P", "duration": 5, "watermark": False},
    }


def test_model_1_1_is_picked_by_the_options(
    simulator: DashScopeSimulator, http: httpx.Client, images: _ImageServer
) -> None:
    provider = _dashscope(simulator, http)
    task_id = provider.submit(_request(images.url("landscape.jpg"), duration=3, model="1.1"))
    task = simulator.task(task_id)
    assert task is not None and task["model"] == "happyhorse-1.1-i2v"
    assert simulator.state()["create_requests"][0]["body"]["model"] == "happyhorse-1.1-i2v"


def test_a_version_the_route_does_not_offer_is_refused_before_any_call(
    simulator: DashScopeSimulator, http: httpx.Client
) -> None:
    provider = _dashscope(simulator, http, model_1_1="")
    with pytest.raises(ProviderRejected) as raised:
        provider.submit(_request("https://s3.test/x.png", model="1.1"))
    assert raised.value.code == "UNSUPPORTED_OPTION"
    assert "HappyHorse 1.1" in raised.value.message
    assert simulator.state()["counters"]["create_requests"] == 0


# -- failures, unknown ids, refusals -----------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "fault", "code", "words"),
    [
        ("landscape.jpg", True, "PROVIDER_INTERNAL_ERROR", "simulated failure (fault injection)"),
        ("missing.png", False, "PROVIDER_INVALID_URL", "image could not be fetched: HTTP 404"),
    ],
)
def test_a_failed_task_carries_the_providers_code_and_message(
    simulator: DashScopeSimulator,
    http: httpx.Client,
    images: _ImageServer,
    image: str,
    fault: bool,
    code: str,
    words: str,
) -> None:
    if fault:
        simulator.set_faults(fail_tasks=1)
    provider = _dashscope(simulator, http)
    update = _poll(provider, provider.submit(_request(images.url(image), duration=3)))
    assert (update.state, update.raw_status, update.video_url) == (ProviderState.FAILED, "FAILED", None)
    assert update.error is not None
    assert (update.error.code, update.error.message) == (code, words)


def test_an_unknown_task_id_is_gone(simulator: DashScopeSimulator, http: httpx.Client) -> None:
    task_id = str(uuid.uuid4())
    update = _dashscope(simulator, http).status(task_id)
    assert update == ProviderUpdate(provider_task_id=task_id, state=ProviderState.GONE, raw_status="UNKNOWN")


def test_an_expired_task_id_is_gone(http: httpx.Client, images: _ImageServer) -> None:
    with _simulator(task_ttl_seconds=0.5) as simulator:
        provider = _dashscope(simulator, http)
        task_id = provider.submit(_request(images.url("landscape.jpg"), duration=3))
        assert _poll(provider, task_id).state is ProviderState.SUCCEEDED
        time.sleep(0.6)
        assert provider.status(task_id).state is ProviderState.GONE


def test_a_429_is_retried_later_after_its_retry_after(
    simulator: DashScopeSimulator, http: httpx.Client, images: _ImageServer
) -> None:
    simulator.set_faults(submit_errors=[429], retry_after=3)
    provider = _dashscope(simulator, http)
    with pytest.raises(ProviderUnavailable) as raised:
        provider.submit(_request(images.url("landscape.jpg")))
    assert raised.value.retry_after == 3.0
    assert "Model Studio (DashScope) answered 429: Requests rate limit exceeded" in raised.value.message
    # The next attempt goes through
    assert provider.submit(_request(images.url("landscape.jpg"), duration=3))


def test_polling_over_the_account_rate_is_retried_later(http: httpx.Client) -> None:
    with _simulator(poll_rate_per_second=2) as simulator:
        provider = _dashscope(simulator, http)
        for _ in range(2):
            provider.status(str(uuid.uuid4()))
        with pytest.raises(ProviderUnavailable, match="answered 429"):
            provider.status(str(uuid.uuid4()))


@pytest.mark.parametrize(
    ("request_", "sim_options", "words"),
    [
        (
            _request("ftp://files.test/x.png"),
            {},
            "input.media[0].url must be an http(s) or data: URL",
        ),
        (
            _request("https://s3.test/x.png", model="1.1"),
            {"models": ("happyhorse-1.0-i2v",)},
            "Model not exist: happyhorse-1.1-i2v",
        ),
    ],
)
def test_an_invalid_parameter_is_rejected_with_the_providers_words(
    http: httpx.Client, request_: SubmitRequest, sim_options: dict[str, Any], words: str
) -> None:
    with _simulator(**sim_options) as simulator:
        with pytest.raises(ProviderRejected) as raised:
            _dashscope(simulator, http).submit(request_)
        assert raised.value.code == "PROVIDER_HTTP_400"
        assert raised.value.message == f"Model Studio (DashScope) answered 400: {words}"
        assert simulator.state()["counters"]["tasks_created"] == 0


def test_a_wrong_key_is_rejected_without_the_key_in_the_message(
    simulator: DashScopeSimulator, http: httpx.Client
) -> None:
    provider = _provider(http, DashScopeSettings(base_url=simulator.url), key="sk-wrong-secret")
    with pytest.raises(ProviderRejected) as raised:
        provider.status(str(uuid.uuid4()))
    assert raised.value.code == "PROVIDER_HTTP_401"
    assert "Invalid API-key" in raised.value.message
    assert "sk-wrong-secret" not in raised.value.message


# -- the status table --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ({"task_status": "PENDING"}, (ProviderState.PENDING, None, None)),
        ({"task_status": "RUNNING"}, (ProviderState.RUNNING, None, None)),
        ({"task_status": "SUCCEEDED"}, (ProviderState.SUCCEEDED, None, None)),
        (
            {"task_status": "SUCCEEDED", "video_url": "https://oss.test/v.mp4"},
            (ProviderState.SUCCEEDED, "https://oss.test/v.mp4", None),
        ),
        (
            {
                "task_status": "FAILED",
                "code": "DataInspectionFailed",
                "message": "Input data may contain inappropriate content.",
            },
            (
                ProviderState.FAILED,
                None,
                ("PROVIDER_DATA_INSPECTION_FAILED", "Input data may contain inappropriate content."),
            ),
        ),
        (
            {"task_status": "FAILED"},
            (ProviderState.FAILED, None, ("PROVIDER_FAILED", "the provider reported the task FAILED")),
        ),
        (
            {"task_status": "CANCELED"},
            (ProviderState.FAILED, None, ("PROVIDER_CANCELED", "the provider reported the task CANCELED")),
        ),
        ({"task_status": "UNKNOWN"}, (ProviderState.GONE, None, None)),
        ({"task_status": "SUSPENDED"}, (ProviderState.PENDING, None, None)),
    ],
)
def test_every_status_maps_through_the_one_table(
    output: dict[str, str], expected: tuple[ProviderState, str | None, tuple[str, str] | None]
) -> None:
    provider, seen = _mocked(lambda _: httpx.Response(200, json={"request_id": "r", "output": output}))
    update = provider.status("task/1")
    assert str(seen[0].url) == "https://dashscope-intl.aliyuncs.com/api/v1/tasks/task%2F1"
    error = (update.error.code, update.error.message) if update.error else None
    assert (update.state, update.video_url, error) == expected
    assert (update.provider_task_id, update.raw_status) == ("task/1", output["task_status"])


def test_provider_codes_take_our_codes_shape() -> None:
    assert error_code("InvalidParameter") == "PROVIDER_INVALID_PARAMETER"
    assert error_code("Throttling.RateQuota") == "PROVIDER_THROTTLING_RATE_QUOTA"
    assert error_code("InternalError") == "PROVIDER_INTERNAL_ERROR"


@pytest.mark.parametrize(
    "body",
    [
        {"request_id": "r"},
        {"output": {"task_id": "t"}},
        {"output": "PENDING"},
        ["output"],
        {"output": {"task_status": 5}},
    ],
)
def test_a_200_that_is_not_a_task_is_retried_later(body: object) -> None:
    provider, _ = _mocked(lambda _: httpx.Response(200, json=body))
    with pytest.raises(ProviderUnavailable, match="unexpected body"):
        provider.status("t")


def test_a_create_answer_without_a_task_id_is_retried_later() -> None:
    provider, _ = _mocked(lambda _: httpx.Response(200, json={"output": {"task_status": "PENDING"}}))
    with pytest.raises(ProviderUnavailable, match="no task id"):
        provider.submit(_request("https://s3.test/x.png"))


def test_webhooks_are_refused() -> None:
    provider, seen = _mocked(lambda _: httpx.Response(500))
    assert provider.supports_webhooks is False
    with pytest.raises(Unauthorized, match="no webhooks"):
        provider.parse_callback({}, b'{"output": {"task_id": "t", "task_status": "SUCCEEDED"}}')
    assert seen == []


# -- cancel --------------------------------------------------------------------------------------


def test_cancel_posts_to_the_task_and_is_true_when_accepted() -> None:
    provider, seen = _mocked(lambda _: httpx.Response(200, json={"request_id": "r"}))
    assert provider.cancel("task/1") is True
    [request] = seen
    assert request.method == "POST"
    assert str(request.url) == "https://dashscope-intl.aliyuncs.com/api/v1/tasks/task%2F1/cancel"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"


@pytest.mark.parametrize("status", [400, 404, 409])
def test_cancel_is_false_when_the_task_can_no_longer_be_canceled(status: int) -> None:
    body = {
        "request_id": "r",
        "code": "UnsupportedOperation",
        "message": "only PENDING tasks can be canceled",
    }
    provider, _ = _mocked(lambda _: httpx.Response(status, json=body))
    assert provider.cancel("t") is False


def test_cancel_on_the_simulator_which_has_no_cancel_call_is_false(
    simulator: DashScopeSimulator, http: httpx.Client, images: _ImageServer
) -> None:
    provider = _dashscope(simulator, http)
    task_id = provider.submit(_request(images.url("landscape.jpg"), duration=3))
    assert provider.cancel(task_id) is False
    assert _poll(provider, task_id).state is ProviderState.SUCCEEDED


def test_a_transient_failure_to_cancel_is_retried_later() -> None:
    provider, _ = _mocked(
        lambda _: httpx.Response(503, json={"message": "busy"}, headers={"retry-after": "4"})
    )
    with pytest.raises(ProviderUnavailable) as raised:
        provider.cancel("t")
    assert raised.value.retry_after == 4.0


# -- settings: hosts, environment, rules ---------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "workspace", "base"),
    [
        ("ap-southeast-1", "ws-1", "https://ws-1.ap-southeast-1.maas.aliyuncs.com"),
        ("ap-southeast-1", "", "https://dashscope-intl.aliyuncs.com"),
        ("cn-beijing", "ws_2", "https://ws_2.cn-beijing.maas.aliyuncs.com"),
        ("cn-beijing", "", "https://dashscope.aliyuncs.com"),
        ("eu-central-1", "ws3", "https://ws3.eu-central-1.maas.aliyuncs.com"),
        ("cn-hongkong", "ws4", "https://ws4.cn-hongkong.maas.aliyuncs.com"),
        ("us-east-1", "", "https://dashscope-us.aliyuncs.com"),
        ("us-east-1", "ws5", "https://dashscope-us.aliyuncs.com"),  # Virginia has one host
        (" CN-Beijing ", "", "https://dashscope.aliyuncs.com"),
    ],
)
def test_the_base_url_follows_region_and_workspace(region: str, workspace: str, base: str) -> None:
    settings = DashScopeSettings(region=region, workspace_id=workspace)
    assert settings.api_base_url == base
    assert settings.create_url == f"{base}/api/v1/services/aigc/video-generation/video-synthesis"
    assert settings.tasks_url == f"{base}/api/v1/tasks"


def test_the_default_is_singapore_on_the_shared_host() -> None:
    assert DashScopeSettings().api_base_url == "https://dashscope-intl.aliyuncs.com"


def test_an_explicit_base_url_wins_over_region_and_workspace() -> None:
    settings = DashScopeSettings(base_url="https://gateway.test/", region="ap-northeast-1", workspace_id="w")
    assert settings.create_url == "https://gateway.test/api/v1/services/aigc/video-generation/video-synthesis"


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        (
            {"DASHSCOPE_REGION": "mars-1"},
            "DASHSCOPE_REGION: Value error, unknown region 'mars-1'; the regions are: ",
        ),
        (
            {"DASHSCOPE_REGION": "eu-central-1"},
            "DASHSCOPE_WORKSPACE_ID: Value error, region eu-central-1 has only workspace hosts",
        ),
        (
            {"DASHSCOPE_REGION": "cn-hongkong"},
            "DASHSCOPE_WORKSPACE_ID: Value error, region cn-hongkong has only workspace hosts",
        ),
        (
            {"DASHSCOPE_WORKSPACE_ID": "evil.test/x"},
            "DASHSCOPE_WORKSPACE_ID: Value error, a workspace id is letters",
        ),
    ],
)
def test_a_region_or_workspace_that_names_no_host_is_a_clear_config_error(
    environ: dict[str, str], problem: str
) -> None:
    with pytest.raises(RouteConfigError) as raised:
        DASHSCOPE_ROUTE.load_settings(environ)
    assert problem in raised.value.message
    if "unknown region" in problem:
        assert "ap-southeast-1, cn-beijing, eu-central-1, cn-hongkong, us-east-1" in raised.value.message


def test_settings_load_from_the_environment_and_route_settings_pairs() -> None:
    environ = {
        "DASHSCOPE_REGION": "cn-beijing",
        "DASHSCOPE_WORKSPACE_ID": "ws-9",
        "DASHSCOPE_POLL_INTERVAL_SECONDS": "20",
        "SECRET_PREFIX": "hh/",
        "ROUTE_SETTINGS": (
            "DASHSCOPE_PRICE_720P=0.5,DASHSCOPE_VIDEO_ALLOWED_HOSTS=.oss-cn-beijing.aliyuncs.com,.cdn.test,"
            "APIYI_TASK_PATH_PREFIX=/api/v1,APIYI_BASE_URL=https://apiyi.test"
        ),
    }

    dashscope = DASHSCOPE_ROUTE.load_settings(environ)
    assert isinstance(dashscope, DashScopeSettings)
    assert dashscope.api_base_url == "https://ws-9.cn-beijing.maas.aliyuncs.com"
    assert (dashscope.poll_interval_seconds, dashscope.price_720p) == (20, 0.5)
    assert dashscope.video_allowed_hosts == (".oss-cn-beijing.aliyuncs.com", ".cdn.test")
    assert dashscope.api_key_secret_name == "hh/dashscope/api-key"

    apiyi = APIYI_ROUTE.load_settings(environ)
    assert isinstance(apiyi, ApiyiSettings)
    assert apiyi.create_url == "https://apiyi.test/wan/api/v1/services/aigc/video-generation/video-synthesis"
    assert apiyi.tasks_url == "https://apiyi.test/api/v1/tasks"
    assert (apiyi.price_720p, apiyi.api_key_secret_name) == (None, "hh/apiyi/api-key")


def test_the_documented_defaults() -> None:
    settings = DashScopeSettings()
    assert (settings.model_id("1.0"), settings.model_id("1.1")) == (
        "happyhorse-1.0-i2v",
        "happyhorse-1.1-i2v",
    )
    assert settings.image_formats == ("jpeg", "png", "webp")  # BMP: unknown, so refused
    assert (settings.image_max_bytes, settings.prompt_max_chars) == (10 * 1024 * 1024, 5000)
    assert (settings.duration_min, settings.duration_max, settings.resolutions) == (3, 15, ("720P", "1080P"))
    assert (settings.first_poll_seconds, settings.poll_interval_seconds) == (60, 15)
    assert (settings.poll_rate_per_second, settings.result_ttl_seconds) == (20.0, 24 * 3600)
    assert settings.video_allowed_hosts == (".aliyuncs.com",)
    assert settings.estimate_cost_usd(Options(resolution="1080P", duration=5)) == 1.2
    assert (ApiyiSettings().duration_min, ApiyiSettings().estimate_cost_usd(Options())) == (2, None)


@pytest.mark.parametrize("field", ["price_720p", "duration_min", "poll_interval_seconds", "image_max_bytes"])
def test_restated_defaults_keep_the_bases_bounds(field: str) -> None:
    with pytest.raises(RouteConfigError, match=f"DASHSCOPE_{field.upper()}"):
        DASHSCOPE_ROUTE.load_settings({f"DASHSCOPE_{field.upper()}": "-1"})


def test_the_registry_serves_both_routes_as_polling_routes() -> None:
    assert importlib.import_module(ROUTES["dashscope"]).ROUTE is DASHSCOPE_ROUTE
    assert importlib.import_module(ROUTES["apiyi"]).ROUTE is APIYI_ROUTE
    assert (DASHSCOPE_ROUTE.webhooks, DASHSCOPE_ROUTE.can_cancel) == (False, True)
    assert (APIYI_ROUTE.webhooks, APIYI_ROUTE.can_cancel) == (False, False)
    assert DASHSCOPE_ROUTE.factory is APIYI_ROUTE.factory is DashScopeProvider


# -- APIYI: the same adapter under its prefix --------------------------------------------------


def test_apiyi_runs_a_task_through_its_prefix(http: httpx.Client, images: _ImageServer) -> None:
    with _simulator(ApiyiSimulator) as simulator:
        provider = APIYI_ROUTE.factory(ApiyiSettings(base_url=simulator.url), lambda: http, Keys())
        assert provider.name == "apiyi"

        task_id = provider.submit(_request(images.url("landscape.jpg"), duration=3))
        update = provider.status(task_id)
        while update.state not in TERMINAL:
            time.sleep(0.05)
            update = provider.status(task_id)

        assert (update.state, update.video_url) == (
            ProviderState.SUCCEEDED,
            f"{simulator.url}/videos/{task_id}.mp4",
        )
        assert simulator.state()["create_requests"][0]["body"]["parameters"]["watermark"] is False
        assert simulator.logger.name == "local.simulators.apiyi"


def test_apiyi_errors_name_apiyi(http: httpx.Client) -> None:
    with _simulator(ApiyiSimulator) as simulator:
        simulator.set_faults(submit_errors=[503])
        provider = _provider(http, ApiyiSettings(base_url=simulator.url))
        with pytest.raises(ProviderUnavailable, match=r"^APIYI answered 503: The service is unavailable"):
            provider.submit(_request("https://s3.test/x.png"))


def test_apiyis_task_path_prefix_is_a_setting(http: httpx.Client, images: _ImageServer) -> None:
    with _simulator(ApiyiSimulator, task_path_prefix="/api/v1") as simulator:
        moved = _provider(http, ApiyiSettings(base_url=simulator.url, task_path_prefix="/api/v1"))
        task_id = moved.submit(_request(images.url("landscape.jpg"), duration=3))
        simulator.wait_for_status(task_id)
        assert moved.status(task_id).state is ProviderState.SUCCEEDED

        # The default poll path is not where this simulator answers
        with pytest.raises(ProviderRejected) as raised:
            _provider(http, ApiyiSettings(base_url=simulator.url)).status(task_id)
        assert raised.value.code == "PROVIDER_HTTP_404"


def test_apiyi_does_not_call_cancel() -> None:
    provider, seen = _mocked(lambda _: httpx.Response(200, json={}), ApiyiSettings())
    assert provider.cancel("t") is False
    assert seen == []
