#!/usr/bin/env python3
"""Golden fixtures for model variants beyond data/base's shape, from the real transformers.

Writes tests/golden/data/variants/ (see tests/golden/README.md, "Model variants"):
  <case>/                a random fp16 checkpoint as save_pretrained writes it (config.json,
                         model.safetensors), drawn like data/base (make_golden.make_base's init)
  <case>.safetensors     input_ids, labels, fp32 logits and loss of one forward
  <case>.json            the sidecar (loss, versions)
Run it with the interpreter make_golden.py uses (same requirements.txt):

    /work/venv-golden/bin/python tests/golden/make_variant_golden.py
"""

import argparse
import copy
import os
import shutil
import sys

import torch
import transformers

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_golden as mg  # noqa: E402

SEQ = 32
SEED_IDS = 78


def head_dim_config():
    # Heads wider than hidden_size / num_attention_heads (64 / 4 = 16): q/k/v/o are 96 / 48 wide.
    return transformers.LlamaConfig(
        vocab_size=mg.VOCAB, hidden_size=mg.HIDDEN, intermediate_size=mg.INTER,
        num_hidden_layers=mg.LAYERS, num_attention_heads=mg.HEADS, num_key_value_heads=mg.KV_HEADS,
        head_dim=24, max_position_embeddings=mg.MAXPOS,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, rms_norm_eps=1e-5,
        tie_word_embeddings=False, attention_bias=False, mlp_bias=False, hidden_act="silu",
        attention_dropout=0.0)


def qwen3_config():
    # Qwen3-0.6B's kind: per-head q_norm / k_norm, head_dim apart from hidden / heads (24 vs
    # 16), tied embeddings, rope_theta 1e6, no biases.
    return transformers.Qwen3Config(
        vocab_size=mg.VOCAB, hidden_size=mg.HIDDEN, intermediate_size=mg.INTER,
        num_hidden_layers=mg.LAYERS, num_attention_heads=mg.HEADS, num_key_value_heads=mg.KV_HEADS,
        head_dim=24, max_position_embeddings=mg.MAXPOS,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, rms_norm_eps=1e-6,
        tie_word_embeddings=True, attention_bias=False, use_sliding_window=False,
        hidden_act="silu", attention_dropout=0.0)


def gemma_config():
    # Gemma 2B's kind: GeGLU with GELU's tanh approximation, RMSNorms scaling by 1 + weight, the
    # embedding times sqrt(hidden_size), one KV head wider than hidden / heads, tied embeddings.
    return transformers.GemmaConfig(
        vocab_size=mg.VOCAB, hidden_size=mg.HIDDEN, intermediate_size=mg.INTER,
        num_hidden_layers=mg.LAYERS, num_attention_heads=mg.HEADS, num_key_value_heads=1,
        head_dim=32, max_position_embeddings=mg.MAXPOS,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, rms_norm_eps=1e-6,
        tie_word_embeddings=True, attention_bias=False, hidden_act="gelu_pytorch_tanh",
        attention_dropout=0.0)


def mistral_window_config():
    # Mistral 7B v0.1's kind: a sliding window in every layer, here 8 keys of the 32 positions.
    return transformers.MistralConfig(
        vocab_size=mg.VOCAB, hidden_size=mg.HIDDEN, intermediate_size=mg.INTER,
        num_hidden_layers=mg.LAYERS, num_attention_heads=mg.HEADS, num_key_value_heads=mg.KV_HEADS,
        max_position_embeddings=mg.MAXPOS,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, rms_norm_eps=1e-5,
        tie_word_embeddings=False, sliding_window=8, hidden_act="silu", attention_dropout=0.0)


def qwen2_window_config():
    # Qwen2 with use_sliding_window: layer 0 full, layer 1 sliding (max_window_layers 1), a
    # 5-key window; q/k/v biases.
    return transformers.Qwen2Config(
        vocab_size=mg.VOCAB, hidden_size=mg.HIDDEN, intermediate_size=mg.INTER,
        num_hidden_layers=mg.LAYERS, num_attention_heads=mg.HEADS, num_key_value_heads=mg.KV_HEADS,
        max_position_embeddings=mg.MAXPOS,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, rms_norm_eps=1e-6,
        tie_word_embeddings=False, use_sliding_window=True, sliding_window=5, max_window_layers=1,
        hidden_act="silu", attention_dropout=0.0)


