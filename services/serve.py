"""``i2v-stream serve``: the HTTP query service over a store a daemon is writing.

Routes (all JSON; the OpenAPI schema is at ``/openapi.json``, docs at ``/docs``):

==========================================  ===============================================
``GET /v1/users/{user_id}/embedding``        the user's vector
``GET /v1/items/{item_id}/embedding``        the item's (context) vector
``GET /v1/users/{user_id}/recommendations``  top ``n`` items (``?n=10&exclude_seen=true``)
``GET /v1/items/{item_id}/similar``          ``n`` most similar items (``?n=10``)
``POST /v1/recommendations``                 ``{"users": [...], "n": 10}``, one answer per user
``GET /healthz``                             the process is up (always 200)
``GET /readyz``                              store opened and caught up (200), else 503
``GET /metrics``                             Prometheus text format
==========================================  ===============================================

Ids
---
The store holds ids of two types, ``str`` and ``int`` (``"42"`` and ``42`` are
different ids), but a URL path carries only text. An id in a path is resolved
with ``?id_type=``:

- ``auto`` (default): the id as a string first; if no such string id exists
  and the text is a canonical decimal integer within signed 64 bits (``42``,
  ``-7``, ``0``; not ``042``, ``+4`` or ``4.0``), the integer id. This is the
  rule of ``i2v-stream query`` and it matches how the decoder reads CSV, where
  a canonical integer field becomes an int id;
- ``str`` or ``int``: only that type (``int`` with a non-integer id is a 422).

Answers name the id as it is stored, with its type. In the batch route JSON
keeps the type, so an int matches only an int id, and a string follows the
same ``id_type`` rule as a path. An id may contain ``/`` (percent-encode it).

Errors
------
Every error has the body :class:`ErrorBody`: an unknown id is a 404 with
``error`` ``unknown_user`` / ``unknown_item``; an invalid parameter is a 422
with ``error`` ``invalid_parameter`` and the offending parameter names in
``parameters`` (``n`` must be 1..1000, the batch holds 1..1000 users); a batch
body that is not readable JSON is a 400 ``invalid_body``; queries
before the store exists are 503 ``not_ready``; a store read that fails is 503
``store_unavailable``.

Threads
-------
The query routes are plain ``def`` functions, so FastAPI runs them in its worker
threadpool and the event loop never waits on RocksDB or BLAS. The reader takes
one lock per query (see :mod:`i2v_stream.reader`), so queries run one at a time;
a top-10 over 100,000 items takes about a millisecond, and BLAS and RocksDB
release the GIL meanwhile. The reader catches up from its own background
thread every ``--catch-up-interval`` seconds, so no query pays for a catch-up.

Metrics
-------
``i2v_http_requests_total{route,method,status}`` and
``i2v_http_request_duration_seconds{route}`` are labelled by the route template
(``/v1/users/{user_id}/recommendations``), never the raw path; a path that
matches no route counts as ``route="unmatched"``. ``i2v_reader_staleness_seconds``
(seconds since the reader's last catch-up) and ``i2v_reader_catchups_total`` are
read from the reader at scrape time.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, Union

from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field, StrictInt, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from i2v_stream.metrics import QueryMetrics
from i2v_stream.model import UnknownIdError
from i2v_stream.store import StoreError, StoreNotFoundError

logger = logging.getLogger(__name__)

__all__ = ["add_arguments", "create_app", "parse_id", "run"]

#: Largest ``n`` a query may ask for, and most users in one batch request.
MAX_N = 1000
MAX_BATCH_USERS = 1000
#: Route label of a request that matched no route.
UNMATCHED_ROUTE = "unmatched"

_CANONICAL_INT = re.compile(r"-?(0|[1-9][0-9]*)")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

Id = Union[StrictInt, StrictStr]
IdType = Literal["auto", "str", "int"]


# ---------------------------------------------------------------- models


class ErrorBody(BaseModel):
    """Body of every error response."""

    error: str = Field(description="machine-readable code, e.g. unknown_user, "
                                   "invalid_parameter, not_ready")
    detail: str = Field(description="human-readable explanation")
    id: Id | None = Field(default=None, description="the id that was not found")
    parameters: list[str] = Field(default_factory=list,
                                  description="names of the invalid parameters")


class ScoredItem(BaseModel):
    item: Id
    score: float


class UserEmbedding(BaseModel):
    user: Id
    dim: int
    vector: list[float]


class ItemEmbedding(BaseModel):
    item: Id
    dim: int
    vector: list[float]


class Recommendations(BaseModel):
    user: Id
    n: int
    exclude_seen: bool
    items: list[ScoredItem] = Field(description="best first")


class SimilarItems(BaseModel):
    item: Id
    n: int
    items: list[ScoredItem] = Field(description="best first; the item itself is excluded")


class BatchRequest(BaseModel):
    users: list[Id] = Field(min_length=1, max_length=MAX_BATCH_USERS)
    n: int = Field(default=10, ge=1, le=MAX_N)
    exclude_seen: bool = True
    id_type: IdType = "auto"


class BatchAnswer(BaseModel):
    user: Id = Field(description="the id as stored when known, else as given")
    known: bool
    items: list[ScoredItem] = Field(description="best first; empty for an unknown user")


class BatchRecommendations(BaseModel):
    n: int
    exclude_seen: bool
    results: list[BatchAnswer] = Field(description="one per requested user, in order")


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    reason: str | None = None
    n_users: int | None = None
    n_items: int | None = None
    events_seen: int | None = None
    staleness_seconds: float | None = None


# ---------------------------------------------------------------- errors and ids


class ApiError(Exception):
    """An error answer: HTTP status plus :class:`ErrorBody` fields."""

    def __init__(self, status: int, error: str, detail: str, id: Any = None,
                 parameters: Sequence[str] = ()) -> None:
        super().__init__(detail)
        self.status = status
        self.body = ErrorBody(error=error, detail=detail, id=id, parameters=list(parameters))


def parse_id(raw: Any, id_type: str = "auto") -> list:
    """Candidate store ids for ``raw``, in the order to try them.

    Parameters
    ----------
    raw : str or int
        An id from a path (always ``str``) or a JSON body (``str`` or ``int``).
    id_type : {"auto", "str", "int"}
        See the module docstring.

    Returns
    -------
    list of str or int

    Raises
    ------
    ValueError
        ``id_type="int"`` and ``raw`` is not a canonical 64-bit integer.
    """
    if isinstance(raw, int):
        return [raw] if id_type != "str" else [str(raw)]
    as_int = None
    if _CANONICAL_INT.fullmatch(raw):
        value = int(raw)
        if _INT64_MIN <= value <= _INT64_MAX:
            as_int = value
    if id_type == "str":
        return [raw]
    if id_type == "int":
        if as_int is None:
            raise ValueError(f"id_type=int needs a canonical 64-bit integer id, got {raw!r}")
        return [as_int]
    return [raw] if as_int is None else [raw, as_int]


def _candidates(raw: Any, id_type: str) -> list:
    try:
        return parse_id(raw, id_type)
    except ValueError as exc:
        raise ApiError(422, "invalid_parameter", str(exc), parameters=["id_type"]) from exc


def _first_known(kind: str, raw: Any, id_type: str, query: Callable[[Any], Any]):
    """``(stored id, query(id))`` for the first candidate of ``raw`` that is known."""
    for key in _candidates(raw, id_type):
        try:
            return key, query(key)
        except UnknownIdError:
            continue
    raise ApiError(404, f"unknown_{kind}", f"no {kind} with id {raw!r} in the store", id=raw)


# ---------------------------------------------------------------- app


def _error_responses(*statuses: int) -> dict:
    return {status: {"model": ErrorBody} for status in statuses}


def _route_label(scope: dict) -> str:
    route = scope.get("route")
    return getattr(route, "path_format", None) or UNMATCHED_ROUTE


class _MetricsMiddleware:
    """ASGI middleware counting requests and timing them by route template."""

    def __init__(self, app, metrics: QueryMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.observe_request(_route_label(scope), scope["method"], status,
                                         time.perf_counter() - started)


def create_app(reader, registry: CollectorRegistry, *, ready_staleness_s: float = 10.0
               ) -> FastAPI:
    """Build the query service.

    Parameters
    ----------
    reader : StoreReader or None
        The store to answer from. ``None`` serves 503 ``not_ready`` until a
        reader is set on ``app.state.reader`` (``run`` does so once the daemon
        has created the store).
    registry : CollectorRegistry
        Where the service's metrics live; ``/metrics`` exposes all of it.
    ready_staleness_s : float
        ``/readyz`` answers 503 when the reader's last catch-up is older.

    Returns
    -------
    FastAPI
    """
    app = FastAPI(
        title="i2v-stream query service",
        description="Interact2Vec user and item embeddings, recommendations and similar "
                    "items, read from a store the streaming daemon keeps up to date.",
        version="1",
    )
    app.state.reader = reader
    metrics = QueryMetrics(registry)
    catch_ups_seen = [0]
    catch_ups_lock = threading.Lock()

    def staleness() -> float:
        current = app.state.reader
        return float("nan") if current is None else float(current.staleness_seconds())

    metrics.reader_staleness.set_function(staleness)
    app.add_middleware(_MetricsMiddleware, metrics=metrics)

    def get_reader():
        current = app.state.reader
        if current is None:
            raise ApiError(503, "not_ready", "the store is not open yet; is the daemon "
                                             "running and has it committed?")
        return current

    # -- error bodies

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body.model_dump(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        names, messages = [], []
        for error in exc.errors():
            # drop the location kind and pydantic's tags of union members ("int", "str")
            loc = [str(part) for part in error.get("loc", ())
                   if part not in ("query", "path", "int", "str")]
            name = ".".join(loc[1:] if loc[:1] == ["body"] and len(loc) > 1 else loc) or "body"
            if name not in names:
                names.append(name)
            messages.append(f"{name}: {error.get('msg', 'invalid')}")
        body = ErrorBody(error="invalid_parameter", detail="; ".join(messages),
                         parameters=names)
        return JSONResponse(body.model_dump(), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {400: "invalid_body", 404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, "http_error")
        body = ErrorBody(error=code, detail=str(exc.detail))
        return JSONResponse(body.model_dump(), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
        logger.warning("store read failed path=%s error=%s", request.url.path, exc)
        body = ErrorBody(error="store_unavailable", detail=str(exc))
        return JSONResponse(body.model_dump(), status_code=503)

    # -- parameters shared by routes

    user_path = Path(description="user id; see id_type")
    item_path = Path(description="item id; see id_type")
    id_type_query = Query("auto", description="auto: the id as a string, then as an integer "
                                              "if it is one; str or int: only that type")
    n_query = Query(10, ge=1, le=MAX_N, description=f"number of results, 1..{MAX_N}")
    query_errors = _error_responses(404, 422, 503)

    # -- queries

    @app.get("/v1/users/{user_id:path}/embedding", response_model=UserEmbedding,
             responses=query_errors, tags=["queries"])
    def user_embedding(user_id: str = user_path, id_type: IdType = id_type_query
                       ) -> UserEmbedding:
        """The user's vector."""
        key, vector = _first_known("user", user_id, id_type, get_reader().user_vector)
        return UserEmbedding(user=key, dim=len(vector), vector=vector.tolist())

    @app.get("/v1/items/{item_id:path}/embedding", response_model=ItemEmbedding,
             responses=query_errors, tags=["queries"])
    def item_embedding(item_id: str = item_path, id_type: IdType = id_type_query
                       ) -> ItemEmbedding:
        """The item's (context) vector, the one recommendations score against."""
        key, vector = _first_known("item", item_id, id_type, get_reader().item_vector)
        return ItemEmbedding(item=key, dim=len(vector), vector=vector.tolist())

    @app.get("/v1/users/{user_id:path}/recommendations", response_model=Recommendations,
             responses=query_errors, tags=["queries"])
    def recommendations(user_id: str = user_path, n: int = n_query,
                        exclude_seen: bool = Query(True, description="drop the user's "
                                                                     "recent items"),
                        id_type: IdType = id_type_query) -> Recommendations:
        """Top ``n`` items for the user, best first."""
        current = get_reader()
        key, results = _first_known(
            "user", user_id, id_type,
            lambda k: current.recommend(k, n=n, exclude_seen=exclude_seen))
        return Recommendations(user=key, n=n, exclude_seen=exclude_seen,
                               items=[ScoredItem(item=i, score=s) for i, s in results])

    @app.get("/v1/items/{item_id:path}/similar", response_model=SimilarItems,
             responses=query_errors, tags=["queries"])
    def similar(item_id: str = item_path, n: int = n_query,
                id_type: IdType = id_type_query) -> SimilarItems:
        """The ``n`` items most similar to the item, best first, itself excluded."""
        current = get_reader()
        key, results = _first_known("item", item_id, id_type,
                                    lambda k: current.similar_items(k, n=n))
        return SimilarItems(item=key, n=n,
                            items=[ScoredItem(item=i, score=s) for i, s in results])

    @app.post("/v1/recommendations", response_model=BatchRecommendations,
              responses=_error_responses(400, 422, 503), tags=["queries"])
    def batch_recommendations(request: BatchRequest) -> BatchRecommendations:
        """Recommendations for many users; an unknown user gets ``known: false``."""
        current = get_reader()
        candidates = [_candidates(user, request.id_type) for user in request.users]

        # First candidates in one batched call, then the integer fallbacks of
        # the strings that were unknown, in a second one.
        answers: list = [None] * len(candidates)
        keys: list = [c[0] for c in candidates]
        first = current.recommend_many(keys, n=request.n, exclude_seen=request.exclude_seen)
        retry = [k for k, (c, a) in enumerate(zip(candidates, first)) if a is None and len(c) > 1]
        for position, answer in enumerate(first):
            answers[position] = answer
        if retry:
            second = current.recommend_many([candidates[k][1] for k in retry], n=request.n,
                                            exclude_seen=request.exclude_seen)
            for position, answer in zip(retry, second):
                if answer is not None:
                    answers[position], keys[position] = answer, candidates[position][1]

        results = [
            BatchAnswer(user=key if answer is not None else raw, known=answer is not None,
                        items=[ScoredItem(item=i, score=s) for i, s in answer or ()])
            for raw, key, answer in zip(request.users, keys, answers)
        ]
        return BatchRecommendations(n=request.n, exclude_seen=request.exclude_seen,
                                    results=results)

    # -- operations

    @app.get("/healthz", response_model=Health, tags=["operations"])
    def healthz() -> Health:
        """The process is up."""
        return Health(status="ok")

    @app.get("/readyz", response_model=Readiness,
             responses={503: {"model": Readiness}}, tags=["operations"])
    def readyz():
        """Ready when the store is open, has a first commit and was caught up recently."""
        current = app.state.reader
        if current is None:
            return _not_ready("store not open yet")
        age = float(current.staleness_seconds())
        answer = Readiness(status="ready", n_users=current.n_users, n_items=current.n_items,
                           events_seen=current.events_seen, staleness_seconds=age)
        if current.n_items == 0:
            return _not_ready("the store has no committed items yet", answer)
        if age > ready_staleness_s:
            return _not_ready(f"last catch-up {age:.1f}s ago (limit {ready_staleness_s}s)",
                              answer)
        return answer

    @app.get("/metrics", response_class=Response, tags=["operations"],
             responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
                              "description": "Prometheus text format"}})
    def prometheus_metrics() -> Response:
        """Every metric of ``registry``, in the Prometheus text format."""
        current = app.state.reader
        if current is not None:
            with catch_ups_lock:
                delta = current.catch_ups - catch_ups_seen[0]
                if delta > 0:
                    metrics.reader_catchups.inc(delta)
                    catch_ups_seen[0] = current.catch_ups
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _not_ready(reason: str, answer: Readiness | None = None) -> JSONResponse:
    answer = answer or Readiness(status="not_ready")
    answer.status, answer.reason = "not_ready", reason
    return JSONResponse(answer.model_dump(), status_code=503)


