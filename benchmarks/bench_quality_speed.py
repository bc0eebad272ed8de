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
from i2v_stream.baselines import MostPopular, OnlinePopular  # noqa: E402
from i2v_stream.data import Interactions, read_interactions  # noqa: E402
from i2v_stream.evaluation import evaluate_split, prequential, temporal_split  # noqa: E402

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
# Methods. Each train function takes the train Interactions and returns
# (epochs, scorers): scorers maps a label suffix (None for a method's only row) to
# anything i2v_stream.evaluation.evaluate_split accepts, with its keyword arguments.

def our_params(args, window, **extra):
    """gensim's objective and settings (no L2, its learning rate); the rest at defaults."""
    params = dict(dim=args.dim, negatives=args.negatives, window=window, alpha=0.75,
                  sample=1e-3, l2=0.0, learning_rate=0.025, seed=args.seed)
    params.update(extra)
    return params


def train_ours_defaults(args):
    """The model at its own defaults (its epochs, L2, no subsampling): the quality row."""
    def train(train: Interactions):
        model = Interact2Vec(dim=args.dim, negatives=args.negatives, seed=args.seed)
        model.fit(train.users, train.items, train.timestamps, workers=args.workers,
                  progress=False)
        return model.epochs, {None: (model, dict(metric=model.scoring))}
    return train


def train_ours_offline(args, window, **extra):
    def train(train: Interactions):
        model = Interact2Vec(**our_params(args, window, **extra))
        model.fit(train.users, train.items, train.timestamps, epochs=args.epochs,
                  workers=args.workers, progress=False)
        return args.epochs, {None: (model, dict(metric=model.scoring))}
    return train


def our_online_model(args):
    """The online learner at the model's defaults."""
    return Interact2Vec(dim=args.dim, negatives=args.negatives, seed=args.seed)


def train_ours_online(args):
    def train(train: Interactions):
        model = our_online_model(args)
        model.learn_many(train.users, train.items, train.timestamps)
        return 1, {None: (model, dict(metric=model.scoring))}
    return train


def train_popular(train: Interactions):
    model = MostPopular().fit(train.users, train.items, train.timestamps)
    return 1, {None: (model, {})}


def gensim_documents(train: Interactions):
    """One TaggedDocument per user: tag = user, words = the user's items in time order."""
    from gensim.models.doc2vec import TaggedDocument

    ordered = train.sort_by_time()
    histories: dict = {}
    for user, item in zip(ordered.users.tolist(), ordered.items.tolist()):
        histories.setdefault(user, []).append(str(item))
    return [TaggedDocument(words, [str(user)]) for user, words in histories.items()]


def train_gensim(args, scorings, **config):
    """gensim PV-DBOW. ``scorings``: "input" scores cosine(user vector, model.wv), the
    exported item vectors; "output" scores user vector . model.syn1neg row, the item
    matrix the user vectors were trained against."""
    def train(train: Interactions):
        from gensim.models.doc2vec import Doc2Vec

        documents = gensim_documents(train)
        options = dict(config)
        if options.get("window") == "history":
            # Every item of a user's history is in every other item's window.
            options["window"] = max(len(d.words) for d in documents)
        # min_count=1: the default 5 would drop items that the split keeps.
        model = Doc2Vec(documents, dm=0, negative=args.negatives, ns_exponent=0.75,
                        sample=1e-3, vector_size=args.dim, epochs=args.epochs,
                        workers=args.workers, min_count=1, seed=args.seed, **options)

        user_ids = [int(tag) for tag in model.dv.index_to_key]
        item_ids = [int(word) for word in model.wv.index_to_key]
        user_vectors = model.dv.vectors
        matrices = {"input": _unit_rows(model.wv.vectors), "output": model.syn1neg}
        scorers = {}
        for name in scorings:
            items = matrices[name]
            if name == "input":
                def scores(rows, items=items):
                    return _unit_rows(user_vectors[rows]) @ items.T
            else:
                def scores(rows, items=items):
                    return user_vectors[rows] @ items.T
            scorers[name] = (scores, dict(user_ids=user_ids, item_ids=item_ids))
        return args.epochs, scorers
    return train


def train_implicit(args, kind):
    def train(train: Interactions):
        import scipy.sparse
        from threadpoolctl import threadpool_limits

        user_ids, user_rows = np.unique(train.users, return_inverse=True)
        item_ids, item_rows = np.unique(train.items, return_inverse=True)
        matrix = scipy.sparse.csr_matrix(
            (np.ones(len(user_rows), np.float32), (user_rows, item_rows)),
            shape=(len(user_ids), len(item_ids)))
        matrix.sum_duplicates()
        matrix.data[:] = 1.0  # implicit feedback: a repeat is not a stronger signal

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

        def scores(rows):
            return user_factors[rows] @ item_factors.T
        return iterations, {None: (scores, dict(user_ids=user_ids, item_ids=item_ids))}
    return train


def _unit_rows(matrix):
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


@dataclass
class Method:
    name: str
    train: Callable
    # Rows of a method with several scorers, by scorer key (see train_gensim).
    variants: dict = field(default_factory=dict)
    pair: str | None = None         # the gensim method this speed is compared with
    online: Callable | None = None  # factory of a fresh learner for the prequential run


