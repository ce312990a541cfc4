"""``aurl sample`` / ``interpolate`` / ``vary``: move through a VAE's latent space, write files.

Each command writes the same set as ``aurl generate`` (``piece_XX.mid`` + MusicXML, piano-roll PNG,
WAV through :func:`aurl.generation.export.export_piece`) and a ``samples.json``.

- sample: ``ceil(bars / bars_per_segment)`` segments per piece sharing ONE global latent drawn from
  the prior (the bar latents of each segment are drawn from p(z_bar | z_global)), decoded one after
  the other and concatenated, so a long piece keeps one global character.
- interpolate: the first ``bars`` bars of each file are cut into segments, each encoded to its
  posterior mean; segment j of A is joined to segment j of B by slerp (``steps`` points, both ends
  included) and step s is the concatenation of every segment's s-th point, decoded, so a whole
  chorale turns into another one segment by segment.
- vary: the first segment of the input is encoded, perturbed ``num`` times by
  ``amount`` x prior std (per latent group) and decoded.

With the conductor decoder (``model.vae.decoder=conductor``) a segment is decoded bar by bar
(:func:`decode_bars`): one grammar state runs through the whole segment, but the network's
context is reset at every bar line and the bar's own latent prefix is put in front.

With the grid decoder (``model.vae.decoder=grid``, ``models/grid_vae.py``) segments are piano
rolls, encoded and decoded by ``generation/grid.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from aurl.generation import constraints as C
from aurl.generation import sample as decoding
from aurl.generation.export import export_piece
from aurl.generation.grid import decode_grid, encode_rolls, pad_time
from aurl.generation.pipeline import Piece, Summary, load_model, write_samples_json
from aurl.models.grid_vae import GridVAE
from aurl.models.vae import Latents, MusicVAE, cut_segments, pack_segment

log = logging.getLogger(__name__)

TOKENS_PER_BEAT_CAP = 64
HURRY_TOKENS = 24
"""Conductor decoding: in the last this many tokens of a bar's budget a row may only end notes and
move time, so it reaches the bar line (a chorale bar holds ~63 tokens, the budget is 4x that)."""
"""Decode budget per beat (Bach averages ~18 tokens per beat; see pipeline.TOKENS_PER_BEAT_CAP)."""


def _vae(bundle) -> MusicVAE | GridVAE:
    model = bundle.model
    if not isinstance(model, (MusicVAE, GridVAE)):
        raise ValueError(
            f"{bundle.path}: model.mode={bundle.config.model.mode!r} has no latent space; "
            "train with model.mode=vae or vae_gan (configs/bach_vae.yaml) for sample/interpolate/vary"
        )
    return model


def _budget(model: MusicVAE) -> int:
    """Tokens a segment may decode: its bars' cap, within the context left after the prefix."""
    v = model.cfg.vae
    prefix = 1 + model.num_bars
    return min(
        TOKENS_PER_BEAT_CAP * v.beats_per_bar * v.bars_per_segment,
        model.cfg.max_seq_len - prefix - 1,
    )


def encode_file(bundle, path: str | os.PathLike) -> Latents:
    """Posterior mean of the first segment (``bars_per_segment`` bars) of a MIDI/MusicXML file."""
    from aurl.data.midi_io import load_score

    score, report = load_score(path)
    if report:
        log.info("%s: repaired (%s)", path, report)
    ids = np.asarray(bundle.tokenizer.encode(score), dtype=np.int64)
    try:
        return encode_ids(_vae(bundle), bundle.tokenizer, ids)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def first_segment(model: MusicVAE, tok, ids) -> tuple[np.ndarray, np.ndarray]:
    """The first ``bars_per_segment`` bars of a token sequence as the encoder sees them:
    (tokens without BOS/EOS/PAD, bar index of each token)."""
    v = model.cfg.vae
    beats = np.asarray(tok.token_beats(ids), dtype=np.float64)
    special = {tok.bos_id, tok.eos_id, tok.pad_id}
    segments = cut_segments(
        ids, beats, v.bars_per_segment, v.beats_per_bar, v.bars_per_segment, special
    )
    if not segments:
        raise ValueError("no notes to encode (empty after tokenization)")
    return segments[0]


