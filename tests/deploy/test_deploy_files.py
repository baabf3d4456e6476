"""
The deployment files in deploy/ checked without a Docker daemon (there is none in CI):
compose.yaml parsed with PyYAML, the Dockerfile by a small instruction parser, the
nginx snippets by a block parser and ``nginx -t``, the systemd template unit by
configparser and ``systemd-analyze verify``, the sysusers file by ``systemd-sysusers``
in a scratch root, all cross-checked (ports, trusted proxies, paths).
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from quotes_server.addresses import trusted_peer
from quotes_server.settings import Settings
from tests.e2e.test_nginx import (
    LOCATIONS,
    NGINX,
    NGINX_DIR,
    SNIPPET,
    TLS_SNIPPET,
    edited,
    make_certificate,
    nginx_config,
)
from tests.helpers.processes import ROOT

DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "quotes-server@.service"
COMPOSE_NGINX = NGINX_DIR / "compose.conf"
ENV_EXAMPLE = DEPLOY / "quotes-server.env.example"
INSTANCES = ("1", "2")
"""The instances nginx's snippet balances between."""


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
    """Redis, two servers and the feed built from deploy/Dockerfile, nginx with the snippets."""
    doc = compose()
    services = doc["services"]
    assert isinstance(services, dict)
    assert set(services) == {"redis", "quotes1", "quotes2", "publisher", "nginx"}
    assert "healthcheck" in services["redis"]
    env = docker_env()
    port = env["QUOTES_PORT"]
    conf = COMPOSE_NGINX.read_text()
    for name in ("quotes1", "quotes2", "publisher"):
        svc = services[name]
        # every service of the local image builds it: `up` never pulls quotes-server:local
        assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve() == (
            DEPLOY / "Dockerfile"
        ), name
        assert svc["image"] == services["quotes1"]["image"]
    for name in ("quotes1", "quotes2"):
        svc = services[name]
        assert svc["environment"]["QUOTES_REDIS_URL"].startswith("redis://redis:")
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        assert f"server {name}:{port} " in conf
    scripts = tomllib.loads((ROOT / "packages/quotes-server/pyproject.toml").read_text())
    assert services["publisher"]["command"][0] in scripts["project"]["scripts"]
    nginx = services["nginx"]
    listen = re.search(r"listen (\d+);", conf)
    assert listen is not None
    assert nginx["ports"] == [f"{listen[1]}:{listen[1]}"]
    # the stock image's nginx.conf includes conf.d/*.conf; the locations come from the
    # file the systemd recipe installs, at the path the server blocks include
    assert sorted(nginx["volumes"]) == [
        "./nginx/compose.conf:/etc/nginx/conf.d/default.conf:ro",
        "./nginx/quotes-locations.conf:/etc/nginx/snippets/quotes-locations.conf:ro",
    ]
    for volume in nginx["volumes"]:
        assert (DEPLOY / volume.split(":")[0]).is_file(), volume
    for dep in ("quotes1", "quotes2"):
        assert nginx["depends_on"][dep]["condition"] == "service_healthy"  # the HEALTHCHECK


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "": 1}
    match = re.fullmatch(r"(\d+)(ms|s|m|h|)", value)
    assert match, value
    return int(match[1]) * units[match[2]]


def top_level(path: Path) -> list[str]:
    """The first word of each top-level directive or block of an nginx config file."""
    text = re.sub(r"#[^\n]*", "", path.read_text())
    text = re.sub(r"'[^']*'", "''", text)  # log_format strings hold no braces, but be sure
    names: list[str] = []
    depth = 0
    statement = ""
    for char in text:
        if char == "{":
            if depth == 0:
                names.append(statement.split()[0])
            depth += 1
            statement = ""
        elif char == "}":
            depth -= 1
            assert depth >= 0, f"{path.name}: unbalanced braces"
            statement = ""
        elif char == ";":
            if depth == 0:
                names.append(statement.split()[0])
            statement = ""
        else:
            statement += char
    assert depth == 0, f"{path.name}: unbalanced braces"
    assert not statement.strip(), f"{path.name}: ends inside a directive"
    return names


