"""The random frozen base both systems load: a LLaMA checkpoint folder as Hugging Face writes it.

config.json (LlamaForCausalLM, transformers 5 keys) + model.safetensors in fp16, the format
peftrun's HF loader (runtime/model/hf_checkpoint) and transformers' from_pretrained both read.
Weights (numpy, seeded): embedding N(0, 1), every linear [out, in] N(0, 1/in) (as peftrun's own
random base: HF's N(0, 0.02) makes a frozen random model whose loss LoRA can hardly move), RMSNorm
weights 1. Tensors are generated and written one at a time, so a 1B model needs ~one tensor of
memory, not the model.
"""

import json
import os
import struct


def tensor_list(shape):
    """(name, [rows, cols] or [n], init) in transformers' order; init is 'embed', 'linear' or 'ones'."""
    out = [("model.embed_tokens.weight", [shape.vocab_size, shape.dim], "embed")]
    for layer in range(shape.n_layers):
        p = f"model.layers.{layer}."
        out.append((p + "input_layernorm.weight", [shape.dim], "ones"))
        for name, i, o in shape.proj_shapes():
            module = "self_attn" if name in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            out.append((f"{p}{module}.{name}.weight", [o, i], "linear"))
        out.append((p + "post_attention_layernorm.weight", [shape.dim], "ones"))
    out.append(("model.norm.weight", [shape.dim], "ones"))
    out.append(("lm_head.weight", [shape.vocab_size, shape.dim], "linear"))
    return out


def hf_config(shape):
    return {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "dtype": "float16",
        "eos_token_id": 2,
        "head_dim": shape.head_dim,
        "hidden_act": "silu",
        "hidden_size": shape.dim,
        "initializer_range": 0.02,
        "intermediate_size": shape.ffn_dim,
        "max_position_embeddings": shape.max_seq_len,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": shape.n_heads,
        "num_hidden_layers": shape.n_layers,
        "num_key_value_heads": shape.n_kv_heads,
        "pad_token_id": None,
        "pretraining_tp": 1,
        "rms_norm_eps": shape.norm_eps,
        "rope_parameters": {"rope_theta": shape.rope_theta, "rope_type": "default"},
        "tie_word_embeddings": False,
        "use_cache": False,
        "vocab_size": shape.vocab_size,
    }


def write_base(folder, shape, seed):
    import numpy as np  # here, so that hf_config() needs no numpy (the self-test uses it)

    os.makedirs(folder, exist_ok=True)
    tensors = tensor_list(shape)
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, dims, _ in tensors:
        size = (dims[0] * (dims[1] if len(dims) > 1 else 1)) * 2
        header[name] = {"dtype": "F16", "shape": dims, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # safetensors: the data starts 8-byte aligned
    rng = np.random.default_rng(seed)
    tmp = os.path.join(folder, "model.safetensors.tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for _, dims, init in tensors:
            if init == "ones":
                w = np.ones(dims, dtype=np.float16)
            else:
                std = 1.0 if init == "embed" else 1.0 / np.sqrt(dims[1])
                w = (rng.standard_normal(dims, dtype=np.float32) * np.float32(std)).astype(np.float16)
            f.write(w.tobytes())
    os.replace(tmp, os.path.join(folder, "model.safetensors"))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(hf_config(shape), f, indent=2)
        f.write("\n")


if __name__ == "__main__":  # python -m peftbench.base_model SPEC.json (the driver calls it)
    import sys

    from peftbench.cases import ModelShape

    with open(sys.argv[1]) as f:
        spec = json.load(f)
    write_base(spec["folder"], ModelShape(**spec["shape"]), spec["seed"])
