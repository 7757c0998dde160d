"""LightGBM on exactly the rows, columns, split and params of a `train` node (bench/train_gbdt.sh).

usage: lgbm_same_table.py FEATURES.parquet LABELS.parquet METRICS.json
"""
import json
import statistics
import sys
import time

import lightgbm as lgb
import numpy as np
import polars as pl



def roc_auc_score(labels, scores):
    """Mann-Whitney AUC with average ranks for ties (what scikit-learn computes)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos = labels == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return (ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


features_path, labels_path, metrics_path = sys.argv[1:4]
metrics = json.load(open(metrics_path))
cols, label = metrics["features"], metrics["label"]
split = metrics["split"]
purge_ms = split["purge_minutes"] * 60_000
frame = pl.read_parquet(features_path).join(pl.read_parquet(labels_path), on="timestamp", how="left")
frame = frame.filter(pl.col(label).is_not_null()).sort("timestamp")
t = frame["timestamp"].dt.epoch("ms").to_numpy()
train_until = int(np.datetime64(split["train_until"].rstrip("Z"), "ms").astype(np.int64))
valid_until = int(np.datetime64(split["valid_until"].rstrip("Z"), "ms").astype(np.int64))
train = (t < train_until) & (t + purge_ms < train_until)
valid = (t >= train_until) & (t < valid_until) & (t + purge_ms < valid_until)
test = t >= valid_until
x = frame.select(cols).to_numpy().astype(np.float64)
y = frame[label].to_numpy().astype(np.float64)
print(f"rows train/valid/test {train.sum()}/{valid.sum()}/{test.sum()} (ours: {split['rows']})")
params = dict(objective="binary", learning_rate=0.05, num_leaves=31, max_depth=6, min_sum_hessian_in_leaf=20.0,
              lambda_l2=1.0, min_data_in_leaf=1, num_threads=2, deterministic=True, verbose=-1, seed=0)
for stopping in (30, 0):
    times, auc, best = [], None, None
    for _ in range(5):
        start = time.perf_counter()
        booster = lgb.train(params, lgb.Dataset(x[train], y[train]), num_boost_round=200,
                            valid_sets=[lgb.Dataset(x[valid], y[valid])],
                            callbacks=[lgb.early_stopping(stopping, verbose=False)] if stopping else [])
        times.append(time.perf_counter() - start)
        best = booster.best_iteration or 200
        auc = roc_auc_score(y[test], booster.predict(x[test], num_iteration=best))
    print(f"LightGBM {lgb.__version__} early_stopping={stopping}: train s min/median/max "
          f"{min(times):.3f}/{statistics.median(times):.3f}/{max(times):.3f}, best_iteration {best}, test_auc {auc:.4f}")
