"""No secret in the repository: no private key, no key store, no .env, no token, no password
written in code, DAG files or configuration. Scans what git would commit (tracked files and
untracked files that .gitignore does not exclude)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PRIVATE_KEY = re.compile(r"-{5}BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-{5}")
TOKENS = {
    "AWS access key": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
}
# name = "literal" / "name": "literal" / NAME=literal, for secret-looking names; not ${NAME}.
ASSIGNED = re.compile(
    r"""(?ix)(?<![${\w])([a-z0-9_]*(?:password|passwd|secret|token|api_key|fernet_key)[a-z0-9_]*)
        ["']?[ \t]*[:=][ \t]*(["']?)([^"'\s,)}]{6,})""")
CREDENTIAL_URI = re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@${}]+:([^@\s/${}]+)@")
SECRET_FILES = re.compile(r"(^|/)(\.env|.*\.(pem|key|p12|pfx|jks|keystore|crt))$")
PLACEHOLDERS = {"change_me", "changeme", "xxxxxx", "redacted", "<secret>", "none", "null", "true",
                "false"}
# Where literal secrets can legitimately not appear at all (tests hold throwaway values).
CODE_DIRS = ("include/", "dags/", "jobs/", "plugins/", "docker/", "bench/", "scripts/")


def committable_files() -> list[Path]:
    result = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [REPO / p for p in sorted(set(result.stdout.split("\0"))) if p and (REPO / p).is_file()]


def _text(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if b"\0" in data[:4096] or len(data) > 2_000_000:
        return None
    return data.decode("utf-8", errors="replace")


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    out = {}
    for path in committable_files():
        text = _text(path)
        if text is not None:
            out[path.relative_to(REPO).as_posix()] = text
    assert out, "no file to scan"
    return out


def test_the_generated_secrets_are_gitignored():
    ignored = subprocess.run(["git", "check-ignore", ".env", "var/run/tls/ca.key",
                              "var/run/secrets/spark_auth_secret"],
                             cwd=REPO, check=False, capture_output=True, text=True, timeout=30)
    assert ignored.stdout.split() == [".env", "var/run/tls/ca.key", "var/run/secrets/spark_auth_secret"]


def test_no_secret_file_would_be_committed():
    names = [p.relative_to(REPO).as_posix() for p in committable_files()]
    assert [n for n in names if SECRET_FILES.search(n)] == []


def test_no_private_key_or_token_in_any_file(files):
    found = []
    for name, text in files.items():
        if PRIVATE_KEY.search(text):
            found.append(f"{name}: private key")
        for what, pattern in TOKENS.items():
            if pattern.search(text):
                found.append(f"{name}: {what}")
    assert found == []


def _is_literal_secret(value: str, quoted: bool = True, python: bool = False) -> bool:
    v = value.strip().strip("\"'")
    if v.lower() in PLACEHOLDERS or v.startswith(("$", "{", "<", "?", "-", "%")):
        return False
    if not quoted:
        # Unquoted in Python is an expression (a name, a call); elsewhere (shell, YAML, .env)
        # it is a value, unless it is an expression (Python embedded in a shell heredoc).
        return not python and not re.search(r"[(\[]", v)
    return True


def test_no_password_or_secret_is_written_in_code_dags_or_config(files):
    found = []
    for name, text in files.items():
        if not (name.startswith(CODE_DIRS) or name.endswith((".yaml", ".yml", ".cfg", ".ini", ".toml",
                                                             ".example", "Makefile"))):
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith(("#", "//")):
                continue
            for match in ASSIGNED.finditer(line):
                if _is_literal_secret(match.group(3), bool(match.group(2)), name.endswith(".py")):
                    found.append(f"{name}:{lineno}: {match.group(1)}")
            for match in CREDENTIAL_URI.finditer(line):
                if _is_literal_secret(match.group(1)):
                    found.append(f"{name}:{lineno}: credentials in a URI")
    assert found == [], "\n".join(found)


def test_dag_files_hold_no_credentials(files):
    dags = {n: t for n, t in files.items() if n.startswith("dags/") and n.endswith(".py")}
    for name, text in dags.items():
        assert not re.search(r"(?i)(password|secret|token)\s*=\s*['\"][^'\"]+['\"]", text), name
        assert not CREDENTIAL_URI.search(text), name
        assert "sasl.password" not in text, f"{name}: Kafka credentials belong in the connection"


def test_the_scan_catches_what_it_must(tmp_path):
    """The patterns themselves: a leaked key, token, password and URI are all caught."""
    key = "-" * 5 + "BEGIN EC PRIVATE KEY" + "-" * 5
    assert PRIVATE_KEY.search(key)
    assert TOKENS["AWS access key"].search("AKIA" + "ABCDEFGHIJKLMNOP")
    line = 'KAFKA_PASSWORD = "' + "hunter2hunter2" + '"'
    m = ASSIGNED.search(line)
    assert m and _is_literal_secret(m.group(3), bool(m.group(2)), python=True)
    m = ASSIGNED.search("SPARK_AUTH_SECRET=" + "hunter2hunter2")
    assert m and _is_literal_secret(m.group(3), bool(m.group(2)))
    for ok in ('password = os.environ["X"]', "secret: ${SPARK_AUTH_SECRET:?x}",
               'echo "${SPARK_AUTH_SECRET:?unset}"', "value = secret(settings, 'x')"):
        m = ASSIGNED.search(ok)
        assert m is None or not _is_literal_secret(m.group(3), bool(m.group(2)), python=True), ok
    m = CREDENTIAL_URI.search("postgresql://airflow:" + "s3cr3tpass" + "@db/airflow")
    assert m and _is_literal_secret(m.group(1))
    assert not CREDENTIAL_URI.search("postgresql://airflow:${POSTGRES_PASSWORD}@db/airflow")
    assert SECRET_FILES.search("var/run/tls/ca.key") and SECRET_FILES.search(".env")
    assert not SECRET_FILES.search(".env.example")
