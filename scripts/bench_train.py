"""Training throughput of the KEGG fusion recipe, printed as JSON.

One process, one run, up to four modes on the same random micro-batches, each mode's model
built from its own recipe (``train.logits``, ``projector.pool``, ``train.packing``) as
``dnallm train`` builds it:
  (a) live:  the frozen encoder runs on every step, k = 1 LLM position per DNA position
  (b) cache: embeddings read from an embedding cache on disk, k = 1
  (c) cache: the same, with the projector compressing k = 8 (or --k) positions into one
  (p) as (c), each micro-batch packed into one row (train.packing): no padding positions
Each mode runs once per --logits setting (reply: the LM head on the answer tokens only, in
chunks; full: at every position) and reports steady-state samples/s and LLM tokens/s (after
--warmup steps), peak memory (CUDA when on a GPU, else the process RSS sampled while the mode
runs, and how far it rose above the RSS at the mode's start) and, on a GPU, the model FLOP
utilisation (MFU) from the FLOP count stated in the output, and the hardware FLOP utilisation (HFU:
the recomputed forward of checkpointed layers counted too); on the CPU, the aten operations and
host syncs of one training step (``dnallm.train.opcount``). The engine is the one ``dnallm train``
builds (``--engine``: plain or DeepSpeed ZeRO-2); ``--variants`` runs several sets of recipe
overrides one after another in one process. Mode (a) times the encoder too, and
its MFU counts the encoder's FLOPs with the LLM's. When no mode runs the live encoder, it
leaves the GPU once the cache is built, so the cache modes' memory is their own.

  # tiny recipe on CPU (tiny checkpoints are built under .dnallm/ if absent)
  python scripts/bench_train.py recipes/kegg/tiny.yaml data.dna_window=1024
  # published shapes, random init from their configs (no download), on a GPU
  python scripts/bench_train.py recipes/kegg/genos1b_qwen3_4b.yaml --shape 1.2b:4b --batch 4
  # the real KEGG length distribution with Qwen3's tokenizer: packed vs padded, reply vs full logits
  python scripts/bench_train.py recipes/kegg/tiny.yaml data.with_reasoning=true data.dna_window=1024 \
      --data ../shared/datasets/kegg/val.jsonl ../shared/datasets/kegg/test.jsonl \
      --tokenizer ~/.cache/dnallm/tokenizer-qwen3 --modes c,p --logits reply,full --batch 8
  # variants side by side in one process (one short GPU call), on the DeepSpeed ZeRO-2 engine
  python scripts/bench_train.py recipes/kegg/genos1b_qwen3_4b.yaml --shape 1.2b:4b --modes c --engine zero2 \
      --variants "before:train.micro_batch_size=4,lora.dropout=0.05;after:train.max_tokens=12288,lora.dropout=0"
  # memory of one step at the Qwen3-1.7B width and vocabulary (--layers: fewer blocks, same head)
  python scripts/bench_train.py recipes/kegg/genos1b_qwen3_1.7b.yaml --shape tiny:1.7b --layers 2 --modes c \
      --logits reply,full --tokenizer ~/.cache/dnallm/tokenizer-qwen3 --data ../shared/datasets/kegg/val.jsonl
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch

from dnallm.config import apply_overrides, load_recipe
from dnallm.data.kegg import load_examples, write_jsonl
from dnallm.data.synthetic import planted_records
from dnallm.encoders import DNAEncoder
from dnallm.encoders.cache import CacheIdentity, CachedEncoder, build_cache
from dnallm.hub import resolve_dtype
from dnallm.memory import PeakRSS
from dnallm.train.build import build_encoder, build_model, build_processor
from dnallm.train.batching import fill
from dnallm.train.engine import build_engine, pick_device
from dnallm.train.finetune import param_groups, step_batch, training_batch
from dnallm.train.opcount import OpCounter

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", type=Path)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument(
        "--shape",
        help="ENCODER:LLM published shapes from configs, random init, e.g. 1.2b:4b, 10b:4b (tiny:tiny on CPU)",
    )
    p.add_argument(
        "--data", type=Path, nargs="+", help="KEGG-format JSONL files (default: planted records of 4,001 bp)"
    )
    p.add_argument(
        "--tokenizer",
        type=Path,
        help="the LLM's tokenizer folder (e.g. Qwen3's own; default: the models' byte-level one)",
    )
    p.add_argument(
        "--layers",
        type=int,
        help="with --shape: decoder blocks of the LLM (width, heads and vocabulary stay the shape's)",
    )
    p.add_argument("--logits", default="reply", help="comma-separated: reply, full (train.logits)")
    p.add_argument("--batch", type=int, help="micro-batch size (default: the recipe's)")
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps per mode")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per mode")
    p.add_argument("--k", type=int, default=8, help="compression factor of mode (c)")
    p.add_argument("--modes", default="a,b,c", help="comma-separated: a, b, c, p")
    p.add_argument("--packing", action="store_true", help="pack the micro-batches of every mode (p always packs)")
    p.add_argument(
        "--per-sample-attention",
        action="store_true",
        help="packed rows: one SDPA call per sample, not one varlen call (for comparison)",
    )
    p.add_argument(
        "--profile",
        type=Path,
        help="write a torch.profiler table of each mode's timed steps (top ops by self time) to this folder",
    )
    p.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak of the GPU (H100 SXM: 989)")
    p.add_argument(
        "--engine",
        choices=("plain", "zero2"),
        default="plain",
        help="the training engine dnallm train builds: plain PyTorch, or DeepSpeed ZeRO-2 "
        "(recipes/deepspeed/zero2.json, bf16 on a GPU)",
    )
    p.add_argument(
        "--variants",
        default="",
        help="variants run one after another in this process, each NAME:key=value,key=value "
        "(recipe overrides), separated by ';', e.g. "
        "'before:llm.gradient_checkpointing=true;after:train.max_tokens=12288'",
    )
    return p.parse_args(argv)


def random_models(
    recipe, shape: str, device: str, tmp: Path, tokenizer: Path | None = None, layers: int | None = None
):
    """Published shapes from their configs, random init straight on ``device``; tokenizers
    (char-level DNA, byte-level BPE with Qwen specials) saved to ``tmp`` for the loaders.
    -> (encoder, a function that builds a fresh LLM: each mode's model wraps its own)."""
    from transformers import AutoModel, AutoModelForCausalLM

    from dnallm.tiny import build_dna_tokenizer, build_text_tokenizer, genos_config, qwen3_config

    from transformers import AutoTokenizer

    enc_size, llm_size = shape.split(":")
    dna_tok = build_dna_tokenizer()
    text_tok = AutoTokenizer.from_pretrained(tokenizer) if tokenizer else build_text_tokenizer()
    dna_tok.save_pretrained(tmp / "genos")
    text_tok.save_pretrained(tmp / "qwen3")
    dtype = resolve_dtype("auto", device)
    config = qwen3_config(llm_size, 151_936, text_tok.pad_token_id, text_tok.eos_token_id)
    if layers:
        config.num_hidden_layers = layers
        config.layer_types = config.layer_types[:layers]
    with torch.device(device):
        enc_model = AutoModel.from_config(genos_config(enc_size), dtype=dtype)
    recipe.encoder.name_or_path, recipe.llm.name_or_path = str(tmp / "genos"), str(tmp / "qwen3")
    encoder = DNAEncoder(
        str(tmp / "genos"), layer=recipe.encoder.layer, device=device, model=enc_model.eval().requires_grad_(False)
    )

    def new_llm():
        with torch.device(device):
            return AutoModelForCausalLM.from_config(config, dtype=dtype)

    return encoder, new_llm


def ensure_tiny(recipe, tmp: Path, tokenizer: Path | None = None) -> None:
    """The recipe's tiny checkpoints (built under .dnallm/ if absent); with ``tokenizer``, a
    tiny Qwen3 around that tokenizer (its real vocabulary) in ``tmp``."""
    from dnallm.tiny import make_tiny, make_tiny_qwen3

    if not (Path(recipe.encoder.name_or_path).is_dir() and Path(recipe.llm.name_or_path).is_dir()):
        paths = make_tiny(Path(".dnallm/tiny"))
        recipe.encoder.name_or_path, recipe.llm.name_or_path = str(paths["genos"]), str(paths["qwen3"])
    if tokenizer:
        recipe.llm.name_or_path = str(make_tiny_qwen3(tmp / "qwen3", tokenizer=tokenizer))


def n_params(module, trainable: bool | None = None) -> int:
    return sum(p.numel() for p in module.parameters() if trainable is None or p.requires_grad == trainable)


def trunk_and_head_params(llm) -> tuple[int, int]:
    """Parameters a token goes through in the decoder blocks (no input table: a lookup), and in
    the LM head, counted even where it shares its weight with the input table (Qwen3-1.7B, 4B)."""
    table, head = llm.get_input_embeddings().weight, llm.get_output_embeddings().weight
    tied = head is table
    return n_params(llm) - table.numel() - (0 if tied else head.numel()), head.numel()


def active_encoder_params(model) -> int:
    """Per token: attention, norms and the 2 of 8 experts a token is routed to."""
    cfg = model.config
    total = n_params(model) - model.get_input_embeddings().weight.numel()
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    return total - experts + experts * cfg.num_experts_per_tok // cfg.num_local_experts


def micro_batches(processor, rows, recipe, args) -> list[tuple[int, dict]]:
    """(samples, batch) as training forms them: ``train.max_tokens`` tokens each (``batching.fill``,
    the last partial one dropped), else ``--batch`` (or the recipe's) samples each."""
    features = [processor(ex) for ex in rows]
    if recipe.train.max_tokens:
        lengths = [len(f["input_ids"]) for f in features]
        everything = list(range(len(features)))
        groups = fill(everything, lengths, recipe.train.max_tokens)[:-1] or [everything]
    else:
        size = args.batch or recipe.train.micro_batch_size
        groups = [list(range(i, i + size)) for i in range(0, len(features) - size + 1, size)]
    return [(len(g), training_batch(processor, [features[i] for i in g])) for g in groups]


def bench_engine(model, recipe, args, device):
    """The engine ``dnallm train`` builds for the recipe (``--engine zero2``: DeepSpeed ZeRO-2), on a flat schedule."""
    recipe.deepspeed = str(REPO / "recipes/deepspeed/zero2.json") if args.engine == "zero2" else ""
    recipe.train.warmup_ratio = 0.0
    return build_engine(recipe, model, param_groups(model, recipe), total_steps=10**6, grad_accum=1, device=device)


def run_mode(name, model, dna_source, processor, rows, recipe, args, device) -> dict:
    engine = bench_engine(model, recipe, args, device)
    batches = micro_batches(processor, rows, recipe, args)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    model.train()
    tokens = samples = positions = targets = 0
    profiler = None
    with PeakRSS() as rss:
        for i in range(args.warmup + args.steps):
            if i == args.warmup:
                sync()
                if args.profile:
                    activities = [torch.profiler.ProfilerActivity.CPU] + (
                        [torch.profiler.ProfilerActivity.CUDA] if device.startswith("cuda") else []
                    )
                    profiler = torch.profiler.profile(activities=activities)
                    profiler.start()
                start = time.perf_counter()
            n, batch = batches[i % len(batches)]
            loss = step_batch(engine, dna_source, batch, device, recipe.encoder.batch_size).loss
            engine.backward(loss)
            engine.step()
            if i >= args.warmup:
                tokens += int(batch["attention_mask"].sum())
                positions += batch["input_ids"].numel()
                targets += int((batch["labels"][:, 1:] != -100).sum())
                samples += n
        sync()
        elapsed = time.perf_counter() - start
        if profiler is not None:
            profiler.stop()
            write_profile(profiler, args.profile / f"{name}.txt", device)
    if not device.startswith("cuda"):  # what a GPU would launch: aten operations and host syncs of one more step
        with OpCounter() as counter:
            loss = step_batch(engine, dna_source, batches[0][1], device, recipe.encoder.batch_size).loss
            engine.backward(loss)
            engine.step()
    out = {
        "samples_per_s": samples / elapsed,
        "tokens_per_s": tokens / elapsed,
        "step_s": elapsed / args.steps,
        "tokens_per_micro_batch": tokens / args.steps,
        "engine": args.engine,
        "llm_tokens_per_sample": tokens / samples,
        "placeholders_per_window": processor.n_placeholders(rows[0]["ref_window"]),
        "padding_fraction": 1 - tokens / positions,
        "logits": recipe.train.logits,
        "packed": processor.packing,
        "final_loss": loss.item(),
        "peak_rss_gib": rss.peak / 2**30,
        "peak_rss_above_start_gib": rss.rise / 2**30,
    }
    if not device.startswith("cuda"):
        out["aten_ops_per_step"], out["host_syncs_per_step"] = sum(counter.ops.values()), sum(counter.syncs.values())
    if device.startswith("cuda"):
        out["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 2**30
        llm = model.llm.get_base_model()
        n_trunk, n_head = trunk_and_head_params(llm)
        cfg = llm.config
        seq = tokens / samples
        head_fraction = (
            1.0 if recipe.train.logits == "full" else targets / tokens
        )  # reply-only: the head runs on the answer
        # Frozen base: forward 2N + input-gradient backward 2N per token (no weight gradients);
        # attention scores and values: 4 * layers * heads * head_dim * seq per token forward, x3 with backward.
        flops_per_token = (
            4 * n_trunk
            + 4 * n_head * head_fraction
            + 12 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * seq
        )
        out["flop_count"] = (
            "per LLM token: 4 N_trunk + 4 N_head x (reply tokens / tokens) + 12 layers heads head_dim seq; mode a adds 2 N_encoder_active per base"
        )
        out["llm_flops_per_token"] = flops_per_token
        flops = flops_per_token * tokens
        if isinstance(dna_source, DNAEncoder):
            enc_tokens = len(rows[0]["ref_window"]) + len(rows[0]["var_window"])  # one token per base
            out["encoder_flops_per_sample"] = 2 * active_encoder_params(dna_source.model) * enc_tokens
            flops += out["encoder_flops_per_sample"] * samples
            out["timed"] = "frozen encoder + LLM step"
        out["mfu"] = flops / elapsed / (args.peak_tflops * 1e12)
        # Hardware FLOP utilisation: what the GPU computed, the recomputed forward of checkpointed layers included.
        layers = llm.model.layers
        recomputed = sum(bool(getattr(layer, "gradient_checkpointing", False)) for layer in layers) / len(layers)
        out["recomputed_layer_fraction"] = recomputed
        attention_forward = 4 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * seq
        recompute_per_token = recomputed * (2 * n_trunk + attention_forward)
        out["hfu"] = (flops + recompute_per_token * tokens) / elapsed / (args.peak_tflops * 1e12)
    print(f"[{name}] {json.dumps(out)}", file=sys.stderr, flush=True)
    return out


def write_profile(profiler, path: Path, device: str) -> None:
    """Top ops by self time on the device (or the CPU), then by CPU time: where a step goes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    events = profiler.key_averages()
    by = "self_cuda_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    text = events.table(sort_by=by, row_limit=30) + "\n\n" + events.table(sort_by="cpu_time_total", row_limit=30)
    path.write_text(text)
    print(f"[profile] {path}", file=sys.stderr, flush=True)


def parse_variants(text: str) -> list[tuple[str, list[str]]]:
    """'a:k=v,k=v;b:k=v' -> [(a, [k=v, k=v]), (b, [k=v])]; empty: one variant, the recipe as given."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, overrides = part.partition(":")
        out.append((name.strip(), [o.strip() for o in overrides.split(",") if o.strip()]))
    return out or [("", [])]


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.per_sample_attention:
        from dnallm.fusion import packing

        packing.USE_VARLEN = False
    device = pick_device()
    reports = {}
    for name, overrides in parse_variants(args.variants):
        reports[name] = run_variant(args, load_recipe(args.recipe, [*args.overrides, *overrides]), device)
        if device.startswith("cuda"):
            torch.cuda.empty_cache()  # the next variant's memory is its own
    report = next(iter(reports.values()))
    if len(reports) > 1:  # one table: each mode under its variant's name
        report = {
            **report,
            "variants": dict(parse_variants(args.variants)),
            "modes": {f"{n}/{mode}": m for n, rep in reports.items() for mode, m in rep["modes"].items()},
        }
        first, last = list(reports.values())[0]["modes"], list(reports.values())[-1]["modes"]
        report["tokens_per_s_ratio_last_to_first"] = {
            k: last[k]["tokens_per_s"] / first[k]["tokens_per_s"] for k in first if k in last
        }
    print(json.dumps(report, indent=2))
    return report


def mode_recipe(recipe, logits: str, pool: int, packing: bool):
    """The recipe of one mode: every model is built from its own recipe, as ``dnallm train`` builds it."""
    kernel = max(recipe.projector.kernel, pool)
    overrides = [f"train.logits={logits}", f"train.packing={packing}", f"projector.pool={pool}"]
    return apply_overrides(copy.deepcopy(recipe), [*overrides, f"projector.kernel={kernel}"])


def run_variant(args, recipe, device: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="dnallm-bench-") as tmp:
        tmp = Path(tmp)
        if args.shape:
            encoder, new_llm = random_models(recipe, args.shape, device, tmp, args.tokenizer, args.layers)
        else:
            ensure_tiny(recipe, tmp, args.tokenizer)
            encoder, new_llm = build_encoder(recipe, device, live=True), lambda: None
        data = args.data
        if data is None:
            data = [tmp / "planted.jsonl"]
            write_jsonl(data[0], planted_records(64, n_classes=4, seed=0))
        rows = [
            ex
            for path in data
            for ex in load_examples(path, recipe.data.dna_window, need_reasoning=recipe.data.with_reasoning)
        ]
        random.Random(0).shuffle(rows)  # random micro-batches, as training draws them
        # One cache for (b) and (c): the frozen encoder's output does not depend on k.
        identity = CacheIdentity(
            encoder=recipe.encoder.name_or_path,
            weights="bench",
            layer=recipe.encoder.layer,
            dna_window=recipe.data.dna_window,
            dtype=recipe.encoder.cache_dtype,
            compute_dtype=str(resolve_dtype(recipe.encoder.dtype, device)).removeprefix("torch."),
        )
        modes = args.modes.split(",")
        cached = None
        if {"b", "c"} & set(modes):
            windows = [s for r in rows for s in (r["ref_window"], r["var_window"])]
            build_cache(encoder, windows, tmp / "cache", identity, batch_size=recipe.encoder.batch_size)
            cached = CachedEncoder(tmp / "cache", identity, encoder.tokenizer, device)

        results, facts = {}, {}

        if cached is not None and "a" not in modes and device.startswith("cuda"):
            encoder.model.to("cpu")  # the cache modes' memory, without the live encoder's
            torch.cuda.empty_cache()

        def run(mode, key, source, pool, packing=args.packing):
            for logits in args.logits.split(","):
                this = mode_recipe(recipe, logits, pool, packing)
                torch.manual_seed(0)  # every mode starts from the same weights
                model, tokenizer = build_model(this, device, encoder, llm=new_llm())
                processor = build_processor(this, tokenizer, encoder)
                results[f"{key}_logits_{logits}"] = run_mode(mode, model, source, processor, rows, this, args, device)
                facts.update(model_facts(model, device))  # the last mode's
                del model  # the next mode's memory is its own
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()

        if "a" in modes:
            run("a", "a_live_k1", encoder, pool=1)
        if "b" in modes:
            run("b", "b_cache_k1", cached, pool=1)
        if "c" in modes:
            run("c", f"c_cache_k{args.k}", cached, pool=args.k)
        if "p" in modes:
            run("p", f"p_cache_k{args.k}_packed", cached, pool=args.k, packing=True)

    first = args.logits.split(",")[0]
    base = results.get(f"a_live_k1_logits_{first}")
    report = {
        "recipe": str(args.recipe),
        "shape": args.shape or "recipe checkpoints",
        "device": device_name(device),
        "dna_window": recipe.data.dna_window,
        "micro_batch": args.batch or recipe.train.micro_batch_size,
        "encoder_params": n_params(encoder.model),
        **facts,
        "steps": args.steps,
        "warmup": args.warmup,
        "modes": results,
    }
    for logits in args.logits.split(","):
        padded, packed = (
            results.get(f"c_cache_k{args.k}_logits_{logits}"),
            results.get(f"p_cache_k{args.k}_packed_logits_{logits}"),
        )
        if padded and packed:
            report.setdefault("packed_vs_padded_samples_per_s", {})[logits] = (
                packed["samples_per_s"] / padded["samples_per_s"]
            )
    for mode in {k.rsplit("_logits_", 1)[0] for k in results}:
        reply, full = results.get(f"{mode}_logits_reply"), results.get(f"{mode}_logits_full")
        if reply and full:
            key = "peak_cuda_gib" if "peak_cuda_gib" in reply else "peak_rss_above_start_gib"
            report.setdefault(f"{key}_reply_vs_full", {})[mode] = [reply[key], full[key]]
    if base:
        report["samples_per_s_ratio_to_a"] = {
            k: v["samples_per_s"] / base["samples_per_s"] for k, v in results.items()
        }
    return report


def model_facts(model, device: str) -> dict:
    return {
        "llm_params": n_params(model.llm),
        "trainable_params": n_params(model, True),
        "llm_dtype": str(model.llm.get_base_model().dtype).removeprefix("torch."),
        "attention": attention_kernel(model, device),
        "llm_layers": model.llm.get_base_model().config.num_hidden_layers,
        "vocab": model.llm.get_output_embeddings().weight.shape[0],
    }


def attention_kernel(model, device: str) -> dict:
    """The attention implementation the LLM runs, and on a GPU whether SDPA's flash kernel takes
    its head size in its dtype (a probe: flash alone is allowed, so a fallback raises)."""
    from dnallm.fusion.packing import packed_kernel

    cfg = model.llm.get_base_model().config
    dtype = model.llm.get_base_model().dtype
    out = {
        "implementation": cfg._attn_implementation,
        "packed_kernel": packed_kernel(torch.empty(0, device=device, dtype=dtype)),
    }
    if device.startswith("cuda"):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        q = torch.randn(
            1, cfg.num_attention_heads, 256, cfg.head_dim, device=device, dtype=model.llm.get_base_model().dtype
        )
        try:
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
            out["sdpa_flash"] = True
        except RuntimeError as err:
            out["sdpa_flash"] = f"no: {str(err).splitlines()[0]}"
    return out


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"cpu ({psutil.cpu_count(logical=True)} threads, torch {torch.get_num_threads()} threads)"


if __name__ == "__main__":
    main()
