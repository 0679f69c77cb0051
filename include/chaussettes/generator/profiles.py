"""Traffic presets for ``--profile NAME``: defaults for the traffic flags (used unless a
flag is given) and the model's optional parts (``traffic.TrafficConfig``), which have no
flags of their own. A plain dict, so that ``--help`` needs no numpy."""

# small-site: a few lines per second (3 on average, about 7 at 14:00 UTC and 0.5 at 02:00
# for the humans), thousands of clients of whom most send a handful of requests a day,
# eight crawlers (15% of the lines) with 8% 404s, a /login answering 40% 401s, 4% errors
# in all — the traffic where most keys have a few requests per window.
PROFILES = {
    "small-site": {
        "rate": 3.0, "ips": 3000, "urls": 300, "error_rate": 0.04,
        "crawlers": 8, "crawler_share": 0.15, "crawler_error_rate": 0.08,
        "chronic_urls": {"/login": 0.4}, "day_night": 0.8, "peak_hour": 14.0,
    },
}
PROFILE_MODEL_FIELDS = ("crawlers", "crawler_share", "crawler_error_rate", "chronic_urls", "day_night", "peak_hour")
