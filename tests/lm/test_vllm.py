"""vLLM sampling through TRL's `VLLMGeneration`, on CPU without vLLM: a fake engine (colocate) and a fake
server client record the weights pushed to them and answer with fixed completions, so TRL's real weight
sync and generation code runs between them and our trainers."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from aihf.errors import InputError
from aihf.lm.config import AIHFConfig, SelfPlayAIHFConfig
from aihf.lm.train import run_training

trl_vllm = pytest.importorskip("trl.generation.vllm_generation")
import_utils = pytest.importorskip("trl.import_utils")

RL = {
    "per_device_train_batch_size": 3,
    "prompt_batch_size": 2,
    "num_generations": 2,
    "max_completion_length": 5,
    "report_to": "none",
}


class FakeLLM:
    """vllm.LLM as TRL's colocate mode drives it: weights loaded one tensor at a time, then a prefix-cache
    reset ending each push; the i-th sequence of a call is `answer(i)`."""

    made: ClassVar[list[FakeLLM]] = []
    completion: ClassVar[list[int]] = []

    def __init__(self, **options: Any) -> None:
        self.options, self.weights, self.pushes, self.calls = options, {}, [], []
        model = SimpleNamespace(load_weights=self._load)
        worker = SimpleNamespace(model_runner=SimpleNamespace(model=model))
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(driver_worker=worker))
        FakeLLM.made.append(self)

    def _load(self, pairs: list[tuple[str, torch.Tensor]]) -> None:
        self.weights |= {name: tensor.detach().clone() for name, tensor in pairs}

    def reset_prefix_cache(self) -> None:  # TRL's last call of every weight push
        self.pushes.append(dict(self.weights))

    def generate(self, prompts: list[dict], sampling_params: Any, use_tqdm: bool) -> list[Any]:
        self.calls.append((prompts, sampling_params))
        return [
            SimpleNamespace(
                prompt_token_ids=p["prompt_token_ids"],
                outputs=[SimpleNamespace(token_ids=answer(self.completion, i), logprobs=None)],
            )
            for i, p in enumerate(prompts)
        ]

    def sleep(self, level: int) -> None:
        self.calls.append(("sleep", level))

    def wake_up(self, tags: list[str]) -> None:
        self.calls.append(("wake_up", tags))


def answer(tokens: list[int], i: int) -> list[int]:
    """Fixed completions of 1-3 tokens and EOS: different samples of one prompt get different scores."""
    return tokens[: 1 + i % 3] + tokens[-1:]


class FakeClient:
    """TRL's VLLMClient (server mode): the weights streamed to the server, and fixed completions."""

    made: ClassVar[list[FakeClient]] = []
    completion: ClassVar[list[int]] = []

    def __init__(self, base_url: str, group_port: int, connection_timeout: float) -> None:
        self.where = (base_url, group_port, connection_timeout)
        self.pushes: list[dict[str, torch.Tensor]] = []
        self.prompts: list[list[int]] = []
        FakeClient.made.append(self)

    def init_communicator(self, device: Any) -> None:
        pass

    def update_named_params(self, metadata: list, params: Any) -> None:
        self.pushes.append({name: tensor.detach().clone() for name, tensor in params})

    def reset_prefix_cache(self) -> None:
        pass

    def generate(self, prompts: list[list[int]], features: Any, n: int, **sampling: Any) -> dict[str, Any]:
        self.prompts += prompts
        self.sampling = sampling
        completions = [answer(self.completion, i) for i in range(len(prompts) * n)]
        return {"prompt_ids": prompts, "completion_ids": completions, "logprobs": None}


