#!/usr/bin/env python3
"""Checks folders written by `peftrun merge` with the real transformers and PEFT.

usage: merged_load_check.py CASES.json

CASES.json is a list of objects {"name", "merged", "logits", "adapter", "base"}:
  merged   the merged folder; transformers' AutoModelForCausalLM must load it (fp32 compute) and
           give the logits peftrun computed for base + adapter (`peftrun eval --adapter
           --dump-logits`, the file `logits`) to fp16 rounding of the merged weights;
  base     (may be null) the base checkpoint folder: then PEFT's own merge,
           PeftModel.from_pretrained(base, adapter).merge_and_unload(), saved by save_pretrained,
           must give every tensor of the merged folder to one fp16 rounding, under the same names
           (the names transformers writes, which for a multimodal Gemma 3 are not its module
           paths).
Exit 0 when every case agrees, 1 when one does not, 77 when torch/transformers/peft are not
importable (the calling test then reports itself skipped).
"""
import json
import sys
import tempfile

try:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
except Exception as e:  # noqa: BLE001 - any import problem means "cannot check here"
    print(f"skip: {e}")
    sys.exit(77)

# fp16 keeps 11 significant bits: rounding moves a weight by at most 2^-11 of itself, and a
# one-ulp difference between two fp32 merges may round to neighbouring fp16 values.
WEIGHT_REL_TOL = 2.0 ** -10
LOGITS_REL_TOL = 2e-3


def merged_tensors(folder):
    index = f"{folder}/model.safetensors.index.json"
    try:
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    except FileNotFoundError:
        files = ["model.safetensors"]
    out = {}
    for name in files:
        out.update(load_file(f"{folder}/{name}"))
    return out


def check_case(case):
    problems = []
    model = AutoModelForCausalLM.from_pretrained(case["merged"], dtype=torch.float32)
    model.eval()
    dump = load_file(case["logits"])
    with torch.no_grad():
        theirs = model(input_ids=dump["input_ids"].long()).logits.float()
    ours = dump["logits"].float()
    rel = ((theirs - ours).norm() / ours.norm()).item()
    line = f"{case['name']}: {type(model).__name__} logits vs peftrun base+adapter {rel:.2e}"
    if rel > LOGITS_REL_TOL:
        problems.append(f"logits differ by {rel:.3e} (limit {LOGITS_REL_TOL})")

    if case.get("base"):
        base = AutoModelForCausalLM.from_pretrained(case["base"], dtype=torch.float32)
        peft_merged = PeftModel.from_pretrained(base, case["adapter"]).merge_and_unload()
        with tempfile.TemporaryDirectory() as saved:
            peft_merged.save_pretrained(saved)
            reference = {k: v.float() for k, v in merged_tensors(saved).items()}
        written = merged_tensors(case["merged"])
        missing = sorted(set(reference) - set(written))
        tied = getattr(peft_merged.config, "tie_word_embeddings", False)
        if tied and "lm_head.weight" in missing:
            missing.remove("lm_head.weight")
        extra = sorted(set(written) - set(reference))
        if missing or extra:
            problems.append(f"names differ: missing {missing}, unexpected {extra}")
        worst, worst_name = 0.0, None
        for name, tensor in written.items():
            if name not in reference:
                continue
            ref = reference[name]
            excess = ((tensor.float() - ref).abs() - WEIGHT_REL_TOL * ref.abs() - 1e-7).max().item()
            if excess > worst:
                worst, worst_name = excess, name
        line += f"; vs PEFT merge_and_unload: {len(written)} tensors"
        if worst_name is not None:
            problems.append(f"{worst_name} differs from PEFT's merge by more than one fp16 "
                            f"rounding (excess {worst:.3e})")
        else:
            line += " within one fp16 rounding"
    print(line)
    return problems


def main() -> int:
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    failed = False
    for case in cases:
        for p in check_case(case):
            print(f"  FAIL {case['name']}: {p}")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
