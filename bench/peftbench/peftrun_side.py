"""The peftrun side: a config for the case, one `peftrun CONFIG` process, its metrics.jsonl read back."""

import json
import os
import re


def yaml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(yaml_value(x) for x in v) + "]"
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid YAML scalar
    return repr(v)


def config_text(case, adapter, base_dir, tokens, init_adapter, output_dir):
    """The YAML peftrun trains the case from: the same model, data, adapter and optimizer."""
    a, o = case.adapter_for_run(), case.optim
    adapter_keys = {"type": adapter, "alpha": a.alpha, "dropout": 0.0, "target_modules": list(a.target_modules),
                    "init_from": init_adapter or ""}
    if adapter == "adalora":
        adapter_keys.update(init_r=a.init_r, target_r=a.target_r, tinit=a.tinit, tfinal=a.tfinal, deltaT=a.delta_t,
                            beta1=a.beta1, beta2=a.beta2, orth_reg_weight=a.orth_reg_weight,
                            total_step=case.steps)
    else:
        adapter_keys["r"] = a.r
    sections = {
        "model": {"path": base_dir},
        "adapter": adapter_keys,
        "data": {"train": tokens, "seq_len": case.seq_len},
        "train": {"steps": case.steps, "micro_batch_size": case.batch, "grad_accum": 1, "seed": case.seed,
                  "eval_every": 0, "log_every": 1},
        "optim": {"lr": o.lr, "betas": list(o.betas), "eps": o.eps, "weight_decay": o.weight_decay,
                  "schedule": o.schedule, "warmup_steps": o.warmup_steps, "max_grad_norm": o.max_grad_norm,
                  "min_lr_ratio": 0.0},
        "checkpoint": {"every_steps": 0},
        "runtime": {"device": case.device, "threads": case.threads,
                    "gradient_checkpointing": case.gradient_checkpointing,
                    "compute_dtype": "fp32" if case.fp32 else "auto"},
    }
    lines = ["# written by bench/bench.py"]
    for section, keys in sections.items():
        lines.append(f"{section}:")
        lines += [f"  {k}: {yaml_value(v)}" for k, v in keys.items()]
    lines.append(f"output_dir: {yaml_value(output_dir)}")
    return "\n".join(lines) + "\n"


# The device-memory high-water mark in peftrun's log: the CUDA backend's end-of-run line
# "device memory: arenas 3.10 GiB, peak in use 4.52 GiB (cudaMemGetInfo: the whole device, CUDA
# context and libraries included) ...", or a plain "peak device memory N MiB". Absent on the CPU.
PEAK_LINE = re.compile(r"(?:peak in use|peak (?:device|gpu|cuda) memory)[^0-9]*([0-9.]+)\s*(KiB|MiB|GiB)",
                       re.IGNORECASE)


def read_run(output_dir, log_text):
    losses, times = [], []
    with open(os.path.join(output_dir, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if "loss" in rec:
                losses.append(rec["loss"])
                times.append(rec["step_time_s"])
    out = {"losses": losses, "step_times_s": times}
    m = PEAK_LINE.search(log_text)
    if m:
        out["gpu_peak_bytes"] = float(m.group(1)) * {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[m.group(2)]
    return out