@pytest.fixture
def fake_vllm(monkeypatch, tiny_dir):
    """vLLM 'installed': TRL's availability checks say yes, and its engine and client are the fakes."""
    monkeypatch.setattr(import_utils, "is_vllm_available", lambda *a, **k: True)
    monkeypatch.setattr(trl_vllm, "is_vllm_available", lambda *a, **k: True)
    monkeypatch.setattr(trl_vllm, "LLM", FakeLLM, raising=False)
    monkeypatch.setattr(trl_vllm, "SamplingParams", lambda **kw: kw, raising=False)
    monkeypatch.setattr(trl_vllm, "VLLMClient", FakeClient)
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(name, value)  # TRL's colocate mode sets them; restored afterwards
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29511")
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir / "policy")
    words = [t for t in range(3, 30) if t not in tokenizer.all_special_ids][:3]
    completion = [*words, tokenizer.eos_token_id]
    FakeLLM.made, FakeClient.made = [], []
    FakeLLM.completion = FakeClient.completion = completion
    return completion


def _weights(path: Any) -> dict[str, torch.Tensor]:
    return dict(AutoModelForCausalLM.from_pretrained(path).named_parameters())


def _same(pushed: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> bool:
    return set(pushed) == set(weights) and all(torch.equal(pushed[k], weights[k]) for k in weights)


def test_aihf_samples_with_colocated_vllm_and_pushes_each_new_policy_once(
    fake_vllm, tiny_dir, data_dir, tmp_path
):
    """TRL's engine gets every colocate option from the config; the policy's weights are pushed before
    a sampling only when an optimiser step changed them (3 pushes for 4 samplings over 2 iterations),
    the first push is the initial model and the last the saved one, and the samples are vLLM's."""
    out = tmp_path / "out"
    options = {
        "use_vllm": True,
        "vllm_gpu_memory_utilization": 0.45,
        "vllm_max_model_length": 512,
        "vllm_model_impl": "transformers",
        "learning_rate": 1e-2,
    }
    final = run_training(
        "aihf",
        str(tiny_dir / "policy"),
        str(out),
        reward_model=str(tiny_dir / "reward_model"),
        demos=str(data_dir / "demos.jsonl"),
        prefs=str(data_dir / "prefs.jsonl"),
        max_iterations=2,
        config=RL | options,
    )
    [engine] = FakeLLM.made
    assert engine.options["model"] == str(tiny_dir / "policy")
    expected = {"gpu_memory_utilization": 0.45, "max_model_len": 512, "model_impl": "transformers"}
    expected |= {"tensor_parallel_size": 1, "enable_sleep_mode": False, "max_num_seqs": 2 * 2}
    assert {k: engine.options[k] for k in expected} == expected
    generations = [c for c in engine.calls if c[0] != "sleep"]
    assert len(generations) == 4 and len(engine.pushes) == 3
    sampling = generations[0][1]
    assert (sampling["temperature"], sampling["top_k"], sampling["top_p"], sampling["max_tokens"]) == (
        1.0,
        0,
        1.0,
        5,
    )
    assert _same(engine.pushes[0], _weights(tiny_dir / "policy"))
    assert not _same(engine.pushes[1], _weights(tiny_dir / "policy"))
    assert _same(engine.pushes[-1], _weights(out / "policy"))
    # vLLM's answers were scored and trained on: the last policy step's 4 samples have 2, 3, 4 and 2 tokens
    assert final["policy/completion_length"] == pytest.approx(2.75)


def test_self_play_samples_its_opponent_through_a_vllm_server(fake_vllm, tiny_dir, data_dir, tmp_path):
    """Server mode: the client is made from the base URL (host and port when none is given), the group
    port and the timeout; every iteration pushes pi_t, then asks for one answer per demonstration."""
    out = tmp_path / "out"
    server = {"use_vllm": True, "vllm_mode": "server", "vllm_server_host": "10.0.0.7"}
    server |= {"vllm_server_port": 8123, "vllm_group_port": 51300, "vllm_server_timeout": 30.0}
    config = {
        "per_device_train_batch_size": 2,
        "steps_per_iteration": 1,
        "max_completion_length": 5,
        "report_to": "none",
    }
    run_training(
        "spin",
        str(tiny_dir / "policy"),
        str(out),
        demos=str(data_dir / "demos.jsonl"),
        max_iterations=2,
        config=config | server | {"learning_rate": 1e-2},
    )
    [client] = FakeClient.made
    assert client.where == ("http://10.0.0.7:8123", 51300, 30.0)
    assert len(client.pushes) == 2 and len(client.prompts) == 2 * 2
    assert _same(client.pushes[0], _weights(tiny_dir / "policy"))
    assert not _same(client.pushes[1], client.pushes[0])
    assert client.sampling["max_tokens"] == 5
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    FakeClient.made = []
    run_training(
        "spin",
        str(tiny_dir / "policy"),
        str(tmp_path / "url"),
        demos=str(data_dir / "demos.jsonl"),
        max_iterations=1,
        config=config | server | {"vllm_server_base_url": "https://gen.example:9000"},
    )
    assert FakeClient.made[0].where[0] == "https://gen.example:9000"  # the base URL wins over host/port


def test_without_vllm_the_error_names_the_extra(monkeypatch, tiny_dir, data_dir, tmp_path):
    monkeypatch.setattr(import_utils, "is_vllm_available", lambda *a, **k: False)
    with pytest.raises(InputError, match=r"pip install 'aihf\[vllm\]'"):
        run_training(
            "self-play-aihf",
            str(tiny_dir / "policy"),
            str(tmp_path / "o"),
            demos=str(data_dir / "demos.jsonl"),
            prefs=str(data_dir / "prefs.jsonl"),
            config={"use_vllm": True},
        )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("vllm_server_port", 70000, r"'vllm_server_port' = 70000: expected an integer in \[1, 65535\]"),
        ("vllm_group_port", 0, r"'vllm_group_port' = 0"),
        ("vllm_tensor_parallel_size", 0, r"'vllm_tensor_parallel_size' = 0: expected an integer >= 1"),
        ("vllm_gpu_memory_utilization", 1.5, r"'vllm_gpu_memory_utilization' = 1.5"),
        ("vllm_server_timeout", 0, r"'vllm_server_timeout' = 0"),
        ("vllm_model_impl", "tgi", r"'vllm_model_impl' = 'tgi': expected one of 'auto', 'vllm'"),
        ("vllm_server_base_url", "gen:8000", r"'vllm_server_base_url' = 'gen:8000': expected an http"),
        ("vllm_max_model_length", 100, r"'vllm_max_model_length' = 100: expected at least .* = 288"),
    ],
)
def test_vllm_fields_are_checked_with_their_ranges(field, value, message):
    for config in (AIHFConfig, SelfPlayAIHFConfig):
        with pytest.raises(InputError, match=message):
            config.from_dict({field: value})