def gemma3_config():
    # Gemma 3 1B's kind: sandwich norms, q/k norms, a 6-key window in layer 0 with the local
    # RoPE base, full attention in layer 1 with rope_theta 1e6, scores scaled by
    # query_pre_attn_scalar 24 (not head_dim 32), GeGLU, 1 + weight norms, scaled embeddings.
    return transformers.Gemma3TextConfig(
        vocab_size=mg.VOCAB, hidden_size=mg.HIDDEN, intermediate_size=mg.INTER,
        num_hidden_layers=mg.LAYERS, num_attention_heads=mg.HEADS, num_key_value_heads=1,
        head_dim=32, max_position_embeddings=mg.MAXPOS, rms_norm_eps=1e-6,
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
        query_pre_attn_scalar=24, sliding_window=6,
        layer_types=["sliding_attention", "full_attention"], tie_word_embeddings=True,
        attention_bias=False, hidden_activation="gelu_pytorch_tanh", attention_dropout=0.0)


def gemma2_config(**overrides):
    # Gemma 2 2B's kind: Gemma 3's sandwich norms and score scale without its q/k norms, a 6-key
    # window in layer 0 and full attention in layer 1 (Gemma2Config's alternation, from the
    # default layer_types), and soft caps on the attention scores and the final logits. Caps of
    # 50 and 30 (Gemma 2's) would barely bend this small model's scores and logits; 1.5 and 2.5
    # bend them, which the sidecar's loss_without_softcap shows.
    kwargs = dict(
        vocab_size=mg.VOCAB, hidden_size=mg.HIDDEN, intermediate_size=mg.INTER,
        num_hidden_layers=mg.LAYERS, num_attention_heads=mg.HEADS, num_key_value_heads=2,
        head_dim=32, max_position_embeddings=mg.MAXPOS, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        query_pre_attn_scalar=24, sliding_window=6, attn_logit_softcapping=1.5,
        final_logit_softcapping=2.5, tie_word_embeddings=True, attention_bias=False,
        hidden_activation="gelu_pytorch_tanh", attention_dropout=0.0)
    kwargs.update(overrides)
    return transformers.Gemma2Config(**kwargs)


def gemma3_multimodal_config():
    # Gemma 3 4B's kind (Gemma3ForConditionalGeneration, model_type gemma3): gemma3_config's
    # decoder nested in text_config, next to a one-layer SigLIP vision tower and the projector,
    # which a text-only forward does not use. The image token (262144 by default) is outside
    # this vocabulary, as the real one is outside the tokens text carries.
    vision = transformers.SiglipVisionConfig(
        hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
        image_size=28, patch_size=14)
    return transformers.Gemma3Config(text_config=gemma3_config().to_dict(),
                                     vision_config=vision.to_dict(), mm_tokens_per_image=4)


def smollm3_config():
    # SmolLM3's kind: Llama's decoder with NoPE layers, here every second one
    # (no_rope_layer_interval 2: layer 1 passes q and k unrotated), tied embeddings, rope_theta
    # 5e6 as SmolLM3-3B's.
    return transformers.SmolLM3Config(
        vocab_size=mg.VOCAB, hidden_size=mg.HIDDEN, intermediate_size=mg.INTER,
        num_hidden_layers=mg.LAYERS, num_attention_heads=mg.HEADS, num_key_value_heads=mg.KV_HEADS,
        max_position_embeddings=mg.MAXPOS,
        rope_parameters={"rope_type": "default", "rope_theta": 5000000.0}, rms_norm_eps=1e-6,
        no_rope_layer_interval=2, tie_word_embeddings=True, use_sliding_window=False,
        pad_token_id=None, bos_token_id=None, eos_token_id=None,
        hidden_act="silu", attention_dropout=0.0)


def granite_config():
    # Granite 3's kind: Llama's decoder with its four multipliers, here ones that move the
    # forward well away from Llama's (Granite 3.1 2B has 12, 0.22, 1/64 and 8).
    return transformers.GraniteConfig(
        vocab_size=mg.VOCAB, hidden_size=mg.HIDDEN, intermediate_size=mg.INTER,
        num_hidden_layers=mg.LAYERS, num_attention_heads=mg.HEADS, num_key_value_heads=mg.KV_HEADS,
        max_position_embeddings=mg.MAXPOS,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, rms_norm_eps=1e-5,
        embedding_multiplier=3.0, residual_multiplier=0.5, attention_multiplier=0.2,
        logits_scaling=2.5, tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
        hidden_act="silu", attention_dropout=0.0)


