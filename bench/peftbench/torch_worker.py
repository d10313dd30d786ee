"""The PyTorch + transformers + PEFT side, one process per run: python -m peftbench.torch_worker SPEC.json

Modes (spec["mode"]):
  init       build the PEFT model (torch.manual_seed(seed) right before get_peft_model, which draws
             lora_A / AdaLoRA's A and B from the global RNG) and save_pretrained it to
             spec["init_adapter"]. Both systems then start from exactly these adapter weights
             (peftrun through adapter.init_from).
  train      train spec["steps"] optimizer steps on the windows peftrun reads (peftbench.data),
             the way a PEFT user writes the loop: model(input_ids, labels) -> loss.backward() ->
             clip_grad_norm_ -> AdamW.step() -> scheduler.step() -> (AdaLoRA) update_and_allocate
             -> zero_grad. The loss passes `shift_labels` (targets already shifted, as peftrun's
             windows are), so HF's ForCausalLMLoss scores all seq_len targets of a row.
  gemm_peak  the measured peak of a large GEMM on this device (bf16 8192^3 on a GPU; fp32 2048^3
             on the CPU, the better of torch.matmul and numpy's OpenBLAS), the denominator of MFU.
Writes spec["out"] (JSON). Timings exclude start-up (imports, loading the base): step time is
from the batch's upload to the loss on the host, synchronised.
"""

import json
import os
import resource
import sys
import time
import warnings


def versions(torch):
    import peft
    import transformers

    out = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
           "python": sys.version.split()[0]}
    if torch.cuda.is_available():
        out["cuda"] = torch.version.cuda
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def setup(spec):
    if spec["device"] == "cpu" and spec.get("threads"):
        os.environ.setdefault("OMP_NUM_THREADS", str(spec["threads"]))
    import torch
    import transformers

    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    if spec["device"] == "cpu" and spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if spec["device"] == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device cuda requested but torch.cuda.is_available() is False")
    return torch


def peft_config(spec):
    from peft import AdaLoraConfig, LoraConfig

    a = spec["adapter_spec"]
    common = dict(lora_alpha=a["alpha"], target_modules=list(a["target_modules"]), lora_dropout=0.0,
                  task_type="CAUSAL_LM")
    if spec["adapter"] == "adalora":
        return AdaLoraConfig(init_r=a["init_r"], target_r=a["target_r"], tinit=a["tinit"], tfinal=a["tfinal"],
                             deltaT=a["delta_t"], beta1=a["beta1"], beta2=a["beta2"],
                             orth_reg_weight=a["orth_reg_weight"], total_step=spec["steps"], **common)
    return LoraConfig(r=a["r"], use_dora=spec["adapter"] == "dora", bias="none", **common)


def load_model(torch, spec, dtype):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(spec["base"], dtype=dtype, attn_implementation="sdpa")
    model.config.use_cache = False
    return model


def init_adapter(torch, spec):
    from peft import get_peft_model

    model = load_model(torch, spec, torch.float32)
    torch.manual_seed(spec["seed"])
    pm = get_peft_model(model, peft_config(spec))
    pm.save_pretrained(spec["init_adapter"])
    return {"saved": spec["init_adapter"]}