def test_nginx_snippets_fit_their_places() -> None:
    """conf.d snippets hold only http-level blocks; the locations file only server-level ones."""
    # a conf.d file is included inside the distribution's http block: no events/http
    assert top_level(SNIPPET) == ["map", "log_format", "upstream", "server"]
    assert top_level(TLS_SNIPPET) == ["server"]
    assert top_level(COMPOSE_NGINX) == ["map", "log_format", "upstream", "server"]
    assert set(top_level(LOCATIONS)) == {"access_log", "location"}
    for path in (SNIPPET, TLS_SNIPPET, COMPOSE_NGINX):
        assert "include snippets/quotes-locations.conf;" in path.read_text(), path.name
    # nginx reads conf.d/*.conf in name order: the log format before the TLS server uses it
    assert sorted([TLS_SNIPPET.name, SNIPPET.name]) == [SNIPPET.name, TLS_SNIPPET.name]


def block(text: str, head: str) -> str:
    """The body of the first block that starts with ``head`` (no nested braces)."""
    found = re.search(re.escape(head) + r" \{(.*?)\}", text, re.DOTALL)
    assert found is not None, head
    return found[1]


def test_nginx_conf_proxies_websockets() -> None:
    """Upgrade/Connection via map, timeouts past the 20 s ping, X-Forwarded-For, two upstreams."""
    conf = SNIPPET.read_text()
    locations = LOCATIONS.read_text()
    assert re.search(r"map \$http_upgrade \$connection_upgrade \{", conf)
    assert "proxy_set_header Upgrade $http_upgrade;" in locations
    assert "proxy_set_header Connection $connection_upgrade;" in locations
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in locations
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in locations
    assert "proxy_http_version 1.1;" in locations
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        found = re.search(rf"{name} (\w+);", locations)
        assert found, name
        assert seconds(found[1]) > 20
    for path in (SNIPPET, COMPOSE_NGINX):
        upstream = block(path.read_text(), "upstream quotes_servers")
        assert len(re.findall(r"^\s*server \S+", upstream, re.MULTILINE)) == 2, path.name
    # compose.conf copies the map and the log format: they must not drift apart
    compose_conf = COMPOSE_NGINX.read_text()
    map_block = block(conf, "map $http_upgrade $connection_upgrade")
    assert map_block == block(compose_conf, "map $http_upgrade $connection_upgrade")
    log_format = re.search(r"log_format quotes (?:'[^']*'\s*)+;", conf)
    assert log_format is not None
    assert log_format[0] in compose_conf


def nginx_t(folder: Path, conf: Path) -> subprocess.CompletedProcess[str]:
    assert NGINX is not None
    return subprocess.run(
        [NGINX, "-t", "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log")],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_nginx_accepts_the_snippets(tmp_path: Path) -> None:
    """The distribution's nginx parses both conf.d snippets and the locations (`nginx -t`)."""
    if NGINX is None:
        pytest.skip("nginx not installed")
    certificate = make_certificate(tmp_path)
    conf = nginx_config(tmp_path, 18080, (18001, 18002), (18443, certificate))
    out = nginx_t(tmp_path, conf)
    assert out.returncode == 0, out.stderr
    assert "syntax is ok" in out.stderr


def test_nginx_accepts_the_compose_config(tmp_path: Path) -> None:
    """compose.conf with the locations, as the nginx image includes them (`nginx -t`)."""
    if NGINX is None:
        pytest.skip("nginx not installed")
    conf = nginx_config(tmp_path, 18080, (18001, 18002))
    # compose.conf in place of quotes.conf, its service names resolved to loopback
    (tmp_path / "conf.d" / "quotes.conf").write_text(
        edited(
            COMPOSE_NGINX,
            {
                "server quotes1:8000 ": "server 127.0.0.1:18001 ",
                "server quotes2:8000 ": "server 127.0.0.1:18002 ",
                "listen 8080;": "listen 127.0.0.1:18080;",
            },
        )
    )
    out = nginx_t(tmp_path, conf)
    assert out.returncode == 0, out.stderr


