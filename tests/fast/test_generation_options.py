"""Request fields that reach the model: temperature / top_p / seed (random
sampling instead of greedy) and ignore_eos (a fixed number of tokens)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from rag.generation import Sampling
from tests.support.fakes import FakeTextModel


def test_chat_sampling_and_ignore_eos_reach_the_model(client: TestClient, model: FakeTextModel) -> None:
    messages = [{"role": "user", "content": "Hello there"}]
    assert client.post("/v1/chat/completions", json={"model": "fake-model", "messages": messages}).status_code == 200
    body = {"model": "fake-model", "messages": messages, "temperature": 0.8, "top_p": 0.9, "seed": 3,
            "stream": True, "ignore_eos": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert "[DONE]" in "".join(r.iter_text())
    zero = {"model": "fake-model", "messages": messages, "temperature": 0}
    assert client.post("/v1/chat/completions", json=zero).status_code == 200
    assert model.options == [
        {"ignore_eog": False, "sampling": None},
        {"ignore_eog": True, "sampling": Sampling(temperature=0.8, top_p=0.9, seed=3)},
        {"ignore_eog": False, "sampling": None},  # temperature 0 is greedy
    ]


def test_out_of_range_sampling_is_a_422(client: TestClient) -> None:
    messages = [{"role": "user", "content": "Hello"}]
    for bad in ({"temperature": -1}, {"top_p": 0}, {"top_p": 1.5}):
        r = client.post("/v1/chat/completions", json={"model": "fake-model", "messages": messages, **bad})
        assert r.status_code == 422, bad
