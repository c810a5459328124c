"""Seedling's verification sidecar: LoRA fine-tuning and held-out scoring.

The `seedling verify` command writes this file next to a JSON config and runs
it in the verification environment that `scripts/setup` creates. It reads
JSONL the Rust side prepared (training rows per condition, test rows, fact
probes), trains one LoRA per condition on the model dequantised from the very
GGUF that generated the data, scores every condition on the same held-out
sets, and writes `report.json` plus plots. It prints one JSON object per line
on stdout (progress) and exits non-zero with one line on stderr when it
cannot go on. It knows nothing of plans, lineage or the store.

A condition whose cached result carries the same key (the Rust side hashes
the model, the rows and the settings into it) is reused, not retrained.
"""

import json
import math
import os
import random
import sys
import time
from pathlib import Path


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


def fail(message):
    print(message, file=sys.stderr, flush=True)
    sys.exit(2)


def read_jsonl(path):
    if not path:
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    fail(f"{path}:{number}: not JSON ({err})")
    return rows


def bootstrap(values, rounds, seed, chance=None):
    """Mean and percentile 95% interval of the mean, resampling items."""
    import numpy as np

    values = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(values) == 0:
        return None
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(rounds, len(values)))].mean(axis=1)
    out = {
        "mean": float(values.mean()),
        "lo": float(np.percentile(means, 2.5)),
        "hi": float(np.percentile(means, 97.5)),
        "n": int(len(values)),
    }
    if chance is not None:
        out["chance"] = chance
    return out


class Scorer:
    """Token ids of prompts and answers, built the same way for training and scoring."""

    def __init__(self, tokenizer, system_prompt, max_tokens):
        self.tok = tokenizer
        self.system = system_prompt
        self.max_tokens = max_tokens
        self.end = tokenizer.convert_tokens_to_ids("<|im_end|>")

    def prompt_ids(self, user_text):
        messages = [{"role": "user", "content": user_text}]
        if self.system:
            messages.insert(0, {"role": "system", "content": self.system})
        ids = self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return list(ids)

    def answer_ids(self, answer):
        enc = self.tok(answer, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]) + [self.end], list(enc["offset_mapping"]) + [(len(answer), len(answer))]

    def example(self, user_text, answer):
        """(ids, first answer position, answer offsets), cut to max_tokens from the prompt's start."""
        prompt = self.prompt_ids(user_text)
        answer_ids, offsets = self.answer_ids(answer)
        budget = max(self.max_tokens - len(answer_ids), 16)
        prompt = prompt[-budget:]
        ids = (prompt + answer_ids)[: max(self.max_tokens, len(prompt) + 1)]
        return ids, len(prompt), offsets[: len(ids) - len(prompt)]


def token_logprobs(model, ids, start):
    """Log-probability of each token from position `start` on, given the ones before."""
    import torch

    with torch.no_grad():
        x = torch.tensor([ids])
        logits = model(input_ids=x).logits[0, start - 1 : len(ids) - 1].float()
        logp = torch.log_softmax(logits, dim=-1)
        target = x[0, start:]
        return logp.gather(1, target.unsqueeze(1)).squeeze(1).tolist()