def unit() -> configparser.ConfigParser:
    parsed = configparser.ConfigParser(strict=True, interpolation=None)
    parsed.optionxform = str  # type: ignore[assignment,method-assign]
    parsed.read_string(UNIT.read_text())
    return parsed


def unit_env(instance: str) -> dict[str, str]:
    """The ``Environment=`` of one instance (``%i`` expanded), overlaid by the example file."""
    line = unit()["Service"]["Environment"].replace("%i", instance)
    env = dict(item.split("=", 1) for item in line.split())
    for raw in ENV_EXAMPLE.read_text().splitlines():
        if raw.strip() and not raw.lstrip().startswith("#"):
            name, _, value = raw.partition("=")
            env[name.strip()] = value.strip()  # EnvironmentFile= wins over Environment=
    return env


def settings_of(env: dict[str, str]) -> Settings:
    return Settings(**{k.removeprefix("QUOTES_").lower(): v for k, v in env.items()})


def test_systemd_template_unit() -> None:
    """The template runs quotes-server as non-root from a required env file; systemd agrees."""
    parsed = unit()
    assert set(parsed.sections()) == {"Unit", "Service", "Install"}
    service = parsed["Service"]
    assert service["ExecStart"] == "/opt/quotes/.venv/bin/quotes-server"
    assert "--demo" not in service["ExecStart"]
    assert service["User"] not in ("root", "0")
    assert service["KillSignal"] == "SIGTERM"
    assert service["Restart"] == "on-failure"
    # no leading "-": a missing or misnamed file stops the start instead of being ignored
    assert service["EnvironmentFile"] == "/etc/quotes/quotes-server.env"
    assert parsed["Install"]["WantedBy"] == "multi-user.target"
    # Documentation= names a page of the checkout the unit runs from
    docs = parsed["Unit"]["Documentation"]
    assert docs.startswith("file:///opt/quotes/")
    assert (ROOT / docs.removeprefix("file:///opt/quotes/")).is_file(), docs
    assert service["WorkingDirectory"] == "/opt/quotes"
    for option in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "MemoryDenyWriteExecute"):
        assert option in service, option


