#!/usr/bin/env python3
"""Golden fixtures for peftrun, produced by the real PyTorch + transformers + PEFT.

Writes everything under tests/golden/data/ (see tests/golden/README.md for the contents and the
conventions). Deterministic: CPU only, fp32, one thread, every random number from a seeded
torch.Generator or from a torch.manual_seed() right before the PEFT call that draws it.

    python3 -m venv /work/venv-golden
    /work/venv-golden/bin/pip install -r tests/golden/requirements.txt
    /work/venv-golden/bin/python tests/golden/make_golden.py            # writes tests/golden/data/
    /work/venv-golden/bin/python tests/golden/make_golden.py --out DIR  # writes elsewhere
"""

import argparse
import copy
import json
import os
import shutil
import sys
import warnings

import numpy
import safetensors
import torch
import torch.nn as nn
import transformers
from safetensors.torch import load_file, save_file

import peft
from peft import AdaLoraConfig, LoraConfig, get_peft_model, get_peft_model_state_dict

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
BASE_REF = "tests/golden/data/"  # base_model_name_or_path written into adapter_config.json (repo-relative)
ADAPTER = "default"  # PEFT's adapter name; it appears in module/parameter names but not in saved keys

# Model / data constants
VOCAB, HIDDEN, INTER, LAYERS, HEADS, KV_HEADS, MAXPOS = 128, 64, 96, 2, 4, 2, 64
BATCH, SEQ = 2, 16
IGNORED_LABELS = [(0, 5), (1, 10), (1, 15)]  # (row, position) of labels set to -100

# AdamW as asked: torch.optim.AdamW, single-tensor (foreach=False) implementation
ADAMW = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, foreach=False)

SEED_BASE = 1234  # base weights
SEED_BASE_TIED = 1235
SEED_DATA = 42  # input ids
SEED_LORA_INIT = 100  # torch.manual_seed before get_peft_model (PEFT draws lora_A with the global RNG)
SEED_LORA_B = 101  # our random lora_B
SEED_DORA_MASK = 102  # dropout masks of dora_dropout
SEED_ADALORA_INIT = 200  # torch.manual_seed before get_peft_model (AdaLoRA draws A, B with the global RNG)
SEED_ADALORA_E = 201  # our random lora_E
LORA_B_STD = 0.1
ADALORA_E_STD = 0.1


# --------------------------------------------------------------------------------------------
# helpers


def setup_determinism():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def fhex(x):
    return float(x).hex()


def scalar(t):
    """A 0-d fp32 tensor as {value, hex} (value is the exact double of the fp32 number)."""
    v = float(t.detach().to(torch.float32).item())
    return {"value": v, "hex": fhex(v)}


def config_to_json(cfg):
    d = cfg.to_dict()
    if d.get("base_model_name_or_path"):
        d["base_model_name_or_path"] = BASE_REF + os.path.basename(d["base_model_name_or_path"])

    def fix(v):
        if isinstance(v, set):
            return sorted(v)
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [fix(x) for x in v]
        if hasattr(v, "value"):  # enums
            return v.value
        return v

    return fix(d)


class Recorder:
    """Collects tensors for one case file and their index for the JSON sidecar."""

    def __init__(self):
        self.tensors = {}

    def add(self, name, t):
        assert name not in self.tensors, name
        t = t.detach().cpu().contiguous().clone()
        if t.is_floating_point():
            t = t.to(torch.float32)
        self.tensors[name] = t


def write_case(out, case, rec, meta):
    path = os.path.join(out, case + ".safetensors")
    # only one metadata entry: safetensors writes the metadata map in hash order (not reproducible)
    save_file(rec.tensors, path, metadata={"format": "pt"})
    meta = dict(meta)
    meta["case"] = case
    meta["versions"] = versions()
    if "labels" in rec.tensors:  # the CE is a mean over this many (shifted) targets
        meta["valid_targets"] = int((rec.tensors["labels"][:, 1:] != -100).sum().item())
    meta["tensor_count"] = len(rec.tensors)
    meta["tensors"] = shapes_by_pattern(rec.tensors)
    with open(os.path.join(out, case + ".json"), "w") as f:
        f.write(compact_json(meta))
    for p in (path, os.path.join(out, case + ".json")):
        os.chmod(p, 0o644)


