"""Tests of services/serve.py: the HTTP query service against a real RocksDB store."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from i2v_stream.model import Interact2Vec
from i2v_stream.reader import StoreReader
from i2v_stream.store import Store
from i2v_stream.synthetic import make_interactions
from services.serve import create_app, parse_id


def mixed_ids(data):
    """Odd users as strings ``"u7"``, even ones as ints; the string ``"12"`` is a user too."""
    users = [f"u{u}" if u % 2 else int(u) for u in data.interactions.users.tolist()]
    items = [int(i) for i in data.interactions.items.tolist()]
    # one string id that looks like an int, next to the int id 12
    users += ["12"] * 5
    items += items[:5]
    return users, items


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    data = make_interactions(n_users=120, n_items=90, n_groups=3, seed=4)
    model = Interact2Vec(dim=16, negatives=3, history_size=8, seed=1)
    model.fit(*mixed_ids(data), epochs=2)
    path = tmp_path_factory.mktemp("serve") / "store"
    with Store.open(path, params=model.get_params()) as store:
        store.commit(model, {("t", 0): 1}, full=True)
    return path, model


@pytest.fixture
def served(store_path):
    path, model = store_path
    reader = StoreReader(path, catch_up_interval=None)
    app = create_app(reader, CollectorRegistry())
    with TestClient(app) as client:
        yield client, model, reader
    reader.close()


def scores_match(got, expected):
    assert [x["item"] for x in got] == [i for i, _ in expected]
    np.testing.assert_allclose([x["score"] for x in got], [s for _, s in expected],
                               rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- ids


def test_parse_id_tries_string_then_canonical_int():
    assert parse_id("42") == ["42", 42]
    assert parse_id("-7") == ["-7", -7]
    assert parse_id("042") == ["042"]
    assert parse_id("+4") == ["+4"]
    assert parse_id("u1") == ["u1"]
    assert parse_id(str(2**63)) == [str(2**63)]
    assert parse_id("42", "str") == ["42"]
    assert parse_id("42", "int") == [42]
    assert parse_id(42) == [42]
    with pytest.raises(ValueError, match="canonical"):
        parse_id("x", "int")


def test_digit_path_matches_int_user(served):
    client, model, _ = served
    body = client.get("/v1/users/4/recommendations", params={"n": 5}).json()
    assert body["user"] == 4 and isinstance(body["user"], int)
    scores_match(body["items"], model.recommend(4, n=5))


def test_string_id_that_looks_like_int_wins_in_auto_mode(served):
    client, model, _ = served
    body = client.get("/v1/users/12/embedding").json()
    assert body["user"] == "12"
    np.testing.assert_allclose(body["vector"], model.user_vectors[model.user_row("12")])
    body = client.get("/v1/users/12/embedding", params={"id_type": "int"}).json()
    assert body["user"] == 12
    np.testing.assert_allclose(body["vector"], model.user_vectors[model.user_row(12)])


def test_id_type_str_does_not_fall_back(served):
    client, _, _ = served
    response = client.get("/v1/users/4/recommendations", params={"id_type": "str"})
    assert response.status_code == 404


# ---------------------------------------------------------------- answers


def test_recommendations_match_the_model(served):
    client, model, _ = served
    for user, path_id in [("u1", "u1"), ("u33", "u33"), (8, "8")]:
        body = client.get(f"/v1/users/{path_id}/recommendations", params={"n": 7}).json()
        assert body["n"] == 7 and body["exclude_seen"] is True
        scores_match(body["items"], model.recommend(user, n=7))
        body = client.get(f"/v1/users/{path_id}/recommendations",
                          params={"n": 3, "exclude_seen": "false"}).json()
        scores_match(body["items"], model.recommend(user, n=3, exclude_seen=False))


def test_similar_items_and_embeddings_match_the_model(served):
    client, model, _ = served
    for item in [0, 5, 40]:
        body = client.get(f"/v1/items/{item}/similar", params={"n": 4}).json()
        assert body["item"] == item
        scores_match(body["items"], model.similar_items(item, n=4))
        body = client.get(f"/v1/items/{item}/embedding").json()
        assert body["dim"] == 16
        np.testing.assert_allclose(body["vector"], model.item_vectors[model.item_row(item)])


def test_batch_keeps_order_types_and_unknowns(served):
    client, model, reader = served
    users = ["u1", 4, "4", "nobody", 99999, "12"]
    body = client.post("/v1/recommendations", json={"users": users, "n": 3}).json()
    results = body["results"]
    assert [r["known"] for r in results] == [True, True, True, False, False, True]
    assert [r["user"] for r in results] == ["u1", 4, 4, "nobody", 99999, "12"]
    for result in results:
        if result["known"]:
            scores_match(result["items"], reader.recommend(result["user"], n=3))
        else:
            assert result["items"] == []


def test_n_larger_than_catalogue_returns_what_there_is(served):
    client, _, reader = served
    body = client.get("/v1/items/0/similar", params={"n": 1000}).json()
    assert len(body["items"]) == reader.n_items - 1


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("url,kind", [
    ("/v1/users/nobody/recommendations", "unknown_user"),
    ("/v1/users/nobody/embedding", "unknown_user"),
    ("/v1/items/nothing/similar", "unknown_item"),
    ("/v1/items/123456/embedding", "unknown_item"),
])
def test_unknown_id_is_404_with_json_body(served, url, kind):
    client, _, _ = served
    response = client.get(url)
    assert response.status_code == 404
    body = response.json()
    assert body["error"] == kind and body["id"] == url.split("/")[3]


@pytest.mark.parametrize("params,name", [
    ({"n": 0}, "n"), ({"n": 1001}, "n"), ({"n": "ten"}, "n"),
    ({"exclude_seen": "maybe"}, "exclude_seen"), ({"id_type": "float"}, "id_type"),
])
def test_invalid_query_parameter_is_422_naming_it(served, params, name):
    client, _, _ = served
    response = client.get("/v1/users/u1/recommendations", params=params)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_parameter" and body["parameters"] == [name]
    assert name in body["detail"]


@pytest.mark.parametrize("payload,name", [
    ({"users": []}, "users"),
    ({"users": ["u1"] * 1001}, "users"),
    ({"users": ["u1"], "n": 0}, "n"),
    ({"users": [1.5]}, "users.0"),
    ({"n": 3}, "users"),
])
def test_invalid_batch_is_422_naming_the_field(served, payload, name):
    client, _, _ = served
    response = client.post("/v1/recommendations", json=payload)
    assert response.status_code == 422
    assert name in response.json()["parameters"]


def test_int_id_type_with_text_id_is_422(served):
    client, _, _ = served
    response = client.get("/v1/items/abc/similar", params={"id_type": "int"})
    assert response.status_code == 422 and response.json()["parameters"] == ["id_type"]


def test_unknown_route_is_404_json(served):
    client, _, _ = served
    response = client.get("/v2/nothing")
    assert response.status_code == 404 and response.json()["error"] == "not_found"


# ---------------------------------------------------------------- operations


def test_health_and_readiness(served):
    client, _, reader = served
    assert client.get("/healthz").json() == {"status": "ok"}
    body = client.get("/readyz").json()
    assert body["status"] == "ready" and body["n_items"] == reader.n_items


def test_not_ready_without_a_reader():
    app = create_app(None, CollectorRegistry())
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503
        response = client.get("/v1/users/u1/recommendations")
        assert response.status_code == 503 and response.json()["error"] == "not_ready"


def test_not_ready_when_reader_is_stale(store_path):
    reader = StoreReader(store_path[0], catch_up_interval=None)
    try:
        app = create_app(reader, CollectorRegistry(), ready_staleness_s=0.0)
        with TestClient(app) as client:
            response = client.get("/readyz")
            assert response.status_code == 503
            assert "catch-up" in response.json()["reason"]
    finally:
        reader.close()


def test_metrics_are_labelled_by_route_template(served):
    client, _, _ = served
    client.get("/v1/users/u1/recommendations")
    client.get("/v1/users/u3/recommendations")
    client.get("/v1/users/nobody/recommendations")
    client.get("/no/such/path")
    text = client.get("/metrics").text
    template = 'route="/v1/users/{user_id}/recommendations"'
    assert f'i2v_http_requests_total{{method="GET",{template},status="200"}} 2.0' in text
    assert f'i2v_http_requests_total{{method="GET",{template},status="404"}} 1.0' in text
    assert 'route="unmatched"' in text
    assert "u1" not in text and "nobody" not in text
    assert f"i2v_http_request_duration_seconds_count{{{template}}} 3.0" in text
    staleness = [line for line in text.splitlines()
                 if line.startswith("i2v_reader_staleness_seconds ")]
    assert staleness and math.isfinite(float(staleness[0].split()[1]))


def test_reader_sees_new_commits(tmp_path):
    # A writer commits after the service started; the reader catches up on access.
    data = make_interactions(n_users=30, n_items=20, seed=2)
    model = Interact2Vec(dim=8, seed=0)
    users, items = data.interactions.users.tolist(), data.interactions.items.tolist()
    store = Store.open(tmp_path / "s", params=model.get_params())
    try:
        model.learn_many(users[:200], items[:200])
        store.commit(model, {})
        reader = StoreReader(tmp_path / "s", catch_up_interval=0.0)
        try:
            client = TestClient(create_app(reader, CollectorRegistry()))
            assert client.get("/v1/users/newcomer/embedding").status_code == 404
            model.learn_many(["newcomer"], [items[0]])
            store.commit(model, {})
            assert client.get("/v1/users/newcomer/embedding").status_code == 200
        finally:
            reader.close()
    finally:
        store.close()


def test_openapi_schema_names_the_models(served):
    client, _, _ = served
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert set(paths) >= {
        "/v1/users/{user_id}/embedding", "/v1/items/{item_id}/embedding",
        "/v1/users/{user_id}/recommendations", "/v1/items/{item_id}/similar",
        "/v1/recommendations", "/healthz", "/readyz", "/metrics",
    }
    get = paths["/v1/users/{user_id}/recommendations"]["get"]
    ok = get["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("/Recommendations")
    assert get["responses"]["404"]["content"]["application/json"]["schema"][
        "$ref"].endswith("/ErrorBody")
    n = next(p for p in get["parameters"] if p["name"] == "n")
    assert n["schema"]["minimum"] == 1 and n["schema"]["maximum"] == 1000