# ---------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, help="store directory the daemon writes")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind "
                                                             "(default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    parser.add_argument("--catch-up-interval", type=float, default=1.0, metavar="S",
                        help="seconds between catch-ups with the writer (default 1.0)")
    parser.add_argument("--ready-staleness", type=float, default=10.0, metavar="S",
                        help="/readyz fails when the last catch-up is older (default 10)")
    parser.add_argument("--wait-for-store", type=float, default=300.0, metavar="S",
                        help="seconds to wait for the store to appear before giving up; "
                             "the service answers 503 meanwhile (default 300)")


def _open_reader(path: str, interval: float):
    from i2v_stream.reader import StoreReader

    return StoreReader(path, catch_up_interval=interval, background=True)


def _open_when_present(app: FastAPI, args: argparse.Namespace, stop: threading.Event,
                       failed: threading.Event) -> None:
    # The daemon may not have created the store yet (the demo starts both at
    # once); keep trying, answering 503 until it exists.
    deadline = time.monotonic() + args.wait_for_store
    logged = False
    while not stop.is_set():
        try:
            app.state.reader = _open_reader(args.store, args.catch_up_interval)
            logger.info("store opened path=%s n_items=%d", args.store, app.state.reader.n_items)
            return
        except StoreNotFoundError as exc:
            if not logged:
                logger.info("waiting for the store path=%s (%s)", args.store, exc)
                logged = True
        except StoreError as exc:
            logger.error("cannot open the store path=%s error=%s", args.store, exc)
            failed.set()
            return
        if time.monotonic() > deadline:
            logger.error("no store appeared at path=%s within %.0fs", args.store,
                         args.wait_for_store)
            failed.set()
            return
        stop.wait(0.2)


