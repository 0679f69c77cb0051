"""The traffic model: who asks for what, and what they get back.

Fast by construction: every line is the concatenation of pre-formatted fragments
(client, request, status+size, referrer+user agent) and a per-second timestamp, drawn
as numpy index arrays a chunk at a time; only the final join runs per line in Python.

Model
-----
- ``ips`` normal clients (mostly IPv4, some IPv6), Zipf-weighted (a few heavy clients,
  a long tail), each with its own user agent; ``urls`` resources ``/resource/1..N`` plus
  a realistic mix of pages, API endpoints and static files, Zipf-weighted, each with a
  few request variants (method, query string, protocol).
- ``bad_ips`` misbehaving clients, each sending ``bad_ip_share`` of all lines with error
  rate ``ip_error_rate`` (4xx: 404/403/401/429); ``bad_urls`` failing endpoints, each
  receiving ``bad_url_share`` of all lines with error rate ``url_error_rate`` (5xx).
  Bad IPs ask for normal URLs, bad URLs are asked by normal IPs, so the rates are exact.
- The normal traffic's error rate is set so that the *global* error rate is ``error_rate``
  (default mix 200/404/500 = 90/5/5 with a few other codes on each side).
- Scenario incidents (``scenario.Incident``) add lines (floods, outages, surges) or raise
  error rates inside their time windows.

Off by default (the small-site profile, ``PROFILES``, switches them on; with them off no
random number is drawn for them, so existing seeds give the same bytes):

- ``crawlers``: search-engine clients (bot user agents, addresses from their published
  ranges) sending ``crawler_share`` of all lines between them (Zipf), walking every URL
  evenly, with ``crawler_error_rate`` of 404s (an occasional 403);
- ``chronic_urls``: endpoints that always fail part of their requests (a ``/login``
  answering 401 to a share of its normal traffic);
- ``day_night``: the human traffic follows a day/night cycle, ``1 + day_night x cos`` of
  the UTC hour from ``peak_hour``, averaging the given rate; crawlers keep a flat rate, so
  the night's error rate is higher, as on a real site.

With any of them, a page named by a ``url_outage`` keeps its normal traffic outside the
outage (without, it only gets the incident's lines, as it always did).
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field

import numpy as np

from chaussettes import logformat as lf

UTC = _dt.UTC
US = 1_000_000
_LUT_BITS = 20  # weighted draws through a 2**20 lookup table (one integer draw per line)

SUCCESS_MIX = ((200, 0.88), (304, 0.05), (302, 0.03), (201, 0.02), (301, 0.01), (204, 0.01))
ERROR_MIX = ((404, 0.48), (500, 0.42), (403, 0.03), (401, 0.03), (503, 0.02), (400, 0.02))
CLIENT_ERROR_MIX = ((404, 0.40), (403, 0.25), (401, 0.25), (429, 0.10))
SERVER_ERROR_MIX = ((500, 0.50), (502, 0.20), (503, 0.20), (504, 0.10))
CRAWLER_ERROR_MIX = ((404, 0.95), (403, 0.05))
CHRONIC_ERROR_MIX = ((401, 1.0),)
NO_BODY = (204, 304)  # httpd's %b logs '-' for these
SIZES_PER_STATUS = 64
VARIANTS_PER_URL = 4
# kinds of line: which error mix applies
NORMAL, CLIENT_BAD, SERVER_BAD, CRAWLER, CHRONIC = 0, 1, 2, 3, 4
# first octets of the published ranges of Googlebot, Bingbot, Applebot, YandexBot, Baiduspider
CRAWLER_PREFIXES = ("66.249", "40.77", "157.55", "17.58", "5.255", "180.76")
BOT_USER_AGENTS = (6, 7)  # indices of Googlebot and bingbot in USER_AGENTS

PAGES = (
    "/", "/index.html", "/login", "/logout", "/search", "/cart", "/checkout", "/about", "/contact",
    "/blog", "/blog/2025/05/release-notes", "/account/settings", "/api/v1/users", "/api/v1/orders",
    "/api/v1/products", "/api/v1/health", "/static/css/main.css", "/static/js/app.js",
    "/images/logo.png", "/favicon.ico", "/robots.txt", "/sitemap.xml", "/wp-login.php", "/.env",
)
BAD_URL_NAMES = (
    "/api/v1/payments", "/api/v1/checkout", "/api/v1/inventory", "/api/v1/recommendations",
    "/api/v2/search", "/api/v1/auth/token", "/api/v1/shipping/quote", "/api/v1/cart/items",
)
SEARCH_TERMS = ("chaussettes", "chaussettes+rouges", "laine", "coton+bio", "taille+42", "promo", "noel")
REFERRERS = (
    (None, 0.50), ("https://www.google.com/", 0.18), ("https://www.bing.com/", 0.04),
    ("https://duckduckgo.com/", 0.03), ("https://shop.example.com/", 0.10),
    ("https://shop.example.com/cart", 0.05), ("https://shop.example.com/search?q=chaussettes", 0.05),
    ("https://t.co/xYz12AbC", 0.02), ("android-app://com.google.android.gm/", 0.01),
    ("https://www.facebook.com/", 0.02),
)
USER_AGENTS = (
    (("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/124.0.0.0 Safari/537.36"), 0.30),
    (("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
      "Version/17.4 Safari/605.1.15"), 0.12),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0", 0.08),
    (("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
      "Version/17.4 Mobile/15E148 Safari/604.1"), 0.14),
    (("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/124.0.0.0 Mobile Safari/537.36"), 0.12),
    (("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51"), 0.06),
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", 0.04),
    ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", 0.02),
    ("curl/8.5.0", 0.03), ("python-requests/2.32.3", 0.03), ("okhttp/4.12.0", 0.02),
    ("Go-http-client/1.1", 0.02), (None, 0.01),
)
PROTOCOLS = (("HTTP/1.1", 0.70), ("HTTP/2.0", 0.25), ("HTTP/1.0", 0.05))



@dataclass
class TrafficConfig:
    """The knobs of the generator CLI (validated by ``validate``)."""

    ips: int = 1000
    urls: int = 100
    error_rate: float = 0.10
    bad_ips: int = 0
    ip_error_rate: float = 0.6
    bad_ip_share: float = 0.02
    bad_urls: int = 0
    url_error_rate: float = 0.6
    bad_url_share: float = 0.02
    seed: int = 0
    incidents: list = field(default_factory=list)  # scenario.Incident
    crawlers: int = 0
    crawler_share: float = 0.15  # of all lines, the crawlers together
    crawler_error_rate: float = 0.08
    chronic_urls: dict = field(default_factory=dict)  # URL -> share of its normal requests answered 401
    day_night: float = 0.0  # amplitude of the human traffic's daily cycle, in [0, 1)
    peak_hour: float = 14.0  # UTC hour of its peak

    def base_error_rate(self) -> float:
        """The error rate of normal lines that makes the global rate ``error_rate``."""
        bad_share = self.bad_ips * self.bad_ip_share + self.bad_urls * self.bad_url_share
        bad_errors = (self.bad_ips * self.bad_ip_share * self.ip_error_rate
                      + self.bad_urls * self.bad_url_share * self.url_error_rate)
        if bad_share >= 1:
            return float("nan")
        return (self.error_rate - bad_errors) / (1 - bad_share)

    def validate(self) -> None:
        """Raise ValueError with a one-line message naming the flag."""
        for name in ("error_rate", "ip_error_rate", "url_error_rate", "bad_ip_share", "bad_url_share"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"--{name.replace('_', '-')} must be within [0, 1], got {value:g}")
        if self.ips < 1:
            raise ValueError(f"--ips must be at least 1, got {self.ips}")
        if self.urls < 1:
            raise ValueError(f"--urls must be at least 1, got {self.urls}")
        for name in ("bad_ips", "bad_urls"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        share = self.bad_ips * self.bad_ip_share + self.bad_urls * self.bad_url_share
        if share >= 1:
            raise ValueError(
                f"bad IPs and URLs would take {share:.0%} of the traffic: lower --bad-ip-share/--bad-url-share")
        base = self.base_error_rate()
        if base < -1e-12:
            raise ValueError(
                f"--error-rate {self.error_rate:g} is below what the bad IPs/URLs alone produce "
                f"({self.error_rate - base * (1 - share):.3f}): raise it or lower their share/rate")
        if base > 1 + 1e-12:
            raise ValueError(f"--error-rate {self.error_rate:g} is not reachable with these bad IPs/URLs")
        if self.crawlers < 0 or not 0 <= self.crawler_share < 1 or not 0 <= self.crawler_error_rate <= 1:
            raise ValueError("crawlers: a count >= 0, a share in [0, 1) and an error rate in [0, 1]")
        if share + (self.crawler_share if self.crawlers else 0) >= 1:
            raise ValueError("bad IPs, bad URLs and crawlers would take all the traffic")
        if not 0 <= self.day_night < 1:
            raise ValueError(f"day_night must be in [0, 1), got {self.day_night:g}")
        for url, rate in self.chronic_urls.items():
            if not 0 <= rate <= 1:
                raise ValueError(f"chronic URL {url}: its error rate must be within [0, 1], got {rate:g}")

    @property
    def slot_factor(self) -> float:
        """Base time slots per line kept: the day/night cycle draws slots at the peak rate and
        keeps ``1 / (1 + day_night)`` of them on average (1.0 when there is no cycle)."""
        return 1.0 + self.day_night


def _lut(weights, size: int = 1 << _LUT_BITS) -> np.ndarray:
    """A table mapping a uniform integer in [0, 2**20) to an index drawn with ``weights``."""
    w = np.asarray(weights, dtype=np.float64)
    bounds = np.rint(np.cumsum(w / w.sum()) * size).astype(np.int64)
    bounds[-1] = size
    counts = np.diff(np.concatenate(([0], bounds)))
    return np.repeat(np.arange(len(w), dtype=np.int32), counts)


def _zipf(n: int, s: float) -> np.ndarray:
    return 1.0 / np.arange(1, n + 1, dtype=np.float64) ** s


def _make_ips(rng: np.random.Generator, count: int, exclude: set[str]) -> list[str]:
    out: list[str] = []
    seen = set(exclude)
    while len(out) < count:
        r = rng.random()
        if r < 0.35:
            ip = f"10.{rng.integers(0, 256)}.{rng.integers(0, 256)}.{rng.integers(1, 255)}"
        elif r < 0.45:
            ip = f"192.168.{rng.integers(0, 256)}.{rng.integers(1, 255)}"
        elif r < 0.92:
            first = int(rng.choice([23, 31, 37, 45, 51, 62, 66, 77, 81, 86, 91, 109, 141, 151, 176, 185, 193, 212]))
            ip = f"{first}.{rng.integers(0, 256)}.{rng.integers(0, 256)}.{rng.integers(1, 255)}"
        else:
            ip = (f"2001:db8:{rng.integers(0, 0x10000):x}:{rng.integers(0, 0x10000):x}"
                  f"::{rng.integers(1, 0x10000):x}")
        if ip not in seen:
            seen.add(ip)
            out.append(ip)
    return out


def _make_crawler_ips(rng: np.random.Generator, count: int, exclude: set[str]) -> list[str]:
    """Addresses in the crawlers' published ranges (drawn only when there are crawlers)."""
    out: list[str] = []
    while len(out) < count:
        prefix = CRAWLER_PREFIXES[len(out) % len(CRAWLER_PREFIXES)]
        ip = f"{prefix}.{rng.integers(0, 256)}.{rng.integers(1, 255)}"
        if ip not in exclude and ip not in out:
            out.append(ip)
    return out