def encode_segments(model: MusicVAE, tok, ids: np.ndarray, max_segments: int) -> Latents:
    """Posterior means of the first ``max_segments`` non-overlapping segments of a token sequence,
    one latent row per segment in order: (n, D) and (n, K, E), n <= max_segments."""
    if max_segments <= 0:
        raise ValueError(f"max_segments={max_segments} must be > 0")
    v = model.cfg.vae
    if isinstance(model, GridVAE):
        return encode_rolls(model, tok, ids, max_segments)
    beats = np.asarray(tok.token_beats(ids), dtype=np.float64)
    special = {tok.bos_id, tok.eos_id, tok.pad_id}
    segments = cut_segments(
        ids, beats, v.bars_per_segment, v.beats_per_bar, v.bars_per_segment, special
    )[:max_segments]
    if not segments:
        raise ValueError("no notes to encode (empty after tokenization)")
    length = min(model.cfg.max_seq_len, max(len(seg) for seg, _ in segments) + 2)
    packed = [
        pack_segment(seg, bars, v.bars_per_segment, length, tok.bos_id, tok.eos_id, tok.pad_id)
        for seg, bars in segments
    ]
    device = next(model.parameters()).device
    t = torch.from_numpy(np.stack([p[0] for p in packed])).to(device)  # (n, T)
    b = torch.from_numpy(np.stack([p[1] for p in packed])).to(device)  # (n, T)
    with torch.no_grad():
        post = model.encode(t, t != tok.pad_id, b)
    return model.posterior_mean(post)


def encode_file_segments(bundle, path: str | os.PathLike, max_segments: int) -> Latents:
    """:func:`encode_segments` of a MIDI/MusicXML file (errors name the file)."""
    from aurl.data.midi_io import load_score

    score, report = load_score(path)
    if report:
        log.info("%s: repaired (%s)", path, report)
    ids = np.asarray(bundle.tokenizer.encode(score), dtype=np.int64)
    try:
        return encode_segments(_vae(bundle), bundle.tokenizer, ids, max_segments)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def interpolate_segments(model: MusicVAE, za: Latents, zb: Latents, steps: int) -> Latents:
    """Segment-wise slerp of two segment ladders (n_a and n_b rows; the shorter sets n).

    Returns steps * n rows, step-major: rows s*n .. s*n+n-1 are the n segments of step s.
    """
    n = min(za.z_g.shape[0], zb.z_g.shape[0])
    paths = [model.interpolate(za.select(j), zb.select(j), steps) for j in range(n)]
    order = [paths[j].select(s) for s in range(steps) for j in range(n)]
    z_b = None if order[0].z_b is None else torch.cat([x.z_b for x in order])
    return Latents(torch.cat([x.z_g for x in order]), z_b)


def encode_ids(model: MusicVAE, tok, ids: np.ndarray) -> Latents:
    """Posterior mean of the first segment of a token sequence (a whole piece is fine)."""
    v = model.cfg.vae
    if isinstance(model, GridVAE):
        return encode_rolls(model, tok, ids, 1)
    seg, bars = first_segment(model, tok, ids)
    length = min(model.cfg.max_seq_len, len(seg) + 2)
    tokens, bar_ids = pack_segment(
        seg, bars, v.bars_per_segment, length, tok.bos_id, tok.eos_id, tok.pad_id
    )
    device = next(model.parameters()).device
    t = torch.from_numpy(tokens)[None].to(device)  # (1, T)
    b = torch.from_numpy(bar_ids)[None].to(device)  # (1, T)
    with torch.no_grad():
        post = model.encode(t, t != tok.pad_id, b)
    return model.posterior_mean(post)


