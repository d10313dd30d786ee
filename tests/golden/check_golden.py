#!/usr/bin/env python3
"""Re-derives the golden fixtures from first principles, as documentation that runs.

A plain-torch LLaMA forward (no transformers, no PEFT code) with the adapter formulas of
../shared/DESIGN.md §4 is run on data/base/model.safetensors and the adapter tensors recorded in each
case file; logits, losses and gradients (autograd of that reference) must match what PEFT produced.
The AdamW step, the AdaLoRA allocator (sensitivities, triplet scores, budget, masks) and the sliced
AdaLoRA export are recomputed too. Exits non-zero on a mismatch.

    /work/venv-golden/bin/python tests/golden/check_golden.py [--data DIR]
"""

import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
PFX = "base_model.model."
MODULES = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
FAILS = []
WORST = {}  # kind of check -> worst err / max|want|, printed at the end


def close(name, got, want, rtol=2e-4, atol=2e-6):
    got, want = got.detach().double(), want.detach().double()
    err = (got - want).abs().max().item() if got.numel() else 0.0
    lim = atol + rtol * want.abs().max().item() if want.numel() else atol
    ok = got.shape == want.shape and err <= lim
    kind = name.split(".")[0] + ":" + name.rsplit(".", 1)[-1].split("(")[0]
    if want.numel() and want.abs().max().item() > 0:
        WORST[kind] = max(WORST.get(kind, 0.0), err / want.abs().max().item())
    if not ok:
        FAILS.append(name)
        print(f"  MISMATCH {name}: shape {tuple(got.shape)} vs {tuple(want.shape)}, max err {err:.3g} > {lim:.3g}")
    return ok


