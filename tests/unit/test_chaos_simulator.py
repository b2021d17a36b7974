"""The simulators' seeded faults (local/simulators/core/chaos.py) under the core's toy route,
over real loopback HTTP: what each fault does on the wire, and that a seed replays."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from local.simulators.core.chaos import FaultDraws, FaultLog, FaultRates, upload_key
from tests.unit.test_simulator_core import _Receiver, _ToySimulator, images

__all__ = ["images"]  # the fixture, shared with the core's tests


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver()
    yield server
    server.close()


def _toy(tmp_path: Path, **rates: Any) -> _ToySimulator:
    return _ToySimulator(
        render_max_long_side=64,
        progress_delay=0.0,
        fault_rates=FaultRates(**rates),
        fault_seed=3,
        fault_log=tmp_path / "faults.jsonl",
    )


def _kinds(tmp_path: Path) -> list[str]:
    path = tmp_path / "faults.jsonl"
    return [json.loads(line)["kind"] for line in path.read_text().splitlines()] if path.exists() else []


def _tasks_created(toy: _ToySimulator) -> int:
    return int(toy.state()["counters"]["tasks_created"])


def test_a_seed_replays_each_kind_and_one_rate_shifts_no_other_kind(tmp_path: Path) -> None:
    def draws(rates: FaultRates) -> list[bool]:
        faults = FaultDraws(rates, seed=11, route="toy", log=FaultLog(None))
        return [faults.hit("create_500") for _ in range(200)]

    first = draws(FaultRates(create_500=0.3))
    assert first == draws(FaultRates(create_500=0.3))
    assert first == draws(FaultRates(create_500=0.3, status_503=0.9, video_slow=0.5))
    assert 30 < sum(first) < 90


def test_a_rate_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="create_429"):
        FaultRates(create_429=1.5)


def test_a_drawn_create_error_answers_its_status_and_makes_no_task(tmp_path: Path, images: str) -> None:
    with _toy(tmp_path, create_429=1.0, retry_after=4) as toy:
        answer = httpx.post(f"{toy.url}/jobs", json={"image": f"{images}/a.png"})
        assert (answer.status_code, answer.headers["retry-after"]) == (429, "4")
        assert _tasks_created(toy) == 0
    assert _kinds(tmp_path) == ["create_429"]


def test_a_drawn_create_timeout_makes_the_task_and_never_answers(tmp_path: Path, images: str) -> None:
    with _toy(tmp_path, create_timeout=1.0, hang_seconds=1.0) as toy:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{toy.url}/jobs", json={"image": f"{images}/a.png"}, timeout=0.3)
        assert _tasks_created(toy) == 1  # paid for, though the caller never heard of it


def test_a_drawn_reset_closes_the_connection_before_any_task(tmp_path: Path, images: str) -> None:
    with _toy(tmp_path, status_reset=1.0, create_reset=1.0) as toy:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            httpx.post(f"{toy.url}/jobs", json={"image": f"{images}/a.png"})
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            httpx.get(f"{toy.url}/job", params={"id": "x"})
        assert _tasks_created(toy) == 0
    assert _kinds(tmp_path) == ["create_reset", "status_reset"]


def _finished_video(toy: _ToySimulator, images: str) -> str:
    task_id = httpx.post(f"{toy.url}/jobs", json={"image": f"{images}/a.png"}).json()["id"]
    assert toy.wait_for_status(task_id)["state"] == "done"
    return toy.video_url(task_id)


def test_a_truncated_video_announces_its_length_and_stops_halfway(tmp_path: Path, images: str) -> None:
    with _toy(tmp_path, video_truncated=1.0) as toy:
        url = _finished_video(toy, images)
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(url)


def test_an_oversized_video_claims_more_than_it_sends(tmp_path: Path, images: str) -> None:
    with _toy(tmp_path, video_oversized=1.0, oversized_bytes=5 * 1024**3) as toy:
        url = _finished_video(toy, images)
        with httpx.stream("GET", url) as answer:
            assert answer.headers["content-length"] == str(5 * 1024**3)


def test_a_mistyped_video_is_a_web_page(tmp_path: Path, images: str) -> None:
    with _toy(tmp_path, video_wrong_type=1.0) as toy:
        answer = httpx.get(_finished_video(toy, images))
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")


def test_a_slow_video_arrives_whole_but_late(tmp_path: Path, images: str) -> None:
    with _toy(tmp_path, video_slow=1.0, slow_seconds=1.0) as toy:
        url = _finished_video(toy, images)
        started = time.monotonic()
        answer = httpx.get(url)
        assert answer.content.startswith(b"\x00\x00") and time.monotonic() - started >= 0.9
        assert len(answer.content) == int(answer.headers["content-length"])


def test_webhooks_come_three_times_reordered_and_once_for_an_unknown_task(
    tmp_path: Path, images: str, receiver: _Receiver
) -> None:
    rates = {"webhook_triplicate": 1.0, "webhook_reorder": 1.0, "webhook_unknown_task": 1.0}
    with _toy(tmp_path, **rates) as toy:
        created = httpx.post(
            f"{toy.url}/jobs", params={"hook": receiver.url}, json={"image": f"{images}/a.png"}
        )
        toy.wait_for_status(created.json()["id"])
        deadline = time.monotonic() + 10
        while len(receiver.bodies) < 9 and time.monotonic() < deadline:
            time.sleep(0.05)
        records = toy.state()["webhooks"]
    # Then "running" is held back until "done" is out; each comes three times; the last
    # "done" goes to another task's URL, with another token
    assert [body["state"] for body in receiver.bodies] == ["done"] * 3 + ["running"] * 3 + ["done"] * 3
    unknown = {record["url"] for record in records[-3:]}
    assert len(unknown) == 1 and unknown != {receiver.url} and "secret-token" not in unknown.pop()
    assert sorted(set(_kinds(tmp_path))) == ["webhook_reorder", "webhook_triplicate", "webhook_unknown_task"]


def test_a_late_webhook_comes_after_the_delay_while_the_task_moves_on(
    tmp_path: Path, images: str, receiver: _Receiver
) -> None:
    with _toy(tmp_path, webhook_late=1.0, late_seconds=1.0) as toy:
        created = httpx.post(
            f"{toy.url}/jobs", params={"hook": receiver.url}, json={"image": f"{images}/a.png"}
        )
        done_at = time.time()
        toy.wait_for_status(created.json()["id"])
        assert receiver.bodies == []  # done, and nothing delivered yet
        deadline = time.monotonic() + 10
        while len(receiver.bodies) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert min(r["sent_at"] for r in toy.state()["webhooks"]) >= done_at + 0.9


def test_the_upload_key_is_read_from_a_presigned_url_anywhere_in_a_body() -> None:
    url = "http://127.0.0.1:5000/media/incoming/a%20b/c.png?X-Amz-Signature=s"
    assert upload_key({"input": {"media": [{"url": url}]}}) == "incoming/a b/c.png"
    assert upload_key({"image_url": "data:image/png;base64,AAAA"}) is None
