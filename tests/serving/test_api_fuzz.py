"""Bad input never hurts the server: the loader's corrupt MIDI corpus and random JSON get 4xx
answers (never 5xx) and the server still answers /health afterwards."""

from __future__ import annotations

import base64
import importlib.util
import json
import random
from collections import Counter
from pathlib import Path

from fastapi.testclient import TestClient

from aurl.serving.app import ServeConfig, create_app

FUZZ = Path(__file__).resolve().parents[1] / "data" / "test_fuzz.py"
FIELDS = [
    "bars", "seconds", "tokens", "temperature", "top_k", "top_p", "min_p", "key", "pitch_range",
    "max_polyphony", "programs", "seed", "prompt", "density", "soft", "time_signature",
    "repetition_penalty", "musicxml", "nonsense",
]  # fmt: skip


def _mutants(count: int):
    spec = importlib.util.spec_from_file_location("loader_fuzz", FUZZ)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.mutants(count, seed=12)


def _random_value(rng: random.Random):
    kind = rng.randrange(9)
    if kind == 0:
        return rng.randint(-(2**40), 2**40)
    if kind == 1:
        return rng.choice([0, 1, 2, 3, 16, 64, 129, -1])
    if kind == 2:
        return rng.choice([0.0, -0.5, 0.3, 1.0, 1e308, float("inf")])
    if kind == 3:
        return "".join(rng.choice("ab:#-/09 %\u00e9\x00") for _ in range(rng.randrange(12)))
    if kind == 4:
        return rng.choice(["D:min", "F#:maj", "36-84", "3/4", "AAAA", "TVRoZA=="])
    if kind == 5:
        return [rng.randint(-5, 200) for _ in range(rng.randrange(4))]
    if kind == 6:
        return None
    if kind == 7:
        return {"x": [1, {"y": None}]}
    return rng.choice([True, False])


def _random_body(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.15:  # not JSON at all, or truncated JSON
        return bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
    if roll < 0.25:
        return json.dumps(rng.choice([[], 3, "x", None, [{"bars": 1}]])).encode()
    body = {f: _random_value(rng) for f in rng.sample(FIELDS, rng.randrange(1, 5))}
    body.setdefault("tokens", 3) if "bars" not in body and "seconds" not in body else None
    body["musicxml"] = False
    text = json.dumps(body, allow_nan=True)  # Infinity/NaN are not JSON: the parser must refuse
    return text.encode()


def test_corrupt_midi_and_random_json_get_no_server_errors(tiny_serve_bundle):
    cfg = ServeConfig(max_tokens=128, max_batch=4, timeout_s=30, decode_workers=0)
    statuses: Counter = Counter()
    with TestClient(create_app(tiny_serve_bundle, cfg)) as client:
        for _seed, _mutator, data in _mutants(60):
            body = {"prompt": base64.b64encode(data).decode(), "tokens": 3, "musicxml": False}
            r = client.post("/v1/generate", json=body)
            statuses[r.status_code] += 1
            assert r.status_code < 500, (r.status_code, r.text)
            if r.status_code == 400:
                assert r.json()["detail"].startswith("prompt: ")  # the loader's reason
        rng = random.Random(7)
        for _ in range(100):
            r = client.post("/v1/generate", content=_random_body(rng), headers={"content-type": "application/json"})  # fmt: skip
            statuses[r.status_code] += 1
            assert r.status_code < 500, (r.status_code, r.text)
        assert client.get("/health").status_code == 200
    sent = sum(statuses.values())
    four = sum(n for s, n in statuses.items() if 400 <= s < 500)
    # both kinds of outcome occur: refusals with reasons, and mutants the loader still reads
    assert sent == 160 and four > 80 and statuses[200] > 5, statuses
    print(f"fuzz: {sent} requests, {four} 4xx, {statuses[200]} 200, 0 5xx: {dict(statuses)}")
