"""Typed run configuration: one dataclass per concern, YAML presets and ``key=value`` overrides.

A run's config is a :class:`RunConfig`; presets live in ``configs/*.yaml`` and only name the fields
they change. ``load_config(path, overrides)`` validates early: unknown keys and bad values raise
``ValueError`` naming the field and what is allowed. Every run writes its resolved config beside its
outputs with :func:`save_config`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from aurl.atomic import atomic_write_text

TOKENIZER_KINDS = ("midilike", "remi", "tsd")
MODEL_MODES = ("transformer", "vae", "vae_gan")
ATTENTION_KINDS = ("full", "sliding_window", "hierarchical")
POSITION_KINDS = ("rope", "learned")
QUANTIZE_MODES = ("strict", "groove", "adaptive")


def _check_choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(
            f"{name}={value!r} is not allowed; choose one of {', '.join(map(str, allowed))}"
        )


def _check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name}={value!r} must be {'>= 0' if allow_zero else '> 0'}")


@dataclass
class TokenizerConfig:
    """How scores become token ids (a thin layer over MidiTok; see docs/data_format.md)."""

    kind: str = "midilike"
    """Token scheme: midilike (NOTE_ON/NOTE_OFF/TIME_SHIFT/VELOCITY), remi or tsd."""
    steps_per_beat: int = 8
    """Grid resolution: 8 steps per quarter-note beat = 32nd notes."""
    max_beats: int = 12
    """Longest single time-shift/duration token in beats; longer gaps chain several tokens."""
    num_velocities: int = 32
    """Velocity bins (MIDI 0-127 folded into this many values)."""
    pitch_range: tuple[int, int] = (21, 109)
    """Lowest and one-past-highest MIDI pitch kept (piano range by default)."""
    use_programs: bool = True
    """Program tokens, so multi-track files keep their instruments in one token stream."""
    program_changes: bool = True
    """Emit a Program token only when the instrument changes, not before every event (MidiTok's
    ``program_changes``). Measured on 16 Bach/multitrack files: MIDILike 5.41 -> 4.18 tokens per
    note, REMI 4.26 -> 3.77, TSD 4.24 -> 3.74, round trip still exact."""
    use_tempos: bool = False
    """Tempo tokens (only REMI and TSD place them; MIDILike ignores this)."""
    bpe_vocab_size: int = 0
    """Train BPE to this vocabulary size when > 0 (shortens sequences ~3x on Bach)."""

    def __post_init__(self) -> None:
        _check_choice("tokenizer.kind", self.kind, TOKENIZER_KINDS)
        if self.steps_per_beat not in (1, 2, 3, 4, 6, 8, 12, 16, 24):
            raise ValueError(
                f"tokenizer.steps_per_beat={self.steps_per_beat} must divide a beat evenly; use 4, 8, 12 or 24"
            )
        _check_positive("tokenizer.max_beats", self.max_beats)
        if not 1 <= self.num_velocities <= 127:
            raise ValueError(f"tokenizer.num_velocities={self.num_velocities} must be in 1..127")
        lo, hi = self.pitch_range
        if not 0 <= lo < hi <= 128:
            raise ValueError(
                f"tokenizer.pitch_range={self.pitch_range} must satisfy 0 <= low < high <= 128"
            )
        self.pitch_range = (int(lo), int(hi))
        _check_positive("tokenizer.bpe_vocab_size", self.bpe_vocab_size, allow_zero=True)

    def hash(self) -> str:
        """Short stable hash of the tokenizer settings; names the prepared-data cache."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


