"""FLOPs of one DAMA training step of a LLaVA-1.5-shaped model, counted from the work a side
executes: the one FLOP model behind every MFU this project quotes (scripts/bench/
torch_dpo_step.py for the PyTorch side, scripts/gpu_table.py for both sides of the committed
results).

What is counted (model FLOPs, the usual MFU convention):
  - every matrix product at 2 FLOPs per multiply-add: the language model's seven projections per
    layer and the vocabulary head on the rows they run on, the projector on the image tokens,
    the frozen vision tower (forward only: nothing upstream of the projector needs a gradient);
  - a trained product costs 3x its forward (forward, input gradient, weight gradient);
  - attention scores and the weighted sum: 4·d FLOPs per (query, key) pair the mask allows in
    the forward (Q·Kᵀ and P·V over all heads, d = heads·head_dim), 8·d more in the backward;
    the vision tower's attention is full (every pair), forward only.
Not counted: recomputation (gradient checkpointing, flash attention's recomputed scores, the
chunked head's recomputed logits), norms, activations, softmax, RoPE, the embedding gather, the
loss and the optimizer update. These are either not model FLOPs or well under 1% of the total.

The benchmark's pairs (both sides): 576 image tokens + TEXT_LEN text tokens per answer sequence,
the last TEXT_LEN // 2 of them the scored answer; chosen and rejected share everything before it
(the image, BOS and the question: the "prefix").
"""

IMAGE_TOKENS = 576  # ViT-L/14 at 336 px: 24 × 24 patches
TEXT_LEN = 160
PEAK_BF16 = 989.4e12  # H100/H200 SXM dense bf16 tensor-core peak, FLOP/s

# Language models: the shapes of scripts/bench/torch_dpo_step.py and gpu_bench's step.
LM = {
    "7b": dict(hidden=4096, ffn=11008, layers=32, heads=32, kv_heads=32, vocab=32064),
    "1b": dict(hidden=2048, ffn=5632, layers=22, heads=32, kv_heads=4, vocab=32064),
    "tiny": dict(hidden=64, ffn=128, layers=2, heads=4, kv_heads=2, vocab=32064),
}
VIT_L14_336 = dict(hidden=1024, ffn=4096, layers=24, heads=16, patch=14, channels=3)
VIT_TINY = dict(hidden=64, ffn=128, layers=2, heads=4, patch=14, channels=3)


def vision(lm):
    return VIT_TINY if lm == "tiny" else VIT_L14_336


def lm_layer_params(lm):
    """Weights of one decoder layer's seven projections (norm scales not counted)."""
    s = LM[lm]
    d, kv = s["hidden"], s["hidden"] // s["heads"] * s["kv_heads"]
    return 2 * d * d + 2 * d * kv + 3 * d * s["ffn"]


def projector_params(lm):
    d = LM[lm]["hidden"]
    return vision(lm)["hidden"] * d + d * d


def vision_forward_flops(lm, layers):
    """One image through the patch embedding and `layers` encoder layers (577 tokens)."""
    v = vision(lm)
    t, d = IMAGE_TOKENS + 1, v["hidden"]
    patch = 2 * v["channels"] * v["patch"] ** 2 * d * IMAGE_TOKENS
    per_layer = 2 * (4 * d * d + 2 * d * v["ffn"]) * t + 4 * d * t * t
    return patch + layers * per_layer


def layout(shared_prefix, text_len=TEXT_LEN):
    """Per pair: language-model tokens and attention (query, key) pairs the mask allows."""
    seq = IMAGE_TOKENS + text_len
    answer = text_len // 2
    prefix = seq - answer
    if shared_prefix:  # [prefix | chosen | rejected]; each answer sees the prefix and itself
        tokens = prefix + 2 * answer
        pairs = prefix * (prefix + 1) // 2 + 2 * (answer * prefix + answer * (answer + 1) // 2)
    else:  # two causal sequences
        tokens = 2 * seq
        pairs = 2 * (seq * (seq + 1) // 2)
    return tokens, pairs, answer, seq


def step_flops(lm, pairs, *, shared_prefix, images_per_pair, vision_layers, head_rows_per_pair,
               text_len=TEXT_LEN):
    """FLOPs of one training step of `pairs` pairs, by part, and their total.

    shared_prefix      chosen and rejected share one pass over the prefix (dama), or run as two
                       full sequences (transformers)
    images_per_pair    1 (each image encoded once) or 2 (once per answer sequence)
    vision_layers      encoder layers run: 23 to take LLaVA's hidden state −2 (dama stops
                       there), 24 when the tower runs to the end (transformers)
    head_rows_per_pair rows the vocabulary head runs on: the 2·answer scored positions (dama's
                       answer-log-prob head), or every position of both sequences
    """
    s = LM[lm]
    d = s["hidden"]
    tokens, att_pairs, _, _ = layout(shared_prefix, text_len)
    parts = {
        "lm_projections": 6 * s["layers"] * lm_layer_params(lm) * tokens * pairs,
        "lm_attention": 12 * s["layers"] * d * att_pairs * pairs,
        "head": 6 * s["vocab"] * d * head_rows_per_pair * pairs,
        "projector": 6 * projector_params(lm) * IMAGE_TOKENS * images_per_pair * pairs,
        "vision": vision_forward_flops(lm, vision_layers) * images_per_pair * pairs,
    }
    parts["total"] = sum(parts.values())
    return parts


def dama_step_flops(lm, pairs, text_len=TEXT_LEN):
    """What gpu_bench's step executes: shared prefix, each image once through 23 of 24 vision
    layers (hidden state −2), the head on the scored answer positions only."""
    answer = text_len // 2
    return step_flops(lm, pairs, shared_prefix=True, images_per_pair=1,
                      vision_layers=vision(lm)["layers"] - 1, head_rows_per_pair=2 * answer,
                      text_len=text_len)


def torch_step_flops(lm, pairs, vision_once, text_len=TEXT_LEN):
    """What torch_dpo_step.py executes: two full sequences per pair, logits at every position,
    the whole vision tower (transformers runs it to the last layer and picks hidden state −2),
    each image once (ANCHOR_VISION_ONCE=1) or once per sequence."""
    seq = IMAGE_TOKENS + text_len
    return step_flops(lm, pairs, shared_prefix=False, images_per_pair=1 if vision_once else 2,
                      vision_layers=vision(lm)["layers"], head_rows_per_pair=2 * seq,
                      text_len=text_len)


def mfu(flops, step_s, peak=PEAK_BF16):
    return flops / step_s / peak


def block_flops(b=8, t=736, d=2048, ffn=5632, vocab=32064, scored=80):
    """The block probe's executed FLOPs (torch_block.py / gpu_bench block): the seven
    projections on b·t tokens, causal attention, the tied head on b·scored rows, all trained.
    (The probes' own `tflops` field uses a nominal formula instead: full t² scores, no head.)"""
    return (6 * (4 * d * d + 3 * d * ffn) * b * t + 12 * d * b * t * (t + 1) // 2
            + 6 * vocab * d * b * scored)
