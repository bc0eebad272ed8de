"""Quality and speed of i2v-stream next to gensim, implicit and most-popular, in one run.

Every rating of the data set counts as an implicit interaction. Two protocols:

- temporal split: each user's last ``--holdout`` events (time order) are the test
  set, the rest trains; Recall@10 and NDCG@10 rank every item outside the user's
  train history;
- prequential: events in time order; the first 30% are learned, then each chunk is
  scored before it is learned (HR@10, MRR). Only methods that learn online take part:
  our one-pass ``learn_many`` and an online most-popular.

Speed: train seconds are the median of ``--repeats`` runs; interactions/s is
train events x epochs / seconds. Like for like: dim 100, 5 negatives, sample 1e-3,
alpha 0.75, 20 epochs, 2 workers, and our window=0 against gensim dbow_words=0, our
window=5 against gensim dbow_words=1 window=5 (the ratio column).

Usage::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        .venv/bin/python benchmarks/bench_quality_speed.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

HERE = Path(__file__).resolve().parent
# Run from a checkout without installing: the package is the directory above.
sys.path.insert(0, str(HERE.parent))

from i2v_stream import Interact2Vec  # noqa: E402
from i2v_stream.data import read_interactions  # noqa: E402

DEFAULT_DATA = Path("/work/shared/datasets/ml-100k/u.data")
TOP_N = 10


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="interactions file (MovieLens u.data, CSV or JSON lines)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method")
    parser.add_argument("--quick", action="store_true",
                        help="one timed run per method (about 3 minutes on 2 cores)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--negatives", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--holdout", type=int, default=5,
                        help="test events per user in the temporal split")
    parser.add_argument("--warmup", type=float, default=0.3,
                        help="share of events learned before prequential scoring")
    parser.add_argument("--chunk", type=int, default=1000,
                        help="events per prequential chunk")
    parser.add_argument("--skip-authors", action="store_true",
                        help="leave out gensim with a whole-history window (the slow one)")
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 1
    return args


# ---------------------------------------------------------------------------
# Data and protocols. Everything works on dense indices 0..n_users-1, 0..n_items-1
# over the whole file, so that every method's scores land in the same columns.

@dataclass
class Events:
    users: np.ndarray       # int64 dense user index, time order
    items: np.ndarray       # int64 dense item index
    timestamps: np.ndarray  # float64 seconds
    n_users: int
    n_items: int


def load_events(path: Path) -> Events:
    data = read_interactions(path).sort_by_time()
    _, users = np.unique(data.users, return_inverse=True)
    _, items = np.unique(data.items, return_inverse=True)
    return Events(users.astype(np.int64), items.astype(np.int64), data.timestamps,
                  int(users.max()) + 1, int(items.max()) + 1)


def temporal_split(events: Events, holdout: int):
    """Boolean mask of test events: each user's last ``holdout`` events in time order.

    A user with ``holdout`` events or fewer keeps them all in train (nothing to learn
    the user from otherwise).
    """
    test = np.zeros(len(events.users), bool)
    order = np.argsort(events.users, kind="stable")  # per user, still time order
    users_sorted = events.users[order]
    starts = np.flatnonzero(np.r_[True, users_sorted[1:] != users_sorted[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for lo, hi in zip(starts, ends):
        if hi - lo > holdout:
            test[order[hi - holdout:hi]] = True
    return test


def ranking_metrics(scores, train_users, train_items, test_users, test_items, n=TOP_N):
    """Recall@n and NDCG@n over the users with test events, train items excluded."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    scores[train_users, train_items] = -np.inf
    users = np.unique(test_users)
    top = np.argpartition(-scores[users], n, axis=1)[:, :n]
    top_scores = np.take_along_axis(scores[users], top, axis=1)
    top = np.take_along_axis(top, np.argsort(-top_scores, axis=1, kind="stable"), axis=1)

    relevant = np.zeros((len(users), scores.shape[1]), bool)
    position = np.searchsorted(users, test_users)
    relevant[position, test_items] = True
    hits = np.take_along_axis(relevant, top, axis=1)
    n_relevant = relevant.sum(axis=1)

    discounts = 1.0 / np.log2(np.arange(2, n + 2))
    dcg = (hits * discounts).sum(axis=1)
    ideal = np.array([discounts[:min(k, n)].sum() for k in n_relevant])
    recall = hits.sum(axis=1) / np.minimum(n_relevant, n)
    return float(recall.mean()), float((dcg / ideal).mean())


