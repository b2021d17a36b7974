"""Webhook delivery as the faults say: dropped, delayed, sent twice, retried with a backoff;
one record per attempt."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from local.simulators.core.faults import Faults
from local.simulators.core.http import HTTP_TIMEOUT_SECONDS
from local.simulators.core.tasks import TaskAbandoned, pause

WEBHOOK_RETRY_MAX_DELAY_SECONDS = 10.0
COUNTERS = ("webhooks_sent", "webhooks_delivered", "webhooks_failed", "webhooks_dropped")


@dataclass(frozen=True)
class Webhook:
    """One task's announcement of one state: every attempt sends the same id and body."""

    task_id: str
    status: str  # the wire name of the state announced
    url: str
    body: str
    webhook_id: str = field(default_factory=lambda: f"msg_{uuid.uuid4().hex}")

    @classmethod
    def of(cls, task_id: str, status: str, url: str, payload: Mapping[str, Any]) -> Webhook:
        return cls(task_id, status, url, json.dumps(payload, separators=(",", ":")))


class WebhookSender:
    """Posts a simulator's webhooks and keeps its webhook counters and attempt records.

    `headers(webhook_id, body)` gives each attempt's headers (the route signs afresh);
    `stopping` set abandons a delivery at its next pause or attempt. Open it to send.
    """

    def __init__(
        self,
        headers: Callable[[str, str], dict[str, str]],
        stopping: threading.Event,
        logger: logging.Logger,
    ) -> None:
        self._headers = headers
        self._stopping = stopping
        self._logger = logger
        self._lock = threading.Lock()
        self._counters: Counter[str] = Counter()
        self._records: list[dict[str, Any]] = []
        self._http: httpx.Client | None = None

    def open(self) -> None:
        self._http = httpx.Client(timeout=HTTP_TIMEOUT_SECONDS)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        self._http = None

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {name: self._counters[name] for name in COUNTERS}

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(record) for record in self._records]

    def clear(self) -> None:
        with self._lock:
            self._counters.clear()
            self._records.clear()

    def send(
        self,
        webhook: Webhook,
        faults: Faults,
        *,
        drop: bool,
        still_wanted: Callable[[], None],
        copies: int | None = None,
        delay: float | None = None,
    ) -> None:
        """Deliver `webhook` with the faults in force when its state was reached: none when
        `drop`, after `webhook_delay` (or `delay`), twice with `duplicate_webhooks` (or
        `copies` times), each time retried up to `webhook_retries`. `still_wanted()`
        raises TaskAbandoned once the task is gone."""
        if drop:
            with self._lock:
                self._counters["webhooks_dropped"] += 1
            self._logger.info(
                "webhook task=%s status=%s dropped (fault injection)", webhook.task_id, webhook.status
            )
            return
        pause(self._stopping, faults.webhook_delay if delay is None else delay)
        for _ in range(copies if copies is not None else 2 if faults.duplicate_webhooks else 1):
            self._deliver(webhook, faults.webhook_retries, still_wanted)

    def _deliver(self, webhook: Webhook, retries: int, still_wanted: Callable[[], None]) -> None:
        """POST one webhook; with `retries` > 0, retry failures with a backoff.

        Every attempt keeps the webhook id and gets fresh headers, as Standard Webhooks
        senders do (the providers' own behaviour is unknown). A task forgotten meanwhile
        gets no further attempt.
        """
        for attempt in range(1, retries + 2):
            still_wanted()
            started = time.monotonic()
            answer, retry_after = self._post(webhook)
            elapsed_ms = (time.monotonic() - started) * 1000
            delivered = isinstance(answer, int) and 200 <= answer < 300
            with self._lock:
                self._counters["webhooks_sent"] += 1
                self._counters["webhooks_delivered" if delivered else "webhooks_failed"] += 1
                self._records.append(
                    {
                        "task_id": webhook.task_id,
                        "status": webhook.status,
                        "webhook_id": webhook.webhook_id,
                        "url": webhook.url,
                        "attempt": attempt,
                        "response_status": answer if isinstance(answer, int) else None,
                        "error": None if isinstance(answer, int) else answer,
                        "sent_at": time.time(),
                        # How long the receiver took to answer (or until the timeout).
                        "elapsed_ms": round(elapsed_ms, 1),
                    }
                )
            self._logger.info(
                "webhook task=%s status=%s to %s attempt %d -> %s",
                webhook.task_id,
                webhook.status,
                without_query(webhook.url),
                attempt,
                answer,
            )
            if delivered or attempt > retries:
                return
            backoff = 0.5 * 2 ** (attempt - 1)
            pause(self._stopping, min(retry_after or backoff, WEBHOOK_RETRY_MAX_DELAY_SECONDS))

    def _post(self, webhook: Webhook) -> tuple[int | str, float | None]:
        """Send one attempt; return (HTTP status or error name, Retry-After seconds if given)."""
        if self._http is None:
            raise TaskAbandoned
        headers = self._headers(webhook.webhook_id, webhook.body)
        try:
            response = self._http.post(webhook.url, content=webhook.body.encode(), headers=headers)
        except httpx.HTTPError as exc:
            return type(exc).__name__, None
        return response.status_code, _seconds(response.headers.get("retry-after"))


def without_query(url: str) -> str:
    """The URL without query and fragment: webhook tokens and signatures stay out of logs."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
