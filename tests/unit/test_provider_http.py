"""The HTTP handling every provider route shares (i2v/providers/http.py).

httpx's MockTransport stands in for the provider: these are unit tests of one function;
the routes' simulators on loopback exercise it for real (tests/integration).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from i2v.errors import ProviderRejected, ProviderUnavailable
from i2v.providers.http import call_json, error_words, retry_after


def client(answer: Callable[[httpx.Request], httpx.Response]) -> Callable[[], httpx.Client]:
    made = httpx.Client(transport=httpx.MockTransport(answer))
    return lambda: made


def call(answer: Callable[[httpx.Request], httpx.Response]) -> object:
    return call_json(
        client(answer),
        "POST",
        "https://api.example.com/v1/tasks",
        route="Example",
        headers={"k": "v"},
        body={"a": 1},
    )


def test_a_json_answer_is_returned_and_the_request_is_as_given() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": {"task_id": "t"}})

    assert call(answer) == {"data": {"task_id": "t"}}
    [request] = seen
    assert request.headers["k"] == "v" and json.loads(request.content) == {"a": 1}


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried_later_with_retry_after(status: int) -> None:
    with pytest.raises(ProviderUnavailable) as raised:
        call(lambda _: httpx.Response(status, json={"message": "busy"}, headers={"retry-after": "7"}))
    assert raised.value.retry_after == 7.0
    assert f"Example answered {status}: busy" in raised.value.message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {
                "message": "Your request parameters didn't validate.",
                "invalid_params": [{"name": "prompt", "reason": "too long"}],
            },
            "Your request parameters didn't validate.; prompt: too long",
        ),
        ({"code": "InvalidParameter", "message": "duration must be 3..15"}, "duration must be 3..15"),
        ({"detail": "image_url is not reachable"}, "image_url is not reachable"),
        ({"error": {"message": "insufficient credits"}}, "insufficient credits"),
        (
            {
                "detail": [
                    {
                        "loc": ["body", "image_url"],
                        "msg": "Input should be a valid URL",
                        "type": "url_parsing",
                    },
                    {"loc": ["body", "options", 0, "seed"], "msg": "Input should be >= 0", "type": "ge"},
                    {"loc": ["query", "fal_webhook"], "msg": "Field required", "type": "missing"},
                    {"loc": ["body"], "msg": "Input should be a valid dictionary", "type": "dict_type"},
                    {"msg": "Something else"},
                ]
            },
            "image_url: Input should be a valid URL; options.0.seed: Input should be >= 0; "
            "fal_webhook: Field required; body: Input should be a valid dictionary; Something else",
        ),
        (
            {"message": "Validation failed", "detail": [{"loc": ["body", "prompt"], "msg": "Too long"}]},
            "Validation failed; prompt: Too long",
        ),
    ],
    ids=[
        "invalid-params",
        "code-and-message",
        "detail-text",
        "nested-error",
        "detail-list",
        "message-and-list",
    ],
)
def test_other_errors_fail_the_task_with_the_providers_own_words(
    body: dict[str, object], expected: str
) -> None:
    with pytest.raises(ProviderRejected) as raised:
        call(lambda _: httpx.Response(400, json=body))
    assert raised.value.code == "PROVIDER_HTTP_400"
    assert raised.value.message == f"Example answered 400: {expected}"


def test_error_words_read_a_body_on_its_own_and_keep_1000_characters() -> None:
    # A webhook's error payload is such a body, without a response around it
    assert error_words({"detail": [{"loc": ["body", "image_url"], "msg": "image is too small"}]}) == (
        "image_url: image is too small"
    )
    assert error_words(None) == "" and error_words(["not", "an", "object"]) == ""
    assert error_words({"detail": "not a list", "seed": 3}) == "not a list"
    many = {"detail": [{"loc": ["body", f"field{i}"], "msg": "x" * 50} for i in range(40)]}
    assert len(error_words(many)) == 1000


def test_an_empty_detail_list_falls_back_to_the_reason_phrase() -> None:
    with pytest.raises(ProviderRejected) as raised:
        call(lambda _: httpx.Response(422, json={"detail": []}))
    assert raised.value.message == "Example answered 422: Unprocessable Entity"


def test_an_error_without_a_json_body_says_what_came() -> None:
    with pytest.raises(ProviderRejected) as raised:
        call(lambda _: httpx.Response(401, text="Invalid API key"))
    assert raised.value.message == "Example answered 401: Invalid API key"


def test_no_answer_and_a_non_json_success_are_retried_later() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def reset(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("reset", request=request)

    for answer in (timeout, reset, lambda _: httpx.Response(200, text="<html>proxy</html>")):
        with pytest.raises(ProviderUnavailable):
            call(answer)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert retry_after("12") == 12.0
    assert retry_after("-3") == 0.0
    assert retry_after(later, now=now.timestamp) == pytest.approx(90.0)
    assert retry_after("soon") is None
    assert retry_after(None) is None