def evaluate(model, scorer, test_rows, probes, user_rows, rounds, seed):
    model.eval()
    results = {"response_nll": [], "fact_nll": [], "forced_choice": [], "user_nll": [], "strata": {}}
    for row in test_rows:
        ids, start, _ = scorer.example(row["input"], row["response"])
        lp = token_logprobs(model, ids, start)
        nll = -sum(lp) / max(len(lp), 1)
        results["response_nll"].append(nll)
        results["strata"].setdefault(row.get("stratum") or "?", []).append(nll)
    for row in user_rows:
        ids, start, _ = scorer.example(row["input"], row["response"])
        lp = token_logprobs(model, ids, start)
        results["user_nll"].append(-sum(lp) / max(len(lp), 1))
    chances = []
    for probe in probes:
        scores = []
        for k, answer in enumerate([probe["answer"]] + probe["alternatives"]):
            ids, start, offsets = scorer.example(probe["prompt"], answer)
            lp = token_logprobs(model, ids, start)
            scores.append(sum(lp))
            if k == 0:
                lo, hi = probe["fact_start"], probe["fact_start"] + len(probe["fact"])
                fact = [p for p, (a, b) in zip(lp, offsets) if a < hi and b > lo]
                results["fact_nll"].append(-sum(fact) / len(fact) if fact else None)
        results["forced_choice"].append(1.0 if scores[0] > max(scores[1:]) else 0.0)
        chances.append(1.0 / (1 + len(probe["alternatives"])))
    chance = sum(chances) / len(chances) if chances else None
    metrics = {
        "forced_choice": bootstrap(results["forced_choice"], rounds, seed, chance),
        "fact_nll": bootstrap(results["fact_nll"], rounds, seed),
        "response_nll": bootstrap(results["response_nll"], rounds, seed),
        "user_nll": bootstrap(results["user_nll"], rounds, seed),
    }
    strata = {name: bootstrap(values, rounds, seed) for name, values in sorted(results["strata"].items())}
    per_probe = [int(c) for c in results["forced_choice"]]
    return {k: v for k, v in metrics.items() if v is not None}, strata, per_probe


