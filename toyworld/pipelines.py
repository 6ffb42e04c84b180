"""The toy pipelines' architectures: an SD-layout and a PixArt-layout pipeline around the toy VAE.

Both are real diffusers pipelines (``StableDiffusionPipeline``, ``PixArtAlphaPipeline``) that
load with ``DiffusionPipeline.from_pretrained`` and register as any other pipeline folder.
Their tokenizers know the toy world's words as whole tokens (generated here, no download); their
text encoders are small random transformers that stay frozen, as CLIP and T5 do in real
post-training, and the denoiser learns to read them.
"""

from __future__ import annotations

from pathlib import Path

from training.engine.tiny import PIXART_ALPHA_BLOCKS

TEXT_LENGTH = 40  # tokens; the longest toy caption has 31 words and commas, plus start and end
TEXT_HIDDEN = 64
LATENT_CHANNELS = 4
LATENT_SIZE = 8  # 64 px through the 8× VAE

UNET_CONFIG = dict(
    sample_size=LATENT_SIZE,
    in_channels=LATENT_CHANNELS,
    out_channels=LATENT_CHANNELS,
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=TEXT_HIDDEN,
    attention_head_dim=8,
    norm_num_groups=8,
)
PIXART_CONFIG = dict(
    sample_size=LATENT_SIZE,
    num_layers=4,
    patch_size=1,
    attention_head_dim=32,
    num_attention_heads=4,
    caption_channels=TEXT_HIDDEN,
    in_channels=LATENT_CHANNELS,
    cross_attention_dim=128,
    out_channels=2 * LATENT_CHANNELS,  # learned sigma, as in PixArt-α/Σ
    **PIXART_ALPHA_BLOCKS,
)


def vocabulary() -> list[str]:
    """Every word a toy caption or question uses."""
    from toyworld.scenes import BACKGROUNDS, COLOURS, POSITION_PHRASES, SHAPES, SIZES, TEXTURES

    words = {"a", "and", "on", "background", "is", "there", "the", ",", "?"}
    words |= set(SHAPES) | set(COLOURS) | set(TEXTURES) | set(SIZES) | set(BACKGROUNDS)
    for phrase in POSITION_PHRASES.values():
        words |= set(phrase.split())
    return sorted(words)


def clip_tokenizer():
    """A byte-level BPE CLIPTokenizer whose merges build every toy word into one token."""
    from transformers import CLIPTokenizer

    from training.engine.tiny import byte_alphabet

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in byte_alphabet():
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(char + "</w>", len(vocab))
    # Learn the merges as BPE does, on the vocabulary itself, until each word is one token:
    # encoding replays the merges in the same order, so it rebuilds every word whole.
    words = [tuple(word[:-1]) + (word[-1] + "</w>",) for word in vocabulary()]
    merges = []
    while True:
        pairs: dict[tuple[str, str], int] = {}
        for word in words:
            for pair in zip(word, word[1:]):
                pairs[pair] = pairs.get(pair, 0) + 1
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        vocab.setdefault(best[0] + best[1], len(vocab))
        words = [_merge(word, best) for word in words]
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)
    tokenizer.model_max_length = TEXT_LENGTH
    return tokenizer


def _merge(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def t5_tokenizer():
    """A unigram T5Tokenizer that scores every toy word above its letters."""
    import string

    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -6.0) for c in string.ascii_lowercase + string.digits + ".,!?'-"]
    pieces += [("▁" + word, -1.0) for word in vocabulary()]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0)
    tokenizer.model_max_length = TEXT_LENGTH
    return tokenizer


def _clip_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=TEXT_HIDDEN, intermediate_size=128,
        num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=TEXT_LENGTH, vocab_size=1024,
        projection_dim=TEXT_HIDDEN,
    ))


def _t5_text_encoder(vocab_size: int):
    from transformers import T5Config, T5EncoderModel

    # At its random init, as the first stages trained it; the fifth stage makes it order-aware
    # (set_order_aware_positions), and a recipe started afresh would do better to do so from the first.
    return T5EncoderModel(T5Config(
        vocab_size=vocab_size, d_model=TEXT_HIDDEN, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
        relative_attention_num_buckets=16, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    ))