def test_systemd_verifies_an_instance(tmp_path: Path) -> None:
    """`systemd-analyze verify quotes-server@1.service` finds nothing to complain about."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    # verify wants ExecStart to exist: point it at this environment's quotes-server
    executable = Path(sys.prefix) / "bin" / "quotes-server"
    assert executable.is_file()
    (tmp_path / UNIT.name).write_text(
        edited(
            UNIT,
            {"ExecStart=/opt/quotes/.venv/bin/quotes-server": f"ExecStart={executable}"},
        )
    )
    out = subprocess.run(
        [analyze, "verify", str(tmp_path / "quotes-server@1.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "", out.stderr


def test_sysusers_creates_the_units_user(tmp_path: Path) -> None:
    """Installed as documented, systemd-sysusers creates the unit's user and group."""
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is None:
        pytest.skip("systemd-sysusers not installed")
    folder = tmp_path / "etc" / "sysusers.d"
    folder.mkdir(parents=True)
    shutil.copy(DEPLOY / "sysusers.d" / "quotes.conf", folder / "quotes.conf")
    out = subprocess.run(
        [sysusers, f"--root={tmp_path}"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    service = unit()["Service"]
    users = {
        line.split(":")[0]: line.split(":")
        for line in (tmp_path / "etc/passwd").read_text().splitlines()
    }
    groups = {
        line.split(":")[0]: line.split(":")
        for line in (tmp_path / "etc/group").read_text().splitlines()
    }
    user = users[service["User"]]
    assert user[6] in ("/usr/sbin/nologin", "/sbin/nologin")
    assert int(user[2]) < 1000  # a system user
    assert groups[service["Group"]][2] == user[3]  # its primary group is the unit's Group


def test_recipes_keep_operator_endpoints_internal() -> None:
    """Every recipe sets an internal port; the settings each one gives pass validation."""
    env = docker_env()
    assert env["QUOTES_INTERNAL_PORT"] != env["QUOTES_PORT"]
    services = compose()["services"]
    assert isinstance(services, dict)
    for name in ("quotes1", "quotes2"):
        svc = services[name]
        assert "ports" not in svc, f"{name} publishes a port: only nginx faces the outside"
        settings = settings_of({**env, **svc["environment"]})
        assert settings.internal_port is not None
    for instance in INSTANCES:
        settings = settings_of(unit_env(instance))
        assert settings.internal_port is not None
        assert settings.internal_host == "127.0.0.1"
        assert settings.host == "127.0.0.1"


def test_systemd_instances_are_nginx_upstreams() -> None:
    """quotes-server@1 and @2 listen where the snippet's upstream points, trusting nginx."""
    upstream = block(SNIPPET.read_text(), "upstream quotes_servers")
    servers = re.findall(r"^\s*server (\S+) ", upstream, re.MULTILINE)
    ports: set[int] = set()
    for instance in INSTANCES:
        env = unit_env(instance)
        settings = settings_of(env)
        assert settings.redis_url is not None  # the example env file sets it: no demo feed
        assert not settings.demo
        assert f"{settings.host}:{settings.port}" == servers[int(instance) - 1]
        ports |= {settings.port, settings.internal_port or 0}
        # nginx connects from 127.0.0.1: its X-Forwarded-For must count
        assert trusted_peer("127.0.0.1", settings.trusted_proxies)
    assert len(ports) == 2 * len(INSTANCES)  # every port distinct
    # the shared file must not override what differs per instance
    example = ENV_EXAMPLE.read_text()
    for name in ("QUOTES_PORT", "QUOTES_INTERNAL_PORT", "QUOTES_HOST", "QUOTES_DEMO"):
        assert not re.search(rf"^{name}=", example, re.MULTILINE), name


def test_every_recipe_trusts_its_proxy() -> None:
    """Compose trusts its network (nginx's address); the unit trusts nginx on loopback."""
    services = compose()["services"]
    assert isinstance(services, dict)
    subnet = compose()["networks"]["quotes"]["ipam"]["config"][0]["subnet"]
    for name in ("quotes1", "quotes2"):
        trusted = services[name]["environment"]["QUOTES_TRUSTED_PROXIES"]
        assert trusted == subnet
    assert "QUOTES_TRUSTED_PROXIES=127.0.0.1" in unit()["Service"]["Environment"].split()


def test_nginx_conf_hides_operator_endpoints_and_query_strings() -> None:
    """/metrics and /ready answer 404 in nginx itself; the access log has no query strings."""
    locations = LOCATIONS.read_text()
    for path in ("/metrics", "/ready"):
        assert re.search(rf"location = {path} \{{\s*return 404;\s*\}}", locations), path
    for conf in (SNIPPET, COMPOSE_NGINX):
        formats = re.findall(r"log_format (\w+) ((?:'[^']*'\s*)+);", conf.read_text())
        assert len(formats) == 1
        name, body = formats[0]
        assert "$uri" in body
        for leaky in ("$request ", '$request"', "$request_uri", "$args", "$query_string", "$arg_"):
            assert leaky not in body, leaky
    logs = [
        line
        for path in (SNIPPET, TLS_SNIPPET, COMPOSE_NGINX, LOCATIONS)
        for line in re.findall(r"^\s*access_log (.*);", path.read_text(), re.MULTILINE)
    ]
    assert logs == [f"/var/log/nginx/access.log {name}"]
