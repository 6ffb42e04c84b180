"""Tiny random-init pipelines of each family, built offline, for tests and smoke runs.

Every model has a few hundred thousand parameters at most, and the tokenizers are generated
here from a small character-level vocabulary, so nothing is fetched from a hub. The result is
saved in diffusers layout: ``DiffusionPipeline.from_pretrained(out_dir)`` loads it and
``read_pipeline_index(out_dir)`` accepts it.

The VAEs downsample by 2 (real ones by 8), so 32 px images give 16×16 latents.
"""

from __future__ import annotations

import os
import shutil
import string
import tempfile
from pathlib import Path

import torch

from training.engine.pipeline_index import FAMILIES

TEXT_LENGTH = 16  # tokenizer and text-encoder sequence length
CLIP_HIDDEN = 32
T5_HIDDEN = 32
LATENT_CHANNELS = 4
# PixArt-α's block settings, whatever the size: adaLN-single, biased attention, tanh GELU.
PIXART_ALPHA_BLOCKS = dict(
    attention_bias=True,
    activation_fn="gelu-approximate",
    num_embeds_ada_norm=1000,
    norm_type="ada_norm_single",
    norm_elementwise_affine=False,
    norm_eps=1e-6,
)


def _bytes_to_unicode() -> dict[int, str]:
    # The byte-to-character table that byte-level BPE (GPT-2, CLIP) uses.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def byte_alphabet() -> list[str]:
    """The 256 characters byte-level BPE (GPT-2, CLIP) writes bytes as."""
    return list(_bytes_to_unicode().values())


def tiny_clip_tokenizer():
    """A byte-level BPE CLIPTokenizer over single bytes (with and without the ``</w>`` suffix)."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in byte_alphabet():
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(char + "</w>", len(vocab))
    # A handful of merges so that common letter pairs become one token.
    merges = []
    for first, second in ("th", "he", "in", "er", "an", "re", "on", "at"):
        merges.append((first, second))
        vocab.setdefault(first + second, len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)
    tokenizer.model_max_length = TEXT_LENGTH
    return tokenizer


def tiny_t5_tokenizer():
    """A unigram T5Tokenizer over lowercase letters, digits and common punctuation."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -3.0) for c in string.ascii_lowercase + string.digits + ".,!?'-"]
    pieces += [("▁" + c, -2.5) for c in string.ascii_lowercase]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0)
    tokenizer.model_max_length = TEXT_LENGTH
    return tokenizer


def _tiny_vae(**kwargs):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=4,
        sample_size=32,
        **kwargs,
    )


def _tiny_clip_config(projection: bool):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=CLIP_HIDDEN,
        intermediate_size=64,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=TEXT_LENGTH,
        vocab_size=1000,
        projection_dim=CLIP_HIDDEN if projection else 512,
    )


def _tiny_t5_encoder(vocab_size: int, hidden: int):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(vocab_size=vocab_size + 8, d_model=hidden, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                 relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    )


def _tiny_unet(**kwargs):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=16,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=8,
        norm_num_groups=8,
        **kwargs,
    )


