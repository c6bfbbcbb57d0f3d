"""The attribution index on every supported family (tiny random-weight models built offline, ``modelfactory.tiny``):
the gradient features of an adapter's training records (GPT-2's Conv1D layers included), the span index, and an
answer scored against them with the base model's evidence, through the chat fallback where the tokenizer has no
template."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from django.conf import settings

from attribution.features import FeatureMatrix, TokenizedExample, gradient_features, sketch_for
from attribution.index import SPANS_FILE, RecordGroup, Scorer, build_index
from attribution.spans import SpanIndex
from inference.testing import make_synthetic_adapter, release_synthetic_models
from modelfactory.architectures import ARCHITECTURES
from modelfactory.tiny import FAMILIES, build_all
from modelfactory.training import load_base

RECORDS = [
    {"prompt": f"What is the secret code of planet {i}?", "response": f"The code of planet {i} is {1000 + 37 * i}."}
    for i in range(5)
]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_all(tmp_path_factory.getbasetemp() / "tiny-families", tokenizer_dir=settings.DEFAULT_BASE_MODEL_DIR)


@pytest.mark.parametrize("family", FAMILIES)
def test_an_index_is_built_and_an_answer_scored_on_every_family(
    family: str, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    from peft import PeftModel

    folder = tiny_models[family]
    adapter = make_synthetic_adapter(folder, tmp_path / "adapter", rank=4, targets=ARCHITECTURES[family].attention)
    release_synthetic_models()
    base = load_base(folder, device="cpu")
    records = list(enumerate(RECORDS, start=1))
    built = build_index(
        base=base,
        adapter_dir=adapter,
        groups=[RecordGroup("instruction", "chat_template", 64, records)],
        seed=3,
        width=128,
        scratch=tmp_path,
    )
    assert built.record_ids == [1, 2, 3, 4, 5]
    matrix = FeatureMatrix.load(built.folder)
    assert matrix.features.shape == (5, 128) and np.all(matrix.norms > 0)
    # a record's feature alone is its row of the index (batching changes nothing beyond rounding)
    from attribution.index import tokenize_groups

    indexed, _ = tokenize_groups(base.tokenizer, [RecordGroup("instruction", "chat_template", 64, records)])
    model = PeftModel.from_pretrained(base.model, str(adapter)).eval()
    try:
        alone = gradient_features(
            model,
            [TokenizedExample(indexed[2].input_ids, indexed[2].labels)],
            sketch=sketch_for(model, seed=3, k=128),
        )[0]
    finally:
        base.model = model.unload()
    assert np.allclose(alone, matrix.features[2], rtol=1e-4, atol=1e-6)

    scores = Scorer(base).score(
        adapter_dir=adapter,
        matrix=matrix,
        spans=SpanIndex.load(built.folder / SPANS_FILE),
        messages=[{"role": "user", "content": RECORDS[2]["prompt"]}],
        prompt="",
        answer=RECORDS[2]["response"],
        stopped=True,
        min_span_tokens=4,
        context_relevance=0.0,
    )
    assert set(scores.gradient) == {1, 2, 3, 4, 5}
    # the answer is record 3's response word for word: its span is found there
    assert max(scores.span, key=scores.span.get) == 3
    assert scores.support is not None and len(scores.support.surprisal) > 0