def methods(args):
    rows = [
        Method("i2v offline, model defaults", train_ours_defaults(args)),
        Method("i2v offline window=0", train_ours_offline(args, 0), pair="gensim dbow_words=0"),
        # Pure cosine(user, item), as the paper scores: no popularity term added.
        Method("i2v offline window=0, popularity_prior=0",
               train_ours_offline(args, 0, popularity_prior=0.0)),
        Method("i2v offline window=5", train_ours_offline(args, 5),
               pair="gensim dbow_words=1 window=5"),
        Method("i2v online one pass", train_ours_online(args),
               online=lambda: our_online_model(args)),
        Method("gensim dbow_words=0", train_gensim(args, ("output",), dbow_words=0),
               variants={"output": "gensim dbow_words=0 (user x syn1neg)"}),
        Method("gensim dbow_words=1 window=5",
               train_gensim(args, ("input", "output"), dbow_words=1, window=5),
               variants={"input": "gensim dbow_words=1 window=5 (cos user, wv)",
                         "output": "gensim dbow_words=1 window=5 (user x syn1neg)"}),
    ]
    if not args.skip_authors:
        rows.append(Method(
            "gensim authors (window=history)",
            train_gensim(args, ("input", "output"), dbow_words=1, window="history"),
            variants={"input": "gensim authors, window=history (cos user, wv)",
                      "output": "gensim authors, window=history (user x syn1neg)"}))
    rows += [
        Method("implicit ALS 64f 15it", train_implicit(args, "als")),
        Method("implicit BPR 100f 100it", train_implicit(args, "bpr")),
        Method("most popular", train_popular, online=OnlinePopular),
        # The usual cold-start fallback: users never seen get the popularity ranking
        # instead of the protocol's "unknown" miss.
        Method("most popular, unknown users scored", train_popular,
               online=lambda: OnlinePopular(score_unknown_users=True)),
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
    data = read_interactions(args.data).sort_by_time()
    train, test = temporal_split(data, args.holdout)
    n_users, n_items = len(np.unique(data.users)), len(np.unique(data.items))

    print(f"data: {args.data} events={len(data)} users={n_users} items={n_items} "
          f"train={len(train)} test={len(test)}")
    # The load average says whether other jobs shared the cores during the run.
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; BLAS: " + "; ".join(blas_report()))
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if name in os.environ:
            print(f"note: {name}={os.environ[name]} is set; it changes the BLAS kernel")
    print(f"dim={args.dim} negatives={args.negatives} epochs={args.epochs} "
          f"workers={args.workers} repeats={args.repeats}", flush=True)

    results = []
    for method in methods(args):
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            epochs, scorers = method.train(train)
            seconds.append(time.perf_counter() - start)
        median = statistics.median(seconds)

        online = None
        if method.online is not None:
            online = prequential(method.online(), data, TOP_N, warmup=args.warmup,
                                 chunk_size=args.chunk)
            online.pop("curve")

        # Quality comes from the last run's model (seeded methods give the same one).
        for key, (scorer, options) in scorers.items():
            split = evaluate_split(scorer, train, test, TOP_N, **options)
            results.append(dict(
                method=method.variants.get(key, method.name), speed_key=method.name,
                seconds=median, all_seconds=seconds, epochs=epochs,
                interactions_per_second=len(train) * epochs / median,
                recall=split["recall"], ndcg=split["ndcg"],
                prequential_hr=None if online is None else online["hit_rate"],
                prequential_mrr=None if online is None else online["mrr"],
                prequential_hr_warm=None if online is None else online["hit_rate_warm"],
                pair=method.pair, split=split, prequential=online))
            print(f"  done {results[-1]['method']}: {median:.2f} s, "
                  f"NDCG@10 {split['ndcg']:.4f}", flush=True)

    by_speed = {r["speed_key"]: r["interactions_per_second"] for r in results}
    for row in results:
        row["ratio_to_gensim"] = (row["interactions_per_second"] / by_speed[row["pair"]]
                                  if row["pair"] in by_speed else None)

    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(dict(
            data=str(args.data), n_events=len(data), n_train=len(train),
            holdout=args.holdout, warmup=args.warmup, chunk=args.chunk, dim=args.dim,
            negatives=args.negatives, epochs=args.epochs, workers=args.workers,
            repeats=args.repeats, blas=blas_report(), load_average_end=os.getloadavg()[0],
            rows=results), indent=2))


def print_table(results):
    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    header = (f"{'method':<50} {'train s':>8} {'inter/s':>10} {'ratio':>6} "
              f"{'R@10':>7} {'NDCG@10':>8} {'pHR@10':>7} {'warm':>7} {'pMRR':>7}")
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['method']:<50} {r['seconds']:>8.2f} {r['interactions_per_second']:>10,.0f} "
              f"{fmt(r['ratio_to_gensim'], '.2f'):>6} {r['recall']:>7.4f} {r['ndcg']:>8.4f} "
              f"{fmt(r['prequential_hr'], '.4f'):>7} {fmt(r['prequential_hr_warm'], '.4f'):>7} "
              f"{fmt(r['prequential_mrr'], '.4f'):>7}")
    print("ratio: our interactions/s over the paired gensim row's (window=0 vs dbow_words=0, "
          "window=5 vs dbow_words=1 window=5)")
    print("pHR@10, pMRR: prequential, every event (an 'unknown' answer is a miss); "
          "warm: HR@10 over events of users already seen")


if __name__ == "__main__":
    main()