@dataclass
class DataConfig:
    """Where prepared tokens come from and how training windows are drawn from them."""

    path: str = "data/bach"
    """A prepared directory (output of `aurl prepare`)."""
    seq_len: int = 512
    """Training window length in tokens (the curriculum may start shorter)."""
    curriculum_start: int = 0
    """If > 0, window length grows linearly from this to seq_len over curriculum_steps."""
    curriculum_steps: int = 0
    """Optimizer steps over which the curriculum reaches seq_len."""
    num_workers: int = 0
    """DataLoader worker processes (0 = load in the training process)."""
    windows_per_epoch: int = 0
    """Random windows drawn per training epoch; 0 = one per seq_len tokens of the split."""
    transpose: int = 5
    """Random transposition range in semitones (±N) applied per sample; 0 disables."""
    velocity_jitter: float = 0.0
    """Augmentation: max relative velocity scale change (0.1 = ±10 %); 0 disables."""
    time_stretch: float = 0.0
    """Augmentation: max tempo scale change (0.2 = 0.8-1.2); 0 disables."""

    def __post_init__(self) -> None:
        _check_positive("data.seq_len", self.seq_len)
        _check_positive("data.num_workers", self.num_workers, allow_zero=True)
        _check_positive("data.transpose", self.transpose, allow_zero=True)
        if self.curriculum_start > self.seq_len:
            raise ValueError(
                f"data.curriculum_start={self.curriculum_start} exceeds data.seq_len={self.seq_len}"
            )


@dataclass
class VAEConfig:
    """Latent-variable settings, used when model.mode is vae or vae_gan."""

    encoder_layers: int = 2
    """Bidirectional encoder depth."""
    bars_per_segment: int = 4
    """A segment (one encoder input) spans this many bars."""
    latent_dim: int = 64
    """Size of the global latent."""
    bar_latent_dim: int = 16
    """Size of each per-bar latent (MusicVAE's conductor idea); 0 disables bar latents."""
    beta: float = 1.0
    """Weight of the KL term at the end of annealing."""
    free_bits: float = 0.25
    """Nats per latent dimension below which KL is not penalized (against posterior collapse)."""
    kl_schedule: str = "linear"
    """KL annealing: linear, cyclical, cosine or constant."""
    kl_warmup_steps: int = 2000
    """Steps to reach full beta (per cycle for cyclical)."""
    target_kl: float = 0.0
    """If > 0, beta adapts so KL per segment tracks this many nats."""
    prior: str = "gaussian"
    """Prior over latents: gaussian or mog (mixture of Gaussians)."""
    prior_components: int = 8
    """Mixture components when prior=mog."""
    prior_learn_variance: bool = True
    """prior=mog: learn each component's variances (False keeps them fixed at 1)."""
    beats_per_bar: int = 4
    """Bar length in beats used to cut segments on bar lines (Bach chorales are mostly 4/4)."""
    segment_stride_bars: int = 1
    """Training segments start every this many bars (validation uses bars_per_segment: no overlap)."""
    target_kl_rate: float = 0.01
    """target_kl > 0: multiplicative beta step, beta *= exp(rate * (KL - target) / target) per step."""
    posterior_logvar_init: float = 0.0
    """Initial log-variance of every posterior (the bias of its log-variance head). Negative values
    start the posterior narrow, so the decoder sees latents that are signal rather than noise from
    the first step (KL starts at about -logvar_init/2 nats per dimension; free bits and the KL
    schedule then decide how much of it stays)."""
    word_dropout: float = 0.0
    """Training only: this fraction of the decoder's input tokens is replaced by PAD (Bowman et al.
    2016), so the decoder must read the latents to predict what comes next (against posterior
    collapse: an autoregressive decoder that sees every previous token can ignore z)."""
    decoder: str = "flat"
    """flat: one decoder over the whole segment, latents as a prefix (reads previous tokens and
    learns to ignore z, issue 13); conductor: MusicVAE's hierarchical decoder, each bar decoded
    alone from its own latent prefix (models/conductor.py), so the latents must carry the music;
    grid: a piano roll per segment decoded all at once, not autoregressively (models/grid_vae.py):
    nothing but z tells the decoder the music, so it cannot collapse (issue 13)."""
    bow_weight: float = 0.0
    """conductor only: weight of the auxiliary bag-of-notes loss (each bar's tokens predicted from
    its conductor state alone; Zhao et al. 2017), a signal through z the decoder cannot take over."""
    encoder_bar_positions: bool = False
    """Add a learned embedding of each token's place within its bar to the encoder's input. The
    encoder mean-pools each bar, and with rotary positions its states carry no absolute position,
    so without this a bar latent holds roughly a bag of tokens: which pitches, not when (issue 13)."""
    grid_steps_per_beat: int = 4
    """decoder=grid: roll steps per beat (4 = 16th notes; 47 of Bach's 124,560 onsets are finer)."""
    grid_pitch_low: int = 24
    """decoder=grid: lowest pitch of the roll."""
    grid_pitch_high: int = 97
    """decoder=grid: one past the highest pitch of the roll (notes outside are dropped)."""
    grid_transpose: int = 5
    """decoder=grid, training only: each segment is transposed by a random shift in
    [-grid_transpose, grid_transpose] semitones that keeps it inside the roll (0 = off)."""
    # VAE-GAN
    disc_layers: int = 2
    disc_windows: tuple[int, ...] = (16, 64, 256)
    """Discriminator window lengths in tokens: note, bar and phrase scales."""
    adv_loss: str = "hinge"
    """Adversarial loss: hinge or nsgan (non-saturating)."""
    adv_weight: float = 0.1
    feature_matching_weight: float = 1.0
    r1_weight: float = 0.0
    gan_warmup_steps: int = 1000
    """Adversarial terms start only after the VAE has trained this many steps."""
    gumbel_tau: float = 1.0
    disc_lr: float = 2e-4

    def __post_init__(self) -> None:
        _check_choice(
            "model.vae.kl_schedule", self.kl_schedule, ("linear", "cyclical", "cosine", "constant")
        )
        _check_choice("model.vae.prior", self.prior, ("gaussian", "mog"))
        _check_choice("model.vae.adv_loss", self.adv_loss, ("hinge", "nsgan"))
        _check_choice("model.vae.decoder", self.decoder, ("flat", "conductor", "grid"))
        if self.grid_steps_per_beat not in (1, 2, 3, 4, 6, 8, 12):
            raise ValueError(
                f"model.vae.grid_steps_per_beat={self.grid_steps_per_beat} must divide a beat; use 4 or 8"
            )
        if not 0 <= self.grid_pitch_low < self.grid_pitch_high <= 128:
            raise ValueError(
                f"model.vae.grid_pitch_low={self.grid_pitch_low}, grid_pitch_high="
                f"{self.grid_pitch_high} must satisfy 0 <= low < high <= 128"
            )
        _check_positive("model.vae.grid_transpose", self.grid_transpose, allow_zero=True)
        _check_positive("model.vae.bow_weight", self.bow_weight, allow_zero=True)
        _check_positive("model.vae.latent_dim", self.latent_dim)
        _check_positive("model.vae.bars_per_segment", self.bars_per_segment)
        _check_positive("model.vae.beats_per_bar", self.beats_per_bar)
        _check_positive("model.vae.segment_stride_bars", self.segment_stride_bars)
        _check_positive("model.vae.free_bits", self.free_bits, allow_zero=True)
        _check_positive("model.vae.target_kl", self.target_kl, allow_zero=True)
        _check_positive("model.vae.bar_latent_dim", self.bar_latent_dim, allow_zero=True)
        if not 0.0 <= self.word_dropout < 1.0:
            raise ValueError(f"model.vae.word_dropout={self.word_dropout} must be in [0, 1)")
        self.disc_windows = tuple(int(w) for w in self.disc_windows)