def _variants(rng: np.random.Generator, url: str) -> list[tuple[str, str, str | None, str]]:
    """VARIANTS_PER_URL (method, path, query, protocol) for one URL."""
    protos, pw = zip(*PROTOCOLS)
    out = []
    for v in range(VARIANTS_PER_URL):
        proto = protos[int(rng.choice(len(protos), p=np.array(pw) / sum(pw)))]
        method, query = "GET", None
        if url.startswith("/static/") or url.endswith((".png", ".ico", ".txt", ".xml", ".css", ".js")):
            if v == 3:
                method = "HEAD"
            elif v == 2:
                query = f"v={rng.integers(1, 20)}"
        elif url == "/login":
            method = ("POST", "POST", "GET", "POST")[v]
        elif url == "/search":
            query = f"q={SEARCH_TERMS[int(rng.integers(0, len(SEARCH_TERMS)))]}"
            if v == 3:
                query += f"&page={rng.integers(2, 9)}"
        elif url.startswith("/api/"):
            method = ("GET", "GET", "POST", ("PUT", "DELETE", "PATCH")[int(rng.integers(0, 3))])[v]
            if v == 1:
                query = f"page={rng.integers(1, 50)}&limit=20"
        elif url.startswith("/resource/"):
            method = ("GET", "GET", "GET", "POST")[v]
            if v == 1:
                query = f"page={rng.integers(1, 10)}"
        out.append((method, url, query, proto))
    return out