def prequential(learner_factory, events: Events, warmup: float, chunk: int, n=TOP_N):
    """HR@n and MRR of scoring each event before it is learned.

    The first ``warmup`` share of the events is learned unscored; then, chunk by chunk,
    each event's item is ranked against all items outside the user's history as of
    the chunk's start, and the chunk is learned. An event whose user the learner
    cannot score yet counts as a miss.
    """
    learner = learner_factory()
    n_events = len(events.users)
    start = int(n_events * warmup)
    learner.learn(events.users[:start], events.items[:start])
    seen = np.zeros((events.n_users, events.n_items), bool)
    seen[events.users[:start], events.items[:start]] = True

    hits, reciprocal = 0.0, 0.0
    for lo in range(start, n_events, chunk):
        hi = min(lo + chunk, n_events)
        users, items = events.users[lo:hi], events.items[lo:hi]
        scores = learner.scores(users)  # (hi - lo, n_items), -inf where unknown
        scores[seen[users]] = -np.inf
        target = scores[np.arange(len(users)), items]
        known = np.isfinite(target)
        rank = (scores > target[:, None]).sum(axis=1)  # 0 = first
        hits += np.sum(known & (rank < n))
        reciprocal += np.sum(np.where(known, 1.0 / (rank + 1), 0.0))
        learner.learn(users, items)
        seen[users, items] = True
    n_scored = n_events - start
    return hits / n_scored, reciprocal / n_scored


# ---------------------------------------------------------------------------
# Methods. Each train function returns (epochs, scorer), scorer(users) -> scores in
# dense item columns, -inf for items the method never saw.

def cosine(a, b):
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def model_scores(model: Interact2Vec, events: Events, users):
    """Our model's scores (its own cosine or dot setting) in dense item columns."""
    user_rows = np.full(events.n_users, -1)
    user_rows[np.asarray(model.user_ids, dtype=np.int64)] = np.arange(model.n_users)
    columns = np.asarray(model.item_ids, dtype=np.int64)
    vectors = model.user_vectors[np.maximum(user_rows[users], 0)]
    items = model.item_vectors
    raw = cosine(vectors, items) if model.scoring == "cosine" else vectors @ items.T
    scores = np.full((len(users), events.n_items), -np.inf)
    scores[:, columns] = raw
    scores[user_rows[users] < 0] = -np.inf
    return scores


def our_params(args, window):
    return dict(dim=args.dim, negatives=args.negatives, window=window, alpha=0.75,
                sample=1e-3, seed=args.seed)


def train_ours_offline(args, window):
    def train(events: Events, users, items):
        model = Interact2Vec(**our_params(args, window))
        model.fit(users, items, epochs=args.epochs, workers=args.workers, progress=False)
        return args.epochs, lambda u: model_scores(model, events, u)
    return train


def train_ours_online(args):
    def train(events: Events, users, items):
        model = Interact2Vec(**our_params(args, 0))
        model.learn_many(users, items)
        return 1, lambda u: model_scores(model, events, u)
    return train


class OnlineOurs:
    def __init__(self, args, events):
        self.model = Interact2Vec(**our_params(args, 0))
        self.events = events

    def learn(self, users, items):
        self.model.learn_many(users, items)

    def scores(self, users):
        return model_scores(self.model, self.events, users)


class OnlinePopular:
    def __init__(self, events):
        self.counts = np.zeros(events.n_items)

    def learn(self, users, items):
        np.add.at(self.counts, items, 1)

    def scores(self, users):
        return np.repeat(self.counts[None, :], len(users), axis=0)


def train_popular(events: Events, users, items):
    counts = np.bincount(items, minlength=events.n_items).astype(np.float64)
    return 1, lambda u: np.repeat(counts[None, :], len(u), axis=0)