@dataclass
class ModelConfig:
    """Network shape. vocab_size is taken from the tokenizer when left at 0."""

    mode: str = "transformer"
    """transformer (plain LM), vae or vae_gan."""
    vocab_size: int = 0
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 1024
    """Hidden width of the feed-forward block."""
    max_seq_len: int = 1024
    """Longest context the model attends over (generation slides past it)."""
    dropout: float = 0.1
    attention: str = "full"
    """full, sliding_window or hierarchical."""
    window: int = 256
    """Window for sliding_window / local window for hierarchical attention."""
    global_stride: int = 64
    """hierarchical: one summary token per this many positions."""
    position: str = "rope"
    """rope (rotary, relative by construction) or learned absolute embeddings."""
    tie_weights: bool = True
    """Share the input embedding and output projection."""
    norm: str = "layernorm"
    """Pre-norm kind: layernorm or rmsnorm (torch 2.13 CPU: LayerNorm 3-7 us vs RMSNorm 10-15 us per decoded token)."""
    attn_dropout: float = 0.0
    """Dropout on attention probabilities. Any value > 0 makes torch 2.13 leave its CPU flash kernel
    for the math path (T×T scores in memory); `dropout` still regularizes the residual stream."""
    mlp: str = "gelu"
    """Feed-forward kind: gelu (two matmuls) or swiglu (gated; hidden width 2/3 of d_ff keeps the parameter count)."""
    init_std: float = 0.0
    """Standard deviation of the normal init of embeddings and linear weights; 0 = sqrt(2 / (5 *
    d_model)), the "small init" of Nguyen & Salazar 2019 (0.040 at d_model 256; GPT-2's fixed 0.02
    was set for d_model 768 and learned slower here: benchmarks/results/train.md, ablate).
    Residual output projections get init_std / sqrt(2 * n_layers)."""
    vae: VAEConfig = field(default_factory=VAEConfig)

    def __post_init__(self) -> None:
        _check_choice("model.mode", self.mode, MODEL_MODES)
        _check_choice("model.attention", self.attention, ATTENTION_KINDS)
        _check_choice("model.position", self.position, POSITION_KINDS)
        _check_choice("model.norm", self.norm, ("rmsnorm", "layernorm"))
        _check_choice("model.mlp", self.mlp, ("gelu", "swiglu"))
        if self.d_model % self.n_heads:
            raise ValueError(
                f"model.d_model={self.d_model} must be divisible by model.n_heads={self.n_heads}"
            )
        if (self.d_model // self.n_heads) % 2 and self.position == "rope":
            raise ValueError("model.d_model / model.n_heads must be even for rotary positions")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout={self.dropout} must be in [0, 1)")
        if not 0.0 <= self.attn_dropout < 1.0:
            raise ValueError(f"model.attn_dropout={self.attn_dropout} must be in [0, 1)")
        _check_positive("model.window", self.window)
        _check_positive("model.global_stride", self.global_stride)
        _check_positive("model.init_std", self.init_std, allow_zero=True)


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine decay."""

    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    """Cosine decays to lr * this."""
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 200
    batch_size: int = 16
    grad_clip: float = 1.0
    accumulate: int = 1
    """Gradient accumulation steps."""

    def __post_init__(self) -> None:
        _check_positive("optim.lr", self.lr)
        _check_positive("optim.batch_size", self.batch_size)
        _check_positive("optim.accumulate", self.accumulate)
        self.betas = (float(self.betas[0]), float(self.betas[1]))


@dataclass
class TrainerConfig:
    """Options passed to Lightning's Trainer, plus run bookkeeping."""

    max_steps: int = 2000
    max_time_minutes: float = 0.0
    """Stop after this many minutes of training (0 = no limit)."""
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    """auto, ddp, ddp_spawn, fsdp, ... (any Lightning strategy name)."""
    precision: str = "auto"
    """auto = bf16-mixed on CUDA with bf16 (else 16-mixed) and on CPUs with AMX bf16 tiles, else
    32-true (see training.run.resolve_precision). Any Lightning precision string."""
    val_every_steps: int = 200
    val_batches: int = 20
    checkpoint_every_steps: int = 200
    keep_checkpoints: int = 0
    """Also keep the last K periodic checkpoints (checkpoints/step-NNNNNN.ckpt) so that
    `aurl export RUN --average K` can average their weights; 0 keeps only last and best."""
    early_stopping_patience: int = 0
    """Validations without improvement before stopping; 0 disables."""
    swa: bool = False
    samples_per_validation: int = 1
    """MIDI samples written to the run dir at each validation."""
    eval_samples: int = 0
    """Generate this many pieces at each validation and log ``val/mean_overlap_area`` against the
    validation split's features (aurl.evaluation; 0 = off). Costs N x sample_tokens forward passes."""
    sample_tokens: int = 256
    compile: str = "auto"
    """torch.compile: auto (on CUDA only), on, off."""
    seed: int = 0
    log_every_steps: int = 10
    max_bad_steps: int = 5
    """Consecutive non-finite/spiking steps before training stops with an error."""

    def __post_init__(self) -> None:
        _check_positive("trainer.max_steps", self.max_steps)
        _check_choice("trainer.compile", self.compile, ("auto", "on", "off"))
        _check_positive("trainer.keep_checkpoints", self.keep_checkpoints, allow_zero=True)
        if self.eval_samples < 0 or self.eval_samples == 1:
            raise ValueError(f"trainer.eval_samples={self.eval_samples} must be 0 (off) or >= 2")


@dataclass
class SampleConfig:
    """Defaults for generation (each is also a CLI flag of `aurl generate`)."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.95
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    max_new_tokens: int = 1024
    max_note_beats: float = 0.0
    """No generated note lasts longer (tokenizer beats). Training sets it to the longest note of
    its train split (``aurl.generation.corpus_stats``); 0 = not measured (generation then uses
    ``generation.pipeline.FALLBACK_NOTE_BEATS``)."""
    bpm: float = 0.0
    """Tempo of pieces generated without a prompt: the train split's median first tempo, measured
    at training; 0 = unknown (generation.pipeline.DEFAULT_BPM)."""
    release_after_beats: float = 0.0
    """Notes held longer than this are pushed to end (a soft penalty on advancing time); training
    sets it to the train split's 99.9th percentile of note length; 0 = off."""
    max_polyphony: int = 0
    """Default voice limit, measured at training (the median of per-piece maxima); 0 = none."""
    programs: tuple[int, ...] = ()
    """Default instruments (General MIDI programs playing >= 5 % of the train notes); () = any."""

    def __post_init__(self) -> None:
        _check_positive("sample.temperature", self.temperature)
        _check_positive("sample.max_note_beats", self.max_note_beats, allow_zero=True)
        _check_positive("sample.max_polyphony", self.max_polyphony, allow_zero=True)
        _check_positive("sample.release_after_beats", self.release_after_beats, allow_zero=True)
        _check_positive("sample.bpm", self.bpm, allow_zero=True)
        self.programs = tuple(int(p) for p in self.programs)
        if any(not 0 <= p <= 127 for p in self.programs):
            raise ValueError(f"sample.programs={list(self.programs)} must be programs 0-127")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"sample.top_p={self.top_p} must be in (0, 1]")


