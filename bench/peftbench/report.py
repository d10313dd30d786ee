"""Per-run summaries, the side-by-side table, results.json and the loss-curve plot."""

import json
import os
import statistics

from peftbench.cases import flops_per_token

SYSTEMS = (("peftrun", "peftrun"), ("torch", "PyTorch+PEFT"))
ADAPTER_LABEL = {"lora": "LoRA", "dora": "DoRA", "adalora": "AdaLoRA"}
# |final loss difference| / final loss above which the two systems are flagged: they run the same
# math, so fp32 on the CPU agrees to ~1e-5; bf16 on a GPU rounds differently on each side.
LOSS_TOLERANCE = {"cpu": 1e-3, "cuda": 3e-2}


def summarize(case, adapter, runs, peak):
    """One system's numbers from its runs (repeats) of one adapter; runs[i] as the sides return them."""
    ok = [r for r in runs if r.get("status") == "ok"]
    if not ok:
        return {"status": runs[0].get("status", "skipped") if runs else "skipped"}
    medians = [statistics.median(r["step_times_s"][case.warmup:]) for r in ok]
    step = statistics.median(medians)
    fpt = flops_per_token(case.shape, case.seq_len, adapter, case.adapter_for_run())
    out = {
        "status": "ok",
        "step_time_median_s": step,
        "step_time_median_per_repeat_s": medians,
        "tokens_per_s": case.tokens_per_step / step,
        "peak_rss_mib": max(r["maxrss_kib"] for r in ok) / 1024,
        "final_loss": ok[0]["losses"][-1],
        "losses": ok[0]["losses"],
        "step_times_s": [r["step_times_s"] for r in ok],
        "flops_per_token": fpt,
        "model_flops_per_s": fpt * case.tokens_per_step / step,
    }
    others = [r["other_cores"] for r in ok if r.get("other_cores") is not None]
    if others:
        out["other_cores_max"] = max(others)
    if ok[0].get("rss_after_import_kib"):
        out["rss_after_import_mib"] = ok[0]["rss_after_import_kib"] / 1024
    if ok[0].get("blas"):
        out["blas"] = ok[0]["blas"]
    gpu = [r["gpu_peak_bytes"] for r in ok if "gpu_peak_bytes" in r]
    if gpu:
        out["gpu_peak_mib"] = max(gpu) / 2**20
    if peak:
        out["mfu"] = out["model_flops_per_s"] / peak
    return out


def _ratio(a, b, key):
    if a.get("status") == "ok" and b.get("status") == "ok" and key in a and key in b and b[key]:
        return a[key] / b[key]
    return None


def compare(case, results):
    """Ratios peftrun / PyTorch per adapter, adapter overheads per system, loss agreement."""
    out = {"peftrun_over_torch": {}, "adapter_overhead_step_time": {}, "loss_agreement": {}}
    for adapter, by_system in results.items():
        p, t = by_system["peftrun"], by_system["torch"]
        out["peftrun_over_torch"][adapter] = {k: _ratio(p, t, k) for k in
                                              ("tokens_per_s", "step_time_median_s", "peak_rss_mib", "gpu_peak_mib")}
        if p.get("status") == "ok" and t.get("status") == "ok":
            n = min(len(p["losses"]), len(t["losses"]))
            rel = [abs(p["losses"][i] - t["losses"][i]) / max(abs(t["losses"][i]), 1e-12) for i in range(n)]
            tol = LOSS_TOLERANCE[case.device]
            out["loss_agreement"][adapter] = {"final_rel_diff": rel[-1], "max_rel_diff": max(rel),
                                              "tolerance": tol, "agree": rel[-1] <= tol}
    for system, _ in SYSTEMS:
        lora = results.get("lora", {}).get(system, {})
        for other in ("dora", "adalora"):
            if other in results:
                r = _ratio(results[other][system], lora, "step_time_median_s")
                out["adapter_overhead_step_time"].setdefault(system, {})[f"{other}/lora"] = r
    return out


def _fmt(v, spec, suffix=""):
    return "–" if v is None else format(v, spec) + suffix


