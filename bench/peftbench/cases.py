"""The named benchmark cases and the FLOP count behind tokens/s -> MFU.

A case is a model shape x adapter types x sequence length x batch x steps on one kind of device.
Both systems train exactly the case's spec (see driver.py for how it reaches each of them).
"""

from dataclasses import dataclass, field, replace

ADAPTERS = ("lora", "dora", "adalora")
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelShape:
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    vocab_size: int
    max_seq_len: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    @property
    def head_dim(self):
        return self.dim // self.n_heads

    def proj_shapes(self):
        """(name, in, out) of every linear of one decoder layer, HF's [out, in] convention."""
        kv = self.n_kv_heads * self.head_dim
        return (("q_proj", self.dim, self.dim), ("k_proj", self.dim, kv), ("v_proj", self.dim, kv),
                ("o_proj", self.dim, self.dim), ("gate_proj", self.dim, self.ffn_dim),
                ("up_proj", self.dim, self.ffn_dim), ("down_proj", self.ffn_dim, self.dim))

    def layer_matmul_params(self):
        return sum(i * o for _, i, o in self.proj_shapes())

    def matmul_params(self):
        """Weights that multiply activations: every layer's seven projections + the lm_head."""
        return self.n_layers * self.layer_matmul_params() + self.vocab_size * self.dim

    def total_params(self):
        """Everything in the checkpoint: matmul weights, embedding table, RMSNorm weights."""
        norms = self.n_layers * 2 * self.dim + self.dim
        return self.matmul_params() + self.vocab_size * self.dim + norms