@dataclass
class RunConfig:
    """Everything a training run needs; saved as config.yaml in the run directory."""

    name: str = "run"
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def __post_init__(self) -> None:
        if self.data.seq_len > self.model.max_seq_len:
            raise ValueError(
                f"data.seq_len={self.data.seq_len} exceeds model.max_seq_len={self.model.max_seq_len}"
            )


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass, YAML, overrides


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (tuples become lists) suitable for YAML/JSON."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [conv(x) for x in v]
        return v

    return conv(cfg)


def from_dict(cls: type, data: dict | None, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys with the allowed ones."""
    data = dict(data or {})
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = prefix.rstrip(".") or "config"
        raise ValueError(
            f"unknown key(s) {', '.join(prefix + k for k in unknown)} in {where}; "
            f"allowed: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, hint = data[f.name], hints[f.name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ValueError(f"{prefix}{f.name} must be a mapping, got {value!r}")
            kwargs[f.name] = from_dict(hint, value, prefix + f.name + ".")
        else:
            kwargs[f.name] = _coerce(prefix + f.name, value, hint, f.default)
    return cls(**kwargs)


def _coerce(name: str, value: Any, hint: Any, default: Any) -> Any:
    """Coerce YAML/CLI scalars to the field's type with a clear error."""
    text = str(hint)
    if value is None:
        return None
    try:
        if hint is bool or text == "bool":
            if isinstance(value, str):
                low = value.lower()
                if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                    raise ValueError
                return low in ("true", "1", "yes", "on")
            return bool(value)
        if hint is int or text == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if hint is float or text == "float":
            return float(value)
        if hint is str or text == "str":
            return str(value)
        if text.startswith("tuple"):
            if isinstance(value, str):
                value = yaml.safe_load(value if value.startswith("[") else f"[{value}]")
            return tuple(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is not a valid {text}") from None
    return value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` strings (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value (e.g. optim.lr=1e-3)")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {p} is not a section")
        node[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""
    return data


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None
) -> RunConfig:
    """Load a YAML preset (or defaults when path is None) and apply overrides; validates."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"config file {p} does not exist")
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{p}: top level must be a mapping")
    apply_overrides(data, overrides or [])
    return from_dict(RunConfig, data)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write a dataclass config as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
