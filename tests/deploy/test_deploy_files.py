"""
The deployment files in deploy/ checked without a Docker daemon (there is none in CI):
compose.yaml parsed with PyYAML, the Dockerfile by a small instruction parser, the
nginx config by ``nginx -t`` and the systemd unit by configparser, all cross-checked.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from quotes_server.settings import Settings
from tests.e2e.test_nginx import NGINX, nginx_config
from tests.helpers.processes import ROOT

DEPLOY = ROOT / "deploy"


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, args = (pending + line).strip().partition(" ")
        out.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def docker_env() -> dict[str, str]:
    """The ``ENV`` variables the Dockerfile sets (any stage; names are unique)."""
    return dict(
        item.split("=", 1) for k, args in dockerfile() if k == "ENV" for item in args.split()
    )


def compose() -> dict[str, object]:
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def test_dockerfile_instructions() -> None:
    """Slim Python base, uv sync --locked, non-root USER, HEALTHCHECK on /ready, quotes-server."""
    instructions = dockerfile()
    known = {"FROM", "COPY", "ENV", "WORKDIR", "RUN", "USER", "EXPOSE", "HEALTHCHECK"}
    assert {k for k, _ in instructions} <= known | {"STOPSIGNAL", "CMD", "ARG", "LABEL"}
    stages = [i for i, (k, _) in enumerate(instructions) if k == "FROM"]
    assert all(re.match(r"python:3\.1[1-9]-slim\b", instructions[i][1]) for i in stages)
    runs = [a for k, a in instructions if k == "RUN"]
    assert any("uv sync --locked" in a for a in runs)
    final = instructions[stages[-1] :]
    users = [a for k, a in final if k == "USER"]
    assert users, "the final stage sets no USER"
    assert users[-1] not in ("root", "0")
    health = [a for k, a in final if k == "HEALTHCHECK"]
    assert len(health) == 1
    # /ready lives on the internal port, which the image sets
    assert f"http://127.0.0.1:{docker_env()['QUOTES_INTERNAL_PORT']}/ready" in health[0]
    assert "CMD" in health[0]
    assert final[-1] == ("CMD", '["quotes-server"]')
    copies = [a.split() for k, a in instructions if k == "COPY" and "--from" not in a]
    for args in copies:
        for src in args[:-1]:
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
    assert any("uv.lock" in args for args in copies)


def test_compose_services_and_cross_references() -> None:
    """Redis, two servers from deploy/Dockerfile, the feed, and nginx where nginx.conf says."""
    doc = compose()
    services = doc["services"]
    assert isinstance(services, dict)
    assert set(services) == {"redis", "quotes1", "quotes2", "publisher", "nginx"}
    assert "healthcheck" in services["redis"]
    env = docker_env()
    port = env["QUOTES_PORT"]
    conf = (DEPLOY / "nginx.conf").read_text()
    for name in ("quotes1", "quotes2"):
        svc = services[name]
        assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve() == (
            DEPLOY / "Dockerfile"
        )
        assert svc["environment"]["QUOTES_REDIS_URL"].startswith("redis://redis:")
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        assert f"server {name}:{port}" in conf
    scripts = tomllib.loads((ROOT / "packages/quotes-server/pyproject.toml").read_text())
    assert services["publisher"]["command"][0] in scripts["project"]["scripts"]
    assert services["publisher"]["image"] == services["quotes1"]["image"]
    nginx = services["nginx"]
    listen = re.search(r"listen (\d+);", conf)
    assert listen is not None
    assert nginx["ports"] == [f"{listen[1]}:{listen[1]}"]
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    for dep in ("quotes1", "quotes2"):
        assert nginx["depends_on"][dep]["condition"] == "service_healthy"  # the HEALTHCHECK


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "": 1}
    match = re.fullmatch(r"(\d+)(ms|s|m|h|)", value)
    assert match, value
    return int(match[1]) * units[match[2]]


def test_nginx_conf_proxies_websockets() -> None:
    """Upgrade/Connection via map, timeouts past the 20 s ping, X-Forwarded-For, two upstreams."""
    conf = (DEPLOY / "nginx.conf").read_text()
    assert re.search(r"map \$http_upgrade \$connection_upgrade \{", conf)
    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert "proxy_set_header Connection $connection_upgrade;" in conf
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in conf
    assert "proxy_http_version 1.1;" in conf
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        found = re.search(rf"{name} (\w+);", conf)
        assert found, name
        assert seconds(found[1]) > 20
    upstream = re.search(r"upstream quotes_servers \{(.*?)\}", conf, re.DOTALL)
    assert upstream is not None
    assert len(re.findall(r"^\s*server \S+", upstream[1], re.MULTILINE)) == 2


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    """The distribution's nginx parses the shipped config (`nginx -t`, loopback edition)."""
    if NGINX is None:
        pytest.skip("nginx not installed")
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_config(tmp_path, 18080, (18001, 18002)))
    out = subprocess.run(
        [NGINX, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "syntax is ok" in out.stderr


def test_systemd_unit() -> None:
    """The unit runs quotes-server as non-root, stops it with SIGTERM, restarts on failure."""
    unit = configparser.ConfigParser(strict=True, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((DEPLOY / "quotes-server.service").read_text())
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    assert service["ExecStart"].endswith("/quotes-server")
    assert service["User"] not in ("root", "0")
    assert service["KillSignal"] == "SIGTERM"
    assert service["Restart"] == "on-failure"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    analyze = shutil.which("systemd-analyze")
    if analyze is not None:  # systemd's own parser, where installed
        out = subprocess.run(
            [analyze, "verify", str(DEPLOY / "quotes-server.service")],
            capture_output=True,
            text=True,
            timeout=30,
        )
        # the only complaint allowed: /opt/quotes is not installed on the test machine
        problems = [
            line
            for line in out.stderr.splitlines()
            if line.strip() and "/opt/quotes/.venv/bin/quotes-server is not executable" not in line
        ]
        assert problems == [], out.stderr


def test_recipes_keep_operator_endpoints_internal() -> None:
    """Every recipe sets an internal port; the settings each one gives pass validation."""
    env = docker_env()
    assert env["QUOTES_INTERNAL_PORT"] != env["QUOTES_PORT"]
    services = compose()["services"]
    assert isinstance(services, dict)
    for name in ("quotes1", "quotes2"):
        svc = services[name]
        assert "ports" not in svc, f"{name} publishes a port: only nginx faces the outside"
        merged = {**env, **svc["environment"]}
        assert "QUOTES_INTERNAL_PORT" in merged
        settings = Settings(**{k.removeprefix("QUOTES_").lower(): v for k, v in merged.items()})
        assert settings.internal_port is not None
    unit = configparser.ConfigParser(strict=True, interpolation=None)
    unit.read_string((DEPLOY / "quotes-server.service").read_text())
    unit_env = dict(item.split("=", 1) for item in unit["Service"]["Environment"].split())
    settings = Settings(**{k.removeprefix("QUOTES_").lower(): v for k, v in unit_env.items()})
    assert settings.internal_port is not None
    assert settings.internal_host == "127.0.0.1"


def test_nginx_conf_hides_operator_endpoints_and_query_strings() -> None:
    """/metrics and /ready answer 404 in nginx itself; the access log has no query strings."""
    conf = (DEPLOY / "nginx.conf").read_text()
    for path in ("/metrics", "/ready"):
        assert re.search(rf"location = {path} \{{\s*return 404;\s*\}}", conf), path
    formats = re.findall(r"log_format (\w+) ((?:'[^']*'\s*)+);", conf)
    assert len(formats) == 1
    name, body = formats[0]
    assert "$uri" in body
    for leaky in ("$request ", '$request"', "$request_uri", "$args", "$query_string", "$arg_"):
        assert leaky not in body, leaky
    logs = re.findall(r"^\s*access_log (.*);", conf, re.MULTILINE)
    assert logs == [f"/dev/stdout {name}"]