def _size_pool(rng: np.random.Generator, status: int) -> list[int | None]:
    if status in NO_BODY:
        return [None] * SIZES_PER_STATUS
    if status == 200:
        sizes = np.exp(rng.normal(8.3, 1.3, SIZES_PER_STATUS))
    elif status in (301, 302):
        sizes = rng.normal(235, 15, SIZES_PER_STATUS)
    elif status == 201:
        sizes = rng.normal(420, 120, SIZES_PER_STATUS)
    else:
        sizes = rng.normal(330 if status < 500 else 520, 60, SIZES_PER_STATUS)
    return [int(min(max(s, 1), 50_000_000)) for s in sizes]


def _format_fragments(fmt: str, ips, requests, status_sizes, ref_uas):
    """Per-format fragments; a line is the concatenation described in ``Chunk.render``."""
    if fmt == "combined":
        ipf = [f"{ip} - - [" for ip in ips]
        req = [f'{lf.escape_logitem(_request(m, u, q, p))}" ' for m, u, q, p in requests]
        sb = [f'{s} {"-" if not b else b} "' for s, b in status_sizes]
        ru = [f'{"-" if r is None else lf.escape_logitem(r)}" "{"-" if a is None else lf.escape_logitem(a)}"'
              for r, a in ref_uas]
    elif fmt == "json":
        d = json.dumps
        ipf = [f'Z", "ip": {d(ip, ensure_ascii=False)}, ' for ip in ips]
        req = [f'"method": {d(m)}, "url": {d(_target(u, q), ensure_ascii=False)}, "protocol": {d(p)}, '
               for m, u, q, p in requests]
        sb = [f'"status": {s}' + ("" if b is None else f', "bytes": {b}') for s, b in status_sizes]
        ru = [("" if r is None else f', "referrer": {d(r, ensure_ascii=False)}')
              + ("" if a is None else f', "user_agent": {d(a, ensure_ascii=False)}') + "}"
              for r, a in ref_uas]
    elif fmt == "csv":
        c = lf.csv_field
        ipf = [f"Z,{c(ip)}," for ip in ips]
        req = [f"{c(m)},{c(_target(u, q))},{c(p)}," for m, u, q, p in requests]
        sb = [f"{s},{'' if b is None else b}," for s, b in status_sizes]
        ru = [f"{c(r)},{c(a)}" for r, a in ref_uas]
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return tuple(np.array(x, dtype=object) for x in (ipf, req, sb, ru))