# Each head of the toy T5 encoder looks at fixed neighbours: relative-position buckets (key minus query; T5's
# bidirectional bucketing over 16 buckets) per head. Offsets 1, 2 and 3 each have a bucket of their own, 4 to 9
# share one; buckets 1 and 2 are the offsets −1 and −2.
ORDER_HEAD_BUCKETS = ((9,), (10, 11), (12,), (1, 2))
ORDER_BIAS = 8.0


def set_order_aware_positions(encoder) -> None:
    """Make a frozen random T5 encoder keep word order: each head attends to its own fixed neighbours.

    A pretrained T5 knows which words belong together; at random init its relative position
    bias is small, every token attends to all of them nearly alike, and its output is close to
    a bag of words: "a red star on the left and a blue circle on the right" and the caption
    with the two shapes swapped give almost the same token features (PixArt's cross-attention
    sees the tokens as a set, so the transformer cannot tell them apart). Setting the bias to
    ``ORDER_BIAS`` on each head's buckets (``ORDER_HEAD_BUCKETS``: the next word, the two
    after it, the ones after those, the two before) and 0 elsewhere makes each token's
    features carry its neighbours', over two layers: a shape carries its colour, texture and
    position. The rest of the encoder stays at its random init.
    """
    import torch

    bias = encoder.encoder.block[0].layer[0].SelfAttention.relative_attention_bias
    buckets, heads = bias.weight.shape
    if heads != len(ORDER_HEAD_BUCKETS) or max(max(b) for b in ORDER_HEAD_BUCKETS) >= buckets:
        raise ValueError(f"the order-aware bias is laid out for {len(ORDER_HEAD_BUCKETS)} heads, got {heads}")
    with torch.no_grad():
        bias.weight.zero_()
        for head, chosen in enumerate(ORDER_HEAD_BUCKETS):
            bias.weight[list(chosen), head] = ORDER_BIAS


def with_order_aware_text(pipeline_dir: str | Path, out_dir: str | Path) -> Path:
    """A copy of the PixArt-layout pipeline ``pipeline_dir`` whose T5 encoder keeps word order."""
    import torch
    from diffusers import DiffusionPipeline

    pipeline = DiffusionPipeline.from_pretrained(pipeline_dir, torch_dtype=torch.float32)
    set_order_aware_positions(pipeline.text_encoder)
    return save_pipeline(pipeline, out_dir)


def build_untrained(layout: str, vae_dir: str | Path, out_dir: str | Path, *, seed: int = 0) -> Path:
    """A pipeline of ``layout`` (``sd`` | ``pixart``) with the trained VAE and a random denoiser."""
    import torch
    from diffusers import (
        AutoencoderKL, DDIMScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel, StableDiffusionPipeline,
        UNet2DConditionModel,
    )

    torch.manual_seed(seed)
    vae = AutoencoderKL.from_pretrained(vae_dir, torch_dtype=torch.float32)
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
    )
    if layout == "sd":
        pipeline = StableDiffusionPipeline(
            vae=vae, text_encoder=_clip_text_encoder(), tokenizer=clip_tokenizer(),
            unet=UNet2DConditionModel(**UNET_CONFIG), scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
    elif layout == "pixart":
        tokenizer = t5_tokenizer()
        pipeline = PixArtAlphaPipeline(
            tokenizer=tokenizer, text_encoder=_t5_text_encoder(len(tokenizer)), vae=vae,
            transformer=PixArtTransformer2DModel(**PIXART_CONFIG), scheduler=scheduler,
        )
    else:
        raise ValueError(f"layout must be sd or pixart, got {layout!r}")
    return save_pipeline(pipeline, out_dir)


def save_pipeline(pipeline, out_dir: str | Path, *, fp16: bool = False) -> Path:
    """Save in diffusers layout, atomically, optionally with fp16 weights (what the repository ships)."""
    import torch

    from training.engine.tiny import save_pipeline as save_atomically

    if fp16:
        pipeline.to(torch.float16)
    return save_atomically(pipeline, out_dir)