P = "base_model.model.model.layers.{L}.{M}"  # a tuner layer's key prefix, as in PEFT's saved keys
TENSOR_DOCS = {
    "input_ids": "int64 [2,16]: token ids passed as input_ids (no attention_mask, positions 0..15)",
    "labels": "int64 [2,16]: passed as labels=; HF shifts internally (logits[:, t] predict labels[:, t+1]; "
              "labels[:, 0] never used); -100 = ignored",
    "logits": "fp32 [2,16,128]: model output logits (step 0 / before any update)",
    "loss": "fp32 [1]: the loss returned by the model (AdaLoRA: CE + orth_reg_weight * orth_reg)",
    "loss_ce": "fp32 [1]: the cross-entropy part alone (AdaLoRA)",
    "hidden_states": "fp32 [3,2,16,64]: output_hidden_states: embeddings, after layer 0, after layer 1 + final norm "
                     "(HF applies model.norm to the last entry)",
    P + ".lora_A.weight": "LoRA A [r, in] used in the forward (PEFT init)",
    P + ".lora_B.weight": "LoRA B [out, r] used in the forward (random, see init)",
    P + ".lora_magnitude_vector": "DoRA magnitude m [out] used in the forward (= row norms of W, from init)",
    P + ".lora_A": "AdaLoRA P [init_r, in] at init",
    P + ".lora_E": "AdaLoRA Lambda [init_r, 1] at init (random, see init)",
    P + ".lora_B": "AdaLoRA Q [out, init_r] at init",
    "{KEY}.grad": "gradient of d loss / d KEY at the first backward (same shape as KEY)",
    "{KEY}.after_step1": "KEY after one torch.optim.AdamW step",
    "{KEY}.exp_avg": "AdamW first moment after that step",
    "{KEY}.exp_avg_sq": "AdamW second moment after that step",
    P + ".lora_dropout_mask": "uint8 0/1 [2,16,in]: fixed dropout mask of that layer's lora_dropout (input shape)",
    "step{S}.{KEY}": "AdaLoRA tensor after step S: AdamW step, then update_and_allocate(S) (masking included)",
    "step{S}.{KEY}.grad": "AdaLoRA gradient used by step S (S >= 1; step 0's is {KEY}.grad)",
    "step{S}.{E}.pre_mask": "lora_E after step S's AdamW update, before update_and_allocate(S)",
    "step{S}.{KEY}.exp_avg_ipt": "RankAllocator.exp_avg_ipt (I-bar) after update_and_allocate(S); absent when empty",
    "step{S}.{KEY}.exp_avg_unc": "RankAllocator.exp_avg_unc (U-bar) after update_and_allocate(S); absent when empty",
    "step{S}." + P + ".triplet_score": "[init_r]: triplet score S_i that mask_to_budget ranked at step S",
    "step{S}.{E}.keep": "fp32 0/1 [init_r]: rank_pattern of step S (1 = kept, 0 = lora_E entry zeroed)",
}