def _target(url: str, query: str | None) -> str:
    return url if query is None else f"{url}?{query}"


def _request(method, url, query, proto) -> str:
    return f"{method} {_target(url, query)} {proto}" if proto else f"{method} {_target(url, query)}"


class TrafficModel:
    """Draws chunks of lines; deterministic for a given config and sequence of calls."""

    def __init__(self, config: TrafficConfig, fmt: str = "combined"):
        config.validate()
        self.config = config
        self.fmt = fmt
        self.rng = np.random.default_rng(config.seed)
        rng = self.rng
        incidents = list(config.incidents)

        # --- clients: normal, bad, then scenario entities
        flood_ips = [i.entity for i in incidents if i.kind == "ip_flood"]
        self.normal_ips = _make_ips(rng, config.ips, set(flood_ips))
        self.bad_ip_list = _make_ips(rng, config.bad_ips, set(self.normal_ips) | set(flood_ips))
        self.crawler_list = _make_crawler_ips(rng, config.crawlers,
                                              set(self.normal_ips) | set(self.bad_ip_list) | set(flood_ips))
        extra_ips = [ip for ip in dict.fromkeys(flood_ips) if ip not in self.normal_ips]
        self.ips = self.normal_ips + self.bad_ip_list + self.crawler_list + extra_ips
        self.ip_index = {ip: i for i, ip in enumerate(self.ips)}
        self.ip_lut = _lut(_zipf(config.ips, 0.7)[rng.permutation(config.ips)])
        ua_texts, ua_w = zip(*USER_AGENTS)
        self.user_agents = list(ua_texts)
        self.ip_ua = _lut(ua_w)[rng.integers(0, 1 << _LUT_BITS, len(self.ips))]
        for k in range(config.crawlers):  # crawlers say what they are
            self.ip_ua[config.ips + config.bad_ips + k] = BOT_USER_AGENTS[k % len(BOT_USER_AGENTS)]

        # --- URLs: normal (resources + pages), bad, then scenario entities
        outage_urls = [i.entity for i in incidents if i.kind == "url_outage"]
        bad_names = [u for u in BAD_URL_NAMES if u not in outage_urls]
        self.bad_url_list = (bad_names + [f"/api/v1/service-{k}" for k in range(config.bad_urls)])[:config.bad_urls]
        # a page that goes down keeps its normal traffic around the outage in the realistic
        # (profile) model; otherwise, as always, only the incident's lines ask for it
        realistic = bool(config.crawlers or config.chronic_urls or config.day_night)
        down = set() if realistic else set(outage_urls)
        pages = [p for p in PAGES if p not in self.bad_url_list and p not in down]
        resources = [f"/resource/{k}" for k in range(1, config.urls + 1)]
        self.normal_urls = resources + pages
        extra_urls = [u for u in dict.fromkeys(outage_urls) if u not in self.normal_urls]
        self.urls = self.normal_urls + self.bad_url_list + extra_urls
        self.url_index = {u: i for i, u in enumerate(self.urls)}
        # 60 % of requests to the resources (Zipf, shuffled ranks), 40 % to the pages (Zipf, "/" first)
        resource_w = _zipf(len(resources), 0.9)[rng.permutation(len(resources))]
        page_w = _zipf(len(pages), 1.0)
        weights = np.concatenate([0.6 * resource_w / resource_w.sum(), 0.4 * page_w / page_w.sum()])
        self.url_lut = _lut(weights)
        self.requests = [v for u in self.urls for v in _variants(rng, u)]

        # --- statuses and sizes
        codes = sorted({c for mix in (SUCCESS_MIX, ERROR_MIX, CLIENT_ERROR_MIX, SERVER_ERROR_MIX) for c, _ in mix})
        self.codes = np.array(codes, dtype=np.int32)
        code_pos = {c: i for i, c in enumerate(codes)}

        def mix_lut(mix):
            return np.array([code_pos[c] for c, _ in mix], dtype=np.int32)[_lut([w for _, w in mix])]

        self.success_lut = mix_lut(SUCCESS_MIX)
        self.error_luts = (mix_lut(ERROR_MIX), mix_lut(CLIENT_ERROR_MIX), mix_lut(SERVER_ERROR_MIX),
                           mix_lut(CRAWLER_ERROR_MIX), mix_lut(CHRONIC_ERROR_MIX))
        self.sizes = [s for c in codes for s in _size_pool(rng, c)]
        self.status_sizes = [(codes[k // SIZES_PER_STATUS], s) for k, s in enumerate(self.sizes)]

        ref_texts, ref_w = zip(*REFERRERS)
        self.referrers = list(ref_texts)
        self.ref_lut = _lut(ref_w)
        self.ref_uas = [(r, a) for r in self.referrers for a in self.user_agents]

        # --- classes of base lines: bad IPs, bad URLs, crawlers, normal
        shares = [config.bad_ip_share] * config.bad_ips + [config.bad_url_share] * config.bad_urls
        if config.crawlers:
            crawler_w = _zipf(config.crawlers, 1.0)
            shares += list(config.crawler_share * crawler_w / crawler_w.sum())
        self.class_bounds = np.cumsum(shares) if shares else np.zeros(0)
        self.base_rate = max(0.0, min(1.0, config.base_error_rate()))
        self.n_bad_ips = config.bad_ips
        self.n_bad = config.bad_ips + config.bad_urls  # classes before the crawlers'
        self.first_bad_ip = config.ips
        self.first_crawler_ip = config.ips + config.bad_ips
        self.first_bad_url = len(self.normal_urls)
        self.chronic = {self.url_index[u]: r for u, r in config.chronic_urls.items() if u in self.url_index}
        if config.crawlers or self.chronic:
            self.base_rate = self._human_error_rate(weights)
        self.incidents = incidents
        self._carry = [0.0] * len(incidents)

        self.fragments = _format_fragments(fmt, self.ips, self.requests, self.status_sizes, self.ref_uas)
        self._ts_cache: dict[int, str] = {}
        self._frac3 = np.array([f"{k:03d}" for k in range(1000)], dtype=object)
        self.keys = np.array(self.ips, dtype=object)

    def _human_error_rate(self, url_weights) -> float:
        """The normal lines' error rate that keeps the global rate at ``error_rate`` when
        crawlers and chronic URLs add their own errors (day/night aside)."""
        cfg = self.config
        other = cfg.bad_ips * cfg.bad_ip_share + cfg.bad_urls * cfg.bad_url_share
        other_errors = (cfg.bad_ips * cfg.bad_ip_share * cfg.ip_error_rate
                        + cfg.bad_urls * cfg.bad_url_share * cfg.url_error_rate)
        if cfg.crawlers:
            other += cfg.crawler_share
            other_errors += cfg.crawler_share * cfg.crawler_error_rate
        w = np.asarray(url_weights, dtype=np.float64)
        w = w / w.sum()
        chronic_w = sum(w[i] for i in self.chronic)
        chronic_errors = sum(w[i] * r for i, r in self.chronic.items())
        human = (cfg.error_rate - other_errors) / (1 - other)
        return max(0.0, min(1.0, (human - chronic_errors) / (1 - chronic_w)))

    def _day_night(self, times_us: np.ndarray) -> np.ndarray:
        """The share of base slots kept for human lines at these times (peak: 1)."""
        hours = (times_us / (3600 * US)) % 24
        a = self.config.day_night
        return (1 + a * np.cos(2 * np.pi * (hours - self.config.peak_hour) / 24)) / (1 + a)

    # ------------------------------------------------------------------ drawing
    def chunk(self, times_us: np.ndarray, span: tuple[int, int] | None = None) -> Chunk:
        """Lines for base times ``times_us`` (sorted int64 µs since the epoch), plus the
        incident lines falling in ``span`` = [start, end) µs (default: the times' range)."""
        rng = self.rng
        n = len(times_us)
        cfg = self.config
        if span is None:
            span = (int(times_us[0]), int(times_us[-1]) + 1) if n else (0, 0)
        ip = self.ip_lut[rng.integers(0, 1 << _LUT_BITS, n)]
        url = self.url_lut[rng.integers(0, 1 << _LUT_BITS, n)]
        p_err = np.full(n, self.base_rate)
        kind = np.zeros(n, dtype=np.int8)
        if len(self.class_bounds):
            cls = np.searchsorted(self.class_bounds, rng.random(n), side="right")
            bad_ip = cls < self.n_bad_ips
            bad_url = (cls >= self.n_bad_ips) & (cls < self.n_bad)
            ip[bad_ip] = self.first_bad_ip + cls[bad_ip]
            url[bad_url] = self.first_bad_url + (cls[bad_url] - self.n_bad_ips)
            p_err[bad_ip] = cfg.ip_error_rate
            p_err[bad_url] = cfg.url_error_rate
            kind[bad_ip] = CLIENT_BAD
            kind[bad_url] = SERVER_BAD
            if cfg.crawlers:
                crawler = (cls >= self.n_bad) & (cls < len(self.class_bounds))
                ip[crawler] = self.first_crawler_ip + (cls[crawler] - self.n_bad)
                url[crawler] = rng.integers(0, len(self.normal_urls), int(crawler.sum()))  # they walk the site
                p_err[crawler] = cfg.crawler_error_rate
                kind[crawler] = CRAWLER
        for u, rate in self.chronic.items():
            m = (url == u) & (kind == NORMAL)
            p_err[m] = rate
            kind[m] = CHRONIC
        if cfg.day_night:
            human = (kind == NORMAL) | (kind == CHRONIC)
            keep = rng.random(n) < np.where(human, self._day_night(np.asarray(times_us)), 1 / cfg.slot_factor)
            times_us, ip, url, p_err, kind = (a[keep] for a in (np.asarray(times_us), ip, url, p_err, kind))
            n = len(times_us)
        if self.incidents:
            times_us, ip, url, p_err, kind = self._apply_incidents(times_us, ip, url, p_err, kind, span)
            n = len(times_us)
        variant = rng.integers(0, VARIANTS_PER_URL, n)
        req = url * VARIANTS_PER_URL + variant
        err = rng.random(n) < p_err
        u = rng.integers(0, 1 << _LUT_BITS, n)
        code = self.success_lut[u]
        if err.any():
            e = self.error_luts[0][u]
            if kind.any():
                e = np.where(kind == CLIENT_BAD, self.error_luts[1][u], e)
                e = np.where(kind == SERVER_BAD, self.error_luts[2][u], e)
                if cfg.crawlers or self.chronic:
                    e = np.where(kind == CRAWLER, self.error_luts[3][u], e)
                    e = np.where(kind == CHRONIC, self.error_luts[4][u], e)
            code = np.where(err, e, code)
        sb = code * SIZES_PER_STATUS + rng.integers(0, SIZES_PER_STATUS, n)
        ref = self.ref_lut[rng.integers(0, 1 << _LUT_BITS, n)]
        ru = ref * len(self.user_agents) + self.ip_ua[ip]
        return Chunk(self, np.asarray(times_us, dtype=np.int64), ip, req, sb, ru)

    def _apply_incidents(self, t, ip, url, p_err, kind, span):
        rng = self.rng
        parts = [(t, ip, url, p_err, kind)]
        lo, hi = span
        for k, inc in enumerate(self.incidents):
            a, b = max(lo, inc.start_us), min(hi, inc.end_us)
            if a >= b:
                continue
            in_window = (t >= inc.start_us) & (t < inc.end_us)
            if inc.kind == "error_spike":
                m = in_window & (kind == 0)
                p_err[m] = inc.error_rate
            elif inc.kind == "url_outage":
                m = in_window & (url == self.url_index[inc.entity])
                p_err[m] = inc.error_rate
                kind[m] = SERVER_BAD
            extra_rate = inc.rate
            if inc.kind == "error_spike" or not extra_rate:
                continue
            self._carry[k] += extra_rate * (b - a) / US
            m = int(self._carry[k])
            self._carry[k] -= m
            if m == 0:
                continue
            et = np.sort(rng.integers(a, b, m)).astype(np.int64)
            eip = self.ip_lut[rng.integers(0, 1 << _LUT_BITS, m)]
            eurl = self.url_lut[rng.integers(0, 1 << _LUT_BITS, m)]
            ep = np.full(m, self.base_rate)
            ek = np.zeros(m, dtype=np.int8)
            if inc.kind == "ip_flood":
                eip[:] = self.ip_index[inc.entity]
                ep[:] = inc.error_rate
                ek[:] = CLIENT_BAD
            elif inc.kind == "url_outage":
                eurl[:] = self.url_index[inc.entity]
                ep[:] = inc.error_rate
                ek[:] = SERVER_BAD
            parts.append((et, eip, eurl, ep, ek))
        if len(parts) == 1:
            return t, ip, url, p_err, kind
        cols = [np.concatenate(c) for c in zip(*parts)]
        order = np.argsort(cols[0], kind="stable")
        return tuple(c[order] for c in cols)

    # ------------------------------------------------------------------ time strings
    def _second_prefix(self, sec: int) -> str:
        s = self._ts_cache.get(sec)
        if s is None:
            if len(self._ts_cache) > 4096:
                self._ts_cache.clear()
            t = _dt.datetime.fromtimestamp(sec, UTC)
            if self.fmt == "combined":
                s = f'{lf.clf_time(t)}] "'
            elif self.fmt == "json":
                s = '{"timestamp": "' + lf.iso_utc(t)[:20]
            else:
                s = lf.iso_utc(t)[:20]
            self._ts_cache[sec] = s
        return s


@dataclass
class Chunk:
    """A batch of generated lines, as index arrays into the model's pools."""

    model: TrafficModel
    times_us: np.ndarray
    ip: np.ndarray
    req: np.ndarray
    sb: np.ndarray
    ru: np.ndarray

    def __len__(self) -> int:
        return len(self.times_us)

    def head(self, n: int) -> Chunk:
        return Chunk(self.model, self.times_us[:n], self.ip[:n], self.req[:n], self.sb[:n], self.ru[:n])

    def render(self) -> list[str]:
        """The formatted lines (no newline), in the model's format."""
        m = self.model
        if not len(self):
            return []
        ipf, req, sb, ru = m.fragments
        secs = self.times_us // US
        change = np.flatnonzero(np.diff(secs)) + 1
        starts = np.concatenate(([0], change))
        prefixes = np.array([m._second_prefix(int(secs[i])) for i in starts], dtype=object)
        run_id = np.zeros(len(secs), dtype=np.int64)
        run_id[change] = 1
        ts = prefixes[np.cumsum(run_id)].tolist()
        A, R, S, U = ipf[self.ip].tolist(), req[self.req].tolist(), sb[self.sb].tolist(), ru[self.ru].tolist()
        if m.fmt == "combined":
            return [f"{a}{t}{r}{s}{u}" for a, t, r, s, u in zip(A, ts, R, S, U)]
        frac = self.times_us % US
        ms, us = m._frac3[frac // 1000].tolist(), m._frac3[frac % 1000].tolist()
        # JSON and CSV: "<...seconds.>" + milliseconds + microseconds + 'Z...ip...' + the rest
        return [f"{t}{x}{y}{a}{r}{s}{u}" for t, x, y, a, r, s, u in zip(ts, ms, us, A, R, S, U)]

    def keys(self) -> list[str]:
        """The client IP of every line (the Kafka key)."""
        return self.model.keys[self.ip].tolist()

    def statuses(self) -> np.ndarray:
        return self.model.codes[self.sb // SIZES_PER_STATUS]

    def events(self) -> list[lf.Event]:
        """The events the lines stand for (event_time at the format's precision)."""
        m = self.model
        out = []
        nua = len(m.user_agents)
        for t, i, r, s, q in zip(self.times_us.tolist(), self.ip.tolist(), self.req.tolist(),
                                 self.sb.tolist(), self.ru.tolist()):
            if m.fmt == "combined":
                t -= t % US
            method, url, query, proto = m.requests[r]
            status, size = m.status_sizes[s]
            out.append(lf.Event(
                _dt.datetime.fromtimestamp(t // US, UTC).replace(microsecond=t % US),
                m.ips[i], method, url, query, proto, int(status), size,
                m.referrers[q // nua], m.user_agents[q % nua]))
        return out
