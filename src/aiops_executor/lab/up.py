"""``lab up`` and ``lab down``: the lab's whole system, started in order and stopped without a trace."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from aiops_executor.auth import service as auth_service
from aiops_executor.auth.service import DEV_ADMIN_PASSWORD_FILE
from aiops_executor.core.settings import Settings
from aiops_executor.lab import configs, service
from aiops_executor.lab.system import (
    BINARIES,
    DIAG_ROLE,
    LOOPBACK,
    POSTGRES_DATABASE,
    SHOP_ROLE,
    Component,
    LabError,
    LabState,
    Processes,
    allocate_ports,
    free_port,
    http_ready,
    lab_dir_of,
    pid_alive,
    port_open,
    python_module,
    require_packages,
    start_postgres,
    start_shop,
    stop_postgres,
    stop_process,
)


def admin_credentials(settings: Settings) -> tuple[str, str]:
    try:
        return auth_service.admin_credentials(settings)
    except LookupError as exc:
        raise LabError(str(exc)) from None


def bring_up(settings: Settings, *, service_url: str | None, provider: str, model_id: str) -> LabState:
    require_packages()
    lab_dir = lab_dir_of(settings)
    existing = LabState.load(lab_dir)
    if existing is not None and any(pid_alive(pid) for pid in existing.processes.values()):
        raise LabError(f"the lab is already up (state in {existing.path}); run 'lab down' first")
    if existing is not None:  # a lab whose processes are gone (the machine restarted): clear what it left
        bring_down(lab_dir)
    lab_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(lab_dir, 0o700)
    state = LabState(lab_dir=str(lab_dir), ports=allocate_ports())
    state.save()
    try:
        _start(state, settings, service_url=service_url, provider=provider, model_id=model_id)
    except BaseException:
        bring_down(lab_dir)
        raise
    return state


def _start(state: LabState, settings: Settings, *, service_url: str | None, provider: str, model_id: str) -> None:
    lab_dir = Path(state.lab_dir)
    processes = Processes(state)
    ports = state.lab_ports()

    start_postgres(processes)
    delay_file = lab_dir / "postgres-delay-ms"
    delay_file.write_text("0")
    processes.start(
        "postgres-proxy",
        python_module(
            "aiops_executor.lab.proxy",
            *("--listen-port", str(ports.postgres), "--target-port", str(ports.postgres_server)),
            *("--delay-file", str(delay_file)),
        ),
    )
    redis_command = [BINARIES["redis"][0], "--port", str(ports.redis), "--bind", LOOPBACK, "--save", ""]
    processes.start("redis", [*redis_command, "--appendonly", "no", "--dir", str(lab_dir)])
    processes.wait_until("postgres-proxy", lambda: port_open(ports.postgres))
    processes.wait_until("redis", lambda: port_open(ports.redis))

    shop_dsn = f"postgresql://{SHOP_ROLE}@{LOOPBACK}:{ports.postgres}/{POSTGRES_DATABASE}"
    redis_url = f"redis://{LOOPBACK}:{ports.redis}/0"
    start_shop(processes, ports, shop_dsn, redis_url)

    (lab_dir / "nginx").mkdir(exist_ok=True)
    nginx_conf = lab_dir / "nginx.conf"
    nginx_conf.write_text(configs.nginx_conf(lab_dir, ports, user="nobody nogroup" if os.geteuid() == 0 else None))
    processes.start("gateway", [BINARIES["nginx"][0], "-c", str(nginx_conf), "-p", str(lab_dir / "nginx")])

    diag_dsn = f"postgresql://{DIAG_ROLE}@{LOOPBACK}:{ports.postgres}/{POSTGRES_DATABASE}?sslmode=disable"
    exporter = [BINARIES["postgres_exporter"][0], f"--web.listen-address={LOOPBACK}:{ports.postgres_exporter}"]
    processes.start("postgres-exporter", exporter, env={"DATA_SOURCE_NAME": diag_dsn})
    redis_exporter = [BINARIES["redis_exporter"][0], "-redis.addr", redis_url]
    processes.start("redis-exporter", [*redis_exporter, "-web.listen-address", f"{LOOPBACK}:{ports.redis_exporter}"])
    blackbox_conf = lab_dir / "blackbox.yml"
    blackbox_conf.write_text(configs.blackbox_conf())
    blackbox = [BINARIES["blackbox"][0], f"--config.file={blackbox_conf}"]
    processes.start("blackbox-exporter", [*blackbox, f"--web.listen-address={LOOPBACK}:{ports.blackbox}"])

    state.service_url = service_url or _start_service(processes, settings)
    state.save()
    username, password = admin_credentials(settings)
    with service.signed_in(state.service_url, username, password) as client:
        service.ensure_model(client, provider, model_id)
        state.team_id = service.ensure_team(client, service.team_body(state, provider, model_id))
        state.api_key_id, key = service.create_api_key(client)
    state.save()
    credentials = lab_dir / "alertmanager-key"
    credentials.touch(mode=0o600)
    credentials.write_text(key)

    rules = lab_dir / "rules.yml"
    rules.write_text(configs.alert_rules(state.team_id))
    prometheus_conf = lab_dir / "prometheus.yml"
    prometheus_conf.write_text(configs.prometheus_conf(ports, rules))
    prometheus = [BINARIES["prometheus"][0], f"--config.file={prometheus_conf}"]
    prometheus += [
        f"--storage.tsdb.path={lab_dir / 'prometheus-data'}",
        f"--web.listen-address={LOOPBACK}:{ports.prometheus}",
    ]
    processes.start("prometheus", prometheus)
    webhook = f"{state.service_url}{service.API}/webhooks/alertmanager?team_id={state.team_id}"
    alertmanager_conf = lab_dir / "alertmanager.yml"
    alertmanager_conf.write_text(configs.alertmanager_conf(webhook, credentials))
    alertmanager = [BINARIES["alertmanager"][0], f"--config.file={alertmanager_conf}", "--cluster.listen-address="]
    alertmanager += [
        f"--storage.path={lab_dir / 'alertmanager-data'}",
        f"--web.listen-address={LOOPBACK}:{ports.alertmanager}",
    ]
    processes.start("alertmanager", alertmanager)

    processes.wait_until("gateway", lambda: port_open(ports.gateway))
    processes.wait_until("prometheus", lambda: http_ready(f"{state.prometheus_url}/-/ready"))
    processes.wait_until("alertmanager", lambda: http_ready(f"{state.alertmanager_url}/-/ready"))
    for name, port in (("postgres-exporter", ports.postgres_exporter), ("redis-exporter", ports.redis_exporter)):
        processes.wait_until(name, lambda port=port: port_open(port))  # type: ignore[misc]
    processes.wait_until("blackbox-exporter", lambda: port_open(ports.blackbox))
    state.components = [
        Component("gateway", "nginx", ports.gateway, state.processes["gateway"]).public(),
        Component("shop", "http", ports.shop, state.processes["shop"]).public(),
        Component("postgres", "postgresql", ports.postgres, state.processes["postgres"], dsn=shop_dsn).public(),
        Component("redis", "redis", ports.redis, state.processes["redis"], dsn=redis_url).public(),
    ]
    state.save()


def _start_service(processes: Processes, settings: Settings) -> str:
    port = processes.state.ports["service"] = free_port()
    executable = Path(sys.executable).with_name("aiops-executor")
    processes.start("service", [str(executable), "serve", "--host", LOOPBACK, "--port", str(port)])
    processes.state.service_started = True
    url = f"http://{LOOPBACK}:{port}"
    processes.wait_until("service", lambda: http_ready(f"{url}/health/ready"), seconds=60)
    if not (settings.admin_username and settings.admin_password):  # the dev admin's file is written at start-up
        processes.wait_until("service", lambda: (settings.data_dir / DEV_ADMIN_PASSWORD_FILE).is_file())
    return url


def bring_down(lab_dir: Path) -> list[str]:
    """Stops everything the state names (the service too, when the lab started it); returns what it stopped."""
    state = LabState.load(lab_dir)
    if state is None:
        return []
    stopped = []
    for pids in state.faults.values():
        for pid in pids:
            stop_process(pid)
    if state.api_key_id and state.service_url:
        with contextlib.suppress(Exception):
            revoke_with_admin(state)
    for name, pid in reversed(list(state.processes.items())):
        if name == "postgres":
            continue
        stop_process(pid)
        stopped.append(name)
    stop_postgres(state)
    stopped.append("postgres")
    state.path.unlink(missing_ok=True)
    return stopped


def revoke_with_admin(state: LabState) -> None:
    settings = Settings()
    username, password = admin_credentials(settings)
    with service.signed_in(state.service_url, username, password) as client:
        service.revoke_api_key(client, state.api_key_id)