class PrefixedDecoder(torch.nn.Module):
    """The VAE's decoder seen through the decoding loops' model contract (``generation.sample``).

    The latent prefix (B, P, C) goes in front of the first forward pass and so into the KV cache;
    later steps are ordinary cached decoding. The context the loop sees is the decoder's minus the
    P prefix positions, so the loop never slides the prefix out of the cache.
    """

    def __init__(self, decoder: torch.nn.Module, prefix: torch.Tensor) -> None:
        super().__init__()
        self.decoder, self.prefix = decoder, prefix
        self.P = prefix.shape[1]
        self.cfg = dataclasses.replace(decoder.cfg, max_seq_len=decoder.cfg.max_seq_len - self.P)

    def new_cache(self, batch: int, max_len: int):
        return self.decoder.new_cache(batch, max_len + self.P)

    def forward(self, tokens: torch.Tensor, cache=None, logits_for: str = "all"):
        first = cache is None or cache.length == 0
        prefix = self.prefix if first else None
        return self.decoder(tokens, cache=cache, prefix=prefix, logits_for=logits_for)


def decode_rows(
    bundle, latents: Latents, temperature: float, top_p: float, seed: int
) -> list[list[int]]:
    """One decoded segment per latent row (tokens without BOS/EOS); temperature 0 = greedy.

    Decoding goes through the same grammar as ``aurl generate`` (every row decodes to MIDI) and
    two length constraints: the segment neither ends before nor runs past its
    ``bars_per_segment`` bars, so a point in latent space always becomes exactly that much music,
    and concatenated segments stay on the bar grid. Row ``i`` samples with seed ``seed + i``.
    """
    model, tok = _vae(bundle), bundle.tokenizer
    if isinstance(model, GridVAE):
        return decode_grid(model, tok, latents, temperature, seed)
    if model.conductor is not None:
        return decode_bars(model, tok, latents, temperature, top_p, seed)
    v = model.cfg.vae
    vocab = C.Vocab.from_tokenizer(tok)
    beats = float(v.bars_per_segment * v.beats_per_bar)
    cons = C.ConstraintSet(vocab, [C.EndAt(vocab, beats), C.EndNotBefore(vocab, beats)])
    with torch.no_grad():
        decoder = PrefixedDecoder(model.decoder, model.prefix(latents))
    filters = {"top_k": 1} if temperature <= 0 else {"temperature": temperature, "top_p": top_p}
    num = latents.z_g.shape[0]
    rows = decoding.sample(
        decoder, [tok.bos_id], num=num, rule=decoding.StopRule(tok.eos_id, _budget(model), beats),
        filters=filters, constraints=cons, seeds=[seed + i for i in range(num)],
    )  # fmt: skip
    special = {tok.bos_id, tok.eos_id, tok.pad_id}
    # A row cut by the token budget before its last bar line is closed by C.finish, then padded
    # with time shifts to the segment's length, so segments still join on the bar grid.
    return [
        pad_time(
            tok, vocab, [i for i in C.finish([tok.bos_id, *row], vocab) if i not in special], beats
        )
        for row in rows
    ]


