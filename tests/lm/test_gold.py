import pytest
import torch

from aihf.errors import InputError
from aihf.lm.gold import ClassifierGold, VaderGold, load_gold_reward


def test_vader_ranks_positive_above_negative():
    gold = load_gold_reward("vader")
    good, bad = gold(["The film was", "The film was"], [" wonderful, I loved it.", " awful and boring."])
    assert -1.0 <= bad < 0 < good <= 1.0


def test_vader_completion_only_ignores_the_prompt():
    whole, only = VaderGold(), VaderGold(completion_only=True)
    prompts, completions = ["I hate that", "I love that"], [" it is here.", " it is here."]
    assert only(prompts, completions)[0] == only(prompts, completions)[1] == 0.0
    assert whole(prompts, completions)[0] < 0 < whole(prompts, completions)[1]


def test_mismatched_lengths_are_rejected():
    with pytest.raises(InputError, match="2 prompts but 1 completions"):
        load_gold_reward()(["a", "b"], ["c"])


def test_module_function_spec(tmp_path, monkeypatch):
    (tmp_path / "my_gold.py").write_text(
        "def score(prompts, completions):\n    return [float(len(c)) for c in completions]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_gold_reward("my_gold:score")(["x", "y"], ["ab", "abcd"]) == [2.0, 4.0]
    with pytest.raises(InputError, match="cannot import 'nope'"):
        load_gold_reward("my_gold:nope")


def test_hf_classifier_spec_uses_the_positive_label_logit(tmp_path):
    from transformers import GPT2ForSequenceClassification

    from aihf.lm.tiny import tiny_config, train_tokenizer

    tokenizer = train_tokenizer(["a good film", "a bad film"] * 5, vocab_size=300)
    config = tiny_config(tokenizer)
    config.num_labels, config.id2label = 2, {0: "NEGATIVE", 1: "POSITIVE"}
    config.label2id = {"NEGATIVE": 0, "POSITIVE": 1}
    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    gold = load_gold_reward(str(tmp_path))
    assert isinstance(gold, ClassifierGold) and gold.index == 1
    scores = gold(["a good", "a bad"], [" film", " film film"])
    with torch.no_grad():
        expected = [
            model(**tokenizer(t, return_tensors="pt")).logits[0, 1].item()
            for t in ("a good film", "a bad film film")
        ]
    assert scores == pytest.approx(expected, abs=1e-5)
    assert load_gold_reward(f"{tmp_path}#NEGATIVE").index == 0
    with pytest.raises(InputError, match="label 'neutral'"):
        load_gold_reward(f"{tmp_path}#neutral")


def test_fluent_sentiment_subtracts_the_surprise_above_its_threshold(tiny_dir):
    import torch

    from aihf.lm.gold import FluentSentimentGold, VaderGold

    gold = load_gold_reward(f"fluent-sentiment:{tiny_dir / 'policy'}")
    assert isinstance(gold, FluentSentimentGold) and gold.name == "fluent-sentiment:policy"
    prompts, completions = ["The film was", "She walked"], [" a delight.", " to the window and smiled."]
    nll = gold.nll_per_token(prompts, completions)
    with torch.no_grad():  # the first completion by hand: mean -log p of its tokens given the prompt
        ids = gold.tokenizer(prompts[0] + completions[0])["input_ids"]
        start = len(gold.tokenizer(prompts[0])["input_ids"])
        logps = gold.model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
        expected = -sum(logps[t - 1, ids[t]].item() for t in range(start, len(ids))) / (len(ids) - start)
    assert nll[0] == pytest.approx(expected, rel=1e-4)
    sentiment = [(v + 1) / 2 for v in VaderGold(completion_only=True)(prompts, completions)]
    gold.threshold = 0.0
    scores = gold(prompts, completions)
    assert scores == pytest.approx([s - 0.5 * n for s, n in zip(sentiment, nll)])
    gold.threshold = 100.0
    assert gold(prompts, completions) == pytest.approx(sentiment)