def doc_pattern(name):
    """Maps a tensor name to its TENSOR_DOCS pattern."""
    import re

    p = re.sub(r"layers\.\d+\.", "layers.{L}.", name)
    p = re.sub(r"\.(self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj(\.|$)", r".{M}\3", p)
    p = re.sub(r"^step\d+\.", "step{S}.", p)
    if p in TENSOR_DOCS:
        return p
    for suffix in (".grad", ".after_step1", ".exp_avg", ".exp_avg_sq", ".exp_avg_ipt", ".exp_avg_unc",
                   ".pre_mask", ".keep"):
        if p.endswith(suffix):
            head, kind = p[: -len(suffix)], suffix
            if head.startswith("step{S}."):
                head, pre = head[len("step{S}."):], "step{S}."
            else:
                pre = ""
            if head.endswith(".lora_E") and kind in (".pre_mask", ".keep"):
                cand = pre + "{E}" + kind
            else:
                cand = pre + "{KEY}" + kind
            if head in TENSOR_DOCS and cand in TENSOR_DOCS:
                return cand
    if p.startswith("step{S}.") and p[len("step{S}."):] in TENSOR_DOCS:
        return "step{S}.{KEY}"
    raise KeyError("undocumented tensor " + name)


def shapes_by_pattern(tensors):
    """{pattern: {count, doc}}: every kind of tensor once ({L} layer, {M} self_attn.q_proj ... mlp.down_proj,
    {S} step, {KEY} an adapter key, {E} a lora_E key); the .safetensors header has every name and shape."""
    pats = {}
    for k in tensors:
        p = doc_pattern(k)
        e = pats.setdefault(p, {"count": 0, "doc": TENSOR_DOCS[p]})
        e["count"] += 1
    return dict(sorted(pats.items()))


