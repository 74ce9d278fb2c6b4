"""Precision, recall and F1 per label: how built-in and trained models are measured, in the
tests, the benchmarks and training reports alike."""

from collections.abc import Hashable, Iterable


def per_label(
    gold: Iterable[tuple[Hashable, str]], predicted: Iterable[tuple[Hashable, str]]
) -> dict[str, dict[str, float]]:
    """`{label: {"precision", "recall", "f1", "support"}}` over `(item, label)` pairs: an
    item is a sentence's chunk, a pair of chunks, whatever the labels are given to."""
    gold, predicted = set(gold), set(predicted)
    scores = {}
    for label in sorted({lab for _, lab in gold | predicted}):
        g = {item for item, lab in gold if lab == label}
        p = {item for item, lab in predicted if lab == label}
        hits = len(g & p)
        precision = hits / len(p) if p else 0.0
        recall = hits / len(g) if g else 0.0
        f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
        scores[label] = {
            "precision": round(precision, 3),
            "recall": round(recall, 3),
            "f1": round(f1, 3),
            "support": len(g),
        }
    return scores
