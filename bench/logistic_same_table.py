"""scikit-learn's LogisticRegression (lbfgs, C = 1/alpha) on exactly the rows, columns, fill and
scaling of a `train` node with model = "logistic" (bench/logistic.sh), next to that node's fit.

usage: logistic_same_table.py FEATURES.parquet LABELS.parquet METRICS.json MODEL.json
"""
import json
import statistics
import sys
import time

import numpy as np
import pandas as pd
import sklearn
from sklearn.linear_model import LogisticRegression

features_path, labels_path, metrics_path, model_path = sys.argv[1:5]
metrics, model = json.load(open(metrics_path)), json.load(open(model_path))
cols, label = metrics["features"], metrics["label"]
split = metrics["split"]
purge_ms = split["purge_minutes"] * 60_000
frame = pd.read_parquet(features_path).merge(pd.read_parquet(labels_path), on="timestamp", how="left")
frame = frame[frame[label].notna()].sort_values("timestamp")
t = ((frame["timestamp"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)).to_numpy()
train_until = int(pd.Timestamp(split["train_until"]).value // 1_000_000)
train = (t < train_until) & (t + purge_ms < train_until)
x = frame[cols].to_numpy(dtype=np.float64)[train]
y = frame[label].to_numpy(dtype=np.float64)[train]
# The node's own fill and scaling, from its model file.
fill, center, scale = (np.array(model[k]) for k in ("fill", "center", "scale"))
x = np.where(np.isfinite(x), x, fill)
x = (x - center) / scale
ours = np.array(model["fitted"]["weights"])
print(f"train rows {train.sum()} (ours: {split['rows']['train']}), {len(cols)} features; scikit-learn {sklearn.__version__}")
for tol in (1e-4, 1e-8):
    times = []
    for _ in range(5):
        start = time.perf_counter()
        m = LogisticRegression(C=1.0, solver="lbfgs", tol=tol, max_iter=10_000).fit(x, y)
        times.append(time.perf_counter() - start)
    diff = np.abs(m.coef_[0] - ours).max()
    print(f"scikit-learn lbfgs tol={tol:g}: fit s min/median/max {min(times):.3f}/{statistics.median(times):.3f}/{max(times):.3f}, "
          f"iterations {m.n_iter_[0]}, max |weight - ours| {diff:.2e}")