@dataclass(frozen=True)
class AdapterSpec:
    """One config both systems get: peftrun's adapter.* keys and PEFT's LoraConfig/AdaLoraConfig."""
    r: int = 16  # LoRA / DoRA rank; AdaLoRA starts at init_r
    alpha: float = 32.0
    target_modules: tuple = PROJECTIONS
    init_r: int = 16  # AdaLoRA
    target_r: int = 8
    tinit: int = 0  # AdaLoRA budget schedule; 0 here means "steps // 5" (filled by for_steps)
    tfinal: int = 0
    delta_t: int = 1
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg_weight: float = 0.5

    def for_steps(self, steps):
        """The AdaLoRA schedule scaled to the run: warm-up and final phase a fifth each."""
        if self.tinit or self.tfinal:
            return self
        return replace(self, tinit=max(1, steps // 5), tfinal=max(1, steps // 5))

    def rank(self, adapter):
        return self.init_r if adapter == "adalora" else self.r


@dataclass(frozen=True)
class OptimSpec:
    lr: float = 2e-3
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    warmup_steps: int = 2
    max_grad_norm: float = 1.0
    schedule: str = "cosine"  # transformers' get_cosine_schedule_with_warmup == peftrun's cosine


@dataclass(frozen=True)
class Case:
    name: str
    device: str  # "cpu" or "cuda"
    shape: ModelShape
    seq_len: int
    batch: int
    steps: int
    warmup: int  # steps left out of the median step time
    threads: int = 0  # CPU threads of each system (0 = leave the libraries' default)
    adapters: tuple = ADAPTERS
    adapter: AdapterSpec = field(default_factory=AdapterSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    seed: int = 1234
    note: str = ""
    # Both systems recompute each layer in backward (peftrun's runtime.gradient_checkpointing,
    # transformers' gradient_checkpointing_enable); MFU still counts model FLOPs only.
    gradient_checkpointing: bool = False
    # GPU cases: both systems compute in fp32 (peftrun's runtime.compute_dtype: fp32; an fp32
    # model without autocast on the PyTorch side): the precision reference for their bf16 runs.
    fp32: bool = False

    @property
    def tokens_per_step(self):
        return self.seq_len * self.batch

    def adapter_for_run(self):
        return self.adapter.for_steps(self.steps)


# LLaMA-2's vocabulary size everywhere: the lm_head and the cross-entropy are as large as in a
# real model (the word-level corpus uses only a few hundred of the ids).
VOCAB = 32000

CASES = {
    # ~19 M parameters (16 M of them embedding + lm_head), a smoke-sized CPU case.
    "tiny": Case("tiny", "cpu", ModelShape(256, 4, 4, 2, 704, VOCAB, 512), seq_len=256, batch=4,
                 steps=20, warmup=3, threads=2, note="~19M params, CPU, 2 threads"),
    # ~125 M parameters (GPT-2-small width and depth, LLaMA blocks with GQA 12/4).
    "small": Case("small", "cpu", ModelShape(768, 12, 12, 4, 2048, VOCAB, 512), seq_len=256, batch=4,
                  steps=12, warmup=2, threads=2, note="~125M params, CPU, 2 threads"),
    # TinyLlama-1.1B's shape: the 1B class on one GPU (bf16 on both sides).
    "1b": Case("1b", "cuda", ModelShape(2048, 22, 32, 4, 5632, VOCAB, 2048), seq_len=2048, batch=4,
               steps=30, warmup=5, note="~1.1B params, one GPU, bf16"),
}


def with_overrides(case, adapters=None, steps=None, seq_len=None, batch=None, warmup=None, threads=None,
                   gradient_checkpointing=False, fp32=False):
    """The case with command-line overrides applied (None = keep); checks them."""
    changes = {}
    if fp32 and case.device == "cuda":  # the CPU cases compute in fp32 anyway
        changes.update(fp32=True, name=case.name + "-fp32", note=case.note.replace("bf16", "fp32"))
    if gradient_checkpointing:
        # Its own name, so its results and README block stay apart from the plain case's.
        changes.update(gradient_checkpointing=True, name=changes.get("name", case.name) + "-gc")
    if adapters is not None:
        bad = [a for a in adapters if a not in ADAPTERS]
        if bad or not adapters:
            raise ValueError(f"--adapters: {','.join(bad) or 'empty'} not in {','.join(ADAPTERS)}")
        changes["adapters"] = tuple(adapters)
    for key, value, low in (("steps", steps, 1), ("seq_len", seq_len, 1), ("batch", batch, 1),
                            ("warmup", warmup, 0), ("threads", threads, 0)):
        if value is not None:
            if value < low:
                raise ValueError(f"--{key.replace('_', '-')}: {value} is below {low}")
            changes[key] = value
    out = replace(case, **changes)
    if out.warmup >= out.steps:
        raise ValueError(f"warm-up steps ({out.warmup}) must be fewer than steps ({out.steps})")
    if out.seq_len > out.shape.max_seq_len:
        raise ValueError(f"--seq-len {out.seq_len} exceeds the model's max_seq_len {out.shape.max_seq_len}")
    if out.optim.warmup_steps > out.steps:
        out = replace(out, optim=replace(out.optim, warmup_steps=out.steps))
    return out


# --------------------------------------------------------------------------------------------
# FLOPs per trained token, for MFU. Counted (multiply-add = 2 FLOPs), per token of a step:
#   base matmuls      4 * N_mm          forward x W^T (2N) + backward dX = dY W (2N); the base is
#                                       frozen, so no dW GEMM (full fine-tuning would be 6N).
#                                       N_mm = the 7 projections of every layer + the lm_head;
#                                       the embedding is a lookup (0 FLOPs).
#   adapter matmuls   6 * r * (in+out)  per adapted linear: forward x A^T, (.)B^T (2r(in+out)),
#                                       backward dX through B and A (2r(in+out)) and dA, dB
#                                       (2r(in+out)). DoRA's per-row norm is per step, not per
#                                       token, and its scale is elementwise: not counted.
#   attention         6 * T * d_q * L   per layer: forward Q K^T and P V are 2 * 2 T d_q per token
#                                       over all T keys, halved by the causal mask -> 2 T d_q;
#                                       backward (dP, dS->dQ, dK; dV) is twice the forward -> 4 T d_q.
#                                       d_q = n_heads * head_dim.
# Not counted: norms, RoPE, SwiGLU, softmax, cross-entropy (elementwise), any recomputation
# (MFU counts the model's FLOPs, not the implementation's), the optimizer.
# --------------------------------------------------------------------------------------------


def flops_per_token(shape, seq_len, adapter, spec):
    base = 4 * shape.matmul_params()
    r = spec.rank(adapter)
    adapter_flops = shape.n_layers * sum(6 * r * (i + o) for name, i, o in shape.proj_shapes()
                                         if name in spec.target_modules)
    attention = 6 * seq_len * shape.n_heads * shape.head_dim * shape.n_layers
    return base + adapter_flops + attention
