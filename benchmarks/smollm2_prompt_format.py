"""Does the base policy continue the text, under a prompt format, often enough for gold RL to learn?

    OMP_NUM_THREADS=1 python benchmarks/smollm2_prompt_format.py --prompts 16

SmolLM2-135M-Instruct samples one completion for each of the first N test prompts (temperature 1, at
most 32 new tokens, float32, seed 0; `evaluation.sample`, the sampler of the data generator's pool)
under each prompt format of the data generator's presets, and gold v2 (`on-task-sentiment`) scores
them. Prints, per preset, the mean gold, the share of samples scoring exactly 0 and the share above
0.3, and the first samples. GRPO with 4 completions a prompt has no gradient on a prompt whose four
completions all score 0, so a high share of zeros starves the data generator's gold RL.
"""

from __future__ import annotations

import argparse
import statistics

from aihf.lm.bench.corpus import load_prompts
from aihf.lm.bench.datagen import PRESETS, render_prompts
from aihf.lm.evaluation import load_model, sample
from aihf.lm.gold import load_gold_reward
from aihf.lm.modeling import SamplingConfig
from aihf.lm.pretrained import get_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16, help="the first N test prompts")
    parser.add_argument("--presets", nargs="+", default=["smollm2", "smollm2-v2"])
    args = parser.parse_args()
    model_dir = get_model("smollm2-135m-instruct")
    model, tokenizer = load_model(model_dir)
    gold = load_gold_reward("on-task-sentiment")
    texts = load_prompts("test")[: args.prompts]
    print("| preset | mean gold | share exactly 0 | share above 0.3 |\n| --- | ---: | ---: | ---: |")
    examples = []
    for preset in args.presets:
        settings = PRESETS[preset]
        prompts = render_prompts(texts, tokenizer, settings["instruction"], settings.get("response_prefix"))
        drawn = sample(model, tokenizer, prompts, SamplingConfig(max_new_tokens=32), seed=0)
        scores = gold(drawn.prompts, drawn.completions)
        zero = sum(s == 0 for s in scores) / len(scores)
        high = sum(s > 0.3 for s in scores) / len(scores)
        print(f"| {preset} | {statistics.mean(scores):.3f} | {zero:.2f} | {high:.2f} |", flush=True)
        examples += [(preset, t, c, s) for t, c, s in zip(texts, drawn.completions, scores)][:4]
    for preset, text, completion, score in examples:
        print(f"{preset}: {score:.2f} [{text}] {completion[:90]!r}")


if __name__ == "__main__":
    main()