@torch.no_grad()
def decode_bars(
    model: MusicVAE, tok, latents: Latents, temperature: float, top_p: float, seed: int
) -> list[list[int]]:
    """Conductor decoding: one segment per latent row (tokens without BOS/EOS).

    The rows are decoded in lockstep one bar at a time. At the start of bar k every row gets a
    fresh KV cache holding only its bar-k prefix and BOS (as in training, where each bar is its
    own row ``BOS bar EOS``); a row leaves bar k once its time (the grammar state, carried
    across bars so notes held over the bar line can still end) reaches the bar line. The same
    grammar and length constraints as :func:`decode_rows` apply; row ``i`` samples with seed
    ``seed + i``. In the last ``HURRY_TOKENS`` of a bar's token budget note starts are banned,
    so a row that spends its budget on notes still reaches the bar line (each bar, and so the
    segment, fills exactly its beats).
    """
    v = model.cfg.vae
    vocab = C.Vocab.from_tokenizer(tok)
    K, bar_beats = model.conductor.num_bars, float(v.beats_per_bar)
    total = K * bar_beats
    cons = C.ConstraintSet(vocab, [C.EndAt(vocab, total), C.EndNotBefore(vocab, total)])
    B = latents.z_g.shape[0]
    cons.start([[tok.bos_id]] * B)
    gens = [torch.Generator(device="cpu").manual_seed(seed + i) for i in range(B)]
    prefix = model.bar_prefix(latents)  # (B, K, P, C)
    P = prefix.shape[2]
    cap = min(TOKENS_PER_BEAT_CAP * v.beats_per_bar, model.cfg.max_seq_len - P - 1)
    hurry = torch.from_numpy(vocab.note_on | vocab.mask_of("TimeSig"))[: model.cfg.vocab_size]
    device = prefix.device
    bodies: list[list[int]] = [[] for _ in range(B)]
    ended = [False] * B  # EOS chosen (only possible once the segment's time is full)
    for k in range(K):
        bar_end = (k + 1) * bar_beats - C.TIME_EPS
        active = [not ended[b] and cons.states[b].time < bar_end for b in range(B)]
        if not any(active):
            continue
        cache = model.decoder.new_cache(B, P + cap + 1)
        cur = torch.full((B, 1), tok.bos_id, dtype=torch.long, device=device)  # (B, 1)
        out = model.decoder(cur, cache=cache, prefix=prefix[:, k], logits_for="last")
        for step in range(cap):
            logits = out.logits[:, -1].float().cpu()  # (B, V)
            logits[:, [tok.pad_id, tok.bos_id]] = float("-inf")
            if cap - step <= HURRY_TOKENS:
                plain = cons.apply(logits)
                logits = cons.apply(logits.masked_fill(hurry[: logits.shape[1]], float("-inf")))
                dead = torch.isneginf(logits).all(-1)  # (B,) the grammar allowed only note starts
                logits[dead] = plain[dead]
            else:
                logits = cons.apply(logits)
            nxt = [tok.pad_id] * B
            for b in range(B):
                if not active[b]:
                    continue
                pick = _pick_row(logits[b], temperature, top_p, gens[b])
                nxt[b] = pick
                C.advance(cons.states[b], pick, vocab)
                if pick == tok.eos_id:
                    ended[b] = True
                else:
                    bodies[b].append(pick)
                if ended[b] or cons.states[b].time >= bar_end:
                    active[b] = False
            if not any(active):
                break
            cur = torch.tensor(nxt, dtype=torch.long, device=device)[:, None]  # (B, 1)
            out = model.decoder(cur, cache=cache, logits_for="last")
    special = {tok.bos_id, tok.eos_id, tok.pad_id}
    return [[i for i in C.finish([tok.bos_id, *b], vocab) if i not in special] for b in bodies]


def _pick_row(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator) -> int:
    """One token from logits (V,): argmax at temperature 0, else nucleus sampling."""
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, -1)  # (V,)
    if top_p < 1.0:
        sp, si = probs.sort(descending=True)
        keep = sp.cumsum(-1) - sp < top_p
        probs = torch.zeros_like(probs).scatter(-1, si, sp * keep)
    return int(torch.multinomial(probs, 1, generator=gen))


def _write(
    bundle,
    rows: list[list[int]],
    out: Path,
    command: str,
    seeds: list[int],
    settings: dict,
    t0: float,
) -> Summary:
    tok = bundle.tokenizer
    out.mkdir(parents=True, exist_ok=True)
    elapsed = time.perf_counter() - t0
    summary = Summary(out, str(bundle.path), elapsed_s=elapsed, command=command)
    summary.tokens_per_s = sum(map(len, rows)) / max(elapsed, 1e-9)
    wav = settings.get("wav", True)
    for i, body in enumerate(rows):
        ids = [tok.bos_id, *body, tok.eos_id]
        score = tok.decode(ids)
        files = export_piece(score, out / f"piece_{i:02d}", wav=wav)
        beats = float(tok.token_beats(ids)[-1]) if body else 0.0
        try:
            seconds = float(score.to("second").end())
        except (AttributeError, RuntimeError, ValueError):
            seconds = beats * 0.5
        summary.pieces.append(
            Piece(i, seeds[i], len(body), tok.count_notes(ids), beats, seconds, files)
        )
    repeats = len(rows) - len({tuple(r) for r in rows})
    if repeats and command in ("interpolate", "vary"):
        # A decoder that ignores its latents turns distinct latent points into the same music:
        # say so rather than hand over copies that look like variety.
        summary.warnings.append(
            f"{repeats} of {len(rows)} pieces repeat another one exactly: this model's decoder "
            "barely reads its latents (see `aurl evaluate MODEL --split test`: KL per segment); "
            + ("raise --amount or " if command == "vary" else "")
            + "use --temperature 1 for varied output"
        )
    write_samples_json(out, summary, settings)
    return summary


