"""The gateway's settings (docker/gateway/settings.py): defaults, checks, and the nginx.conf they make."""

from __future__ import annotations

import re
import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "docker" / "gateway"))
import settings  # noqa: E402 - beside the gateway's entrypoint in the image

TEMPLATE = ROOT / "docker" / "gateway" / "nginx.conf.template"


def test_the_defaults_fill_every_setting_of_the_template():
    conf = settings.render(TEMPLATE, settings.settings({}))
    assert "${" not in conf
    assert "client_max_body_size 8m;" in conf and "client_max_body_size 16m;" in conf
    assert "rate=100r/s" in conf and "limit_conn fleet_uploads 64;" in conf
    assert re.search(r"geo \$client_allowed \{\s+default 1;\s+127\.0\.0\.0/8 1;[^\n]*\s+\}", conf)  # everyone


def test_settings_from_the_environment_and_the_allow_list():
    values = settings.settings({"FLEET_MAX_BODY": "12m", "FLEET_RATE_PER_CLIENT": "600r/m",
                                "ALLOWED_CLIENTS": " 203.0.113.7, 198.51.100.0/24  2001:db8::/32", "BODY_TIMEOUT": ""})
    conf = settings.render(TEMPLATE, values)
    assert "client_max_body_size 12m;" in conf and "rate=600r/m" in conf and "client_body_timeout 10s;" in conf
    assert re.search(r"default 0;\s+127\.0\.0\.0/8 1;[^\n]*\s+203\.0\.113\.7/32 1;\s+198\.51\.100\.0/24 1;\s+2001:db8::/32 1;", conf)


@pytest.mark.parametrize(("environ", "error"), [
    ({"FLEET_MAX_BODY": "4m"}, "FLEET_MAX_BODY=4m is too small: a SuperNode sends model chunks of up to 5 MiB"),
    ({"CONTROL_MAX_BODY": "5m"}, "CONTROL_MAX_BODY=5m is too small: `flwr run` sends FABs of up to 10 MiB"),
    ({"FLEET_MAX_BODY": "lots"}, "FLEET_MAX_BODY='lots' is not a size"),
    ({"HEADER_TIMEOUT": "10 s"}, "HEADER_TIMEOUT='10 s' is not a duration"),
    ({"FLEET_RATE_PER_CLIENT": "50"}, "FLEET_RATE_PER_CLIENT='50' is not a rate"),
    ({"FLEET_CONNECTIONS_PER_CLIENT": "0"}, "FLEET_CONNECTIONS_PER_CLIENT='0' is not a whole number above 0"),
    ({"FLEET_REQUESTS_TOTAL": "100000"}, "FLEET_REQUESTS_TOTAL=100000 is more than nginx can count (65535)"),
    ({"GATEWAY_WORKERS": "many"}, "GATEWAY_WORKERS='many'"),
    ({"ALLOWED_CLIENTS": "10.0.0.0/8, partner.example.org"}, "'partner.example.org', which is not an address"),
])
def test_a_setting_that_cannot_work_says_which_and_what_to_set(environ, error):
    with pytest.raises(settings.SettingError, match=re.escape(error)):
        settings.settings(environ)


def test_the_least_body_sizes_are_flowers_own():
    """The gateway image has no Flower, so settings.py states Flower's chunk and FAB limits: as Flower has them."""
    from flwr.common.constant import FAB_MAX_SIZE, FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE

    assert (settings.FLOWER_FAB, settings.FLOWER_CHUNK) == (FAB_MAX_SIZE, FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE)


def _server(conf: str, listen: str) -> str:
    start = conf.index(f"listen {listen}")
    end = conf.find("\n  server {", start)
    return conf[start:end if end > 0 else len(conf)]


def _locations(server: str) -> dict[str, str]:
    head, *blocks = re.split(r"\n\s+location ", server)
    return {"": head, **{block.split("{", 1)[0].strip(): block for block in blocks}}


def test_the_fleet_port_sheds_past_its_total_but_never_a_heartbeat_or_a_health_probe():
    """FLEET_REQUESTS_TOTAL is counted in the Fleet stage, which the public server hands each Fleet
    request once it has read it whole: a client trickling bodies holds no place there. Heartbeats and
    health probes go straight to the SuperLink, never counted, never shed."""
    conf = settings.render(TEMPLATE, settings.settings({"FLEET_REQUESTS_TOTAL": "7"}))
    public = _locations(_server(conf, "9092"))
    stage = _locations(_server(conf, "unix:/tmp/nginx-fleet-stage.sock"))
    assert "limit_conn fleet_total 7;" in stage["/"] and "error_page 503 = @shed;" in stage["/"]
    assert "X-Fleet-Shed 1" in stage["@shed"] and "return 503" in stage["@shed"]
    assert "fleet_total" not in "".join(public.values())
    for staged in ("/v1/fleet/", "= /v1/fleet/push-object"):
        assert "proxy_pass http://fleet_stage;" in public[staged]
    assert "limit_conn fleet_uploads" in public["= /v1/fleet/push-object"]  # bodies held: counted from the header
    for never_shed in ("= /v1/fleet/send-node-heartbeat", "= /health"):
        assert "proxy_pass $superlink;" in public[never_shed]
        assert "limit_conn fleet_per_client" in public[never_shed]
    assert "upstream fleet_stage {\n    server unix:/tmp/nginx-fleet-stage.sock;" in conf


def test_a_total_that_is_not_a_number_is_refused():
    with pytest.raises(settings.SettingError, match="FLEET_REQUESTS_TOTAL='none' is not a whole number"):
        settings.settings({"FLEET_REQUESTS_TOTAL": "none"})
