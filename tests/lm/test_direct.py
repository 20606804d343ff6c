import torch
from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from aihf.lm.config import DirectAIHFConfig
from aihf.lm.data import prepare_text_data
from aihf.lm.direct import DirectAIHFTrainer
from aihf.lm.modeling import encode, load_causal_lm, load_tokenizer
from aihf.losses import sft_loss


def _direct(tiny_dir, tmp_path, prefs, demos, alpha):
    config = DirectAIHFConfig(output_dir=str(tmp_path / "direct"), alpha=alpha, beta=0.1, report_to="none")
    policy = load_causal_lm(str(tiny_dir / "policy"))
    return DirectAIHFTrainer(
        policy, load_tokenizer(str(tiny_dir / "policy")), config, prefs=prefs, demos=demos
    )


def _perturbed_trl_dpo(tiny_dir, tmp_path, prefs):
    """TRL's DPOTrainer on a policy moved away from its reference, so the DPO loss is not just log 2."""
    tokenizer = load_tokenizer(str(tiny_dir / "policy"))
    args = DPOConfig(
        output_dir=str(tmp_path / "trl"),
        beta=0.1,
        per_device_train_batch_size=len(prefs),
        report_to=[],
        use_cpu=True,
    )
    trainer = DPOTrainer(
        model=load_causal_lm(str(tiny_dir / "policy")),
        args=args,
        train_dataset=Dataset.from_list(prefs.rows),
        processing_class=tokenizer,
    )
    return trainer


def test_direct_aihf_with_alpha_zero_is_trl_dpo(tiny_dir, data_dir, tmp_path):
    tokenizer = load_tokenizer(str(tiny_dir / "policy"))
    prefs = prepare_text_data(data_dir / "prefs.jsonl", "prefs", tokenizer)
    trl = _perturbed_trl_dpo(tiny_dir, tmp_path, prefs)
    ours = _direct(tiny_dir, tmp_path, prefs, None, alpha=0.0)
    torch.manual_seed(1)
    with torch.no_grad():  # the same perturbation of both policies; the references stay at the base model
        for p_trl, p_ours in zip(trl.model.parameters(), ours.policy.parameters()):
            noise = 0.05 * torch.randn_like(p_trl)
            p_trl.add_(noise)
            p_ours.add_(noise)
    batch = next(iter(trl.get_train_dataloader()))  # one batch holds every pair
    trl_loss = trl.compute_loss(trl.model, batch)
    our_loss, metrics, _ = ours.compute_loss(prefs.rows, [])
    assert abs(trl_loss.item() - 0.6931) > 1e-3  # the perturbation makes the comparison informative
    torch.testing.assert_close(our_loss, trl_loss, rtol=1e-5, atol=1e-6)
    assert "loss/sft" not in metrics


def test_direct_aihf_adds_alpha_times_sft_on_the_demonstration_set(tiny_dir, data_dir, tmp_path):
    tokenizer = load_tokenizer(str(tiny_dir / "policy"))
    prefs = prepare_text_data(data_dir / "prefs.jsonl", "prefs", tokenizer)
    demos = prepare_text_data(data_dir / "demos.jsonl", "demos", tokenizer)
    with_sft = _direct(tiny_dir, tmp_path, prefs, demos, alpha=0.5)
    loss, metrics, _ = with_sft.compute_loss(prefs.rows, demos.rows)
    batch = encode(tokenizer, demos.column("prompt"), demos.column("completion"))
    with torch.no_grad():
        logits = with_sft.policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    sft = sft_loss(logits, batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100))
    torch.testing.assert_close(
        loss.detach(), torch.tensor(metrics["loss/dpo"]) + 0.5 * sft, rtol=1e-5, atol=1e-5
    )