def gensim_documents(users, items):
    """One TaggedDocument per user: tag = user, words = the user's items in time order."""
    from gensim.models.doc2vec import TaggedDocument

    order = np.argsort(users, kind="stable")
    users_sorted, items_sorted = users[order], items[order]
    cuts = np.flatnonzero(users_sorted[1:] != users_sorted[:-1]) + 1
    return [TaggedDocument([str(i) for i in group], [str(u)])
            for u, group in zip(users_sorted[np.r_[0, cuts]], np.split(items_sorted, cuts))]


def train_gensim(args, scoring, **config):
    """gensim PV-DBOW; ``scoring`` is "input" (cosine with model.wv) or "output"
    (dot with model.syn1neg, the matrix the user vectors were trained against)."""
    def train(events: Events, users, items):
        from gensim.models.doc2vec import Doc2Vec

        documents = gensim_documents(users, items)
        options = dict(config)
        window = options.pop("window", 5)
        if window == "history":
            # Every item of a user's history is in every other item's window.
            window = max(len(d.words) for d in documents)
        # min_count=1: the default 5 would drop items that the split keeps.
        model = Doc2Vec(documents, dm=0, window=window, negative=args.negatives,
                        ns_exponent=0.75, sample=1e-3, vector_size=args.dim,
                        epochs=args.epochs, workers=args.workers, min_count=1,
                        seed=args.seed, **options)

        def scorer(u):
            columns = np.array([int(w) for w in model.wv.index_to_key])
            tags = [str(x) for x in u]
            vectors = np.stack([model.dv[t] if t in model.dv.key_to_index
                                else np.full(args.dim, np.nan, np.float32) for t in tags])
            output = {}
            if "input" in scoring:
                output["input"] = cosine(vectors, model.wv.vectors)
            if "output" in scoring:
                output["output"] = vectors @ model.syn1neg.T
            result = {}
            for name, raw in output.items():
                scores = np.full((len(u), events.n_items), -np.inf)
                scores[:, columns] = np.nan_to_num(raw, nan=-np.inf)
                result[name] = scores
            return result
        return args.epochs, scorer
    return train


def train_implicit(args, kind):
    def train(events: Events, users, items):
        import scipy.sparse
        from threadpoolctl import threadpool_limits

        matrix = scipy.sparse.csr_matrix(
            (np.ones(len(users), np.float32), (users, items)),
            shape=(events.n_users, events.n_items))
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        # implicit runs its own threads; a threaded BLAS underneath would oversubscribe
        # (implicit warns about it when the model is built, hence the scope).
        with threadpool_limits(1, "blas"):
            if kind == "als":
                from implicit.cpu.als import AlternatingLeastSquares
                model = AlternatingLeastSquares(factors=64, iterations=15,
                                                random_state=args.seed,
                                                num_threads=args.workers)
                iterations = 15
            else:
                from implicit.cpu.bpr import BayesianPersonalizedRanking
                model = BayesianPersonalizedRanking(factors=100, iterations=100,
                                                    random_state=args.seed,
                                                    num_threads=args.workers)
                iterations = 100
            model.fit(matrix, show_progress=False)
        user_factors, item_factors = model.user_factors, model.item_factors
        return iterations, lambda u: user_factors[u] @ item_factors.T
    return train


@dataclass
class Method:
    name: str
    train: Callable
    # Scorers a train returns as a dict get one row per key, named by these labels.
    variants: dict = field(default_factory=dict)
    pair: str | None = None        # name of the gensim row this speed is compared with
    online: Callable | None = None  # factory of a prequential learner


def methods(args, events):
    rows = [
        Method("i2v offline window=0", train_ours_offline(args, 0), pair="gensim dbow_words=0"),
        Method("i2v offline window=5", train_ours_offline(args, 5),
               pair="gensim dbow_words=1 window=5"),
        Method("i2v online one pass", train_ours_online(args),
               online=lambda: OnlineOurs(args, events)),
        Method("gensim dbow_words=0", train_gensim(args, ("output",), dbow_words=0),
               variants={"output": "gensim dbow_words=0"}),
        Method("gensim dbow_words=1 window=5",
               train_gensim(args, ("input", "output"), dbow_words=1, window=5),
               variants={"output": "gensim dbow_words=1 window=5 (user x syn1neg)",
                         "input": "gensim dbow_words=1 window=5 (cos user, wv)"}),
    ]
    if not args.skip_authors:
        rows.append(Method(
            "gensim authors (window=history)",
            train_gensim(args, ("input", "output"), dbow_words=1, window="history"),
            variants={"input": "gensim authors (cos user, wv)",
                      "output": "gensim authors (user x syn1neg)"}))
    rows += [
        Method("implicit ALS 64f 15it", train_implicit(args, "als")),
        Method("implicit BPR 100f 100it", train_implicit(args, "bpr")),
        Method("most popular", train_popular, online=lambda: OnlinePopular(events)),
    ]
    return rows


