"""Load a Genos-shaped encoder from a saved checkpoint the way training does, and report where
its weights went and how far the host memory rose (printed as JSON): ``host_rss_rise_gib``
counts the weight file's pages mapped while they are read (the node's page cache, shared by
every rank), ``host_anon_rise_gib`` only what this process holds itself.

On a GPU the weight files are read straight onto the device, so the host never holds the
whole model (on 8 ranks of a node, Genos-10B would otherwise take 8 x 20 GB of host RAM).

    python scripts/check_encoder_load.py --shape 1.2b     # on a GPU
    python scripts/check_encoder_load.py                  # tiny, on the CPU
"""

from __future__ import annotations

import argparse
import json
import tempfile

import torch


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="tiny", choices=["tiny", "1.2b", "10b"])
    args = p.parse_args(argv)

    from transformers import MixtralForCausalLM

    from dnallm.encoders import DNAEncoder
    from dnallm.hub import resolve_dtype
    from dnallm.memory import PeakRSS
    from dnallm.tiny import build_dna_tokenizer, genos_config
    from dnallm.train.engine import pick_device

    device = pick_device()
    dtype = resolve_dtype("auto", device)
    with tempfile.TemporaryDirectory(prefix="dnallm-encoder-") as tmp:
        model = MixtralForCausalLM(genos_config(args.shape)).to(dtype)
        n_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        model.save_pretrained(tmp)  # safetensors
        build_dna_tokenizer().save_pretrained(tmp)
        del model
        with PeakRSS() as rss:
            encoder = DNAEncoder(tmp, dtype=dtype, device=device)
        embeds, _ = encoder.encode(["ACGT" * 64])
    report = {
        "shape": args.shape,
        "device": device,
        "weights_gib": n_bytes / 2**30,
        "weights_on": str(next(encoder.model.parameters()).device),
        "dtype": str(embeds.dtype).removeprefix("torch."),
        "host_rss_rise_gib": rss.rise / 2**30,
        "host_anon_rise_gib": rss.anon_rise / 2**30,
        "embeddings": list(embeds.shape),
    }
    if device.startswith("cuda"):
        report["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
