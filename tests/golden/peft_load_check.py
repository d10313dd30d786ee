#!/usr/bin/env python3
"""Loads an adapter that peftrun exported with HF PEFT's own PeftModel.from_pretrained and
compares PEFT's logits with the logits peftrun dumped (`peftrun eval --dump-logits`).

usage: peft_load_check.py BASE_DIR ADAPTER_DIR LOGITS.safetensors
Exit 0 when they agree, 1 when they do not, 77 when torch/transformers/peft are not importable
(the calling test then reports itself skipped).
"""
import sys

try:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
except Exception as e:  # noqa: BLE001 - any import problem means "cannot check here"
    print(f"skip: {e}")
    sys.exit(77)


def main() -> int:
    base_dir, adapter_dir, logits_file = sys.argv[1:4]
    dump = load_file(logits_file)
    input_ids = dump["input_ids"].long()
    ours = dump["logits"].float()
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, adapter_dir)
    model.eval()
    with torch.no_grad():
        theirs = model(input_ids=input_ids).logits.float()
    rel = ((theirs - ours).norm() / theirs.norm()).item()
    print(f"peft logits vs peftrun logits: relative difference {rel:.3e} "
          f"({type(model.base_model).__name__}, shape {tuple(theirs.shape)})")
    return 0 if rel < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