# ---------------------------------------------------------------------------------------------
# the three commands (plain keywords; the *_from_args wrappers translate CLI flags)


def sample(
    bundle,
    *,
    out: str | os.PathLike,
    num: int = 8,
    bars: int = 8,
    seed: int = 0,
    temperature: float | None = None,
    top_p: float = 0.95,
    wav: bool = True,
) -> Summary:
    """``num`` pieces of about ``bars`` bars decoded from prior samples (piece i uses seed + i).

    ``temperature`` None = the model's default: 1.0 for token decoders, 0 (each cell's most likely
    class) for the grid decoder, whose variety comes from the prior draw of its latents."""
    if num <= 0 or bars <= 0:
        raise ValueError(f"--num={num} and --bars={bars} must be > 0")
    if temperature is None:
        temperature = 0.0 if isinstance(_vae(bundle), GridVAE) else 1.0
    t0 = time.perf_counter()
    rows = sample_rows(bundle, num=num, bars=bars, seed=seed, temperature=temperature, top_p=top_p)
    seeds = [seed + i for i in range(num)]
    settings = {
        "num": num,
        "bars": bars,
        "seed": seed,
        "temperature": temperature,
        "top_p": top_p,
        "wav": wav,
    }
    return _write(bundle, rows, Path(out), "sample", seeds, settings, t0)


def sample_rows(
    bundle, *, num: int, bars: int, seed: int = 0, temperature: float = 1.0, top_p: float = 0.95
) -> list[list[int]]:
    """The token bodies :func:`sample` writes: piece i is ceil(bars / bars_per_segment) segments
    decoded from one prior global latent and fresh bar latents per segment (seed + i)."""
    model = _vae(bundle)
    segs = math.ceil(bars / model.cfg.vae.bars_per_segment)
    rows = []
    for i in range(num):
        gen = torch.Generator(device="cpu").manual_seed(seed + i)
        z = model.sample_latents(1, gen)
        if segs > 1 and z.z_b is not None:
            # one global latent for the whole piece, fresh bar latents per segment
            z_g = z.z_g.expand(segs, -1)
            z = Latents(z_g, model.bar_latents(z_g, gen))
        elif segs > 1:
            z = Latents(z.z_g.expand(segs, -1))
        parts = decode_rows(bundle, z, temperature, top_p, seed + i)
        rows.append([t for part in parts for t in part])
    return rows


def interpolate(
    bundle,
    a: str | os.PathLike,
    b: str | os.PathLike,
    *,
    out: str | os.PathLike,
    steps: int = 6,
    bars: int | None = None,
    seed: int = 0,
    temperature: float = 0.0,
    top_p: float = 1.0,
    wav: bool = True,
) -> Summary:
    """Decode ``steps`` points between the first ``bars`` bars of files ``a`` and ``b`` (None =
    one segment): segment j of A is slerped to segment j of B, and each step's segments are
    concatenated (as long as the shorter piece, within ``bars``)."""
    model = _vae(bundle)
    per = model.cfg.vae.bars_per_segment
    n = 1 if bars is None else math.ceil(bars / per)
    if n <= 0:
        raise ValueError(f"--bars={bars} must be > 0")
    t0 = time.perf_counter()
    za, zb = encode_file_segments(bundle, a, n), encode_file_segments(bundle, b, n)
    path = interpolate_segments(model, za, zb, steps)
    parts = decode_rows(bundle, path, temperature, top_p, seed)
    n = len(parts) // steps
    rows = [[t for part in parts[s * n : (s + 1) * n] for t in part] for s in range(steps)]
    settings = {
        "a": str(a),
        "b": str(b),
        "steps": steps,
        "bars": n * per,
        "seed": seed,
        "temperature": temperature,
        "wav": wav,
    }
    return _write(bundle, rows, Path(out), "interpolate", [seed] * len(rows), settings, t0)


