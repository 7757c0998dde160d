"""The walk-forward loop of pipelines/walk_forward.toml written in Python (pandas + LightGBM + a
vectorised backtest), on the tables the pipeline built (bench/walk_forward.sh): for each test day
and feature set, an expanding training window with validation (early stopping) at its end, purged
on the label's 15-minute interval; predictions on the test day; pooled AUC; positions from the
same thresholds, filled at the next bar's open; fees and slippage on position changes.

usage: walk_forward.py FEATURES NEWS LABELS BARS FIRST_TEST UNTIL
"""
import sys
import time

import lightgbm as lgb
import numpy as np
import pandas as pd

t_start = time.perf_counter()
features, news, labels, bars = (pd.read_parquet(p) for p in sys.argv[1:5])
first_test, until = pd.Timestamp(sys.argv[5], tz="UTC"), pd.Timestamp(sys.argv[6], tz="UTC")
frame = features.merge(news, on="timestamp", how="left").merge(labels, on="timestamp", how="left")
frame = frame.set_index("timestamp").sort_index()
label, horizon = "label_dir_15", pd.Timedelta(minutes=15)
all_cols = [c for c in frame.columns if not c.startswith("label_") and frame[c].dtype.kind in "fiub"]
sets = {"with_news": all_cols, "price_only": [c for c in all_cols if not c.startswith("news_")]}
params = dict(n_estimators=300, learning_rate=0.05, max_depth=6, num_leaves=31, min_child_weight=20.0,
              reg_lambda=1.0, verbose=-1, n_jobs=2)
labelled = frame[frame[label].notna()]
ends = labelled.index + horizon
pooled = {name: [] for name in sets}
fits = 0
day = first_test
while day + pd.Timedelta(days=1) <= until:
    test_end = day + pd.Timedelta(days=1)
    train_span = labelled.index < day
    start = labelled.index[0]
    valid_from = (start + (day - start) * 0.8).floor("h")
    tr = train_span & (labelled.index < valid_from) & (ends < valid_from)
    va = train_span & (labelled.index >= valid_from) & (ends < day)
    te = (labelled.index >= day) & (labelled.index < test_end)
    y = labelled[label].astype(int)
    for name, cols in sets.items():
        m = lgb.LGBMClassifier(**params)
        m.fit(labelled.loc[tr, cols], y[tr], eval_set=[(labelled.loc[va, cols], y[va])],
              callbacks=[lgb.early_stopping(30, verbose=False)])
        p = m.predict_proba(labelled.loc[te, cols])[:, 1]
        pooled[name].append(pd.Series(p, index=labelled.index[te]))
        fits += 1
    day = test_end
t_fit = time.perf_counter()


def auc(y, s):
    r = pd.Series(s).rank().to_numpy()
    pos = y == 1
    return (r[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum())


bars = bars.set_index("timestamp").sort_index()
out = []
for name, parts in pooled.items():
    p = pd.concat(parts)
    yv = labelled.loc[p.index, label].astype(int).to_numpy()
    window = bars.loc[p.index[0]:p.index[-1]]
    prob = p.reindex(window.index)
    side = np.where(prob > 0.55, 1, np.where(prob < 0.45, -1, 0))
    # Decided at bar t's close, held from bar t+1's open; fees and slippage per unit of position change.
    held = pd.Series(side, index=window.index).shift(1).fillna(0).to_numpy()
    bar_ret = (window.close / window.open - 1).to_numpy()
    gap_ret = (window.open / window.close.shift(1) - 1).fillna(0).to_numpy()
    prev = np.concatenate([[0], held[:-1]])
    costs = np.abs(held - prev) * (5 + 1) * 1e-4
    r = held * bar_ret + prev * gap_ret - costs
    equity = np.cumprod(1 + r)
    out.append(f"{name}: auc {auc(yv, p.to_numpy()):.4f} total return {equity[-1] - 1:+.4f}")
t_end = time.perf_counter()
print(f"python walk-forward: {fits} fits, load {t_fit - t_start:.2f}s incl. fits, total {t_end - t_start:.2f}s; " + "; ".join(out))