# Hugging Face projection names -> llama.cpp's tensor names for qwen2.
GGUF_TENSORS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def write_gguf_lora(peft_model, path, alpha):
    """The trained LoRA as a llama.cpp adapter, so that our own engine can
    answer with it: A as (rank, in) and B as (out, rank), f32, named after
    the base model's tensors; llama.cpp scales by alpha / rank as PEFT does."""
    import re

    import gguf
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(peft_model)
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(alpha))
    pattern = re.compile(r"layers\.(\d+)\.(self_attn\.\w+_proj|mlp\.\w+_proj)\.lora_([AB])\.weight$")
    written = 0
    for key, tensor in sorted(state.items()):
        found = pattern.search(key)
        if not found:
            continue
        layer, module, which = found.groups()
        name = f"blk.{layer}.{GGUF_TENSORS[module]}.weight.lora_{which.lower()}"
        writer.add_tensor(name, tensor.detach().float().cpu().contiguous().numpy())
        written += 1
    if written == 0:
        raise RuntimeError("the trained model holds no LoRA tensors to convert")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def train(model, scorer, rows, settings, condition, seed):
    """LoRA on every projection; returns the per-step losses."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    random.seed(seed)
    config = LoraConfig(
        r=settings["lora_r"],
        lora_alpha=settings["lora_alpha"],
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings["learning_rate"], weight_decay=0.0)
    steps = settings["steps"]
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, 1 - s / steps) if steps > 1 else 1.0
    )
    examples = [scorer.example(r["input"], r["response"]) for r in rows]
    order = []
    losses = []
    peft_model.train()
    started = time.monotonic()
    autocast = settings.get("bf16", True)
    for step in range(steps):
        if not order:
            order = list(range(len(examples)))
            random.shuffle(order)
        ids, start, _ = examples[order.pop()]
        x = torch.tensor([ids])
        labels = x.clone()
        labels[0, :start] = -100
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast and not torch.cuda.is_available()):
            loss = peft_model(input_ids=x, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.item()))
        elapsed = time.monotonic() - started
        emit(
            "train",
            condition=condition,
            step=step + 1,
            steps=steps,
            loss=round(losses[-1], 4),
            eta_s=round(elapsed / (step + 1) * (steps - step - 1), 1),
        )
    peft_model.eval()
    return peft_model, losses


def plots(report, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conditions = report["conditions"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for c in conditions:
        curve = c.get("loss_curve") or []
        if curve:
            window = max(1, len(curve) // 10)
            smooth = [sum(curve[max(0, i - window + 1) : i + 1]) / len(curve[max(0, i - window + 1) : i + 1]) for i in range(len(curve))]
            ax.plot(range(1, len(curve) + 1), smooth, label=c["name"])
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss (moving mean)")
    ax.set_title("Training loss per condition")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "loss.png", dpi=110)
    plt.close(fig)

    for metric, title, path in [
        ("forced_choice", "Fact probes: forced-choice accuracy (95% CI)", "forced_choice.png"),
        ("fact_nll", "Fact probes: NLL of the fact tokens (95% CI; lower is better)", "fact_nll.png"),
    ]:
        rows = [(c["name"], c["metrics"].get(metric)) for c in conditions if c["metrics"].get(metric)]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        names = [r[0] for r in rows]
        means = [r[1]["mean"] for r in rows]
        errs = [[r[1]["mean"] - r[1]["lo"] for r in rows], [r[1]["hi"] - r[1]["mean"] for r in rows]]
        ax.bar(names, means, yerr=errs, capsize=6, color="#4c78a8")
        chance = rows[0][1].get("chance")
        if chance is not None:
            ax.axhline(chance, color="#e45756", linestyle="--", label=f"chance {chance:.2f}")
            ax.legend()
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(out_dir / path, dpi=110)
        plt.close(fig)

    strata = sorted({s for c in conditions for s in (c.get("strata") or {})})
    if strata:
        fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(strata) * len(conditions) / 3), 4.5))
        width = 0.8 / len(conditions)
        for k, c in enumerate(conditions):
            values = [(c.get("strata") or {}).get(s, {}).get("mean", float("nan")) for s in strata]
            ax.bar([i + k * width for i in range(len(strata))], values, width, label=c["name"])
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(strata))])
        ax.set_xticklabels([s.replace("|", "\n") for s in strata], fontsize=7)
        ax.set_ylabel("test response NLL (lower is better)")
        ax.set_title("Held-out test split per stratum")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "strata.png", dpi=110)
        plt.close(fig)


def main():
    if len(sys.argv) != 2:
        fail("usage: finetune.py CONFIG.json")
    config = json.loads(Path(sys.argv[1]).read_text())
    out_dir = Path(config["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = config["training"]
    seed = config["seed"]
    rounds = config.get("bootstrap_rounds", 1000)

    import torch

    if config.get("threads"):
        torch.set_num_threads(config["threads"])
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    test_rows = read_jsonl(config.get("test"))
    probes = read_jsonl(config.get("probes"))
    user_rows = read_jsonl(config.get("user_eval"))

    results = []
    model = None
    scorer = None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for condition in config["conditions"]:
        name = condition["name"]
        cache = out_dir / "conditions" / name / "result.json"
        if cache.exists():
            cached = json.loads(cache.read_text())
            if cached.get("key") == condition["key"]:
                emit("reused", condition=name)
                results.append(cached)
                continue
        if model is None:
            emit("loading", model=config["model"], device=device)
            gguf = Path(config["model"])
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            model.to(device)
            scorer = Scorer(tokenizer, config.get("system_prompt") or "", settings["max_tokens"])
        started = time.monotonic()
        rows = read_jsonl(condition.get("train"))
        losses = []
        scored = model
        if rows:
            scored, losses = train(model, scorer, rows, settings, name, seed)
        emit("evaluate", condition=name)
        metrics, strata, per_probe = evaluate(scored, scorer, test_rows, probes, user_rows, rounds, seed)
        if rows:
            adapter = out_dir / "conditions" / name / "adapter"
            scored.save_pretrained(adapter)
            write_gguf_lora(scored, adapter.with_suffix(".gguf"), settings["lora_alpha"])
            model = scored.unload()
        result = {
            "key": condition["key"],
            "name": name,
            "trained": bool(rows),
            "train_examples": len(rows),
            "steps": settings["steps"] if rows else 0,
            "loss_curve": losses,
            "seconds": round(time.monotonic() - started, 1),
            "metrics": metrics,
            "strata": strata,
            "per_probe": per_probe,
        }
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(result))
        emit("condition", condition=name, metrics=metrics, seconds=result["seconds"])
        results.append(result)

    report = {
        "probes": len(probes),
        "test_rows": len(test_rows),
        "user_rows": len(user_rows),
        "device": device,
        "torch": torch.__version__,
        "training": settings,
        "seed": seed,
        "conditions": results,
    }
    plots(report, out_dir)
    (out_dir / "sidecar-report.json").write_text(json.dumps(report, indent=1))
    emit("done")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        fail("interrupted")
