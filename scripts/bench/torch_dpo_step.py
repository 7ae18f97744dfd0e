#!/usr/bin/env python3
"""PyTorch + transformers side of the DAMA training-step comparison (`gpu_bench step`).

    python3 torch_dpo_step.py [LM:PAIRS ...]        default: 1b:8 7b:4 (LM: 7b, 1b or tiny)

One DAMA training step of a LLaVA-1.5-shaped model with random weights, as a user of the
reference stack runs it: `LlavaForConditionalGeneration` (transformers, SDPA attention), bf16,
the vision tower frozen, projector and language model fully trained, `torch.optim.AdamW`
(fused on CUDA; lr 5e-7, betas 0.9/0.999, eps 1e-8, no weight decay, no clipping), reference
log-probs precomputed (random numbers here; the reference pass is timed on its own). Each pair
is 576 image tokens + 160 text tokens per answer, the last 80 of them the scored answer.
Prints one JSON line per configuration, the median of ANCHOR_STEPS steps after ANCHOR_WARM.

What the other side (`gpu_bench step`, the product's step) does differently, and the setting
that makes this side do the same where transformers can:

  dama                                    this script, default            like for like
  each image encoded once per pair        twice (TRL-style concatenated   ANCHOR_VISION_ONCE=1
  (and through 23 of 24 vision layers)    batch), all 24 layers
  no gradient checkpointing               gradient checkpointing          ANCHOR_GRAD_CKPT=0
  `fused`: fp32 master weights and fp32   pure bf16 weights and bf16      ANCHOR_MASTER=fp32
  moments; `fused-sr`: bf16 weights as    AdamW moments (no master: lr    (fp32 weights + bf16
  their own master, stochastic rounding,  5e-7 updates round away)        autocast: fp32 master
  fp32 moments                                                            and moments)
  chosen and rejected share one pass      two full sequences per pair     none in transformers
  over the image + question prefix
  the vocabulary head on the 160 scored   logits at all 1472 positions    none in transformers
  rows per pair only
  fused flash-style attention kernels     SDPA (flash) attention          -

So pairs/s compares the two products (each with what it can do); MFU (`mfu_vs_989`) counts
only the FLOPs each side executes (scripts/bench/flops.py, the same model for both sides), which
makes it the equal-work figure. The DAMA maths is the `official` preset's (weighted sampling of
K = floor(0.8·N) pairs by exp(−½(A − ḡ)²), α_M, β_C = max(β·α_D·α_M, 1e-3)), computed on the
device without a host synchronisation; its one deviation from the authors' code: when every
weight underflows the K pairs are drawn uniformly without replacement (the authors: with).

Environment:
  ANCHOR_DEVICE=cuda|cpu     where to run (default cuda; cpu for a smoke test: `cpu tiny:2`)
  ANCHOR_GRAD_CKPT=0|1       gradient checkpointing (default 1)
  ANCHOR_MASTER=bf16|fp32    weights and optimizer state (default bf16)
  ANCHOR_VISION_ONCE=0|1     encode each image once and reuse its features (default 0)
  ANCHOR_STEPS, ANCHOR_WARM  timed and warm-up steps (default 8 and 3)
  OUT                        also write the lines to $OUT/anchor.jsonl

Fields: config, pairs_per_step, seq_len, trainable_params, step_s, pairs_per_s, tokens_per_s
(language-model tokens per second), mfu_vs_989 (executed FLOPs / step_s / 989.4 TFLOP/s, the
H100/H200 dense bf16 peak), flops_per_step, lm_tokens_per_step, peak_mem_gib
(torch.cuda.max_memory_allocated), peak_mem_reserved_gib (the caching allocator's peak, closer
to what nvidia-smi shows), ref_logp_seqs_per_s (the no-grad reference pass), the settings
(grad_ckpt, master, vision_once, images_encoded_per_pair, optim_state), device, torch,
transformers. A configuration that fails prints {config, error} and the next one still runs.
"""
import json
import os
import pathlib
import sys
import time

import torch
import torch.nn.functional as F
import transformers
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import flops as flop_model  # noqa: E402

