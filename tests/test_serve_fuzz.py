"""Fuzz the query service from its own OpenAPI schema with schemathesis.

Every operation gets a few generated requests, valid and invalid. No answer may
be a 5xx, and every answer must match its declared status codes, content type
and response schema. Bounded: 30 positive and 30 negative requests per operation,
well under a minute in all.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from i2v_stream.model import Interact2Vec  # noqa: E402
from i2v_stream.reader import StoreReader  # noqa: E402
from i2v_stream.store import Store  # noqa: E402
from i2v_stream.synthetic import make_interactions  # noqa: E402
from services.serve import create_app  # noqa: E402

EXAMPLES = 30
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    # Small ints as ids, so that generated digits often hit known users and items.
    data = make_interactions(n_users=50, n_items=40, n_groups=2, seed=7)
    model = Interact2Vec(dim=8, negatives=2, history_size=4, seed=0)
    model.fit(data.interactions.users.tolist(), data.interactions.items.tolist(), epochs=1)
    path = tmp_path_factory.mktemp("fuzz") / "store"
    with Store.open(path, params=model.get_params()) as store:
        store.commit(model, {}, full=True)
    reader = StoreReader(path, catch_up_interval=None)
    app = create_app(reader, CollectorRegistry())
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    reader.close()


#: Every operation of the schema; test_every_operation_is_fuzzed keeps this complete.
OPERATIONS = [
    ("GET", "/v1/users/{user_id}/embedding"),
    ("GET", "/v1/items/{item_id}/embedding"),
    ("GET", "/v1/users/{user_id}/recommendations"),
    ("GET", "/v1/items/{item_id}/similar"),
    ("POST", "/v1/recommendations"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
]


def test_every_operation_is_fuzzed(api_schema):
    found = {(result.ok().method.upper(), result.ok().path)
             for result in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


#: Operations without parameters have no invalid input to generate.
NO_INPUT = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")}
CASES = [(method, path, mode) for method, path in OPERATIONS for mode in ("positive", "negative")
         if mode == "positive" or (method, path) not in NO_INPUT]


@pytest.mark.parametrize("method,path,mode", CASES)
def test_operation_has_no_server_errors(api_schema, method, path, mode):
    # Plain hypothesis over each operation's strategy (schemathesis' own
    # pytest plugin does not run under this pytest version).
    operation = api_schema[path][method]
    strategy = operation.as_strategy(generation_mode=GenerationMode(mode))

    @given(case=strategy)
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        case.call_and_validate(checks=CHECKS)

    check()
