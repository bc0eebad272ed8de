"""The grid behind the model's defaults, on a validation split of ml-100k.

The test protocol of ``bench_quality_speed.py`` holds out each user's last 5
events; this script holds out the last 5 events of what remains (the
validation split), so that choosing defaults never looks at the test events.
It fits ``Interact2Vec`` for every combination of the grid and prints NDCG@10
and Recall@10 on the validation events, best first.

Usage::

    .venv/bin/python benchmarks/tune_defaults.py \\
        --grid '{"epochs": [20, 40], "l2": [0, 0.02], "learning_rate": [0.025, 0.04],
                 "popularity_prior": [0.75, 1.0]}'
"""

from __future__ import annotations

import argparse
import itertools
import json

from i2v_stream import Interact2Vec, evaluate_split, read_interactions, temporal_split

DEFAULT_DATA = "/work/shared/datasets/ml-100k/u.data"
DEFAULT_GRID = {"epochs": [20, 40], "l2": [0.0, 0.02], "learning_rate": [0.025, 0.04],
                "popularity_prior": [0.75, 1.0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--grid", type=json.loads, default=DEFAULT_GRID,
                        help="JSON object: hyperparameter -> list of values")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    train, _test = temporal_split(read_interactions(args.data).sort_by_time(), 5)
    fit_part, validation = temporal_split(train, 5)
    names = list(args.grid)
    rows = []
    for values in itertools.product(*(args.grid[name] for name in names)):
        params = dict(zip(names, values))
        model = Interact2Vec(**{"seed": args.seed, **params})
        model.fit(fit_part.users, fit_part.items, progress=False)
        result = evaluate_split(model, fit_part, validation, n=10)
        rows.append((result["ndcg"], result["recall"], params))
        print(f"ndcg@10={result['ndcg']:.4f} recall@10={result['recall']:.4f} {params}",
              flush=True)
    print("\nbest first:")
    for ndcg, recall, params in sorted(rows, key=lambda row: -row[0]):
        print(f"ndcg@10={ndcg:.4f} recall@10={recall:.4f} {params}")


if __name__ == "__main__":
    main()