def table(case, results, comparison, machine, peak, versions):
    """The markdown table printed to stdout, kept in table.md and shown in the READMEs."""
    gpu = case.device == "cuda"
    head = ["adapter", "system", "tokens/s", "step ms (median)", "peak RSS MiB"]
    head += ["GPU peak MiB"] if gpu else []
    head += ["final loss", "model TFLOP/s" if gpu else "model GFLOP/s", "MFU", "other load"]
    scale = 1e12 if gpu else 1e9
    rows = []
    for adapter, by_system in results.items():
        for system, label in SYSTEMS:
            s = by_system[system]
            if s.get("status") != "ok":
                rows.append([ADAPTER_LABEL[adapter], label, s.get("status", "skipped")] + [""] * (len(head) - 3))
                continue
            row = [ADAPTER_LABEL[adapter], label, _fmt(s["tokens_per_s"], ".0f"),
                   _fmt(s["step_time_median_s"] * 1e3, ".1f"), _fmt(s["peak_rss_mib"], ".0f")]
            row += [_fmt(s.get("gpu_peak_mib"), ".0f")] if gpu else []
            row += [_fmt(s["final_loss"], ".5f"), _fmt(s["model_flops_per_s"] / scale, ".1f" if gpu else ".0f"),
                    _fmt(s.get("mfu", None) and 100 * s["mfu"], ".1f", "%"), _fmt(s.get("other_cores_max"), ".2f")]
            rows.append(row)
        r = comparison["peftrun_over_torch"][adapter]
        agree = comparison["loss_agreement"].get(adapter)
        row = [ADAPTER_LABEL[adapter], "**peftrun / PyTorch**", _fmt(r["tokens_per_s"], ".2f", "×"),
               _fmt(r["step_time_median_s"], ".2f", "×"), _fmt(r["peak_rss_mib"], ".2f", "×")]
        row += [_fmt(r["gpu_peak_mib"], ".2f", "×")] if gpu else []
        row += ["–" if agree is None else
                f"Δ {agree['final_rel_diff']:.1e} {'ok' if agree['agree'] else '**DISAGREE**'}", "", "", ""]
        rows.append(row)
    where = (machine["gpu"] or "no GPU visible") if gpu else f"{machine['cpu']} ({machine['cores']} cores, {case.threads} threads each)"
    lines = [f"**{case.name}** ({case.note}): seq {case.seq_len} × batch {case.batch}, {case.steps} steps "
             f"(median over steps {case.warmup + 1}..{case.steps}), r={case.adapter.r} "
             f"(AdaLoRA {case.adapter.init_r}→{case.adapter.target_r}) on {len(case.adapter.target_modules)} "
             f"projections; {machine['date'][:10]}, {where}", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines.append("")
    for system, label in SYSTEMS:
        o = comparison["adapter_overhead_step_time"].get(system, {})
        if o:
            lines.append(f"- {label} step time: " + ", ".join(
                f"{k.replace('dora', 'DoRA').replace('adalora', 'AdaLoRA').replace('lora', 'LoRA')} "
                f"{_fmt(v, '.2f', '×')}" for k, v in o.items()))
    if peak:
        lines.append(f"- MFU against the measured peak: {peak['gemm']} = "
                     f"{peak['peak_flops'] / scale:.1f} {'TFLOP/s' if gpu else 'GFLOP/s'} (bench/README.md: formula)")
    lines.append("- other load: cores kept busy by other processes during that system's run (worst repeat); "
                 "above ~0.1 the timings are disturbed")
    blas = next((s["blas"] for by in results.values() for s in by.values() if s.get("blas")), None)
    base_rss = next((s["rss_after_import_mib"] for by in results.values() for s in by.values()
                     if s.get("rss_after_import_mib")), None)
    if base_rss:
        lines.append(f"- PyTorch's peak RSS includes {base_rss:.0f} MiB that its process holds right after "
                     "importing torch, transformers and peft")
    if blas and not gpu:
        lines.append(f"- peftrun's BLAS: {blas}; PyTorch: its bundled MKL / oneDNN")
    load = f"{machine['load_average_start']} -> {machine.get('load_average_end')}"
    lines.append(f"- load average (1, 5, 15 min) at start -> end: {load}")
    lines.append(f"- versions: peftrun {machine['peftrun_version'] or '?'} ({machine['peftrun_commit']}); "
                 + ", ".join(f"{k} {v}" for k, v in versions.items() if k in ("torch", "transformers", "peft")))
    return "\n".join(lines) + "\n"


def plot(path, case, results):
    """Loss per step of both systems, one panel per adapter. Needs matplotlib (skipped without)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.4), squeeze=False)
    for ax, (adapter, by_system) in zip(axes[0], results.items()):
        for (system, label), style in zip(SYSTEMS, ("-", "--")):
            s = by_system[system]
            if s.get("status") == "ok":
                ax.plot(range(1, len(s["losses"]) + 1), s["losses"], style, marker="o", markersize=3, label=label)
        ax.set_title(f"{case.name}: {ADAPTER_LABEL[adapter]}")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_json(path, payload):
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)
        f.write("\n")


def update_readme(readme, case_name, table_md, results_dir):
    """Replaces the block between <!-- bench:CASE --> and <!-- /bench:CASE --> in `readme`."""
    start, end = f"<!-- bench:{case_name} -->", f"<!-- /bench:{case_name} -->"
    with open(readme) as f:
        text = f.read()
    if start not in text or end not in text:
        return False
    rel = os.path.relpath(results_dir, os.path.dirname(readme))
    block = f"{start}\n{table_md}\nFull results: [{rel}]({rel}/)\n{end}"
    text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    with open(readme, "w") as f:
        f.write(text)
    return True
