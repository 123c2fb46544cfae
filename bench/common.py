"""Pure. A seeded workload shared by the benches: LaunchDarkly segments and the contexts they target.

`make_segments(n, seed)` returns N segments in LaunchDarkly's JSON using every operator (`in` with several
values, string, regex, numeric, date with RFC 3339 and epoch-millisecond values, semver, negated clauses,
`contextKind: organization` clauses, nested attribute paths, the `kind` attribute, included/excluded keys and
contexts, weighted rules with a salt, `segmentMatch` to earlier segments only, so never a cycle).
`make_contexts(m, seed)` returns M contexts: mostly users, a quarter multi-kind user + organization, a few
organizations alone, with the attributes those rules read (some missing, null, mistyped or malformed, as
real data is). Each rule's match rate is estimated from the generator's own distributions and segments are
redrawn until the estimate lies in 5-40%. The same seed always gives the same JSON: randomness comes only
from `random.Random` seeded with strings, which does not depend on `PYTHONHASHSEED`.

Also the benches' small shared helpers: `percentile`, `free_port` (a local TCP port nobody listens on) and
`scratch_postgres` (a throwaway PostgreSQL database for one run).
"""

from __future__ import annotations

import math
import random
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

__all__ = ["free_port", "make_contexts", "make_segments", "mutate_context", "percentile", "scratch_postgres"]


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def free_port() -> int:
    """A local TCP port free right now (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def scratch_postgres(admin_url: str) -> Iterator[str]:
    """A fresh database on the server for this run, dropped at the end whatever happens."""
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


Json = dict[str, Any]
Draw = tuple[Json, float]  # a clause and the estimated share of all contexts it matches

# Shares of all contexts: users 70%, multi user+organization 25%, organization alone 5%.
_P_USER = 0.95
_P_ORG = 0.30
_ORG_COUNT = 2000

_COUNTRIES = {
    "US": 0.30,
    "GB": 0.10,
    "DE": 0.10,
    "FR": 0.08,
    "CA": 0.07,
    "IN": 0.10,
    "BR": 0.07,
    "JP": 0.05,
    "AU": 0.04,
    "ES": 0.03,
    "NL": 0.03,
    "SE": 0.03,
}
_REGION = {
    "US": "na",
    "CA": "na",
    "GB": "emea",
    "DE": "emea",
    "FR": "emea",
    "ES": "emea",
    "NL": "emea",
    "SE": "emea",
    "IN": "apac",
    "JP": "apac",
    "AU": "apac",
    "BR": "latam",
}
_CITIES = {
    "US": ["New York", "San Francisco", "Austin", "Chicago", "Seattle"],
    "GB": ["London", "Leeds"],
    "DE": ["Berlin", "Munich", "Hamburg"],
    "FR": ["Paris", "Lyon"],
    "CA": ["Toronto", "Montreal"],
    "IN": ["Bengaluru", "Mumbai", "Pune"],
    "BR": ["Sao Paulo", "Rio de Janeiro"],
    "JP": ["Tokyo"],
    "AU": ["Sydney", "Melbourne"],
    "ES": ["Madrid"],
    "NL": ["Amsterdam"],
    "SE": ["Stockholm"],
}
_LANGUAGES = {
    "US": "en-US",
    "GB": "en-GB",
    "DE": "de-DE",
    "FR": "fr-FR",
    "CA": "en-CA",
    "IN": "en-IN",
    "BR": "pt-BR",
    "JP": "ja-JP",
    "AU": "en-AU",
    "ES": "es-ES",
    "NL": "nl-NL",
    "SE": "sv-SE",
}
_PLANS = {"free": 0.50, "starter": 0.25, "pro": 0.17, "enterprise": 0.08}
_DOMAINS = {
    "gmail.com": 0.35,
    "yahoo.com": 0.10,
    "outlook.com": 0.10,
    "hotmail.com": 0.05,
    "acme.io": 0.10,
    "globex.com": 0.10,
    "initech.com": 0.10,
    "example.org": 0.10,
}
_REFERRERS = {
    "https://www.google.com/search?q=segments": 0.30,
    "https://www.google.co.uk/": 0.05,
    "https://twitter.com/acme/status/1790": 0.10,
    "https://news.ycombinator.com/item?id=4211": 0.05,
    "https://www.linkedin.com/feed/": 0.10,
    "https://acme.io/blog/launch-week": 0.15,
    "": 0.25,
}
_OS = {"ios": 0.30, "android": 0.30, "web": 0.25, "macos": 0.10, "windows": 0.05}
_TAGS = {
    "beta": 0.15,
    "newsletter": 0.40,
    "vip": 0.08,
    "churn-risk": 0.12,
    "mobile": 0.35,
    "trial": 0.20,
    "webinar": 0.10,
    "partner": 0.05,
}
_FIRST = [
    "ana",
    "ben",
    "chloe",
    "dev",
    "emma",
    "farid",
    "grace",
    "hiro",
    "ines",
    "jon",
    "kofi",
    "lena",
    "mateo",
    "nina",
    "omar",
    "priya",
    "quinn",
    "rosa",
    "sam",
    "tariq",
    "uma",
    "viktor",
    "wen",
    "yara",
]
_LAST = [
    "smith",
    "garcia",
    "muller",
    "martin",
    "rossi",
    "tanaka",
    "khan",
    "silva",
    "nguyen",
    "cohen",
    "okafor",
    "novak",
    "berg",
    "dubois",
    "kim",
    "patel",
]
_TIERS = {"gold": 0.15, "silver": 0.35, "bronze": 0.50}
_INDUSTRIES = {"saas": 0.30, "retail": 0.20, "finance": 0.15, "health": 0.15, "education": 0.10, "gov": 0.10}
_ORG_PLANS = {"team": 0.50, "business": 0.35, "enterprise": 0.15}

# Present-attribute shares among users (the rest lack the attribute).
_P_AGE = 0.90
_P_PHONE = 0.70
_P_APP = 0.85
_P_BETA = 0.15

_MS = 1000
_SIGNUP_FROM = int(datetime(2019, 1, 1, tzinfo=UTC).timestamp() * _MS)
_SIGNUP_TO = int(datetime(2025, 7, 1, tzinfo=UTC).timestamp() * _MS)
_SEEN_FROM = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * _MS)
_SEEN_TO = int(datetime(2025, 7, 1, tzinfo=UTC).timestamp() * _MS)
_ORG_FROM = int(datetime(2012, 1, 1, tzinfo=UTC).timestamp() * _MS)
_ORG_TO = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * _MS)

# appVersion: users cluster on recent releases (share of users with a version, newest first); a few run a
# beta of the next one, and 3% carry something that is not a version at all.
_RELEASES = {
    "5.5.0-beta.2": 0.05,
    "5.4.1": 0.21,
    "5.4.0": 0.13,
    "5.3.2": 0.10,
    "5.3.0": 0.08,
    "5.2.0": 0.07,
    "5.1.1": 0.06,
    "5.0.0": 0.05,
    "4.12.3": 0.05,
    "4.11.0": 0.04,
    "4.10.2": 0.035,
    "4.8.0": 0.03,
    "4.5.1": 0.025,
    "4.0.0": 0.02,
    "3.9.4": 0.02,
    "3.2.0": 0.015,
    "2.7.1": 0.01,
    "2.0.0": 0.01,
    "1.4.0": 0.005,
}
_P_SEMVER_INVALID = 0.03


def _version_key(text: str) -> tuple[int, ...]:
    """Orders the release table: a beta sorts just below its release (enough for clause bounds here)."""
    core, _, pre = text.partition("-")
    major, minor, patch = (int(part) for part in core.split("."))
    return (major, minor, patch, 0 if pre else 1)


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _some(rng: random.Random, weights: dict[str, float], low: int, high: int) -> tuple[list[str], float]:
    """A few distinct values of a categorical attribute and their combined share."""
    values = rng.sample(list(weights), rng.randint(low, high))
    return values, sum(weights[v] for v in values)


def _rfc3339(ms: int, rng: random.Random) -> str:
    """A timestamp as RFC 3339, in UTC or with an offset, sometimes with fractional seconds."""
    moment = datetime.fromtimestamp(ms / _MS, UTC)
    if rng.random() < 0.3:
        offset = timedelta(hours=rng.choice([-8, -5, 1, 2, 5.5, 9]))
        local = moment.astimezone(timezone(offset))
        return local.isoformat(timespec="milliseconds")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _time_value(ms: int, rng: random.Random) -> str | int:
    """A date as clause or context data carries it: RFC 3339 text or epoch milliseconds."""
    return ms if rng.random() < 0.35 else _rfc3339(ms, rng)


# ---- contexts ------------------------------------------------------------------------------------------


def _org(seed: int, n: int) -> Json:
    rng = random.Random(f"{seed}:org:{n}")
    key = f"org-{n:05d}" if n % 50 else f"org:{n:05d}/eu"  # a few keys that need escaping in fq keys
    country = _pick(rng, _COUNTRIES)
    employees = int(rng.lognormvariate(4.0, 1.5)) + 1
    org: Json = {
        "kind": "organization",
        "key": key,
        "name": f"{rng.choice(_LAST).title()} {rng.choice(['Labs', 'Inc', 'GmbH', 'Ltd', 'Group'])}",
        "tier": _pick(rng, _TIERS),
        "industry": _pick(rng, _INDUSTRIES),
        "employees": employees,
        "region": _REGION[country],
        "createdAt": _time_value(rng.randint(_ORG_FROM, _ORG_TO), rng),
        "billing": {"plan": _pick(rng, _ORG_PLANS), "seats": max(1, employees // rng.randint(1, 4))},
    }
    if rng.random() < 0.5:
        org["domains"] = [f"{org['name'].split()[0].lower()}.com"]
    return org


def _app_version(rng: random.Random) -> Any:
    roll = rng.random()
    version = _pick(rng, _RELEASES)
    if roll < _P_SEMVER_INVALID:
        major, minor, _ = version.partition("-")[0].split(".")
        return f"v{major}.{minor}" if roll < 0.02 else int(major) * 100 + int(minor)  # never a version
    if version.endswith(".0") and roll < 0.2:
        return version[:-2]  # "5.3" for 5.3.0: LaunchDarkly pads a missing patch
    return version


def _user(rng: random.Random, n: int) -> Json:
    country = _pick(rng, _COUNTRIES)
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    suffix = str(rng.randint(1, 999)) if rng.random() < 0.5 else ""
    plus = "+news" if rng.random() < 0.1 else ""
    user: Json = {
        "kind": "user",
        "key": f"user-{n:06d}",
        "name": f"{first.title()} {last.title()}",
        "email": f"{first}.{last}{suffix}{plus}@{_pick(rng, _DOMAINS)}",
        "country": country,
        "language": _LANGUAGES[country],
        "plan": _pick(rng, _PLANS),
        "referrer": _pick(rng, _REFERRERS),
        "ltv": round(rng.expovariate(1 / 300), 2),
        "sessions": int(rng.expovariate(1 / 20)),
        "signupDate": _time_value(rng.randint(_SIGNUP_FROM, _SIGNUP_TO), rng),
        "lastSeen": rng.randint(_SEEN_FROM, _SEEN_TO),
        "tags": [t for t, p in _TAGS.items() if rng.random() < p],
        "address": {
            "city": rng.choice(_CITIES[country]),
            "postalCode": f"{rng.randint(1000, 99999)}",
            "geo": {"region": _REGION[country], "country": country},
        },
        "device": {
            "os": _pick(rng, _OS),
            "model": rng.choice(["pixel-8", "iphone-15", "sm-s918", "browser"]),
        },
    }
    if rng.random() < _P_AGE:
        user["age"] = rng.randint(18, 75) if rng.random() < 0.97 else str(rng.randint(18, 75))
    if rng.random() < _P_PHONE:
        prefix = {"US": "+1", "CA": "+1", "GB": "+44", "DE": "+49", "FR": "+33", "IN": "+91"}.get(
            country, "+34"
        )
        user["phone"] = (
            f"{prefix} ({rng.randint(200, 999)}) {rng.randint(100, 999)}-{rng.randint(1000, 9999)}"
        )
    elif rng.random() < 0.2:
        user["phone"] = None  # null means absent
    if rng.random() < _P_APP:
        user["appVersion"] = _app_version(rng)
    if rng.random() < _P_BETA:
        user["beta"] = True
    elif rng.random() < 0.3:
        user["beta"] = False
    if rng.random() < 0.05:
        user["anonymous"] = True
    return user


def make_contexts(m: int, seed: int = 1) -> list[Json]:
    """M contexts in LaunchDarkly's JSON, each with its own fully-qualified key: users `user-000000`..;
    the 2,000 organizations of multi-kind contexts are shared by many users."""
    orgs = [_org(seed, n) for n in range(_ORG_COUNT)]
    rng = random.Random(f"{seed}:contexts")
    out: list[Json] = []
    for n in range(m):
        roll = rng.random()
        if roll < 0.05:
            out.append(_org(seed, _ORG_COUNT + n))  # an organization on its own, one of many
            continue
        user = _user(rng, n)
        if roll < 0.30:
            org = dict(rng.choice(orgs))
            del org["kind"], user["kind"]
            out.append({"kind": "multi", "user": user, "organization": org})
        else:
            out.append(user)
    return out


def mutate_context(context: Json, rng: random.Random) -> Json:
    """The same contact after an ordinary change: a new plan, spend, visit time or app version."""
    changed = {k: (dict(v) if isinstance(v, dict) else v) for k, v in context.items()}
    user = changed.get("user", changed) if changed.get("kind") == "multi" else changed
    if user.get("kind") == "organization":
        user["employees"] = int(user["employees"]) + rng.randint(-5, 20)
        return changed
    field = rng.choice(["plan", "ltv", "lastSeen", "appVersion", "country"])
    if field == "plan":
        user["plan"] = _pick(rng, _PLANS)
    elif field == "ltv":
        user["ltv"] = round(float(user.get("ltv", 0)) + rng.expovariate(1 / 100), 2)
    elif field == "lastSeen":
        user["lastSeen"] = rng.randint(_SEEN_FROM, _SEEN_TO)
    elif field == "appVersion":
        user["appVersion"] = _app_version(rng)
    else:
        user["country"] = _pick(rng, _COUNTRIES)
    return changed


# ---- clauses: each returns the clause JSON and the share of all contexts it matches ------------------


def _user_clause(
    attribute: str, op: str, values: list[Any], p: float, *, negate: bool = False, nested: bool = False
) -> Draw:
    clause: Json = {"attribute": attribute, "op": op, "values": values}
    if negate:
        clause["negate"] = True
    if nested:
        clause["contextKind"] = "user"
    return clause, p * _P_USER


def _org_clause(attribute: str, op: str, values: list[Any], p: float, *, negate: bool = False) -> Draw:
    clause: Json = {"contextKind": "organization", "attribute": attribute, "op": op, "values": values}
    if negate:
        clause["negate"] = True
    return clause, p * _P_ORG


def _in_country(rng: random.Random) -> Draw:
    values, p = _some(rng, _COUNTRIES, 2, 5)
    return _user_clause("country", "in", values, p)


def _not_plan(rng: random.Random) -> Draw:
    values, p = _some(rng, _PLANS, 1, 2)
    return _user_clause("plan", "in", values, 1 - p, negate=True)


def _in_plan(rng: random.Random) -> Draw:
    values, p = _some(rng, _PLANS, 1, 3)
    return _user_clause("plan", "in", values, p)


def _ends_with(rng: random.Random) -> Draw:
    domains, p = _some(rng, _DOMAINS, 1, 3)
    return _user_clause("email", "endsWith", ["@" + d for d in domains], p)


def _starts_with(rng: random.Random) -> Draw:
    if rng.random() < 0.5:
        return _user_clause("referrer", "startsWith", ["https://www.google.", "https://twitter.com/"], 0.45)
    return _user_clause("language", "startsWith", ["en-"], 0.72)


def _contains(rng: random.Random) -> Draw:
    if rng.random() < 0.5:
        return _user_clause("referrer", "contains", ["google", "linkedin"], 0.45)
    return _user_clause("email", "contains", ["+news", ".kim", ".patel"], 0.1 + 2 / len(_LAST))


def _matches(rng: random.Random) -> Draw:
    if rng.random() < 0.5:
        return _user_clause("phone", "matches", [r"^\+1 \([2-9]\d\d\)"], _P_PHONE * 0.37)
    pattern = r"^[a-z]+\.[a-z]+@(acme\.io|globex\.com|initech\.com)$"
    return _user_clause("email", "matches", [pattern], 0.9 * 0.5 * 0.30)


def _age_below(rng: random.Random, op: str) -> Draw:
    bound = rng.randint(25, 60)
    below = (bound - 17 if op == "lessThanOrEqual" else bound - 18) / 58
    return _user_clause("age", op, [bound], _P_AGE * 0.97 * below)


def _age_above(rng: random.Random, op: str) -> Draw:
    bound = rng.randint(25, 60)
    above = (75 - bound + (1 if op == "greaterThanOrEqual" else 0)) / 58
    return _user_clause("age", op, [bound], _P_AGE * 0.97 * above)


def _young(rng: random.Random) -> Draw:
    return _age_below(rng, "lessThan")


def _young_or(rng: random.Random) -> Draw:
    return _age_below(rng, "lessThanOrEqual")


def _old(rng: random.Random) -> Draw:
    return _age_above(rng, "greaterThan")


def _spend(rng: random.Random) -> Draw:
    if rng.random() < 0.5:
        bound = rng.choice([100, 250, 500, 1000])
        return _user_clause("ltv", "greaterThan", [bound, bound * 2], math.exp(-bound / 300))
    bound = rng.choice([5, 10, 20, 40])
    return _user_clause("sessions", "greaterThanOrEqual", [float(bound)], math.exp(-bound / 20))


def _signup(rng: random.Random) -> Draw:
    ms = rng.randint(_SIGNUP_FROM, _SIGNUP_TO)
    share = (ms - _SIGNUP_FROM) / (_SIGNUP_TO - _SIGNUP_FROM)
    return _user_clause("signupDate", "before", [_time_value(ms, rng)], share)


def _last_seen(rng: random.Random) -> Draw:
    ms = rng.randint(_SEEN_FROM, _SEEN_TO)
    share = (_SEEN_TO - ms) / (_SEEN_TO - _SEEN_FROM)
    return _user_clause("lastSeen", "after", [_time_value(ms, rng)], share)


_P_SEMVER = _P_APP * (1 - _P_SEMVER_INVALID)  # users whose appVersion parses as a version
_BOUNDS = [v for v in _RELEASES if "-" not in v][1:12]


def _semver_share(keep: Callable[[tuple[int, ...]], bool]) -> float:
    return _P_SEMVER * sum(share for v, share in _RELEASES.items() if keep(_version_key(v)))


def _semver_less(rng: random.Random) -> Draw:
    bound = rng.choice(_BOUNDS)
    p = _semver_share(lambda key: key < _version_key(bound))
    return _user_clause("appVersion", "semVerLessThan", [bound], p)


def _semver_greater(rng: random.Random) -> Draw:
    bound = rng.choice(_BOUNDS)
    p = _semver_share(lambda key: key > _version_key(bound))
    return _user_clause("appVersion", "semVerGreaterThan", [bound.removesuffix(".0")], p)


def _semver_equal(rng: random.Random) -> Draw:
    versions = rng.sample([v for v in _RELEASES if "-" not in v][:6], rng.randint(1, 3))
    p = _semver_share(lambda key: key in {_version_key(v) for v in versions})
    return _user_clause("appVersion", "semVerEqual", versions, p)


def _region(rng: random.Random) -> Draw:
    regions = rng.sample(["na", "emea", "apac", "latam"], rng.randint(1, 2))
    p = sum(w for c, w in _COUNTRIES.items() if _REGION[c] in regions)
    return _user_clause("/address/geo/region", "in", regions, p, nested=True)


def _device(rng: random.Random) -> Draw:
    values, p = _some(rng, _OS, 1, 2)
    negate = rng.random() < 0.3
    return _user_clause("/device/os", "in", values, 1 - p if negate else p, negate=negate, nested=True)


def _tags(rng: random.Random) -> Draw:
    values = rng.sample(list(_TAGS), rng.randint(1, 2))
    miss = 1.0
    for v in values:
        miss *= 1 - _TAGS[v]
    return _user_clause("tags", "in", values, 1 - miss)


def _beta(rng: random.Random) -> Draw:
    return _user_clause("beta", "in", [True], _P_BETA)


def _kind(rng: random.Random) -> Draw:
    clause: Json = {"attribute": "kind", "op": "in", "values": ["organization"]}
    return clause, _P_ORG


def _tier(rng: random.Random) -> Draw:
    values, p = _some(rng, _TIERS, 1, 2)
    return _org_clause("tier", "in", values, p)


def _employees(rng: random.Random) -> Draw:
    bound = rng.choice([20, 50, 200])
    share = {20: 0.6, 50: 0.45, 200: 0.2}[bound]
    return _org_clause("employees", "greaterThan", [bound], share)


def _seats(rng: random.Random) -> Draw:
    bound = rng.choice([10, 25, 100])
    return _org_clause("/billing/seats", "greaterThanOrEqual", [bound], {10: 0.5, 25: 0.35, 100: 0.15}[bound])


def _org_age(rng: random.Random) -> Draw:
    ms = rng.randint(_ORG_FROM, _ORG_TO)
    return _org_clause(
        "createdAt", "before", [_time_value(ms, rng)], (ms - _ORG_FROM) / (_ORG_TO - _ORG_FROM)
    )


def _not_industry(rng: random.Random) -> Draw:
    values, p = _some(rng, _INDUSTRIES, 1, 2)
    return _org_clause("industry", "in", values, 1 - p, negate=True)


def _org_plan(rng: random.Random) -> Draw:
    values, p = _some(rng, _ORG_PLANS, 1, 2)
    return _org_clause("/billing/plan", "in", values, p)


# User clauses first (the `segmentMatch` rule draws its second clause among them), then organization ones.
_CLAUSES: list[Callable[[random.Random], Draw]] = [
    _in_country,
    _not_plan,
    _in_plan,
    _ends_with,
    _starts_with,
    _contains,
    _matches,
    _young,
    _young_or,
    _old,
    _spend,
    _signup,
    _last_seen,
    _semver_less,
    _semver_greater,
    _semver_equal,
    _region,
    _device,
    _tags,
    _beta,
    _kind,
    _tier,
    _employees,
    _seats,
    _org_age,
    _not_industry,
    _org_plan,
]
_USER_CLAUSES = _CLAUSES[:20]
_ATTRIBUTE = {
    _in_country: "country",
    _region: "country",
    _starts_with: "country",
    _matches: "country",
    _young: "age",
    _young_or: "age",
    _old: "age",
    _semver_less: "appVersion",
    _semver_greater: "appVersion",
    _semver_equal: "appVersion",
    _in_plan: "plan",
    _not_plan: "plan",
}
_ORG_CLAUSES = {_kind, _tier, _employees, _seats, _org_age, _not_industry, _org_plan}


def _rule(rng: random.Random, first: Callable[[random.Random], Draw] | None) -> tuple[Json, float, set[str]]:
    makers = [first or rng.choice(_CLAUSES)]
    for _ in range(rng.choice([0, 0, 1, 1, 2])):
        # One clause per attribute, so a rule never reads `age > 46 and age < 25`.
        taken = {_ATTRIBUTE.get(m, m.__name__) for m in makers}
        makers.append(rng.choice([m for m in _CLAUSES if _ATTRIBUTE.get(m, m.__name__) not in taken]))
    clauses: list[Json] = []
    # Shares conditional on the kind being present; a rule reading both kinds needs a multi-kind context.
    given = {"user": 1.0, "org": 1.0}
    kinds: set[str] = set()
    for maker in makers:
        clause, share = maker(rng)
        kind = "org" if maker in _ORG_CLAUSES else "user"
        kinds.add(kind)
        given[kind] *= share / (_P_ORG if kind == "org" else _P_USER)
        clauses.append(clause)
    if kinds == {"user"}:
        p = _P_USER * given["user"]
    elif kinds == {"org"}:
        p = _P_ORG * given["org"]
    else:
        p = (_P_USER + _P_ORG - 1) * given["user"] * given["org"]
    return {"clauses": clauses}, p, kinds


def _draw_segment(
    rng: random.Random, index: int, population: int, earlier: list[tuple[str, float]]
) -> tuple[Json, float]:
    key = f"seg-{index:03d}-{rng.choice(['vip', 'eu', 'trial', 'mobile', 'churn', 'growth', 'ops', 'beta'])}"
    rules: list[Json] = []
    miss = 1.0
    for r_index in range(rng.choice([1, 1, 2, 2, 3])):
        first = _CLAUSES[(index + 7 * r_index) % len(_CLAUSES)] if r_index == 0 else None
        rule, p, kinds = _rule(rng, first)
        if rng.random() < 0.15:
            weight = rng.choice([10000, 25000, 50000, 75000])
            rule["weight"] = weight
            if kinds == {"org"}:
                rule["rolloutContextKind"] = "organization"
            elif rng.random() < 0.4:
                rule["bucketBy"] = "email"
            p *= weight / 100000
        rule["id"] = f"{key}-r{r_index}"
        rules.append(rule)
        miss *= 1 - p
    if earlier and index >= 8 and rng.random() < 0.25:
        refs = rng.sample(earlier, min(len(earlier), rng.choice([1, 1, 2])))
        ref_miss = 1.0
        for _, share in refs:
            ref_miss *= 1 - share
        extra, p_extra = rng.choice(_USER_CLAUSES)(rng)
        clause = {"attribute": "", "op": "segmentMatch", "values": [k for k, _ in refs]}
        rules.append({"id": f"{key}-ref", "clauses": [clause, extra]})
        miss *= 1 - (1 - ref_miss) * p_extra / _P_USER
    p_rules = 1 - miss
    segment: Json = {
        "key": key,
        "name": key.replace("-", " ").title(),
        "version": rng.randint(1, 40),
        "salt": f"{rng.getrandbits(64):016x}",
        "included": [f"user-{rng.randrange(population):06d}" for _ in range(rng.choice([0, 0, 3, 10]))],
        "excluded": [f"user-{rng.randrange(population):06d}" for _ in range(rng.choice([0, 2, 5]))],
        "rules": rules,
        "deleted": False,
    }
    if rng.random() < 0.3:
        segment["includedContexts"] = [
            {
                "contextKind": "organization",
                "values": [f"org-{rng.randrange(1, _ORG_COUNT):05d}" for _ in range(3)],
            }
        ]
    if rng.random() < 0.2:
        segment["excludedContexts"] = [
            {
                "contextKind": "organization",
                "values": [f"org-{rng.randrange(1, _ORG_COUNT):05d}" for _ in range(2)],
            }
        ]
    return segment, p_rules


def make_segments(n: int, seed: int = 1, population: int = 20000) -> list[Json]:
    """N segments whose estimated membership is 5-40% each; `segmentMatch` only refers to earlier ones, so
    every prefix of the list is a closed set. Target keys are drawn from the first `population` users."""
    rng = random.Random(f"{seed}:segments")
    out: list[Json] = []
    earlier: list[tuple[str, float]] = []
    for index in range(n):
        for _ in range(200):
            segment, p = _draw_segment(rng, index, population, earlier)
            if 0.07 <= p <= 0.33:  # margin: the estimate ignores correlations
                break
        out.append(segment)
        earlier.append((segment["key"], p))
    return out
