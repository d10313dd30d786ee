#!/usr/bin/env python3
"""Golden fixtures for RoPE scaling (rope_type linear, dynamic, llama3, yarn, longrope), from the real transformers.

Writes tests/golden/data/rope/ (see tests/golden/README.md, "RoPE scaling"):
  inv_freq.json          transformers' inverse-frequency tables and cos / sin factors (float32
                         bits) for configs of real models and for the golden base's shape
  <case>/config.json     the golden base's config.json with a scaled RoPE
  <case>.safetensors     the forward logits and loss of data/base's weights under that config
  <case>.json            the sidecar (loss, versions)
Run it with the interpreter make_golden.py uses (same requirements.txt); it reuses that script's
helpers and determinism settings, and needs data/base/ to exist.

    /work/venv-golden/bin/python tests/golden/make_rope_golden.py
"""

import argparse
import json
import os
import shutil
import sys

import torch
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_golden as mg  # noqa: E402
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402

# (name, head_dim, rope_parameters, max_position_embeddings): real models' settings, and small
# ones whose wavelengths fall in all three of llama3's bands; yarn with Qwen3's setting and with
# every optional key.
TABLES = [
    ("llama3.2-1b", 64, {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192}, 131072),
    ("llama3.1-8b", 128, {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                          "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 8192}, 131072),
    ("llama3-hd16-three-bands", 16, {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 4.0,
                                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 64}, 64),
    ("llama3-odd-factors", 96, {"rope_type": "llama3", "rope_theta": 1000000.0, "factor": 6.5,
                                "low_freq_factor": 1.5, "high_freq_factor": 5.25,
                                "original_max_position_embeddings": 3000}, 24000),
    ("linear-2.5", 64, {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.5}, 4096),
    ("dynamic-4-mpe40960", 128, {"rope_type": "dynamic", "rope_theta": 1000000.0, "factor": 4.0},
     40960),
    ("dynamic-1.7-mpe3000", 64, {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 1.7},
     3000),
    ("yarn-qwen3-4x32768", 128, {"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0,
                                 "original_max_position_embeddings": 32768}, 131072),
    ("yarn-untruncated-betas", 64, {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0,
                                    "original_max_position_embeddings": 2048, "beta_fast": 24.0,
                                    "beta_slow": 2.0, "truncate": False}, 16384),
    ("yarn-attention-factor", 64, {"rope_type": "yarn", "rope_theta": 500000.0, "factor": 2.0,
                                   "attention_factor": 0.8,
                                   "original_max_position_embeddings": 4096}, 16384),
]


def ramp(n, lo, hi):
    """n factors rising geometrically from lo to hi, rounded to 4 decimals (the shape of
    Phi-3.5-mini's long_factor: ~1 for the fast dimensions, tens for the slow ones)."""
    return [round(lo * (hi / lo) ** (i / (n - 1)), 4) for i in range(n)]


# longrope (Phi-3's): its short and its long table (long_context: what transformers builds for
# a forward whose positions go beyond the original context), with Phi-3.5-mini's setting and
# with an explicit factor and attention_factor.
LONGROPE = [
    ("longrope-phi3.5-mini", 96, {"rope_type": "longrope", "rope_theta": 10000.0,
                                  "short_factor": ramp(48, 1.0, 1.25),
                                  "long_factor": ramp(48, 1.08, 60.0),
                                  "original_max_position_embeddings": 4096}, 131072),
    ("longrope-attention-factor", 64, {"rope_type": "longrope", "rope_theta": 500000.0,
                                       "short_factor": ramp(32, 0.9, 1.5),
                                       "long_factor": ramp(32, 1.0, 16.0), "factor": 3.0,
                                       "attention_factor": 0.85,
                                       "original_max_position_embeddings": 2048}, 8192),
]

# Forward cases on data/base (head_dim 16, max_position_embeddings 64): config.json in
# transformers 5's layout (rope_parameters, as save_pretrained writes it) or in the older one
# (rope_scaling with "type", rope_theta at the top), which transformers still reads.
FORWARD = [
    ("llama3_forward", "v5", {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 4.0,
                              "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                              "original_max_position_embeddings": 16}),
    ("linear_forward", "v4", {"type": "linear", "factor": 3.0}),
    ("yarn_forward", "v4", {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}),
    # Positions up to 63 beyond the original 16: the long factors, and cos / sin times
    # sqrt(1 + ln(64 / 16) / ln 16).
    ("longrope_forward", "v5", {"rope_type": "longrope", "rope_theta": 10000.0,
                                "short_factor": ramp(8, 1.0, 1.3), "long_factor": ramp(8, 1.1, 9.0),
                                "original_max_position_embeddings": 16}),
    # Every position within the original 64: the short factors, with an attention_factor.
    ("longrope_short_forward", "v4", {"type": "longrope", "short_factor": ramp(8, 1.2, 3.0),
                                      "long_factor": ramp(8, 1.1, 9.0), "attention_factor": 1.3,
                                      "original_max_position_embeddings": 64}),
]
SEQ = 64  # every position of the base's context, so the scaled low frequencies turn far
SEED_IDS = 77


def table(head_dim, rope_parameters, mpe, long_context=False):
    cfg = transformers.LlamaConfig(hidden_size=head_dim * 4, num_attention_heads=4,
                                   max_position_embeddings=mpe, rope_parameters=dict(rope_parameters))
    # longrope's long table: what its forward builds once positions pass the original context.
    seq_len = rope_parameters["original_max_position_embeddings"] + 1 if long_context else None
    inv, attention_factor = ROPE_INIT_FUNCTIONS[rope_parameters["rope_type"]](cfg, None,
                                                                               seq_len=seq_len)
    bits = [int(b) for b in inv.to(torch.float32).view(torch.int32).tolist()]
    # The model multiplies the fp32 cos / sin by it: record the float32 it becomes.
    scale = torch.tensor([attention_factor], dtype=torch.float32).view(torch.int32).item()
    return bits, int(scale)


def write_config(base_dir, case_dir, layout, rope):
    with open(os.path.join(base_dir, "config.json")) as f:
        cfg = json.load(f)
    if layout == "v5":
        cfg["rope_parameters"] = dict(rope)
    else:
        theta = cfg.pop("rope_parameters")["rope_theta"]
        cfg["rope_theta"] = theta
        cfg["rope_scaling"] = dict(rope)
    os.makedirs(case_dir, exist_ok=True)
    with open(os.path.join(case_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def forward_case(out, name, base_dir, layout, rope):
    case_dir = os.path.join(out, name)
    write_config(base_dir, case_dir, layout, rope)
    # transformers reads the written file itself: its meaning of the old layout is the reference.
    cfg = transformers.AutoConfig.from_pretrained(case_dir)
    model = transformers.LlamaForCausalLM.from_pretrained(base_dir, config=cfg, dtype=torch.float32,
                                                          attn_implementation="eager")
    model.eval()
    g = torch.Generator().manual_seed(SEED_IDS)
    ids = torch.randint(0, mg.VOCAB, (1, SEQ), generator=g, dtype=torch.int64)
    with torch.no_grad():
        o = model(input_ids=ids, labels=ids)
        plain = transformers.LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32,
                                                              attn_implementation="eager")
        plain_loss = plain(input_ids=ids, labels=ids).loss
    mg.write_forward_fixture(out, name, ids, o, "LlamaForCausalLM's logits under config.json",
                             {"base": "base", "config": name + "/config.json", "layout": layout,
                              "loss_with_plain_rope": mg.scalar(plain_loss)})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "data", "rope"))
    ap.add_argument("--base", default=os.path.join(HERE, "data", "base"))
    args = ap.parse_args()
    mg.setup_determinism()
    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    tables = []
    for n, hd, rp, mpe in TABLES:
        bits, scale = table(hd, rp, mpe)
        tables.append({"name": n, "head_dim": hd, "max_position_embeddings": mpe,
                       "rope_parameters": rp, "inv_freq_bits": bits,
                       "attention_scaling_bits": scale})
    for n, hd, rp, mpe in LONGROPE:
        for long_context in (False, True):
            bits, scale = table(hd, rp, mpe, long_context)
            tables.append({"name": n + ("-long" if long_context else "-short"), "head_dim": hd,
                           "max_position_embeddings": mpe, "rope_parameters": rp,
                           "long_context": long_context, "inv_freq_bits": bits,
                           "attention_scaling_bits": scale})
    with open(os.path.join(args.out, "inv_freq.json"), "w") as f:
        f.write(mg.compact_json({"versions": mg.versions(), "tables": tables}))
    for name, layout, rope in FORWARD:
        forward_case(args.out, name, args.base, layout, rope)


if __name__ == "__main__":
    main()
