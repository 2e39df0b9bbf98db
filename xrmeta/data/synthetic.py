"""A small, seeded synthetic catalogue for tests and quick runs (`load_dataset("synthetic")`)."""

from __future__ import annotations

import numpy as np

from .xmc import XMCData, binary_csr

_CONSONANTS = "bdfghklmnprstvz"
_VOWELS = "aeiou"
_FILLERS = ["pro", "mini", "max", "plus", "set", "kit", "black", "white", "steel", "lite"]


def _made_up_words(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    """``n`` distinct consonant-vowel words of 2-3 syllables, none in ``taken``."""
    words: list[str] = []
    while len(words) < n:
        m = 2 * (n - len(words)) + 16
        cons = rng.integers(0, len(_CONSONANTS), size=(m, 3))
        vows = rng.integers(0, len(_VOWELS), size=(m, 3))
        n_syl = rng.integers(2, 4, size=m)
        for c, v, k in zip(cons, vows, n_syl):
            w = "".join(_CONSONANTS[c[j]] + _VOWELS[v[j]] for j in range(k))
            if w not in taken:
                taken.add(w)
                words.append(w)
                if len(words) == n:
                    break
    return words


def _pick(rng: np.random.Generator, seq: list, k: int) -> list:
    return [seq[j] for j in rng.permutation(len(seq))[:k]]


def make_synthetic(n_items: int = 2000, n_queries: int = 6000, seed: int = 0) -> XMCData:
    """A small learnable catalogue, fully determined by ``seed``.

    Items fall into topics (~20 items each). A title holds 1-2 topic words, a
    brand, 1-2 words unique to the item, a model code and 0-2 generic fillers
    (4-8 words). Queries are 2-4 title words of one item, shuffled, sometimes with
    a typo and sometimes also positive for a second item of the same topic. Topic
    words make a new item's title informative; unique words make queries learnable.
    """
    if n_items < 1 or n_queries < 0:
        raise ValueError("need n_items >= 1 and n_queries >= 0")
    rng = np.random.default_rng(seed)
    taken = set(_FILLERS)

    n_topics = max(1, round(n_items / 20))
    topic_words = [_made_up_words(rng, int(rng.integers(3, 6)), taken) for _ in range(n_topics)]
    brands = _made_up_words(rng, max(2, n_topics // 2), taken)
    item_topic = rng.integers(0, n_topics, size=n_items)
    n_unique = rng.integers(1, 3, size=n_items)
    unique_words = iter(_made_up_words(rng, int(n_unique.sum()), taken))

    titles: list[list[str]] = []
    for t, n_u in zip(item_topic, n_unique):
        words = _pick(rng, topic_words[t], int(rng.integers(1, 3)))
        words.append(brands[rng.integers(len(brands))])
        words += [next(unique_words) for _ in range(n_u)]
        words.append(f"{'abcxyz'[rng.integers(6)]}{rng.integers(10, 1000)}")
        words += _pick(rng, _FILLERS, int(rng.integers(0, 3)))
        titles.append(words)

    by_topic = [np.flatnonzero(item_topic == t) for t in range(n_topics)]
    # Uneven popularity, as in real catalogues; a few items get no query.
    popularity = rng.gamma(2.0, 1.0, size=n_items)
    popularity /= popularity.sum()

    queries: list[str] = []
    seen: set[str] = set()
    q_pos: list[int] = []
    i_pos: list[int] = []
    for _ in range(50):
        if len(queries) == n_queries:
            break
        m = n_queries - len(queries) + 16
        items = rng.choice(n_items, size=m, p=popularity)
        n_words = rng.integers(2, 5, size=m)
        u = rng.random(size=(m, 5))
        for item, k, (u_typo, u_word, u_pos, u_pair, u_other) in zip(items, n_words, u):
            words = _pick(rng, titles[item], k)
            if u_typo < 0.15:
                w_idx = int(u_word * len(words))
                w = words[w_idx]
                if len(w) >= 3:
                    j = int(u_pos * (len(w) - 1))
                    words[w_idx] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
            text = " ".join(words)
            # Duplicate texts would be ambiguous inputs; draw again instead.
            if text in seen:
                continue
            seen.add(text)
            q = len(queries)
            queries.append(text)
            q_pos.append(q)
            i_pos.append(int(item))
            siblings = by_topic[item_topic[item]]
            if u_pair < 0.1 and len(siblings) > 1:
                others = siblings[siblings != item]
                q_pos.append(q)
                i_pos.append(int(others[int(u_other * len(others))]))
            if len(queries) == n_queries:
                break
    else:
        raise RuntimeError("could not generate enough distinct synthetic queries")

    Y = binary_csr(q_pos, i_pos, (n_queries, n_items))
    item_texts = [" ".join(w) for w in titles]
    item_ids = [f"syn{i:06d}" for i in range(n_items)]
    return XMCData("synthetic", queries, item_texts, item_ids, Y)
