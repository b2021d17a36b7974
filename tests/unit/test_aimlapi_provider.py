"""The AI/ML API adapter against its simulator over real loopback HTTP: the adapter as the
pipeline builds it (ROUTE.load_settings, ROUTE.factory), an httpx client, the simulator and
an image server, each a real server on 127.0.0.1."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from typing import Any

import av
import httpx
import pytest

from i2v.domain import Options
from i2v.errors import ProviderRejected, ProviderUnavailable, Unauthorized
from i2v.providers.aimlapi import ROUTE, AimlapiGeneration, AimlapiSettings, to_update
from i2v.providers.base import Provider, ProviderState, ProviderUpdate, SubmitRequest
from i2v.providers.route import RouteConfigError
from local.simulators.aimlapi import AimlapiSimulator
from tests.unit.test_magnific_simulator import _ImageServer, _picture

API_KEY = "aiml-provider-test-key"
WAIT_SECONDS = 30.0


class Keys:
    def __init__(self, key: str = API_KEY) -> None:
        self.key = key

    def api_key(self) -> str:
        return self.key

    def webhook_secret(self) -> str:
        raise AssertionError("a polling route never needs a webhook secret")


@pytest.fixture(scope="module")
def images() -> Iterator[_ImageServer]:
    server = _ImageServer(
        {"landscape.jpg": _picture(800, 450, "JPEG"), "small.png": _picture(200, 200, "PNG")}
    )
    yield server
    server.close()


@pytest.fixture
def simulator() -> Iterator[AimlapiSimulator]:
    with AimlapiSimulator(api_key=API_KEY, render_max_long_side=256, progress_delay=0.0) as running:
        yield running


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as client:
        yield client


def _provider(simulator: AimlapiSimulator, http: httpx.Client, *, key: str = API_KEY, **env: str) -> Provider:
    settings = ROUTE.load_settings({"AIMLAPI_BASE_URL": simulator.url, **env})
    return ROUTE.factory(settings, lambda: http, Keys(key))


def _request(image_url: str, **options: Any) -> SubmitRequest:
    return SubmitRequest(image_url=image_url, options=Options(**options))


def _wait(provider: Provider, task_id: str) -> list[ProviderUpdate]:
    """Every status the adapter reads until a terminal one."""
    updates: list[ProviderUpdate] = []
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        updates.append(provider.status(task_id))
        if updates[-1].state not in (ProviderState.PENDING, ProviderState.RUNNING):
            return updates
        time.sleep(0.02)
    raise AssertionError(f"task {task_id} did not finish in {WAIT_SECONDS} s")


# -- the happy path ------------------------------------------------------------------------


def test_a_task_is_submitted_and_polled_to_a_video_url_that_serves_a_real_mp4(
    simulator: AimlapiSimulator, http: httpx.Client, images: _ImageServer
) -> None:
    # Given the adapter the registry builds, pointed at the simulator
    provider = _provider(simulator, http)
    assert (provider.name, provider.supports_webhooks) == ("aimlapi", False)

    # When it submits a task and polls it
    task_id = provider.submit(
        _request(images.url("landscape.jpg"), prompt="a horse", resolution="720P", duration=3)
    )
    updates = _wait(provider, task_id)

    # Then it reads the documented statuses in order, ending with the video's URL
    states = [update.state for update in updates]
    assert states == sorted(
        states, key=[ProviderState.PENDING, ProviderState.RUNNING, ProviderState.SUCCEEDED].index
    )
    final = updates[-1]
    assert final == ProviderUpdate(
        provider_task_id=task_id,
        state=ProviderState.SUCCEEDED,
        raw_status="completed",
        video_url=f"{simulator.url}/videos/{task_id}.mp4",
    )

    # And that URL serves an MP4 of the requested duration
    assert final.video_url is not None
    video = http.get(final.video_url)
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(video.content), mode="r") as container:
        assert sum(1 for _ in container.decode(container.streams.video[0])) == 3 * 24


# -- options mapping -----------------------------------------------------------------------


def test_the_options_become_the_documented_body(
    simulator: AimlapiSimulator, http: httpx.Client, images: _ImageServer
) -> None:
    provider = _provider(simulator, http)
    image = images.url("landscape.jpg")
    provider.submit(_request(image, prompt="slow pan", resolution="720P", duration=4, seed=7))
    provider.submit(_request(image, model="1.1"))

    chosen, defaults = (record["body"] for record in simulator.state()["create_requests"])
    assert chosen == {
        "model": "alibaba/happyhorse-1-0",
        "prompt": "slow pan",
        "image_url": image,
        "resolution": "720p",
        "duration": 4,
        "seed": 7,
    }
    # The schema requires a prompt even for image-to-video: an empty one is sent
    assert defaults == {
        "model": "alibaba/happyhorse-1.1",
        "prompt": "",
        "image_url": image,
        "resolution": "1080p",
        "duration": 5,
    }


def test_a_version_the_route_does_not_offer_is_refused_before_any_call(
    simulator: AimlapiSimulator, http: httpx.Client, images: _ImageServer
) -> None:
    provider = _provider(simulator, http, AIMLAPI_MODEL_1_1="")
    with pytest.raises(ProviderRejected) as refused:
        provider.submit(_request(images.url("landscape.jpg"), model="1.1"))
    assert refused.value.code == "UNSUPPORTED_OPTION"
    assert simulator.state()["counters"]["create_requests"] == 0


# -- failures ------------------------------------------------------------------------------


def test_a_failed_generation_is_failed_with_the_providers_reason(
    simulator: AimlapiSimulator, http: httpx.Client, images: _ImageServer
) -> None:
    provider = _provider(simulator, http)
    simulator.set_faults(fail_tasks=1)
    injected = _wait(provider, provider.submit(_request(images.url("landscape.jpg"), duration=3)))[-1]
    refused = _wait(provider, provider.submit(_request(images.url("small.png"), duration=3)))[-1]

    for update in (injected, refused):
        assert (update.state, update.raw_status, update.video_url) == (ProviderState.FAILED, "error", None)
        assert update.error is not None and update.error.code == "PROVIDER_FAILED"
    assert injected.error is not None
    assert "GenerationError: simulated failure (fault injection)" in injected.error.message
    assert refused.error is not None
    assert "InvalidImage" in refused.error.message and "at least 300 px" in refused.error.message


def test_an_unknown_or_expired_id_is_gone(images: _ImageServer, http: httpx.Client) -> None:
    with AimlapiSimulator(api_key=API_KEY, render_max_long_side=64, generation_ttl_seconds=0.5) as simulator:
        provider = _provider(simulator, http)
        unknown = str(uuid.uuid4())
        assert provider.status(unknown) == ProviderUpdate(
            provider_task_id=unknown, state=ProviderState.GONE, raw_status="HTTP 404"
        )
        task_id = provider.submit(_request(images.url("landscape.jpg"), duration=3))
        assert provider.status(task_id).state in (ProviderState.PENDING, ProviderState.RUNNING)
        simulator.wait_for_status(task_id)
        time.sleep(0.6)
        assert provider.status(task_id).state is ProviderState.GONE


def test_429_with_retry_after_is_unavailable_with_the_delay(
    simulator: AimlapiSimulator, http: httpx.Client, images: _ImageServer
) -> None:
    simulator.set_faults(submit_errors=[429], retry_after=7)
    with pytest.raises(ProviderUnavailable) as throttled:
        _provider(simulator, http).submit(_request(images.url("landscape.jpg")))
    assert throttled.value.retry_after == 7
    assert "Too Many Requests" in throttled.value.message


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_unavailable(
    simulator: AimlapiSimulator, http: httpx.Client, images: _ImageServer, status: int
) -> None:
    simulator.set_faults(submit_errors=[status])
    with pytest.raises(ProviderUnavailable) as unavailable:
        _provider(simulator, http).submit(_request(images.url("landscape.jpg")))
    assert str(status) in unavailable.value.message and unavailable.value.retry_after is None


def test_a_throttled_status_read_is_unavailable(http: httpx.Client) -> None:
    with AimlapiSimulator(api_key=API_KEY, poll_rate_per_second=1) as simulator:
        provider = _provider(simulator, http)
        assert provider.status(str(uuid.uuid4())).state is ProviderState.GONE
        with pytest.raises(ProviderUnavailable, match="429"):
            provider.status(str(uuid.uuid4()))


def test_400_is_rejected_with_the_providers_words(http: httpx.Client, images: _ImageServer) -> None:
    # Given a provider that does not know the 1.1 model id this deployment is configured with
    with (
        AimlapiSimulator(api_key=API_KEY, models=("alibaba/happyhorse-1-0",)) as simulator,
        pytest.raises(ProviderRejected) as refused,
    ):
        # When a 1.1 task is submitted
        _provider(simulator, http).submit(_request(images.url("landscape.jpg"), model="1.1"))

    # Then the task fails with the provider's own validation message
    assert refused.value.code == "PROVIDER_HTTP_400"
    assert "Body validation error!" in refused.value.message
    assert "Invalid enum value" in refused.value.message and "alibaba/happyhorse-1.1" in refused.value.message


@pytest.mark.parametrize(
    ("key", "fault", "status", "words"),
    [
        ("wrong-key", None, 401, "requires a valid API key"),
        (API_KEY, 403, 403, "run out of credits"),
    ],
)
def test_a_bad_key_or_no_credits_is_rejected_without_leaking_the_key(
    simulator: AimlapiSimulator,
    http: httpx.Client,
    images: _ImageServer,
    key: str,
    fault: int | None,
    status: int,
    words: str,
) -> None:
    if fault:
        simulator.set_faults(submit_errors=[fault])
    with pytest.raises(ProviderRejected) as refused:
        _provider(simulator, http, key=key).submit(_request(images.url("landscape.jpg")))
    assert refused.value.code == f"PROVIDER_HTTP_{status}" and words in refused.value.message
    assert key not in refused.value.message


def test_an_answer_that_is_not_a_generation_is_unavailable(http: httpx.Client) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"generation_id": "g-1"})

    with httpx.Client(transport=httpx.MockTransport(answer)) as odd:
        provider = ROUTE.factory(AimlapiSettings(), lambda: odd, Keys())
        with pytest.raises(ProviderUnavailable, match="unexpected body"):
            provider.submit(_request("https://images.example/a.png"))


# -- the status table ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("queued", ProviderState.PENDING),
        ("generating", ProviderState.RUNNING),
        ("completed", ProviderState.SUCCEEDED),
        ("error", ProviderState.FAILED),
        ("COMPLETED", ProviderState.SUCCEEDED),
        ("dreaming", ProviderState.PENDING),  # unknown values stay non-terminal
    ],
)
def test_statuses_map_through_the_one_table(raw: str, state: ProviderState) -> None:
    update = to_update("g-1", AimlapiGeneration(id="g-1", status=raw))
    assert (update.state, update.raw_status) == (state, raw)


def test_an_error_without_a_reason_says_so() -> None:
    update = to_update("g-1", AimlapiGeneration(id="g-1", status="error", error=None))
    assert update.error is not None and update.error.message.endswith("no reason given")


# -- the route entry and its settings ---------------------------------------------------------------


def test_settings_come_from_the_environment_and_route_settings() -> None:
    settings = ROUTE.load_settings(
        {
            "AIMLAPI_BASE_URL": "https://aiml.example",
            "ROUTE_SETTINGS": "AIMLAPI_PRICE_720P=0.1,AIMLAPI_MODEL_1_1=,AIMLAPI_POLL_RATE_PER_SECOND=0.5",
            "SECRET_PREFIX": "hh/",
            "MAGNIFIC_PRICE_720P": "9",
        }
    )
    assert isinstance(settings, AimlapiSettings)
    assert settings.base_url == "https://aiml.example"
    assert (settings.price_720p, settings.price_1080p) == (0.1, 0.312)
    assert settings.model_versions == ("1.0",)
    assert settings.poll_rate_per_second == 0.5
    assert settings.api_key_secret_name == "hh/aimlapi/api-key"
    assert settings.webhook_secret_name == ""
    assert settings.estimate_cost_usd(Options(resolution="720P", duration=5)) == 0.5
    assert settings.estimate_cost_usd(Options(resolution="1080P")) == 1.56  # the published 0.312 per s


def test_the_documented_defaults() -> None:
    settings = ROUTE.load_settings({})
    assert settings.base_url == "https://api.aimlapi.com"
    assert (settings.model_1_0, settings.model_1_1) == ("alibaba/happyhorse-1-0", "alibaba/happyhorse-1.1")
    assert (settings.duration_min, settings.duration_max, settings.resolutions) == (3, 15, ("720P", "1080P"))
    assert (settings.first_poll_seconds, settings.poll_interval_seconds) == (15, 15)
    assert settings.video_allowed_hosts == (".aimlapi.com",)
    assert (ROUTE.name, ROUTE.title, ROUTE.webhooks, ROUTE.can_cancel) == (
        "aimlapi",
        "AI/ML API",
        False,
        False,
    )


def test_a_misconfigured_setting_is_said_at_load() -> None:
    # The route's own defaults keep the shared bounds
    for name, value in [
        ("AIMLAPI_POLL_INTERVAL_SECONDS", "0"),
        ("AIMLAPI_FIRST_POLL_SECONDS", "901"),
        ("AIMLAPI_PRICE_720P", "-1"),
        ("AIMLAPI_IMAGE_MAX_BYTES", "0"),
        ("AIMLAPI_IMAGE_MAX_ASPECT_RATIO", "1"),
        ("AIMLAPI_POLL_RATE_PER_SECOND", "0"),
    ]:
        with pytest.raises(RouteConfigError, match=name):
            ROUTE.load_settings({name: value})


def test_callbacks_are_never_authentic_and_cancel_is_not_offered(http: httpx.Client) -> None:
    provider = ROUTE.factory(AimlapiSettings(), lambda: http, Keys())
    with pytest.raises(Unauthorized):
        provider.parse_callback({"content-type": "application/json"}, b'{"id": "g-1", "status": "completed"}')
    assert provider.cancel("g-1") is False