# ---------------------------------------------------------------------------

def blas_report():
    import scipy.linalg  # noqa: F401  (so that threadpoolctl sees scipy's BLAS)
    from threadpoolctl import threadpool_info

    return [f"{Path(i['filepath']).name} ({i.get('architecture')}, {i['num_threads']} threads)"
            for i in threadpool_info() if i.get("user_api") == "blas"]


def main(argv=None):
    args = parse_args(argv)
    events = load_events(args.data)
    test = temporal_split(events, args.holdout)
    train_users, train_items = events.users[~test], events.items[~test]
    test_users, test_items = events.users[test], events.items[test]
    n_train = int((~test).sum())

    print(f"data: {args.data} events={len(events.users)} users={events.n_users} "
          f"items={events.n_items} train={n_train} test={int(test.sum())}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; BLAS: "
          + "; ".join(blas_report()))
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if name in os.environ:
            print(f"note: {name}={os.environ[name]} is set; it changes the BLAS kernel")
    print(f"dim={args.dim} negatives={args.negatives} epochs={args.epochs} "
          f"workers={args.workers} repeats={args.repeats}")

    results = []
    for method in methods(args, events):
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            epochs, scorer = method.train(events, train_users, train_items)
            seconds.append(time.perf_counter() - start)
        median = statistics.median(seconds)
        rate = n_train * epochs / median

        # Quality comes from the last run's model (seeded methods give the same one).
        scored = scorer(np.unique(test_users))
        if not isinstance(scored, dict):
            scored = {None: scored}
        full_scores = {}
        for key, block in scored.items():
            matrix = np.full((events.n_users, events.n_items), -np.inf)
            matrix[np.unique(test_users)] = block
            full_scores[key] = matrix

        hr = mrr = None
        if method.online is not None:
            hr, mrr = prequential(method.online, events, args.warmup, args.chunk)

        for key, matrix in full_scores.items():
            recall, ndcg = ranking_metrics(matrix, train_users, train_items,
                                           test_users, test_items)
            results.append(dict(
                method=method.variants.get(key, method.name), speed_key=method.name,
                seconds=median, all_seconds=seconds, epochs=epochs,
                interactions_per_second=rate, recall=recall, ndcg=ndcg,
                prequential_hr=hr, prequential_mrr=mrr, pair=method.pair))
            print(f"  done {results[-1]['method']}: {median:.2f} s, NDCG@10 {ndcg:.4f}",
                  flush=True)

    by_speed = {r["speed_key"]: r["interactions_per_second"] for r in results}
    for row in results:
        row["ratio_to_gensim"] = (row["interactions_per_second"] / by_speed[row["pair"]]
                                  if row["pair"] in by_speed else None)

    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(dict(
            data=str(args.data), n_events=len(events.users), n_train=n_train,
            holdout=args.holdout, warmup=args.warmup, chunk=args.chunk,
            dim=args.dim, negatives=args.negatives, epochs=args.epochs,
            workers=args.workers, repeats=args.repeats, blas=blas_report(),
            rows=results), indent=2))


def print_table(results):
    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    header = (f"{'method':<46} {'train s':>8} {'inter/s':>10} {'ratio':>6} "
              f"{'R@10':>7} {'NDCG@10':>8} {'preq HR@10':>10} {'preq MRR':>8}")
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['method']:<46} {r['seconds']:>8.2f} {r['interactions_per_second']:>10,.0f} "
              f"{fmt(r['ratio_to_gensim'], '.2f'):>6} {r['recall']:>7.4f} {r['ndcg']:>8.4f} "
              f"{fmt(r['prequential_hr'], '.4f'):>10} {fmt(r['prequential_mrr'], '.4f'):>8}")


if __name__ == "__main__":
    main()