def compact_json(obj, indent=0):
    """JSON with one line per leaf entry of a dict, lists of scalars on one line."""
    pad = " " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [pad + json.dumps(k) + ": " + compact_json(v, indent + 1) for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}" + ("\n" if indent == 0 else "")
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        items = [pad + compact_json(v, indent + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    return json.dumps(obj)


def versions():
    return {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "safetensors": safetensors.__version__, "numpy": numpy.__version__}


def strip_saved_dir(d):
    """PEFT writes a README.md model card into the adapter folder; it holds nothing peftrun needs and
    carries no deterministic content worth keeping, so drop it."""
    p = os.path.join(d, "README.md")
    if os.path.exists(p):
        os.remove(p)


# --------------------------------------------------------------------------------------------
# base model


def llama_config(tied):
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=MAXPOS,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, rms_norm_eps=1e-5,
        tie_word_embeddings=tied, attention_bias=False, mlp_bias=False, hidden_act="silu",
        attention_dropout=0.0, initializer_range=0.02,
    )
    return cfg


def draw_weights(model, seed, norm_centre=1.0):
    """The golden bases' init, in place: embedding N(0, 0.25^2), norms norm_centre + N(0, 0.1^2)
    (0 for Gemma, whose norms scale by 1 + weight), biases N(0, 0.1^2), every Linear [out, in]
    N(0, 1/in), each rounded to an fp16-representable value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # (a tied lm_head is not listed again)
            if name.endswith("embed_tokens.weight"):
                v = torch.randn(p.shape, generator=g) * 0.25
            elif name.endswith("norm.weight"):
                v = norm_centre + 0.1 * torch.randn(p.shape, generator=g)
            elif p.dim() == 1:  # a projection's bias (Qwen2's q/k/v)
                v = 0.1 * torch.randn(p.shape, generator=g)
            else:  # every Linear, [out, in]: N(0, 1/in)
                v = torch.randn(p.shape, generator=g) / (p.shape[1] ** 0.5)
            p.copy_(v.to(torch.float16).to(torch.float32))


def write_forward_fixture(out, name, ids, output, logits_doc, meta):
    """One forward of `ids` (labels = ids, so SEQ - 1 targets): <name>.safetensors with input_ids,
    labels, logits and loss, and <name>.json with `meta`, the loss, versions and a tensor index."""
    seq = ids.shape[1]
    rec = Recorder()
    rec.add("input_ids", ids)
    rec.add("labels", ids)
    rec.add("logits", output.logits)
    rec.add("loss", output.loss.reshape(1))
    save_file(rec.tensors, os.path.join(out, name + ".safetensors"), metadata={"format": "pt"})
    meta = dict(case=name, **meta, loss=scalar(output.loss), valid_targets=seq - 1,
                versions=versions())
    meta["tensors"] = {
        "input_ids": f"int64 [1,{seq}]: token ids (no attention_mask, positions 0..{seq - 1})",
        "labels": f"int64 [1,{seq}]: = input_ids (HF shifts them: {seq - 1} targets)",
        "logits": f"fp32 [1,{seq},{VOCAB}]: " + logits_doc,
        "loss": "fp32 [1]: their mean cross-entropy",
    }
    with open(os.path.join(out, name + ".json"), "w") as f:
        f.write(compact_json(meta))


def make_base(out, tied):
    """Builds the random base, rounds it to fp16-representable values and saves it in fp16.
    Returns the directory it was saved to."""
    seed = SEED_BASE_TIED if tied else SEED_BASE
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(llama_config(tied))
    draw_weights(model, seed)
    d = os.path.join(out, "base_tied" if tied else "base")
    if os.path.exists(d):
        shutil.rmtree(d)
    m16 = copy.deepcopy(model).to(torch.float16)
    m16.save_pretrained(d)
    return d


def load_base(d):
    """The fp32 model used for every case: loaded back from the fp16 checkpoint on disk, so the
    fixtures are a pure function of that checkpoint."""
    model = transformers.LlamaForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    model.train()  # dropout modules exist only in the adapters; attention_dropout is 0.0
    return model


def make_inputs():
    g = torch.Generator().manual_seed(SEED_DATA)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=g, dtype=torch.int64)
    labels = ids.clone()
    for b, t in IGNORED_LABELS:
        labels[b, t] = -100
    return ids, labels


# --------------------------------------------------------------------------------------------
# adapter naming


def saved_key(param_name):
    """named_parameters() name of a PEFT model -> the key get_peft_model_state_dict()/save_pretrained
    write (the adapter name removed; DoRA's `.lora_magnitude_vector.default.weight` -> `.lora_magnitude_vector`)."""
    k = param_name
    if k.endswith(f".lora_magnitude_vector.{ADAPTER}.weight"):
        return k[: -len(f".{ADAPTER}.weight")]
    k = k.replace(f".{ADAPTER}.", ".")
    if k.endswith(f".{ADAPTER}"):
        k = k[: -len(f".{ADAPTER}")]
    return k


def trainable(model):
    """(saved_key, parameter) for every trainable adapter tensor, in model order."""
    out = []
    for n, p in model.named_parameters():
        if p.requires_grad:
            out.append((saved_key(n), p))
    return out


def check_names(model):
    """The names we use must be exactly PEFT's own state-dict names, with the same values."""
    sd = get_peft_model_state_dict(model)
    mine = dict(trainable(model))
    assert set(sd) == set(mine), (sorted(set(sd) ^ set(mine)))
    for k, v in sd.items():
        assert torch.equal(v, mine[k].detach()), k
    return sd


def lora_layers(model):
    """(module path as in saved keys, module) of every PEFT tuner layer, in model order."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]


# --------------------------------------------------------------------------------------------
# deterministic dropout


class FixedMaskDropout(nn.Module):
    """Stands in for nn.Dropout(p) in training mode with a fixed, recorded mask:
    y = x * (mask * (1/(1-p))), computed as torch's own dropout does (noise.bernoulli_(1-p);
    noise.div_(1-p); x * noise). Must be called exactly once per forward, with x of the mask's shape."""

    def __init__(self, mask, p):
        super().__init__()
        self.p = p
        self.register_buffer("mask", mask, persistent=False)
        self.calls = 0

    def forward(self, x):
        assert x.shape == self.mask.shape, (x.shape, self.mask.shape)
        self.calls += 1
        noise = self.mask.clone().div_(1.0 - self.p)
        return x * noise


# --------------------------------------------------------------------------------------------
# LoRA / rsLoRA / DoRA


def lora_config(use_rslora=False, use_dora=False, dropout=0.0):
    return LoraConfig(r=4, lora_alpha=8, target_modules=list(TARGETS), lora_dropout=dropout, bias="none",
                      use_rslora=use_rslora, use_dora=use_dora, task_type="CAUSAL_LM")


def build_lora(base_dir, cfg):
    model = load_base(base_dir)
    torch.manual_seed(SEED_LORA_INIT)
    pm = get_peft_model(model, cfg)
    pm.train()
    g = torch.Generator().manual_seed(SEED_LORA_B)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if ".lora_B." in n:
                p.copy_(torch.randn(p.shape, generator=g) * LORA_B_STD)
    return pm


def forward_backward(pm, ids, labels, rec, prefix=""):
    out = pm(input_ids=ids, labels=labels)
    out.loss.backward()
    rec.add(prefix + "logits", out.logits)
    rec.add(prefix + "loss", out.loss.reshape(1))
    for k, p in trainable(pm):
        assert p.grad is not None, k
        rec.add(prefix + k + ".grad", p.grad)
    return out


def lora_case(out, case, base_dir, ids, labels, *, use_rslora=False, use_dora=False, dropout=0.0,
              step=False, save_dir=None, tied=False):
    cfg = lora_config(use_rslora=use_rslora, use_dora=use_dora, dropout=dropout)
    pm = build_lora(base_dir, cfg)
    rec = Recorder()
    rec.add("input_ids", ids)
    rec.add("labels", labels)
    sd = check_names(pm)
    for k, v in sd.items():
        rec.add(k, v)
    meta = {
        "base": os.path.basename(base_dir),
        "peft_config": config_to_json(pm.peft_config[ADAPTER]),
        "scaling": {"value": pm.base_model.model.model.layers[0].self_attn.q_proj.scaling[ADAPTER]},
        "adapter_keys": {k: list(v.shape) for k, v in sd.items()},
        "init": (f"torch.manual_seed({SEED_LORA_INIT}) then get_peft_model (lora_A kaiming-uniform(a=sqrt(5)) from "
                 f"the global RNG, lora_B = 0{', magnitude = row norms of W' if use_dora else ''}); then every "
                 f"lora_B (model order) := randn(generator seed {SEED_LORA_B}) * {LORA_B_STD}"
                 + ("; the DoRA magnitude is NOT recomputed: it stays ||W||_row from init (with B=0)"
                    if use_dora else "")),
    }
    if save_dir:
        d = os.path.join(out, save_dir)
        if os.path.exists(d):
            shutil.rmtree(d)
        pm.peft_config[ADAPTER].base_model_name_or_path = BASE_REF + os.path.basename(base_dir)
        pm.save_pretrained(d)
        strip_saved_dir(d)
        saved = load_file(os.path.join(d, "adapter_model.safetensors"))
        assert set(saved) == set(sd), sorted(set(saved) ^ set(sd))
        for k in saved:
            assert torch.equal(saved[k], sd[k]), k
        meta["saved_adapter_dir"] = save_dir

    if dropout > 0.0:
        g = torch.Generator().manual_seed(SEED_DORA_MASK)
        masks = []
        for path, m in lora_layers(pm):
            in_f = m.get_base_layer().in_features
            mask = torch.bernoulli(torch.full((BATCH, SEQ, in_f), 1.0 - dropout), generator=g)
            m.lora_dropout[ADAPTER] = FixedMaskDropout(mask, dropout)
            rec.add(path + ".lora_dropout_mask", mask.to(torch.uint8))
            masks.append((path, m))
        meta["dropout_masks"] = {
            "strategy": ("each lora_dropout['default'] (nn.Dropout(p)) replaced by a module computing "
                         "x * (mask * fp32(1/(1-p))) with a fixed 0/1 mask; masks drawn in model order with "
                         f"torch.bernoulli(full((2,16,in), 1-p), generator seed {SEED_DORA_MASK})"),
            "p": dropout, "scale": scalar(torch.tensor(1.0) / (1.0 - dropout)),
        }

    outp = forward_backward(pm, ids, labels, rec)
    meta["loss"] = scalar(outp.loss)
    if dropout > 0.0:
        for path, m in masks:
            assert m.lora_dropout[ADAPTER].calls == 1, path

    if step:
        params = [p for _, p in trainable(pm)]
        opt = torch.optim.AdamW(params, **ADAMW)
        opt.step()
        for k, p in trainable(pm):
            rec.add(k + ".after_step1", p)
            st = opt.state[p]
            rec.add(k + ".exp_avg", st["exp_avg"])
            rec.add(k + ".exp_avg_sq", st["exp_avg_sq"])
        meta["adamw"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in ADAMW.items()}
        # loss of the updated adapter on the same batch (no backward), to check a whole step end to end
        with torch.no_grad():
            meta["loss_after_step1"] = scalar(pm(input_ids=ids, labels=labels).loss)
    write_case(out, case, rec, meta)
    return pm


# --------------------------------------------------------------------------------------------
# plain base forward


def base_case(out, case, base_dir, ids, labels):
    model = load_base(base_dir)
    rec = Recorder()
    rec.add("input_ids", ids)
    rec.add("labels", labels)
    with torch.no_grad():
        o = model(input_ids=ids, labels=labels, output_hidden_states=True)
    rec.add("logits", o.logits)
    rec.add("loss", o.loss.reshape(1))
    rec.add("hidden_states", torch.stack(o.hidden_states))
    meta = {"base": os.path.basename(base_dir), "loss": scalar(o.loss)}
    write_case(out, case, rec, meta)


# --------------------------------------------------------------------------------------------
# AdaLoRA


ADALORA_STEPS = 5


def adalora_case(out, base_dir, ids, labels):
    cfg = AdaLoraConfig(init_r=6, target_r=2, tinit=1, tfinal=1, deltaT=1, beta1=0.85, beta2=0.85,
                        orth_reg_weight=0.5, total_step=ADALORA_STEPS, lora_alpha=8,
                        target_modules=list(TARGETS), lora_dropout=0.0, task_type="CAUSAL_LM")
    model = load_base(base_dir)
    torch.manual_seed(SEED_ADALORA_INIT)
    pm = get_peft_model(model, cfg)
    pm.train()
    g = torch.Generator().manual_seed(SEED_ADALORA_E)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if ".lora_E." in n:
                p.copy_(torch.randn(p.shape, generator=g) * ADALORA_E_STD)
    config_at_init = config_to_json(pm.peft_config[ADAPTER])
    tuner = pm.base_model  # AdaLoraModel
    alloc = tuner.rankallocator
    inner = tuner.model  # LlamaForCausalLM: the RankAllocator's names are relative to it

    def inner_to_saved(n):  # "model.layers.0...lora_E.default" -> "base_model.model.model.layers.0...lora_E"
        return saved_key("base_model.model." + n)

    rec = Recorder()
    rec.add("input_ids", ids)
    rec.add("labels", labels)
    sd = check_names(pm)
    for k, v in sd.items():
        rec.add(k, v)

    # capture the allocator's triplet scores and threshold exactly as mask_to_budget computes them
    captured = {}
    orig_mask_to_budget = alloc.mask_to_budget

    def mask_to_budget_spy(model_, budget):
        scores = {}
        for n, p in model_.named_parameters():
            if f"lora_E.{ADAPTER}" in n:
                name_m = n.replace("lora_E", "%s")
                ipt_E = alloc._element_score(n)
                ipt_A = torch.mean(alloc._element_score(name_m % "lora_A"), dim=1, keepdim=True)
                ipt_B = torch.mean(alloc._element_score(name_m % "lora_B"), dim=0, keepdim=False).view(-1, 1)
                scores[n] = alloc._combine_ipt(ipt_E, torch.cat([ipt_A, ipt_B], dim=1))
        allv = torch.cat([scores[n].view(-1) for n in scores])
        k = alloc.init_bgt - budget
        thr = torch.kthvalue(allv, k=k)[0].item()
        captured["scores"] = scores
        captured["threshold"] = thr
        captured["budget"] = budget
        srt = torch.sort(allv).values
        captured["kth_and_next"] = [srt[k - 1].item(), srt[k].item()] if k < len(srt) else [srt[k - 1].item()]
        rp = orig_mask_to_budget(model_, budget)
        captured["rank_pattern"] = rp
        return rp

    alloc.mask_to_budget = mask_to_budget_spy

    meta = {
        "base": os.path.basename(base_dir),
        "peft_config_at_init": config_at_init,
        "scaling_alpha": tuner.model.model.layers[0].self_attn.q_proj.scaling[ADAPTER],
        "ranknum": float(tuner.model.model.layers[0].self_attn.q_proj.ranknum[ADAPTER].item()),
        "adapter_keys": {k: list(v.shape) for k, v in sd.items()},
        "init": (f"torch.manual_seed({SEED_ADALORA_INIT}) then get_peft_model (A, B ~ N(0, 0.02) from the global "
                 f"RNG, E = 0); then every lora_E (model order) := randn(generator seed {SEED_ADALORA_E}) * "
                 f"{ADALORA_E_STD}"),
        "allocator": {"init_bgt": alloc.init_bgt, "target_bgt": alloc.target_bgt,
                      "name_set": list(alloc.name_set)},
        "adamw": {k: (list(v) if isinstance(v, tuple) else v) for k, v in ADAMW.items()},
        "steps": [],
    }

    params = [p for _, p in trainable(pm)]
    opt = torch.optim.AdamW(params, **ADAMW)
    for step in range(ADALORA_STEPS):
        o = pm(input_ids=ids, labels=labels)
        total = o.loss
        with torch.no_grad():  # the CE part alone, through the very same LlamaForCausalLM
            ce = inner(input_ids=ids, labels=labels).loss
            reg = 0.0
            nreg = 0
            for n, p in inner.named_parameters():
                if ("lora_A" in n or "lora_B" in n) and ADAPTER in n:
                    cov = p @ p.T if "lora_A" in n else p.T @ p
                    reg = reg + torch.norm(cov - torch.eye(*cov.shape), p="fro")
                    nreg += 1
            reg = reg / nreg
        total.backward()
        pfx = f"step{step}."
        if step == 0:
            rec.add("logits", o.logits)
            rec.add("loss", total.reshape(1))
            rec.add("loss_ce", ce.reshape(1))
            for k, p in trainable(pm):
                rec.add(k + ".grad", p.grad)
            meta["loss"] = scalar(total)
            meta["loss_ce"] = scalar(ce)
            meta["orth_reg"] = scalar(reg)
            meta["orth_reg_count"] = nreg
        else:
            for k, p in trainable(pm):
                rec.add(pfx + k + ".grad", p.grad)
        opt.step()
        for k, p in trainable(pm):
            if k.endswith(".lora_E"):
                rec.add(pfx + k + ".pre_mask", p)
        captured.clear()
        budget, mask_ind = alloc.budget_schedule(step)
        tuner.update_and_allocate(step)
        for k, p in trainable(pm):
            rec.add(pfx + k, p)
        for n in sorted(alloc.exp_avg_ipt):
            rec.add(pfx + inner_to_saved(n) + ".exp_avg_ipt", alloc.exp_avg_ipt[n])
            rec.add(pfx + inner_to_saved(n) + ".exp_avg_unc", alloc.exp_avg_unc[n])
        info = {"step": step, "loss": scalar(total), "loss_ce": scalar(ce), "orth_reg": scalar(reg),
                "budget_schedule": {"budget": budget, "mask_ind": mask_ind},
                "ipt_updated": step < cfg.total_step - cfg.tfinal,
                "ipt_reset_after": step == cfg.total_step - cfg.tfinal,
                "masked": bool(captured)}
        if captured:
            for n, s in captured["scores"].items():
                rec.add(pfx + inner_to_saved(n).replace(".lora_E", ".triplet_score"), s)
            keep = {}
            for n, p in inner.named_parameters():
                if f"lora_E.{ADAPTER}" in n:
                    km = torch.tensor(captured["rank_pattern"][n], dtype=torch.float32)
                    rec.add(pfx + inner_to_saved(n) + ".keep", km)
                    keep[inner_to_saved(n)] = int(km.sum().item())
                    # PEFT's masking is exactly "E := 0 where not kept"
                    assert torch.equal(p.detach().view(-1)[km == 0], torch.zeros(int((km == 0).sum())))
            info.update({"budget": captured["budget"], "threshold": captured["threshold"],
                         "threshold_hex": fhex(captured["threshold"]),
                         "kth_and_next_score": captured["kth_and_next"],
                         "kept_per_module": keep, "kept_total": sum(keep.values())})
        rp = pm.peft_config[ADAPTER].rank_pattern
        info["config_rank_pattern_keys_sample"] = sorted(rp)[:2] if rp else None
        info["config_rank_pattern_set"] = rp is not None
        meta["steps"].append(info)
        opt.zero_grad()

    # the final adapter, as PEFT writes it (sliced to the kept ranks, rank_pattern in adapter_config.json)
    d = os.path.join(out, "adalora_adapter")
    if os.path.exists(d):
        shutil.rmtree(d)
    pm.peft_config[ADAPTER].base_model_name_or_path = BASE_REF + os.path.basename(base_dir)
    pm.save_pretrained(d)
    strip_saved_dir(d)
    with open(os.path.join(d, "adapter_config.json")) as f:
        meta["saved_adapter_config_rank_pattern"] = json.load(f)["rank_pattern"]
    meta["saved_adapter_dir"] = "adalora_adapter"
    saved = load_file(os.path.join(d, "adapter_model.safetensors"))
    meta["saved_adapter_keys"] = {k: list(saved[k].shape) for k in sorted(saved)}
    write_case(out, "adalora", rec, meta)


# --------------------------------------------------------------------------------------------


def main():
    if os.environ.get("PYTHONHASHSEED") != "0":
        # PEFT keeps target_modules as a set and writes it in set order into adapter_config.json; string
        # hashing is randomised per process unless PYTHONHASHSEED is fixed.
        env = dict(os.environ, PYTHONHASHSEED="0", HF_HUB_DISABLE_PROGRESS_BARS="1")
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "data"))
    args = ap.parse_args()
    setup_determinism()
    out = args.out
    os.makedirs(out, exist_ok=True)

    ids, labels = make_inputs()
    base_dir = make_base(out, tied=False)
    tied_dir = make_base(out, tied=True)

    base_case(out, "base_forward", base_dir, ids, labels)
    base_case(out, "base_tied_forward", tied_dir, ids, labels)
    lora_case(out, "lora", base_dir, ids, labels, step=True, save_dir="lora_adapter")
    lora_case(out, "rslora", base_dir, ids, labels, use_rslora=True)
    lora_case(out, "dora", base_dir, ids, labels, use_dora=True, step=True, save_dir="dora_adapter")
    lora_case(out, "dora_dropout", base_dir, ids, labels, use_dora=True, dropout=0.25)
    lora_case(out, "lora_tied", tied_dir, ids, labels)
    adalora_case(out, base_dir, ids, labels)
    with open(os.path.join(out, "VERSIONS.json"), "w") as f:
        json.dump(versions(), f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