def olmo2_config():
    # OLMo 2's kind: no input norms, an RMSNorm on each block's output (post_attention_layernorm,
    # post_feedforward_layernorm), q_norm / k_norm over all heads of q and of k at once.
    return transformers.Olmo2Config(
        vocab_size=mg.VOCAB, hidden_size=mg.HIDDEN, intermediate_size=mg.INTER,
        num_hidden_layers=mg.LAYERS, num_attention_heads=mg.HEADS, num_key_value_heads=mg.KV_HEADS,
        max_position_embeddings=mg.MAXPOS,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0}, rms_norm_eps=1e-6,
        tie_word_embeddings=False, attention_bias=False, pad_token_id=None, bos_token_id=None,
        eos_token_id=None, hidden_act="silu", attention_dropout=0.0)


def phi3_config():
    # Phi-3's kind: q, k, v in one qkv_proj and gate, up in one gate_up_proj, GQA, and a
    # sliding window in every layer (Phi-3-mini-4k's is 2047).
    return transformers.Phi3Config(
        vocab_size=mg.VOCAB, hidden_size=mg.HIDDEN, intermediate_size=mg.INTER,
        num_hidden_layers=mg.LAYERS, num_attention_heads=mg.HEADS, num_key_value_heads=mg.KV_HEADS,
        max_position_embeddings=mg.MAXPOS, original_max_position_embeddings=mg.MAXPOS,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, rms_norm_eps=1e-5,
        sliding_window=10, tie_word_embeddings=False, pad_token_id=None, bos_token_id=None,
        eos_token_id=None, hidden_act="silu", resid_pdrop=0.0, embd_pdrop=0.0,
        attention_dropout=0.0)


def phi3_longrope_config():
    # Phi-3.5-mini's kind: longrope past an original context of 16 (this forward's positions go
    # to 31, so the long factors), max_position_embeddings 4x it, so cos / sin are scaled by
    # sqrt(1 + ln 4 / ln 16); no window.
    return transformers.Phi3Config(
        vocab_size=mg.VOCAB, hidden_size=mg.HIDDEN, intermediate_size=mg.INTER,
        num_hidden_layers=mg.LAYERS, num_attention_heads=mg.HEADS, num_key_value_heads=mg.KV_HEADS,
        max_position_embeddings=mg.MAXPOS, original_max_position_embeddings=16,
        rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                         "short_factor": [1.0, 1.1, 1.2, 1.3, 1.5, 1.7, 2.0, 2.5],
                         "long_factor": [1.0, 1.4, 2.0, 2.9, 4.1, 5.9, 8.4, 12.0]},
        rms_norm_eps=1e-5, sliding_window=None, tie_word_embeddings=False, pad_token_id=None,
        bos_token_id=None, eos_token_id=None, hidden_act="silu", resid_pdrop=0.0,
        embd_pdrop=0.0, attention_dropout=0.0)


def phi4_mini_config():
    # Phi-4-mini's kind: partial rotary (0.75 of each 16-channel head, so 12 rotate and 4 pass)
    # with longrope past an original context of 16, and tied embeddings.
    return transformers.Phi3Config(
        vocab_size=mg.VOCAB, hidden_size=mg.HIDDEN, intermediate_size=mg.INTER,
        num_hidden_layers=mg.LAYERS, num_attention_heads=mg.HEADS, num_key_value_heads=mg.KV_HEADS,
        max_position_embeddings=mg.MAXPOS, original_max_position_embeddings=16,
        rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                         "partial_rotary_factor": 0.75,
                         "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5],
                         "long_factor": [1.0, 1.7, 3.0, 5.2, 9.0, 15.0]},
        rms_norm_eps=1e-5, sliding_window=None, tie_word_embeddings=True, pad_token_id=None,
        bos_token_id=None, eos_token_id=None, hidden_act="silu", resid_pdrop=0.0,
        embd_pdrop=0.0, attention_dropout=0.0)


