"""Budget-driven search over the pipeline's own settings (needs the 'search' extra: optuna).

    from edgegolf.search import search
    result = search(None, output="out", budget="size<=10MB,p50<=5ms,drop<=1", trials=30)
    result.fits, result.message, result.front_markdown
"""

from edgegolf.search.run import SearchResult, parse_duration, search
from edgegolf.search.space import SearchSpace

__all__ = ["SearchResult", "SearchSpace", "parse_duration", "search"]