def test_a_tensor_parallel_size_that_does_not_divide_the_processes_is_refused(fake_vllm, tiny_dir, data_dir):
    from types import SimpleNamespace

    from aihf.lm.vllm_sampling import VLLMSampler

    config = AIHFConfig(use_vllm=True, vllm_tensor_parallel_size=2)
    with pytest.raises(InputError, match=r"'vllm_tensor_parallel_size' = 2: must divide .* \(3\)"):
        VLLMSampler(None, SimpleNamespace(num_processes=3), None, config, max_completion_length=5)
    server = AIHFConfig(use_vllm=True, vllm_mode="server", vllm_tensor_parallel_size=2)
    VLLMSampler(
        None, SimpleNamespace(num_processes=3), None, server, max_completion_length=5
    )  # the server's own
    assert FakeLLM.made == [] and FakeClient.made == []  # engines start on first use


def test_a_run_resumes_with_its_vllm_server_elsewhere_but_not_with_other_sampling(tmp_path):
    """A requeued cluster job may find its vLLM server on another node; its samples' settings stay."""
    from aihf.lm.runtime import check_resume

    saved = {"method": "aihf", "config": AIHFConfig(use_vllm=True, vllm_mode="server").to_dict()}
    moved = AIHFConfig(use_vllm=True, vllm_mode="server", vllm_server_base_url="http://node9:8000")
    check_resume(tmp_path, saved, {"method": "aihf", "config": moved.to_dict()})
    hotter = AIHFConfig(use_vllm=True, vllm_mode="server", temperature=2.0)
    with pytest.raises(InputError, match=r"temperature: 1.0 -> 2.0"):
        check_resume(tmp_path, saved, {"method": "aihf", "config": hotter.to_dict()})
