import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from aihf.lm.tiny import save_tiny_models


def test_tiny_models_round_trip_through_from_pretrained(tmp_path):
    save_tiny_models(tmp_path, seed=3)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "policy")
    policy = AutoModelForCausalLM.from_pretrained(tmp_path / "policy")
    reward = AutoModelForSequenceClassification.from_pretrained(tmp_path / "reward_model")
    batch = tokenizer(["The film was", "A quiet evening with a good book"], return_tensors="pt", padding=True)
    assert batch["input_ids"][0, 0] == tokenizer.pad_token_id  # left padding, ready for generation
    out = policy.generate(**batch, max_new_tokens=5, do_sample=True, pad_token_id=tokenizer.pad_token_id)
    assert out.shape == (2, batch["input_ids"].shape[1] + 5)
    scores = reward(**batch).logits
    assert scores.shape == (2, 1) and torch.isfinite(scores).all()
    text = "Unseen wörds still tokenise: ✓"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
