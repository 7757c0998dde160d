"""Score rows with a model exported by `pipeline export-model STAGE PATH`.

Python standard library only (numpy is not needed). The exported file is JSON in the format
`pipeline-portable-model/1` (docs/models.md); this module reproduces the program's stored
predictions to within 1e-12.

    import pipeline_model
    model = pipeline_model.load("out/gbdt.json")
    model.features                      # the feature names, in the order rows give them
    model.predict([[0.1, 2.0, ...], ...])        # rows as lists, in `features` order
    model.predict([{"rv_60": 0.1, ...}, ...])   # or as dicts by feature name
    # -> probabilities of label 1

Command line: python3 pipeline_model.py MODEL.json ROWS.csv  (a header naming the features;
extra columns are ignored) prints one probability per row.
"""

import csv
import json
import math
import sys

FORMAT = "pipeline-portable-model/1"


def _sigmoid(margin):
    return 1.0 / (1.0 + math.exp(-margin))


class Model:
    def __init__(self, spec):
        if spec.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file (format: {spec.get('format')!r})")
        self.spec = spec
        self.family = spec["family"]
        self.label = spec["label"]
        self.features = list(spec["features"])
        if self.family not in ("gbdt", "logistic"):
            raise ValueError(f"unknown model family {self.family!r}")

    def _vector(self, row):
        if isinstance(row, dict):
            missing = [f for f in self.features if f not in row]
            if missing:
                raise KeyError(f"row lacks features {missing[:5]}")
            return [float(row[f]) for f in self.features]
        if len(row) != len(self.features):
            raise ValueError(f"row has {len(row)} values, the model {len(self.features)} features")
        return [float(v) for v in row]

    def margin(self, row):
        x = self._vector(row)
        spec = self.spec
        if self.family == "gbdt":
            total = spec["base_score"]
            for tree in spec["trees"]:
                node = 0
                while not tree["is_leaf"][node]:
                    value = x[tree["split_feature"][node]]
                    if math.isnan(value):
                        node = tree["missing"][node]
                    elif value < tree["split_value"][node]:
                        node = tree["left"][node]
                    else:
                        node = tree["right"][node]
                total += tree["value"][node]
            return total
        # logistic: a missing or infinite value takes its fill, then (x - center) / scale.
        fill, center, scale = spec["fill"], spec["center"], spec["scale"]
        total = -0.0
        for j, weight in enumerate(spec["weights"]):
            v = x[j] if math.isfinite(x[j]) else (fill[j] if j < len(fill) else 0.0)
            c = center[j] if j < len(center) else 0.0
            s = scale[j] if j < len(scale) else 1.0
            total += weight * ((v - c) / s)
        return spec["intercept"] + total

    def predict(self, rows):
        return [_sigmoid(self.margin(row)) for row in rows]


def load(path):
    with open(path, encoding="utf-8") as f:
        return Model(json.load(f))


def _main(argv):
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: python3 pipeline_model.py MODEL.json ROWS.csv", file=sys.stderr)
        return 2
    model = load(argv[1])
    with open(argv[2], newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            values = {k: (float(v) if v not in ("", None) else math.nan) for k, v in row.items() if k in model.features}
            print(repr(model.predict([values])[0]))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