def _after_shutdown(signum, frame) -> None:
    logger.info("signal=%s: query service shut down", signal.Signals(signum).name)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    registry = CollectorRegistry()
    app = create_app(None, registry, ready_staleness_s=args.ready_staleness)
    stop, failed = threading.Event(), threading.Event()
    opener = threading.Thread(target=_open_when_present, args=(app, args, stop, failed),
                              name="i2v-serve-open", daemon=True)
    opener.start()

    config = uvicorn.Config(app, host=args.host, port=args.port, log_config=None,
                            access_log=False, lifespan="off")
    server = uvicorn.Server(config)

    def watch_failure() -> None:
        failed.wait()
        if not stop.is_set():
            server.should_exit = True

    threading.Thread(target=watch_failure, name="i2v-serve-watch", daemon=True).start()
    logger.info("query service starting url=http://%s:%d store=%s", args.host, args.port,
                args.store)
    # uvicorn installs its own SIGINT/SIGTERM handlers, shuts down gracefully,
    # then restores the previous handlers and raises the signal again; with
    # these as the previous ones that re-raise returns here, so the reader is
    # closed and the exit status is 0.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _after_shutdown)
    try:
        server.run()
    finally:
        stop.set()
        opener.join(timeout=5)
        reader = app.state.reader
        if reader is not None:
            reader.close()
        logger.info("query service stopped")
    return 1 if failed.is_set() else 0


if __name__ == "__main__":  # pragma: no cover - use `i2v-stream serve`
    import sys

    from services.cli import main

    sys.exit(main(["serve", *sys.argv[1:]]))