def vary(
    bundle,
    input: str | os.PathLike,
    *,
    out: str | os.PathLike,
    amount: float = 0.3,
    num: int = 4,
    seed: int = 0,
    temperature: float = 0.0,
    top_p: float = 1.0,
    wav: bool = True,
) -> Summary:
    """``num`` variations: the input's first segment, perturbed by ``amount`` x prior std."""
    if num <= 0:
        raise ValueError(f"--num={num} must be > 0")
    t0 = time.perf_counter()
    z = encode_file(bundle, input)
    rows, draws = variation_rows(bundle, z, amount, num, seed, temperature, top_p)
    settings = {
        "input": str(input),
        "amount": amount,
        "num": num,
        "seed": seed,
        "temperature": temperature,
        "wav": wav,
        "latent_draws": draws,
    }
    return _write(bundle, rows, Path(out), "vary", [seed] * len(rows), settings, t0)


VARY_ROUNDS = 16  # grid decoder: rounds of ``num`` fresh perturbations before repeats are kept


def variation_rows(
    bundle,
    z: Latents,
    amount: float,
    num: int,
    seed: int = 0,
    temperature: float = 0.0,
    top_p: float = 1.0,
    rounds: int | None = None,
) -> tuple[list[list[int]], int]:
    """``num`` distinct decoded variations of ``z``'s first segment, and the latent draws used.

    Each draw is z + ``amount`` x prior std x N(0, I) (:meth:`LatentLadder.vary`). A greedy
    decode maps a small neighbourhood of z to the same music: at small amounts some draws decode
    to the input's own reconstruction or to an earlier variation. Those are redrawn, ``num`` draws
    a round, up to ``rounds`` rounds, so the variations differ from the input and from each other
    whenever the amount reaches past that neighbourhood; what is left after the last round is
    filled with the last draws' decodes (repeats then show in the summary's warning). ``rounds``
    defaults to 16 for the grid decoder (one forward pass a round) and 2 for the token decoders
    (each round a full autoregressive decode).
    """
    model = _vae(bundle)
    if rounds is None:
        rounds = VARY_ROUNDS if isinstance(model, GridVAE) else 2
    gen = torch.Generator(device="cpu").manual_seed(seed)
    seen = {tuple(decode_rows(bundle, Latents(z.z_g[:1], _first(z.z_b)), 0.0, 1.0, seed)[0])}
    rows: list[list[int]] = []
    spare: list[list[int]] = []
    draws = 0
    for r in range(rounds):
        batch = decode_rows(bundle, model.vary(z, amount, num, gen), temperature, top_p, seed + r)
        draws += num
        for row in batch:
            if len(rows) < num and tuple(row) not in seen:
                seen.add(tuple(row))
                rows.append(row)
            else:
                spare.append(row)
        if len(rows) == num:
            return rows, draws
    return rows + spare[: num - len(rows)], draws


def _first(z_b: torch.Tensor | None) -> torch.Tensor | None:
    return None if z_b is None else z_b[:1]


def _common(args: argparse.Namespace) -> dict:
    return {
        "seed": args.seed,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "wav": not args.no_wav,
    }


def sample_from_args(args: argparse.Namespace) -> Summary:
    """``aurl sample`` flags -> :func:`sample`."""
    return sample(
        load_model(args.model), out=args.out, num=args.num, bars=args.bars, **_common(args)
    )


def interpolate_from_args(args: argparse.Namespace) -> Summary:
    """``aurl interpolate`` flags -> :func:`interpolate` (temperature 0 = greedy decoding)."""
    return interpolate(
        load_model(args.model),
        args.a,
        args.b,
        out=args.out,
        steps=args.steps,
        bars=getattr(args, "bars", None),
        **_common(args),
    )


def vary_from_args(args: argparse.Namespace) -> Summary:
    """``aurl vary`` flags -> :func:`vary`."""
    return vary(
        load_model(args.model),
        args.input,
        out=args.out,
        amount=args.amount,
        num=args.num,
        **_common(args),
    )
