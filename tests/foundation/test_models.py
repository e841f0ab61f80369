import pytest
import torch

from trustml.data import load_intent_task
from trustml.models import EmbeddingClassifier, TransformerClassifier, accuracy, predict, train_classifier
from trustml.models.classifiers import masked_mean


@pytest.fixture(scope="module")
def task():
    return load_intent_task(n_devices=150, seed=0)


SMALL = {EmbeddingClassifier: {}, TransformerClassifier: {"d_model": 32, "n_layers": 1, "d_ff": 64}}


@pytest.mark.parametrize("model_class", [EmbeddingClassifier, TransformerClassifier])
def test_models_learn_the_task(task, model_class):
    torch.manual_seed(0)
    model = model_class(task.tokenizer.vocab_size, task.num_classes, **SMALL[model_class])
    chance = 1 / task.num_classes
    before = accuracy(model, task.test)
    history = train_classifier(model, task.train, epochs=3, seed=0)
    assert history[-1] < history[0]
    assert accuracy(model, task.test) > max(0.6, before + 0.3, 10 * chance)


@pytest.mark.parametrize("model_class", [EmbeddingClassifier, TransformerClassifier])
def test_inputs_embeds_match_input_ids(task, model_class):
    torch.manual_seed(0)
    model = model_class(task.tokenizer.vocab_size, task.num_classes).eval()
    ids = task.test.tensors[0][:8]
    embeds = model.get_input_embeddings()(ids)
    mask = (ids != 0).long()
    torch.testing.assert_close(model(ids), model(inputs_embeds=embeds, attention_mask=mask))
    with pytest.raises(ValueError, match="exactly one"):
        model(ids, inputs_embeds=embeds)


def test_padding_does_not_change_predictions(task):
    torch.manual_seed(0)
    model = TransformerClassifier(task.tokenizer.vocab_size, task.num_classes, max_length=40).eval()
    ids = task.test.tensors[0][:4]
    padded = torch.cat([ids, torch.zeros(4, 10, dtype=torch.long)], dim=1)
    torch.testing.assert_close(model(ids), model(padded))


def test_masked_mean_matches_a_loop():
    hidden = torch.randn(3, 5, 2)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    out = masked_mean(hidden, mask)
    torch.testing.assert_close(out[0], hidden[0, :2].mean(0))
    torch.testing.assert_close(out[1], hidden[1].mean(0))
    torch.testing.assert_close(out[2], torch.zeros(2))


def test_model_errors(task):
    with pytest.raises(ValueError, match="vocab_size"):
        EmbeddingClassifier(0, 3)
    with pytest.raises(ValueError, match="divisible"):
        TransformerClassifier(10, 3, d_model=10, n_heads=4)
    model = TransformerClassifier(10, 3, max_length=4)
    with pytest.raises(ValueError, match="max_length"):
        model(torch.ones(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="optimizer"):
        train_classifier(model, task.train, optimizer="lbfgs")
    with pytest.raises(ValueError, match="epochs"):
        train_classifier(model, task.train, epochs=0)


def test_predict_restores_training_mode(task):
    model = EmbeddingClassifier(task.tokenizer.vocab_size, task.num_classes, dropout=0.5).train()
    logits = predict(model, task.test)
    assert logits.shape == (len(task.test), task.num_classes) and model.training
