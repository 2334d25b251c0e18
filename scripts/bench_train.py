"""Training throughput of the KEGG fusion recipe, printed as JSON.

One process, one run, three modes on the same samples:
  (a) live:  the frozen encoder runs on every step, k = 1 LLM position per DNA position
  (b) cache: embeddings read from an embedding cache on disk, k = 1
  (c) cache: the same, with the projector compressing k = 8 (or --k) positions into one
Each mode reports steady-state samples/s and LLM tokens/s (after --warmup steps), peak
memory (CUDA when on a GPU, else the process RSS sampled while the mode runs) and, on a
GPU, the LLM step's model FLOP utilisation (MFU) from the FLOP count stated in the output.

  # tiny recipe on CPU (tiny checkpoints are built under .dnallm/ if absent)
  python scripts/bench_train.py recipes/kegg/tiny.yaml data.dna_window=1024
  # published shapes, random init from their configs (no download), on a GPU
  python scripts/bench_train.py recipes/kegg/genos1b_qwen3_4b.yaml --shape 1.2b:4b --batch 4
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch

from dnallm.config import load_recipe
from dnallm.data.kegg import load_examples, write_jsonl
from dnallm.data.synthetic import planted_records
from dnallm.encoders import DNAEncoder
from dnallm.encoders.cache import CacheIdentity, CachedEncoder, build_cache
from dnallm.fusion.projector import DNAProjector
from dnallm.hub import resolve_dtype
from dnallm.train.build import build_encoder, build_model, build_processor
from dnallm.train.engine import TorchEngine, pick_device
from dnallm.train.finetune import param_groups, step_batch

REPO = Path(__file__).resolve().parent.parent


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", type=Path)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--shape", help="ENCODER:LLM published shapes from configs, random init, e.g. 1.2b:4b, 10b:4b (tiny:tiny on CPU)")
    p.add_argument("--data", type=Path, help="KEGG-format JSONL (default: planted records of 4,001 bp)")
    p.add_argument("--batch", type=int, help="micro-batch size (default: the recipe's)")
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps per mode")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per mode")
    p.add_argument("--k", type=int, default=8, help="compression factor of mode (c)")
    p.add_argument("--modes", default="a,b,c")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak of the GPU (H100 SXM: 989)")
    return p.parse_args()


class PeakRSS:
    """Highest resident set size of this process while the block runs (sampled every 10 ms)."""

    def __enter__(self):
        self.peak, self._stop = psutil.Process().memory_info().rss, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        proc = psutil.Process()
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def random_models(recipe, shape: str, device: str, tmp: Path):
    """Published shapes from their configs, random init straight on ``device``; tokenizers
    (char-level DNA, byte-level BPE with Qwen specials) saved to ``tmp`` for the loaders."""
    from transformers import AutoModel, AutoModelForCausalLM

    from dnallm.tiny import build_dna_tokenizer, build_text_tokenizer, genos_config, qwen3_config

    enc_size, llm_size = shape.split(":")
    dna_tok, text_tok = build_dna_tokenizer(), build_text_tokenizer()
    dna_tok.save_pretrained(tmp / "genos")
    text_tok.save_pretrained(tmp / "qwen3")
    dtype = resolve_dtype("auto", device)
    with torch.device(device):
        enc_model = AutoModel.from_config(genos_config(enc_size), dtype=dtype)
        llm = AutoModelForCausalLM.from_config(qwen3_config(llm_size, 151_936, text_tok.pad_token_id, text_tok.eos_token_id), dtype=dtype)
    recipe.encoder.name_or_path, recipe.llm.name_or_path = str(tmp / "genos"), str(tmp / "qwen3")
    encoder = DNAEncoder(str(tmp / "genos"), layer=recipe.encoder.layer, device=device, model=enc_model.eval().requires_grad_(False))
    return encoder, llm


def ensure_tiny(recipe) -> None:
    if Path(recipe.encoder.name_or_path).is_dir() and Path(recipe.llm.name_or_path).is_dir():
        return
    from dnallm.tiny import make_tiny

    paths = make_tiny(Path(".dnallm/tiny"))
    recipe.encoder.name_or_path, recipe.llm.name_or_path = str(paths["genos"]), str(paths["qwen3"])


def n_params(module, trainable: bool | None = None) -> int:
    return sum(p.numel() for p in module.parameters() if trainable is None or p.requires_grad == trainable)


def active_llm_params(llm) -> int:
    """Parameters of the base LLM used per token, without the input embedding table (a lookup)."""
    return n_params(llm) - llm.get_input_embeddings().weight.numel()


def active_encoder_params(model) -> int:
    """Per token: attention, norms and the 2 of 8 experts a token is routed to."""
    cfg = model.config
    total = n_params(model) - model.get_input_embeddings().weight.numel()
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    return total - experts + experts * cfg.num_experts_per_tok // cfg.num_local_experts


def run_mode(name, model, dna_source, processor, rows, recipe, args, device) -> dict:
    engine = TorchEngine(model, param_groups(model, recipe), lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0),
                         grad_accum=1, max_grad_norm=recipe.train.max_grad_norm, device=device)
    batch_size = args.batch or recipe.train.micro_batch_size
    batches = [processor.collate([processor(ex) for ex in rows[i : i + batch_size]]) for i in range(0, len(rows) - batch_size + 1, batch_size)]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    model.train()
    tokens = samples = 0
    with PeakRSS() as rss:
        for i in range(args.warmup + args.steps):
            if i == args.warmup:
                sync()
                start = time.perf_counter()
            batch = batches[i % len(batches)]
            loss = step_batch(engine, dna_source, batch, device, recipe.encoder.batch_size).loss
            engine.backward(loss)
            engine.step()
            if i >= args.warmup:
                tokens += int(batch["attention_mask"].sum())
                samples += batch["input_ids"].shape[0]
        sync()
        elapsed = time.perf_counter() - start
    out = {
        "samples_per_s": samples / elapsed, "tokens_per_s": tokens / elapsed, "step_s": elapsed / args.steps,
        "llm_tokens_per_sample": tokens / samples, "placeholders_per_window": processor.n_placeholders(rows[0]["ref_window"]),
        "final_loss": loss.item(), "peak_rss_gib": rss.peak / 2**30,
    }
    if device.startswith("cuda"):
        out["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 2**30
        llm = model.llm.get_base_model()
        n_llm = active_llm_params(llm)
        cfg = llm.config
        seq = tokens / samples
        # Frozen base: forward 2N + input-gradient backward 2N per token (no weight gradients);
        # attention scores and values: 4 * layers * hidden * seq per token forward, x3 with backward.
        flops_per_token = 4 * n_llm + 12 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * seq
        out["llm_flops_per_token"] = flops_per_token
        out["llm_mfu"] = flops_per_token * tokens / elapsed / (args.peak_tflops * 1e12)
        if isinstance(dna_source, DNAEncoder):
            enc_tokens = len(rows[0]["ref_window"]) + len(rows[0]["var_window"])  # one token per base
            out["encoder_flops_per_sample"] = 2 * active_encoder_params(dna_source.model) * enc_tokens
    print(f"[{name}] {json.dumps(out)}", file=sys.stderr, flush=True)
    return out


def main() -> None:
    args = parse_args()
    recipe = load_recipe(args.recipe, args.overrides)
    device = pick_device()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="dnallm-bench-") as tmp:
        tmp = Path(tmp)
        if args.shape:
            encoder, llm = random_models(recipe, args.shape, device, tmp)
        else:
            ensure_tiny(recipe)
            encoder, llm = build_encoder(recipe, device, live=True), None
        data = args.data
        if data is None:
            data = tmp / "planted.jsonl"
            write_jsonl(data, planted_records(64, n_classes=4, seed=0))
        rows = list(load_examples(data, recipe.data.dna_window))
        recipe.projector.pool = 1
        model, tokenizer = build_model(recipe, device, encoder, llm=llm)
        # One cache for (b) and (c): the frozen encoder's output does not depend on k.
        identity = CacheIdentity(encoder=recipe.encoder.name_or_path, weights="bench", layer=recipe.encoder.layer,
                                 dna_window=recipe.data.dna_window, dtype=recipe.encoder.cache_dtype,
                                 compute_dtype=str(resolve_dtype(recipe.encoder.dtype, device)).removeprefix("torch."))
        modes = args.modes.split(",")
        cached = None
        if {"b", "c"} & set(modes):
            windows = [s for r in rows for s in (r["ref_window"], r["var_window"])]
            build_cache(encoder, windows, tmp / "cache", identity, batch_size=recipe.encoder.batch_size)
            cached = CachedEncoder(tmp / "cache", identity, encoder.tokenizer, device)

        results = {}
        if "a" in modes:
            results["a_live_k1"] = run_mode("a", model, encoder, build_processor(recipe, tokenizer, encoder), rows, recipe, args, device)
        if "b" in modes:
            results["b_cache_k1"] = run_mode("b", model, cached, build_processor(recipe, tokenizer, encoder), rows, recipe, args, device)
        if "c" in modes:
            proj = recipe.projector
            proj.pool, proj.kernel = args.k, max(proj.kernel, args.k)
            model.projector = DNAProjector(encoder.hidden_size, llm_hidden(model),
                                           kind=proj.kind, pool=proj.pool, kernel=proj.kernel).to(device)
            results[f"c_cache_k{args.k}"] = run_mode("c", model, cached, build_processor(recipe, tokenizer, encoder), rows, recipe, args, device)

    base = results.get("a_live_k1")
    report = {
        "recipe": str(args.recipe), "shape": args.shape or "recipe checkpoints", "device": device_name(device),
        "dna_window": recipe.data.dna_window, "micro_batch": args.batch or recipe.train.micro_batch_size,
        "encoder_params": n_params(encoder.model), "llm_params": n_params(model.llm), "trainable_params": n_params(model, True),
        "steps": args.steps, "warmup": args.warmup, "modes": results,
    }
    if base:
        report["samples_per_s_ratio_to_a"] = {k: v["samples_per_s"] / base["samples_per_s"] for k, v in results.items()}
    print(json.dumps(report, indent=2))


def llm_hidden(model) -> int:
    return model.llm.get_input_embeddings().weight.shape[1]


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"cpu ({psutil.cpu_count(logical=True)} threads, torch {torch.get_num_threads()} threads)"


if __name__ == "__main__":
    main()