# name, model class, config, seed, norm weights' centre (mg.draw_weights)
CASES = [
    ("llama_head_dim24", transformers.LlamaForCausalLM, head_dim_config, 4321, 1.0),
    ("qwen3", transformers.Qwen3ForCausalLM, qwen3_config, 4322, 1.0),
    ("gemma", transformers.GemmaForCausalLM, gemma_config, 4323, 0.0),
    ("mistral_window8", transformers.MistralForCausalLM, mistral_window_config, 4324, 1.0),
    ("qwen2_window5_layer1", transformers.Qwen2ForCausalLM, qwen2_window_config, 4325, 1.0),
    ("gemma3", transformers.Gemma3ForCausalLM, gemma3_config, 4326, 0.0),
    ("gemma2", transformers.Gemma2ForCausalLM, gemma2_config, 4327, 0.0),
    ("gemma3_multimodal", transformers.Gemma3ForConditionalGeneration, gemma3_multimodal_config,
     4328, 0.0),
    ("smollm3", transformers.SmolLM3ForCausalLM, smollm3_config, 4329, 1.0),
    ("granite", transformers.GraniteForCausalLM, granite_config, 4330, 1.0),
    ("olmo2", transformers.Olmo2ForCausalLM, olmo2_config, 4331, 1.0),
    ("phi3", transformers.Phi3ForCausalLM, phi3_config, 4332, 1.0),
    ("phi3_longrope", transformers.Phi3ForCausalLM, phi3_longrope_config, 4333, 1.0),
    ("phi4_mini", transformers.Phi3ForCausalLM, phi4_mini_config, 4334, 1.0),
]


def make_checkpoint(out, name, cls, make_config, seed, norm_centre):
    torch.manual_seed(seed)
    model = cls(make_config())
    mg.draw_weights(model, seed, norm_centre)
    d = os.path.join(out, name)
    copy.deepcopy(model).to(torch.float16).save_pretrained(d)
    gen = os.path.join(d, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    return d


def forward_case(out, name, cls, d):
    model = cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    g = torch.Generator().manual_seed(SEED_IDS)
    ids = torch.randint(0, mg.VOCAB, (1, SEQ), generator=g, dtype=torch.int64)
    with torch.no_grad():
        o = model(input_ids=ids, labels=ids)
    meta = {"base": name}
    if getattr(model.config, "sliding_window", None):
        # The same weights with full causal attention: a test can tell the window was applied.
        full = cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager",
                                   sliding_window=100 * SEQ)
        full.eval()
        with torch.no_grad():
            meta["loss_without_window"] = mg.scalar(full(input_ids=ids, labels=ids).loss)
    no_rope = getattr(model.config, "no_rope_layers", None)
    if no_rope and 0 in no_rope:
        # The same weights with RoPE in every layer: a test can tell the NoPE layers skipped it.
        rotating = cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager",
                                       no_rope_layers=[1] * len(no_rope))
        rotating.eval()
        with torch.no_grad():
            meta["loss_with_rope_everywhere"] = mg.scalar(
                rotating(input_ids=ids, labels=ids).loss)
    if getattr(model.config, "final_logit_softcapping", None):
        # The same weights without either soft cap: a test can tell the caps were applied.
        plain = cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager",
                                    attn_logit_softcapping=None, final_logit_softcapping=None)
        plain.eval()
        with torch.no_grad():
            meta["loss_without_softcap"] = mg.scalar(plain(input_ids=ids, labels=ids).loss)
        # Only the attention scores' cap left out: the final one does not hide it.
        final_only = cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager",
                                         attn_logit_softcapping=None)
        final_only.eval()
        with torch.no_grad():
            meta["loss_without_attn_softcap"] = mg.scalar(
                final_only(input_ids=ids, labels=ids).loss)
    mg.write_forward_fixture(out, name, ids, o, "the fp16 checkpoint's logits, computed in fp32",
                             meta)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "data", "variants"))
    args = ap.parse_args()
    mg.setup_determinism()
    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    for name, cls, make_config, seed, norm_centre in CASES:
        d = make_checkpoint(args.out, name, cls, make_config, seed, norm_centre)
        forward_case(args.out, name, cls, d)


if __name__ == "__main__":
    main()