def train(torch, spec):
    from peft import get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import get_cosine_schedule_with_warmup

    from peftbench.data import Windows, read_token_file

    cuda = spec["device"] == "cuda"
    device = torch.device("cuda" if cuda else "cpu")
    # CPU: fp32 throughout (peftrun's CPU backend computes in fp32 too). GPU: the usual PEFT recipe,
    # a bf16 base, fp32 adapters (PEFT's autocast_adapter_dtype), bf16 autocast; with "fp32" (the
    # precision reference) an fp32 model and no autocast.
    half = cuda and not spec.get("fp32")
    model = load_model(torch, spec, torch.bfloat16 if half else torch.float32).to(device)
    if spec.get("gradient_checkpointing"):
        # The usual PEFT recipe; non-reentrant checkpointing needs no input that requires grad.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(spec["seed"])
    pm = get_peft_model(model, peft_config(spec))
    if spec.get("init_adapter"):
        sd = load_file(os.path.join(spec["init_adapter"], "adapter_model.safetensors"))
        result = set_peft_model_state_dict(pm, sd)
        if getattr(result, "unexpected_keys", None):
            raise RuntimeError(f"init adapter keys PEFT did not use: {result.unexpected_keys[:4]}")
    pm.train()
    params = [p for p in pm.parameters() if p.requires_grad]
    o = spec["optim"]
    opt = torch.optim.AdamW(params, lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"],
                            weight_decay=o["weight_decay"])
    sched = get_cosine_schedule_with_warmup(opt, o["warmup_steps"], spec["steps"])
    _, tokens = read_token_file(spec["tokens"])
    windows = Windows(tokens, spec["seq_len"], spec["seed"])
    adalora = spec["adapter"] == "adalora"

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    losses, times = [], []
    for step in range(spec["steps"]):
        inputs, targets = windows.step_batch(step, spec["batch"])
        t0 = time.perf_counter()
        x = torch.tensor(inputs, dtype=torch.long, device=device)
        y = torch.tensor(targets, dtype=torch.long, device=device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=half):
            out = pm(input_ids=x, labels=y, shift_labels=y)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, o["max_grad_norm"])
        opt.step()
        sched.step()
        if adalora:
            pm.base_model.update_and_allocate(step)
        opt.zero_grad(set_to_none=True)
        loss = float(out.loss.item())  # a host sync: the step is done
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        losses.append(loss)
    result = {"losses": losses, "step_times_s": times,
              "trainable_params": sum(p.numel() for p in params),
              "self_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    if cuda:
        result["gpu_peak_bytes"] = torch.cuda.max_memory_allocated()
        result["gpu_peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
    return result


def gemm_peak(torch, spec):
    cuda = spec["device"] == "cuda"
    n = 8192 if cuda else 2048
    dtype = torch.bfloat16 if cuda else torch.float32
    device = "cuda" if cuda else "cpu"
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    reps = 20 if cuda else 5
    best = float("inf")
    for _ in range(3):  # best of three bursts: the peak, not an average with interruptions
        torch.matmul(a, b)
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b)
        if cuda:
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / reps)
    out = {"gemm": f"{'bf16' if cuda else 'fp32'} {n}x{n}x{n} torch.matmul",
           "peak_flops": 2.0 * n ** 3 / best}
    if not cuda:
        # On the CPU torch's GEMM (MKL / oneDNN) need not be the fastest on the machine: numpy's
        # OpenBLAS can be faster (and is what peftrun's sgemm is closest to), so the peak is the
        # better of the two and the table names which.
        import numpy as np

        an, bn = a.numpy(), b.numpy()
        best_np = float("inf")
        for _ in range(3):
            an @ bn
            t0 = time.perf_counter()
            for _ in range(reps):
                an @ bn
            best_np = min(best_np, (time.perf_counter() - t0) / reps)
        out["torch_flops"] = out["peak_flops"]
        out["numpy_flops"] = 2.0 * n ** 3 / best_np
        if out["numpy_flops"] > out["peak_flops"]:
            out["gemm"] = f"fp32 {n}x{n}x{n} numpy matmul (OpenBLAS; torch.matmul: " \
                          f"{out['torch_flops'] / 1e9:.1f} GFLOP/s)"
            out["peak_flops"] = out["numpy_flops"]
    return out


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    torch = setup(spec)
    import peft  # noqa: F401  (imported before anything is allocated: the libraries' own RSS)
    import transformers.models.llama.modeling_llama  # noqa: F401

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    mode = {"init": init_adapter, "train": train, "gemm_peak": gemm_peak}[spec["mode"]]
    result = mode(torch, spec)
    result["rss_after_import_kib"] = baseline
    result["versions"] = versions(torch)
    with open(spec["out"], "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