class Ref:
    """LLaMA forward in plain torch, fp32, on the fp16 checkpoint."""

    def __init__(self, base_dir):
        cfg = json.load(open(os.path.join(base_dir, "config.json")))
        self.cfg = cfg
        w = load_file(os.path.join(base_dir, "model.safetensors"))
        self.w = {k: v.float() for k, v in w.items()}
        if cfg["tie_word_embeddings"]:
            assert "lm_head.weight" not in self.w  # HF does not write the tied copy
            self.w["lm_head.weight"] = self.w["model.embed_tokens.weight"]

    def rmsnorm(self, x, w):
        var = x.pow(2).mean(-1, keepdim=True)
        return w * (x * torch.rsqrt(var + self.cfg["rms_norm_eps"]))

    def rope(self, x):  # x [B, H, T, hd], HF rotate-half layout
        hd = x.shape[-1]
        theta = self.cfg["rope_parameters"]["rope_theta"]
        inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
        pos = torch.arange(x.shape[2]).float()
        fr = torch.outer(pos, inv)
        emb = torch.cat([fr, fr], -1)
        cos, sin = emb.cos(), emb.sin()
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def forward(self, ids, lin):
        c = self.cfg
        H, KV, hd = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        B, T = ids.shape
        x = self.w["model.embed_tokens.weight"][ids]
        for L in range(c["num_hidden_layers"]):
            p = f"model.layers.{L}."
            h = self.rmsnorm(x, self.w[p + "input_layernorm.weight"])
            q = lin(L, "self_attn.q_proj", h).view(B, T, H, hd).transpose(1, 2)
            k = lin(L, "self_attn.k_proj", h).view(B, T, KV, hd).transpose(1, 2)
            v = lin(L, "self_attn.v_proj", h).view(B, T, KV, hd).transpose(1, 2)
            q, k = self.rope(q), self.rope(k)
            k = k.repeat_interleave(H // KV, dim=1)  # query head j uses kv head j // (H/KV)
            v = v.repeat_interleave(H // KV, dim=1)
            s = q @ k.transpose(-1, -2) / math.sqrt(hd)
            s = s.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
            a = (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(B, T, H * hd)
            x = x + lin(L, "self_attn.o_proj", a)
            h = self.rmsnorm(x, self.w[p + "post_attention_layernorm.weight"])
            x = x + lin(L, "mlp.down_proj", F.silu(lin(L, "mlp.gate_proj", h)) * lin(L, "mlp.up_proj", h))
        x = self.rmsnorm(x, self.w["model.norm.weight"])
        return x @ self.w["lm_head.weight"].T

    def W(self, L, m):
        return self.w[f"model.layers.{L}.{m}.weight"]


def ce_loss(logits, labels):
    """HF ForCausalLMLoss: logits[:, t] predict labels[:, t+1]; mean over labels != -100."""
    sl = labels[:, 1:]
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), sl.reshape(-1), ignore_index=-100)


def key(L, m, name):
    return f"{PFX}model.layers.{L}.{m}.{name}"


def check_base(data, case, base):
    f = load_file(os.path.join(data, case + ".safetensors"))
    ref = Ref(os.path.join(data, base))
    logits = ref.forward(f["input_ids"], lambda L, m, x: x @ ref.W(L, m).T)
    close(case + ".logits", logits, f["logits"])
    close(case + ".loss", ce_loss(logits, f["labels"]).reshape(1), f["loss"])


def lora_like(data, case, kind):
    f = load_file(os.path.join(data, case + ".safetensors"))
    meta = json.load(open(os.path.join(data, case + ".json")))
    pc = meta["peft_config"]
    ref = Ref(os.path.join(data, meta["base"]))
    r, alpha = pc["r"], pc["lora_alpha"]
    s = alpha / math.sqrt(r) if pc["use_rslora"] else alpha / r
    close(case + ".scaling", torch.tensor(meta["scaling"]["value"]), torch.tensor(s))
    params = {k: f[k].clone().requires_grad_(True) for k in meta["adapter_keys"]}
    p_drop = pc["lora_dropout"]

    def lin(L, m, x):
        W = ref.W(L, m)
        A, Bm = params[key(L, m, "lora_A.weight")], params[key(L, m, "lora_B.weight")]
        if p_drop > 0:
            mask = f[key(L, m, "lora_dropout_mask")].float()
            xd = x * (mask * torch.tensor(1.0 / (1.0 - p_drop), dtype=torch.float32))
        else:
            xd = x
        if kind == "lora":
            return x @ W.T + s * ((xd @ A.T) @ Bm.T)
        mag = params[key(L, m, "lora_magnitude_vector")]
        with torch.no_grad():  # DESIGN's n^2 without materialising W + sBA
            n2 = (W * W).sum(1) + 2 * s * (Bm * (W @ A.T)).sum(1) + s * s * ((Bm @ (A @ A.T)) * Bm).sum(1)
            n = n2.sqrt()
            close(f"{case}.{L}.{m}.n", n, torch.linalg.norm(W + s * Bm @ A, dim=1), rtol=1e-5)
        f_ = mag / n
        if p_drop > 0:  # PEFT's training-mode formula with dropout
            return x @ W.T + (f_ - 1) * (xd @ W.T) + f_ * s * ((xd @ A.T) @ Bm.T)
        return f_ * (x @ W.T + s * (x @ A.T) @ Bm.T)

    logits = ref.forward(f["input_ids"], lin)
    loss = ce_loss(logits, f["labels"])
    loss.backward()
    close(case + ".logits", logits, f["logits"])
    close(case + ".loss", loss.reshape(1), f["loss"])
    for k, p in params.items():
        close(f"{case}.{k}.grad", p.grad, f[k + ".grad"], rtol=1e-3, atol=1e-7)
    if kind == "dora":  # magnitude = row norms of the base W at init
        for L in range(2):
            for m in MODULES:
                close(f"{case}.{L}.{m}.m_init", f[key(L, m, "lora_magnitude_vector")],
                      torch.linalg.norm(ref.W(L, m), dim=1), rtol=1e-6)
    if any(n.endswith(".after_step1") for n in f):  # torch AdamW, step 1, from PEFT's own gradients
        a = meta["adamw"]
        b1, b2 = a["betas"]
        for k in params:
            g, p = f[k + ".grad"].double(), f[k].double()
            m_ = (1 - b1) * g
            v_ = (1 - b2) * g * g
            p = p * (1 - a["lr"] * a["weight_decay"])
            p = p - (a["lr"] / (1 - b1)) * m_ / (v_.sqrt() / math.sqrt(1 - b2) + a["eps"])
            close(case + "." + k + ".exp_avg", m_, f[k + ".exp_avg"], rtol=1e-6)
            close(case + "." + k + ".exp_avg_sq", v_, f[k + ".exp_avg_sq"], rtol=1e-6)
            close(case + "." + k + ".after_step1", p, f[k + ".after_step1"], rtol=1e-5)


def adalora(data):
    f = load_file(os.path.join(data, "adalora.safetensors"))
    meta = json.load(open(os.path.join(data, "adalora.json")))
    pc = meta["peft_config_at_init"]
    ref = Ref(os.path.join(data, meta["base"]))
    init_r, alpha = pc["init_r"], pc["lora_alpha"]
    c = alpha if alpha > 0 else init_r
    keys = list(meta["adapter_keys"])

    def run(tensors):
        params = {k: tensors[k].clone().requires_grad_(True) for k in keys}

        def lin(L, m, x):
            A, E, Bm = (params[key(L, m, n)] for n in ("lora_A", "lora_E", "lora_B"))
            return x @ ref.W(L, m).T + (x @ (A * E).T) @ Bm.T * c / (init_r + 1e-5)

        logits = ref.forward(f["input_ids"], lin)
        ce = ce_loss(logits, f["labels"])
        regs = []
        for k, p in params.items():
            if k.endswith(".lora_A"):
                regs.append(torch.linalg.norm(p @ p.T - torch.eye(p.shape[0]), "fro"))
            elif k.endswith(".lora_B"):
                regs.append(torch.linalg.norm(p.T @ p - torch.eye(p.shape[1]), "fro"))
        reg = torch.stack(regs).mean()
        loss = ce + pc["orth_reg_weight"] * reg
        loss.backward()
        return logits, ce, reg, loss, {k: p.grad for k, p in params.items()}

    logits, ce, reg, loss, grads = run(f)
    close("adalora.logits", logits, f["logits"])
    close("adalora.loss_ce", ce.reshape(1), f["loss_ce"])
    close("adalora.loss", loss.reshape(1), f["loss"])
    close("adalora.orth_reg", reg, torch.tensor(meta["orth_reg"]["value"]))
    for k in keys:
        close(f"adalora.{k}.grad", grads[k], f[k + ".grad"], rtol=1e-3, atol=1e-7)

    # the steps: AdamW, sensitivities, budget and masks, from PEFT's own recorded gradients
    a = meta["adamw"]
    b1, b2 = a["betas"]
    beta1, beta2 = pc["beta1"], pc["beta2"]
    T, tinit, tfinal, dT = pc["total_step"], pc["tinit"], pc["tfinal"], pc["deltaT"]
    b0, bT = meta["allocator"]["init_bgt"], meta["allocator"]["target_bgt"]
    cur = {k: f[k].double() for k in keys}
    mom = {k: torch.zeros_like(cur[k]) for k in keys}
    sq = {k: torch.zeros_like(cur[k]) for k in keys}
    ipt_bar, unc_bar = {}, {}
    for step in range(T):
        pfx = f"step{step}."
        if step > 0:  # recompute this step's gradient from the previous recorded state
            _, _, _, lo, g_ref = run({k: f[f"step{step - 1}.{k}"] for k in keys})
            close(pfx + "loss", lo, torch.tensor(meta["steps"][step]["loss"]["value"]))
            for k in keys:
                close(f"{pfx}{k}.grad(ref)", g_ref[k], f[pfx + k + ".grad"], rtol=1e-3, atol=1e-7)
        g = {k: (f[k + ".grad"] if step == 0 else f[pfx + k + ".grad"]).double() for k in keys}
        t = step + 1
        for k in keys:
            mom[k] = b1 * mom[k] + (1 - b1) * g[k]
            sq[k] = b2 * sq[k] + (1 - b2) * g[k] * g[k]
            p = cur[k] * (1 - a["lr"] * a["weight_decay"])
            cur[k] = p - (a["lr"] / (1 - b1 ** t)) * mom[k] / (sq[k].sqrt() / math.sqrt(1 - b2 ** t) + a["eps"])
            if k.endswith(".lora_E"):
                close(pfx + k + ".pre_mask", cur[k], f[pfx + k + ".pre_mask"], rtol=1e-4, atol=1e-7)
        # sensitivity uses the parameter AFTER the optimizer step and the gradient of this step
        if step < T - tfinal:
            for k in keys:
                ipt = (cur[k] * g[k]).abs()
                ipt_bar[k] = beta1 * ipt_bar.get(k, torch.zeros_like(ipt)) + (1 - beta1) * ipt
                unc_bar[k] = beta2 * unc_bar.get(k, torch.zeros_like(ipt)) + (1 - beta2) * (ipt - ipt_bar[k]).abs()
                close(pfx + k + ".exp_avg_ipt", ipt_bar[k], f[pfx + k + ".exp_avg_ipt"], rtol=1e-3, atol=1e-12)
                close(pfx + k + ".exp_avg_unc", unc_bar[k], f[pfx + k + ".exp_avg_unc"], rtol=1e-3, atol=1e-12)
        # budget (PEFT's budget_schedule; t = T - tfinal forces the final mask with the previous scores)
        if step <= tinit:
            budget, mask = b0, False
        elif step > T - tfinal:
            budget, mask = bT, True
        else:
            budget = int((b0 - bT) * (1 - (step - tinit) / (T - tfinal - tinit)) ** 3 + bT)
            mask = step % dT == 0 or step == T - tfinal
        info = meta["steps"][step]
        assert info["masked"] == mask, (step, info["masked"], mask)
        if mask:
            assert info["budget"] == budget, (step, info["budget"], budget)
            scores = {}
            for k in keys:
                if k.endswith(".lora_E"):
                    base = k[: -len(".lora_E")]
                    sc = lambda n: ipt_bar[n] * unc_bar[n]  # noqa: E731
                    scores[k] = (sc(k).view(-1) + sc(base + ".lora_A").mean(1) + sc(base + ".lora_B").mean(0))
                    close(f"{pfx}{base}.triplet_score", scores[k], f[f"{pfx}{base}.triplet_score"], rtol=2e-3, atol=0)
            allv = torch.cat([scores[k] for k in scores])
            thr = torch.kthvalue(allv, b0 - budget).values
            for k in scores:
                keep = (scores[k] > thr).float()
                if not torch.equal(keep, f[pfx + k + ".keep"]):
                    FAILS.append(pfx + k + ".keep")
                    print("  MISMATCH", pfx + k + ".keep", keep.tolist(), f[pfx + k + ".keep"].tolist())
                cur[k] = cur[k] * f[pfx + k + ".keep"].double().view(-1, 1)
        if step == T - tfinal:
            ipt_bar, unc_bar = {}, {}
        for k in keys:
            close(pfx + k, cur[k], f[pfx + k], rtol=1e-4, atol=1e-7)

    # the export: sliced to the kept ranks of the last mask
    saved = load_file(os.path.join(data, "adalora_adapter", "adapter_model.safetensors"))
    cfg = json.load(open(os.path.join(data, "adalora_adapter", "adapter_config.json")))
    last = f"step{T - 1}."
    assert set(saved) == set(keys)
    for k in keys:
        base = k[: k.rindex(".")]
        rp = cfg["rank_pattern"][base[len(PFX):] + ".lora_E"]
        keep = torch.tensor(rp, dtype=torch.bool)
        assert torch.equal(keep.float(), f[last + base + ".lora_E.keep"])
        full = f[last + k]
        want = full[:, keep] if k.endswith(".lora_B") else full[keep]
        if not torch.equal(saved[k], want):
            FAILS.append("export " + k)
            print("  MISMATCH export", k)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(HERE, "data"))
    d = ap.parse_args().data
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    for name, fn in [("base_forward", lambda: check_base(d, "base_forward", "base")),
                     ("base_tied_forward", lambda: check_base(d, "base_tied_forward", "base_tied")),
                     ("lora", lambda: lora_like(d, "lora", "lora")),
                     ("rslora", lambda: lora_like(d, "rslora", "lora")),
                     ("lora_tied", lambda: lora_like(d, "lora_tied", "lora")),
                     ("dora", lambda: lora_like(d, "dora", "dora")),
                     ("dora_dropout", lambda: lora_like(d, "dora_dropout", "dora")),
                     ("adalora", lambda: adalora(d))]:
        n = len(FAILS)
        fn()
        print(f"{name}: {'ok' if len(FAILS) == n else 'FAILED'}")
    if os.environ.get("GOLDEN_REPORT"):
        for k, v in sorted(WORST.items()):
            print(f"  worst err/max|want| {k}: {v:.2e}")
    if FAILS:
        print(f"{len(FAILS)} mismatches")
        sys.exit(1)
    print("all golden fixtures re-derived")


if __name__ == "__main__":
    main()
