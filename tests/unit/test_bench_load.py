"""bench/load.py: a round's time split by the service's own timings."""

from __future__ import annotations

from bench.load import server_split


def stream(started: float, ended: float, timings: dict[str, float]) -> dict[str, object]:
    return {"arrivals": [], "started": started, "ended": ended, "usage": {}, "timings": timings}


def test_the_split_is_before_generation_and_outside_the_server() -> None:
    streams = [
        stream(0.0, 1.0, {"total_s": 0.9, "generation_s": 0.8}),
        stream(0.0, 1.2, {"total_s": 1.0, "generation_s": 0.7}),
        stream(0.0, 1.1, {"total_s": 1.0, "generation_s": 0.9}),
    ]
    split = server_split(streams)  # type: ignore[arg-type]
    assert round(split["server_before_gen_p50_s"], 6) == 0.1
    assert round(split["server_before_gen_max_s"], 6) == 0.3
    assert round(split["outside_server_p50_s"], 6) == 0.1


def test_the_way_to_the_model_is_split_into_the_parts_the_server_names() -> None:
    streams = [
        stream(0.0, 1.0, {"total_s": 0.9, "generation_s": 0.8, "retrieval_s": 0.05, "embed_s": 0.03, "prompt_s": 0.01}),
        stream(0.0, 1.0, {"total_s": 0.9, "generation_s": 0.8, "retrieval_s": 0.07, "embed_s": 0.04, "prompt_s": 0.02}),
        stream(0.0, 1.0, {"total_s": 0.9, "generation_s": 0.8, "retrieval_s": 0.06, "embed_s": 0.05, "prompt_s": 0.03}),
    ]
    split = server_split(streams)  # type: ignore[arg-type]
    assert round(split["server_retrieval_s_p50"], 6) == 0.06 and round(split["server_embed_s_p50"], 6) == 0.04
    assert round(split["server_prompt_s_p50"], 6) == 0.02 and "server_store_s_p50" not in split


def test_a_server_without_timings_adds_nothing() -> None:
    assert server_split([stream(0.0, 1.0, {})]) == {}  # type: ignore[list-item]


def test_the_sse_lines_of_either_client_are_read_alike() -> None:
    from bench.load import _Events

    chat = _Events("chat")
    lines = [
        'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}', "",
        'data: {"choices":[{"delta":{"content":"Hi"}}]}', "",
        'data: {"choices":[{"delta":{}}],"usage":{"completion_tokens":1},"timings":{"total_s":0.5}}', "",
        "data: [DONE]",
    ]
    assert [chat.line(x) for x in lines] == [True] * 6 + [False]
    assert len(chat.arrivals) == 1 and chat.usage == {"completion_tokens": 1} and chat.timings == {"total_s": 0.5}
    ask = _Events("ask")
    for line in ["event: delta", 'data: {"text":"a"}', "event: done", 'data: {"usage":{"x":1},"timings":{"t":2}}']:
        assert ask.line(line)
    assert len(ask.arrivals) == 1 and ask.usage == {"x": 1} and ask.timings == {"t": 2}


def test_services_side_by_side_take_turns_going_first_round_by_round() -> None:
    from bench.load import round_order

    orders = [round_order(["now", "before"], r) for r in range(4)]
    assert orders == [["now", "before"], ["before", "now"], ["now", "before"], ["before", "now"]]
    assert round_order(["alone"], 1) == ["alone"]


def test_two_services_and_the_reference_take_every_position_and_follow_each_other_alike() -> None:
    import itertools
    from collections import Counter

    from bench.load import round_order

    labels = ["now", "before", "reference"]
    rounds = [round_order(labels, r) for r in range(12)]
    runs = [label for order in rounds for label in order]
    for position in range(3):
        assert Counter(order[position] for order in rounds) == {"now": 4, "before": 4, "reference": 4}
    after = Counter((a, b) for a, b in itertools.pairwise(runs) if a != b)
    # Every service runs after the other one and after the reference, not always after the same.
    assert after[("now", "before")] > 0 and after[("reference", "before")] > 0
    assert after[("before", "now")] > 0 and after[("reference", "now")] > 0


def test_the_reference_runs_its_command_for_the_stream_count_and_reads_its_last_line() -> None:
    import asyncio

    from bench.load import reference_round

    got = asyncio.run(reference_round("echo loading; echo {streams} sequences; echo 0.47 640", 16))
    assert got["t_s"] == 0.47 and got["tokens_per_sequence"] == 640.0 and "started" in got


def test_a_reference_that_fails_says_so() -> None:
    import asyncio

    import pytest

    from bench.load import reference_round

    with pytest.raises(RuntimeError, match="exit 3"):
        asyncio.run(reference_round("echo 0.5 640; exit 3", 16))


def test_each_round_is_compared_with_the_reference_run_beside_it() -> None:
    from bench.load import with_reference

    rounds = [{"wall_s": 0.5, "prompt_tokens": 600.0, "completion_tokens": 128.0},
              {"wall_s": 0.5, "prompt_tokens": 600.0, "completion_tokens": 128.0}]
    reference = [{"t_s": 0.5, "tokens_per_sequence": 728.0}, {"t_s": 0.45, "tokens_per_sequence": 728.0}]
    with_reference(rounds, reference)
    assert [round(r["ratio_to_reference"], 6) for r in rounds] == [1.0, 0.9]


def test_the_second_service_may_ask_another_kind_of_request_of_its_own_length() -> None:
    import argparse

    from bench.load import versus_args

    args = argparse.Namespace(url="http://a", versus="http://a", kind="ask", prompt_words=0,
                              versus_kind="chat", versus_prompt_words=680, collection="bench")
    second = versus_args(args)
    assert (second.url, second.kind, second.prompt_words, second.collection) == ("http://a", "chat", 680, "bench")
    same = versus_args(argparse.Namespace(**{**vars(args), "versus": "http://b", "versus_kind": None,
                                             "versus_prompt_words": None}))
    assert (same.url, same.kind, same.prompt_words) == ("http://b", "ask", 0)
    assert args.kind == "ask"  # the first one's arguments stay as they were