DEV = os.environ.get("ANCHOR_DEVICE", "cuda")
GRAD_CKPT = os.environ.get("ANCHOR_GRAD_CKPT", "1") != "0"
MASTER = os.environ.get("ANCHOR_MASTER", "bf16")
VISION_ONCE = os.environ.get("ANCHOR_VISION_ONCE", "0") == "1"
STEPS = int(os.environ.get("ANCHOR_STEPS", "8"))
WARM = int(os.environ.get("ANCHOR_WARM", "3"))
IMAGE_TOKEN = 32000
TEXT_LEN = flop_model.TEXT_LEN
BETA, GAMMA = 0.1, 0.9
if MASTER not in ("bf16", "fp32"):
    sys.exit(f"torch_dpo_step: ANCHOR_MASTER={MASTER}: bf16 or fp32")


def config(lm):
    s, v = flop_model.LM[lm], flop_model.vision(lm)
    vision = CLIPVisionConfig(hidden_size=v["hidden"], intermediate_size=v["ffn"],
                              num_hidden_layers=v["layers"], num_attention_heads=v["heads"],
                              image_size=336, patch_size=v["patch"], hidden_act="quick_gelu")
    text = LlamaConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], intermediate_size=s["ffn"],
                       num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                       num_key_value_heads=s["kv_heads"], max_position_embeddings=4096,
                       rms_norm_eps=1e-5)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN,
                      projector_hidden_act="gelu", vision_feature_select_strategy="default",
                      vision_feature_layer=-2, image_seq_length=flop_model.IMAGE_TOKENS)
    cfg._attn_implementation = "sdpa"
    return cfg


def build(lm):
    cfg = config(lm)
    torch.set_default_dtype(torch.float32 if MASTER == "fp32" else torch.bfloat16)
    with torch.device(DEV):
        model = LlavaForConditionalGeneration(cfg)
    torch.set_default_dtype(torch.float32)
    for p in model.model.vision_tower.parameters():
        p.requires_grad_(False)
    return model, cfg


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def logits(model, ids, pix):
    """The policy's logits for 2·pairs sequences (chosen rows first, then rejected); `pix` holds
    one image per sequence, or (ANCHOR_VISION_ONCE=1) one per pair."""
    with torch.autocast(DEV, dtype=torch.bfloat16, enabled=(MASTER == "fp32")):
        if not VISION_ONCE:  # every image through the tower once per sequence
            return model(input_ids=ids, pixel_values=pix, use_cache=False).logits
        with torch.no_grad():  # the tower is frozen; the projector trains
            hs = model.model.vision_tower(pix, output_hidden_states=True).hidden_states[-2][:, 1:]
        feats = model.model.multi_modal_projector(hs)
        emb = model.model.get_input_embeddings()(ids)
        first = 1 + flop_model.IMAGE_TOKENS
        emb = torch.cat([emb[:, :1], torch.cat([feats, feats], 0).to(emb.dtype), emb[:, first:]], 1)
        return model(inputs_embeds=emb, use_cache=False).logits


def answer_logps(lg, ids, mask):
    """Σ log p(token) over the scored positions of each sequence, in f32."""
    lp = torch.gather(F.log_softmax(lg[:, :-1].float(), -1), 2, ids[:, 1:].unsqueeze(2)).squeeze(2)
    return (lp * mask[:, 1:]).sum(-1)


