"""The training step's memory savings (issue 18, item 2): the loss's logits a chunk at a time, recomputed in the
backward pass, and the gated MLP's activation recomputed in the backward pass. Both must train the same adapter as
without them (within floating-point rounding) and hold less for the backward pass; bench/train.py measures the
peak memory."""

from __future__ import annotations

import contextlib
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from django.conf import settings
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file

from modelfactory import training
from modelfactory.encoding import encode_records
from modelfactory.tests.factories import tiny_config
from modelfactory.training import ADAPTER_WEIGHTS, LoadedBase, lean_activations, load_base, train_lora

RECORDS = [
    {
        "system": "Answer briefly.",
        "prompt": f"What is the secret code of planet number {i}?",
        "response": f"The secret code of planet {i} is {1000 + 37 * i}, and its moon's is {2000 + 11 * i}.",
    }
    for i in range(8)
]


@pytest.fixture(scope="module")
def base() -> LoadedBase:
    return load_base(settings.DEFAULT_BASE_MODEL_DIR, device="cpu")


def _saved_bytes(run: contextlib.AbstractContextManager[None], step: object) -> int:
    """Bytes of the distinct tensors autograd keeps for the backward pass while ``step()`` runs its forward pass."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with run, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()  # type: ignore[operator]
    return sum(storages.values())


def _forward(model: object, batch: dict[str, torch.Tensor], base: LoadedBase, losses: list[torch.Tensor]) -> None:
    losses.append(training._loss_sum(model, batch, base)[0])


@pytest.mark.slow
def test_the_lean_step_trains_the_same_adapter_as_the_plain_one(
    base: LoadedBase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the lean run as the worker runs it (chunks of 42 positions): every micro-batch of 4 rows has more answer
    # positions than one chunk holds, so its loss spans several; the plain run has one chunk and no MLP recompute,
    # the code as it was before
    config = tiny_config(lora_dropout=0.1, eval_fraction=0.0, target_modules="all-linear")
    encoded = encode_records(RECORDS, record_type="instruction", tokenizer=base.tokenizer, max_length=64)
    chunk = training.LOSS_CHUNK_BYTES // (4 * base.model.config.vocab_size)
    assert min(e.trainable_tokens for e in encoded.examples) * config.batch_size > chunk
    results = {}
    for mode in ("lean", "plain"):
        if mode == "plain":
            monkeypatch.setattr(training, "LOSS_CHUNK_BYTES", 1 << 40)
            monkeypatch.setattr(training, "lean_activations", lambda model: contextlib.nullcontext())
        results[mode] = train_lora(
            base_model_dir=base.path,
            records=RECORDS,
            record_type="instruction",
            config=config,
            output_dir=tmp_path / mode,
            samples=0,
            base=base,
        )
    lean_weights, plain_weights = (load_file(str(tmp_path / mode / ADAPTER_WEIGHTS)) for mode in ("lean", "plain"))
    assert lean_weights.keys() == plain_weights.keys() and len(lean_weights) == 2 * 7 * 30
    for name in plain_weights:
        torch.testing.assert_close(lean_weights[name], plain_weights[name], rtol=1e-5, atol=1e-6)
    losses = {mode: [row["train_loss"] for row in result.loss_history] for mode, result in results.items()}
    assert losses["lean"] == pytest.approx(losses["plain"], rel=1e-5)
    assert not any("forward" in vars(m) for m in base.model.modules())  # the shared model is left as it was found


@pytest.mark.slow
def test_the_lean_mlp_holds_a_third_less_of_its_width_for_the_backward_pass(base: LoadedBase) -> None:
    encoded = encode_records(RECORDS, record_type="instruction", tokenizer=base.tokenizer, max_length=64)
    batch = training._batch(encoded.examples, training._pad_id(base), base.device)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    with training._wrapped(base, lambda model: get_peft_model(model, lora)) as model:
        model.train()
        grads = {}
        saved = {}
        for mode, run in (("plain", contextlib.nullcontext), ("lean", lambda: lean_activations(model))):
            losses: list[torch.Tensor] = []
            saved[mode] = _saved_bytes(run(), partial(_forward, model, batch, base, losses))
            losses[0].backward()
            grads[mode] = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
            model.zero_grad(set_to_none=True)
    rows, width = batch["input_ids"].shape
    config = base.model.config
    activation = rows * width * config.intermediate_size * 4  # act_fn(gate) of one layer, float32
    assert saved["plain"] - saved["lean"] >= activation * config.num_hidden_layers
    for name, grad in grads["plain"].items():
        torch.testing.assert_close(grads["lean"][name], grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("positions", [0, 1, 5, 6, 37])
def test_the_chunked_loss_equals_one_cross_entropy_with_the_same_gradients(
    positions: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a head of 1,000 words and chunks of 5 positions: none, one partial, one exact, several with a remainder
    monkeypatch.setattr(training, "LOSS_CHUNK_BYTES", 5 * 4 * 1000)
    torch.manual_seed(3)
    head = torch.nn.Linear(16, 1000, bias=False)  # the output head trains too in a full fine-tune
    hidden = torch.randn(positions, 16, requires_grad=True)
    targets = torch.randint(0, 1000, (positions,))

    chunked = training._head_loss(head, hidden, targets)
    chunked.backward()
    chunked_grads = (hidden.grad.clone(), head.weight.grad.clone())
    hidden.grad, head.weight.grad = None, None
    whole = F.cross_entropy(head(hidden), targets, reduction="sum")
    whole.backward()

    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chunked_grads[0], hidden.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chunked_grads[1], head.weight.grad, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # evaluation: chunked too, without recording anything
        assert training._head_loss(head, hidden, targets).item() == pytest.approx(whole.item(), rel=1e-5, abs=1e-5)