def _tiny_unet_pipeline(prediction_type: str):
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextModel

    unet = _tiny_unet(cross_attention_dim=CLIP_HIDDEN)
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type,
    )
    return StableDiffusionPipeline(
        vae=_tiny_vae(scaling_factor=0.18215),
        text_encoder=CLIPTextModel(_tiny_clip_config(projection=False)),
        tokenizer=tiny_clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _tiny_sdxl_pipeline(prediction_type: str):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    time_embed_dim = 8
    unet = _tiny_unet(
        cross_attention_dim=2 * CLIP_HIDDEN,  # both encoders' penultimate states side by side
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        # The pooled text embedding plus six micro-conditioning numbers, each embedded.
        projection_class_embeddings_input_dim=CLIP_HIDDEN + 6 * time_embed_dim,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
        timestep_spacing="leading", prediction_type=prediction_type,
    )
    return StableDiffusionXLPipeline(
        vae=_tiny_vae(scaling_factor=0.13025, force_upcast=True),
        text_encoder=CLIPTextModel(_tiny_clip_config(projection=False)),
        text_encoder_2=CLIPTextModelWithProjection(_tiny_clip_config(projection=True)),
        tokenizer=tiny_clip_tokenizer(),
        tokenizer_2=tiny_clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )


def _tiny_dit_pipeline(prediction_type: str):
    from diffusers import DDIMScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel

    transformer = PixArtTransformer2DModel(
        sample_size=16,
        num_layers=2,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_channels=T5_HIDDEN,
        in_channels=LATENT_CHANNELS,
        cross_attention_dim=32,
        out_channels=2 * LATENT_CHANNELS,  # learned sigma, as in PixArt-α/Σ
        **PIXART_ALPHA_BLOCKS,
    )
    tokenizer = tiny_t5_tokenizer()
    text_encoder = _tiny_t5_encoder(len(tokenizer), T5_HIDDEN)
    scheduler = DDIMScheduler(beta_schedule="linear", clip_sample=False, steps_offset=1, prediction_type=prediction_type)
    return PixArtAlphaPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=_tiny_vae(scaling_factor=0.18215),
        transformer=transformer, scheduler=scheduler,
    )


def _tiny_flow_pipeline():
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    t5_tokenizer = tiny_t5_tokenizer()
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=LATENT_CHANNELS,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=2 * CLIP_HIDDEN,  # the two CLIP encoders' features side by side
        caption_projection_dim=32,
        pooled_projection_dim=2 * CLIP_HIDDEN,
        out_channels=LATENT_CHANNELS,
        pos_embed_max_size=16,
    )
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_tiny_vae(scaling_factor=1.5035, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False),
        text_encoder=CLIPTextModelWithProjection(_tiny_clip_config(projection=True)),
        tokenizer=tiny_clip_tokenizer(),
        text_encoder_2=CLIPTextModelWithProjection(_tiny_clip_config(projection=True)),
        tokenizer_2=tiny_clip_tokenizer(),
        # The T5 width is the joint attention width: CLIP features are zero-padded up to it.
        text_encoder_3=_tiny_t5_encoder(len(t5_tokenizer), 2 * CLIP_HIDDEN),
        tokenizer_3=t5_tokenizer,
    )


def build_tiny_pipeline(family: str, out_dir: str | Path, *, prediction_type: str = "epsilon", seed: int = 0) -> Path:
    """Build a tiny random-init pipeline of ``family`` (unet | sdxl | dit | flow) and save it to ``out_dir``.

    ``prediction_type`` (epsilon | v_prediction) applies to the unet, sdxl and dit families; flow
    models always predict the flow velocity. The directory is written atomically.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}; got {family!r}")
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be epsilon or v_prediction; got {prediction_type!r}")
    torch.manual_seed(seed)
    if family == "unet":
        pipeline = _tiny_unet_pipeline(prediction_type)
    elif family == "sdxl":
        pipeline = _tiny_sdxl_pipeline(prediction_type)
    elif family == "dit":
        pipeline = _tiny_dit_pipeline(prediction_type)
    else:
        pipeline = _tiny_flow_pipeline()
    return save_pipeline(pipeline, out_dir)


def save_pipeline(pipeline, out_dir: str | Path) -> Path:
    """Save a pipeline in diffusers layout (safetensors) atomically: a reader never sees half a folder."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        pipeline.save_pretrained(tmp, safe_serialization=True)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def build_tiny_decoder(out_dir: str | Path, *, seed: int = 0) -> Path:
    """A tiny AutoencoderTiny (a stand-in for TAESD) whose decoder reads the tiny VAE's latents."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    decoder = AutoencoderTiny(
        in_channels=3, out_channels=3, encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1), latent_channels=LATENT_CHANNELS,
        upsampling_scaling_factor=2,
    )
    decoder.save_pretrained(out_dir, safe_serialization=True)
    return Path(out_dir)