def dama_loss(pc, pr, rc, rr, alpha_d, ema, gen):
    """Preset `official`, mode `dama` (docs/SPEC.md): returns the loss and the new ḡ."""
    h = (pc - pr) - (rc - rr)
    a = h.detach().float()
    n = a.numel()
    k = max(1, 4 * n // 5)
    w = torch.exp(-0.5 * (a - ema) ** 2).clamp_min(torch.finfo(torch.float32).tiny)
    idx = torch.multinomial(w, k, replacement=False, generator=gen)
    mask = torch.zeros_like(a).index_fill_(0, idx, 1.0)
    alpha_m = torch.sigmoid(a[idx]).mean() / torch.sigmoid(ema)
    beta = (BETA * alpha_d * alpha_m).clamp(min=1e-3)
    loss = (-F.logsigmoid(beta * h) * mask).sum() / mask.sum()
    return loss, GAMMA * ema + (1 - GAMMA) * a.mean()


def run(lm, pairs):
    model, cfg = build(lm)
    if GRAD_CKPT:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in trainable)
    opt = torch.optim.AdamW(trainable, lr=5e-7, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                            fused=(DEV == "cuda"))
    seqs = 2 * pairs
    T = flop_model.IMAGE_TOKENS + TEXT_LEN
    answer = TEXT_LEN // 2
    g = torch.Generator(device=DEV).manual_seed(0)
    ids = torch.randint(1, IMAGE_TOKEN, (seqs, T), device=DEV, generator=g)
    ids[:, 1:1 + flop_model.IMAGE_TOKENS] = IMAGE_TOKEN
    ids[pairs:, :T - answer] = ids[:pairs, :T - answer]  # chosen and rejected share the prefix
    mask = torch.zeros(seqs, T, device=DEV)
    mask[:, T - answer:] = 1
    pix = torch.randn(pairs, 3, 336, 336, device=DEV, generator=g,
                      dtype=torch.float32 if MASTER == "fp32" else torch.bfloat16)
    if not VISION_ONCE:
        pix = torch.cat([pix, pix], 0)
    ref = torch.randn(seqs, device=DEV, generator=g) - 200.0
    alpha_d = torch.rand(pairs, device=DEV, generator=g) + 0.5
    ema = torch.zeros((), device=DEV)
    times = []
    for s in range(WARM + STEPS):
        sync()
        t0 = time.perf_counter()
        lp = answer_logps(logits(model, ids, pix), ids, mask)
        loss, ema = dama_loss(lp[:pairs], lp[pairs:], ref[:pairs], ref[pairs:], alpha_d, ema, g)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if s >= WARM:
            times.append(time.perf_counter() - t0)
    step = sorted(times)[len(times) // 2]
    work = flop_model.torch_step_flops(lm, pairs, VISION_ONCE)
    peak = torch.cuda.max_memory_allocated() / 2**30 if DEV == "cuda" else None
    peak_reserved = torch.cuda.max_memory_reserved() / 2**30 if DEV == "cuda" else None
    model.eval()  # the reference pass: forward only, no graph
    with torch.no_grad():
        for _ in range(2):
            answer_logps(logits(model, ids, pix), ids, mask)
        sync()
        t0 = time.perf_counter()
        for _ in range(5):
            answer_logps(logits(model, ids, pix), ids, mask)
        sync()
        fwd = (time.perf_counter() - t0) / 5
    res = dict(config=f"llava-{lm}", pairs_per_step=pairs, seq_len=T, trainable_params=n_train,
               step_s=round(step, 4), pairs_per_s=round(pairs / step, 3),
               tokens_per_s=round(seqs * T / step), mfu_vs_989=round(flop_model.mfu(work["total"], step), 4),
               flops_per_step=work["total"], lm_tokens_per_step=seqs * T,
               peak_mem_gib=None if peak is None else round(peak, 2),
               peak_mem_reserved_gib=None if peak_reserved is None else round(peak_reserved, 2),
               ref_logp_seqs_per_s=round(seqs / fwd, 2), grad_ckpt=GRAD_CKPT, master=MASTER,
               vision_once=VISION_ONCE, images_encoded_per_pair=1 if VISION_ONCE else 2,
               optim_state="fp32 master + fp32 moments" if MASTER == "fp32" else "bf16 moments, no master",
               device=torch.cuda.get_device_name() if DEV == "cuda" else "cpu",
               torch=torch.__version__, transformers=transformers.__version__)
    del model, opt
    if DEV == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return res


if __name__ == "__main__":
    results = []
    for arg in sys.argv[1:] or ["1b:8", "7b:4"]:
        lm, pairs = arg.split(":")
        try:
            r = run(lm, int(pairs))
        except Exception as e:  # one failed configuration (out of memory) must not lose the rest
            r = dict(config=f"llava-{lm}", pairs_per_step=int(pairs), error=repr(e)[:400])
            if DEV == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
        print(json.dumps(r), flush=True)
        results.append(r)
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "anchor.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in results)
