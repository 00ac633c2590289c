"""The example app (examples/headline_search.py): search, its HTTP service, its command line."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from edgegolf.runtime import load
from tests.builders.bundles import build_bundle

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("headline_search", REPO / "examples" / "headline_search.py")
app = importlib.util.module_from_spec(_spec)
sys.modules["headline_search"] = app  # dataclasses look their module up while the file runs
_spec.loader.exec_module(app)

HEADLINES = [
    app.Headline("shares fell after results", "business", "business/1.txt"),
    app.Headline("the band released a new album", "entertainment", "entertainment/1.txt"),
    app.Headline("team won the game", "sport", "sport/1.txt"),
    app.Headline("election vote", "politics", "politics/1.txt"),
    app.Headline("new film released", "entertainment", "entertainment/2.txt"),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_bundle(tmp_path_factory.mktemp("app") / "bundle")


@pytest.fixture(scope="module")
def index(tiny):
    return app.HeadlineIndex(load(tiny.folder, threads=1), HEADLINES, batch_size=2)


@pytest.fixture
def server(index):
    server = app.make_server(index, port=0)  # port 0: any free port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_search_ranks_by_cosine_computed_by_hand(tiny, index):
    query = "the team won a game"
    hits = index.search(query, k=5)
    expected = np.array([tiny.embedding(h.text) @ tiny.embedding(query) for h in HEADLINES])
    assert [h.headline for h in hits] == [HEADLINES[i] for i in np.argsort(-expected, kind="stable")]
    np.testing.assert_allclose([h.score for h in hits], np.sort(expected)[::-1], atol=1e-5)
    top = index.search("team won the game", k=1)
    assert top[0].headline.text == "team won the game" and top[0].score == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("k", [0, 51, "3"])
def test_search_refuses_a_bad_k(index, k):
    with pytest.raises(app.InputError, match=f"k is {k!r}; accepted: an integer from 1 to 50"):
        index.search("vote", k)


def test_http_service_answers_concurrent_requests_like_direct_calls(index, server):
    queries = ["shares fell", "new album", "the game", "vote", "film released", "the team won"] * 4
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda q: get(f"{server}/search?q={q.replace(' ', '+')}&k=3"), queries))
    for query, (status, body) in zip(queries, answers):
        assert status == 200 and body["query"] == query
        direct = index.search(query, 3)
        assert [h["headline"]["text"] for h in body["hits"]] == [h.headline.text for h in direct]
        np.testing.assert_allclose([h["score"] for h in body["hits"]], [h.score for h in direct], atol=1e-6)


def test_http_service_says_what_was_wrong(server):
    assert get(f"{server}/search?k=3") == (400, {"error": "q is missing or empty; pass /search?q=TEXT"})
    status, body = get(f"{server}/search?q=vote&k=99")
    assert status == 400 and body["error"] == "k is 99; accepted: an integer from 1 to 50"
    status, body = get(f"{server}/search?q=vote&k=many")
    assert status == 400 and "invalid literal for int()" in body["error"]
    status, body = get(f"{server}/index.html")
    assert status == 404 and "try /search?q=TEXT" in body["error"]


def test_command_line_prints_hits_and_reports_a_bad_bundle(tiny, tmp_path, capsys):
    for headline in HEADLINES:
        path = tmp_path / "data" / headline.source
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"\n{headline.text}\n\nThe story itself.\n", encoding="utf-8")
    assert app.main([str(tiny.folder), "team won the game", "-k", "2", "--data", str(tmp_path / "data")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].endswith("[sport] team won the game")
    assert app.main([str(tmp_path / "missing"), "vote", "--data", str(tmp_path / "data")]) == 2
    assert "error: bundle folder" in capsys.readouterr().err


def test_headlines_are_read_from_the_bbc_news_files():
    headlines = app.read_headlines()
    assert len(headlines) == 2225
    assert sorted({h.category for h in headlines}) == ["business", "entertainment", "politics", "sports", "tech"]
    first = headlines[0]
    assert first.source == "business/001.txt" and first.text == first.text.strip() and len(first.text) > 5


@pytest.mark.slow
def test_real_minilm_finds_headlines_of_the_right_category(tmp_path):
    from tests.builders.minilm import fp32_minilm_bundle

    bundle = fp32_minilm_bundle(tmp_path / "minilm")
    index = app.HeadlineIndex(load(bundle), app.read_headlines()[::2])
    for query, category in [("stock market shares and company profits", "business"),
                            ("football match result and the league title", "sports"),
                            ("parliament election campaign and the prime minister", "politics"),
                            ("new mobile phone software and broadband internet", "tech"),
                            ("film stars at the awards ceremony", "entertainment")]:
        hits = index.search(query, k=5)
        assert sum(h.headline.category == category for h in hits) >= 4, (query, hits)
