"""SagaClient: the api from blocking code (httpx.Client)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar, Unpack

import httpx

from orchestrator.client import calls, errors, models
from orchestrator.client.calls import Call, Follower, ListFilters

T = TypeVar("T")


class SagaClient:
    """`token`: a bearer token (viewer to read, operator to start and act). `timeout`: for
    each request, in seconds. `retries`: how often a safe request (a read, a start with its
    idempotency key) is sent again after a transport error or a busy answer. `poll_s`: how
    often `events` and `wait` poll when the api's event stream is unavailable."""

    def __init__(
        self,
        base_url: str = calls.DEFAULT_URL,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        retries: int = 2,
        poll_s: float = 1.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url
        self._http = httpx.Client(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport
        )
        self._timeout = timeout
        self._retries = retries
        self._poll_s = poll_s

    def __enter__(self) -> SagaClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def start(
        self,
        saga_type: str,
        input: Mapping[str, Any],
        idempotency_key: str | None = None,
        *,
        version: int | None = None,
    ) -> models.Started:
        """Start a saga. Without a key one is generated (and returned), so that the
        request is retried safely; the same key and input return the same saga."""
        return self._send(calls.start(saga_type, input, idempotency_key, version))

    def get(self, saga_id: str) -> models.Saga:
        return self._send(calls.get(saga_id))

    def list(
        self, *, limit: int = 50, cursor: str | None = None, **filters: Unpack[ListFilters]
    ) -> models.Page:
        """One page of sagas, newest first; `next_cursor` asks for the next."""
        return self._send(calls.listing(limit, cursor, filters))

    def list_all(
        self, *, page_size: int = 100, **filters: Unpack[ListFilters]
    ) -> Iterator[models.SagaSummary]:
        """Every saga the filters match, newest first, a page at a time."""
        cursor: str | None = None
        while True:
            page = self.list(limit=page_size, cursor=cursor, **filters)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def timeline(
        self, saga_id: str, *, after: int | None = None, limit: int = 100
    ) -> models.TimelinePage:
        return self._send(calls.timeline(saga_id, after, limit))

    def abort(self, saga_id: str, reason: str) -> models.Saga:
        return self._send(calls.action(saga_id, "abort", reason))

    def retry(self, saga_id: str, reason: str) -> models.Saga:
        return self._send(calls.action(saga_id, "retry", reason))

    def skip(self, saga_id: str, step: str, reason: str) -> models.Saga:
        return self._send(calls.action(saga_id, "skip", reason, step))

    def fence(self, saga_id: str, step: str, reason: str) -> models.Saga:
        return self._send(calls.action(saga_id, "fence", reason, step))

    def stats(self) -> models.Stats:
        return self._send(calls.stats())

    def wait(self, saga_id: str, timeout: float = 60.0) -> models.Saga:
        """The saga once it is completed, compensated or failed; WaitTimeoutError after
        `timeout` seconds. Follows the event stream (polling when it is unavailable)."""
        saga = self.get(saga_id)
        if saga.settled:
            return saga
        after = saga.timeline[-1].id if saga.timeline else None
        try:
            for _ in self.events(saga_id, after=after, timeout=timeout):
                pass
        except errors.WaitTimeoutError:
            status = self.get(saga_id).status
            raise errors.WaitTimeoutError(saga_id, timeout, status) from None
        return self.get(saga_id)

    def events(
        self, saga_id: str, *, after: int | None = None, timeout: float | None = None
    ) -> Iterator[models.TimelineEntry]:
        """The saga's timeline entries after `after` as they happen, ending once the saga
        is settled. A dropped connection is resumed after the last entry seen."""
        follower = Follower(saga_id, after, timeout)
        while True:
            if follower.polling:
                yield from self._poll(follower)
            else:
                yield from self._stream(follower)
            if follower.ended:
                return
            follower.check_deadline()
            time.sleep(min(follower.pause(), max(0.0, follower.remaining())))

    def _stream(self, follower: Follower) -> Iterator[models.TimelineEntry]:
        path, headers = follower.stream_call()
        timeout = httpx.Timeout(self._timeout, read=follower.read_timeout())
        lines = 0
        try:
            with self._http.stream("GET", path, headers=headers, timeout=timeout) as response:
                if not follower.is_stream(response):
                    response.read()
                    follower.refused(response)
                    return
                parser = calls.SseParser()
                for line in response.iter_lines():
                    lines += 1
                    event = parser.feed(line)
                    entry = follower.take(event) if event is not None else None
                    if entry is not None:
                        yield entry
                    if follower.ended:
                        return
            follower.closed(lines)
        except httpx.TransportError:  # dropped or silent: resume after the last entry seen
            follower.closed(lines, broken=True)

    def _poll(self, follower: Follower) -> Iterator[models.TimelineEntry]:
        settled = self.get(follower.saga_id).settled  # first: no entry of before is missed
        while True:
            page = self.timeline(follower.saga_id, after=follower.last, limit=1000)
            for item in page.items:
                entry = follower.seen(item)
                if entry is not None:
                    yield entry
            if page.next_after is None:
                break
        follower.ended = settled
        if not settled:
            time.sleep(min(self._poll_s, max(0.0, follower.remaining())))

    def _send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    call.method,
                    call.path,
                    params=list(call.params),
                    json=call.body,
                    headers=dict(call.headers),
                )
            except httpx.TransportError as exc:
                delay = calls.retry_delay(call, attempt, self._retries, None)
                if delay is None:
                    raise errors.TransportError(self.base_url, str(exc) or repr(exc)) from exc
            else:
                delay = calls.retry_delay(call, attempt, self._retries, response)
                if delay is None:
                    return calls.answer(call, response)
            attempt += 1
            time.sleep(delay)
